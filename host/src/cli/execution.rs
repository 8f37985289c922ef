//! `ward execution …`: start executions on a Ward server, list and inspect
//! them, read or follow their logs, control them and watch them live.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{Client, Control, ExecutionFilter};
use super::exit;
use super::output::{or_dash, out, outln, print_json, table};
use super::sse::EventStream;
use super::time::{duration_display, parse_time, short_time, time_of_day};
use crate::model::execution::{Attempt, Execution, StoredLog};
use crate::model::limits::shorten;
use crate::model::state::{ExecutionState, TaskRunState};
use crate::sandbox::report::AttemptError;

/// How long one request of `start --wait` waits on the server; it asks
/// again until the execution has ended (the server may cut it shorter).
const WAIT_ROUND: Duration = Duration::from_secs(60);
/// How often `watch` redraws its clock between pushed changes.
const WATCH_TICK: Duration = Duration::from_secs(1);
/// Log lines `watch` shows.
const WATCH_LOG_LINES: usize = 10;

#[derive(Debug, Args)]
pub struct ExecutionArgs {
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ExecutionCommand,
}

#[derive(Debug, Subcommand)]
pub enum ExecutionCommand {
    /// Start an execution of a task (trigger `cli`).
    Start(StartArgs),
    /// List executions, newest first.
    List(ListArgs),
    /// Show one execution with its task runs and attempts.
    Get(IdArg),
    /// Print an execution's log.
    Logs(LogsArgs),
    /// Cancel an execution: running attempts are interrupted.
    Cancel(IdArg),
    /// Pause an execution: no new attempt starts until it is resumed.
    Pause(IdArg),
    /// Resume a paused execution.
    Resume(IdArg),
    /// Restart a failed or killed execution: its failed task runs run again.
    Restart(IdArg),
    /// Follow an execution live until it ends: state, attempt, elapsed time
    /// and the newest log lines. Exits like `start --wait`.
    Watch(IdArg),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The task's id or name.
    pub task: String,
    /// The input, as JSON text (default: the task's own input).
    #[arg(long, value_name = "JSON")]
    pub input: Option<String>,
    /// Wait until the execution ends and print it; exit 1 if it failed or
    /// was killed.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these states: a state name (any case), `pending`, `completed` or
    /// `cancelled`; comma-separated for several.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Only executions of this task (id or name).
    #[arg(long, value_name = "TASK")]
    pub task: Option<String>,
    /// At most this many (1-1000; the server's default is 50).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct IdArg {
    /// The execution's id.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The execution's id.
    pub id: String,
    /// Keep printing lines as they are written until the execution ends
    /// (with --json: one StoredLog object per line).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

pub async fn main(client: Client, args: ExecutionArgs) -> anyhow::Result<u8> {
    let json = args.json;
    match args.command {
        ExecutionCommand::Start(a) => start(&client, a, json).await,
        ExecutionCommand::List(a) => list(&client, a, json).await,
        ExecutionCommand::Get(a) => {
            let e = client.execution(&a.id).await?;
            if json {
                print_json(&e.json);
            } else {
                out!("{}", detail(&e.value));
            }
            Ok(exit::OK)
        }
        ExecutionCommand::Logs(a) if a.follow => follow(&client, &a.id, json).await,
        ExecutionCommand::Logs(a) => logs(&client, &a.id, json).await,
        ExecutionCommand::Cancel(a) => control(&client, &a.id, Control::Cancel, json).await,
        ExecutionCommand::Pause(a) => control(&client, &a.id, Control::Pause, json).await,
        ExecutionCommand::Resume(a) => control(&client, &a.id, Control::Resume, json).await,
        ExecutionCommand::Restart(a) => control(&client, &a.id, Control::Restart, json).await,
        ExecutionCommand::Watch(a) => watch(&client, &a.id, json).await,
    }
}

async fn start(client: &Client, args: StartArgs, json: bool) -> anyhow::Result<u8> {
    let input = args
        .input
        .as_deref()
        .map(serde_json::from_str::<Value>)
        .transpose()
        .context("--input is not valid JSON")?;
    let wait = args.wait.then_some(WAIT_ROUND);
    let execution = client.start_execution(&args.task, input, wait).await?;
    if !args.wait {
        if json {
            print_json(&execution.json);
        } else {
            outln!(
                "started execution {} of {} ({})",
                execution.value.id,
                args.task,
                execution.value.state
            );
        }
        return Ok(exit::OK);
    }
    let id = execution.value.id.clone();
    let mut current = execution;
    while !current.value.state.is_terminal() {
        current = client.wait_for_end(&id, WAIT_ROUND).await?;
    }
    if json {
        print_json(&current.json);
    } else {
        out!("{}", detail(&current.value));
    }
    Ok(exit_code(current.value.state))
}

/// 0 for an execution that ended well (or has not ended), 1 for a failed or
/// killed one.
fn exit_code(state: ExecutionState) -> u8 {
    match state {
        ExecutionState::Failed | ExecutionState::Killed => exit::FAILED,
        _ => exit::OK,
    }
}

async fn list(client: &Client, args: ListArgs, json: bool) -> anyhow::Result<u8> {
    if let Some(status) = &args.status {
        for word in status.split(',') {
            ExecutionState::from_filter(word.trim()).map_err(|e| anyhow!("--status: {e}"))?;
        }
    }
    let task_id = match &args.task {
        Some(task) => Some(client.task(task).await?.value.id),
        None => None,
    };
    let filter = ExecutionFilter {
        status: args.status,
        task_id,
        limit: args.limit,
    };
    let page = client.executions(&filter).await?;
    if json {
        print_json(&page.json);
        return Ok(exit::OK);
    }
    // Task names read better than ids; without them, the ids do.
    let names: BTreeMap<String, String> = match client.tasks().await {
        Ok(tasks) => tasks
            .value
            .tasks
            .into_iter()
            .map(|t| (t.id, t.spec.name))
            .collect(),
        Err(_) => BTreeMap::new(),
    };
    out!("{}", execution_table(&page.value.executions, &names));
    if page.value.next_cursor.is_some() {
        eprintln!("(more executions match; raise --limit to see them)");
    }
    Ok(exit::OK)
}

fn execution_table(executions: &[Execution], task_names: &BTreeMap<String, String>) -> String {
    let rows: Vec<Vec<String>> = executions
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.state.to_string(),
                task_names.get(&e.task_id).unwrap_or(&e.task_id).clone(),
                short_time(&e.created_at),
                or_dash(e.duration_ms.map(duration_display)),
            ]
        })
        .collect();
    table(&["ID", "STATE", "TASK", "CREATED", "DURATION"], &rows)
}

