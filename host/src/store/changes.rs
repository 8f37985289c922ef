//! What each commit changed, pushed to whoever follows it.
//!
//! The store's writer publishes, after every commit, the events and log
//! lines it just made durable, grouped by execution. Followers subscribe
//! to one execution (a follow of its logs or events, a caller waiting for
//! its end) or to every execution's events (the feed across executions,
//! one message per commit, in id order). Nothing is
//! built, cloned or sent for an execution nobody follows, so a commit costs
//! the same with no followers as before, and idle followers of other
//! executions cost nothing: delivery is by a map lookup per touched
//! execution, not a wake-up per follower.
//!
//! A broadcast is lossy on purpose: a receiver that falls more than the
//! channel's capacity behind is told it lagged, and catches up from the
//! store (everything published was committed first), skipping ids it has
//! already seen. Owns no persistence and no rules.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::model::execution::{Event, ScopedEvent, StoredLog};
use crate::model::plan::EventKind;
use crate::model::state::ExecutionState;

/// Batches a receiver may fall behind before it is told it lagged.
pub const DEFAULT_CAPACITY: usize = 256;

/// One commit's changes to one execution, in commit order.
#[derive(Debug, Clone, Default)]
pub struct ExecutionChanges {
    pub execution_id: String,
    pub events: Vec<Event>,
    pub logs: Vec<StoredLog>,
}

impl ExecutionChanges {
    /// The execution's state after this commit, when the commit changed it.
    pub fn state(&self) -> Option<ExecutionState> {
        self.events
            .iter()
            .rev()
            .filter(|e| e.kind == EventKind::ExecutionState.as_str())
            .find_map(|e| e.to.as_deref()?.parse().ok())
    }

    /// Whether this commit ended the execution.
    pub fn ended(&self) -> bool {
        self.state().is_some_and(ExecutionState::is_terminal)
    }
}

pub type Receiver = broadcast::Receiver<Arc<ExecutionChanges>>;

/// One commit's events across executions, in id order.
pub type Committed = Arc<Vec<ScopedEvent>>;

/// The hub the writer publishes to. One per store.
pub struct Changes {
    capacity: usize,
    /// Per followed execution; an entry lives while it has receivers.
    followed: Mutex<HashMap<String, broadcast::Sender<Arc<ExecutionChanges>>>>,
    /// Entries in `followed`: the writer's check before building anything.
    followed_count: AtomicUsize,
    all: broadcast::Sender<Committed>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Changes {
    /// A hub whose receivers lag after `capacity` unread batches (at least 1).
    pub fn with_capacity(capacity: usize) -> Changes {
        let capacity = capacity.max(1);
        Changes {
            capacity,
            followed: Mutex::new(HashMap::new()),
            followed_count: AtomicUsize::new(0),
            // A message here is a whole commit's events: keep fewer.
            all: broadcast::channel(capacity.div_ceil(4)).0,
        }
    }

    /// Every change to `execution_id` committed from now on, until the
    /// subscription is dropped.
    pub fn follow(self: &Arc<Self>, execution_id: &str) -> Subscription {
        let mut map = lock(&self.followed);
        let receiver = match map.get(execution_id) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(self.capacity);
                map.insert(execution_id.to_string(), sender);
                self.followed_count.store(map.len(), Ordering::Release);
                receiver
            }
        };
        Subscription {
            hub: self.clone(),
            execution_id: execution_id.to_string(),
            receiver: Some(receiver),
        }
    }

    /// Every event of any execution committed from now on, a message per
    /// commit.
    pub fn follow_all(&self) -> broadcast::Receiver<Committed> {
        self.all.subscribe()
    }

    /// Whether anyone follows every execution's events.
    pub(crate) fn is_followed_all(&self) -> bool {
        self.all.receiver_count() > 0
    }

    /// Whether anyone follows anything: when not, the writer keeps nothing
    /// for publication.
    pub fn is_followed(&self) -> bool {
        self.followed_count.load(Ordering::Acquire) > 0 || self.all.receiver_count() > 0
    }

    /// Executions with a follower right now (for tests and figures).
    pub fn followed_executions(&self) -> usize {
        self.followed_count.load(Ordering::Acquire)
    }

    /// Whether `execution_id` has a follower of its own (the writer asks
    /// before building its changes).
    pub(crate) fn wants(&self, execution_id: &str) -> bool {
        self.followed_count.load(Ordering::Acquire) > 0
            && lock(&self.followed).contains_key(execution_id)
    }

    /// Publishes one commit's changes: per followed execution, and every
    /// event for the followers of all. Called by the writer after the
    /// commit, in commit order.
    pub(crate) fn publish(&self, changes: Vec<ExecutionChanges>, all: Vec<ScopedEvent>) {
        if !changes.is_empty() {
            let map = lock(&self.followed);
            for c in changes {
                if let Some(sender) = map.get(&c.execution_id) {
                    // No receiver left is not an error: the entry goes
                    // with the last subscription's drop.
                    let _ = sender.send(Arc::new(c));
                }
            }
        }
        if !all.is_empty() {
            let _ = self.all.send(Arc::new(all));
        }
    }
}

