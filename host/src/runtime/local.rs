//! A task run on this machine, without a store: `ward run`'s attempts.
//!
//! Runs attempts one after another until one succeeds, one fails in a way
//! no retry can fix, or `max_attempts` is reached, handing each attempt the
//! last checkpoint of the one before.

use crate::sandbox::{AttemptReport, AttemptSpec, LoadedAction, Sandbox};

use crate::model::retry::is_retryable;

/// Runs up to `max_attempts` attempts of `spec` (its `attempt` number is set
/// here) and returns every attempt's report, oldest first.
pub async fn run_task_run(
    sandbox: &Sandbox,
    action: &LoadedAction,
    mut spec: AttemptSpec,
    max_attempts: u32,
) -> Vec<AttemptReport> {
    let mut reports = Vec::new();
    for attempt in 1..=max_attempts.max(1) {
        spec.invocation.attempt = attempt;
        let report = sandbox.run(action, spec.clone()).await;
        let again = report.error_kind().is_some_and(is_retryable) && !spec.cancel.is_cancelled();
        if let Some(state) = &report.checkpoint {
            spec.last_checkpoint = Some(state.to_string());
        }
        reports.push(report);
        if !again {
            break;
        }
    }
    reports
}
