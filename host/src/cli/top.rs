//! `ward top`: a live view of a Ward server — executions per second,
//! running and queued, success rate, p95 duration, the busiest and most
//! failing tasks, slots in use — redrawn every second from the server's
//! event stream (`GET /events?follow=true`), with the slots read from
//! `GET /workers`. Quits on `q`, Esc or Ctrl-C.

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::Args;
use crossterm::event::{Event as TermEvent, EventStream as Keys, KeyCode, KeyModifiers};
use futures_util::StreamExt as _;

use super::client::{Client, Worker};
use super::exit;
use super::output::outln;
use super::sse::EventStream;
use crate::model::clock::parse_rfc3339_ms;
use crate::model::execution::ScopedEvent;
use crate::model::state::ExecutionState;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Only this task (id or name).
    #[arg(long, value_name = "TASK")]
    pub task: Option<String>,
}

/// What the rates and percentages cover.
const WINDOW_MS: i64 = 60_000;
/// What executions per second are counted over.
const RATE_MS: i64 = 10_000;
/// Stored events the view starts from, to fill its window.
const TAIL: u32 = 2_000;
/// Tasks listed as busiest and as most failing.
const TOP: usize = 5;
/// Longest a redraw waits for the server.
const READ_LIMIT: Duration = Duration::from_millis(800);

/// An execution seen and not yet ended.
struct Open {
    state: ExecutionState,
    since_ms: Option<i64>,
}

/// An execution that ended.
struct Ended {
    at_ms: i64,
    task: String,
    state: ExecutionState,
    duration_ms: Option<i64>,
}

/// What the view has learnt from the events so far.
#[derive(Default)]
pub struct View {
    open: HashMap<String, Open>,
    ended: VecDeque<Ended>,
    created: VecDeque<(i64, String)>,
}

/// One screen's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub per_second: f64,
    pub running: usize,
    pub queued: usize,
    pub success_rate: Option<f64>,
    pub p95_ms: Option<i64>,
    /// Task id and executions created or ended in the window.
    pub busiest: Vec<(String, usize)>,
    /// Task id and failed executions in the window.
    pub failing: Vec<(String, usize)>,
    pub slots: Option<(usize, usize)>,
}

impl View {
    /// Takes in one event (only execution state changes matter).
    pub fn event(&mut self, e: &ScopedEvent) {
        if e.event.kind != "execution.state" {
            return;
        }
        let (Some(to), Some(at)) = (
            e.event
                .to
                .as_deref()
                .and_then(|t| t.parse::<ExecutionState>().ok()),
            parse_rfc3339_ms(&e.event.ts).map(|ms| ms as i64),
        ) else {
            return;
        };
        let id = &e.event.execution_id;
        if to.is_terminal() {
            let open = self.open.remove(id);
            self.ended.push_back(Ended {
                at_ms: at,
                task: e.task_id.clone(),
                state: to,
                duration_ms: open.and_then(|o| o.since_ms).map(|s| at - s),
            });
            return;
        }
        if to == ExecutionState::Created {
            self.created.push_back((at, e.task_id.clone()));
        }
        let open = self.open.entry(id.clone()).or_insert(Open {
            state: to,
            since_ms: None,
        });
        open.state = to;
        if to == ExecutionState::Running && open.since_ms.is_none() {
            open.since_ms = Some(at);
        }
    }

