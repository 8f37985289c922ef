//! A flow's `subflow` step, as its attempt: instead of running a component,
//! the attempt starts an execution of another task as a child (its
//! `parent_id` the flow's execution) and, unless told not to wait, waits
//! for it to end and takes its outputs and result.
//!
//! The child's idempotency key is the step's task run, so an attempt run
//! again (a retry after a crash, a restart after a shutdown) finds the
//! same child rather than starting another. Cancelling the flow interrupts
//! the attempt, which cancels the child; a host shutting down leaves the
//! child running and the attempt, run again at the next start, waits on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::dispatch::RunRef;
use super::service::{Service, StartRequest};
use crate::model::execution::{Execution, Trigger};
use crate::model::flow::SubflowSpec;
use crate::model::report::{AttemptReport, AttemptStatus, ErrorKind, Usage};
use crate::model::state::ExecutionState;
use crate::model::task::TaskRef;
use crate::store::{Control, StartedAttempt};

/// How long one wait on the child lasts before the attempt looks again
/// (at its own deadline and the host's shutdown).
const WAIT_ROUND: Duration = Duration::from_secs(30);

impl Service {
    /// The subflow step's attempt: start (or find) the child, wait for it.
    pub(super) async fn run_subflow(
        self: &Arc<Self>,
        run: &RunRef,
        started: &StartedAttempt,
        sub: &SubflowSpec,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> AttemptReport {
        let began = Instant::now();
        let n = started.number;
        let failed = |kind: ErrorKind, message: String| {
            let mut r = AttemptReport::failed_before_start(n, kind, message);
            r.usage.wall_ms = began.elapsed().as_secs_f64() * 1000.0;
            r
        };
        let task = TaskRef::new(&sub.task, &started.spec.namespace);
        let request = StartRequest {
            input: (!started.input.is_null()).then(|| started.input.clone()),
            trigger: Trigger::Flow,
            idempotency_key: Some(format!("subflow:{}", run.task_run_id)),
            parent_id: Some(run.execution_id.clone()),
            ..Default::default()
        };
        let child = match self.start_execution(&task, request).await {
            Ok((child, _)) => child,
            Err(e) if e.is_retriable() => {
                return failed(ErrorKind::ActionRetryable, format!("subflow {task}: {e}"));
            }
            Err(e) => return failed(ErrorKind::ActionFatal, format!("subflow {task}: {e}")),
        };
        let outputs = |e: &Execution| -> AttemptReport {
            let mut r =
                AttemptReport::failed_before_start(n, ErrorKind::ActionFatal, String::new());
            r.status = if e.state == ExecutionState::Warning {
                AttemptStatus::Warning
            } else {
                AttemptStatus::Success
            };
            r.error = None;
            r.outputs = e.outputs.clone();
            r.outputs
                .insert("execution_id".into(), serde_json::json!(e.id));
            r.result = e.result.clone();
            r.usage = Usage {
                wall_ms: began.elapsed().as_secs_f64() * 1000.0,
                ..Usage::default()
            };
            r
        };
        if !sub.wait {
            return outputs(&Execution {
                state: ExecutionState::Success,
                outputs: Default::default(),
                result: None,
                ..child
            });
        }
        let deadline = timeout.map(|t| began + t);
        let mut current = child;
        loop {
            if current.state.is_terminal() {
                return match current.state {
                    ExecutionState::Success | ExecutionState::Warning => outputs(&current),
                    state => {
                        let why = current
                            .error
                            .as_ref()
                            .map(|e| format!(": {}: {}", e.kind, e.message))
                            .unwrap_or_default();
                        failed(
                            ErrorKind::ActionFatal,
                            format!("subflow execution {} ended {state}{why}", current.id),
                        )
                    }
                };
            }
            let round = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(WAIT_ROUND),
                None => WAIT_ROUND,
            };
            if round.is_zero() {
                let _ = self.control(&current.id, Control::Cancel).await;
                return failed(
                    ErrorKind::Timeout,
                    format!(
                        "subflow execution {} did not end in time; cancelled",
                        current.id
                    ),
                );
            }
            tokio::select! {
                ended = self.wait_for_end(&current.id, false, round) => match ended {
                    Ok(Some(e)) => current = e,
                    Ok(None) => return failed(ErrorKind::ActionFatal, format!("subflow execution {} is gone", current.id)),
                    Err(e) => return failed(ErrorKind::ActionRetryable, format!("waiting for subflow execution {}: {e}", current.id)),
                },
                _ = cancel.cancelled() => {
                    // A shutting-down host leaves the child to run on.
                    if !self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                        let _ = self.control(&current.id, Control::Cancel).await;
                    }
                    return failed(ErrorKind::Cancelled, format!("cancelled while subflow execution {} ran", current.id));
                }
            }
        }
    }
}
