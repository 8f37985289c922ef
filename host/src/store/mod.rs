//! The store: durable tasks, executions, task runs, attempts, logs, events
//! and media records, behind the [`Store`] trait.
//!
//! Owns persistence only. Every state change is checked against
//! `model::state` inside the store's transaction before it is written, and
//! committed before the call returns. The runtime decides *what* happens;
//! the store makes it durable and refuses what the state machine forbids.
//! `sqlite.rs` is the embedded default; a PostgreSQL sibling can implement
//! the same trait (leases and fencing tokens are already recorded).

pub mod sqlite;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::execution::{Event, Execution, Plugin, StoredLog, Trigger};
use crate::model::state::{ExecutionState, Forbidden, TaskRunState};
use crate::model::task::{Task, TaskRef, TaskSpec};
use crate::sandbox::report::{AttemptReport, MediaInfo};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// A completion from a host that no longer owns the task run.
    #[error("stale completion: {0}")]
    Fenced(String),
    #[error("store failure: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Internal(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Internal(format!("bad JSON in the store: {e}"))
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
    pub spec: TaskSpec,
    pub step: String,
}

/// How a finished attempt leaves its task run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Another attempt at `not_before` (unix ms).
    Retry { not_before: i64 },
    /// The task run ends in this state.
    Final(TaskRunState),
}

#[derive(Debug, Clone)]
pub struct FinishAttempt {
    pub attempt_id: String,
    pub task_run_id: String,
    pub execution_id: String,
    pub worker: String,
    pub fence: i64,
    pub report: AttemptReport,
    pub outcome: RunOutcome,
}

/// A user's request to change an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Cancel,
    Pause,
    Resume,
    Restart,
}

/// What a control request changed.
#[derive(Debug, Clone)]
pub struct ControlOutcome {
    pub state: ExecutionState,
    /// Task runs that became runnable (resume, restart).
    pub runnable: Vec<Runnable>,
    /// Task runs with a running attempt to interrupt (cancel).
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

/// A metric from one attempt's report.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AttemptMetric {
    pub attempt: u32,
    #[serde(flatten)]
    pub metric: crate::sandbox::report::Metric,
}

/// Persistence for the runtime and the API.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    // Plugins and tasks.
    async fn put_plugin(&self, plugin: &Plugin) -> StoreResult<bool>;
    async fn plugin(&self, id_or_name: &str) -> StoreResult<Option<Plugin>>;
    async fn plugins(&self) -> StoreResult<Vec<Plugin>>;
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
    async fn execution(&self, id: &str, with_runs: bool) -> StoreResult<Option<Execution>>;
    async fn executions(&self, filter: &ExecutionFilter) -> StoreResult<Vec<Execution>>;
    async fn control(&self, id: &str, control: Control) -> StoreResult<ControlOutcome>;

    // The attempt lifecycle.
    /// Marks the task run RUNNING under `worker` with a new fencing token and
    /// records the attempt; fails if the execution is paused, ending or ended.
    /// May return before the change is committed (nobody is told of it);
    /// every later write of the attempt is ordered after it.
    async fn start_attempt(
        &self,
        task_run_id: &str,
        worker: &str,
        lease_until: i64,
    ) -> StoreResult<StartedAttempt>;
    /// Stores the report and moves task run and execution on; refused if
    /// the fencing token no longer matches.
    async fn finish_attempt(&self, finish: FinishAttempt) -> StoreResult<ExecutionState>;
    async fn save_checkpoint(&self, task_run_id: &str, fence: i64, state: &str) -> StoreResult<()>;
    /// Queued, fire and forget: a follower sees them within a batch.
    fn append_logs(&self, lines: Vec<NewLog>);
    async fn renew_leases(&self, worker: &str, lease_until: i64) -> StoreResult<()>;
    /// Closes attempts left running by a dead process (kind `host_crash`),
    /// schedules their task runs under their retry policy, ends KILLING
    /// executions as KILLED.
    async fn recover(
        &self,
        now_ms: i64,
        backoff_ms: &(dyn for<'s> Fn(&'s TaskSpec, u32) -> i64 + Sync),
    ) -> StoreResult<Recovery>;
    async fn runnable(&self, limit: u32) -> StoreResult<Vec<Runnable>>;

    // What executions produced.
    async fn logs(&self, execution_id: &str, after: i64, limit: u32)
    -> StoreResult<Vec<StoredLog>>;
    async fn events(&self, execution_id: &str, after: i64, limit: u32) -> StoreResult<Vec<Event>>;
    async fn media_of(&self, execution_id: &str) -> StoreResult<Vec<MediaInfo>>;
    async fn media(&self, id: &str) -> StoreResult<Option<MediaInfo>>;
    async fn metrics(&self, execution_id: &str) -> StoreResult<Vec<AttemptMetric>>;
}
