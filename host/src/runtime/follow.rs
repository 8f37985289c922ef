//! Following an execution and waiting for its end, fed by the changes the
//! store pushes after each commit (`store::changes`), never by polling.
//!
//! Every follower subscribes first and reads the store second, so nothing
//! committed in between is missed; items are sent by increasing id, so a
//! change seen both ways is sent once. A follower that lags behind the
//! broadcast reads the store again from the last id it sent. Owns no
//! state and no rules: reads, subscriptions and the shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::error::{ServiceError, ServiceResult};
use super::service::Service;
use crate::model::execution::{Event, Execution, ScopedEvent, StoredLog};
use crate::model::state::ExecutionState;
use crate::store::EventFilter;
use crate::store::changes::{ExecutionChanges, Subscription};

/// Which of an execution's feeds to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Logs,
    Events,
}

/// One item of a followed feed.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    Log(StoredLog),
    Event(Event),
    /// The execution has ended in this state; nothing follows.
    End(ExecutionState),
}

impl FeedItem {
    /// The item's id in its feed (none for the end).
    pub fn id(&self) -> Option<i64> {
        match self {
            FeedItem::Log(l) => Some(l.id),
            FeedItem::Event(e) => Some(e.id),
            FeedItem::End(_) => None,
        }
    }
}

/// Items read from the store per catch-up query.
const PAGE: u32 = 1000;
/// Items a follower buffers for a slow client before it waits for it.
const BUFFER: usize = 64;

