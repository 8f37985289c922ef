//! The embedded SQLite store: WAL, `synchronous=FULL`, migrations embedded.
//!
//! All writes go through one writer task that owns one connection and
//! commits in groups: it takes every write queued while the previous commit
//! ran and applies them in one transaction (each in its own savepoint, so
//! one refused write does not undo the others), then acknowledges each only
//! after the commit. That keeps per-execution fsyncs off the hot path. Reads
//! use a small pool of other connections (WAL lets them run beside writes).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::model::execution::{Attempt, AttemptPhase, TaskRun};
use crate::model::{now, state};
use crate::sandbox::report::{AttemptError, ErrorKind, Usage};

type Ack = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, (bool, Ack)> + Send>;

/// Writes taken into one transaction at most.
const MAX_BATCH: usize = 512;

pub struct SqliteStore {
    read: SqlitePool,
    writer: mpsc::UnboundedSender<Job>,
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Durable at commit: an acknowledged change survives power loss.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .pragma("cache_size", "-65536")
        .pragma("temp_store", "memory")
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let mut conn = SqliteConnection::connect_with(&options(path)).await?;
        sqlx::migrate!("./migrations")
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Internal(format!("migrating {}: {e}", path.display())))?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options(path).read_only(true))
            .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(conn, rx));
        Ok(SqliteStore { read, writer: tx })
    }

    /// Runs `f` in the writer's next transaction; returns after the commit.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>>
            + Send
            + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                let ok = result.is_ok();
                let ack: Ack = Box::new(move |commit| {
                    let _ = tx.send(match commit {
                        Ok(()) => result,
                        Err(e) => Err(StoreError::Internal(format!("commit failed: {e}"))),
                    });
                });
                (ok, ack)
            })
        });
        self.writer
            .send(job)
            .map_err(|_| StoreError::Internal("the store's writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Internal("the store's writer dropped a write".into()))?
    }

    async fn reader(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        Ok(self.read.acquire().await?)
    }
}

async fn writer(mut conn: SqliteConnection, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut acks = Vec::with_capacity(jobs.len());
        let begun = sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await;
        if let Err(e) = begun {
            tracing::error!(error = %e, "store: cannot begin a transaction");
            for job in jobs {
                let (_, ack) = job(&mut conn).await;
                ack(Err(e.to_string()));
            }
            continue;
        }
        for job in jobs {
            let _ = sqlx::query("SAVEPOINT op").execute(&mut conn).await;
            let (ok, ack) = job(&mut conn).await;
            if !ok {
                let _ = sqlx::query("ROLLBACK TO op").execute(&mut conn).await;
            }
            let _ = sqlx::query("RELEASE op").execute(&mut conn).await;
            acks.push(ack);
        }
        let commit = sqlx::query("COMMIT").execute(&mut conn).await.map(|_| ());
        let commit = match commit {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "store: commit failed");
                let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
                Err(e.to_string())
            }
        };
        for ack in acks {
            ack(commit.clone());
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms_to_rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn parse_rfc3339_ms(s: &str) -> Option<f64> {
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64() * 1000.0)
}