/// A follow of one execution: a broadcast receiver that takes its entry
/// out of the hub when the last one for that execution is dropped.
pub struct Subscription {
    hub: Arc<Changes>,
    execution_id: String,
    receiver: Option<Receiver>,
}

impl Subscription {
    /// The next change, `Err(Lagged)` after missed ones (catch up from the
    /// store), `Err(Closed)` if the hub is gone.
    pub async fn recv(&mut self) -> Result<Arc<ExecutionChanges>, broadcast::error::RecvError> {
        match &mut self.receiver {
            Some(r) => r.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut map = lock(&self.hub.followed);
        if map
            .get(&self.execution_id)
            .is_some_and(|s| s.receiver_count() == 0)
        {
            map.remove(&self.execution_id);
            self.hub.followed_count.store(map.len(), Ordering::Release);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding it; a poisoned map is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn state_event(id: i64, execution: &str, to: &str) -> Event {
        Event {
            id,
            execution_id: execution.into(),
            ts: "2026-11-25T00:00:00Z".into(),
            kind: EventKind::ExecutionState.as_str().into(),
            from: None,
            to: Some(to.into()),
            detail: Value::Null,
        }
    }

    fn changes(execution: &str, events: Vec<Event>) -> ExecutionChanges {
        ExecutionChanges {
            execution_id: execution.into(),
            events,
            logs: vec![],
        }
    }

    #[tokio::test]
    async fn a_follower_gets_only_its_execution_and_its_entry_goes_with_it() {
        let hub = Arc::new(Changes::default());
        assert!(!hub.is_followed());
        let mut a = hub.follow("a");
        let a2 = hub.follow("a");
        assert_eq!(hub.followed_executions(), 1);
        assert!(hub.wants("a") && !hub.wants("b"));
        hub.publish(
            vec![
                changes("b", vec![state_event(1, "b", "RUNNING")]),
                changes("a", vec![state_event(2, "a", "SUCCESS")]),
            ],
            vec![],
        );
        let got = a.recv().await.unwrap();
        assert_eq!(got.execution_id, "a");
        assert!(got.ended());
        drop(a);
        assert_eq!(hub.followed_executions(), 1, "a2 still follows a");
        drop(a2);
        assert_eq!(hub.followed_executions(), 0);
        assert!(!hub.is_followed());
    }

    #[tokio::test]
    async fn a_slow_follower_is_told_it_lagged() {
        let hub = Arc::new(Changes::with_capacity(1));
        let mut a = hub.follow("a");
        for id in 1..=3 {
            hub.publish(
                vec![changes("a", vec![state_event(id, "a", "RUNNING")])],
                vec![],
            );
        }
        assert!(matches!(
            a.recv().await,
            Err(broadcast::error::RecvError::Lagged(2))
        ));
        assert_eq!(a.recv().await.unwrap().events[0].id, 3);
    }

    #[tokio::test]
    async fn follow_all_gets_each_commit_in_id_order() {
        let hub = Arc::new(Changes::default());
        let mut all = hub.follow_all();
        assert!(hub.is_followed() && hub.is_followed_all() && !hub.wants("a"));
        let scoped = |e: Event| ScopedEvent {
            event: e,
            task_id: "t".into(),
            namespace: "default".into(),
        };
        hub.publish(
            vec![],
            vec![
                scoped(state_event(1, "a", "RUNNING")),
                scoped(state_event(2, "b", "FAILED")),
            ],
        );
        let got = all.recv().await.unwrap();
        let ids: Vec<i64> = got.iter().map(|e| e.event.id).collect();
        assert_eq!(ids, [1, 2]);
    }
}