fn compact(v: &Value) -> String {
    shorten(&v.to_string(), 400)
}

/// A readable view of an execution, its task runs and their attempts.
fn detail(e: &Execution) -> String {
    let mut s = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(s, "{:<10}{value}", format!("{label}:"));
    };
    line("id", &e.id);
    line(
        "task",
        &format!("{} (version {})", e.task_id, e.task_version),
    );
    line("state", e.state.as_str());
    line("trigger", e.trigger.as_str());
    for (label, ts) in [
        ("created", Some(&e.created_at)),
        ("started", e.started_at.as_ref()),
        ("ended", e.ended_at.as_ref()),
    ] {
        if let Some(ts) = ts {
            line(label, &short_time(ts));
        }
    }
    if let Some(ms) = e.duration_ms {
        line("duration", &duration_display(ms));
    }
    line("input", &compact(&e.input));
    if let Some(result) = e.result.as_ref().filter(|r| !r.is_null()) {
        line("result", &compact(result));
    }
    if let Some(error) = &e.error {
        line("error", &error_text(error));
    }
    if !e.labels.is_empty() {
        let pairs: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line("labels", &pairs.join(","));
    }
    if !e.variables.is_empty() {
        let _ = writeln!(s, "variables:");
        for (k, v) in &e.variables {
            let _ = writeln!(s, "  {k} = {}", compact(v));
        }
    }
    if !e.outputs.is_empty() {
        let _ = writeln!(s, "outputs:");
        for (k, v) in &e.outputs {
            let _ = writeln!(s, "  {k} = {}", compact(v));
        }
    }
    let runs = e.task_runs.as_deref().unwrap_or_default();
    if !runs.is_empty() {
        let _ = writeln!(s, "task runs:");
    }
    for run in runs {
        let name = match run.index {
            Some(i) => format!("{}[{i}]", run.step),
            None => run.step.clone(),
        };
        let mut head = format!("  {name}  {}", run.state);
        if let Some(at) = &run.not_before {
            let _ = write!(head, " (next attempt at {})", short_time(at));
        }
        let _ = writeln!(s, "{head}");
        if let Some(error) = &run.error {
            let _ = writeln!(s, "    {}", error_text(error));
        }
        for a in &run.attempts {
            let _ = writeln!(s, "    {}", attempt_line(a));
        }
    }
    s
}

