//! The execution service: the runtime's front door. Turns triggers into
//! durable executions, carries out control requests (cancel, pause, resume,
//! restart) and shuts down gracefully; owns the `Service` that the other
//! runtime modules extend: `catalog` (plugins and tasks), `dispatch` (the
//! ready queue), `worker` (one attempt), `leases` (recovery and leases).
//!
//! Every state change is an event the store plans (`model::plan`) and
//! commits before this returns; the service only acts on the plan's timers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::catalog::{Cache, lock};
use super::dispatch::Dispatch;
use crate::model::clock::{self, Clock};
use crate::model::execution::{Execution, Trigger};
use crate::model::now;
use crate::model::state::TaskRunState;
use crate::model::task::{Task, TaskRef};
use crate::sandbox::component::LoadedAction;
use crate::sandbox::{MediaStore, Sandbox};
use crate::store::{Control, NewExecution, PlanOutcome, Runnable, Store, StoreError};

pub use super::error::{ServiceError, ServiceResult};

pub use super::config::ServiceConfig;

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
    pub(super) tasks: Mutex<Cache<Task>>,
    pub(super) actions: Mutex<Cache<Arc<LoadedAction>>>,
    pub(super) store: Arc<dyn Store>,
    pub(super) sandbox: Arc<Sandbox>,
    pub(super) media: Arc<MediaStore>,
    pub(super) config: ServiceConfig,
    pub(super) dispatch: Mutex<Dispatch>,
    pub(super) wake: Notify,
    pub(super) idle: Notify,
    pub(super) running: Mutex<HashMap<String, CancellationToken>>,
    pub(super) busy: AtomicUsize,
    pub(super) seq: AtomicU64,
    pub(super) accepting: AtomicBool,
    /// Set when the shutdown grace ran out: attempts interrupted now are
    /// reported as the host's shutdown, not as the guest's end.
    pub(super) stopping: AtomicBool,
    /// Cancelled when shutdown has finished with the attempts: followers
    /// and waiting callers are then let go.
    pub(super) closing: CancellationToken,
    pub(super) clock: Arc<dyn Clock>,
    /// Told when tasks or schedules change: the scheduler looks again.
    pub(super) schedules_changed: Notify,
    /// Seals secret task variables before they are stored.
    pub(super) secrets: super::secrets::SecretBox,
    /// Tokens, namespaces' limits and trigger buckets.
    pub(super) access: super::access::Access,
    /// The last analytics answered, with its filter and when: a page
    /// reloading its overview reads 100,000 rows once, not each time.
    pub(super) analytics_cache:
        Mutex<Option<(String, Instant, crate::model::analytics::Analytics)>>,
}

/// What a trigger asks for; every field may be left at its default.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// The input; the task's own `input` when absent.
    pub input: Option<Value>,
    pub labels: BTreeMap<String, String>,
    pub trigger: Trigger,
    pub idempotency_key: Option<String>,
    /// Overrides of the task's declared variables.
    pub variables: serde_json::Map<String, Value>,
    /// The tick of a scheduled execution (RFC 3339).
    pub scheduled_at: Option<String>,
    /// The execution that started this one (a flow's subflow step).
    pub parent_id: Option<String>,
    /// The API token that asked for it, recorded in its CREATED event.
    pub token_id: Option<String>,
}

/// Whether a new execution starts with a flow step that makes several task
/// runs (`parallel`, `for_each`), planned when it is stored.
fn starts_with_many(new: &NewExecution) -> bool {
    let spec = &new.task.spec;
    let step = new
        .replay
        .as_ref()
        .and_then(|r| r.from_step.as_deref())
        .unwrap_or(spec.first_step());
    spec.step(step)
        .is_some_and(|s| s.for_each.is_some() || s.parallel.is_some())
}

