//! The dispatcher: an in-memory ready queue of task runs, ordered by
//! priority then age, with delayed entries for retries and backoffs,
//! bounded by the host's slots and per-task, per-queue and per-namespace
//! limits. Backed by the store (every queued run is a runnable row), so
//! nothing queued is lost.
//!
//! A run held back by its task's or queue's limit is parked under that
//! task or queue until one of its runs ends, instead of going back into the
//! ready queue: a backlog of a thousand runs of a one-at-a-time task made
//! every dispatch pop and push all of them, and every execution on the host
//! cost 2.5 times the CPU.

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
    /// Since when it may start (its queue wait is counted from here).
    since: std::time::Instant,
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
    /// Queued runs per queue: what `GET /workers` and `/metrics` report,
    /// kept as counts so that reading them never walks the backlog.
    queued_by_queue: HashMap<String, usize>,
    running_by_task: HashMap<String, usize>,
    running_by_queue: HashMap<String, usize>,
    task_limits: HashMap<String, Option<u32>>,
    /// Ready runs held back by their task's limit, by task id.
    parked_by_task: HashMap<String, BinaryHeap<Ready>>,
    /// Ready runs held back by their queue's limit, by queue.
    parked_by_queue: HashMap<String, BinaryHeap<Ready>>,
    /// Each task's namespace, and namespaces' shares of running attempts
    /// (`running` of their limits).
    task_namespaces: HashMap<String, String>,
    namespace_limits: HashMap<String, usize>,
    running_by_namespace: HashMap<String, usize>,
    /// Ready runs held back by their namespace's limit, by namespace.
    parked_by_namespace: HashMap<String, BinaryHeap<Ready>>,
}

/// The limit that holds a ready run back.
enum Hold {
    Task(String),
    Queue(String),
    Namespace(String),
}

impl Dispatch {
    /// Sets a task's limit on runs at once; a higher one lets parked runs
    /// go (those their queue still holds move under it).
    pub(super) fn set_task_limit(
        &mut self,
        task_id: &str,
        limit: Option<u32>,
        namespace: &str,
        queue_limits: &HashMap<String, usize>,
    ) {
        self.task_limits.insert(task_id.to_string(), limit);
        self.task_namespaces
            .insert(task_id.to_string(), namespace.to_string());
        self.unpark_task(task_id, queue_limits);
    }

    /// Sets a namespace's share of running attempts (`None`: no limit); a
    /// higher one lets its parked runs go.
    pub(super) fn set_namespace_limit(
        &mut self,
        namespace: &str,
        limit: Option<usize>,
        queue_limits: &HashMap<String, usize>,
    ) {
        match limit {
            Some(l) => self.namespace_limits.insert(namespace.to_string(), l),
            None => self.namespace_limits.remove(namespace),
        };
        self.unpark_namespace(namespace, queue_limits);
    }

    fn namespace_of(&self, run: &RunRef) -> Option<&String> {
        self.task_namespaces.get(&run.task_id)
    }

    /// Which limit, if any, holds `run` back now.
    fn held_by(&self, run: &RunRef, queue_limits: &HashMap<String, usize>) -> Option<Hold> {
        let task_limit = self.task_limits.get(&run.task_id).copied().flatten();
        if task_limit.is_some_and(|l| count(&self.running_by_task, &run.task_id) >= l as usize) {
            return Some(Hold::Task(run.task_id.clone()));
        }
        let queue_limit = queue_limits.get(&run.queue).copied();
        if queue_limit.is_some_and(|l| count(&self.running_by_queue, &run.queue) >= l) {
            return Some(Hold::Queue(run.queue.clone()));
        }
        let ns = self.namespace_of(run)?;
        let ns_limit = self.namespace_limits.get(ns).copied();
        if ns_limit.is_some_and(|l| count(&self.running_by_namespace, ns) >= l) {
            return Some(Hold::Namespace(ns.clone()));
        }
        None
    }

    fn park_under(&mut self, hold: Hold, item: Ready) {
        match hold {
            Hold::Task(t) => park(&mut self.parked_by_task, &t, item),
            Hold::Queue(q) => park(&mut self.parked_by_queue, &q, item),
            Hold::Namespace(n) => park(&mut self.parked_by_namespace, &n, item),
        }
    }

