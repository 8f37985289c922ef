//! The runtime's read side: what the API and the CLI's server may read,
//! without reaching into the store. Reads go to the store's read
//! connections; nothing here writes or plans.

use super::error::ServiceResult;
use super::service::Service;
use crate::model::analytics::{self, Analytics, Bucket};
use crate::model::clock::parse_rfc3339_ms;
use crate::model::execution::{Event, Execution, Plugin, ScopedEvent, StoredLog};
use crate::model::report::MediaInfo;
use crate::model::task::Task;
use crate::store::{AnalyticsFilter, AttemptMetric, EventFilter, ExecutionFilter};

/// How long the same analytics are answered again without reading the
/// store: an overview that is at most this stale.
const ANALYTICS_FRESH: std::time::Duration = std::time::Duration::from_secs(5);

impl Service {
    /// Every plugin, or a namespace's.
    pub async fn plugins(&self, namespace: Option<&str>) -> ServiceResult<Vec<Plugin>> {
        Ok(self.store.plugins(namespace).await?)
    }

    /// A plugin of `namespace` by its digest id or name (the newest of
    /// that name).
    pub async fn plugin(&self, namespace: &str, id_or_name: &str) -> ServiceResult<Option<Plugin>> {
        Ok(self.store.plugin(Some(namespace), id_or_name).await?)
    }

    pub async fn tasks(&self) -> ServiceResult<Vec<Task>> {
        Ok(self.store.tasks().await?)
    }

    /// An execution, with its task runs and attempts when `with_runs`.
    pub async fn execution(&self, id: &str, with_runs: bool) -> ServiceResult<Option<Execution>> {
        Ok(self.store.execution(id, with_runs).await?)
    }

    /// Dataset rows, oldest first.
    pub async fn dataset_rows(
        &self,
        filter: &crate::store::DatasetFilter,
    ) -> ServiceResult<Vec<crate::model::dataset::DatasetRow>> {
        Ok(self.store.dataset_rows(filter).await?)
    }

    pub async fn executions(&self, filter: &ExecutionFilter) -> ServiceResult<Vec<Execution>> {
        Ok(self.store.executions(filter).await?)
    }

    /// Log lines after `after` (a line id), oldest first.
    pub async fn logs(
        &self,
        execution_id: &str,
        after: i64,
        limit: u32,
    ) -> ServiceResult<Vec<StoredLog>> {
        Ok(self.store.logs(execution_id, after, limit).await?)
    }

    /// Events after `after` (an event id), oldest first.
    pub async fn events(
        &self,
        execution_id: &str,
        after: i64,
        limit: u32,
    ) -> ServiceResult<Vec<Event>> {
        Ok(self.store.events(execution_id, after, limit).await?)
    }

    /// Events of every execution after `after` that pass `filter`; with
    /// `newest`, the last `limit` of them.
    pub async fn all_events(
        &self,
        filter: &EventFilter,
        after: i64,
        limit: u32,
        newest: bool,
    ) -> ServiceResult<Vec<ScopedEvent>> {
        Ok(self.store.all_events(filter, after, limit, newest).await?)
    }

    /// Analytics of the executions `filter` covers, in `bucket`s; the top
    /// tasks carry their current names.
    pub async fn analytics(
        &self,
        filter: &AnalyticsFilter,
        bucket: Bucket,
    ) -> ServiceResult<Analytics> {
        let key = format!("{filter:?} {bucket:?}");
        if let Some((k, at, a)) = &*super::catalog::lock(&self.analytics_cache)
            && *k == key
            && at.elapsed() < ANALYTICS_FRESH
        {
            return Ok(a.clone());
        }
        let ms = |t: &str| parse_rfc3339_ms(t).map(|ms| ms as i64).unwrap_or_default();
        let rows = self.store.analytics_rows(filter).await?;
        let (since, until) = (ms(&filter.since), ms(&filter.until));
        // Sorting a window's durations is work for a blocking thread.
        let mut a =
            tokio::task::spawn_blocking(move || analytics::summarize(&rows, since, until, bucket))
                .await?;
        let names: std::collections::HashMap<String, String> = self
            .store
            .tasks()
            .await?
            .into_iter()
            .map(|t| (t.id, t.spec.name))
            .collect();
        for t in a
            .top_by_volume
            .iter_mut()
            .chain(a.top_by_failures.iter_mut())
        {
            t.name = names.get(&t.task_id).cloned();
        }
        *super::catalog::lock(&self.analytics_cache) =
            Some((key, std::time::Instant::now(), a.clone()));
        Ok(a)
    }

    pub async fn media_of(&self, execution_id: &str) -> ServiceResult<Vec<MediaInfo>> {
        Ok(self.store.media_of(execution_id).await?)
    }

    /// A media object and its execution's namespace.
    pub async fn media(&self, id: &str) -> ServiceResult<Option<(MediaInfo, String)>> {
        Ok(self.store.media(id).await?)
    }

    pub async fn metrics(&self, execution_id: &str) -> ServiceResult<Vec<AttemptMetric>> {
        Ok(self.store.metrics(execution_id).await?)
    }
}