fn error_text(error: &AttemptError) -> String {
    format!("{}: {}", error.kind, error.message)
}

fn attempt_line(a: &Attempt) -> String {
    let mut s = format!("attempt {}  {}  worker {}", a.number, a.status, a.worker_id);
    if let Some(usage) = &a.usage {
        let _ = write!(s, "  {}", duration_display(usage.wall_ms));
    }
    if let Some(error) = &a.error {
        let message = error_text(error);
        let first = message.lines().next().unwrap_or_default();
        let _ = write!(s, "  {first}");
    }
    s
}

/// `12:00:01.123 #1 info  stdout hello`.
fn log_line(log: &StoredLog) -> String {
    format!(
        "{} #{} {:<5} {:<6} {}",
        time_of_day(&log.ts),
        log.attempt,
        log.level,
        log.source,
        log.message
    )
}

/// Every log line after `after`, asking again until no new ones come (in
/// case the server pages them); each typed and as the server sent it.
async fn fetch_logs(
    client: &Client,
    id: &str,
    mut after: Option<i64>,
) -> anyhow::Result<Vec<(StoredLog, Value)>> {
    let mut all = Vec::new();
    loop {
        let page = client.logs(id, after).await?;
        let sent = page.json["logs"].as_array().cloned().unwrap_or_default();
        let fresh: Vec<(StoredLog, Value)> = page
            .value
            .logs
            .into_iter()
            .zip(sent)
            .filter(|(l, _)| after.is_none_or(|a| l.id > a))
            .collect();
        let newest = fresh.iter().map(|(l, _)| l.id).max();
        all.extend(fresh);
        match newest {
            Some(n) if Some(n) > after => after = Some(n),
            _ => return Ok(all),
        }
    }
}

async fn logs(client: &Client, id: &str, json: bool) -> anyhow::Result<u8> {
    let logs = fetch_logs(client, id, None).await?;
    if json {
        let sent: Vec<Value> = logs.into_iter().map(|(_, v)| v).collect();
        print_json(&serde_json::json!({ "logs": sent }));
    } else {
        for (l, _) in &logs {
            outln!("{}", log_line(l));
        }
    }
    Ok(exit::OK)
}

async fn follow(client: &Client, id: &str, json: bool) -> anyhow::Result<u8> {
    let mut stream = client.follow_logs(id).await?;
    while let Some(event) = stream.next().await? {
        match event.event.as_str() {
            "log" if json => match serde_json::from_str::<Value>(&event.data) {
                Ok(log) => outln!("{log}"),
                Err(_) => outln!("{}", event.data),
            },
            "log" => match serde_json::from_str::<StoredLog>(&event.data) {
                Ok(log) => outln!("{}", log_line(&log)),
                Err(_) => outln!("{}", event.data),
            },
            "end" => return Ok(exit::OK),
            _ => {}
        }
    }
    bail!("the log stream of {id} closed before the execution ended")
}

async fn control(client: &Client, id: &str, action: Control, json: bool) -> anyhow::Result<u8> {
    let e = client.control(id, action).await?;
    if json {
        print_json(&e.json);
    } else {
        outln!("execution {}: {}", e.value.id, e.value.state);
    }
    Ok(exit::OK)
}

/// The newest attempt of any task run: `2 (running)`, with the retry time
/// while its task run waits for the next one; `-` before the first.
fn attempt_summary(e: &Execution) -> String {
    let newest = e
        .task_runs
        .iter()
        .flatten()
        .flat_map(|run| run.attempts.iter().map(move |a| (run, a)))
        .max_by(|(_, a), (_, b)| (&a.started_at, a.number).cmp(&(&b.started_at, b.number)));
    match newest {
        None => "-".into(),
        Some((run, a)) => {
            let mut s = format!("{} ({})", a.number, a.status);
            if run.state == TaskRunState::Retrying {
                let at = run.not_before.as_deref();
                let _ = write!(s, ", retrying at {}", at.map_or("-".into(), time_of_day));
            }
            s
        }
    }
}

