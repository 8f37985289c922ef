//! The SQLite writer: one thread, one connection, group commit.
//!
//! sqlx runs each SQLite statement as a round trip to a worker thread; with
//! ~30 statements per execution, a profile of `ward serve` under load showed
//! over half the CPU in context switches and under 3% in SQLite itself. So
//! writes run here, synchronously on a dedicated thread with rusqlite (the
//! same libsqlite3 that sqlx links), with prepared statements cached. The
//! thread takes every write queued while the previous commit ran, applies
//! them in one transaction and acknowledges each only after the commit:
//! durable at acknowledgement, with one fsync per batch instead of one per
//! execution. Every state change is checked against `model::state` here,
//! inside the transaction, before it is written.
//!
//! Every refusal (a forbidden transition, a conflict, a stale fencing token,
//! an unknown id) is decided before a write touches a row, so a refused
//! write leaves the batch as it was and needs no savepoint (savepoints made
//! SQLite copy each touched page into a sub-journal: measurable at this
//! rate). A failure of SQLite itself rolls the whole batch back and fails
//! every write in it.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::super::*;
use crate::model::now;
use crate::model::state;
use crate::sandbox::report::{AttemptError, ErrorKind, Usage};

type Ack = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (Applied, Ack) + Send>;

/// What a write did to the transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// Done, or refused before writing anything.
    Clean,
    /// SQLite failed part-way: the transaction must be rolled back.
    Broken,
}

fn applied<T>(result: &StoreResult<T>) -> Applied {
    match result {
        Err(StoreError::Internal(_)) => Applied::Broken,
        _ => Applied::Clean,
    }
}

/// Writes taken into one transaction at most.
const MAX_BATCH: usize = 1024;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Internal(e.to_string())
    }
}

pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Opens the writer's connection to an already migrated database.
    pub fn open(path: &Path) -> StoreResult<Writer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // A small page cache (every commit walks it: pcache1Truncate) and the
        // database memory-mapped, so that pages outside the cache are read
        // without a syscall and a copy each.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = memory; \
             PRAGMA cache_size = -8192; PRAGMA mmap_size = 1073741824;",
        )?;
        conn.set_prepared_statement_cache_capacity(128);
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ward-store-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Internal(format!("starting the writer: {e}")))?;
        Ok(Writer { jobs: tx })
    }

    /// Runs `f` in the next transaction; resolves after the commit.
    pub async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |c| {
            let result = f(c);
            let state = applied(&result);
            let ack: Ack = Box::new(move |commit| {
                let _ = tx.send(match commit {
                    Ok(()) => result,
                    Err(e) => Err(StoreError::Internal(format!("not committed: {e}"))),
                });
            });
            (state, ack)
        });
        self.submit(job, rx).await
    }

    /// Runs `f` in the next transaction and resolves as soon as `f` has run,
    /// before the commit. For writes nobody is told about (an attempt
    /// marked RUNNING): later writes queue behind it in the same order, so
    /// nothing can observe the difference except a failed commit, which is
    /// logged and leaves the task run to recovery.
    pub async fn run_before_commit<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |c| {
            let result = f(c);
            let state = applied(&result);
            let _ = tx.send(result);
            let ack: Ack = Box::new(|commit| {
                if let Err(e) = commit {
                    tracing::error!(error = %e, "store: a write acted on before its commit was lost");
                }
            });
            (state, ack)
        });
        self.submit(job, rx).await
    }

    async fn submit<T>(&self, job: Job, rx: oneshot::Receiver<StoreResult<T>>) -> StoreResult<T> {
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Internal("the store's writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Internal("the store's writer dropped a write".into()))?
    }

    /// Queues `f` without waiting for it (log lines).
    pub fn fire<F>(&self, f: F)
    where
        F: FnOnce(&Connection) -> StoreResult<()> + Send + 'static,
    {
        let job: Job = Box::new(move |c| {
            let result = f(c);
            if let Err(e) = &result {
                tracing::error!(error = %e, "store: a queued write failed");
            }
            (applied(&result), Box::new(|_| {}))
        });
        if self.jobs.send(job).is_err() {
            tracing::error!("store: the writer has stopped; a queued write was lost");
        }
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    let mut pending: std::collections::VecDeque<Job> = Default::default();
    loop {
        if pending.is_empty() {
            match rx.recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => return,
            }
        }
        while pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "store: cannot begin a transaction");
            for job in pending.drain(..) {
                let (_, ack) = job(&conn);
                ack(Err(e.to_string()));
            }
            discard_events();
            continue;
        }
        let mut acks = Vec::with_capacity(pending.len());
        let mut broken = false;
        while let Some(job) = pending.pop_front() {
            let (state, ack) = job(&conn);
            acks.push(ack);
            if state == Applied::Broken {
                // The rest of the batch runs in a fresh transaction.
                broken = true;
                break;
            }
        }
        if !broken && let Err(e) = flush_events(&conn) {
            tracing::error!(error = %e, "store: writing events failed");
            broken = true;
        }
        let commit = if broken {
            discard_events();
            let _ = conn.execute_batch("ROLLBACK");
            Err("a write in the same batch failed; the batch was rolled back".to_string())
        } else {
            match conn.execute_batch("COMMIT") {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::error!(error = %e, "store: commit failed");
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(e.to_string())
                }
            }
        };
        for ack in acks {
            ack(commit.clone());
        }
    }
}