    /// The figures at `now_ms`; forgets what left the window.
    pub fn frame(&mut self, now_ms: i64, workers: Option<&[Worker]>) -> Frame {
        let cutoff = now_ms - WINDOW_MS;
        while self.ended.front().is_some_and(|e| e.at_ms < cutoff) {
            self.ended.pop_front();
        }
        while self.created.front().is_some_and(|(at, _)| *at < cutoff) {
            self.created.pop_front();
        }
        let recent = self
            .ended
            .iter()
            .filter(|e| e.at_ms >= now_ms - RATE_MS)
            .count();
        let well = self
            .ended
            .iter()
            .filter(|e| matches!(e.state, ExecutionState::Success | ExecutionState::Warning))
            .count();
        let mut durations: Vec<i64> = self.ended.iter().filter_map(|e| e.duration_ms).collect();
        durations.sort_unstable();
        let p95 = (!durations.is_empty()).then(|| {
            let rank = (0.95 * durations.len() as f64).ceil() as usize;
            durations[rank.clamp(1, durations.len()) - 1]
        });
        let mut volume: HashMap<&str, usize> = HashMap::new();
        let mut failures: HashMap<&str, usize> = HashMap::new();
        for (_, task) in &self.created {
            *volume.entry(task).or_default() += 1;
        }
        for e in &self.ended {
            if e.state == ExecutionState::Failed {
                *failures.entry(&e.task).or_default() += 1;
            }
        }
        let running = self
            .open
            .values()
            .filter(|o| o.state == ExecutionState::Running)
            .count();
        let waiting = self
            .open
            .values()
            .filter(|o| matches!(o.state, ExecutionState::Created | ExecutionState::Restarted))
            .count();
        Frame {
            per_second: recent as f64 / (RATE_MS as f64 / 1000.0),
            running,
            queued: workers
                .map(|w| w.iter().flat_map(|w| w.queues.values()).sum::<u64>() as usize)
                .unwrap_or(waiting),
            success_rate: (!self.ended.is_empty()).then(|| well as f64 / self.ended.len() as f64),
            p95_ms: p95,
            busiest: top(volume),
            failing: top(failures),
            slots: workers.map(|w| {
                (
                    w.iter().map(|w| w.busy).sum::<u64>() as usize,
                    w.iter().map(|w| w.slots).sum::<u64>() as usize,
                )
            }),
        }
    }
}

/// The largest counts first (then by name), at most [`TOP`].
fn top(counts: HashMap<&str, usize>) -> Vec<(String, usize)> {
    let mut list: Vec<(String, usize)> = counts
        .into_iter()
        .map(|(task, n)| (task.to_string(), n))
        .collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.truncate(TOP);
    list
}

