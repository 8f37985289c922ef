//! Recovery and leases: at start, the attempts a dead process left running
//! are closed (the planner retries them under their policy) and runnable
//! work is queued again; while running, this host's leases are renewed.

use std::sync::Arc;

use super::error::ServiceResult;
use super::service::Service;

impl Service {
    /// Closes what a previous process left running and queues every
    /// runnable task run again.
    pub(super) async fn recover(self: &Arc<Self>) -> ServiceResult<()> {
        let rec = self.store.recover().await?;
        if rec.crashed_attempts + rec.killed_executions > 0 {
            tracing::warn!(
                crashed_attempts = rec.crashed_attempts,
                killed_executions = rec.killed_executions,
                "recovered work left by a previous process"
            );
        }
        // Before anything runs: the gauge then moves with each change.
        crate::telemetry::executions_at_start(&self.store.count_by_state().await?);
        for task in self.store.tasks().await? {
            self.lock_dispatch().set_task_limit(
                &task.id,
                task.spec.concurrency,
                &task.spec.namespace,
                &self.config.queue_limits,
            );
        }
        for r in self.store.runnable(1_000_000).await? {
            self.enqueue(r);
        }
        Ok(())
    }

    pub(super) async fn lease_renewer(self: Arc<Self>) {
        let every = self.config.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let until = self.clock.now_ms() + self.config.lease.as_millis() as i64;
            if let Err(e) = self.store.renew_leases(&self.config.worker_id, until).await {
                tracing::error!(error = %e, "renewing leases failed");
            }
        }
    }
}