fn exec_state(s: &str) -> StoreResult<ExecutionState> {
    s.parse().map_err(StoreError::Internal)
}

fn run_state(s: &str) -> StoreResult<TaskRunState> {
    s.parse().map_err(StoreError::Internal)
}

fn parse_rfc3339_ms(s: &str) -> Option<f64> {
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64() * 1000.0)
}

/// An event waiting for its batch's commit.
struct PendingEvent {
    execution_id: String,
    ts: String,
    kind: &'static str,
    from: Option<String>,
    to: Option<String>,
    detail: String,
}

thread_local! {
    /// Events of the batch in progress, on the writer thread. Written as
    /// multi-row inserts just before the commit (six one-row inserts per
    /// execution were a good part of the writer's time), dropped if the
    /// batch rolls back.
    static EVENTS: std::cell::RefCell<Vec<PendingEvent>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rows per multi-row event insert.
const EVENT_CHUNK: usize = 32;

fn event(
    _c: &Connection,
    execution_id: &str,
    kind: &'static str,
    from: Option<&str>,
    to: Option<&str>,
    detail: &Value,
) -> StoreResult<()> {
    EVENTS.with(|e| {
        e.borrow_mut().push(PendingEvent {
            execution_id: execution_id.to_string(),
            ts: now(),
            kind,
            from: from.map(str::to_string),
            to: to.map(str::to_string),
            detail: detail.to_string(),
        })
    });
    Ok(())
}

fn discard_events() {
    EVENTS.with(|e| e.borrow_mut().clear());
}

/// Writes the batch's events, in the order they happened.
fn flush_events(c: &Connection) -> StoreResult<()> {
    let events = EVENTS.with(|e| std::mem::take(&mut *e.borrow_mut()));
    let insert = |n: usize| {
        let rows = vec!["(?, ?, ?, ?, ?, ?)"; n].join(", ");
        format!(
            "INSERT INTO events (execution_id, ts, kind, from_state, to_state, detail) VALUES {rows}"
        )
    };
    for chunk in events.chunks(EVENT_CHUNK) {
        let mut st = c.prepare_cached(&insert(chunk.len()))?;
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 6);
        for e in chunk {
            values.extend_from_slice(&[&e.execution_id, &e.ts, &e.kind, &e.from, &e.to, &e.detail]);
        }
        st.execute(values.as_slice())?;
    }
    Ok(())
}

