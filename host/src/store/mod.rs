//! The store: durable tasks, executions, task runs, attempts, logs, events
//! and media records, behind the [`Store`] trait.
//!
//! Owns persistence only. Every state change is an event planned by
//! `model::plan` over a snapshot read in the store's transaction, applied
//! whole in that transaction and committed before the call returns; a
//! refusal writes nothing. Neither the store nor the runtime holds a
//! transition rule. `sqlite/` is the embedded default; a PostgreSQL sibling
//! implements the same trait with the same planner (leases and fencing
//! tokens are already recorded).

pub mod changes;
pub mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::model::auth::{AuditEntry, NamespaceLimits, Token};
use crate::model::execution::{Event, Execution, Plugin, ScopedEvent, StoredLog, Trigger};
use crate::model::report::{AttemptReport, MediaInfo};
use crate::model::state::{ExecutionState, Forbidden, TaskRunState};
use crate::model::task::{Task, TaskRef, TaskSpec};

/// Why a store call failed. The first five are answers about the data
/// (the API shows them to the caller); the rest are failures of the store
/// itself, with their source kept for the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The planner refused: the state machine has no such edge.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// A completion from a host that no longer owns the task run.
    #[error("stale completion: {0}")]
    Fenced(String),
    /// A task run claimed before its backoff ran out.
    #[error("task run {run} is not due before {not_before} (unix ms)")]
    NotDue { run: String, not_before: i64 },
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("JSON in the store does not parse: {0}")]
    Json(#[from] serde_json::Error),
    /// Rows that contradict the model (an unknown state name, a lost row).
    #[error("the store is inconsistent: {0}")]
    Corrupt(String),
    /// The writer could not take or commit the write; nothing was written.
    #[error("the store could not commit: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether the same call may succeed if tried again later: a busy or
    /// stopped database, a backoff still running. Refusals about the data
    /// and a corrupt store are final.
    pub fn is_retriable(&self) -> bool {
        match self {
            StoreError::NotDue { .. } | StoreError::Unavailable(_) => true,
            StoreError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            StoreError::Database(e) => matches!(
                e,
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
            ),
            _ => false,
        }
    }

    /// Whether this is a failure of the store itself rather than an answer
    /// about the data: a write that fails so has left its transaction
    /// unusable, and the API answers 5xx.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite(_)
                | StoreError::Database(_)
                | StoreError::Migrate(_)
                | StoreError::Json(_)
                | StoreError::Corrupt(_)
                | StoreError::Unavailable(_)
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A new execution with its first task run.
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub id: String,
    pub task: Task,
    pub task_run_id: String,
    pub trigger: Trigger,
    pub input: Value,
    pub labels: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    pub parent_id: Option<String>,
    /// The execution's variables: the task's defaults with the trigger's
    /// overrides.
    pub variables: serde_json::Map<String, Value>,
    /// The tick of a scheduled execution (RFC 3339).
    pub scheduled_at: Option<String>,
    /// A replay: the execution it replays, the flow steps before the one
    /// it starts from (copied, already ended), and that step.
    pub replay: Option<Replay>,
    /// The API token that asked for it (its CREATED event names it).
    pub token_id: Option<String>,
}

/// What a replay takes over from the execution it replays.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub of: String,
    /// The step the new execution starts at (its first task run's).
    pub from_step: Option<String>,
    /// Task runs of the earlier steps, ended as they were.
    pub copied: Vec<CopiedRun>,
}

/// An ended task run carried into a replay.
#[derive(Debug, Clone)]
pub struct CopiedRun {
    pub id: String,
    pub step: String,
    /// A `for_each` item: its index and value.
    pub item: Option<(u32, Value)>,
    pub state: TaskRunState,
    pub input: Option<Value>,
    pub output: Option<Value>,
}

/// Which dataset rows to read: a task's, or one execution's, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetFilter {
    pub task_id: Option<String>,
    pub execution_id: Option<String>,
    /// Rows added at or after this instant (stored form).
    pub since: Option<String>,
    /// Rows after this id.
    pub after: i64,
    pub limit: u32,
}

/// Where a task's schedule stands in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleRow {
    /// Unix ms of the last tick handled.
    pub last_tick_ms: i64,
    pub paused: bool,
}