async fn event(
    c: &mut SqliteConnection,
    execution_id: &str,
    kind: &str,
    from: Option<&str>,
    to: Option<&str>,
    detail: Value,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO events (execution_id, ts, kind, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(execution_id)
        .bind(now())
        .bind(kind)
        .bind(from)
        .bind(to)
        .bind(detail.to_string())
        .execute(&mut *c)
        .await?;
    Ok(())
}

fn exec_state(s: &str) -> StoreResult<ExecutionState> {
    ExecutionState::from_str(s).map_err(StoreError::Internal)
}

fn run_state(s: &str) -> StoreResult<TaskRunState> {
    TaskRunState::from_str(s).map_err(StoreError::Internal)
}

fn json_col(row: &sqlx::sqlite::SqliteRow, col: &str) -> StoreResult<Option<Value>> {
    let text: Option<String> = row.try_get(col)?;
    Ok(match text {
        Some(t) => Some(serde_json::from_str(&t)?),
        None => None,
    })
}

const EXECUTION_COLUMNS: &str = "id, task_id, task_version, namespace, parent_id, trigger, input, state, created_at, \
     started_at, ended_at, duration_ms, outputs, result, error, labels, idempotency_key";

fn execution_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Execution> {
    let trigger: String = row.try_get("trigger")?;
    Ok(Execution {
        id: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        task_version: row.try_get("task_version")?,
        namespace: row.try_get("namespace")?,
        parent_id: row.try_get("parent_id")?,
        trigger: Trigger::parse(&trigger)
            .ok_or_else(|| StoreError::Internal(format!("bad trigger {trigger}")))?,
        input: json_col(row, "input")?.unwrap_or(Value::Null),
        state: exec_state(row.try_get("state")?)?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        duration_ms: row.try_get("duration_ms")?,
        outputs: match json_col(row, "outputs")? {
            Some(v) => serde_json::from_value(v)?,
            None => Default::default(),
        },
        result: json_col(row, "result")?,
        error: match json_col(row, "error")? {
            Some(v) => Some(serde_json::from_value(v)?),
            None => None,
        },
        labels: match json_col(row, "labels")? {
            Some(v) => serde_json::from_value(v)?,
            None => Default::default(),
        },
        idempotency_key: row.try_get("idempotency_key")?,
        task_runs: None,
    })
}

async fn load_execution(
    c: &mut SqliteConnection,
    id: &str,
    with_runs: bool,
) -> StoreResult<Option<Execution>> {
    let row = sqlx::query(&format!(
        "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut *c)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut exec = execution_from_row(&row)?;
    if with_runs {
        let runs = sqlx::query("SELECT id, step, state, not_before, checkpoint FROM task_runs WHERE execution_id = ? ORDER BY id")
            .bind(id)
            .fetch_all(&mut *c)
            .await?;
        let attempts = sqlx::query(
            "SELECT id, task_run_id, number, status, error, usage, worker_id, started_at, ended_at \
             FROM attempts WHERE execution_id = ? ORDER BY number",
        )
        .bind(id)
        .fetch_all(&mut *c)
        .await?;
        let mut task_runs = Vec::new();
        for r in runs {
            let run_id: String = r.try_get("id")?;
            let mut list = Vec::new();
            for a in attempts
                .iter()
                .filter(|a| a.get::<String, _>("task_run_id") == run_id)
            {
                let status: String = a.try_get("status")?;
                list.push(Attempt {
                    id: a.try_get("id")?,
                    number: a.try_get::<i64, _>("number")? as u32,
                    status: AttemptPhase::parse(&status)
                        .ok_or_else(|| StoreError::Internal(format!("bad status {status}")))?,
                    error: match json_col(a, "error")? {
                        Some(v) => Some(serde_json::from_value(v)?),
                        None => None,
                    },
                    usage: match json_col(a, "usage")? {
                        Some(v) => Some(serde_json::from_value(v)?),
                        None => None,
                    },
                    worker_id: a.try_get("worker_id")?,
                    started_at: a.try_get("started_at")?,
                    ended_at: a.try_get("ended_at")?,
                });
            }
            let not_before: Option<i64> = r.try_get("not_before")?;
            task_runs.push(TaskRun {
                id: run_id,
                step: r.try_get("step")?,
                state: run_state(r.try_get("state")?)?,
                attempts: list,
                not_before: not_before.map(ms_to_rfc3339),
                checkpoint: json_col(&r, "checkpoint")?,
            });
        }
        exec.task_runs = Some(task_runs);
    }
    Ok(Some(exec))
}

fn task_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Task> {
    let spec: String = row.try_get("spec")?;
    Ok(Task {
        id: row.try_get("id")?,
        version: row.try_get("version")?,
        spec: serde_json::from_str(&spec)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn plugin_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Plugin> {
    let digest: String = row.try_get("digest")?;
    Ok(Plugin {
        id: format!("sha256:{digest}"),
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        size: row.try_get::<i64, _>("size")? as u64,
        created_at: row.try_get("created_at")?,
    })
}

/// Moves an execution to `to` if it is not there already, checking the
/// machine, stamping times and recording the event.
async fn set_execution_state(
    c: &mut SqliteConnection,
    id: &str,
    from: ExecutionState,
    to: ExecutionState,
    detail: Value,
) -> StoreResult<()> {
    if from == to {
        return Ok(());
    }
    state::execution(from, to)?;
    let ts = now();
    if to.is_terminal() {
        let started: Option<String> =
            sqlx::query_scalar("SELECT started_at FROM executions WHERE id = ?")
                .bind(id)
                .fetch_one(&mut *c)
                .await?;
        let duration = started
            .as_deref()
            .and_then(parse_rfc3339_ms)
            .zip(parse_rfc3339_ms(&ts))
            .map(|(a, b)| b - a);
        sqlx::query("UPDATE executions SET state = ?, ended_at = ?, duration_ms = ? WHERE id = ?")
            .bind(to.as_str())
            .bind(&ts)
            .bind(duration)
            .bind(id)
            .execute(&mut *c)
            .await?;
    } else if to == ExecutionState::Running {
        sqlx::query(
            "UPDATE executions SET state = ?, started_at = COALESCE(started_at, ?) WHERE id = ?",
        )
        .bind(to.as_str())
        .bind(&ts)
        .bind(id)
        .execute(&mut *c)
        .await?;
    } else if to == ExecutionState::Restarted {
        sqlx::query("UPDATE executions SET state = ?, ended_at = NULL, duration_ms = NULL, error = NULL WHERE id = ?")
            .bind(to.as_str())
            .bind(id)
            .execute(&mut *c)
            .await?;
    } else {
        sqlx::query("UPDATE executions SET state = ? WHERE id = ?")
            .bind(to.as_str())
            .bind(id)
            .execute(&mut *c)
            .await?;
    }
    event(
        c,
        id,
        "execution.state",
        Some(from.as_str()),
        Some(to.as_str()),
        detail,
    )
    .await
}

async fn set_run_state(
    c: &mut SqliteConnection,
    execution_id: &str,
    run_id: &str,
    from: TaskRunState,
    to: TaskRunState,
) -> StoreResult<()> {
    if from == to {
        return Ok(());
    }
    state::task_run(from, to)?;
    sqlx::query("UPDATE task_runs SET state = ? WHERE id = ?")
        .bind(to.as_str())
        .bind(run_id)
        .execute(&mut *c)
        .await?;
    event(
        c,
        execution_id,
        "task_run.state",
        Some(from.as_str()),
        Some(to.as_str()),
        json!({ "task_run_id": run_id }),
    )
    .await
}

fn final_execution_state(run: TaskRunState) -> ExecutionState {
    match run {
        TaskRunState::Success => ExecutionState::Success,
        TaskRunState::Warning => ExecutionState::Warning,
        TaskRunState::Killed => ExecutionState::Killed,
        _ => ExecutionState::Failed,
    }
}

async fn runnable_of(c: &mut SqliteConnection, execution_id: &str) -> StoreResult<Vec<Runnable>> {
    let rows = sqlx::query(
        "SELECT id, execution_id, task_id, priority, queue, not_before FROM task_runs \
         WHERE execution_id = ? AND state IN ('CREATED', 'RETRYING')",
    )
    .bind(execution_id)
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(runnable_from_row).collect()
}

fn runnable_from_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<Runnable> {
    Ok(Runnable {
        task_run_id: r.try_get("id")?,
        execution_id: r.try_get("execution_id")?,
        task_id: r.try_get("task_id")?,
        priority: r.try_get::<i64, _>("priority")? as i32,
        queue: r.try_get("queue")?,
        not_before: r.try_get("not_before")?,
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn put_plugin(&self, plugin: &Plugin) -> StoreResult<bool> {
        let p = plugin.clone();
        self.write(move |c| {
            Box::pin(async move {
                let digest = p.id.trim_start_matches("sha256:").to_string();
                let r = sqlx::query("INSERT INTO plugins (digest, name, version, size, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
                    .bind(digest)
                    .bind(&p.name)
                    .bind(&p.version)
                    .bind(p.size as i64)
                    .bind(&p.created_at)
                    .execute(&mut *c)
                    .await?;
                Ok(r.rows_affected() == 1)
            })
        })
        .await
    }

    async fn plugin(&self, id_or_name: &str) -> StoreResult<Option<Plugin>> {
        let mut c = self.reader().await?;
        let digest = id_or_name.trim_start_matches("sha256:");
        let row = sqlx::query(
            "SELECT * FROM plugins WHERE digest = ? UNION ALL \
             SELECT * FROM (SELECT * FROM plugins WHERE name = ? ORDER BY created_at DESC LIMIT 1) LIMIT 1",
        )
        .bind(digest)
        .bind(id_or_name)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(plugin_from_row).transpose()
    }

    async fn plugins(&self) -> StoreResult<Vec<Plugin>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query("SELECT * FROM plugins ORDER BY name, created_at")
            .fetch_all(&mut *c)
            .await?;
        rows.iter().map(plugin_from_row).collect()
    }

    async fn create_task(&self, task: &Task) -> StoreResult<()> {
        let t = task.clone();
        self.write(move |c| {
            Box::pin(async move {
                let taken: Option<String> = sqlx::query_scalar("SELECT id FROM tasks WHERE namespace = ? AND name = ? AND deleted = 0")
                    .bind(&t.spec.namespace)
                    .bind(&t.spec.name)
                    .fetch_optional(&mut *c)
                    .await?;
                if let Some(id) = taken {
                    return Err(StoreError::Conflict(format!(
                        "a task named {:?} already exists in namespace {:?} (id {id})",
                        t.spec.name, t.spec.namespace
                    )));
                }
                let spec = serde_json::to_string(&t.spec)?;
                sqlx::query("INSERT INTO tasks (id, namespace, name, version, spec, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
                    .bind(&t.id)
                    .bind(&t.spec.namespace)
                    .bind(&t.spec.name)
                    .bind(t.version)
                    .bind(&spec)
                    .bind(&t.created_at)
                    .bind(&t.updated_at)
                    .execute(&mut *c)
                    .await?;
                sqlx::query("INSERT INTO task_versions (task_id, version, spec, created_at) VALUES (?, ?, ?, ?)")
                    .bind(&t.id)
                    .bind(t.version)
                    .bind(&spec)
                    .bind(&t.created_at)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn update_task(&self, id: &str, spec: &TaskSpec) -> StoreResult<Task> {
        let (id, spec) = (id.to_string(), spec.clone());
        self.write(move |c| {
            Box::pin(async move {
                let row = sqlx::query("SELECT * FROM tasks WHERE (id = ? OR name = ?) AND deleted = 0")
                    .bind(&id)
                    .bind(&id)
                    .fetch_optional(&mut *c)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("no task {id}")))?;
                let mut task = task_from_row(&row)?;
                if (spec.namespace.as_str(), spec.name.as_str()) != (task.spec.namespace.as_str(), task.spec.name.as_str()) {
                    let taken: Option<String> = sqlx::query_scalar("SELECT id FROM tasks WHERE namespace = ? AND name = ? AND deleted = 0")
                        .bind(&spec.namespace)
                        .bind(&spec.name)
                        .fetch_optional(&mut *c)
                        .await?;
                    if taken.is_some() {
                        return Err(StoreError::Conflict(format!("a task named {:?} already exists", spec.name)));
                    }
                }
                task.version += 1;
                task.spec = spec;
                task.updated_at = now();
                let text = serde_json::to_string(&task.spec)?;
                sqlx::query("UPDATE tasks SET namespace = ?, name = ?, version = ?, spec = ?, updated_at = ? WHERE id = ?")
                    .bind(&task.spec.namespace)
                    .bind(&task.spec.name)
                    .bind(task.version)
                    .bind(&text)
                    .bind(&task.updated_at)
                    .bind(&task.id)
                    .execute(&mut *c)
                    .await?;
                sqlx::query("INSERT INTO task_versions (task_id, version, spec, created_at) VALUES (?, ?, ?, ?)")
                    .bind(&task.id)
                    .bind(task.version)
                    .bind(&text)
                    .bind(&task.updated_at)
                    .execute(&mut *c)
                    .await?;
                Ok(task)
            })
        })
        .await
    }

    async fn delete_task(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let r = sqlx::query(
                    "UPDATE tasks SET deleted = 1 WHERE (id = ? OR name = ?) AND deleted = 0",
                )
                .bind(&id)
                .bind(&id)
                .execute(&mut *c)
                .await?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("no task {id}")));
                }
                Ok(())
            })
        })
        .await
    }

    async fn task(&self, id_or_name: &str) -> StoreResult<Option<Task>> {
        let mut c = self.reader().await?;
        let row =
            sqlx::query("SELECT * FROM tasks WHERE (id = ? OR name = ?) AND deleted = 0 LIMIT 1")
                .bind(id_or_name)
                .bind(id_or_name)
                .fetch_optional(&mut *c)
                .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn tasks(&self) -> StoreResult<Vec<Task>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query("SELECT * FROM tasks WHERE deleted = 0 ORDER BY namespace, name")
            .fetch_all(&mut *c)
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    async fn create_execution(&self, new: NewExecution) -> StoreResult<(Execution, bool)> {
        self.write(move |c| {
            Box::pin(async move {
                if let Some(key) = &new.idempotency_key {
                    let existing: Option<String> = sqlx::query_scalar("SELECT id FROM executions WHERE task_id = ? AND idempotency_key = ?")
                        .bind(&new.task.id)
                        .bind(key)
                        .fetch_optional(&mut *c)
                        .await?;
                    if let Some(id) = existing {
                        let exec = load_execution(c, &id, false).await?.ok_or_else(|| StoreError::Internal("vanished".into()))?;
                        return Ok((exec, false));
                    }
                }
                let created_at = now();
                let spec = &new.task.spec;
                sqlx::query(
                    "INSERT INTO executions (id, task_id, task_version, namespace, parent_id, trigger, input, state, created_at, labels, idempotency_key) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, 'CREATED', ?, ?, ?)",
                )
                .bind(&new.id)
                .bind(&new.task.id)
                .bind(new.task.version)
                .bind(&spec.namespace)
                .bind(&new.parent_id)
                .bind(new.trigger.as_str())
                .bind(new.input.to_string())
                .bind(&created_at)
                .bind(serde_json::to_string(&new.labels)?)
                .bind(&new.idempotency_key)
                .execute(&mut *c)
                .await?;
                sqlx::query(
                    "INSERT INTO task_runs (id, execution_id, task_id, step, state, max_attempts, queue, priority) \
                     VALUES (?, ?, ?, 'main', 'CREATED', ?, ?, ?)",
                )
                .bind(&new.task_run_id)
                .bind(&new.id)
                .bind(&new.task.id)
                .bind(spec.retry.max_attempts as i64)
                .bind(&spec.queue)
                .bind(spec.priority as i64)
                .execute(&mut *c)
                .await?;
                event(c, &new.id, "execution.state", None, Some("CREATED"), json!({ "trigger": new.trigger.as_str() })).await?;
                let exec = Execution {
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
                };
                Ok((exec, true))
            })
        })
        .await
    }

    async fn execution(&self, id: &str, with_runs: bool) -> StoreResult<Option<Execution>> {
        let mut c = self.reader().await?;
        load_execution(&mut c, id, with_runs).await
    }

    async fn executions(&self, f: &ExecutionFilter) -> StoreResult<Vec<Execution>> {
        let mut c = self.reader().await?;
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE 1 = 1"
        ));
        if !f.states.is_empty() {
            q.push(" AND state IN (");
            let mut sep = q.separated(", ");
            for s in &f.states {
                sep.push_bind(s.as_str());
            }
            q.push(")");
        }
        if let Some(t) = &f.task_id {
            q.push(" AND task_id = ").push_bind(t.clone());
        }
        if let Some(s) = &f.since {
            q.push(" AND created_at >= ").push_bind(s.clone());
        }
        if let Some(u) = &f.until {
            q.push(" AND created_at < ").push_bind(u.clone());
        }
        if let Some(cur) = &f.cursor {
            q.push(" AND id < ").push_bind(cur.clone());
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(f.limit.clamp(1, 1000) as i64);
        let rows = q.build().fetch_all(&mut *c).await?;
        rows.iter().map(execution_from_row).collect()
    }

    async fn control(&self, id: &str, control: Control) -> StoreResult<ControlOutcome> {
        let id = id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let from: String = sqlx::query_scalar("SELECT state FROM executions WHERE id = ?")
                    .bind(&id)
                    .fetch_optional(&mut *c)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("no execution {id}")))?;
                let from = exec_state(&from)?;
                let runs = sqlx::query("SELECT id, state FROM task_runs WHERE execution_id = ?")
                    .bind(&id)
                    .fetch_all(&mut *c)
                    .await?;
                let runs: Vec<(String, TaskRunState)> = runs
                    .iter()
                    .map(|r| Ok((r.try_get("id")?, run_state(r.try_get("state")?)?)))
                    .collect::<StoreResult<_>>()?;
                // Asking for the state it is already in is refused too (409),
                // not silently accepted.
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
                let mut outcome = ControlOutcome {
                    state: from,
                    runnable: Vec::new(),
                    interrupt: Vec::new(),
                };
                let detail = json!({ "by": "user" });
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
                        if from == ExecutionState::Running
                            || from == ExecutionState::Paused
                            || !running.is_empty()
                        {
                            set_execution_state(c, &id, from, to, detail).await?;
                        } else {
                            set_execution_state(c, &id, from, ExecutionState::Killed, detail)
                                .await?;
                        }
                        for (run, s) in &runs {
                            if !s.is_terminal() && *s != TaskRunState::Running {
                                set_run_state(c, &id, run, *s, TaskRunState::Killed).await?;
                            }
                        }
                        outcome.state = if running.is_empty() {
                            ExecutionState::Killed
                        } else {
                            ExecutionState::Killing
                        };
                        outcome.interrupt = running;
                    }
                    Control::Pause => {
                        set_execution_state(c, &id, from, ExecutionState::Paused, detail).await?;
                        outcome.state = ExecutionState::Paused;
                    }
                    Control::Resume => {
                        if from != ExecutionState::Paused {
                            return Err(state::Forbidden {
                                from: from.to_string(),
                                to: "RUNNING (resume)".into(),
                            }
                            .into());
                        }
                        set_execution_state(c, &id, from, ExecutionState::Running, detail).await?;
                        outcome.state = ExecutionState::Running;
                        outcome.runnable = runnable_of(c, &id).await?;
                    }
                    Control::Restart => {
                        set_execution_state(c, &id, from, ExecutionState::Restarted, detail)
                            .await?;
                        for (run, s) in &runs {
                            if matches!(s, TaskRunState::Failed | TaskRunState::Killed) {
                                set_run_state(c, &id, run, *s, TaskRunState::Created).await?;
                                sqlx::query("UPDATE task_runs SET not_before = NULL WHERE id = ?")
                                    .bind(run)
                                    .execute(&mut *c)
                                    .await?;
                            }
                        }
                        outcome.state = ExecutionState::Restarted;
                        outcome.runnable = runnable_of(c, &id).await?;
                    }
                }
                Ok(outcome)
            })
        })
        .await
    }

    async fn start_attempt(
        &self,
        task_run_id: &str,
        worker: &str,
        lease_until: i64,
    ) -> StoreResult<StartedAttempt> {
        let (run_id, worker) = (task_run_id.to_string(), worker.to_string());
        self.write(move |c| {
            Box::pin(async move {
                let row = sqlx::query(
                    "SELECT tr.state AS run_state, tr.attempts, tr.max_attempts, tr.fence, tr.checkpoint, tr.execution_id, tr.step, \
                     e.state AS exec_state, e.input, e.task_id, e.task_version \
                     FROM task_runs tr JOIN executions e ON e.id = tr.execution_id WHERE tr.id = ?",
                )
                .bind(&run_id)
                .fetch_optional(&mut *c)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no task run {run_id}")))?;
                let run_from = run_state(row.try_get("run_state")?)?;
                let exec_from = exec_state(row.try_get("exec_state")?)?;
                let execution_id: String = row.try_get("execution_id")?;
                // Only a queued, restarted or running execution gets a new
                // attempt: a paused one waits for resume (PAUSED → RUNNING is
                // resume's transition, not the dispatcher's).
                if !matches!(exec_from, ExecutionState::Created | ExecutionState::Restarted | ExecutionState::Running) {
                    return Err(state::Forbidden {
                        from: exec_from.to_string(),
                        to: "RUNNING (a new attempt)".into(),
                    }
                    .into());
                }
                state::task_run(run_from, TaskRunState::Running)?;
                let task_id: String = row.try_get("task_id")?;
                let task_version: i64 = row.try_get("task_version")?;
                let spec: String = sqlx::query_scalar("SELECT spec FROM task_versions WHERE task_id = ? AND version = ?")
                    .bind(&task_id)
                    .bind(task_version)
                    .fetch_one(&mut *c)
                    .await?;
                let number = row.try_get::<i64, _>("attempts")? + 1;
                let fence = row.try_get::<i64, _>("fence")? + 1;
                let attempt_id = uuid::Uuid::now_v7().to_string();
                sqlx::query("UPDATE task_runs SET attempts = ?, fence = ?, owner = ?, lease_until = ?, not_before = NULL WHERE id = ?")
                    .bind(number)
                    .bind(fence)
                    .bind(&worker)
                    .bind(lease_until)
                    .bind(&run_id)
                    .execute(&mut *c)
                    .await?;
                set_run_state(c, &execution_id, &run_id, run_from, TaskRunState::Running).await?;
                set_execution_state(c, &execution_id, exec_from, ExecutionState::Running, json!({})).await?;
                sqlx::query(
                    "INSERT INTO attempts (id, task_run_id, execution_id, number, status, worker_id, fence, started_at) \
                     VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                )
                .bind(&attempt_id)
                .bind(&run_id)
                .bind(&execution_id)
                .bind(number)
                .bind(&worker)
                .bind(fence)
                .bind(now())
                .execute(&mut *c)
                .await?;
                event(c, &execution_id, "attempt.started", None, None, json!({ "attempt": number, "worker": worker })).await?;
                Ok(StartedAttempt {
                    attempt_id,
                    number: number as u32,
                    fence,
                    max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
                    checkpoint: row.try_get("checkpoint")?,
                    input: json_col(&row, "input")?.unwrap_or(Value::Null),
                    task_version,
                    spec: serde_json::from_str(&spec)?,
                    step: row.try_get("step")?,
                })
            })
        })
        .await
    }

    async fn finish_attempt(&self, f: FinishAttempt) -> StoreResult<ExecutionState> {
        self.write(move |c| {
            Box::pin(async move {
                let row = sqlx::query(
                    "SELECT tr.state AS run_state, tr.fence, tr.owner, e.state AS exec_state \
                     FROM task_runs tr JOIN executions e ON e.id = tr.execution_id WHERE tr.id = ?",
                )
                .bind(&f.task_run_id)
                .fetch_optional(&mut *c)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no task run {}", f.task_run_id)))?;
                let fence: i64 = row.try_get("fence")?;
                let owner: Option<String> = row.try_get("owner")?;
                let run_from = run_state(row.try_get("run_state")?)?;
                if fence != f.fence || owner.as_deref() != Some(f.worker.as_str()) || run_from != TaskRunState::Running {
                    return Err(StoreError::Fenced(format!(
                        "task run {} is no longer owned by {} with token {}",
                        f.task_run_id, f.worker, f.fence
                    )));
                }
                let exec_from = exec_state(row.try_get("exec_state")?)?;
                let r = &f.report;
                // A kill request wins over whatever the attempt did.
                let outcome = if exec_from == ExecutionState::Killing {
                    RunOutcome::Final(TaskRunState::Killed)
                } else {
                    f.outcome
                };
                let report_json = json!({
                    "result": r.result, "outputs": r.outputs, "metrics": r.metrics, "media": r.media,
                    "warnings": r.warnings, "checkpoint": r.checkpoint,
                });
                sqlx::query("UPDATE attempts SET status = ?, error = ?, usage = ?, report = ?, ended_at = ? WHERE id = ?")
                    .bind(r.status.as_str())
                    .bind(r.error.as_ref().map(serde_json::to_string).transpose()?)
                    .bind(serde_json::to_string(&r.usage)?)
                    .bind(report_json.to_string())
                    .bind(now())
                    .bind(&f.attempt_id)
                    .execute(&mut *c)
                    .await?;
                event(
                    c,
                    &f.execution_id,
                    "attempt.finished",
                    None,
                    None,
                    json!({ "attempt": r.attempt, "status": r.status.as_str(), "error": r.error }),
                )
                .await?;
                for m in &r.media {
                    sqlx::query(
                        "INSERT INTO media (id, execution_id, attempt_id, name, content_type, size, sha256, url, created_at) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&m.id)
                    .bind(&f.execution_id)
                    .bind(&f.attempt_id)
                    .bind(&m.name)
                    .bind(&m.content_type)
                    .bind(m.size as i64)
                    .bind(&m.sha256)
                    .bind(&m.url)
                    .bind(now())
                    .execute(&mut *c)
                    .await?;
                }
                let (run_to, not_before) = match outcome {
                    RunOutcome::Retry { not_before } => (TaskRunState::Retrying, Some(not_before)),
                    RunOutcome::Final(s) => (s, None),
                };
                set_run_state(c, &f.execution_id, &f.task_run_id, run_from, run_to).await?;
                sqlx::query("UPDATE task_runs SET owner = NULL, lease_until = NULL, not_before = ?, checkpoint = COALESCE(?, checkpoint) WHERE id = ?")
                    .bind(not_before)
                    .bind(r.checkpoint.as_ref().map(|v| v.to_string()))
                    .bind(&f.task_run_id)
                    .execute(&mut *c)
                    .await?;
                sqlx::query("UPDATE executions SET outputs = ?, result = ?, error = ? WHERE id = ?")
                    .bind(serde_json::to_string(&r.outputs)?)
                    .bind(r.result.as_ref().map(|v| v.to_string()))
                    .bind(r.error.as_ref().map(serde_json::to_string).transpose()?)
                    .bind(&f.execution_id)
                    .execute(&mut *c)
                    .await?;
                let exec_to = match outcome {
                    RunOutcome::Retry { .. } => exec_from,
                    RunOutcome::Final(s) => final_execution_state(s),
                };
                set_execution_state(c, &f.execution_id, exec_from, exec_to, json!({ "attempt": r.attempt })).await?;
                Ok(exec_to)
            })
        })
        .await
    }

    async fn save_checkpoint(&self, task_run_id: &str, fence: i64, state: &str) -> StoreResult<()> {
        let (run_id, state) = (task_run_id.to_string(), state.to_string());
        self.write(move |c| {
            Box::pin(async move {
                let r = sqlx::query("UPDATE task_runs SET checkpoint = ? WHERE id = ? AND fence = ? AND state = 'RUNNING'")
                    .bind(&state)
                    .bind(&run_id)
                    .bind(fence)
                    .execute(&mut *c)
                    .await?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::Fenced(format!("task run {run_id} is no longer running with token {fence}")));
                }
                Ok(())
            })
        })
        .await
    }

    fn append_logs(&self, lines: Vec<NewLog>) {
        if lines.is_empty() {
            return;
        }
        let job: Job = Box::new(move |c| {
            Box::pin(async move {
                let mut ok = true;
                for chunk in lines.chunks(100) {
                    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                        "INSERT INTO logs (execution_id, attempt, ts, level, source, message) ",
                    );
                    q.push_values(chunk, |mut b, l| {
                        b.push_bind(&l.execution_id)
                            .push_bind(l.attempt as i64)
                            .push_bind(&l.ts)
                            .push_bind(&l.level)
                            .push_bind(&l.source)
                            .push_bind(&l.message);
                    });
                    if let Err(e) = q.build().execute(&mut *c).await {
                        tracing::error!(error = %e, "store: writing log lines failed");
                        ok = false;
                    }
                }
                let ack: Ack = Box::new(|_| {});
                (ok, ack)
            })
        });
        if self.writer.send(job).is_err() {
            tracing::error!("store: the writer has stopped; log lines lost");
        }
    }

    async fn renew_leases(&self, worker: &str, lease_until: i64) -> StoreResult<()> {
        let worker = worker.to_string();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE task_runs SET lease_until = ? WHERE owner = ? AND state = 'RUNNING'",
                )
                .bind(lease_until)
                .bind(&worker)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn recover(
        &self,
        now_ms: i64,
        backoff_ms: &(dyn for<'s> Fn(&'s TaskSpec, u32) -> i64 + Sync),
    ) -> StoreResult<Recovery> {
        // The backoff function is not 'static: work out the retry times
        // here, before handing the writes to the writer.
        let mut c = self.reader().await?;
        let rows = sqlx::query(
            "SELECT a.id AS attempt_id, a.task_run_id, a.execution_id, a.number, tr.max_attempts, e.task_id, e.task_version \
             FROM attempts a JOIN task_runs tr ON tr.id = a.task_run_id JOIN executions e ON e.id = a.execution_id \
             WHERE a.status = 'running'",
        )
        .fetch_all(&mut *c)
        .await?;
        let mut crashed = Vec::new();
        for r in &rows {
            let task_id: String = r.try_get("task_id")?;
            let version: i64 = r.try_get("task_version")?;
            let spec: String = sqlx::query_scalar(
                "SELECT spec FROM task_versions WHERE task_id = ? AND version = ?",
            )
            .bind(&task_id)
            .bind(version)
            .fetch_one(&mut *c)
            .await?;
            let spec: TaskSpec = serde_json::from_str(&spec)?;
            let number = r.try_get::<i64, _>("number")? as u32;
            let max = r.try_get::<i64, _>("max_attempts")? as u32;
            let retry_at = (number < max).then(|| now_ms + backoff_ms(&spec, number));
            crashed.push((
                r.try_get::<String, _>("attempt_id")?,
                r.try_get::<String, _>("task_run_id")?,
                r.try_get::<String, _>("execution_id")?,
                number,
                retry_at,
            ));
        }
        drop(c);
        self.write(move |c| {
            Box::pin(async move {
                let mut rec = Recovery::default();
                let error = AttemptError {
                    kind: ErrorKind::HostCrash,
                    message: "the host running this attempt stopped before it finished".into(),
                };
                for (attempt_id, run_id, execution_id, number, retry_at) in crashed {
                    rec.crashed_attempts += 1;
                    sqlx::query("UPDATE attempts SET status = 'failed', error = ?, usage = ?, ended_at = ? WHERE id = ?")
                        .bind(serde_json::to_string(&error)?)
                        .bind(serde_json::to_string(&Usage::default())?)
                        .bind(now())
                        .bind(&attempt_id)
                        .execute(&mut *c)
                        .await?;
                    event(c, &execution_id, "attempt.finished", None, None, json!({ "attempt": number, "status": "failed", "error": error })).await?;
                    let exec_from = exec_state(
                        &sqlx::query_scalar::<_, String>("SELECT state FROM executions WHERE id = ?")
                            .bind(&execution_id)
                            .fetch_one(&mut *c)
                            .await?,
                    )?;
                    let run_to = match (exec_from, retry_at) {
                        (ExecutionState::Killing, _) => TaskRunState::Killed,
                        (_, Some(_)) => TaskRunState::Retrying,
                        (_, None) => TaskRunState::Failed,
                    };
                    set_run_state(c, &execution_id, &run_id, TaskRunState::Running, run_to).await?;
                    sqlx::query("UPDATE task_runs SET owner = NULL, lease_until = NULL, not_before = ? WHERE id = ?")
                        .bind(if run_to == TaskRunState::Retrying { retry_at } else { None })
                        .bind(&run_id)
                        .execute(&mut *c)
                        .await?;
                    if run_to != TaskRunState::Retrying {
                        sqlx::query("UPDATE executions SET error = ? WHERE id = ?")
                            .bind(serde_json::to_string(&error)?)
                            .bind(&execution_id)
                            .execute(&mut *c)
                            .await?;
                        set_execution_state(c, &execution_id, exec_from, final_execution_state(run_to), json!({ "recovery": true })).await?;
                    }
                }
                let killing: Vec<String> = sqlx::query_scalar("SELECT id FROM executions WHERE state = 'KILLING'")
                    .fetch_all(&mut *c)
                    .await?;
                for id in killing {
                    rec.killed_executions += 1;
                    let runs = sqlx::query("SELECT id, state FROM task_runs WHERE execution_id = ?").bind(&id).fetch_all(&mut *c).await?;
                    for r in runs {
                        let s = run_state(r.try_get("state")?)?;
                        if !s.is_terminal() {
                            set_run_state(c, &id, r.try_get("id")?, s, TaskRunState::Killed).await?;
                        }
                    }
                    set_execution_state(c, &id, ExecutionState::Killing, ExecutionState::Killed, json!({ "recovery": true })).await?;
                }
                Ok(rec)
            })
        })
        .await
    }

    async fn runnable(&self, limit: u32) -> StoreResult<Vec<Runnable>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query(
            "SELECT id, execution_id, task_id, priority, queue, not_before FROM task_runs \
             WHERE state IN ('CREATED', 'RETRYING') ORDER BY priority DESC, id LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(runnable_from_row).collect()
    }

    async fn logs(
        &self,
        execution_id: &str,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<StoredLog>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query("SELECT id, attempt, ts, level, source, message FROM logs WHERE execution_id = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(execution_id)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&mut *c)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredLog {
                    id: r.try_get("id")?,
                    attempt: r.try_get::<i64, _>("attempt")? as u32,
                    ts: r.try_get("ts")?,
                    level: r.try_get("level")?,
                    source: r.try_get("source")?,
                    message: r.try_get("message")?,
                })
            })
            .collect()
    }

    async fn events(&self, execution_id: &str, after: i64, limit: u32) -> StoreResult<Vec<Event>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query(
            "SELECT * FROM events WHERE execution_id = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(execution_id)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&mut *c)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    id: r.try_get("id")?,
                    execution_id: r.try_get("execution_id")?,
                    ts: r.try_get("ts")?,
                    kind: r.try_get("kind")?,
                    from: r.try_get("from_state")?,
                    to: r.try_get("to_state")?,
                    detail: json_col(r, "detail")?.unwrap_or(Value::Null),
                })
            })
            .collect()
    }

    async fn media_of(&self, execution_id: &str) -> StoreResult<Vec<MediaInfo>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query("SELECT * FROM media WHERE execution_id = ? ORDER BY id")
            .bind(execution_id)
            .fetch_all(&mut *c)
            .await?;
        rows.iter().map(media_from_row).collect()
    }

    async fn media(&self, id: &str) -> StoreResult<Option<MediaInfo>> {
        let mut c = self.reader().await?;
        let row = sqlx::query("SELECT * FROM media WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *c)
            .await?;
        row.as_ref().map(media_from_row).transpose()
    }

    async fn metrics(&self, execution_id: &str) -> StoreResult<Vec<AttemptMetric>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query("SELECT number, report FROM attempts WHERE execution_id = ? AND report IS NOT NULL ORDER BY number")
            .bind(execution_id)
            .fetch_all(&mut *c)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let attempt = r.try_get::<i64, _>("number")? as u32;
            let report = json_col(&r, "report")?.unwrap_or(Value::Null);
            let metrics: Vec<crate::sandbox::report::Metric> =
                serde_json::from_value(report["metrics"].clone()).unwrap_or_default();
            out.extend(
                metrics
                    .into_iter()
                    .map(|metric| AttemptMetric { attempt, metric }),
            );
        }
        Ok(out)
    }
}