/// Moves an execution to `to` (no-op if there already), checking the
/// machine, stamping times and recording the event. `started_at` is the
/// execution's start, for the duration of a terminal state.
fn set_execution_state(
    c: &Connection,
    id: &str,
    from: ExecutionState,
    to: ExecutionState,
    started_at: Option<&str>,
    detail: Value,
) -> StoreResult<()> {
    if from == to {
        return Ok(());
    }
    state::execution(from, to)?;
    let ts = now();
    if to.is_terminal() {
        let duration = started_at
            .and_then(parse_rfc3339_ms)
            .zip(parse_rfc3339_ms(&ts))
            .map(|(a, b)| b - a);
        c.prepare_cached(
            "UPDATE executions SET state = ?, ended_at = ?, duration_ms = ? WHERE id = ?",
        )?
        .execute(params![to.as_str(), ts, duration, id])?;
    } else if to == ExecutionState::Running {
        c.prepare_cached(
            "UPDATE executions SET state = ?, started_at = COALESCE(started_at, ?) WHERE id = ?",
        )?
        .execute(params![to.as_str(), ts, id])?;
    } else if to == ExecutionState::Restarted {
        c.prepare_cached("UPDATE executions SET state = ?, ended_at = NULL, duration_ms = NULL, error = NULL WHERE id = ?")?
            .execute(params![to.as_str(), id])?;
    } else {
        c.prepare_cached("UPDATE executions SET state = ? WHERE id = ?")?
            .execute(params![to.as_str(), id])?;
    }
    event(
        c,
        id,
        "execution.state",
        Some(from.as_str()),
        Some(to.as_str()),
        &detail,
    )
}

fn set_run_state(
    c: &Connection,
    execution_id: &str,
    run_id: &str,
    from: TaskRunState,
    to: TaskRunState,
) -> StoreResult<()> {
    if from == to {
        return Ok(());
    }
    state::task_run(from, to)?;
    c.prepare_cached("UPDATE task_runs SET state = ? WHERE id = ?")?
        .execute(params![to.as_str(), run_id])?;
    event(
        c,
        execution_id,
        "task_run.state",
        Some(from.as_str()),
        Some(to.as_str()),
        &json!({ "task_run_id": run_id }),
    )
}

fn final_execution_state(run: TaskRunState) -> ExecutionState {
    match run {
        TaskRunState::Success => ExecutionState::Success,
        TaskRunState::Warning => ExecutionState::Warning,
        TaskRunState::Killed => ExecutionState::Killed,
        _ => ExecutionState::Failed,
    }
}

