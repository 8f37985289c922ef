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
//! execution. State changes are planned by `model::plan` and applied here
//! inside the transaction (`apply.rs`).
//!
//! Every refusal (a forbidden transition, a conflict, a stale fencing token,
//! an unknown id) is decided before a write touches a row, so a refused
//! write leaves the batch as it was and needs no savepoint (savepoints made
//! SQLite copy each touched page into a sub-journal: measurable at this
//! rate). A failure of SQLite itself rolls the whole batch back and fails
//! every write in it.
//!
//! After each commit the writer publishes what the batch made durable (its
//! events and log lines, with their ids) on the store's [`Changes`] hub,
//! for followers and waiting callers; only for executions someone follows.

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::oneshot;

use super::super::changes::{Changes, ExecutionChanges};
use super::super::*;
use crate::model::clock::Clock;
use crate::model::execution::ScopedEvent;
use crate::model::now;
use crate::model::plan::{self, EventKind};

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
        Err(e) if e.is_failure() => Applied::Broken,
        _ => Applied::Clean,
    }
}

/// Writes taken into one transaction at most.
const MAX_BATCH: usize = 1024;

pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Opens the writer's connection to an already migrated database;
    /// commits are published on `changes`.
    pub fn open(path: &Path, changes: Arc<Changes>) -> StoreResult<Writer> {
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
            .spawn(move || writer_loop(conn, rx, changes))
            .map_err(|e| StoreError::Unavailable(format!("starting the writer: {e}")))?;
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
                    Err(e) => Err(StoreError::Unavailable(format!("not committed: {e}"))),
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
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store's writer dropped a write".into()))?
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

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>, changes: Arc<Changes>) {
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
        let began = std::time::Instant::now();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Not run: outside a transaction each write would commit on its
            // own while its caller is told it failed. Dropped unrun, each
            // caller gets `Unavailable` (retriable) and nothing is written.
            tracing::error!(error = %e, writes = pending.len(), "store: cannot begin a transaction; the waiting writes fail unwritten");
            pending.clear();
            discard_pending();
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
            discard_pending();
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
        if commit.is_ok() {
            crate::telemetry::committed(acks.len(), began.elapsed());
            publish(&changes);
        } else {
            discard_pending();
        }
        for ack in acks {
            ack(commit.clone());
        }
    }
}

/// Hands the committed batch's events and log lines to their followers.
/// Before the acknowledgements: a caller told of a commit and following
/// next finds it in the store, one following already finds it here.
fn publish(changes: &Changes) {
    let events = EVENTS.with(|e| std::mem::take(&mut *e.borrow_mut()));
    let logs = LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()));
    let execution_state = EventKind::ExecutionState.as_str();
    for e in events.iter().filter(|e| e.kind == execution_state) {
        if let Some(to) = e.to.as_deref().and_then(|t| t.parse().ok()) {
            let from = e.from.as_deref().and_then(|f| f.parse().ok());
            crate::telemetry::execution_moved(from, to);
        }
    }
    if !changes.is_followed() {
        return;
    }
    let everything = changes.is_followed_all();
    let mut all = Vec::new();
    let mut by_execution: Vec<ExecutionChanges> = Vec::new();
    // Per execution touched: its place in `by_execution`, or None when
    // nobody follows it.
    let mut places: std::collections::HashMap<String, Option<usize>> = Default::default();
    let mut place = |id: &str, by_execution: &mut Vec<ExecutionChanges>| -> Option<usize> {
        if let Some(p) = places.get(id) {
            return *p;
        }
        let p = changes.wants(id).then(|| {
            by_execution.push(ExecutionChanges {
                execution_id: id.to_string(),
                ..Default::default()
            });
            by_execution.len() - 1
        });
        places.insert(id.to_string(), p);
        p
    };
    for e in events {
        let place = place(&e.execution_id, &mut by_execution);
        if place.is_none() && !everything {
            continue;
        }
        let event = Event {
            id: e.id,
            detail: serde_json::from_str(&e.detail).unwrap_or(Value::Null),
            execution_id: e.execution_id,
            ts: e.ts,
            kind: e.kind.to_string(),
            from: e.from,
            to: e.to,
        };
        match (place, everything) {
            (Some(i), true) => by_execution[i].events.push(event.clone()),
            (Some(i), false) => {
                by_execution[i].events.push(event);
                continue;
            }
            _ => {}
        }
        all.push(ScopedEvent {
            event,
            task_id: e.task_id,
            namespace: e.namespace,
        });
    }
    for (id, l) in logs {
        let Some(i) = place(&l.execution_id, &mut by_execution) else {
            continue;
        };
        by_execution[i].logs.push(StoredLog {
            id,
            attempt: l.attempt,
            ts: l.ts,
            level: l.level,
            source: l.source,
            message: l.message,
        });
    }
    changes.publish(by_execution, all);
}