/// How long the execution has run: its duration once ended, else from its
/// start (or creation) until `now`.
fn elapsed(e: &Execution, now: SystemTime) -> String {
    if let Some(ms) = e.duration_ms {
        return duration_display(ms);
    }
    let start = parse_time(e.started_at.as_ref().unwrap_or(&e.created_at));
    let end = match &e.ended_at {
        Some(ts) => parse_time(ts),
        None => Some(now),
    };
    match (start, end) {
        (Some(start), Some(end)) => {
            let d = end.duration_since(start).unwrap_or_default();
            duration_display(d.as_secs_f64() * 1_000.0)
        }
        _ => "-".into(),
    }
}

/// One screen of `watch`.
fn watch_frame(e: &Execution, logs: &VecDeque<String>, now: SystemTime) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "execution {}  (task {})", e.id, e.task_id);
    let _ = writeln!(s, "state:    {}", e.state);
    let _ = writeln!(s, "attempt:  {}", attempt_summary(e));
    let _ = writeln!(s, "elapsed:  {}", elapsed(e, now));
    if let Some(error) = &e.error {
        let _ = writeln!(s, "error:    {}", error_text(error));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "logs (newest {WATCH_LOG_LINES}):");
    for l in logs {
        let _ = writeln!(s, "  {l}");
    }
    s
}

/// What a change line reports when stdout is not a terminal.
fn change_line(e: &Execution) -> String {
    format!("{}  attempt {}", e.state, attempt_summary(e))
}

/// Redraws (or prints a line) on each change the server pushes: an event
/// of the execution or a log line; between them only the clock moves.
async fn watch(client: &Client, id: &str, json: bool) -> anyhow::Result<u8> {
    let redraw = !json && std::io::stdout().is_terminal();
    let mut events = client.follow_events(id).await?;
    let mut log_stream = if json {
        None
    } else {
        Some(client.follow_logs(id).await?)
    };
    let mut logs: VecDeque<String> = VecDeque::new();
    let mut last_change: Option<String> = None;
    let mut reply = client.execution(id).await?;
    let mut ended = false;
    let mut tick = tokio::time::interval(WATCH_TICK);
    if redraw {
        out!("\x1b[2J");
    }
    loop {
        let e = &reply.value;
        let change = change_line(e);
        if redraw {
            // Home, then each line clears its rest, then clear below.
            let frame = watch_frame(e, &logs, SystemTime::now()).replace('\n', "\x1b[K\n");
            out!("\x1b[H{frame}\x1b[J");
        } else if last_change.as_ref() != Some(&change)
            // The end is printed last: after every log line has come in.
            && !(e.state.is_terminal() && log_stream.is_some())
        {
            if json {
                outln!("{}", reply.json);
            } else {
                outln!("{change}  elapsed {}", elapsed(e, SystemTime::now()));
            }
            last_change = Some(change);
        }
        if ended && log_stream.is_none() {
            return Ok(exit_code(e.state));
        }
        tokio::select! {
            event = events.next(), if !ended => match event? {
                Some(event) if event.event == "end" => {
                    ended = true;
                    reply = client.execution(id).await?;
                }
                Some(_) => reply = client.execution(id).await?,
                None => bail!("the event stream of {id} closed before the execution ended"),
            },
            line = next_log(&mut log_stream) => match line? {
                Some(line) => {
                    if !redraw {
                        outln!("{line}");
                    }
                    logs.push_back(line);
                    if logs.len() > WATCH_LOG_LINES {
                        logs.pop_front();
                    }
                }
                // Every line is in once the log stream has ended.
                None => log_stream = None,
            },
            _ = tick.tick(), if redraw => {}
        }
    }
}