fn runnable_of(c: &Connection, execution_id: &str) -> StoreResult<Vec<Runnable>> {
    let mut st = c.prepare_cached(
        "SELECT id, execution_id, task_id, priority, queue, not_before FROM task_runs \
         WHERE execution_id = ? AND state IN ('CREATED', 'RETRYING')",
    )?;
    let rows = st.query_map([execution_id], |r| {
        Ok(Runnable {
            task_run_id: r.get(0)?,
            execution_id: r.get(1)?,
            task_id: r.get(2)?,
            priority: r.get::<_, i64>(3)? as i32,
            queue: r.get(4)?,
            not_before: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn put_plugin(c: &Connection, p: &Plugin) -> StoreResult<bool> {
    let n = c
        .prepare_cached("INSERT INTO plugins (digest, name, version, size, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")?
        .execute(params![p.id.trim_start_matches("sha256:"), p.name, p.version, p.size as i64, p.created_at])?;
    Ok(n == 1)
}

fn name_taken(c: &Connection, namespace: &str, name: &str) -> StoreResult<Option<String>> {
    Ok(
        c.prepare_cached("SELECT id FROM tasks WHERE namespace = ? AND name = ? AND deleted = 0")?
            .query_row([namespace, name], |r| r.get(0))
            .optional()?,
    )
}

pub(super) fn create_task(c: &Connection, t: &Task) -> StoreResult<()> {
    if let Some(id) = name_taken(c, &t.spec.namespace, &t.spec.name)? {
        return Err(StoreError::Conflict(format!(
            "a task named {:?} already exists in namespace {:?} (id {id})",
            t.spec.name, t.spec.namespace
        )));
    }
    let spec = serde_json::to_string(&t.spec)?;
    c.prepare_cached("INSERT INTO tasks (id, namespace, name, version, spec, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)")?
        .execute(params![t.id, t.spec.namespace, t.spec.name, t.version, spec, t.created_at, t.updated_at])?;
    c.prepare_cached(
        "INSERT INTO task_versions (task_id, version, spec, created_at) VALUES (?, ?, ?, ?)",
    )?
    .execute(params![t.id, t.version, spec, t.created_at])?;
    Ok(())
}

pub(super) fn update_task(c: &Connection, task: &TaskRef, spec: TaskSpec) -> StoreResult<Task> {
    let (condition, keys) = super::live_task(task);
    let row: Option<(String, i64, String, String)> = c
        .prepare_cached(&format!(
            "SELECT id, version, spec, created_at FROM tasks WHERE {condition}"
        ))?
        .query_row(rusqlite::params_from_iter(keys), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let (task_id, version, old, created_at) =
        row.ok_or_else(|| StoreError::NotFound(format!("no {task}")))?;
    let old: TaskSpec = serde_json::from_str(&old)?;
    if (old.namespace.as_str(), old.name.as_str()) != (spec.namespace.as_str(), spec.name.as_str())
        && let Some(other) = name_taken(c, &spec.namespace, &spec.name)?
    {
        return Err(StoreError::Conflict(format!(
            "a task named {:?} already exists in namespace {:?} (id {other})",
            spec.name, spec.namespace
        )));
    }
    let task = Task {
        id: task_id,
        version: version + 1,
        spec,
        created_at,
        updated_at: now(),
    };
    let text = serde_json::to_string(&task.spec)?;
    c.prepare_cached("UPDATE tasks SET namespace = ?, name = ?, version = ?, spec = ?, updated_at = ? WHERE id = ?")?
        .execute(params![task.spec.namespace, task.spec.name, task.version, text, task.updated_at, task.id])?;
    c.prepare_cached(
        "INSERT INTO task_versions (task_id, version, spec, created_at) VALUES (?, ?, ?, ?)",
    )?
    .execute(params![task.id, task.version, text, task.updated_at])?;
    Ok(task)
}

pub(super) fn delete_task(c: &Connection, task: &TaskRef) -> StoreResult<()> {
    let (condition, keys) = super::live_task(task);
    let n = c
        .prepare_cached(&format!("UPDATE tasks SET deleted = 1 WHERE {condition}"))?
        .execute(rusqlite::params_from_iter(keys))?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("no {task}")));
    }
    Ok(())
}

/// A new execution, or the id of the one an idempotency key already made.
pub(super) enum Created {
    New(Box<Execution>),
    Existing(String),
}

pub(super) fn create_execution(c: &Connection, new: NewExecution) -> StoreResult<Created> {
    if let Some(key) = &new.idempotency_key {
        let existing: Option<String> = c
            .prepare_cached("SELECT id FROM executions WHERE task_id = ? AND idempotency_key = ?")?
            .query_row([&new.task.id, key], |r| r.get(0))
            .optional()?;
        if let Some(id) = existing {
            return Ok(Created::Existing(id));
        }
    }
    let created_at = now();
    let spec = &new.task.spec;
    c.prepare_cached(
        "INSERT INTO executions (id, task_id, task_version, namespace, parent_id, trigger, input, state, created_at, labels, idempotency_key) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 'CREATED', ?, ?, ?)",
    )?
    .execute(params![
        new.id,
        new.task.id,
        new.task.version,
        spec.namespace,
        new.parent_id,
        new.trigger.as_str(),
        new.input.to_string(),
        created_at,
        serde_json::to_string(&new.labels)?,
        new.idempotency_key,
    ])?;
    c.prepare_cached(
        "INSERT INTO task_runs (id, execution_id, task_id, step, state, max_attempts, queue, priority) \
         VALUES (?, ?, ?, 'main', 'CREATED', ?, ?, ?)",
    )?
    .execute(params![new.task_run_id, new.id, new.task.id, spec.retry.max_attempts as i64, spec.queue, spec.priority as i64])?;
    event(
        c,
        &new.id,
        "execution.state",
        None,
        Some("CREATED"),
        &json!({ "trigger": new.trigger.as_str() }),
    )?;
    Ok(Created::New(Box::new(Execution {
        id: new.id,
        task_id: new.task.id,
        task_version: new.task.version,
        namespace: new.task.spec.namespace,
        parent_id: new.parent_id,
        trigger: new.trigger,
        input: new.input,
        state: ExecutionState::Created,
        created_at,
        started_at: None,
        ended_at: None,
        duration_ms: None,
        outputs: Default::default(),
        result: None,
        error: None,
        labels: new.labels,
        idempotency_key: new.idempotency_key,
        task_runs: None,
    })))
}

pub(super) fn control(c: &Connection, id: &str, control: Control) -> StoreResult<ControlOutcome> {
    let (from, started): (String, Option<String>) = c
        .prepare_cached("SELECT state, started_at FROM executions WHERE id = ?")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("no execution {id}")))?;
    let from = exec_state(&from)?;
    let runs: Vec<(String, String)> = c
        .prepare_cached("SELECT id, state FROM task_runs WHERE execution_id = ?")?
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let runs: Vec<(String, TaskRunState)> = runs
        .into_iter()
        .map(|(i, s)| Ok((i, run_state(&s)?)))
        .collect::<StoreResult<_>>()?;
    // Asking for the state it is already in is refused too (409), not
    // silently accepted.
    let wanted = match control {
        Control::Cancel => ExecutionState::Killed,
        Control::Pause => ExecutionState::Paused,
        Control::Resume => ExecutionState::Running,
        Control::Restart => ExecutionState::Restarted,
    };
    let allowed = from.can_become(wanted)
        || (control == Control::Cancel && from.can_become(ExecutionState::Killing));
    if !allowed || (control == Control::Resume && from != ExecutionState::Paused) {
        return Err(state::Forbidden {
            from: from.to_string(),
            to: wanted.to_string(),
        }
        .into());
    }
    let detail = json!({ "by": "user" });
    let mut outcome = ControlOutcome {
        state: from,
        runnable: Vec::new(),
        interrupt: Vec::new(),
    };
    match control {
        Control::Cancel => {
            let running: Vec<String> = runs
                .iter()
                .filter(|(_, s)| *s == TaskRunState::Running)
                .map(|(i, _)| i.clone())
                .collect();
            let to = if running.is_empty() {
                ExecutionState::Killed
            } else {
                ExecutionState::Killing
            };
            for (run, s) in &runs {
                if !s.is_terminal() && *s != TaskRunState::Running {
                    set_run_state(c, id, run, *s, TaskRunState::Killed)?;
                }
            }
            set_execution_state(c, id, from, to, started.as_deref(), detail)?;
            outcome.state = to;
            outcome.interrupt = running;
        }
        Control::Pause => {
            set_execution_state(c, id, from, ExecutionState::Paused, None, detail)?;
            outcome.state = ExecutionState::Paused;
        }
        Control::Resume => {
            set_execution_state(c, id, from, ExecutionState::Running, None, detail)?;
            outcome.state = ExecutionState::Running;
            outcome.runnable = runnable_of(c, id)?;
        }
        Control::Restart => {
            set_execution_state(c, id, from, ExecutionState::Restarted, None, detail)?;
            for (run, s) in &runs {
                if matches!(s, TaskRunState::Failed | TaskRunState::Killed) {
                    set_run_state(c, id, run, *s, TaskRunState::Created)?;
                    c.prepare_cached("UPDATE task_runs SET not_before = NULL WHERE id = ?")?
                        .execute([run])?;
                }
            }
            outcome.state = ExecutionState::Restarted;
            outcome.runnable = runnable_of(c, id)?;
        }
    }
    Ok(outcome)
}

thread_local! {
    /// Task versions never change: their parsed specs, on the writer thread.
    static SPECS: std::cell::RefCell<std::collections::HashMap<(String, i64), TaskSpec>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn task_version_spec(c: &Connection, task_id: &str, version: i64) -> StoreResult<TaskSpec> {
    let key = (task_id.to_string(), version);
    if let Some(spec) = SPECS.with(|m| m.borrow().get(&key).cloned()) {
        return Ok(spec);
    }
    let text: String = c
        .prepare_cached("SELECT spec FROM task_versions WHERE task_id = ? AND version = ?")?
        .query_row(params![task_id, version], |r| r.get(0))?;
    let spec: TaskSpec = serde_json::from_str(&text)?;
    SPECS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= 4096 {
            m.clear();
        }
        m.insert(key, spec.clone());
    });
    Ok(spec)
}