/// An event waiting for its batch's commit.
struct PendingEvent {
    /// Its row id, once written.
    id: i64,
    execution_id: String,
    task_id: String,
    namespace: String,
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
    /// Log lines of the batch in progress with their row ids, kept until
    /// the commit for publication.
    static LOGS: std::cell::RefCell<Vec<(i64, NewLog)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rows per multi-row event insert.
const EVENT_CHUNK: usize = 32;

/// Records an event of the batch in progress (written just before commit);
/// `scope` is its execution's task id and namespace.
pub(super) fn push_event(
    execution_id: &str,
    scope: (&str, &str),
    ts: &str,
    kind: &'static str,
    from: Option<&str>,
    to: Option<&str>,
    detail: &Value,
) {
    EVENTS.with(|e| {
        e.borrow_mut().push(PendingEvent {
            id: 0,
            execution_id: execution_id.to_string(),
            task_id: scope.0.to_string(),
            namespace: scope.1.to_string(),
            ts: ts.to_string(),
            kind,
            from: from.map(str::to_string),
            to: to.map(str::to_string),
            detail: detail.to_string(),
        })
    });
}

fn discard_pending() {
    EVENTS.with(|e| e.borrow_mut().clear());
    LOGS.with(|l| l.borrow_mut().clear());
}

/// Writes the batch's events, in the order they happened, and notes their
/// ids for publication.
fn flush_events(c: &Connection) -> StoreResult<()> {
    EVENTS.with(|e| insert_events(c, &mut e.borrow_mut()))
}

fn insert_events(c: &Connection, events: &mut [PendingEvent]) -> StoreResult<()> {
    let insert = |n: usize| {
        let rows = vec!["(?, ?, ?, ?, ?, ?)"; n].join(", ");
        format!(
            "INSERT INTO events (execution_id, ts, kind, from_state, to_state, detail) VALUES {rows}"
        )
    };
    for chunk in events.chunks_mut(EVENT_CHUNK) {
        let mut st = c.prepare_cached(&insert(chunk.len()))?;
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 6);
        for e in chunk.iter() {
            values.extend_from_slice(&[&e.execution_id, &e.ts, &e.kind, &e.from, &e.to, &e.detail]);
        }
        st.execute(values.as_slice())?;
        drop(values);
        // One statement on the only writer: the rows took consecutive ids
        // (AUTOINCREMENT), the last one's is SQLite's last insert rowid.
        let last = c.last_insert_rowid();
        let first = last - chunk.len() as i64 + 1;
        for (i, e) in chunk.iter_mut().enumerate() {
            e.id = first + i as i64;
        }
    }
    Ok(())
}

