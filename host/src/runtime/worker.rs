//! The attempt worker: runs one attempt of a task run on the sandbox, from
//! the claim to the recorded end, with checkpoints and log lines going to
//! the store as the guest writes them.

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::catalog::lock;
use super::dispatch::RunRef;
use super::service::Service;
use crate::model::report::{AttemptReport, AttemptStatus, ErrorKind, LogLine};
use crate::model::retry::random_jitter;
use crate::sandbox::{AttemptSpec, CheckpointSink, Invocation, LogObserver};
use crate::store::{Claimed, FinishAttempt, NewLog, StartedAttempt, Store, StoreError};

impl Service {
    /// One attempt of a task run, start to finish, then what follows it.
    pub(super) async fn run_task_run(self: Arc<Self>, run: RunRef) {
        let worker = self.config.worker_id.clone();
        let lease_until = self.clock.now_ms() + self.config.lease.as_millis() as i64;
        let started = match self
            .store
            .start_attempt(&run.task_run_id, &worker, lease_until)
            .await
        {
            Ok(Claimed::Started(s)) => s,
            Ok(Claimed::Settled(outcome)) => {
                // A flow step skipped or failed before an attempt.
                self.act_on(&outcome);
                self.release(&run);
                return;
            }
            Err(StoreError::Forbidden(f)) => {
                // Paused, cancelled or already handled: resume/restart re-queue it.
                tracing::debug!(task_run = %run.task_run_id, reason = %f, "not starting");
                self.release(&run);
                return;
            }
            Err(StoreError::NotFound(_)) => {
                self.release(&run);
                return;
            }
            Err(StoreError::NotDue { not_before, .. }) => {
                // Queued early (e.g. resumed during a backoff): wait for it.
                self.release(&run);
                self.requeue(run, not_before);
                return;
            }
            Err(e) => {
                // Still runnable in the store: try again shortly rather than
                // leave it stranded until the next start.
                tracing::error!(task_run = %run.task_run_id, error = %e, "starting an attempt failed; retrying in 1 s");
                self.release(&run);
                self.requeue(run, self.clock.now_ms() + 1_000);
                return;
            }
        };
        let span = crate::traces::attempt_span(
            &run.execution_id,
            &run.task_id,
            &run.task_run_id,
            &started.step,
            started.number,
        );
        self.run_attempt(run, started, worker)
            .instrument(span)
            .await;
    }

    /// The started attempt's run on the sandbox, its record and what follows.
    async fn run_attempt(self: Arc<Self>, run: RunRef, started: StartedAttempt, worker: String) {
        let cancel = CancellationToken::new();
        lock(&self.running).insert(run.task_run_id.clone(), cancel.clone());

        let step = started.step.as_str();
        let subflow = started.spec.runnable(step).and_then(|s| s.subflow.clone());
        let report = if let Some(sub) = subflow {
            let timeout = started
                .spec
                .runnable(step)
                .and_then(|s| s.limits.as_ref())
                .and_then(|l| l.timeout);
            self.run_subflow(&run, &started, &sub, timeout, &cancel)
                .await
        } else {
            self.run_action(&run, &started, &cancel).await
        };
        lock(&self.running).remove(&run.task_run_id);
        let report = check_outputs(report, started.spec.outputs_schema_of(step));
        crate::telemetry::attempt_ended(&report);
        record_outcome(&report);

        let finish = FinishAttempt {
            attempt_id: started.attempt_id.clone(),
            task_run_id: run.task_run_id.clone(),
            execution_id: run.execution_id.clone(),
            worker,
            fence: started.fence,
            shutdown: report.status == AttemptStatus::Killed
                && self.stopping.load(AtomicOrdering::SeqCst),
            report,
            jitter: random_jitter(),
        };
        match self.store.finish_attempt(finish).await {
            Ok(outcome) => self.act_on(&outcome),
            Err(e) => {
                tracing::error!(task_run = %run.task_run_id, error = %e, "recording an attempt failed")
            }
        }
        // Only now: shutdown waits for this to record the attempt.
        self.release(&run);
    }
}