pub(super) fn start_attempt(
    c: &Connection,
    run_id: &str,
    worker: &str,
    lease_until: i64,
) -> StoreResult<StartedAttempt> {
    type Row = (
        String,
        i64,
        i64,
        i64,
        Option<String>,
        String,
        String,
        String,
        String,
        String,
        i64,
    );
    let row: Row = c
        .prepare_cached(
            "SELECT tr.state, tr.attempts, tr.max_attempts, tr.fence, tr.checkpoint, tr.execution_id, tr.step, \
             e.state, e.input, e.task_id, e.task_version \
             FROM task_runs tr JOIN executions e ON e.id = tr.execution_id WHERE tr.id = ?",
        )?
        .query_row([run_id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
            ))
        })
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("no task run {run_id}")))?;
    let (
        run_from,
        attempts,
        max_attempts,
        fence,
        checkpoint,
        execution_id,
        step,
        exec_from,
        input,
        task_id,
        task_version,
    ) = row;
    let run_from = run_state(&run_from)?;
    let exec_from = exec_state(&exec_from)?;
    // Only a queued, restarted or running execution gets a new attempt: a
    // paused one waits for resume (PAUSED → RUNNING is resume's transition,
    // not the dispatcher's).
    if !matches!(
        exec_from,
        ExecutionState::Created | ExecutionState::Restarted | ExecutionState::Running
    ) {
        return Err(state::Forbidden {
            from: exec_from.to_string(),
            to: "RUNNING (a new attempt)".into(),
        }
        .into());
    }
    state::task_run(run_from, TaskRunState::Running)?;
    let spec = task_version_spec(c, &task_id, task_version)?;
    let number = attempts + 1;
    let fence = fence + 1;
    let attempt_id = uuid::Uuid::now_v7().to_string();
    c.prepare_cached(
        "UPDATE task_runs SET state = 'RUNNING', attempts = ?, fence = ?, owner = ?, lease_until = ?, not_before = NULL WHERE id = ?",
    )?
    .execute(params![number, fence, worker, lease_until, run_id])?;
    event(
        c,
        &execution_id,
        "task_run.state",
        Some(run_from.as_str()),
        Some("RUNNING"),
        &json!({ "task_run_id": run_id }),
    )?;
    set_execution_state(
        c,
        &execution_id,
        exec_from,
        ExecutionState::Running,
        None,
        json!({}),
    )?;
    c.prepare_cached(
        "INSERT INTO attempts (id, task_run_id, execution_id, number, status, worker_id, fence, started_at) \
         VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
    )?
    .execute(params![attempt_id, run_id, execution_id, number, worker, fence, now()])?;
    event(
        c,
        &execution_id,
        "attempt.started",
        None,
        None,
        &json!({ "attempt": number, "worker": worker }),
    )?;
    Ok(StartedAttempt {
        attempt_id,
        number: number as u32,
        fence,
        max_attempts: max_attempts as u32,
        checkpoint,
        input: serde_json::from_str(&input)?,
        task_version,
        spec,
        step,
    })
}

