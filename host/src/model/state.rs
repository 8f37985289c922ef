//! The state machines of executions and task runs: the table of allowed
//! edges. The planner (`model::plan`) composes them into whole steps and
//! checks every edge it plans against this table; nothing else decides
//! what may follow what.
//!
//! Executions: `CREATED → RUNNING → SUCCESS | WARNING | FAILED`; `RUNNING →
//! KILLING → KILLED` (cancel while an attempt runs: it is interrupted
//! first); `CREATED | RUNNING → KILLED` (cancel while nothing runs, e.g.
//! during a retry's backoff); `RUNNING ⇄ PAUSED`; `FAILED | KILLED →
//! RESTARTED → RUNNING`. Also allowed, because a paused execution's running
//! attempt still finishes: `PAUSED → SUCCESS | WARNING | FAILED`; and
//! cancelling works from every non-terminal state: `PAUSED | RESTARTED →
//! KILLING | KILLED`.

use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr, VariantArray};

/// An execution's state.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    IntoStaticStr,
    VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(
    serialize_all = "SCREAMING_SNAKE_CASE",
    ascii_case_insensitive,
    parse_err_ty = String,
    parse_err_fn = unknown_state
)]
pub enum ExecutionState {
    /// Queued: no attempt has started.
    Created,
    /// At least one task run is running or waiting for its next attempt.
    Running,
    /// No new attempt starts until resumed; a running one finishes.
    Paused,
    Success,
    Warning,
    Failed,
    /// Cancel requested; running guests are being interrupted.
    Killing,
    Killed,
    /// A failed or killed execution was restarted; its failed task runs re-run.
    Restarted,
}

/// A task run's state.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    IntoStaticStr,
    VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(
    serialize_all = "SCREAMING_SNAKE_CASE",
    ascii_case_insensitive,
    parse_err_ty = String,
    parse_err_fn = unknown_state
)]
pub enum TaskRunState {
    /// Waiting for its first attempt (or its first after a restart).
    Created,
    /// An attempt is running.
    Running,
    /// Waiting for the backoff before its next attempt.
    Retrying,
    Success,
    Warning,
    Failed,
    Killed,
    /// A flow step whose `if` was false: it never ran.
    Skipped,
}

// The wire names (`CREATED`, …) come from strum, spelled like serde's
// `rename_all`; parsing ignores case because users type `running`.

impl ExecutionState {
    pub const ALL: &'static [ExecutionState] = Self::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl TaskRunState {
    pub const ALL: &'static [TaskRunState] = Self::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// `FromStr`'s error for a name that is no state.
fn unknown_state(s: &str) -> String {
    format!("unknown state {s:?}")
}

impl ExecutionState {
    /// Ended: changes only by restart.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionState::Success
                | ExecutionState::Warning
                | ExecutionState::Failed
                | ExecutionState::Killed
        )
    }

    /// Whether `self → to` is allowed.
    pub fn can_become(self, to: ExecutionState) -> bool {
        use ExecutionState::*;
        matches!(
            (self, to),
            (Created, Running | Killed)
                | (
                    Running,
                    Success | Warning | Failed | Killing | Killed | Paused
                )
                | (
                    Paused,
                    Running | Success | Warning | Failed | Killing | Killed
                )
                | (Killing, Killed)
                | (Failed | Killed, Restarted)
                | (Restarted, Running | Killing | Killed)
        )
    }

    /// States a user's filter word stands for: the state names themselves
    /// and the common aliases `pending`, `completed`, `cancelled`.
    pub fn from_filter(word: &str) -> Result<Vec<ExecutionState>, String> {
        use ExecutionState::*;
        match word.to_ascii_lowercase().as_str() {
            "pending" | "queued" => Ok(vec![Created, Restarted]),
            "completed" | "succeeded" => Ok(vec![Success, Warning]),
            "cancelled" | "canceled" => Ok(vec![Killing, Killed]),
            _ => word.parse().map(|s| vec![s]).map_err(|_| {
                format!(
                    "unknown status {word:?}: use one of {} or pending, completed, cancelled",
                    ExecutionState::ALL
                        .iter()
                        .map(|s| s.as_str().to_ascii_lowercase())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
        }
    }
}

impl TaskRunState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskRunState::Success
                | TaskRunState::Warning
                | TaskRunState::Failed
                | TaskRunState::Killed
                | TaskRunState::Skipped
        )
    }

    /// Whether `self → to` is allowed. Restart takes a failed or killed
    /// task run back to `CREATED`.
    pub fn can_become(self, to: TaskRunState) -> bool {
        use TaskRunState::*;
        matches!(
            (self, to),
            // A flow step is skipped, or fails before any attempt when its
            // input cannot be rendered.
            (Created, Running | Killed | Skipped | Failed)
                | (Running, Success | Warning | Failed | Killed | Retrying)
                | (Retrying, Running | Killed | Failed)
                | (Failed | Killed, Created)
        )
    }
}