/// Stores a plugin; with `false`, the registration of these bytes under this
/// name and version made before. The same bytes may have other names too. A name and
/// version (or a name without one) once taken always mean the same bytes:
/// other bytes under them are a conflict, never a silent replacement.
pub(super) fn put_plugin(c: &Connection, p: &Plugin) -> StoreResult<(Plugin, bool)> {
    let digest = p.id.trim_start_matches("sha256:");
    let taken: Option<String> = c
        .prepare_cached(
            "SELECT digest FROM plugins WHERE namespace = ? AND name = ? AND version IS ? AND digest != ? LIMIT 1",
        )?
        .query_row(params![p.namespace, p.name, p.version, digest], |r| r.get(0))
        .optional()?;
    if let Some(other) = taken {
        let version = p
            .version
            .as_deref()
            .map_or("without a version".to_string(), |v| {
                format!("version {v:?}")
            });
        return Err(StoreError::Conflict(format!(
            "plugin {:?} {version} is already sha256:{other}; upload other bytes under a new version",
            p.name
        )));
    }
    let n = c
        .prepare_cached("INSERT INTO plugins (digest, namespace, name, version, size, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")?
        .execute(params![digest, p.namespace, p.name, p.version, p.size as i64, p.created_at])?;
    if n == 1 {
        return Ok((p.clone(), true));
    }
    let created_at: String = c
        .prepare_cached(
            "SELECT created_at FROM plugins WHERE namespace = ? AND name = ? AND version IS ? AND digest = ?",
        )?
        .query_row(params![p.namespace, p.name, p.version, digest], |r| r.get(0))?;
    Ok((
        Plugin {
            created_at,
            ..p.clone()
        },
        false,
    ))
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
        schedule_state: None,
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

pub(super) fn create_execution(
    c: &Connection,
    clock: &dyn Clock,
    new: NewExecution,
) -> StoreResult<Created> {
    if let Some(key) = &new.idempotency_key {
        let existing: Option<String> = c
            .prepare_cached("SELECT id FROM executions WHERE task_id = ? AND idempotency_key = ?")?
            .query_row([&new.task.id, key], |r| r.get(0))
            .optional()?;
        if let Some(id) = existing {
            return Ok(Created::Existing(id));
        }
    }
    let created_at = clock.now_rfc3339();
    let spec = &new.task.spec;
    let (state, run_state, mut created) = plan::trigger(new.trigger.as_str());
    if let Some(token) = &new.token_id {
        created.detail["token_id"] = token.as_str().into();
    }
    c.prepare_cached(
        "INSERT INTO executions (id, task_id, task_version, namespace, parent_id, trigger, input, state, created_at, labels, idempotency_key, variables, scheduled_at, initial_variables, replay_of) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        new.id,
        new.task.id,
        new.task.version,
        spec.namespace,
        new.parent_id,
        new.trigger.as_str(),
        new.input.to_string(),
        state.as_str(),
        created_at,
        serde_json::to_string(&new.labels)?,
        new.idempotency_key,
        serde_json::to_string(&new.variables)?,
        new.scheduled_at,
        serde_json::to_string(&new.variables)?,
        new.replay.as_ref().map(|r| r.of.clone()),
    ])?;
    // A replay's copied task runs come first: they are the earlier steps.
    for run in new.replay.iter().flat_map(|r| &r.copied) {
        c.prepare_cached(
            "INSERT INTO task_runs (id, execution_id, task_id, step, state, max_attempts, queue, priority, input, output, item_index, item) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![
            run.id,
            new.id,
            new.task.id,
            run.step,
            run.state.as_str(),
            spec.retry_of(&run.step).max_attempts as i64,
            spec.queue,
            spec.priority as i64,
            run.input.as_ref().map(|v| v.to_string()),
            run.output.as_ref().map(|v| v.to_string()),
            run.item.as_ref().map(|(i, _)| *i),
            run.item.as_ref().map(|(_, v)| v.to_string()),
        ])?;
    }
    let step = new
        .replay
        .as_ref()
        .and_then(|r| r.from_step.as_deref())
        .unwrap_or(spec.first_step());
    // A parallel or for_each step is started by the planner (below).
    let container = spec
        .step(step)
        .is_some_and(|s| s.for_each.is_some() || s.parallel.is_some());
    if !container {
        c.prepare_cached(
            "INSERT INTO task_runs (id, execution_id, task_id, step, state, max_attempts, queue, priority) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![new.task_run_id, new.id, new.task.id, step, run_state.as_str(), spec.retry_of(step).max_attempts as i64, spec.queue, spec.priority as i64])?;
    }
    push_event(
        &new.id,
        (&new.task.id, &new.task.spec.namespace),
        &created_at,
        created.kind.as_str(),
        created.from,
        created.to,
        &created.detail,
    );
    let (state, started_at) = if container {
        let state = begin_flow(c, clock, &new.id)?;
        (state, Some(created_at.clone()))
    } else {
        (state, None)
    };
    Ok(Created::New(Box::new(Execution {
        id: new.id,
        task_id: new.task.id,
        task_version: new.task.version,
        namespace: new.task.spec.namespace,
        parent_id: new.parent_id,
        trigger: new.trigger,
        input: new.input,
        state,
        created_at,
        started_at,
        ended_at: None,
        duration_ms: None,
        outputs: Default::default(),
        result: None,
        error: None,
        labels: new.labels,
        idempotency_key: new.idempotency_key,
        variables: new.variables,
        scheduled_at: new.scheduled_at,
        current_step: None,
        replay_of: new.replay.map(|r| r.of),
        initial_variables: None,
        fuel_used: 0,
        task_runs: None,
    })))
}