pub(super) fn finish_attempt(c: &Connection, f: FinishAttempt) -> StoreResult<ExecutionState> {
    let row: (String, i64, Option<String>, String, Option<String>) = c
        .prepare_cached(
            "SELECT tr.state, tr.fence, tr.owner, e.state, e.started_at \
             FROM task_runs tr JOIN executions e ON e.id = tr.execution_id WHERE tr.id = ?",
        )?
        .query_row([&f.task_run_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("no task run {}", f.task_run_id)))?;
    let (run_from, fence, owner, exec_from, started) = row;
    let run_from = run_state(&run_from)?;
    if fence != f.fence
        || owner.as_deref() != Some(f.worker.as_str())
        || run_from != TaskRunState::Running
    {
        return Err(StoreError::Fenced(format!(
            "task run {} is no longer owned by {} with token {}",
            f.task_run_id, f.worker, f.fence
        )));
    }
    let exec_from = exec_state(&exec_from)?;
    let r = &f.report;
    // A kill request wins over whatever the attempt did.
    let outcome = if exec_from == ExecutionState::Killing {
        RunOutcome::Final(TaskRunState::Killed)
    } else {
        f.outcome
    };
    // Every check before the first write (see the module docs).
    let (run_to, not_before) = match outcome {
        RunOutcome::Retry { not_before } => (TaskRunState::Retrying, Some(not_before)),
        RunOutcome::Final(s) => (s, None),
    };
    state::task_run(run_from, run_to)?;
    let exec_to = match outcome {
        RunOutcome::Retry { .. } => exec_from,
        RunOutcome::Final(s) => final_execution_state(s),
    };
    if exec_to != exec_from {
        state::execution(exec_from, exec_to)?;
    }
    let report_json = json!({
        "result": r.result, "outputs": r.outputs, "metrics": r.metrics, "media": r.media,
        "warnings": r.warnings, "checkpoint": r.checkpoint,
    });
    let error = r.error.as_ref().map(serde_json::to_string).transpose()?;
    c.prepare_cached("UPDATE attempts SET status = ?, error = ?, usage = ?, report = ?, ended_at = ? WHERE id = ?")?
        .execute(params![
            r.status.as_str(),
            error,
            serde_json::to_string(&r.usage)?,
            report_json.to_string(),
            now(),
            f.attempt_id
        ])?;
    event(
        c,
        &f.execution_id,
        "attempt.finished",
        None,
        None,
        &json!({ "attempt": r.attempt, "status": r.status.as_str(), "error": r.error }),
    )?;
    for m in &r.media {
        c.prepare_cached(
            "INSERT INTO media (id, execution_id, attempt_id, name, content_type, size, sha256, url, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![m.id, f.execution_id, f.attempt_id, m.name, m.content_type, m.size as i64, m.sha256, m.url, now()])?;
    }
    c.prepare_cached(
        "UPDATE task_runs SET state = ?, owner = NULL, lease_until = NULL, not_before = ?, checkpoint = COALESCE(?, checkpoint) WHERE id = ?",
    )?
    .execute(params![run_to.as_str(), not_before, r.checkpoint.as_ref().map(|v| v.to_string()), f.task_run_id])?;
    event(
        c,
        &f.execution_id,
        "task_run.state",
        Some(run_from.as_str()),
        Some(run_to.as_str()),
        &json!({ "task_run_id": f.task_run_id }),
    )?;
    c.prepare_cached("UPDATE executions SET outputs = ?, result = ?, error = ? WHERE id = ?")?
        .execute(params![
            serde_json::to_string(&r.outputs)?,
            r.result.as_ref().map(|v| v.to_string()),
            error,
            f.execution_id
        ])?;
    set_execution_state(
        c,
        &f.execution_id,
        exec_from,
        exec_to,
        started.as_deref(),
        json!({ "attempt": r.attempt }),
    )?;
    Ok(exec_to)
}

pub(super) fn save_checkpoint(
    c: &Connection,
    run_id: &str,
    fence: i64,
    state: &str,
) -> StoreResult<()> {
    let n = c
        .prepare_cached(
            "UPDATE task_runs SET checkpoint = ? WHERE id = ? AND fence = ? AND state = 'RUNNING'",
        )?
        .execute(params![state, run_id, fence])?;
    if n == 0 {
        return Err(StoreError::Fenced(format!(
            "task run {run_id} is no longer running with token {fence}"
        )));
    }
    Ok(())
}

pub(super) fn append_logs(c: &Connection, lines: &[NewLog]) -> StoreResult<()> {
    let mut st = c.prepare_cached("INSERT INTO logs (execution_id, attempt, ts, level, source, message) VALUES (?, ?, ?, ?, ?, ?)")?;
    for l in lines {
        st.execute(params![
            l.execution_id,
            l.attempt as i64,
            l.ts,
            l.level,
            l.source,
            l.message
        ])?;
    }
    Ok(())
}

pub(super) fn renew_leases(c: &Connection, worker: &str, lease_until: i64) -> StoreResult<()> {
    c.prepare_cached("UPDATE task_runs SET lease_until = ? WHERE owner = ? AND state = 'RUNNING'")?
        .execute(params![lease_until, worker])?;
    Ok(())
}

/// One attempt a dead process left running, with when to retry it (if its
/// policy allows another attempt).
pub(super) struct Crashed {
    pub attempt_id: String,
    pub run_id: String,
    pub execution_id: String,
    pub number: u32,
    pub retry_at: Option<i64>,
}

/// An attempt left running, with what recovery needs to decide its fate.
pub(super) struct RunningAttempt {
    pub attempt_id: String,
    pub run_id: String,
    pub execution_id: String,
    pub number: u32,
    pub max_attempts: u32,
    pub spec: TaskSpec,
}

pub(super) fn running_attempts(c: &Connection) -> StoreResult<Vec<RunningAttempt>> {
    let mut st = c.prepare_cached(
        "SELECT a.id, a.task_run_id, a.execution_id, a.number, tr.max_attempts, v.spec \
         FROM attempts a JOIN task_runs tr ON tr.id = a.task_run_id JOIN executions e ON e.id = a.execution_id \
         JOIN task_versions v ON v.task_id = e.task_id AND v.version = e.task_version \
         WHERE a.status = 'running'",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)? as u32,
            r.get::<_, i64>(4)? as u32,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (attempt_id, run_id, execution_id, number, max_attempts, spec) = row?;
        out.push(RunningAttempt {
            attempt_id,
            run_id,
            execution_id,
            number,
            max_attempts,
            spec: serde_json::from_str(&spec)?,
        });
    }
    Ok(out)
}

