//! Executions, task runs and attempts as stored and served: the records
//! behind `GET /executions/{id}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::report::{AttemptError, AttemptStatus, Usage};
use super::state::{ExecutionState, TaskRunState};

/// What started an execution.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Trigger {
    #[default]
    Http,
    Cli,
    /// A tick of the task's `schedule`.
    Schedule,
    Webhook,
    Flow,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The trigger named exactly `s` (lowercase, as on the wire).
    pub fn parse(s: &str) -> Option<Trigger> {
        s.parse().ok()
    }
}

/// One run of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Execution {
    pub id: String,
    pub task_id: String,
    pub task_version: i64,
    pub namespace: String,
    pub parent_id: Option<String>,
    pub trigger: Trigger,
    pub input: Value,
    pub state: ExecutionState,
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub duration_ms: Option<f64>,
    /// The main task run's outputs (for a one-action task), merged by step otherwise.
    pub outputs: BTreeMap<String, Value>,
    /// The result of the last successful attempt.
    pub result: Option<Value>,
    pub error: Option<AttemptError>,
    pub labels: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    /// A flow's step running now (or last run, once the flow has ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<CurrentStep>,
    /// The execution this one replays (`POST /executions/{id}/replay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
    /// The tick that started it, for a scheduled execution (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    /// The execution's variables: the task's defaults, the trigger's
    /// overrides, and what flow steps saved.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: serde_json::Map<String, Value>,
    /// The variables it started with (a replay starts with them again).
    #[serde(skip)]
    pub initial_variables: Option<serde_json::Map<String, Value>>,
    /// Fuel its attempts have consumed so far, all together.
    #[serde(default)]
    pub fuel_used: u64,
    /// Present on `GET /executions/{id}`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub task_runs: Option<Vec<TaskRun>>,
}

/// The step a flow is at, as the grid shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CurrentStep {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One step's run inside an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskRun {
    pub id: String,
    pub step: String,
    /// A `for_each` item's index (its task run's place in the step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// A `for_each` item's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<Value>,
    pub state: TaskRunState,
    pub attempts: Vec<Attempt>,
    /// When the next attempt may start (while `RETRYING`).
    pub not_before: Option<String>,
    pub checkpoint: Option<Value>,
    /// A flow step's input as rendered for its attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Why the task run failed when no attempt did (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AttemptError>,
    /// What a flow step's successful attempt produced, as later steps read
    /// it: `{"outputs": {…}, "result": …}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

/// One attempt of a task run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub id: String,
    pub number: u32,
    /// `running` until it ends, then the report's status.
    pub status: AttemptPhase,
    pub error: Option<AttemptError>,
    pub usage: Option<Usage>,
    pub worker_id: String,
    pub started_at: String,
    pub ended_at: Option<String>,
}

/// An attempt's phase: running, or how it ended.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum AttemptPhase {
    Running,
    Success,
    Warning,
    Failed,
    Killed,
}

impl From<AttemptStatus> for AttemptPhase {
    fn from(s: AttemptStatus) -> Self {
        match s {
            AttemptStatus::Success => AttemptPhase::Success,
            AttemptStatus::Warning => AttemptPhase::Warning,
            AttemptStatus::Failed => AttemptPhase::Failed,
            AttemptStatus::Killed => AttemptPhase::Killed,
        }
    }
}

impl AttemptPhase {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The phase named exactly `s` (lowercase, as on the wire).
    pub fn parse(s: &str) -> Option<AttemptPhase> {
        s.parse().ok()
    }
}

/// A state change or notable happening, recorded as it happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    pub execution_id: String,
    pub ts: String,
    /// e.g. `execution.state`, `task_run.state`, `attempt.started`,
    /// `attempt.finished`, or `control` (`detail`: the `action` asked and
    /// the `token_id` that asked it).
    pub kind: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub detail: Value,
}

/// An event with the task and namespace of its execution: an item of the
/// feed across executions (`GET /events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScopedEvent {
    #[serde(flatten)]
    pub event: Event,
    pub task_id: String,
    pub namespace: String,
}

/// A stored log line with its place in the execution's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredLog {
    pub id: i64,
    pub attempt: u32,
    pub ts: String,
    pub level: String,
    pub source: String,
    pub message: String,
}

/// A plugin: an uploaded component, identified by its digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plugin {
    /// `sha256:<hex>`.
    pub id: String,
    /// The namespace its name belongs to.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub name: String,
    pub version: Option<String>,
    pub size: u64,
    pub created_at: String,
}

fn default_namespace() -> String {
    "default".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_and_phases_use_their_wire_names_exactly() {
        use AttemptPhase as P;
        for t in [
            Trigger::Http,
            Trigger::Cli,
            Trigger::Schedule,
            Trigger::Webhook,
            Trigger::Flow,
        ] {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
            assert_eq!(Trigger::parse(&t.to_string()), Some(t));
        }
        for p in [P::Running, P::Success, P::Warning, P::Failed, P::Killed] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(AttemptPhase::parse(p.as_str()), Some(p));
        }
        assert_eq!(Trigger::Webhook.as_str(), "webhook");
        assert_eq!(P::Running.as_str(), "running");
        // Case-sensitive, as the API and the store have always been.
        assert_eq!(Trigger::parse("CLI"), None);
        assert_eq!(AttemptPhase::parse("Failed"), None);
        assert_eq!(AttemptPhase::from(AttemptStatus::Killed), P::Killed);
    }
}