/// Starts a new flow whose first step (or a replay's `from_step`) is a
/// `parallel` or `for_each` step: the planner's `Begin`, applied like any
/// other plan to the execution as just written. Returns its state after.
fn begin_flow(
    c: &Connection,
    clock: &dyn Clock,
    execution_id: &str,
) -> StoreResult<crate::model::state::ExecutionState> {
    use super::apply::{Extra, Key, Read, load, plan_and_apply};
    let loaded = load(c, Key::Execution(execution_id), Read::Whole)?
        .ok_or_else(|| StoreError::Corrupt(format!("execution {execution_id} was just written")))?;
    let applied = plan_and_apply(c, clock, &loaded, &plan::Event::Begin, Extra::default())?;
    Ok(applied.plan.state)
}

/// Records a webhook signature unless it is there already; forgets the
/// expired ones first.
pub(super) fn claim_signature(
    c: &Connection,
    task_id: &str,
    signature: &str,
    now_ms: i64,
    until_ms: i64,
) -> StoreResult<bool> {
    c.prepare_cached("DELETE FROM webhook_signatures WHERE until_ms < ?")?
        .execute([now_ms])?;
    let added = c
        .prepare_cached(
            "INSERT OR IGNORE INTO webhook_signatures (task_id, signature, until_ms) VALUES (?, ?, ?)",
        )?
        .execute(params![task_id, signature, until_ms])?;
    Ok(added == 1)
}

thread_local! {
    /// Task versions never change: their parsed specs, on the writer thread.
    static SPECS: std::cell::RefCell<std::collections::HashMap<(String, i64), Arc<TaskSpec>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

pub(super) fn task_version_spec(
    c: &Connection,
    task_id: &str,
    version: i64,
) -> StoreResult<Arc<TaskSpec>> {
    let key = (task_id.to_string(), version);
    if let Some(spec) = SPECS.with(|m| m.borrow().get(&key).cloned()) {
        return Ok(spec);
    }
    let text: String = c
        .prepare_cached("SELECT spec FROM task_versions WHERE task_id = ? AND version = ?")?
        .query_row(params![task_id, version], |r| r.get(0))?;
    let spec: Arc<TaskSpec> = Arc::new(serde_json::from_str(&text)?);
    SPECS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= 4096 {
            m.clear();
        }
        m.insert(key, spec.clone());
    });
    Ok(spec)
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

/// Writes log lines; kept with their ids until the commit publishes them.
pub(super) fn append_logs(c: &Connection, lines: Vec<NewLog>) -> StoreResult<()> {
    let mut st = c.prepare_cached("INSERT INTO logs (execution_id, attempt, ts, level, source, message) VALUES (?, ?, ?, ?, ?, ?)")?;
    let mut written = Vec::with_capacity(lines.len());
    for l in lines {
        st.execute(params![
            l.execution_id,
            l.attempt as i64,
            l.ts,
            l.level,
            l.source,
            l.message
        ])?;
        written.push((c.last_insert_rowid(), l));
    }
    LOGS.with(|pending| pending.borrow_mut().extend(written));
    Ok(())
}

pub(super) fn renew_leases(c: &Connection, worker: &str, lease_until: i64) -> StoreResult<()> {
    c.prepare_cached("UPDATE task_runs SET lease_until = ? WHERE owner = ? AND state = 'RUNNING'")?
        .execute(params![lease_until, worker])?;
    Ok(())
}