impl Service {
    /// The items of `feed` after id `after`: those stored, then each as it
    /// is committed, then [`FeedItem::End`] once the execution has ended.
    /// The stream stops without an end when the server shuts down (the
    /// client resumes from the last id it got) and the follow stops when
    /// the stream is dropped.
    pub fn follow(
        self: &Arc<Self>,
        execution_id: &str,
        feed: Feed,
        after: i64,
    ) -> impl Stream<Item = FeedItem> + Send + 'static {
        let (tx, rx) = mpsc::channel(BUFFER);
        let svc = self.clone();
        let id = execution_id.to_string();
        tokio::spawn(async move {
            if let Err(e) = svc.run_follow(&id, feed, after, &tx).await {
                tracing::warn!(execution = %id, error = %e, "a follow ended early");
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    async fn run_follow(
        &self,
        id: &str,
        feed: Feed,
        mut after: i64,
        tx: &mpsc::Sender<FeedItem>,
    ) -> ServiceResult<()> {
        let mut changes = self.store.changes().follow(id);
        'catch_up: loop {
            // The state before the items: once it is final, every item
            // written before the end is in the reads below.
            let Some(execution) = self.store.execution(id, false).await? else {
                return Ok(());
            };
            loop {
                let items = self.stored_items(id, feed, after).await?;
                let full = items.len() == PAGE as usize;
                for item in items {
                    after = item.id().unwrap_or(after);
                    if tx.send(item).await.is_err() {
                        return Ok(());
                    }
                }
                if !full {
                    break;
                }
            }
            if execution.state.is_terminal() {
                let _ = tx.send(FeedItem::End(execution.state)).await;
                return Ok(());
            }
            loop {
                let received = tokio::select! {
                    received = changes.recv() => received,
                    _ = tx.closed() => return Ok(()),
                    _ = self.closing.cancelled() => return Ok(()),
                };
                let change = match received {
                    Ok(change) => change,
                    Err(RecvError::Lagged(_)) => continue 'catch_up,
                    Err(RecvError::Closed) => return Ok(()),
                };
                let fresh: Vec<FeedItem> = items_of(&change, feed)
                    .filter(|i| i.id() > Some(after))
                    .collect();
                for item in fresh {
                    after = item.id().unwrap_or(after);
                    if tx.send(item).await.is_err() {
                        return Ok(());
                    }
                }
                if let Some(state) = change.state().filter(|s| s.is_terminal()) {
                    let _ = tx.send(FeedItem::End(state)).await;
                    return Ok(());
                }
            }
        }
    }

    /// Every event of any execution that passes `filter`, after id
    /// `after` (or starting with the newest `tail` stored): those stored,
    /// then each as it is committed. Never ends by itself; stops when the
    /// stream is dropped or the server shuts down.
    pub fn follow_all(
        self: &Arc<Self>,
        filter: EventFilter,
        after: i64,
        tail: Option<u32>,
    ) -> impl Stream<Item = ScopedEvent> + Send + 'static {
        let (tx, rx) = mpsc::channel(BUFFER);
        let svc = self.clone();
        tokio::spawn(async move {
            if let Err(e) = svc.run_follow_all(&filter, after, tail, &tx).await {
                tracing::warn!(error = %e, "a follow of all events ended early");
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    async fn run_follow_all(
        &self,
        filter: &EventFilter,
        mut after: i64,
        tail: Option<u32>,
        tx: &mpsc::Sender<ScopedEvent>,
    ) -> ServiceResult<()> {
        let mut changes = self.store.changes().follow_all();
        if let Some(n) = tail {
            for e in self.store.all_events(filter, 0, n, true).await? {
                after = e.event.id;
                if tx.send(e).await.is_err() {
                    return Ok(());
                }
            }
        }
        'catch_up: loop {
            loop {
                let page = self.store.all_events(filter, after, PAGE, false).await?;
                let full = page.len() == PAGE as usize;
                for e in page {
                    after = e.event.id;
                    if tx.send(e).await.is_err() {
                        return Ok(());
                    }
                }
                if !full {
                    break;
                }
            }
            loop {
                let received = tokio::select! {
                    received = changes.recv() => received,
                    _ = tx.closed() => return Ok(()),
                    _ = self.closing.cancelled() => return Ok(()),
                };
                let committed = match received {
                    Ok(committed) => committed,
                    Err(RecvError::Lagged(_)) => continue 'catch_up,
                    Err(RecvError::Closed) => return Ok(()),
                };
                for e in committed.iter() {
                    if e.event.id <= after {
                        continue;
                    }
                    after = e.event.id;
                    if filter.matches(e) && tx.send(e.clone()).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn stored_items(&self, id: &str, feed: Feed, after: i64) -> ServiceResult<Vec<FeedItem>> {
        Ok(match feed {
            Feed::Logs => self
                .store
                .logs(id, after, PAGE)
                .await?
                .into_iter()
                .map(FeedItem::Log)
                .collect(),
            Feed::Events => self
                .store
                .events(id, after, PAGE)
                .await?
                .into_iter()
                .map(FeedItem::Event)
                .collect(),
        })
    }

    /// The execution once it has ended, or as it is when `limit` runs out
    /// or the server shuts down, whichever comes first; `None` if there is
    /// no such execution. `limit` is cut to the configured `max_wait`.
    /// Costs a subscription and a read or two, no polling.
    pub async fn wait_for_end(
        &self,
        id: &str,
        with_runs: bool,
        limit: Duration,
    ) -> ServiceResult<Option<Execution>> {
        // Subscribed before the read: an end committed after it is pushed.
        let changes = self.store.changes().follow(id);
        let Some(execution) = self.store.execution(id, with_runs).await? else {
            return Ok(None);
        };
        self.wait_on(changes, execution, with_runs, limit)
            .await
            .map(Some)
    }

    /// Waits on `changes`, a subscription taken before `current` was read.
    pub(super) async fn wait_on(
        &self,
        mut changes: Subscription,
        mut current: Execution,
        with_runs: bool,
        limit: Duration,
    ) -> ServiceResult<Execution> {
        let deadline = tokio::time::Instant::now() + limit.min(self.config.max_wait);
        loop {
            if current.state.is_terminal() {
                return Ok(current);
            }
            // Whether to read and wait on (an end, or missed changes), or
            // read and answer (time is up, the server stops).
            let read_and_wait_on = loop {
                let received = tokio::select! {
                    received = changes.recv() => received,
                    _ = tokio::time::sleep_until(deadline) => break false,
                    _ = self.closing.cancelled() => break false,
                };
                match received {
                    Ok(change) if change.ended() => break true,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => break true,
                    Err(RecvError::Closed) => break false,
                }
            };
            current = self
                .store
                .execution(&current.id, with_runs)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("no execution {}", current.id)))?;
            if !read_and_wait_on {
                return Ok(current);
            }
        }
    }
}

/// The items of `feed` in one commit's changes, in id order.
fn items_of(change: &ExecutionChanges, feed: Feed) -> Box<dyn Iterator<Item = FeedItem> + '_> {
    match feed {
        Feed::Logs => Box::new(change.logs.iter().cloned().map(FeedItem::Log)),
        Feed::Events => Box::new(change.events.iter().cloned().map(FeedItem::Event)),
    }
}