/// The task run a new execution starts with, as the dispatcher queues it.
fn first_run(new: &NewExecution) -> Runnable {
    Runnable {
        task_run_id: new.task_run_id.clone(),
        execution_id: new.id.clone(),
        task_id: new.task.id.clone(),
        priority: new.task.spec.priority,
        queue: new.task.spec.queue.clone(),
        not_before: None,
    }
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
        Self::start_with_clock(store, sandbox, media, config, clock::system()).await
    }

    /// Like [`start`](Self::start), with time from `clock` (the store's).
    pub async fn start_with_clock(
        store: Arc<dyn Store>,
        sandbox: Arc<Sandbox>,
        media: Arc<MediaStore>,
        config: ServiceConfig,
        clock: Arc<dyn Clock>,
    ) -> ServiceResult<Arc<Service>> {
        std::fs::create_dir_all(&config.plugins_dir).map_err(|source| ServiceError::Io {
            context: format!("creating {}", config.plugins_dir.display()),
            source,
        })?;
        let secrets =
            super::secrets::SecretBox::open_or_create(&config.secret_key).map_err(|source| {
                ServiceError::Io {
                    context: format!("opening the secret key {}", config.secret_key.display()),
                    source,
                }
            })?;
        let svc = Arc::new(Service {
            secrets,
            access: Default::default(),
            analytics_cache: Mutex::new(None),
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
            stopping: AtomicBool::new(false),
            closing: CancellationToken::new(),
            clock,
            schedules_changed: Notify::new(),
        });
        if crate::traces::enabled() {
            // From before recovery: executions it ends get their spans.
            let after = svc.newest_event_id().await?;
            tokio::spawn(svc.clone().trace_ended_executions(after));
        }
        svc.load_namespace_limits().await?;
        svc.recover().await?;
        tokio::spawn(svc.clone().dispatcher());
        tokio::spawn(svc.clone().scheduler());
        tokio::spawn(svc.clone().lease_renewer());
        Ok(svc)
    }

    /// The store itself, for tests that set up rows directly; everything
    /// else reads through the runtime (`reads.rs`).
    #[cfg(test)]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A signature for a link to media `id` that expires at `expires` (unix
    /// seconds).
    pub fn sign_media_link(&self, id: &str, expires: u64) -> String {
        self.secrets.sign_link(id, expires)
    }

    /// Whether a link's signature is this host's and it has not expired.
    pub fn media_link_valid(&self, id: &str, expires: u64, signature: &str) -> bool {
        let now = self.clock.now_ms() / 1000;
        expires > now as u64 && self.secrets.link_signed(id, expires, signature)
    }

    pub fn media_store(&self) -> &Arc<MediaStore> {
        &self.media
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Creates an execution of `task` and queues it. Returns the execution
    /// and whether it is new (an idempotency key seen before returns the
    /// earlier one).
    pub async fn start_execution(
        &self,
        task: &TaskRef,
        request: StartRequest,
    ) -> ServiceResult<(Execution, bool)> {
        let new = self.new_execution(task, request).await?;
        self.create(new).await
    }

    /// Like [`start_execution`](Self::start_execution), then waits up to
    /// `limit` for the execution to end (see [`wait_for_end`](Self::wait_for_end)).
    pub async fn start_execution_and_wait(
        &self,
        task: &TaskRef,
        request: StartRequest,
        limit: Duration,
    ) -> ServiceResult<(Execution, bool)> {
        let keyed = request.idempotency_key.is_some();
        let new = self.new_execution(task, request).await?;
        // Its first task runs are planned as it is stored: it is created
        // with its commit, as a keyed one is.
        let keyed = keyed || starts_with_many(&new);
        // Subscribed before the execution exists: nothing to read back.
        let changes = self.store.changes().follow(&new.id);
        if keyed {
            let (exec, created) = self.create(new).await?;
            let exec = if created {
                self.wait_on(changes, exec, false, limit).await?
            } else {
                drop(changes);
                let id = exec.id.clone();
                self.wait_for_end(&id, false, limit).await?.unwrap_or(exec)
            };
            return Ok((exec, created));
        }
        // Nobody hears of it before its end commits (or the wait runs out,
        // which reads it back committed): its attempt need not wait for
        // the creation's commit, only queue behind it.
        let run = first_run(&new);
        let exec = self.store.create_execution_early(new).await?;
        self.enqueue(run);
        let id = exec.id.clone();
        match self.wait_on(changes, exec, false, limit).await {
            Ok(exec) => Ok((exec, true)),
            // Read back before its creation committed (a wait shorter than
            // a commit): once the commit is through it is there, or the
            // store failed.
            Err(ServiceError::NotFound(_)) => {
                self.store.barrier().await?;
                match self.store.execution(&id, false).await? {
                    Some(exec) => Ok((exec, true)),
                    None => Err(ServiceError::Store(StoreError::Unavailable(
                        "the new execution was not committed".into(),
                    ))),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn new_execution(
        &self,
        task: &TaskRef,
        request: StartRequest,
    ) -> ServiceResult<NewExecution> {
        let StartRequest {
            input,
            labels,
            trigger,
            idempotency_key,
            variables,
            scheduled_at,
            parent_id,
            token_id,
        } = request;
        let task = self
            .task(task)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no {task}")))?;
        let problems = crate::model::limits::label_problems(&labels);
        if !problems.is_empty() {
            return Err(ServiceError::Invalid {
                message: "invalid labels".into(),
                problems,
            });
        }
        let mut vars = task.spec.variables.clone();
        let unknown: Vec<String> = variables
            .keys()
            .filter(|k| !vars.contains_key(*k))
            .map(|k| format!("variable {k:?} is not declared by the task"))
            .collect();
        if !unknown.is_empty() {
            return Err(ServiceError::Invalid {
                message: "unknown variables".into(),
                problems: unknown,
            });
        }
        vars.extend(variables);
        let input = input.unwrap_or_else(|| task.spec.input.clone());
        if let Some(problem) = crate::model::limits::input_problem("the input", &input) {
            return Err(ServiceError::Invalid {
                message: "input too large".into(),
                problems: vec![problem],
            });
        }
        if let Some(schema) = &task.spec.input_schema {
            let problems = crate::model::schema::violations(schema, &input);
            if !problems.is_empty() {
                return Err(ServiceError::Invalid {
                    message: "the input does not match the task's input_schema".into(),
                    problems,
                });
            }
        }
        Ok(NewExecution {
            variables: vars,
            scheduled_at,
            replay: None,
            id: uuid::Uuid::now_v7().to_string(),
            task_run_id: uuid::Uuid::now_v7().to_string(),
            input,
            trigger,
            labels,
            idempotency_key,
            parent_id,
            task,
            token_id,
        })
    }

    /// Stores a new execution and queues its task run (a flow that starts
    /// with a parallel or for_each step: the task runs its start made).
    async fn create(&self, new: NewExecution) -> ServiceResult<(Execution, bool)> {
        let run = first_run(&new);
        let planned = starts_with_many(&new);
        let (exec, created) = self.store.create_execution(new).await?;
        if created && !planned {
            self.enqueue(run);
        } else if created {
            let runs = self
                .store
                .execution(&exec.id, true)
                .await?
                .and_then(|e| e.task_runs)
                .unwrap_or_default();
            for r in runs.iter().filter(|r| r.state == TaskRunState::Created) {
                self.enqueue(Runnable {
                    task_run_id: r.id.clone(),
                    ..run.clone()
                });
            }
        }
        Ok((exec, created))
    }

    /// Starts a new execution of `id`'s task version with its input and
    /// the variables it started with, linked to it (`replay_of`). From
    /// `from_step` (a flow's step), the steps before it are not run again:
    /// their task runs are copied as they ended, outputs included, and the
    /// variables they saved applied.
    pub async fn replay(
        &self,
        id: &str,
        from_step: Option<String>,
        token_id: Option<String>,
    ) -> ServiceResult<Execution> {
        let original = self
            .store
            .execution(id, true)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no execution {id}")))?;
        let spec = self
            .store
            .task_version(&original.task_id, original.task_version)
            .await?
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "version {} of task {} is not stored",
                    original.task_version, original.task_id
                ))
            })?;
        let invalid = |problem: String| ServiceError::Invalid {
            message: "cannot replay from that step".into(),
            problems: vec![problem],
        };
        let mut copied = Vec::new();
        if let Some(step) = &from_step {
            let Some(at) = spec.steps.iter().position(|s| &s.name == step) else {
                return Err(invalid(format!(
                    "{step:?} is not a step of version {} of the task",
                    original.task_version
                )));
            };
            let runs = original.task_runs.clone().unwrap_or_default();
            for earlier in &spec.steps[..at] {
                // A step's task run, or every item's of a for_each.
                let names: Vec<&str> = match &earlier.parallel {
                    Some(children) => children.iter().map(|c| c.name.as_str()).collect(),
                    None => vec![earlier.name.as_str()],
                };
                let of_step: Vec<&crate::model::execution::TaskRun> = runs
                    .iter()
                    .filter(|r| names.contains(&r.step.as_str()))
                    .collect();
                let finished = !of_step.is_empty()
                    && of_step.iter().all(|r| match r.state {
                        TaskRunState::Success | TaskRunState::Warning | TaskRunState::Skipped => {
                            true
                        }
                        TaskRunState::Failed => earlier.runnable().allow_failure,
                        _ => false,
                    });
                if !finished {
                    return Err(invalid(format!(
                        "step {} did not finish in execution {id}: replay from it or an earlier step",
                        earlier.name
                    )));
                }
                for run in of_step {
                    copied.push(crate::store::CopiedRun {
                        id: uuid::Uuid::now_v7().to_string(),
                        step: run.step.clone(),
                        item: run
                            .index
                            .map(|i| (i, run.item.clone().unwrap_or(Value::Null))),
                        state: run.state,
                        input: run.input.clone(),
                        output: run.output.clone(),
                    });
                }
            }
        }
        let initial = original
            .initial_variables
            .clone()
            .unwrap_or_else(|| spec.variables.clone());
        let ended: Vec<(String, &str, Option<Value>)> = copied
            .iter()
            .map(|r| (r.step.clone(), r.state.as_str(), r.output.clone()))
            .collect();
        let variables =
            crate::model::flow::replay_variables(&spec.steps, &original.input, &initial, &ended)
                .map_err(|e| invalid(e.to_string()))?;
        let task = Task {
            id: original.task_id.clone(),
            version: original.task_version,
            spec,
            created_at: String::new(),
            updated_at: String::new(),
            schedule_state: None,
        };
        let new = NewExecution {
            id: uuid::Uuid::now_v7().to_string(),
            task,
            task_run_id: uuid::Uuid::now_v7().to_string(),
            trigger: Trigger::Http,
            input: original.input.clone(),
            labels: original.labels.clone(),
            idempotency_key: None,
            parent_id: None,
            variables,
            scheduled_at: None,
            token_id,
            replay: Some(crate::store::Replay {
                of: original.id.clone(),
                from_step,
                copied,
            }),
        };
        Ok(self.create(new).await?.0)
    }

    /// Records a webhook request's signature for `task_id`; false when it
    /// was seen before (a replay). Kept as long as its timestamp could
    /// still pass, then forgotten.
    pub async fn accept_webhook_signature(
        &self,
        task_id: &str,
        signature: &str,
    ) -> ServiceResult<bool> {
        let now = self.clock.now_ms();
        let keep_ms = 2 * crate::model::webhook::TOLERANCE_SECS * 1000;
        Ok(self
            .store
            .claim_signature(task_id, signature, now, now + keep_ms)
            .await?)
    }

    /// Forgets a signature accepted for a request that created nothing.
    pub async fn release_webhook_signature(&self, task_id: &str, signature: &str) {
        if let Err(e) = self.store.release_signature(task_id, signature).await {
            tracing::warn!(task = %task_id, error = %e, "a webhook signature could not be released");
        }
    }

    /// Seconds since the Unix epoch, by this service's clock.
    pub fn now_secs(&self) -> i64 {
        self.clock.now_ms().div_euclid(1000)
    }

    /// Cancels, pauses, resumes or restarts an execution. Answers with the
    /// execution in the state this call's own plan produced, even if
    /// another change followed before it was read back.
    pub async fn control(&self, id: &str, control: Control) -> ServiceResult<Execution> {
        self.control_by(id, control, None).await
    }

    /// [`control`](Self::control) asked by the token `by`, which the
    /// execution's `control` event records.
    pub async fn control_by(
        &self,
        id: &str,
        control: Control,
        by: Option<&str>,
    ) -> ServiceResult<Execution> {
        let outcome = self.store.control_by(id, control, by).await?;
        self.act_on(&outcome);
        let mut exec = self
            .store
            .execution(id, true)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no execution {id}")))?;
        exec.state = outcome.state;
        Ok(exec)
    }

    /// Carries out an applied plan's timers: interrupts and queued runs.
    pub(super) fn act_on(&self, outcome: &PlanOutcome) {
        if !outcome.interrupt.is_empty() {
            let running = lock(&self.running);
            for run in &outcome.interrupt {
                if let Some(token) = running.get(run) {
                    token.cancel();
                }
            }
        }
        for r in &outcome.runnable {
            self.enqueue(r.clone());
        }
    }

    pub fn worker_info(&self) -> WorkerInfo {
        let d = self.lock_dispatch();
        let mut queues = BTreeMap::new();
        for (queue, n) in d.queued_by_queue() {
            queues.insert(queue.clone(), n);
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
    /// attempts. Those still running then are interrupted and recorded as
    /// stopped by the shutdown: due again at once at the next start, without
    /// using up one of their attempts. What cannot be recorded in time is
    /// closed by recovery at the next start. Then followers and waiting
    /// callers are let go (they got every end that happened meanwhile).
    pub async fn shutdown(&self) {
        self.accepting.store(false, AtomicOrdering::SeqCst);
        self.wake.notify_one();
        if !self.wait_idle(self.config.shutdown_grace).await {
            tracing::warn!(
                running = self.busy.load(AtomicOrdering::SeqCst),
                "grace period over; interrupting unfinished attempts, which run again at the next start"
            );
            self.stopping.store(true, AtomicOrdering::SeqCst);
            for token in lock(&self.running).values() {
                token.cancel();
            }
            self.wait_idle(Duration::from_secs(5)).await;
        }
        self.closing.cancel();
    }

    /// Waits up to `limit` for every attempt to end; whether they did.
    async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            // Registered before the check, so a release in between wakes us.
            let idle = self.idle.notified();
            if self.busy.load(AtomicOrdering::SeqCst) == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = tokio::time::timeout(left, idle).await;
        }
    }
}
