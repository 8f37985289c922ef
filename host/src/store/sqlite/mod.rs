//! The embedded SQLite store: WAL, `synchronous=FULL`, migrations embedded.
//!
//! Writes go through one writer thread that commits in groups (`writes`);
//! reads use a small sqlx pool of other connections, which WAL lets run
//! beside the writer.

mod access;
mod analytics;
mod apply;
#[cfg(test)]
mod plan_props;
mod point;
mod writes;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};

use super::changes::Changes;
use super::*;
use crate::model::clock::{self, Clock};
use writes::{Created, Writer};

pub struct SqliteStore {
    read: SqlitePool,
    writer: Writer,
    point: Arc<point::PointReader>,
    clock: Arc<dyn Clock>,
    changes: Arc<Changes>,
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Durable at commit: an acknowledged change survives power loss.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .pragma("temp_store", "memory")
        .pragma("mmap_size", "1073741824")
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with_clock(path, clock::system()).await
    }

    /// Like [`open`](Self::open), with time from `clock`.
    pub async fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        Self::open_with(path, clock, Arc::new(Changes::default())).await
    }

    /// Like [`open`](Self::open), with time from `clock` and commits
    /// published on `changes`.
    pub async fn open_with(
        path: &Path,
        clock: Arc<dyn Clock>,
        changes: Arc<Changes>,
    ) -> StoreResult<Self> {
        let mut conn = SqliteConnection::connect_with(&options(path)).await?;
        sqlx::migrate!("./migrations").run(&mut conn).await?;
        conn.close().await?;
        let writer = Writer::open(path, changes.clone())?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options(path).read_only(true))
            .await?;
        Ok(SqliteStore {
            read,
            writer,
            point: Arc::new(point::PointReader::new(path)),
            clock,
            changes,
        })
    }

    async fn reader(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        Ok(self.read.acquire().await?)
    }
}

fn ms_to_rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn exec_state(s: &str) -> StoreResult<ExecutionState> {
    ExecutionState::from_str(s).map_err(StoreError::Corrupt)
}

fn run_state(s: &str) -> StoreResult<TaskRunState> {
    TaskRunState::from_str(s).map_err(StoreError::Corrupt)
}

/// Column access shared by sqlx rows (listings) and rusqlite rows (point
/// reads, `point.rs`), so that each record is mapped from a row once.
trait Columns {
    fn text(&self, col: &str) -> StoreResult<Option<String>>;
    fn int(&self, col: &str) -> StoreResult<Option<i64>>;
    fn real(&self, col: &str) -> StoreResult<Option<f64>>;

    fn required<T>(&self, col: &str, v: Option<T>) -> StoreResult<T> {
        v.ok_or_else(|| StoreError::Corrupt(format!("{col} is NULL")))
    }
    fn string(&self, col: &str) -> StoreResult<String> {
        let v = self.text(col)?;
        self.required(col, v)
    }
    fn integer(&self, col: &str) -> StoreResult<i64> {
        let v = self.int(col)?;
        self.required(col, v)
    }
    /// A JSON column, parsed; `None` when NULL.
    fn json<T: serde::de::DeserializeOwned>(&self, col: &str) -> StoreResult<Option<T>> {
        Ok(match self.text(col)? {
            Some(t) => Some(serde_json::from_str(&t)?),
            None => None,
        })
    }
}

