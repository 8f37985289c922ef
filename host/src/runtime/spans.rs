//! The spans of ended executions: when traces are exported, follows the
//! feed of committed events and, for each execution that ends, reads its
//! record and hands it to `crate::traces`, which makes the execution's and
//! its task runs' spans (the attempts' were made live by the worker).
//!
//! Runs only with `--otlp-endpoint`; without it the writer keeps nothing
//! for this. Reading the feed through `follow_all` catches up from the store
//! after a lag, so no ended execution is missed while this host runs.
//! Executions that ended while no process was exporting get no spans, nor
//! do those whose end commits as the service shuts down (the follow stops
//! then). A restarted execution's spans are sent again when it ends again,
//! with the same ids.

use std::sync::Arc;

use futures_util::StreamExt;

use super::service::{Service, ServiceResult};
use crate::model::state::ExecutionState;
use crate::store::EventFilter;

impl Service {
    /// The id of the newest event stored (0 when there is none).
    pub(super) async fn newest_event_id(&self) -> ServiceResult<i64> {
        let newest = self
            .store
            .all_events(&EventFilter::default(), 0, 1, true)
            .await?;
        Ok(newest.first().map_or(0, |e| e.event.id))
    }

    /// Follows ended executions, from the event after `after`.
    pub(super) async fn trace_ended_executions(self: Arc<Self>, after: i64) {
        let ended = EventFilter {
            states: ExecutionState::ALL
                .iter()
                .filter(|s| s.is_terminal())
                .map(|s| s.as_str().to_string())
                .collect(),
            ..EventFilter::default()
        };
        let execution_state = crate::model::plan::EventKind::ExecutionState.as_str();
        let mut events = std::pin::pin!(self.follow_all(ended, after, None));
        while let Some(e) = events.next().await {
            if e.event.kind != execution_state {
                continue;
            }
            match self.store.execution(&e.event.execution_id, true).await {
                Ok(Some(execution)) => crate::traces::execution_ended(&execution),
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(execution = %e.event.execution_id, error = %err, "traces: cannot read an ended execution")
                }
            }
        }
    }
}