/// A transition the machine forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot go from {from} to {to}")]
pub struct Forbidden {
    pub from: String,
    pub to: String,
}

/// Checks an execution transition.
pub fn execution(from: ExecutionState, to: ExecutionState) -> Result<(), Forbidden> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(Forbidden {
            from: from.to_string(),
            to: to.to_string(),
        })
    }
}

/// Checks a task run transition.
pub fn task_run(from: TaskRunState, to: TaskRunState) -> Result<(), Forbidden> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(Forbidden {
            from: from.to_string(),
            to: to.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ExecutionState::*;
    use super::*;

    #[test]
    fn the_documented_execution_paths_are_allowed() {
        for (a, b) in [
            (Created, Running),
            (Running, Success),
            (Running, Warning),
            (Running, Failed),
            (Running, Killing),
            (Running, Killed),
            (Killing, Killed),
            (Created, Killed),
            (Running, Paused),
            (Paused, Running),
            (Failed, Restarted),
            (Killed, Restarted),
            (Restarted, Running),
        ] {
            assert!(a.can_become(b), "{a} -> {b}");
        }
    }

    #[test]
    fn terminal_states_change_only_by_restart() {
        for from in [Success, Warning, Failed, Killed] {
            assert!(from.is_terminal());
            for &to in ExecutionState::ALL {
                let allowed = from.can_become(to);
                assert_eq!(
                    allowed,
                    to == Restarted && matches!(from, Failed | Killed),
                    "{from} -> {to}"
                );
            }
        }
        assert!(execution(Success, Killing).is_err());
    }

    #[test]
    fn filters_accept_names_and_aliases() {
        assert_eq!(
            ExecutionState::from_filter("running").unwrap(),
            vec![Running]
        );
        assert_eq!(
            ExecutionState::from_filter("SUCCESS").unwrap(),
            vec![Success]
        );
        assert_eq!(
            ExecutionState::from_filter("pending").unwrap(),
            vec![Created, Restarted]
        );
        assert_eq!(
            ExecutionState::from_filter("completed").unwrap(),
            vec![Success, Warning]
        );
        assert_eq!(
            ExecutionState::from_filter("cancelled").unwrap(),
            vec![Killing, Killed]
        );
        assert!(
            ExecutionState::from_filter("bogus")
                .unwrap_err()
                .contains("pending")
        );
    }

    #[test]
    fn state_names_match_the_wire_and_parse_in_any_case() {
        for &s in ExecutionState::ALL {
            let wire = serde_json::to_value(s).unwrap();
            assert_eq!(wire, s.as_str(), "{s:?}");
            assert_eq!(s.to_string(), s.as_str());
            assert_eq!(s.as_str().to_ascii_lowercase().parse(), Ok(s));
        }
        for &s in TaskRunState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str(), "{s:?}");
            assert_eq!(s.as_str().parse(), Ok(s));
        }
        assert_eq!(ExecutionState::ALL.len(), 9);
        assert_eq!(TaskRunState::ALL.len(), 8);
        assert_eq!(Killing.as_str(), "KILLING");
        assert_eq!(TaskRunState::Retrying.as_str(), "RETRYING");
        assert_eq!(
            "bogus".parse::<TaskRunState>(),
            Err("unknown state \"bogus\"".to_string())
        );
    }

    #[test]
    fn task_runs_retry_and_restart() {
        use TaskRunState as T;
        assert!(T::Running.can_become(T::Retrying));
        assert!(T::Retrying.can_become(T::Running));
        assert!(T::Failed.can_become(T::Created));
        assert!(!T::Success.can_become(T::Created));
        assert!(task_run(T::Success, T::Running).is_err());
    }
}