fn media_from_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<MediaInfo> {
    Ok(MediaInfo {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        content_type: r.try_get("content_type")?,
        size: r.try_get::<i64, _>("size")? as u64,
        sha256: r.try_get("sha256")?,
        url: r.try_get("url")?,
    })
}

/// For tests and the recovery path: the current time in unix ms.
pub fn unix_ms() -> i64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::state::TaskRunState;
    use crate::sandbox::report::{AttemptReport, AttemptStatus};

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        (dir, s)
    }

    fn task() -> Task {
        Task {
            id: "task-1".into(),
            version: 1,
            spec: serde_json::from_value(
                json!({"name": "t", "action": "noop", "retry": {"max_attempts": 2}}),
            )
            .unwrap(),
            created_at: now(),
            updated_at: now(),
        }
    }

    async fn execution(s: &SqliteStore, key: Option<&str>) -> (Execution, bool) {
        s.create_execution(NewExecution {
            id: uuid::Uuid::now_v7().to_string(),
            task: task(),
            task_run_id: uuid::Uuid::now_v7().to_string(),
            trigger: Trigger::Http,
            input: json!({}),
            labels: Default::default(),
            idempotency_key: key.map(str::to_string),
            parent_id: None,
        })
        .await
        .unwrap()
    }

    fn ok_report(n: u32) -> AttemptReport {
        let mut r = AttemptReport::failed_before_start(n, ErrorKind::Trap, String::new());
        r.status = AttemptStatus::Success;
        r.error = None;
        r
    }

    #[tokio::test]
    async fn a_stale_completion_is_refused_by_its_fencing_token() {
        let (_d, s) = store().await;
        s.create_task(&task()).await.unwrap();
        let (e, _) = execution(&s, None).await;
        let run = s.runnable(10).await.unwrap().remove(0);
        let first = s
            .start_attempt(&run.task_run_id, "host-a", 0)
            .await
            .unwrap();
        assert_eq!(first.fence, 1);
        let finish = |worker: &str, fence: i64| FinishAttempt {
            attempt_id: first.attempt_id.clone(),
            task_run_id: run.task_run_id.clone(),
            execution_id: e.id.clone(),
            worker: worker.into(),
            fence,
            report: ok_report(1),
            outcome: RunOutcome::Final(TaskRunState::Success),
        };
        assert!(matches!(
            s.finish_attempt(finish("host-b", 1)).await,
            Err(StoreError::Fenced(_))
        ));
        assert!(matches!(
            s.finish_attempt(finish("host-a", 0)).await,
            Err(StoreError::Fenced(_))
        ));
        assert!(matches!(
            s.save_checkpoint(&run.task_run_id, 7, "{}").await,
            Err(StoreError::Fenced(_))
        ));
        assert_eq!(
            s.finish_attempt(finish("host-a", 1)).await.unwrap(),
            ExecutionState::Success
        );
        // Finished: a second completion and a new start are both refused.
        assert!(s.finish_attempt(finish("host-a", 1)).await.is_err());
        assert!(matches!(
            s.start_attempt(&run.task_run_id, "host-a", 0).await,
            Err(StoreError::Forbidden(_))
        ));
        let stored = s.execution(&e.id, true).await.unwrap().unwrap();
        assert_eq!(stored.state, ExecutionState::Success);
        assert_eq!(stored.task_runs.unwrap()[0].attempts.len(), 1);
    }

    #[tokio::test]
    async fn forbidden_transitions_change_nothing() {
        let (_d, s) = store().await;
        s.create_task(&task()).await.unwrap();
        let (e, _) = execution(&s, None).await;
        assert!(matches!(
            s.control(&e.id, Control::Pause).await,
            Err(StoreError::Forbidden(_))
        ));
        assert!(matches!(
            s.control(&e.id, Control::Resume).await,
            Err(StoreError::Forbidden(_))
        ));
        assert!(matches!(
            s.control(&e.id, Control::Restart).await,
            Err(StoreError::Forbidden(_))
        ));
        assert_eq!(
            s.execution(&e.id, false).await.unwrap().unwrap().state,
            ExecutionState::Created
        );
        let out = s.control(&e.id, Control::Cancel).await.unwrap();
        assert_eq!(out.state, ExecutionState::Killed);
        assert!(s.control(&e.id, Control::Cancel).await.is_err());
        assert!(
            s.runnable(10).await.unwrap().is_empty(),
            "a killed task run is not runnable"
        );
        let events = s.events(&e.id, 0, 100).await.unwrap();
        let to: Vec<_> = events.iter().filter_map(|e| e.to.clone()).collect();
        assert_eq!(to, vec!["CREATED", "KILLED", "KILLED"]);
    }

    #[tokio::test]
    async fn idempotency_keys_are_per_task() {
        let (_d, s) = store().await;
        s.create_task(&task()).await.unwrap();
        let (a, new_a) = execution(&s, Some("k")).await;
        let (b, new_b) = execution(&s, Some("k")).await;
        assert!(new_a && !new_b);
        assert_eq!(a.id, b.id);
        assert_eq!(s.runnable(10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn recovery_closes_crashed_attempts_and_retries_under_the_policy() {
        let (_d, s) = store().await;
        s.create_task(&task()).await.unwrap();
        let (e, _) = execution(&s, None).await;
        let run = s.runnable(10).await.unwrap().remove(0);
        s.start_attempt(&run.task_run_id, "dead-host", 0)
            .await
            .unwrap();
        s.save_checkpoint(&run.task_run_id, 1, r#"{"done":2}"#)
            .await
            .unwrap();
        let rec = s.recover(1_000, &|_, _| 50).await.unwrap();
        assert_eq!(rec.crashed_attempts, 1);
        let again = s.runnable(10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].not_before, Some(1_050));
        let second = s
            .start_attempt(&run.task_run_id, "new-host", 0)
            .await
            .unwrap();
        assert_eq!(second.number, 2);
        assert_eq!(second.checkpoint.as_deref(), Some(r#"{"done":2}"#));
        let stored = s.execution(&e.id, true).await.unwrap().unwrap();
        let attempts = &stored.task_runs.unwrap()[0].attempts;
        assert_eq!(
            attempts[0].error.as_ref().unwrap().kind,
            ErrorKind::HostCrash
        );
    }

    #[tokio::test]
    async fn hot_queries_use_indexes() {
        let (dir, s) = store().await;
        drop(s);
        let mut c =
            SqliteConnection::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
                .await
                .unwrap();
        for sql in [
            "SELECT id FROM task_runs WHERE state IN ('CREATED', 'RETRYING') ORDER BY priority DESC, id LIMIT 100",
            "SELECT * FROM executions WHERE id = 'x'",
            "SELECT id FROM executions WHERE task_id = 'x' AND idempotency_key = 'k'",
            "SELECT * FROM executions WHERE state IN ('CREATED', 'RUNNING') ORDER BY id DESC LIMIT 1",
            "SELECT * FROM executions WHERE task_id = 'x' AND id < 'z' ORDER BY id DESC LIMIT 50",
            "SELECT * FROM logs WHERE execution_id = 'x' AND id > 0 ORDER BY id LIMIT 100",
            "SELECT * FROM events WHERE execution_id = 'x' AND id > 0 ORDER BY id LIMIT 100",
            "SELECT * FROM attempts WHERE status = 'running'",
            "SELECT id, state FROM task_runs WHERE execution_id = 'x'",
        ] {
            let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&mut c)
                .await
                .unwrap();
            let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
            // A SCAN is fine only through an index (e.g. the partial index
            // holding just the runnable task runs); never of a whole table.
            for step in &plan {
                assert!(
                    !step.starts_with("SCAN") || step.contains("USING"),
                    "{sql}\n  plan: {plan:?}"
                );
            }
            assert!(
                plan.iter().any(|p| p.contains("USING")),
                "{sql}\n  plan: {plan:?}"
            );
        }
    }
}