/// The screen: one line per figure, tasks by name where known.
pub fn render(f: &Frame, names: &HashMap<String, String>, clock: &str) -> Vec<String> {
    let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let list = |tasks: &[(String, usize)]| {
        if tasks.is_empty() {
            "-".to_string()
        } else {
            tasks
                .iter()
                .map(|(t, n)| format!("{} ({n})", name(t)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    vec![
        format!("ward top — {clock}   (q to quit)"),
        String::new(),
        format!("executions/s   {:.1}", f.per_second),
        format!("running        {}", f.running),
        format!("queued         {}", f.queued),
        format!(
            "success rate   {}",
            f.success_rate
                .map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
        ),
        format!(
            "p95 duration   {}",
            f.p95_ms.map_or("-".into(), |ms| format!("{ms} ms"))
        ),
        format!(
            "slots in use   {}",
            f.slots
                .map_or("-".into(), |(busy, all)| format!("{busy}/{all}"))
        ),
        format!("busiest tasks  {}", list(&f.busiest)),
        format!("most failing   {}", list(&f.failing)),
    ]
}

/// Raw mode and the alternate screen while the view runs; restored on drop.
struct Screen;

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        crossterm::terminal::enable_raw_mode()?;
        // From here on, dropping restores whatever was changed.
        let screen = Screen;
        let mut out = std::io::stdout();
        crossterm::execute!(
            out,
            crossterm::terminal::EnterAlternateScreen,
            crossterm::cursor::Hide
        )?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut out = std::io::stdout();
        let _ = crossterm::execute!(
            out,
            crossterm::cursor::Show,
            crossterm::terminal::LeaveAlternateScreen
        );
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Whether a key asks to quit: q, Esc or Ctrl-C.
fn quits(event: &TermEvent) -> bool {
    match event {
        TermEvent::Key(k) => {
            matches!(
                k.code,
                KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc
            ) || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL))
        }
        _ => false,
    }
}

async fn next_key(keys: &mut Option<Keys>) -> Option<std::io::Result<TermEvent>> {
    match keys {
        Some(k) => k.next().await,
        None => std::future::pending().await,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

pub async fn main(client: Client, args: TopArgs) -> anyhow::Result<u8> {
    let mut names: HashMap<String, String> = client
        .tasks()
        .await?
        .value
        .tasks
        .into_iter()
        .map(|t| (t.id, t.spec.name))
        .collect();
    let mut events: EventStream = client.follow_all_events(args.task.as_deref(), TAIL).await?;
    let tty = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let screen = if tty { Some(Screen::enter()?) } else { None };
    let mut keys = tty.then(Keys::new);
    let mut view = View::default();
    let mut asked: std::collections::HashSet<String> = Default::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            event = events.next() => match event? {
                Some(e) if e.event == "event" => {
                    if let Ok(e) = serde_json::from_str::<ScopedEvent>(&e.data) {
                        view.event(&e);
                    }
                }
                Some(_) => {}
                None => {
                    drop(screen);
                    bail!("the server closed the event stream");
                }
            },
            _ = tick.tick() => {
                // Never longer than a tick: a hung server must not keep
                // `q` from quitting.
                let workers = tokio::time::timeout(READ_LIMIT, client.workers())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|w| w.value.workers);
                let frame = view.frame(now_ms(), workers.as_deref());
                let unknown: Vec<String> = frame
                    .busiest
                    .iter()
                    .chain(&frame.failing)
                    .map(|(t, _)| t.clone())
                    .filter(|t| !names.contains_key(t) && !asked.contains(t))
                    .collect();
                if !unknown.is_empty()
                    && let Ok(Ok(tasks)) = tokio::time::timeout(READ_LIMIT, client.tasks()).await
                {
                    names.extend(tasks.value.tasks.into_iter().map(|t| (t.id, t.spec.name)));
                    // Deleted tasks keep their ids on screen; ask once.
                    asked.extend(unknown);
                }
                let clock = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
                let lines = render(&frame, &names, &clock);
                if tty {
                    let mut out = std::io::stdout().lock();
                    let mut text = String::from("\x1b[H");
                    for line in lines {
                        text.push_str(&line);
                        text.push_str("\x1b[K\r\n");
                    }
                    text.push_str("\x1b[J");
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                } else {
                    outln!("{}", lines[2..].join("  |  "));
                }
            },
            key = next_key(&mut keys) => match key {
                Some(Ok(k)) if quits(&k) => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    drop(screen);
                    bail!("reading the keyboard: {e}");
                }
                None => break,
            },
            _ = tokio::signal::ctrl_c(), if !tty => break,
        }
    }
    drop(screen);
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::execution::Event;
    use serde_json::Value;

    const T0: i64 = 1_764_028_800_000;

    fn state(execution: &str, task: &str, to: &str, at_ms: i64) -> ScopedEvent {
        ScopedEvent {
            event: Event {
                id: 0,
                execution_id: execution.into(),
                ts: crate::model::clock::rfc3339_micros(at_ms * 1000),
                kind: "execution.state".into(),
                from: None,
                to: Some(to.into()),
                detail: Value::Null,
            },
            task_id: task.into(),
            namespace: "default".into(),
        }
    }

    #[test]
    fn the_view_counts_rates_durations_and_tasks_in_its_window() {
        let mut v = View::default();
        for (i, (task, end)) in [("a", "SUCCESS"), ("a", "SUCCESS"), ("b", "FAILED")]
            .iter()
            .enumerate()
        {
            let id = format!("e{i}");
            let at = T0 + i as i64 * 1000;
            v.event(&state(&id, task, "CREATED", at));
            v.event(&state(&id, task, "RUNNING", at + 10));
            v.event(&state(&id, task, end, at + 10 + 100 * (i as i64 + 1)));
        }
        v.event(&state("e9", "a", "CREATED", T0 + 5000));
        v.event(&state("e9", "a", "RUNNING", T0 + 5001));
        let f = v.frame(T0 + 6000, None);
        assert_eq!(f.per_second, 0.3, "three ended in the last 10 s");
        assert_eq!(f.running, 1);
        assert_eq!(f.queued, 0);
        assert_eq!(f.success_rate, Some(2.0 / 3.0));
        assert_eq!(f.p95_ms, Some(300));
        assert_eq!(f.busiest, [("a".to_string(), 3), ("b".to_string(), 1)]);
        assert_eq!(f.failing, [("b".to_string(), 1)]);
        assert_eq!(f.slots, None);

        // A minute later only the running one is left.
        let f = v.frame(T0 + 70_000, None);
        assert_eq!((f.per_second, f.success_rate, f.p95_ms), (0.0, None, None));
        assert_eq!(f.running, 1);
        assert!(f.busiest.is_empty());

        let names = HashMap::from([("a".to_string(), "alpha".to_string())]);
        let screen = render(&v.frame(T0 + 6000, None), &names, "now").join("\n");
        assert!(screen.contains("running        1"), "{screen}");
    }

    #[test]
    fn q_esc_and_ctrl_c_quit() {
        use crossterm::event::KeyEvent;
        let key = |code, modifiers| TermEvent::Key(KeyEvent::new(code, modifiers));
        assert!(quits(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!quits(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
    }
}
