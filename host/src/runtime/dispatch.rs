//! The dispatcher: an in-memory ready queue of task runs, ordered by
//! priority then age, with delayed entries for retries and backoffs,
//! bounded by the host's slots and per-task and per-queue limits. Backed by
//! the store (every queued run is a runnable row), so nothing queued is lost.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use super::service::Service;
use crate::store::Runnable;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ready {
    priority: i32,
    seq: u64,
    pub(super) run: RunRef,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RunRef {
    pub(super) task_run_id: String,
    pub(super) execution_id: String,
    pub(super) task_id: String,
    pub(super) queue: String,
    pub(super) priority: i32,
}

impl Ord for Ready {
    fn cmp(&self, other: &Self) -> Ordering {
        // Higher priority first, then older first.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Default)]
pub(super) struct Dispatch {
    pub(super) ready: BinaryHeap<Ready>,
    delayed: BinaryHeap<Reverse<(i64, u64, String)>>,
    pub(super) delayed_items: HashMap<String, Ready>,
    queued: HashSet<String>,
    running_by_task: HashMap<String, usize>,
    running_by_queue: HashMap<String, usize>,
    pub(super) task_limits: HashMap<String, Option<u32>>,
}

impl Service {
    pub(super) fn lock_dispatch(&self) -> std::sync::MutexGuard<'_, Dispatch> {
        self.dispatch.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn enqueue(&self, r: Runnable) {
        let seq = self.seq.fetch_add(1, AtomicOrdering::Relaxed);
        let item = Ready {
            priority: r.priority,
            seq,
            run: RunRef {
                task_run_id: r.task_run_id.clone(),
                execution_id: r.execution_id,
                task_id: r.task_id,
                queue: r.queue,
                priority: r.priority,
            },
        };
        let mut d = self.lock_dispatch();
        if !d.queued.insert(r.task_run_id.clone()) {
            return;
        }
        match r.not_before {
            Some(at) if at > self.clock.now_ms() => {
                d.delayed.push(Reverse((at, seq, r.task_run_id.clone())));
                d.delayed_items.insert(r.task_run_id, item);
            }
            _ => d.ready.push(item),
        }
        drop(d);
        self.wake.notify_one();
    }

    pub(super) async fn dispatcher(self: Arc<Self>) {
        loop {
            if !self.accepting.load(AtomicOrdering::SeqCst) {
                return;
            }
            let next_due = self.dispatch_ready();
            let wait = next_due
                .map(|at| Duration::from_millis((at - self.clock.now_ms()).clamp(1, 1000) as u64))
                .unwrap_or(Duration::from_secs(1));
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        }
    }

    /// Starts what may start now; returns when the next delayed item is due.
    fn dispatch_ready(self: &Arc<Self>) -> Option<i64> {
        let mut d = self.lock_dispatch();
        let now_ms = self.clock.now_ms();
        while let Some(Reverse((at, _, _))) = d.delayed.peek() {
            if *at > now_ms {
                break;
            }
            let Reverse((_, _, id)) = d.delayed.pop().expect("peeked");
            if let Some(item) = d.delayed_items.remove(&id) {
                d.ready.push(item);
            }
        }
        let mut held = Vec::new();
        while self.busy.load(AtomicOrdering::SeqCst) < self.config.slots {
            let Some(item) = d.ready.pop() else { break };
            let task_limit = d.task_limits.get(&item.run.task_id).copied().flatten();
            let task_running = d
                .running_by_task
                .get(&item.run.task_id)
                .copied()
                .unwrap_or(0);
            let queue_limit = self.config.queue_limits.get(&item.run.queue).copied();
            let queue_running = d
                .running_by_queue
                .get(&item.run.queue)
                .copied()
                .unwrap_or(0);
            if task_limit.is_some_and(|l| task_running >= l as usize)
                || queue_limit.is_some_and(|l| queue_running >= l)
            {
                held.push(item);
                continue;
            }
            d.queued.remove(&item.run.task_run_id);
            *d.running_by_task
                .entry(item.run.task_id.clone())
                .or_insert(0) += 1;
            *d.running_by_queue
                .entry(item.run.queue.clone())
                .or_insert(0) += 1;
            self.busy.fetch_add(1, AtomicOrdering::SeqCst);
            tokio::spawn(self.clone().run_task_run(item.run));
        }
        for item in held {
            d.ready.push(item);
        }
        d.delayed.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Queues a task run again for `not_before` (unix ms).
    pub(super) fn requeue(&self, run: RunRef, not_before: i64) {
        self.enqueue(Runnable {
            task_run_id: run.task_run_id,
            execution_id: run.execution_id,
            task_id: run.task_id,
            priority: run.priority,
            queue: run.queue,
            not_before: Some(not_before),
        });
    }

    pub(super) fn release(&self, run: &RunRef) {
        let mut d = self.lock_dispatch();
        if let Some(n) = d.running_by_task.get_mut(&run.task_id) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = d.running_by_queue.get_mut(&run.queue) {
            *n = n.saturating_sub(1);
        }
        drop(d);
        self.busy.fetch_sub(1, AtomicOrdering::SeqCst);
        self.wake.notify_one();
        self.idle.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_work_is_ordered_by_priority_then_age() {
        let item = |priority, seq| Ready {
            priority,
            seq,
            run: RunRef {
                task_run_id: format!("{priority}-{seq}"),
                execution_id: String::new(),
                task_id: String::new(),
                queue: String::new(),
                priority,
            },
        };
        let mut heap = BinaryHeap::from(vec![item(0, 1), item(5, 3), item(0, 0), item(5, 2)]);
        let order: Vec<_> = std::iter::from_fn(|| heap.pop().map(|r| r.run.task_run_id)).collect();
        assert_eq!(order, vec!["5-2", "5-3", "0-0", "0-1"]);
    }
}