impl Columns for sqlx::sqlite::SqliteRow {
    fn text(&self, col: &str) -> StoreResult<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> StoreResult<Option<i64>> {
        Ok(self.try_get(col)?)
    }
    fn real(&self, col: &str) -> StoreResult<Option<f64>> {
        Ok(self.try_get(col)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, col: &str) -> StoreResult<Option<String>> {
        Ok(self.get(col)?)
    }
    fn int(&self, col: &str) -> StoreResult<Option<i64>> {
        Ok(self.get(col)?)
    }
    fn real(&self, col: &str) -> StoreResult<Option<f64>> {
        Ok(self.get(col)?)
    }
}

const EXECUTION_COLUMNS: &str = "id, task_id, task_version, namespace, parent_id, trigger, input, state, created_at, \
     started_at, ended_at, duration_ms, outputs, result, error, labels, idempotency_key, variables, scheduled_at, current_step, replay_of, initial_variables, \
     fuel AS fuel_used";

fn execution_from_row(row: &impl Columns) -> StoreResult<Execution> {
    let trigger = row.string("trigger")?;
    Ok(Execution {
        id: row.string("id")?,
        task_id: row.string("task_id")?,
        task_version: row.integer("task_version")?,
        namespace: row.string("namespace")?,
        parent_id: row.text("parent_id")?,
        trigger: Trigger::parse(&trigger)
            .ok_or_else(|| StoreError::Corrupt(format!("bad trigger {trigger}")))?,
        input: row.json("input")?.unwrap_or(Value::Null),
        state: exec_state(&row.string("state")?)?,
        created_at: row.string("created_at")?,
        started_at: row.text("started_at")?,
        ended_at: row.text("ended_at")?,
        duration_ms: row.real("duration_ms")?,
        outputs: row.json("outputs")?.unwrap_or_default(),
        result: row.json("result")?,
        error: row.json("error")?,
        labels: row.json("labels")?.unwrap_or_default(),
        idempotency_key: row.text("idempotency_key")?,
        variables: row.json("variables")?.unwrap_or_default(),
        scheduled_at: row.text("scheduled_at")?,
        current_step: row.json("current_step")?,
        replay_of: row.text("replay_of")?,
        initial_variables: row.json("initial_variables")?,
        fuel_used: row.int("fuel_used")?.unwrap_or(0).max(0) as u64,
        task_runs: None,
    })
}

fn event_from_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<Event> {
    Ok(Event {
        id: r.integer("id")?,
        execution_id: r.string("execution_id")?,
        ts: r.string("ts")?,
        kind: r.string("kind")?,
        from: r.text("from_state")?,
        to: r.text("to_state")?,
        detail: r.json::<Value>("detail")?.unwrap_or(Value::Null),
    })
}

fn task_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Task> {
    let spec: String = row.try_get("spec")?;
    Ok(Task {
        id: row.try_get("id")?,
        version: row.try_get("version")?,
        spec: serde_json::from_str(&spec)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        schedule_state: None,
    })
}

/// The condition selecting the live task `task` points at, and its
/// parameters: an id matches by id only, a name only in its namespace
/// (unique there among live tasks), so at most one row matches.
fn live_task(task: &TaskRef) -> (&'static str, Vec<&str>) {
    match task {
        TaskRef::Id(id) => ("id = ? AND deleted = 0", vec![id]),
        TaskRef::Name { namespace, name } => (
            "namespace = ? AND name = ? AND deleted = 0",
            vec![namespace, name],
        ),
    }
}

fn plugin_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Plugin> {
    let digest: String = row.try_get("digest")?;
    Ok(Plugin {
        id: format!("sha256:{digest}"),
        namespace: row.try_get("namespace")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        size: row.try_get::<i64, _>("size")? as u64,
        created_at: row.try_get("created_at")?,
    })
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
    async fn put_plugin(&self, plugin: &Plugin) -> StoreResult<(Plugin, bool)> {
        let p = plugin.clone();
        self.writer.run(move |c| writes::put_plugin(c, &p)).await
    }

    async fn plugin(
        &self,
        namespace: Option<&str>,
        id_or_name: &str,
    ) -> StoreResult<Option<Plugin>> {
        let mut c = self.reader().await?;
        // A digest (`sha256:<hex>` or the hex alone) finds only the content
        // with that hash; anything else is a name (its newest upload).
        let digest = id_or_name
            .strip_prefix("sha256:")
            .or_else(|| crate::model::limits::looks_like_digest(id_or_name).then_some(id_or_name));
        let (column, value, order) = match digest {
            Some(hex) => ("digest", hex.to_ascii_lowercase(), "created_at, rowid"),
            None => (
                "name",
                id_or_name.to_string(),
                "created_at DESC, rowid DESC",
            ),
        };
        let row = match namespace {
            Some(ns) => {
                let sql = format!(
                    "SELECT * FROM plugins WHERE namespace = ? AND {column} = ? ORDER BY {order} LIMIT 1"
                );
                sqlx::query(&sql)
                    .bind(ns)
                    .bind(value)
                    .fetch_optional(&mut *c)
                    .await?
            }
            None => {
                let sql =
                    format!("SELECT * FROM plugins WHERE {column} = ? ORDER BY {order} LIMIT 1");
                sqlx::query(&sql)
                    .bind(value)
                    .fetch_optional(&mut *c)
                    .await?
            }
        };
        row.as_ref().map(plugin_from_row).transpose()
    }

    async fn plugins(&self, namespace: Option<&str>) -> StoreResult<Vec<Plugin>> {
        let mut c = self.reader().await?;
        let rows =
            match namespace {
                Some(ns) => sqlx::query(
                    "SELECT * FROM plugins WHERE namespace = ? ORDER BY name, created_at, rowid",
                )
                .bind(ns)
                .fetch_all(&mut *c)
                .await?,
                None => {
                    sqlx::query("SELECT * FROM plugins ORDER BY namespace, name, created_at, rowid")
                        .fetch_all(&mut *c)
                        .await?
                }
            };
        rows.iter().map(plugin_from_row).collect()
    }

    async fn create_task(&self, task: &Task) -> StoreResult<()> {
        let t = task.clone();
        self.writer.run(move |c| writes::create_task(c, &t)).await
    }

    async fn update_task(&self, task: &TaskRef, spec: &TaskSpec) -> StoreResult<Task> {
        let (task, spec) = (task.clone(), spec.clone());
        self.writer
            .run(move |c| writes::update_task(c, &task, spec))
            .await
    }

    async fn delete_task(&self, task: &TaskRef) -> StoreResult<()> {
        let task = task.clone();
        self.writer
            .run(move |c| writes::delete_task(c, &task))
            .await
    }

    async fn task(&self, task: &TaskRef) -> StoreResult<Option<Task>> {
        let mut c = self.reader().await?;
        let (condition, params) = live_task(task);
        let sql = format!("SELECT * FROM tasks WHERE {condition}");
        let mut q = sqlx::query(&sql);
        for p in params {
            q = q.bind(p);
        }
        let row = q.fetch_optional(&mut *c).await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn tasks(&self) -> StoreResult<Vec<Task>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query("SELECT * FROM tasks WHERE deleted = 0 ORDER BY namespace, name")
            .fetch_all(&mut *c)
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    async fn create_execution_early(&self, new: NewExecution) -> StoreResult<Execution> {
        if new.idempotency_key.is_some() {
            return Err(StoreError::Conflict(
                "an execution with an idempotency key is created with its commit".into(),
            ));
        }
        let clock = self.clock.clone();
        match self
            .writer
            .run_before_commit(move |c| writes::create_execution(c, &*clock, new))
            .await?
        {
            Created::New(e) => Ok(*e),
            Created::Existing(id) => Err(StoreError::Corrupt(format!(
                "execution {id} matched an idempotency key that was not given"
            ))),
        }
    }

    async fn barrier(&self) -> StoreResult<()> {
        // Queued behind every earlier write; acknowledged after its commit.
        self.writer.run(|_| Ok(())).await
    }

    async fn create_execution(&self, new: NewExecution) -> StoreResult<(Execution, bool)> {
        let clock = self.clock.clone();
        match self
            .writer
            .run(move |c| writes::create_execution(c, &*clock, new))
            .await?
        {
            Created::New(e) => Ok((*e, true)),
            Created::Existing(id) => {
                let e = self
                    .execution(&id, false)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt(format!("execution {id} vanished")))?;
                Ok((e, false))
            }
        }
    }

    async fn execution(&self, id: &str, with_runs: bool) -> StoreResult<Option<Execution>> {
        self.point.execution(id, with_runs)
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
        if let Some(n) = &f.namespace {
            q.push(" AND namespace = ").push_bind(n.clone());
        }
        if let Some(p) = &f.parent_id {
            q.push(" AND parent_id = ").push_bind(p.clone());
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

    async fn analytics_rows(
        &self,
        filter: &AnalyticsFilter,
    ) -> StoreResult<Vec<crate::model::analytics::Row>> {
        let (point, filter) = (self.point.clone(), filter.clone());
        tokio::task::spawn_blocking(move || analytics::rows(&point, &filter))
            .await
            .map_err(|e| StoreError::Unavailable(format!("the analytics read stopped: {e}")))?
    }

    async fn count_by_state(&self) -> StoreResult<Vec<(ExecutionState, u64)>> {
        let mut c = self.reader().await?;
        // On the (state, id) index: no table rows read.
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM executions GROUP BY state")
            .fetch_all(&mut *c)
            .await?;
        rows.iter()
            .map(|r| Ok((exec_state(&r.string("state")?)?, r.integer("n")? as u64)))
            .collect()
    }

    async fn control_by(
        &self,
        id: &str,
        control: Control,
        by: Option<&str>,
    ) -> StoreResult<PlanOutcome> {
        let (id, clock, by) = (id.to_string(), self.clock.clone(), by.map(String::from));
        self.writer
            .run(move |c| apply::control(c, &*clock, &id, control, by.as_deref()))
            .await
    }

    async fn task_version(&self, task_id: &str, version: i64) -> StoreResult<Option<TaskSpec>> {
        let mut c = self.reader().await?;
        let row = sqlx::query("SELECT spec FROM task_versions WHERE task_id = ? AND version = ?")
            .bind(task_id)
            .bind(version)
            .fetch_optional(&mut *c)
            .await?;
        row.map(|r| Ok(serde_json::from_str(&r.string("spec")?)?))
            .transpose()
    }

    async fn dataset_rows(
        &self,
        f: &DatasetFilter,
    ) -> StoreResult<Vec<crate::model::dataset::DatasetRow>> {
        let mut c = self.reader().await?;
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT id, execution_id, row_index, created_at, data FROM dataset_rows WHERE id > ",
        );
        q.push_bind(f.after);
        if let Some(t) = &f.task_id {
            q.push(" AND task_id = ").push_bind(t.clone());
        }
        if let Some(e) = &f.execution_id {
            q.push(" AND execution_id = ").push_bind(e.clone());
        }
        if let Some(s) = &f.since {
            q.push(" AND created_at >= ").push_bind(s.clone());
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(f.limit.clamp(1, 10_000) as i64);
        let rows = q.build().fetch_all(&mut *c).await?;
        rows.iter()
            .map(|r| {
                Ok(crate::model::dataset::DatasetRow {
                    id: r.integer("id")?,
                    execution_id: r.string("execution_id")?,
                    index: r.integer("row_index")? as u32,
                    created_at: r.string("created_at")?,
                    data: r.json("data")?.unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn schedules(&self) -> StoreResult<std::collections::HashMap<String, ScheduleRow>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query("SELECT task_id, last_tick_ms, paused FROM schedules")
            .fetch_all(&mut *c)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.string("task_id")?,
                    ScheduleRow {
                        last_tick_ms: r.integer("last_tick_ms")?,
                        paused: r.integer("paused")? != 0,
                    },
                ))
            })
            .collect()
    }

    async fn schedule(&self, task_id: &str) -> StoreResult<Option<ScheduleRow>> {
        let mut c = self.reader().await?;
        let row = sqlx::query("SELECT last_tick_ms, paused FROM schedules WHERE task_id = ?")
            .bind(task_id)
            .fetch_optional(&mut *c)
            .await?;
        row.map(|r| {
            Ok(ScheduleRow {
                last_tick_ms: r.integer("last_tick_ms")?,
                paused: r.integer("paused")? != 0,
            })
        })
        .transpose()
    }

    async fn set_schedule(&self, task_id: &str, row: ScheduleRow) -> StoreResult<()> {
        let task = task_id.to_string();
        self.writer
            .run(move |c| {
                c.prepare_cached(
                    "INSERT INTO schedules (task_id, last_tick_ms, paused) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (task_id) DO UPDATE SET last_tick_ms = ?2, paused = ?3",
                )?
                .execute(rusqlite::params![task, row.last_tick_ms, row.paused])?;
                Ok(())
            })
            .await
    }

    async fn record_tick(&self, task_id: &str, tick_ms: i64) -> StoreResult<()> {
        let task = task_id.to_string();
        self.writer
            .run(move |c| {
                c.prepare_cached(
                    "INSERT INTO schedules (task_id, last_tick_ms, paused) VALUES (?1, ?2, 0) \
                     ON CONFLICT (task_id) DO UPDATE SET last_tick_ms = MAX(last_tick_ms, ?2)",
                )?
                .execute(rusqlite::params![task, tick_ms])?;
                Ok(())
            })
            .await
    }

    async fn release_signature(&self, task_id: &str, signature: &str) -> StoreResult<()> {
        let (task, signature) = (task_id.to_string(), signature.to_string());
        self.writer
            .run(move |c| {
                c.prepare_cached(
                    "DELETE FROM webhook_signatures WHERE task_id = ? AND signature = ?",
                )?
                .execute(rusqlite::params![task, signature])?;
                Ok(())
            })
            .await
    }

    async fn claim_signature(
        &self,
        task_id: &str,
        signature: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<bool> {
        let (task, signature) = (task_id.to_string(), signature.to_string());
        self.writer
            .run(move |c| writes::claim_signature(c, &task, &signature, now_ms, until_ms))
            .await
    }

    async fn start_attempt(
        &self,
        task_run_id: &str,
        worker: &str,
        lease_until: i64,
    ) -> StoreResult<Claimed> {
        let (run, worker, clock) = (
            task_run_id.to_string(),
            worker.to_string(),
            self.clock.clone(),
        );
        // The guest may start while RUNNING is being committed: no caller
        // is told, and the attempt's completion is queued behind it.
        self.writer
            .run_before_commit(move |c| {
                apply::start_attempt(c, &*clock, &run, &worker, lease_until)
            })
            .await
    }

    async fn finish_attempt(&self, f: FinishAttempt) -> StoreResult<PlanOutcome> {
        let clock = self.clock.clone();
        self.writer
            .run(move |c| apply::finish_attempt(c, &*clock, &f))
            .await
    }

    async fn save_checkpoint(&self, task_run_id: &str, fence: i64, state: &str) -> StoreResult<()> {
        let (run, state) = (task_run_id.to_string(), state.to_string());
        self.writer
            .run(move |c| writes::save_checkpoint(c, &run, fence, &state))
            .await
    }

    fn append_logs(&self, lines: Vec<NewLog>) {
        if !lines.is_empty() {
            self.writer.fire(move |c| writes::append_logs(c, lines));
        }
    }

    async fn renew_leases(&self, worker: &str, lease_until: i64) -> StoreResult<()> {
        let worker = worker.to_string();
        self.writer
            .run(move |c| writes::renew_leases(c, &worker, lease_until))
            .await
    }

    async fn recover(&self) -> StoreResult<Recovery> {
        let clock = self.clock.clone();
        // A refusal during recovery means the rows contradict each other:
        // roll the whole batch back rather than commit half of it.
        self.writer
            .run(move |c| {
                apply::recover(c, &*clock, &mut crate::model::retry::random_jitter).map_err(|e| {
                    match e {
                        e if e.is_failure() => e,
                        refused => StoreError::Corrupt(format!("recovery: {refused}")),
                    }
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
        rows.iter().map(event_from_row).collect()
    }

    async fn all_events(
        &self,
        f: &EventFilter,
        after: i64,
        limit: u32,
        newest: bool,
    ) -> StoreResult<Vec<ScopedEvent>> {
        let mut c = self.reader().await?;
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT ev.*, x.task_id AS scope_task, x.namespace AS scope_namespace \
             FROM events ev JOIN executions x ON x.id = ev.execution_id WHERE ev.id > ",
        );
        q.push_bind(after);
        if let Some(n) = &f.namespace {
            q.push(" AND x.namespace = ").push_bind(n.clone());
        }
        if let Some(t) = &f.task_id {
            q.push(" AND x.task_id = ").push_bind(t.clone());
        }
        if !f.states.is_empty() {
            q.push(" AND ev.to_state IN (");
            let mut sep = q.separated(", ");
            for s in &f.states {
                sep.push_bind(s.clone());
            }
            q.push(")");
        }
        q.push(if newest {
            " ORDER BY ev.id DESC LIMIT "
        } else {
            " ORDER BY ev.id LIMIT "
        })
        .push_bind(limit as i64);
        let rows = q.build().fetch_all(&mut *c).await?;
        let mut events = rows
            .iter()
            .map(|r| {
                Ok(ScopedEvent {
                    event: event_from_row(r)?,
                    task_id: r.string("scope_task")?,
                    namespace: r.string("scope_namespace")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        if newest {
            events.reverse();
        }
        Ok(events)
    }

    async fn media_of(&self, execution_id: &str) -> StoreResult<Vec<MediaInfo>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query("SELECT * FROM media WHERE execution_id = ? ORDER BY id")
            .bind(execution_id)
            .fetch_all(&mut *c)
            .await?;
        rows.iter().map(media_from_row).collect()
    }

    async fn media(&self, id: &str) -> StoreResult<Option<(MediaInfo, String)>> {
        let mut c = self.reader().await?;
        let row = sqlx::query(
            "SELECT m.*, e.namespace AS namespace FROM media m \
             JOIN executions e ON e.id = m.execution_id WHERE m.id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref()
            .map(|r| Ok((media_from_row(r)?, r.try_get("namespace")?)))
            .transpose()
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
            let report = r.json::<Value>("report")?.unwrap_or(Value::Null);
            let metrics: Vec<crate::model::report::Metric> =
                serde_json::from_value(report["metrics"].clone()).unwrap_or_default();
            out.extend(
                metrics
                    .into_iter()
                    .map(|metric| AttemptMetric { attempt, metric }),
            );
        }
        Ok(out)
    }

    async fn put_token(&self, token: &Token, hash: &str) -> StoreResult<()> {
        self.put_token_row(token, hash).await
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<Token>> {
        self.token_row("hash", hash).await
    }

    async fn tokens(&self) -> StoreResult<Vec<Token>> {
        self.token_rows().await
    }

    async fn revoke_token(&self, id: &str, at: &str) -> StoreResult<Option<Token>> {
        self.revoke_token_row(id, at).await
    }

    async fn record_audit(&self, entry: AuditEntry) -> StoreResult<()> {
        self.audit_append(entry).await
    }

    async fn audit(
        &self,
        namespace: Option<&str>,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        self.audit_rows(namespace, after, limit).await
    }

    async fn set_namespace_limits(
        &self,
        namespace: &str,
        limits: &NamespaceLimits,
    ) -> StoreResult<()> {
        self.set_limits_row(namespace, limits).await
    }

    async fn namespace_limits(&self) -> StoreResult<BTreeMap<String, NamespaceLimits>> {
        self.limits_rows().await
    }

    async fn stored_bytes(&self, namespace: &str) -> StoreResult<u64> {
        self.stored_bytes_of(namespace).await
    }

    fn changes(&self) -> &Arc<Changes> {
        &self.changes
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::now;
    use crate::model::report::{AttemptReport, AttemptStatus, ErrorKind};
    use serde_json::json;

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
            schedule_state: None,
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
            variables: Default::default(),
            scheduled_at: None,
            replay: None,
            token_id: None,
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
    async fn executions_are_listed_by_parent() {
        let (_d, s) = store().await;
        s.create_task(&task()).await.unwrap();
        let (parent, _) = execution(&s, None).await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let (child, _) = s
                .create_execution(NewExecution {
                    id: uuid::Uuid::now_v7().to_string(),
                    task: task(),
                    task_run_id: uuid::Uuid::now_v7().to_string(),
                    trigger: Trigger::Flow,
                    input: json!({}),
                    labels: Default::default(),
                    idempotency_key: None,
                    parent_id: Some(parent.id.clone()),
                    variables: Default::default(),
                    scheduled_at: None,
                    replay: None,
                    token_id: None,
                })
                .await
                .unwrap();
            ids.push(child.id);
        }
        let filter = ExecutionFilter {
            parent_id: Some(parent.id.clone()),
            limit: 50,
            ..Default::default()
        };
        let children: Vec<String> = s
            .executions(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        ids.reverse(); // newest first
        assert_eq!(children, ids);
        let none = ExecutionFilter {
            parent_id: Some(ids[0].clone()),
            limit: 50,
            ..Default::default()
        };
        assert!(s.executions(&none).await.unwrap().is_empty());
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
            .unwrap()
            .started()
            .unwrap();
        assert_eq!(first.fence, 1);
        let finish = |worker: &str, fence: i64| FinishAttempt {
            attempt_id: first.attempt_id.clone(),
            task_run_id: run.task_run_id.clone(),
            execution_id: e.id.clone(),
            worker: worker.into(),
            fence,
            report: ok_report(1),
            jitter: 0.0,
            shutdown: false,
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
            s.finish_attempt(finish("host-a", 1)).await.unwrap().state,
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
    async fn refused_writes_do_not_disturb_their_batch() {
        let (_d, s) = store().await;
        s.create_task(&task()).await.unwrap();
        let s = std::sync::Arc::new(s);
        let mut writes = Vec::new();
        for i in 0..60 {
            let s = s.clone();
            writes.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    execution(&s, None).await.1
                } else {
                    matches!(
                        s.control("missing", Control::Pause).await,
                        Err(StoreError::NotFound(_))
                    )
                }
            }));
        }
        for w in writes {
            assert!(w.await.unwrap());
        }
        assert_eq!(s.runnable(100).await.unwrap().len(), 30);
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
        let dir = tempfile::tempdir().unwrap();
        let clock = crate::model::clock::ManualClock::starting_at(1_000);
        let s = SqliteStore::open_with_clock(&dir.path().join("t.db"), clock.clone())
            .await
            .unwrap();
        s.create_task(&task()).await.unwrap();
        let (e, _) = execution(&s, None).await;
        let run = s.runnable(10).await.unwrap().remove(0);
        s.start_attempt(&run.task_run_id, "dead-host", 0)
            .await
            .unwrap();
        s.save_checkpoint(&run.task_run_id, 1, r#"{"done":2}"#)
            .await
            .unwrap();
        let rec = s.recover().await.unwrap();
        assert_eq!(rec.crashed_attempts, 1);
        let again = s.runnable(10).await.unwrap();
        assert_eq!(again.len(), 1);
        // The default policy: 1 s, give or take its 10 % jitter.
        let at = again[0].not_before.unwrap();
        assert!((1_900..=2_100).contains(&at), "{at}");
        assert!(matches!(
            s.start_attempt(&run.task_run_id, "new-host", 0).await,
            Err(StoreError::NotDue { .. })
        ));
        clock.advance(std::time::Duration::from_millis(1_100));
        let second = s
            .start_attempt(&run.task_run_id, "new-host", 0)
            .await
            .unwrap()
            .started()
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

    fn named(namespace: &str, name: &str) -> Task {
        Task {
            id: uuid::Uuid::now_v7().to_string(),
            version: 1,
            spec: serde_json::from_value(
                json!({"name": name, "namespace": namespace, "action": "noop"}),
            )
            .unwrap(),
            created_at: now(),
            updated_at: now(),
            schedule_state: None,
        }
    }

    #[tokio::test]
    async fn a_name_is_looked_up_in_one_namespace_and_an_id_by_id_only() {
        let (_d, s) = store().await;
        let a = named("default", "greet");
        let b = named("team", "greet");
        // Written before names were checked: a task named after a's id.
        let c = named("default", &a.id);
        for t in [&a, &b, &c] {
            s.create_task(t).await.unwrap();
        }
        let id_of = |r: Option<Task>| r.map(|t| t.id);
        let by_id = TaskRef::Id(a.id.clone());
        assert_eq!(id_of(s.task(&by_id).await.unwrap()), Some(a.id.clone()));
        let in_default = TaskRef::name("default", "greet");
        assert_eq!(
            id_of(s.task(&in_default).await.unwrap()),
            Some(a.id.clone())
        );
        let in_team = TaskRef::name("team", "greet");
        assert_eq!(id_of(s.task(&in_team).await.unwrap()), Some(b.id.clone()));
        let elsewhere = TaskRef::name("other", "greet");
        assert_eq!(s.task(&elsewhere).await.unwrap(), None);

        // Replacing by name touches that namespace's task only.
        let mut spec = b.spec.clone();
        spec.priority = 7;
        let updated = s.update_task(&in_team, &spec).await.unwrap();
        assert_eq!((updated.id.as_str(), updated.version), (b.id.as_str(), 2));
        assert_eq!(s.task(&in_default).await.unwrap().unwrap().version, 1);
        assert!(matches!(
            s.update_task(&elsewhere, &spec).await,
            Err(StoreError::NotFound(_))
        ));

        // Deleting by id deletes exactly that task.
        s.delete_task(&by_id).await.unwrap();
        assert_eq!(s.task(&by_id).await.unwrap(), None);
        assert_eq!(s.task(&in_default).await.unwrap(), None);
        let c_by_name = TaskRef::name("default", &a.id);
        assert_eq!(id_of(s.task(&c_by_name).await.unwrap()), Some(c.id.clone()));
        assert_eq!(id_of(s.task(&in_team).await.unwrap()), Some(b.id.clone()));
        assert!(matches!(
            s.delete_task(&by_id).await,
            Err(StoreError::NotFound(_))
        ));

        // Deleting by name deletes that namespace's task only.
        s.delete_task(&in_team).await.unwrap();
        let left: Vec<String> = s.tasks().await.unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(left, vec![c.id]);
    }

    #[tokio::test]
    async fn a_name_may_be_reused_in_another_namespace_but_not_in_its_own() {
        let (_d, s) = store().await;
        s.create_task(&named("default", "greet")).await.unwrap();
        s.create_task(&named("team", "greet")).await.unwrap();
        assert!(matches!(
            s.create_task(&named("team", "greet")).await,
            Err(StoreError::Conflict(_))
        ));
        // Moving a task onto a taken name is refused; onto a free one, not.
        let other = named("team", "other");
        s.create_task(&other).await.unwrap();
        let mut spec = other.spec.clone();
        spec.name = "greet".into();
        assert!(matches!(
            s.update_task(&TaskRef::Id(other.id.clone()), &spec).await,
            Err(StoreError::Conflict(_))
        ));
        spec.namespace = "elsewhere".into();
        let moved = s.update_task(&TaskRef::Id(other.id), &spec).await.unwrap();
        assert_eq!(moved.spec.namespace, "elsewhere");
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
            "SELECT * FROM tasks WHERE id = 'x' AND deleted = 0",
            "SELECT * FROM tasks WHERE namespace = 'x' AND name = 'y' AND deleted = 0",
            "SELECT id FROM executions WHERE task_id = 'x' AND idempotency_key = 'k'",
            "SELECT * FROM executions WHERE state IN ('CREATED', 'RUNNING') ORDER BY id DESC LIMIT 1",
            "SELECT * FROM executions WHERE task_id = 'x' AND id < 'z' ORDER BY id DESC LIMIT 50",
            "SELECT * FROM executions WHERE created_at >= '2026-11-25T12:04:20.000000Z' AND created_at < '2026-11-26T00:00:00.000000Z' ORDER BY id DESC LIMIT 50",
            "SELECT * FROM logs WHERE execution_id = 'x' AND id > 0 ORDER BY id LIMIT 100",
            "SELECT * FROM events WHERE execution_id = 'x' AND id > 0 ORDER BY id LIMIT 100",
            "SELECT * FROM attempts WHERE status = 'running'",
            "SELECT id, state FROM task_runs WHERE execution_id = 'x' ORDER BY id",
            "SELECT id, execution_id FROM task_runs WHERE state = 'RUNNING' ORDER BY id",
            "SELECT e.state, tr.state FROM executions e JOIN task_runs tr ON tr.execution_id = e.id WHERE e.id = 'x' ORDER BY tr.id",
            "SELECT e.state, tr.state FROM executions e JOIN task_runs tr ON tr.execution_id = e.id WHERE e.id = (SELECT execution_id FROM task_runs WHERE id = 'x') ORDER BY tr.id",
            "SELECT id FROM attempts WHERE task_run_id = 'x' AND number = 1",
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
        // What a for_each item's events read: the index that keeps each
        // read to the task runs it needs, not every item of the execution.
        for (sql, index) in [
            (
                "SELECT tr.id FROM executions e LEFT JOIN task_runs tr ON tr.execution_id = e.id AND tr.item_index IS NULL WHERE e.id = 'x' ORDER BY tr.rowid",
                "task_runs_by_execution (execution_id=? AND item_index=?)",
            ),
            (
                "SELECT tr.id FROM task_runs tr INDEXED BY task_runs_items_left WHERE tr.execution_id = 'x' AND tr.item_index IS NOT NULL AND tr.state != 'SUCCESS'",
                "task_runs_items_left",
            ),
            (
                "SELECT MAX(item_index) FROM task_runs WHERE execution_id = 'x' AND step = 's' AND item_index IS NOT NULL",
                "task_runs_items",
            ),
            (
                "SELECT idx, item FROM flow_items WHERE execution_id = 'x' AND step = 's' AND idx >= 3 ORDER BY idx LIMIT 10",
                "PRIMARY KEY",
            ),
        ] {
            let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&mut c)
                .await
                .unwrap();
            let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
            assert!(
                plan.iter().any(|p| p.contains(index)),
                "{sql}\n  plan: {plan:?}"
            );
        }
    }
}