pub(super) fn recover(c: &Connection, crashed: Vec<Crashed>) -> StoreResult<Recovery> {
    let mut rec = Recovery::default();
    let error = AttemptError {
        kind: ErrorKind::HostCrash,
        message: "the host running this attempt stopped before it finished".into(),
    };
    let error_text = serde_json::to_string(&error)?;
    for x in crashed {
        rec.crashed_attempts += 1;
        c.prepare_cached("UPDATE attempts SET status = 'failed', error = ?, usage = ?, ended_at = ? WHERE id = ?")?
            .execute(params![error_text, serde_json::to_string(&Usage::default())?, now(), x.attempt_id])?;
        event(
            c,
            &x.execution_id,
            "attempt.finished",
            None,
            None,
            &json!({ "attempt": x.number, "status": "failed", "error": error }),
        )?;
        let (exec_from, started): (String, Option<String>) = c
            .prepare_cached("SELECT state, started_at FROM executions WHERE id = ?")?
            .query_row([&x.execution_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let exec_from = exec_state(&exec_from)?;
        let run_to = match (exec_from, x.retry_at) {
            (ExecutionState::Killing, _) => TaskRunState::Killed,
            (_, Some(_)) => TaskRunState::Retrying,
            (_, None) => TaskRunState::Failed,
        };
        set_run_state(c, &x.execution_id, &x.run_id, TaskRunState::Running, run_to)?;
        let not_before = if run_to == TaskRunState::Retrying {
            x.retry_at
        } else {
            None
        };
        c.prepare_cached(
            "UPDATE task_runs SET owner = NULL, lease_until = NULL, not_before = ? WHERE id = ?",
        )?
        .execute(params![not_before, x.run_id])?;
        if run_to != TaskRunState::Retrying {
            c.prepare_cached("UPDATE executions SET error = ? WHERE id = ?")?
                .execute(params![error_text, x.execution_id])?;
            set_execution_state(
                c,
                &x.execution_id,
                exec_from,
                final_execution_state(run_to),
                started.as_deref(),
                json!({ "recovery": true }),
            )?;
        }
    }
    let killing: Vec<(String, Option<String>)> = c
        .prepare_cached("SELECT id, started_at FROM executions WHERE state = 'KILLING'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, started) in killing {
        rec.killed_executions += 1;
        let runs: Vec<(String, String)> = c
            .prepare_cached("SELECT id, state FROM task_runs WHERE execution_id = ?")?
            .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (run, s) in runs {
            let s = run_state(&s)?;
            if !s.is_terminal() {
                set_run_state(c, &id, &run, s, TaskRunState::Killed)?;
            }
        }
        set_execution_state(
            c,
            &id,
            ExecutionState::Killing,
            ExecutionState::Killed,
            started.as_deref(),
            json!({ "recovery": true }),
        )?;
    }
    Ok(rec)
}