/// A task run that may be given an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Runnable {
    pub task_run_id: String,
    pub execution_id: String,
    pub task_id: String,
    pub priority: i32,
    pub queue: String,
    /// Unix ms; `None` means now.
    pub not_before: Option<i64>,
}

/// What an attempt needs to start, returned by [`Store::start_attempt`].
#[derive(Debug, Clone)]
pub struct StartedAttempt {
    pub attempt_id: String,
    pub number: u32,
    pub fence: i64,
    pub max_attempts: u32,
    pub checkpoint: Option<String>,
    pub input: Value,
    pub task_version: i64,
    pub spec: std::sync::Arc<TaskSpec>,
    pub step: String,
}

/// What a claim of a task run did.
#[derive(Debug, Clone)]
pub enum Claimed {
    /// Its next attempt started.
    Started(StartedAttempt),
    /// No attempt: the flow step was skipped (its `if` was false) or
    /// failed before an attempt (a template), and the flow moved on.
    Settled(PlanOutcome),
}

#[cfg(test)]
impl Claimed {
    /// The started attempt (tests of one-action tasks, which always start one).
    pub fn started(self) -> Option<StartedAttempt> {
        match self {
            Claimed::Started(s) => Some(s),
            Claimed::Settled(_) => None,
        }
    }
}

/// An attempt's end, as its worker reports it. What follows (a retry, the
/// task run's end, the execution's) is the planner's decision.
#[derive(Debug, Clone)]
pub struct FinishAttempt {
    pub attempt_id: String,
    pub task_run_id: String,
    pub execution_id: String,
    pub worker: String,
    pub fence: i64,
    pub report: AttemptReport,
    /// In `[-1, 1]`: the random part of a retry's backoff.
    pub jitter: f64,
    /// The worker stopped the attempt because its host is shutting down.
    pub shutdown: bool,
}

/// A user's request to change an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Cancel,
    Pause,
    Resume,
    Restart,
}

/// What an applied plan asks of the runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOutcome {
    /// The execution's state the plan produced.
    pub state: ExecutionState,
    /// Task runs to queue (a retry, resume, restart), each with its time.
    pub runnable: Vec<Runnable>,
    /// Task runs whose running attempt must be interrupted (cancel).
    pub interrupt: Vec<String>,
}

/// What recovery at start-up did.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    pub crashed_attempts: u64,
    pub killed_executions: u64,
}

/// A log line on its way to the store.
#[derive(Debug, Clone)]
pub struct NewLog {
    pub execution_id: String,
    pub attempt: u32,
    pub ts: String,
    pub level: String,
    pub source: String,
    pub message: String,
}

/// Filters for listing executions.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub states: Vec<ExecutionState>,
    pub task_id: Option<String>,
    pub namespace: Option<String>,
    /// Only the children of this execution.
    pub parent_id: Option<String>,
    /// Created at or after: UTC RFC 3339 with microseconds, the form stored
    /// times have ([`crate::model::parse_instant`] makes it), so that they
    /// compare as text.
    pub since: Option<String>,
    /// Created before; the same form as `since`.
    pub until: Option<String>,
    /// Return executions older than this id (newest first).
    pub cursor: Option<String>,
    pub limit: u32,
}

/// Which executions analytics cover: created in `[since, until)` (stored
/// form, see [`crate::model::parse_instant`]) and matching each set filter.
#[derive(Debug, Clone, Default)]
pub struct AnalyticsFilter {
    pub since: String,
    pub until: String,
    pub task_id: Option<String>,
    pub namespace: Option<String>,
    pub states: Vec<ExecutionState>,
}

/// Filters for the feed of events across executions; each set filter
/// must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub namespace: Option<String>,
    pub task_id: Option<String>,
    /// State changes into one of these states (as stored: `FAILED`).
    pub states: Vec<String>,
}

impl EventFilter {
    /// Whether `e` passes; the same test as the store's query.
    pub fn matches(&self, e: &ScopedEvent) -> bool {
        self.namespace.as_ref().is_none_or(|n| *n == e.namespace)
            && self.task_id.as_ref().is_none_or(|t| *t == e.task_id)
            && (self.states.is_empty()
                || e.event
                    .to
                    .as_ref()
                    .is_some_and(|to| self.states.contains(to)))
    }
}