    /// Queued runs (ready, parked or delayed) per queue, queues with none
    /// left out.
    pub(super) fn queued_by_queue(&self) -> impl Iterator<Item = (&String, usize)> {
        self.queued_by_queue
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(q, n)| (q, *n))
    }

    /// Every queued run (ready, parked or delayed).
    #[cfg(test)]
    fn queued_runs(&self) -> impl Iterator<Item = &RunRef> {
        self.ready
            .iter()
            .chain(self.parked_by_task.values().flatten())
            .chain(self.parked_by_queue.values().flatten())
            .chain(self.parked_by_namespace.values().flatten())
            .chain(self.delayed_items.values())
            .map(|r| &r.run)
    }

    /// The next ready run whose task, queue and namespace are under their
    /// limits, counted as running; runs held back on the way are parked.
    fn next_startable(&mut self, queue_limits: &HashMap<String, usize>) -> Option<Ready> {
        while let Some(item) = self.ready.pop() {
            if let Some(hold) = self.held_by(&item.run, queue_limits) {
                self.park_under(hold, item);
                continue;
            }
            self.queued.remove(&item.run.task_run_id);
            if let Some(n) = self.queued_by_queue.get_mut(&item.run.queue) {
                *n = n.saturating_sub(1);
            }
            *self
                .running_by_task
                .entry(item.run.task_id.clone())
                .or_insert(0) += 1;
            *self
                .running_by_queue
                .entry(item.run.queue.clone())
                .or_insert(0) += 1;
            if let Some(ns) = self.namespace_of(&item.run).cloned() {
                *self.running_by_namespace.entry(ns).or_insert(0) += 1;
            }
            return Some(item);
        }
        None
    }

    /// A run has ended: its task, queue and namespace may start parked runs.
    fn released(&mut self, run: &RunRef, queue_limits: &HashMap<String, usize>) {
        if let Some(n) = self.running_by_task.get_mut(&run.task_id) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.running_by_queue.get_mut(&run.queue) {
            *n = n.saturating_sub(1);
        }
        let ns = self.namespace_of(run).cloned();
        if let Some(ns) = &ns
            && let Some(n) = self.running_by_namespace.get_mut(ns)
        {
            *n = n.saturating_sub(1);
        }
        self.unpark_task(&run.task_id, queue_limits);
        self.unpark_queue(&run.queue, queue_limits);
        if let Some(ns) = ns {
            self.unpark_namespace(&ns, queue_limits);
        }
    }

    /// Moves the best runs parked under `task_id` back to the ready queue,
    /// as many as its limit has room for. One still held by its queue's or
    /// namespace's limit moves under that instead, without taking the room.
    fn unpark_task(&mut self, task_id: &str, queue_limits: &HashMap<String, usize>) {
        let limit = self.task_limits.get(task_id).copied().flatten();
        let running = count(&self.running_by_task, task_id);
        let free = limit.map_or(usize::MAX, |l| (l as usize).saturating_sub(running));
        self.unpark(Parked::Task, task_id, free, queue_limits);
    }

    /// The same for a queue.
    fn unpark_queue(&mut self, queue: &str, queue_limits: &HashMap<String, usize>) {
        let free = queue_limits.get(queue).map_or(usize::MAX, |l| {
            l.saturating_sub(count(&self.running_by_queue, queue))
        });
        self.unpark(Parked::Queue, queue, free, queue_limits);
    }

    /// The same for a namespace.
    fn unpark_namespace(&mut self, namespace: &str, queue_limits: &HashMap<String, usize>) {
        let free = self
            .namespace_limits
            .get(namespace)
            .map_or(usize::MAX, |l| {
                l.saturating_sub(count(&self.running_by_namespace, namespace))
            });
        self.unpark(Parked::Namespace, namespace, free, queue_limits);
    }

    fn unpark(
        &mut self,
        from: Parked,
        key: &str,
        mut free: usize,
        queue_limits: &HashMap<String, usize>,
    ) {
        while free > 0 {
            let heap = match from {
                Parked::Task => &mut self.parked_by_task,
                Parked::Queue => &mut self.parked_by_queue,
                Parked::Namespace => &mut self.parked_by_namespace,
            };
            let Some(item) = take_parked(heap, key) else {
                break;
            };
            // Runs moved back to the ready queue are not counted as running
            // yet: `free` counts them instead, so the key's own limit never
            // holds one here.
            match self.held_by(&item.run, queue_limits) {
                Some(hold) if !hold.is(from, key) => self.park_under(hold, item),
                _ => {
                    self.ready.push(item);
                    free -= 1;
                }
            }
        }
    }
}