/// The next log line of a followed log, `None` at its end; pending
/// forever without a log stream.
async fn next_log(stream: &mut Option<EventStream>) -> anyhow::Result<Option<String>> {
    let Some(s) = stream else {
        return std::future::pending().await;
    };
    loop {
        match s.next().await? {
            Some(event) if event.event == "log" => {
                return Ok(Some(match serde_json::from_str::<StoredLog>(&event.data) {
                    Ok(log) => log_line(&log),
                    Err(_) => event.data,
                }));
            }
            Some(event) if event.event == "end" => return Ok(None),
            Some(_) => continue,
            None => bail!("the log stream closed before the execution ended"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn execution() -> Execution {
        serde_json::from_value(execution_json()).unwrap()
    }

    fn execution_json() -> Value {
        json!({
            "id": "0193-a", "task_id": "t1", "task_version": 2, "namespace": "default",
            "parent_id": null, "trigger": "cli", "input": {"name": "CLI"}, "state": "RUNNING",
            "created_at": "2026-03-01T12:00:00Z", "started_at": "2026-03-01T12:00:01Z",
            "ended_at": null, "duration_ms": null, "outputs": {}, "result": null, "error": null,
            "labels": {}, "idempotency_key": null,
            "task_runs": [{"id": "r1", "step": "main", "state": "RETRYING",
                "not_before": "2026-03-01T12:00:05.250Z", "checkpoint": null,
                "attempts": [
                    {"id": "a1", "number": 1, "status": "failed", "worker_id": "w1",
                     "error": {"kind": "trap", "message": "unreachable\nbacktrace"},
                     "usage": {"fuel_consumed": 1, "wall_ms": 12.0, "memory_peak_bytes": 1},
                     "started_at": "2026-03-01T12:00:01Z", "ended_at": "2026-03-01T12:00:02Z"}
                ]}]
        })
    }

    #[test]
    fn states_decide_the_exit_code() {
        use ExecutionState::*;
        assert_eq!(exit_code(Running), exit::OK);
        assert_eq!(exit_code(Success), exit::OK);
        assert_eq!(exit_code(Warning), exit::OK);
        assert_eq!(exit_code(Failed), exit::FAILED);
        assert_eq!(exit_code(Killed), exit::FAILED);
    }

    #[test]
    fn executions_print_as_a_table_with_task_names() {
        let mut done = execution();
        done.state = ExecutionState::Success;
        done.duration_ms = Some(1234.0);
        let names = BTreeMap::from([("t1".to_string(), "greet".to_string())]);
        let mut other = execution();
        other.id = "0193-b".into();
        other.task_id = "t2".into();
        assert_eq!(
            execution_table(&[done, other], &names),
            "ID      STATE    TASK   CREATED              DURATION\n\
             0193-a  SUCCESS  greet  2026-03-01 12:00:00  1.2s\n\
             0193-b  RUNNING  t2     2026-03-01 12:00:00  -\n"
        );
    }

    #[test]
    fn the_detail_view_shows_runs_and_attempts() {
        let d = detail(&execution());
        assert!(
            d.starts_with("id:       0193-a\ntask:     t1 (version 2)\nstate:    RUNNING\n"),
            "{d}"
        );
        assert!(d.contains("input:    {\"name\":\"CLI\"}\n"), "{d}");
        assert!(
            d.contains("  main  RETRYING (next attempt at 2026-03-01 12:00:05)\n"),
            "{d}"
        );
        assert!(
            d.contains("    attempt 1  failed  worker w1  12ms  trap: unreachable\n"),
            "{d}"
        );
        assert!(!d.contains("result:"), "{d}");
    }

    #[test]
    fn watch_shows_attempt_elapsed_and_logs() {
        let e = execution();
        assert_eq!(attempt_summary(&e), "1 (failed), retrying at 12:00:05.250");
        let now = parse_time("2026-03-01T12:00:04.5Z").unwrap();
        assert_eq!(elapsed(&e, now), "3.5s");
        let logs = VecDeque::from(["12:00:01.000 #1 info  host   hi".to_string()]);
        let frame = watch_frame(&e, &logs, now);
        assert_eq!(
            frame,
            "execution 0193-a  (task t1)\nstate:    RUNNING\nattempt:  1 (failed), retrying at 12:00:05.250\n\
             elapsed:  3.5s\n\nlogs (newest 10):\n  12:00:01.000 #1 info  host   hi\n"
        );
        assert_eq!(
            change_line(&e),
            "RUNNING  attempt 1 (failed), retrying at 12:00:05.250"
        );
        let mut none = execution();
        none.task_runs = Some(Vec::new());
        assert_eq!(attempt_summary(&none), "-");
    }

    #[test]
    fn log_lines_are_one_line_each() {
        let l: StoredLog = serde_json::from_value(json!({"id": 3, "attempt": 1,
            "ts": "2026-03-01T12:00:01.123456Z", "level": "info", "source": "stdout",
            "message": "Hello"}))
        .unwrap();
        assert_eq!(log_line(&l), "12:00:01.123 #1 info  stdout Hello");
    }
}
