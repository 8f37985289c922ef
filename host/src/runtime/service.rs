//! The execution service: turns triggers into durable executions and runs
//! their task runs on the sandbox, bounded by slots and concurrency limits.
//!
//! Owns the dispatcher (an in-memory ready queue, ordered by priority then
//! age, backed by the store so nothing queued is lost), retries with
//! backoff (scheduled durably as `not_before`), control requests (cancel,
//! pause, resume, restart), recovery at start and graceful shutdown. Every
//! state change goes through the store, which checks it against the state
//! machine and commits it before this returns.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::backoff::backoff;
use super::retry::is_retryable;
use crate::model::execution::{Execution, Plugin, Trigger};
use crate::model::now;
use crate::model::state::{ExecutionState, TaskRunState};
use crate::model::task::{Task, TaskBounds, TaskRef, TaskSpec};
use crate::sandbox::component::{LoadError, LoadedAction, digest};
use crate::sandbox::report::{AttemptReport, AttemptStatus, ErrorKind, LogLine};
use crate::sandbox::{
    AttemptSpec, CheckpointSink, Invocation, LogObserver, MediaStore, Quotas, Sandbox,
};
use crate::store::sqlite::unix_ms;
use crate::store::{
    Control, FinishAttempt, NewExecution, NewLog, RunOutcome, Runnable, Store, StoreError,
};

/// Service settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Attempts this host runs at once.
    pub slots: usize,
    /// Per-queue limits on attempts at once (queues not named: no limit but `slots`).
    pub queue_limits: HashMap<String, usize>,
    /// Names this host in leases and in `GET /workers`.
    pub worker_id: String,
    /// How long a running task run's lease lasts without renewal.
    pub lease: Duration,
    /// How long shutdown waits for running attempts.
    pub shutdown_grace: Duration,
    pub bounds: TaskBounds,
    pub quotas: Quotas,
    /// Where uploaded components are kept, by digest.
    pub plugins_dir: PathBuf,
    /// Largest component accepted.
    pub max_plugin_bytes: usize,
}

impl ServiceConfig {
    pub fn new(plugins_dir: PathBuf) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        ServiceConfig {
            slots: 512,
            queue_limits: HashMap::new(),
            worker_id: format!("{host}-{}", std::process::id()),
            lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            bounds: TaskBounds::default(),
            quotas: Quotas::default(),
            plugins_dir,
            max_plugin_bytes: 64 << 20,
        }
    }
}