/// Where a run is parked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Parked {
    Task,
    Queue,
    Namespace,
}

impl Hold {
    fn is(&self, parked: Parked, key: &str) -> bool {
        match self {
            Hold::Task(k) => parked == Parked::Task && k == key,
            Hold::Queue(k) => parked == Parked::Queue && k == key,
            Hold::Namespace(k) => parked == Parked::Namespace && k == key,
        }
    }
}

fn count(running: &HashMap<String, usize>, key: &str) -> usize {
    running.get(key).copied().unwrap_or(0)
}

fn park(parked: &mut HashMap<String, BinaryHeap<Ready>>, key: &str, item: Ready) {
    match parked.get_mut(key) {
        Some(heap) => heap.push(item),
        None => {
            parked.insert(key.to_string(), BinaryHeap::from(vec![item]));
        }
    }
}

/// The best run parked under `key`, if any (the key goes when emptied).
fn take_parked(parked: &mut HashMap<String, BinaryHeap<Ready>>, key: &str) -> Option<Ready> {
    let heap = parked.get_mut(key)?;
    let item = heap.pop();
    if heap.is_empty() {
        parked.remove(key);
    }
    item
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
            since: std::time::Instant::now(),
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
        *d.queued_by_queue.entry(item.run.queue.clone()).or_insert(0) += 1;
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
            if let Some(mut item) = d.delayed_items.remove(&id) {
                item.since = std::time::Instant::now();
                d.ready.push(item);
            }
        }
        while self.busy.load(AtomicOrdering::SeqCst) < self.config.slots {
            let Some(item) = d.next_startable(&self.config.queue_limits) else {
                break;
            };
            self.busy.fetch_add(1, AtomicOrdering::SeqCst);
            crate::telemetry::queue_waited(item.since.elapsed());
            tokio::spawn(self.clone().run_task_run(item.run));
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
        self.lock_dispatch()
            .released(run, &self.config.queue_limits);
        self.busy.fetch_sub(1, AtomicOrdering::SeqCst);
        self.wake.notify_one();
        self.idle.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(task: &str, queue: &str, seq: u64) -> Ready {
        Ready {
            priority: 0,
            seq,
            since: std::time::Instant::now(),
            run: RunRef {
                task_run_id: format!("{task}-{seq}"),
                execution_id: String::new(),
                task_id: task.into(),
                queue: queue.into(),
                priority: 0,
            },
        }
    }

    fn start_all(d: &mut Dispatch, queues: &HashMap<String, usize>) -> Vec<String> {
        std::iter::from_fn(|| d.next_startable(queues).map(|r| r.run.task_run_id)).collect()
    }

    #[test]
    fn a_run_held_by_both_limits_does_not_hold_up_the_others() {
        // Queue q and task t: one at a time each.
        let queues = HashMap::from([("q".to_string(), 1)]);
        let mut d = Dispatch::default();
        d.set_task_limit("t", Some(1), "n", &queues);
        d.ready.push(ready("x", "q", 0));
        assert_eq!(start_all(&mut d, &queues), ["x-0"]);
        d.ready.push(ready("t", "q", 1)); // held by q (t is free yet)
        d.ready.push(ready("u", "q", 2)); // held by q
        assert_eq!(start_all(&mut d, &queues), Vec::<String>::new());
        d.ready.push(ready("t", "other", 3)); // now t is busy too
        assert_eq!(start_all(&mut d, &queues), ["t-3"]);
        let x = RunRef {
            task_run_id: "x-0".into(),
            execution_id: String::new(),
            task_id: "x".into(),
            queue: "q".into(),
            priority: 0,
        };
        d.released(&x, &queues);
        assert_eq!(
            start_all(&mut d, &queues),
            ["u-2"],
            "q's free slot goes to the run only q held"
        );
        let t = RunRef {
            task_run_id: "t-3".into(),
            execution_id: String::new(),
            task_id: "t".into(),
            queue: "other".into(),
            priority: 0,
        };
        d.released(&t, &queues);
        assert_eq!(
            start_all(&mut d, &queues),
            Vec::<String>::new(),
            "q is busy with u"
        );
        assert_eq!(d.queued_runs().count(), 1);
    }

    #[test]
    fn runs_over_a_limit_are_parked_until_a_run_of_theirs_ends() {
        let mut d = Dispatch::default();
        let queues = HashMap::from([("slow".to_string(), 1)]);
        d.set_task_limit("a", Some(1), "n", &queues);
        for seq in 0..5 {
            d.ready.push(ready("a", "default", seq));
        }
        d.ready.push(ready("b", "slow", 5));
        d.ready.push(ready("c", "slow", 6));
        assert_eq!(start_all(&mut d, &queues), ["a-0", "b-5"]);
        assert!(d.ready.is_empty(), "held runs are parked, not re-queued");
        assert_eq!(d.queued_runs().count(), 5);

        let run = |id: &str, task: &str, queue: &str| RunRef {
            task_run_id: id.into(),
            execution_id: String::new(),
            task_id: task.into(),
            queue: queue.into(),
            priority: 0,
        };
        d.released(&run("a-0", "a", "default"), &queues);
        assert_eq!(start_all(&mut d, &queues), ["a-1"], "oldest first");
        d.released(&run("b-5", "b", "slow"), &queues);
        assert_eq!(start_all(&mut d, &queues), ["c-6"]);

        // A raised limit lets parked runs go at once.
        d.set_task_limit("a", Some(3), "n", &queues);
        assert_eq!(start_all(&mut d, &queues), ["a-2", "a-3"]);
        d.set_task_limit("a", None, "n", &queues);
        assert_eq!(start_all(&mut d, &queues), ["a-4"]);
        assert_eq!(d.queued_runs().count(), 0);
    }

    #[test]
    fn a_namespace_runs_no_more_than_its_share_and_others_pass_it() {
        let queues = HashMap::new();
        let mut d = Dispatch::default();
        d.set_task_limit("flood", None, "greedy", &queues);
        d.set_task_limit("other", None, "calm", &queues);
        d.set_namespace_limit("greedy", Some(2), &queues);
        for seq in 0..10 {
            d.ready.push(ready("flood", "default", seq));
        }
        d.ready.push(ready("other", "default", 10));
        assert_eq!(
            start_all(&mut d, &queues),
            ["flood-0", "flood-1", "other-10"],
            "the calm namespace's run passes the greedy one's backlog"
        );
        let run = |id: &str| RunRef {
            task_run_id: id.into(),
            execution_id: String::new(),
            task_id: "flood".into(),
            queue: "default".into(),
            priority: 0,
        };
        d.released(&run("flood-0"), &queues);
        assert_eq!(start_all(&mut d, &queues), ["flood-2"]);
        d.set_namespace_limit("greedy", Some(4), &queues);
        assert_eq!(start_all(&mut d, &queues), ["flood-3", "flood-4"]);
        d.set_namespace_limit("greedy", None, &queues);
        assert_eq!(start_all(&mut d, &queues).len(), 5);
        assert_eq!(d.queued_runs().count(), 0);
    }

    #[test]
    fn queued_counts_follow_the_runs() {
        let mut d = Dispatch::default();
        let queues = HashMap::new();
        for (seq, queue) in [(0, "a"), (1, "a"), (2, "b")] {
            let item = ready("t", queue, seq);
            d.queued.insert(item.run.task_run_id.clone());
            *d.queued_by_queue.entry(queue.into()).or_insert(0) += 1;
            d.ready.push(item);
        }
        let counts = |d: &Dispatch| {
            let mut c: Vec<(String, usize)> =
                d.queued_by_queue().map(|(q, n)| (q.clone(), n)).collect();
            c.sort();
            c
        };
        assert_eq!(counts(&d), [("a".into(), 2), ("b".into(), 1)]);
        d.next_startable(&queues);
        d.next_startable(&queues);
        assert_eq!(counts(&d), [("b".into(), 1)]);
    }

    #[test]
    fn ready_work_is_ordered_by_priority_then_age() {
        let item = |priority, seq| Ready {
            priority,
            seq,
            since: std::time::Instant::now(),
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