impl Service {
    /// The attempt of an action step: the component, run on the sandbox.
    async fn run_action(
        &self,
        run: &RunRef,
        started: &StartedAttempt,
        cancel: &CancellationToken,
    ) -> AttemptReport {
        let step = started.step.as_str();
        match self
            .action_for(&started.spec.namespace, started.spec.plugin_of(step))
            .await
        {
            Err(e) => AttemptReport::failed_before_start(
                started.number,
                ErrorKind::LoadFailed,
                e.to_string(),
            ),
            Ok(action) => {
                let mut spec = AttemptSpec::new(
                    Invocation {
                        input: started.input.to_string(),
                        execution_id: run.execution_id.clone(),
                        task_id: run.task_id.clone(),
                        step: started.step.clone(),
                        attempt: started.number,
                    },
                    self.media.clone(),
                );
                match started.spec.limits_of(step, &self.config.bounds) {
                    Ok(l) => spec.limits = l,
                    Err(e) => {
                        tracing::warn!(error = %e, "task limits out of bounds; using defaults")
                    }
                }
                spec.quotas = self.config.quotas;
                if let Err(message) = self
                    .share_of_storage(&started.spec.namespace, &mut spec.quotas)
                    .await
                {
                    return AttemptReport::failed_before_start(
                        started.number,
                        ErrorKind::LoadFailed,
                        message,
                    );
                }
                let grants = started.spec.grants_of(step);
                spec.variables = grants.variables.clone();
                match self.open_secrets(&started.spec, step) {
                    Ok(secrets) => {
                        spec.secrets = secrets.values().cloned().collect();
                        spec.variables.extend(secrets);
                    }
                    Err(e) => {
                        return AttemptReport::failed_before_start(
                            started.number,
                            ErrorKind::LoadFailed,
                            e,
                        );
                    }
                }
                spec.scratch = grants.scratch;
                spec.http = grants.http.clone();
                spec.last_checkpoint = started.checkpoint.clone();
                spec.cancel = cancel.clone();
                spec.checkpoint_sink = Some(Arc::new(StoreCheckpoints {
                    store: self.store.clone(),
                    task_run_id: run.task_run_id.clone(),
                    fence: started.fence,
                }));
                spec.log_observer = Some(Arc::new(StoreLogs {
                    store: self.store.clone(),
                    execution_id: run.execution_id.clone(),
                    attempt: started.number,
                }));
                self.sandbox.run(&action, spec).await
            }
        }
    }
}

impl Service {
    /// Cuts an attempt's media and outputs quotas to what its namespace's
    /// `stored_bytes` limit leaves; `Err` when nothing is left. Checked when
    /// the attempt starts, so attempts running at once may together pass
    /// the limit by what each was allowed.
    async fn share_of_storage(
        &self,
        namespace: &str,
        quotas: &mut crate::model::limits::Quotas,
    ) -> Result<(), String> {
        let Some(limit) = self.namespace_limits(namespace).stored_bytes else {
            return Ok(());
        };
        let held = self
            .stored_bytes(namespace)
            .await
            .map_err(|e| format!("reading namespace {namespace:?}'s stored bytes: {e}"))?;
        let left = limit.saturating_sub(held);
        if left == 0 {
            return Err(format!(
                "namespace {namespace:?} holds {held} bytes of media and outputs, at its limit of {limit}: nothing more may be stored until the limit is raised"
            ));
        }
        quotas.media_total_bytes = quotas.media_total_bytes.min(left);
        quotas.media_object_bytes = quotas.media_object_bytes.min(left);
        quotas.outputs_total_bytes = quotas.outputs_total_bytes.min(left);
        quotas.output_bytes = quotas.output_bytes.min(left);
        Ok(())
    }
}

/// A successful attempt whose outputs fail the step's `outputs_schema`
/// ends `invalid_result` naming the paths, its outputs and result dropped
/// before anything is published.
fn check_outputs(mut report: AttemptReport, schema: Option<&serde_json::Value>) -> AttemptReport {
    let Some(schema) = schema else {
        return report;
    };
    if !matches!(
        report.status,
        AttemptStatus::Success | AttemptStatus::Warning
    ) {
        return report;
    }
    let outputs =
        serde_json::Value::Object(std::mem::take(&mut report.outputs).into_iter().collect());
    let problems = crate::model::schema::violations(schema, &outputs);
    if problems.is_empty() {
        if let serde_json::Value::Object(map) = outputs {
            report.outputs = map.into_iter().collect();
        }
        return report;
    }
    report.status = AttemptStatus::Failed;
    report.result = None;
    report.error = Some(crate::model::report::AttemptError {
        kind: ErrorKind::InvalidResult,
        message: format!(
            "the outputs do not match outputs_schema: {}",
            problems.join("; ")
        ),
    });
    report
}

/// The attempt's end on its span, and as a debug line (with its trace id).
fn record_outcome(report: &AttemptReport) {
    crate::traces::attempt_ended(report);
    tracing::debug!(
        outcome = report.status.as_str(),
        error_kind = report.error.as_ref().map(|e| e.kind.as_str()),
        wall_ms = report.usage.wall_ms,
        fuel = report.usage.fuel_consumed,
        "attempt ended"
    );
}

/// Checkpoints committed to the store before the guest hears they are saved.
struct StoreCheckpoints {
    store: Arc<dyn Store>,
    task_run_id: String,
    fence: i64,
}

impl CheckpointSink for StoreCheckpoints {
    fn save(
        &self,
        state: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'static>>
    {
        let (store, run, fence) = (self.store.clone(), self.task_run_id.clone(), self.fence);
        Box::pin(async move {
            store
                .save_checkpoint(&run, fence, &state)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "saving a checkpoint failed");
                    "the checkpoint could not be stored".to_string()
                })
        })
    }
}

/// Log lines stored as they are written, so that followers see them live.
struct StoreLogs {
    store: Arc<dyn Store>,
    execution_id: String,
    attempt: u32,
}

impl LogObserver for StoreLogs {
    fn line(&self, line: &LogLine) {
        let source = serde_json::to_value(line.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.store.append_logs(vec![NewLog {
            execution_id: self.execution_id.clone(),
            attempt: self.attempt,
            ts: line.ts.clone(),
            level: line.level.as_str().to_string(),
            source,
            message: line.message.clone(),
        }]);
    }
}