/// Why a service call failed; the API maps these to statuses.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A transition the state machine forbids.
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    Invalid {
        message: String,
        problems: Vec<String>,
    },
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ServiceError::NotFound(m),
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            StoreError::Forbidden(f) => ServiceError::Forbidden(f.to_string()),
            StoreError::Fenced(m) => ServiceError::Conflict(m),
            StoreError::Internal(m) => ServiceError::Internal(m),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Ready {
    priority: i32,
    seq: u64,
    run: RunRef,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RunRef {
    task_run_id: String,
    execution_id: String,
    task_id: String,
    queue: String,
    priority: i32,
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
struct Dispatch {
    ready: BinaryHeap<Ready>,
    delayed: BinaryHeap<Reverse<(i64, u64, String)>>,
    delayed_items: HashMap<String, Ready>,
    queued: HashSet<String>,
    running_by_task: HashMap<String, usize>,
    running_by_queue: HashMap<String, usize>,
    task_limits: HashMap<String, Option<u32>>,
}

/// A snapshot of this host for `GET /workers`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub slots: usize,
    pub busy: usize,
    pub queues: BTreeMap<String, usize>,
    pub heartbeat: String,
    pub accepting: bool,
}

pub struct Service {
    /// Tasks by the id or name they were looked up with, and loaded actions
    /// by the action they were looked up with: the trigger and attempt hot
    /// paths then read nothing from the store. This host is the only writer
    /// of tasks and plugins (SQLite), and clears these on every change; a
    /// multi-host store must invalidate them across hosts.
    tasks: Mutex<Cache<Task>>,
    actions: Mutex<Cache<Arc<LoadedAction>>>,
    store: Arc<dyn Store>,
    sandbox: Arc<Sandbox>,
    media: Arc<MediaStore>,
    config: ServiceConfig,
    dispatch: Mutex<Dispatch>,
    wake: Notify,
    idle: Notify,
    running: Mutex<HashMap<String, CancellationToken>>,
    busy: AtomicUsize,
    seq: AtomicU64,
    accepting: AtomicBool,
}

impl Service {
    /// Recovers what a previous process left, loads runnable work and
    /// starts the dispatcher and the lease renewer.
    pub async fn start(
        store: Arc<dyn Store>,
        sandbox: Arc<Sandbox>,
        media: Arc<MediaStore>,
        config: ServiceConfig,
    ) -> ServiceResult<Arc<Service>> {
        std::fs::create_dir_all(&config.plugins_dir).map_err(|e| {
            ServiceError::Internal(format!("creating {}: {e}", config.plugins_dir.display()))
        })?;
        let svc = Arc::new(Service {
            tasks: Mutex::new(Cache::default()),
            actions: Mutex::new(Cache::default()),
            store,
            sandbox,
            media,
            config,
            dispatch: Mutex::new(Dispatch::default()),
            wake: Notify::new(),
            idle: Notify::new(),
            running: Mutex::new(HashMap::new()),
            busy: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            accepting: AtomicBool::new(true),
        });
        let rec = svc
            .store
            .recover(unix_ms(), &|spec: &TaskSpec, n: u32| {
                backoff(&spec.retry, n).as_millis() as i64
            })
            .await?;
        if rec.crashed_attempts + rec.killed_executions > 0 {
            tracing::warn!(
                crashed_attempts = rec.crashed_attempts,
                killed_executions = rec.killed_executions,
                "recovered work left by a previous process"
            );
        }
        for task in svc.store.tasks().await? {
            svc.lock_dispatch()
                .task_limits
                .insert(task.id.clone(), task.spec.concurrency);
        }
        for r in svc.store.runnable(1_000_000).await? {
            svc.enqueue(r);
        }
        tokio::spawn(svc.clone().dispatcher());
        tokio::spawn(svc.clone().lease_renewer());
        Ok(svc)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn media_store(&self) -> &Arc<MediaStore> {
        &self.media
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    fn lock_dispatch(&self) -> std::sync::MutexGuard<'_, Dispatch> {
        self.dispatch.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&self, r: Runnable) {
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
            Some(at) if at > unix_ms() => {
                d.delayed.push(Reverse((at, seq, r.task_run_id.clone())));
                d.delayed_items.insert(r.task_run_id, item);
            }
            _ => d.ready.push(item),
        }
        drop(d);
        self.wake.notify_one();
    }

    // ---- plugins and tasks ----

    /// Validates and stores a component; returns the plugin and whether it is new.
    pub async fn add_plugin(
        &self,
        name: &str,
        version: Option<String>,
        bytes: Vec<u8>,
    ) -> ServiceResult<(Plugin, bool)> {
        crate::sandbox::limits::check_name("plugin", name).map_err(|m| ServiceError::Invalid {
            message: m.clone(),
            problems: vec![m],
        })?;
        if bytes.len() > self.config.max_plugin_bytes {
            return Err(ServiceError::Invalid {
                message: "component too large".into(),
                problems: vec![format!(
                    "component is over {} bytes",
                    self.config.max_plugin_bytes
                )],
            });
        }
        let hex = digest(&bytes);
        let sandbox = self.sandbox.clone();
        let size = bytes.len();
        let path = self.config.plugins_dir.join(format!("{hex}.wasm"));
        let checked = tokio::task::spawn_blocking(move || -> Result<(), LoadError> {
            sandbox.load(&bytes)?;
            if !path.exists() {
                std::fs::write(&path, &bytes)
                    .map_err(|e| LoadError(format!("storing the component: {e}")))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
        checked.map_err(|e| ServiceError::Invalid {
            message: "not a component of the ward:action world".into(),
            problems: vec![e.0],
        })?;
        let plugin = Plugin {
            id: format!("sha256:{hex}"),
            name: name.to_string(),
            version,
            size: size as u64,
            created_at: now(),
        };
        let created = self.store.put_plugin(&plugin).await?;
        // A name may now mean a newer component.
        lock(&self.actions).clear();
        let stored = self.store.plugin(&plugin.id).await?.unwrap_or(plugin);
        Ok((stored, created))
    }

    async fn check_task(&self, spec: &TaskSpec) -> ServiceResult<()> {
        let mut problems = spec.problems(&self.config.bounds);
        if !spec.action.trim().is_empty() && self.store.plugin(&spec.action).await?.is_none() {
            problems.push(format!(
                "action {:?} is not a registered plugin (push it first: POST /api/v1/plugins)",
                spec.action
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Invalid {
                message: "invalid task".into(),
                problems,
            })
        }
    }

    pub async fn create_task(&self, spec: TaskSpec) -> ServiceResult<Task> {
        self.check_task(&spec).await?;
        let ts = now();
        let task = Task {
            id: uuid::Uuid::now_v7().to_string(),
            version: 1,
            spec,
            created_at: ts.clone(),
            updated_at: ts,
        };
        self.store.create_task(&task).await?;
        lock(&self.tasks).clear();
        self.lock_dispatch()
            .task_limits
            .insert(task.id.clone(), task.spec.concurrency);
        Ok(task)
    }

    pub async fn update_task(&self, task: &TaskRef, spec: TaskSpec) -> ServiceResult<Task> {
        self.check_task(&spec).await?;
        let task = self.store.update_task(task, &spec).await?;
        lock(&self.tasks).clear();
        self.lock_dispatch()
            .task_limits
            .insert(task.id.clone(), task.spec.concurrency);
        Ok(task)
    }

    pub async fn delete_task(&self, task: &TaskRef) -> ServiceResult<()> {
        self.store.delete_task(task).await?;
        lock(&self.tasks).clear();
        Ok(())
    }

    /// A task by id, or by name in a namespace, from memory when it was
    /// looked up before (keyed by both, so a name in one namespace never
    /// answers for another).
    pub async fn task(&self, task: &TaskRef) -> ServiceResult<Option<Task>> {
        let key = task.to_string();
        let generation = {
            let cache = lock(&self.tasks);
            if let Some(t) = cache.entries.get(&key) {
                return Ok(Some(t.clone()));
            }
            cache.generation
        };
        let found = self.store.task(task).await?;
        if let Some(t) = &found {
            lock(&self.tasks).insert(generation, &key, t.clone());
        }
        Ok(found)
    }

    // ---- executions ----

    /// Creates an execution of `task` and queues it. Returns the execution
    /// and whether it is new (an idempotency key seen before returns the
    /// earlier one).
    pub async fn start_execution(
        &self,
        task: &TaskRef,
        input: Option<Value>,
        labels: BTreeMap<String, String>,
        trigger: Trigger,
        idempotency_key: Option<String>,
    ) -> ServiceResult<(Execution, bool)> {
        let task = self
            .task(task)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no {task}")))?;
        let new = NewExecution {
            id: uuid::Uuid::now_v7().to_string(),
            task_run_id: uuid::Uuid::now_v7().to_string(),
            input: input.unwrap_or_else(|| task.spec.input.clone()),
            trigger,
            labels,
            idempotency_key,
            parent_id: None,
            task,
        };
        let (priority, queue, task_id, run_id) = (
            new.task.spec.priority,
            new.task.spec.queue.clone(),
            new.task.id.clone(),
            new.task_run_id.clone(),
        );
        let (exec, created) = self.store.create_execution(new).await?;
        if created {
            self.enqueue(Runnable {
                task_run_id: run_id,
                execution_id: exec.id.clone(),
                task_id,
                priority,
                queue,
                not_before: None,
            });
        }
        Ok((exec, created))
    }

    /// Cancels, pauses, resumes or restarts an execution.
    pub async fn control(&self, id: &str, control: Control) -> ServiceResult<Execution> {
        let outcome = self.store.control(id, control).await?;
        if !outcome.interrupt.is_empty() {
            let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            for run in &outcome.interrupt {
                if let Some(token) = running.get(run) {
                    token.cancel();
                }
            }
        }
        for r in outcome.runnable {
            self.enqueue(r);
        }
        self.store
            .execution(id, true)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no execution {id}")))
    }

    pub fn worker_info(&self) -> WorkerInfo {
        let d = self.lock_dispatch();
        let mut queues = BTreeMap::new();
        for r in d.ready.iter() {
            *queues.entry(r.run.queue.clone()).or_insert(0) += 1;
        }
        for r in d.delayed_items.values() {
            *queues.entry(r.run.queue.clone()).or_insert(0) += 1;
        }
        WorkerInfo {
            id: self.config.worker_id.clone(),
            host: std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
            slots: self.config.slots,
            busy: self.busy.load(AtomicOrdering::Relaxed),
            queues,
            heartbeat: now(),
            accepting: self.accepting.load(AtomicOrdering::Relaxed),
        }
    }

    /// Stops claiming work and waits up to the grace period for running
    /// attempts; what is still running then is retried at the next start.
    pub async fn shutdown(&self) {
        self.accepting.store(false, AtomicOrdering::SeqCst);
        self.wake.notify_one();
        let deadline = Instant::now() + self.config.shutdown_grace;
        while self.busy.load(AtomicOrdering::SeqCst) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    running = self.busy.load(AtomicOrdering::SeqCst),
                    "grace period over; unfinished attempts will be retried at the next start"
                );
                break;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), self.idle.notified())
                .await;
        }
    }

    // ---- the dispatcher ----

    async fn dispatcher(self: Arc<Self>) {
        loop {
            if !self.accepting.load(AtomicOrdering::SeqCst) {
                return;
            }
            let next_due = self.dispatch_ready();
            let wait = next_due
                .map(|at| Duration::from_millis((at - unix_ms()).clamp(1, 1000) as u64))
                .unwrap_or(Duration::from_secs(1));
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        }
    }

    /// Starts what may start now; returns when the next delayed item is due.
    fn dispatch_ready(self: &Arc<Self>) -> Option<i64> {
        let mut d = self.lock_dispatch();
        let now_ms = unix_ms();
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
    fn requeue(&self, run: RunRef, not_before: i64) {
        self.enqueue(Runnable {
            task_run_id: run.task_run_id,
            execution_id: run.execution_id,
            task_id: run.task_id,
            priority: run.priority,
            queue: run.queue,
            not_before: Some(not_before),
        });
    }

    fn release(&self, run: &RunRef) {
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

    async fn lease_renewer(self: Arc<Self>) {
        let every = self.config.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let until = unix_ms() + self.config.lease.as_millis() as i64;
            if let Err(e) = self.store.renew_leases(&self.config.worker_id, until).await {
                tracing::error!(error = %e, "renewing leases failed");
            }
        }
    }

    async fn action_for(&self, action: &str) -> Result<Arc<LoadedAction>, String> {
        let generation = {
            let cache = lock(&self.actions);
            if let Some(a) = cache.entries.get(action) {
                return Ok(a.clone());
            }
            cache.generation
        };
        let loaded = self.load_action(action).await?;
        lock(&self.actions).insert(generation, action, loaded.clone());
        Ok(loaded)
    }

    async fn load_action(&self, action: &str) -> Result<Arc<LoadedAction>, String> {
        let plugin = self
            .store
            .plugin(action)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("plugin {action:?} is not registered"))?;
        let hex = plugin.id.trim_start_matches("sha256:").to_string();
        if let Some(a) = self.sandbox.loaded(&hex) {
            return Ok(a);
        }
        let sandbox = self.sandbox.clone();
        let path = self.config.plugins_dir.join(format!("{hex}.wasm"));
        tokio::task::spawn_blocking(move || sandbox.load_file(&path).map_err(|e| e.0))
            .await
            .map_err(|e| e.to_string())?
    }

    /// One attempt of a task run, start to finish, then what follows it.
    async fn run_task_run(self: Arc<Self>, run: RunRef) {
        let worker = self.config.worker_id.clone();
        let lease_until = unix_ms() + self.config.lease.as_millis() as i64;
        let started = match self
            .store
            .start_attempt(&run.task_run_id, &worker, lease_until)
            .await
        {
            Ok(s) => s,
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
            Err(e) => {
                // Still runnable in the store: try again shortly rather than
                // leave it stranded until the next start.
                tracing::error!(task_run = %run.task_run_id, error = %e, "starting an attempt failed; retrying in 1 s");
                self.release(&run);
                self.requeue(run, unix_ms() + 1_000);
                return;
            }
        };
        let cancel = CancellationToken::new();
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.task_run_id.clone(), cancel.clone());

        let report = match self.action_for(&started.spec.action).await {
            Err(message) => {
                AttemptReport::failed_before_start(started.number, ErrorKind::LoadFailed, message)
            }
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
                match started.spec.limits(&self.config.bounds) {
                    Ok(l) => spec.limits = l,
                    Err(e) => {
                        tracing::warn!(error = %e, "task limits out of bounds; using defaults")
                    }
                }
                spec.quotas = self.config.quotas;
                spec.variables = started.spec.grants.variables.clone();
                spec.scratch = started.spec.grants.scratch;
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
        };
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&run.task_run_id);

        let outcome = match (report.status, report.error_kind()) {
            (AttemptStatus::Success, _) => RunOutcome::Final(TaskRunState::Success),
            (AttemptStatus::Warning, _) => RunOutcome::Final(TaskRunState::Warning),
            (AttemptStatus::Killed, _) => RunOutcome::Final(TaskRunState::Killed),
            (_, Some(kind)) if is_retryable(kind) && started.number < started.max_attempts => {
                RunOutcome::Retry {
                    not_before: unix_ms()
                        + backoff(&started.spec.retry, started.number).as_millis() as i64,
                }
            }
            _ => RunOutcome::Final(TaskRunState::Failed),
        };
        let finish = FinishAttempt {
            attempt_id: started.attempt_id.clone(),
            task_run_id: run.task_run_id.clone(),
            execution_id: run.execution_id.clone(),
            worker,
            fence: started.fence,
            report,
            outcome,
        };
        match self.store.finish_attempt(finish).await {
            Ok(state) => {
                if let RunOutcome::Retry { not_before } = outcome
                    && state != ExecutionState::Killed
                {
                    self.release(&run);
                    self.requeue(run, not_before);
                    return;
                }
            }
            Err(e) => {
                tracing::error!(task_run = %run.task_run_id, error = %e, "recording an attempt failed")
            }
        }
        self.release(&run);
    }
}

/// Lookups remembered until the next change. The generation makes a lookup
/// that raced with a change drop its (possibly stale) result.
struct Cache<T> {
    entries: HashMap<String, T>,
    generation: u64,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            entries: HashMap::new(),
            generation: 0,
        }
    }
}

impl<T> Cache<T> {
    fn insert(&mut self, read_at: u64, key: &str, value: T) {
        if read_at == self.generation {
            self.entries.insert(key.to_string(), value);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.generation += 1;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_that_raced_with_a_change_is_not_remembered() {
        let mut c: Cache<u32> = Cache::default();
        let read_at = c.generation;
        c.clear(); // a task changed while the lookup was reading the store
        c.insert(read_at, "t", 1);
        assert!(c.entries.is_empty());
        c.insert(c.generation, "t", 2);
        assert_eq!(c.entries["t"], 2);
    }

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