/// A metric from one attempt's report.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AttemptMetric {
    pub attempt: u32,
    #[serde(flatten)]
    pub metric: crate::model::report::Metric,
}

/// Persistence for the runtime and the API.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    // Plugins and tasks.
    /// Stores a plugin; the registration stored (this one, or the same
    /// name, version and bytes stored before) and whether it is new.
    async fn put_plugin(&self, plugin: &Plugin) -> StoreResult<(Plugin, bool)>;
    /// A plugin by digest or name (its newest upload), in `namespace`, or
    /// in any namespace when `None` (the worker's lookups of a digest).
    async fn plugin(
        &self,
        namespace: Option<&str>,
        id_or_name: &str,
    ) -> StoreResult<Option<Plugin>>;
    /// Every plugin, or a namespace's.
    async fn plugins(&self, namespace: Option<&str>) -> StoreResult<Vec<Plugin>>;
    async fn create_task(&self, task: &Task) -> StoreResult<()>;
    /// Replaces the live task `task` points at (by id, or by name in its
    /// namespace) with a new version.
    async fn update_task(&self, task: &TaskRef, spec: &TaskSpec) -> StoreResult<Task>;
    /// Deletes exactly the live task `task` points at.
    async fn delete_task(&self, task: &TaskRef) -> StoreResult<()>;
    /// The live task `task` points at: an id matches by id only, a name
    /// only within its namespace.
    async fn task(&self, task: &TaskRef) -> StoreResult<Option<Task>>;
    async fn tasks(&self) -> StoreResult<Vec<Task>>;

    // Executions.
    /// Creates the execution (state CREATED) and its task run; with an
    /// idempotency key already used for the task, returns that execution
    /// and `false`.
    async fn create_execution(&self, new: NewExecution) -> StoreResult<(Execution, bool)>;
    /// Creates an execution without an idempotency key and returns as soon
    /// as it is written in the writer's transaction, before the commit: for
    /// a caller acknowledged only once a later write of the same execution
    /// has committed (a trigger that waits for the end). Work queued for it
    /// is ordered after it; a failed commit fails that work too.
    async fn create_execution_early(&self, new: NewExecution) -> StoreResult<Execution>;
    /// Resolves once every write queued before it has committed.
    async fn barrier(&self) -> StoreResult<()>;
    async fn execution(&self, id: &str, with_runs: bool) -> StoreResult<Option<Execution>>;
    async fn executions(&self, filter: &ExecutionFilter) -> StoreResult<Vec<Execution>>;
    /// One analytics row per execution `filter` covers.
    async fn analytics_rows(
        &self,
        filter: &AnalyticsFilter,
    ) -> StoreResult<Vec<crate::model::analytics::Row>>;
    /// How many executions are in each state (states with none left out).
    async fn count_by_state(&self) -> StoreResult<Vec<(ExecutionState, u64)>>;
    async fn control(&self, id: &str, control: Control) -> StoreResult<PlanOutcome> {
        self.control_by(id, control, None).await
    }
    /// A control request, applied with an event `control` (`{"action",
    /// "token_id"}`: who asked) in the same commit.
    async fn control_by(
        &self,
        id: &str,
        control: Control,
        by: Option<&str>,
    ) -> StoreResult<PlanOutcome>;

    // The attempt lifecycle.
    /// Marks the task run RUNNING under `worker` with a new fencing token and
    /// records the attempt; fails if the execution is paused, ending or ended.
    /// May return before the change is committed (nobody is told of it);
    /// every later write of the attempt is ordered after it.
    /// A task's version (its definition then), if it was ever stored.
    async fn task_version(&self, task_id: &str, version: i64) -> StoreResult<Option<TaskSpec>>;
    /// Dataset rows, oldest first.
    async fn dataset_rows(
        &self,
        filter: &DatasetFilter,
    ) -> StoreResult<Vec<crate::model::dataset::DatasetRow>>;
    /// Every task's schedule row, by task id.
    async fn schedules(&self) -> StoreResult<std::collections::HashMap<String, ScheduleRow>>;
    /// One task's schedule row.
    async fn schedule(&self, task_id: &str) -> StoreResult<Option<ScheduleRow>>;
    /// Sets a task's schedule row (created when missing).
    async fn set_schedule(&self, task_id: &str, row: ScheduleRow) -> StoreResult<()>;
    /// Records that a task's ticks up to `tick_ms` were handled (never
    /// moving back, never touching `paused`; created running when missing).
    async fn record_tick(&self, task_id: &str, tick_ms: i64) -> StoreResult<()>;
    /// Records `signature` for `task_id` until `until_ms`; false when it is
    /// already recorded (a replayed webhook request). Forgets signatures
    /// whose time has passed.
    async fn claim_signature(
        &self,
        task_id: &str,
        signature: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<bool>;
    /// Forgets a signature claimed for a request that then created nothing.
    async fn release_signature(&self, task_id: &str, signature: &str) -> StoreResult<()>;
    async fn start_attempt(
        &self,
        task_run_id: &str,
        worker: &str,
        lease_until: i64,
    ) -> StoreResult<Claimed>;
    /// Stores the report and moves task run and execution on as planned;
    /// refused if the fencing token no longer matches.
    async fn finish_attempt(&self, finish: FinishAttempt) -> StoreResult<PlanOutcome>;
    async fn save_checkpoint(&self, task_run_id: &str, fence: i64, state: &str) -> StoreResult<()>;
    /// Queued, fire and forget: a follower sees them within a batch.
    fn append_logs(&self, lines: Vec<NewLog>);
    async fn renew_leases(&self, worker: &str, lease_until: i64) -> StoreResult<()>;
    /// Closes attempts left running by a dead process (kind `host_crash`):
    /// their task runs are retried under their policy, and KILLING
    /// executions end KILLED.
    async fn recover(&self) -> StoreResult<Recovery>;
    async fn runnable(&self, limit: u32) -> StoreResult<Vec<Runnable>>;

    // What executions produced.
    async fn logs(&self, execution_id: &str, after: i64, limit: u32)
    -> StoreResult<Vec<StoredLog>>;
    async fn events(&self, execution_id: &str, after: i64, limit: u32) -> StoreResult<Vec<Event>>;
    /// Events of every execution after id `after` that pass `filter`,
    /// oldest first; with `newest`, the last `limit` of them instead (still
    /// oldest first).
    async fn all_events(
        &self,
        filter: &EventFilter,
        after: i64,
        limit: u32,
        newest: bool,
    ) -> StoreResult<Vec<ScopedEvent>>;
    async fn media_of(&self, execution_id: &str) -> StoreResult<Vec<MediaInfo>>;
    /// A media object and the namespace of the execution that stored it.
    async fn media(&self, id: &str) -> StoreResult<Option<(MediaInfo, String)>>;
    async fn metrics(&self, execution_id: &str) -> StoreResult<Vec<AttemptMetric>>;

    // Tokens, the audit trail and namespaces' shares.
    /// Stores a new token under the hash of its secret.
    async fn put_token(&self, token: &Token, hash: &str) -> StoreResult<()>;
    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<Token>>;
    /// Every token, oldest first.
    async fn tokens(&self) -> StoreResult<Vec<Token>>;
    /// Marks the token revoked at `at` (kept when already revoked).
    async fn revoke_token(&self, id: &str, at: &str) -> StoreResult<Option<Token>>;
    /// Appends to the audit trail (`entry.id` is assigned).
    async fn record_audit(&self, entry: AuditEntry) -> StoreResult<()>;
    /// The audit trail after id `after`, oldest first, or one namespace's.
    async fn audit(
        &self,
        namespace: Option<&str>,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>>;
    /// Sets (replaces) a namespace's limits.
    async fn set_namespace_limits(
        &self,
        namespace: &str,
        limits: &NamespaceLimits,
    ) -> StoreResult<()>;
    /// Every namespace that has limits.
    async fn namespace_limits(&self) -> StoreResult<BTreeMap<String, NamespaceLimits>>;
    /// Bytes of media and outputs a namespace's executions hold.
    async fn stored_bytes(&self, namespace: &str) -> StoreResult<u64>;

    /// Where every commit's events and log lines are published.
    fn changes(&self) -> &Arc<changes::Changes>;
}
