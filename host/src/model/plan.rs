//! The transition planner: the one place that decides what follows what.
//!
//! [`plan`] takes a [`Snapshot`] of an execution (its state, its task runs'
//! states, attempts made, fencing tokens, retry policy) and one [`Event`]
//! (claim, attempt finished, host lost, shutdown, cancel, pause, resume,
//! restart) and returns either the complete [`Plan`] — every execution,
//! task-run and attempt transition, the events to record and the timers to
//! set — or a [`Refusal`], before anything is written. A store applies a
//! plan inside one transaction and re-checks only what concurrency can
//! change (the snapshot it read must still be current); the runtime acts
//! on the plan's timers. Neither holds a transition rule of its own.
//!
//! Every edge a plan contains is checked against `model::state`, the table
//! of allowed edges; this module composes them into whole, consistent
//! steps. Pure: time and randomness come in with the event.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::flow;
use super::flow::StepSpec;
use super::report::{AttemptError, AttemptStatus, ErrorKind};
use super::retry::{backoff_ms, is_retryable};
use super::state::{self, ExecutionState, Forbidden, TaskRunState};
use super::task::{RetryPolicy, TaskSpec};

/// What the planner needs to know of an execution, read in the same
/// transaction that will apply the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub execution_id: String,
    pub state: ExecutionState,
    /// The retry policy of the execution's task version.
    pub retry: RetryPolicy,
    pub runs: Vec<RunSnapshot>,
    /// Set when the task is a flow of steps.
    pub flow: Option<FlowSnapshot>,
}

/// A JSON value as stored, parsed the first time it is read: a plan reads
/// only the outputs its templates need, not every task run's.
#[derive(Debug, Clone)]
pub struct Stored {
    text: Option<String>,
    value: std::sync::OnceLock<Value>,
}

impl Stored {
    /// JSON text from the store (read as `null` if it is not JSON).
    pub fn text(text: String) -> Stored {
        Stored {
            text: Some(text),
            value: std::sync::OnceLock::new(),
        }
    }

    pub fn get(&self) -> &Value {
        self.value.get_or_init(|| {
            self.text
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(Value::Null)
        })
    }
}

impl From<Value> for Stored {
    fn from(v: Value) -> Stored {
        Stored {
            text: None,
            value: std::sync::OnceLock::from(v),
        }
    }
}

impl PartialEq for Stored {
    fn eq(&self, other: &Stored) -> bool {
        self.get() == other.get()
    }
}

/// What planning a flow needs beyond its task runs' states.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowSnapshot {
    /// The execution's task version.
    pub spec: Arc<TaskSpec>,
    /// The execution's input (`inputs` in templates), parsed if read.
    pub input: Stored,
    /// The execution's variables now (`vars`).
    pub vars: Map<String, Value>,
    /// What each task run's successful attempt produced, by task run id:
    /// `{"outputs": {…}, "result": …}` (`steps.NAME.…`).
    pub produced: BTreeMap<String, Stored>,
    /// The item of each `for_each` item's task run, by task run id.
    pub items: BTreeMap<String, Stored>,
    /// Ids for the task runs this plan may create, taken in order.
    pub new_ids: Vec<String>,
    /// Set when the store left out the task runs that succeeded as
    /// `for_each` items (all but the event's own), so that an item's
    /// events read the items still running, not all of them. A plan that
    /// needs what they produced is refused as [`Refusal::Incomplete`], to
    /// be planned again on every task run.
    pub left_out: Option<LeftOut>,
    /// The latest `for_each` step's items as rendered when it started, from
    /// the first not started yet; `None`: rendered again from its template.
    pub items_ahead: Option<ItemsAhead>,
}

/// What a snapshot without the succeeded `for_each` items still says of them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LeftOut {
    /// The event's task run's `for_each` step (when it is an item's) and
    /// how many of its task runs that succeeded were left out.
    pub runs: Option<(String, u32)>,
    /// How many of that step's items that have not ended (waiting or
    /// running, the event's own excepted) were left out, counted only: a
    /// plan that must move them is refused as incomplete.
    pub live: u32,
    /// A step whose left-out items were not counted (a claim's): a plan
    /// that needs the counts is refused as incomplete.
    pub uncounted: Option<String>,
}

/// Items of a `for_each` step not started yet.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemsAhead {
    pub step: String,
    /// How many items the step has in all.
    pub total: u32,
    /// The next items by index, from the first not started (at most the
    /// step's concurrency of them).
    pub next: Vec<(u32, Stored)>,
}

/// One task run as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSnapshot {
    pub id: String,
    /// The step it runs (`main` for a one-action task).
    pub step: String,
    /// Its item's index, for a `for_each` step's task run.
    pub item: Option<u32>,
    pub state: TaskRunState,
    /// Attempts started so far: the last attempt's number.
    pub attempts: u32,
    pub max_attempts: u32,
    /// Bumped at every claim; a finish must carry the current one.
    pub fence: i64,
    /// The worker running it (while `RUNNING`).
    pub owner: Option<String>,
    /// Unix ms before which no attempt may start (while `RETRYING`).
    pub not_before: Option<i64>,
}

/// Something that happened to an execution.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A worker wants to start the next attempt of a task run (its first,
    /// or a retry whose backoff is due).
    Claim {
        run: String,
        worker: String,
        now_ms: i64,
    },
    /// An attempt ended on the worker that owns it.
    AttemptFinished {
        run: String,
        worker: String,
        fence: i64,
        status: AttemptStatus,
        error: Option<ErrorKind>,
        now_ms: i64,
        /// In `[-1, 1]`, drawn by the caller (see `retry::backoff_ms`).
        jitter: f64,
    },
    /// The host running an attempt died or lost its lease: the attempt
    /// fails with `host_crash` and is retried under the policy.
    HostLost {
        run: String,
        now_ms: i64,
        jitter: f64,
    },
    /// The owning host stopped the attempt because it is shutting down: it
    /// was not the guest's fault, so the task run is due again at once and
    /// the attempt does not count against `max_attempts`.
    Shutdown {
        run: String,
        worker: String,
        fence: i64,
        now_ms: i64,
    },
    Cancel,
    Pause,
    Resume,
    Restart,
    /// A new flow whose first step is `parallel` or `for_each` starts it
    /// (the store creates a plain first step's task run itself).
    Begin,
}

/// A change of one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition<S> {
    pub from: S,
    pub to: S,
}

/// Who holds a task run after the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// Taken by `worker` under a new fencing token.
    Take { worker: String, fence: i64 },
    /// Given up: nobody runs it.
    Release,
}

/// One task run's change.
#[derive(Debug, Clone, PartialEq)]
pub struct RunChange {
    pub run: String,
    pub from: TaskRunState,
    pub to: TaskRunState,
    pub lease: Lease,
    /// The new `not_before` (only `RETRYING` has one; every other state clears it).
    pub not_before: Option<i64>,
    /// Attempts started, after the plan.
    pub attempts: u32,
    /// The largest attempt count after the plan (a shutdown gives back the
    /// attempt it interrupted).
    pub max_attempts: u32,
}

/// What happens to an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptChange {
    /// A new attempt `number` of `run` starts under `fence`.
    Start {
        run: String,
        number: u32,
        fence: i64,
        worker: String,
    },
    /// Attempt `number` of `run` ends with `status`. `error` is set when the
    /// planner, not the guest, decided how it ended (a lost host, a shutdown).
    Finish {
        run: String,
        number: u32,
        status: AttemptStatus,
        error: Option<AttemptError>,
    },
}

/// The kinds of recorded events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    ExecutionState,
    TaskRunState,
    AttemptStarted,
    AttemptFinished,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ExecutionState => "execution.state",
            EventKind::TaskRunState => "task_run.state",
            EventKind::AttemptStarted => "attempt.started",
            EventKind::AttemptFinished => "attempt.finished",
        }
    }
}

/// An event to record, in the order the plan lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedEvent {
    pub kind: EventKind,
    pub from: Option<&'static str>,
    pub to: Option<&'static str>,
    pub detail: Value,
}

/// What the runtime must do once the plan is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// Queue `run` for an attempt at `not_before` (unix ms; `None`: now).
    Runnable {
        run: String,
        not_before: Option<i64>,
    },
    /// Interrupt the running attempt of `run`.
    Interrupt { run: String },
}

/// A flow's task run created by the plan: a step's, or one item's of a
/// `for_each` step.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub id: String,
    pub step: String,
    pub max_attempts: u32,
    /// `CREATED`, or already ended: `SKIPPED` (its `if` was false) or
    /// `SUCCESS` (a `for_each` over no items), with no attempt.
    pub state: TaskRunState,
    /// A `for_each` item: its index and value.
    pub item: Option<(u32, Value)>,
    /// What it produced, for one that ended at once.
    pub output: Option<Value>,
}

/// Everything one event changes, decided before anything is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub execution: Option<Transition<ExecutionState>>,
    pub runs: Vec<RunChange>,
    pub attempt: Option<AttemptChange>,
    pub events: Vec<PlannedEvent>,
    pub timers: Vec<Timer>,
    /// The execution's state once the plan is applied.
    pub state: ExecutionState,
    /// A flow's task runs created by this plan (its next step's, or more
    /// `for_each` items').
    pub new_runs: Vec<NewRun>,
    /// The input of the attempt this plan starts, rendered (flow steps).
    pub input: Option<Value>,
    /// The execution's variables after the plan, when a step's `save`
    /// changed them.
    pub vars: Option<Map<String, Value>>,
    /// The execution's outputs rendered from the task's `outputs`, when
    /// the flow ends.
    pub outputs: Option<BTreeMap<String, Value>>,
    /// Why a task run failed without its attempt failing (a template), by
    /// task run: also the execution's error when it ends by it.
    pub run_error: Option<(String, AttemptError)>,
    /// Rows the flow's successful end adds to the task's dataset.
    pub dataset: Option<Vec<Map<String, Value>>>,
    /// A `for_each` step that started: its items as rendered, kept for
    /// the items started later ([`FlowSnapshot::items_ahead`]).
    pub items: Option<(String, Vec<Value>)>,
    /// Why the flow failed after its last step (its `outputs` or dataset).
    pub execution_error: Option<AttemptError>,
}

/// Why an event changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The state machine has no such edge (e.g. pausing a finished execution).
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// A finish, claim or checkpoint from a worker that no longer owns the
    /// task run (its fencing token moved on).
    #[error("stale: {0}")]
    Stale(String),
    /// The task run's backoff has not run out.
    #[error("task run {run} is not due before {not_before} (unix ms)")]
    NotDue { run: String, not_before: i64 },
    /// The snapshot left out task runs this plan needs (see
    /// [`FlowSnapshot::left_out`]): plan again with all of them.
    #[error("the snapshot left out task runs this plan reads")]
    Incomplete,
    /// The execution has no such task run.
    #[error("no task run {0} in this execution")]
    UnknownRun(String),
}

impl Refusal {
    fn forbidden(from: impl ToString, to: impl ToString) -> Refusal {
        Refusal::Forbidden(Forbidden {
            from: from.to_string(),
            to: to.to_string(),
        })
    }
}

/// The initial states of a new execution and its task runs, and the event
/// that records its creation.
pub fn trigger(trigger: &str) -> (ExecutionState, TaskRunState, PlannedEvent) {
    (
        ExecutionState::Created,
        TaskRunState::Created,
        PlannedEvent {
            kind: EventKind::ExecutionState,
            from: None,
            to: Some(ExecutionState::Created.as_str()),
            detail: json!({ "trigger": trigger }),
        },
    )
}

/// Decides what `event` does to the execution in `snap`.
pub fn plan(snap: &Snapshot, event: &Event) -> Result<Plan, Refusal> {
    let mut b = Builder::new(snap);
    let planned = b.plan(event);
    // Whatever was decided on a context without the task runs it needed.
    if b.incomplete.get() {
        return Err(Refusal::Incomplete);
    }
    planned.map(|()| b.build())
}

impl Builder<'_> {
    fn plan(&mut self, event: &Event) -> Result<(), Refusal> {
        let b = self;
        match event {
            Event::Claim {
                run,
                worker,
                now_ms,
            } => b.claim(run, worker, *now_ms)?,
            Event::AttemptFinished {
                run,
                worker,
                fence,
                status,
                error,
                now_ms,
                jitter,
            } => {
                let r = b.owned_run(run, worker, *fence)?;
                b.finish(r, *status, *error, None, *now_ms, *jitter)?;
            }
            Event::HostLost {
                run,
                now_ms,
                jitter,
            } => {
                let r = b.run_index(run)?;
                if b.runs[r].state != TaskRunState::Running {
                    return Err(Refusal::Stale(format!("task run {run} is not running")));
                }
                let error = AttemptError {
                    kind: ErrorKind::HostCrash,
                    message: "the host running this attempt stopped before it finished".into(),
                };
                b.finish(
                    r,
                    AttemptStatus::Failed,
                    Some(ErrorKind::HostCrash),
                    Some(error),
                    *now_ms,
                    *jitter,
                )?;
            }
            Event::Shutdown {
                run,
                worker,
                fence,
                now_ms,
            } => {
                let r = b.owned_run(run, worker, *fence)?;
                b.shutdown(r, *now_ms)?;
            }
            Event::Cancel => b.cancel()?,
            Event::Pause => b.pause()?,
            Event::Resume => b.resume()?,
            Event::Restart => b.restart()?,
            Event::Begin => {
                if b.snap.flow.is_none() || b.state != ExecutionState::Created {
                    return Err(Refusal::forbidden(
                        b.state,
                        "RUNNING (a new flow's first step)",
                    ));
                }
                b.move_execution(ExecutionState::Running, json!({}))?;
                b.advance(json!({}))?;
            }
        }
        Ok(())
    }
}

/// An `if` or `items` expression as a template, for what it reads.
fn expression(expr: &str) -> Value {
    if expr.contains("{{") {
        Value::String(expr.to_string())
    } else {
        Value::String(format!("{{{{ {expr} }}}}"))
    }
}

/// Accumulates a plan over a working copy of the snapshot.
struct Builder<'a> {
    snap: &'a Snapshot,
    state: ExecutionState,
    runs: Vec<RunSnapshot>,
    changes: Vec<RunChange>,
    attempt: Option<AttemptChange>,
    events: Vec<PlannedEvent>,
    timers: Vec<Timer>,
    new_runs: Vec<NewRun>,
    input: Option<Value>,
    vars: Option<Map<String, Value>>,
    outputs: Option<BTreeMap<String, Value>>,
    run_error: Option<(String, AttemptError)>,
    dataset: Option<Vec<Map<String, Value>>>,
    execution_error: Option<AttemptError>,
    /// Kept as rendered by any query of them (a restart's too).
    items: std::cell::RefCell<Option<(String, Vec<Value>)>>,
    /// Set when a template needed task runs the snapshot left out.
    incomplete: std::cell::Cell<bool>,
}

impl<'a> Builder<'a> {
    fn new(snap: &'a Snapshot) -> Self {
        Builder {
            snap,
            state: snap.state,
            runs: snap.runs.clone(),
            changes: Vec::new(),
            attempt: None,
            events: Vec::new(),
            timers: Vec::new(),
            new_runs: Vec::new(),
            input: None,
            vars: None,
            outputs: None,
            run_error: None,
            dataset: None,
            execution_error: None,
            items: std::cell::RefCell::new(None),
            incomplete: std::cell::Cell::new(false),
        }
    }

    fn build(self) -> Plan {
        let execution = (self.state != self.snap.state).then_some(Transition {
            from: self.snap.state,
            to: self.state,
        });
        Plan {
            execution,
            runs: self.changes,
            attempt: self.attempt,
            events: self.events,
            timers: self.timers,
            state: self.state,
            new_runs: self.new_runs,
            input: self.input,
            vars: self.vars,
            outputs: self.outputs,
            run_error: self.run_error,
            dataset: self.dataset,
            execution_error: self.execution_error,
            items: self.items.into_inner(),
        }
    }

    fn run_index(&self, run: &str) -> Result<usize, Refusal> {
        self.runs
            .iter()
            .position(|r| r.id == run)
            .ok_or_else(|| Refusal::UnknownRun(run.to_string()))
    }

    /// The running task run `run`, if `worker` still owns it under `fence`.
    fn owned_run(&self, run: &str, worker: &str, fence: i64) -> Result<usize, Refusal> {
        let r = self.run_index(run)?;
        let s = &self.runs[r];
        if s.state != TaskRunState::Running
            || s.fence != fence
            || s.owner.as_deref() != Some(worker)
        {
            return Err(Refusal::Stale(format!(
                "task run {run} is no longer owned by {worker} with token {fence}"
            )));
        }
        Ok(r)
    }

    /// Moves the execution, checked against the machine; records the event.
    fn move_execution(&mut self, to: ExecutionState, detail: Value) -> Result<(), Refusal> {
        if self.state == to {
            return Ok(());
        }
        state::execution(self.state, to)?;
        self.events.push(PlannedEvent {
            kind: EventKind::ExecutionState,
            from: Some(self.state.as_str()),
            to: Some(to.as_str()),
            detail,
        });
        self.state = to;
        Ok(())
    }

    /// Moves task run `r`, checked against the machine; records the event.
    fn move_run(
        &mut self,
        r: usize,
        to: TaskRunState,
        lease: Lease,
        not_before: Option<i64>,
    ) -> Result<(), Refusal> {
        let from = self.runs[r].state;
        state::task_run(from, to)?;
        let run = &mut self.runs[r];
        run.state = to;
        run.not_before = not_before;
        match &lease {
            Lease::Take { worker, fence } => {
                run.owner = Some(worker.clone());
                run.fence = *fence;
            }
            Lease::Release => run.owner = None,
        }
        self.changes.push(RunChange {
            run: run.id.clone(),
            from,
            to,
            lease,
            not_before,
            attempts: run.attempts,
            max_attempts: run.max_attempts,
        });
        self.events.push(PlannedEvent {
            kind: EventKind::TaskRunState,
            from: Some(from.as_str()),
            to: Some(to.as_str()),
            detail: json!({ "task_run_id": run.id }),
        });
        Ok(())
    }

    fn claim(&mut self, run: &str, worker: &str, now_ms: i64) -> Result<(), Refusal> {
        let r = self.run_index(run)?;
        // Only a queued, restarted or running execution gets a new attempt:
        // a paused one waits for resume, a killed one for restart.
        if !matches!(
            self.state,
            ExecutionState::Created | ExecutionState::Restarted | ExecutionState::Running
        ) {
            return Err(Refusal::forbidden(self.state, "RUNNING (a new attempt)"));
        }
        let s = &self.runs[r];
        if !matches!(s.state, TaskRunState::Created | TaskRunState::Retrying) {
            return Err(Refusal::forbidden(s.state, TaskRunState::Running));
        }
        if let Some(at) = s.not_before
            && at > now_ms
        {
            return Err(Refusal::NotDue {
                run: run.to_string(),
                not_before: at,
            });
        }
        if self.snap.flow.is_some() && !self.prepare_step(r)? {
            return Ok(());
        }
        let s = &self.runs[r];
        let number = s.attempts + 1;
        let fence = s.fence + 1;
        self.runs[r].attempts = number;
        self.move_run(
            r,
            TaskRunState::Running,
            Lease::Take {
                worker: worker.to_string(),
                fence,
            },
            None,
        )?;
        self.move_execution(ExecutionState::Running, json!({}))?;
        self.attempt = Some(AttemptChange::Start {
            run: run.to_string(),
            number,
            fence,
            worker: worker.to_string(),
        });
        self.events.push(PlannedEvent {
            kind: EventKind::AttemptStarted,
            from: None,
            to: None,
            detail: json!({ "attempt": number, "worker": worker }),
        });
        Ok(())
    }

    /// Ends the running attempt of run `r` and moves the run and the
    /// execution on. A kill request wins over anything but a finished
    /// result: an attempt that succeeded before its interruption keeps its
    /// success (a restart never runs finished work again), the execution
    /// still ends KILLED. A retryable failure with attempts left waits out
    /// its backoff.
    fn finish(
        &mut self,
        r: usize,
        status: AttemptStatus,
        kind: Option<ErrorKind>,
        error: Option<AttemptError>,
        now_ms: i64,
        jitter: f64,
    ) -> Result<(), Refusal> {
        let s = &self.runs[r];
        let number = s.attempts;
        let (to, not_before) = if self.state == ExecutionState::Killing {
            match status {
                AttemptStatus::Success => (TaskRunState::Success, None),
                AttemptStatus::Warning => (TaskRunState::Warning, None),
                _ => (TaskRunState::Killed, None),
            }
        } else {
            match status {
                AttemptStatus::Success => (TaskRunState::Success, None),
                AttemptStatus::Warning => (TaskRunState::Warning, None),
                AttemptStatus::Killed => (TaskRunState::Killed, None),
                AttemptStatus::Failed => match kind {
                    Some(k) if is_retryable(k) && s.attempts < s.max_attempts => (
                        TaskRunState::Retrying,
                        Some(now_ms + backoff_ms(&self.retry_of(r), s.attempts, jitter)),
                    ),
                    _ => (TaskRunState::Failed, None),
                },
            }
        };
        let (to, error) = match (&self.snap.flow, to) {
            (Some(_), TaskRunState::Success | TaskRunState::Warning) => match self.save(r) {
                Ok(()) => (to, error),
                // The attempt succeeded; its step did not.
                Err(e) => {
                    self.run_error = Some((self.runs[r].id.clone(), e));
                    (TaskRunState::Failed, error)
                }
            },
            _ => (to, error),
        };
        let s = &self.runs[r];
        let status_text = status.as_str();
        let error_detail = error
            .as_ref()
            .map(|e| json!(e))
            .or_else(|| kind.map(|k| json!({ "kind": k })))
            .unwrap_or(Value::Null);
        self.attempt = Some(AttemptChange::Finish {
            run: s.id.clone(),
            number,
            status,
            error,
        });
        self.events.push(PlannedEvent {
            kind: EventKind::AttemptFinished,
            from: None,
            to: None,
            detail: json!({ "attempt": number, "status": status_text, "error": error_detail }),
        });
        self.move_run(r, to, Lease::Release, not_before)?;
        if let Some(at) = not_before {
            self.timers.push(Timer::Runnable {
                run: self.runs[r].id.clone(),
                not_before: Some(at),
            });
        }
        self.settle(json!({ "attempt": number }))
    }

    fn shutdown(&mut self, r: usize, now_ms: i64) -> Result<(), Refusal> {
        if self.state == ExecutionState::Killing {
            return self.finish(r, AttemptStatus::Killed, None, None, now_ms, 0.0);
        }
        let s = &self.runs[r];
        let number = s.attempts;
        let id = s.id.clone();
        // The interrupted attempt keeps its number; the run gets one more
        // attempt in all, so the guest loses none of its retries.
        self.runs[r].max_attempts = s.max_attempts.saturating_add(1);
        self.attempt = Some(AttemptChange::Finish {
            run: id.clone(),
            number,
            status: AttemptStatus::Failed,
            error: Some(AttemptError {
                kind: ErrorKind::HostCrash,
                message: "the host shut down while this attempt ran; it runs again".into(),
            }),
        });
        self.events.push(PlannedEvent {
            kind: EventKind::AttemptFinished,
            from: None,
            to: None,
            detail: json!({ "attempt": number, "status": "failed", "error": { "kind": "host_crash" }, "shutdown": true }),
        });
        self.move_run(r, TaskRunState::Retrying, Lease::Release, Some(now_ms))?;
        self.timers.push(Timer::Runnable {
            run: id,
            not_before: Some(now_ms),
        });
        Ok(())
    }

    /// The execution follows its task runs: while killing, it ends KILLED
    /// once nothing runs (what is still queued is killed); otherwise it
    /// ends when every task run has, in the worst of their states.
    fn settle(&mut self, detail: Value) -> Result<(), Refusal> {
        if self.state.is_terminal() {
            return Ok(());
        }
        if self.state == ExecutionState::Killing {
            if self.live_left_out() || self.runs.iter().any(|r| r.state == TaskRunState::Running) {
                return Ok(());
            }
            for r in 0..self.runs.len() {
                if !self.runs[r].state.is_terminal() {
                    self.move_run(r, TaskRunState::Killed, Lease::Release, None)?;
                }
            }
            return self.move_execution(ExecutionState::Killed, detail);
        }
        if self.snap.flow.is_some() && !self.runs.is_empty() {
            return self.advance(detail);
        }
        if self.runs.is_empty() || !self.runs.iter().all(|r| r.state.is_terminal()) {
            return Ok(());
        }
        let has = |s: TaskRunState| self.runs.iter().any(|r| r.state == s);
        let to = if has(TaskRunState::Failed) {
            ExecutionState::Failed
        } else if has(TaskRunState::Killed) {
            ExecutionState::Killed
        } else if has(TaskRunState::Warning) {
            ExecutionState::Warning
        } else {
            ExecutionState::Success
        };
        self.move_execution(to, detail)
    }

    fn cancel(&mut self) -> Result<(), Refusal> {
        if self.state.is_terminal() || self.state == ExecutionState::Killing {
            return Err(Refusal::forbidden(self.state, ExecutionState::Killed));
        }
        let detail = json!({ "by": "user" });
        let mut running = self.live_left_out();
        for r in 0..self.runs.len() {
            match self.runs[r].state {
                TaskRunState::Running => {
                    running = true;
                    self.timers.push(Timer::Interrupt {
                        run: self.runs[r].id.clone(),
                    });
                }
                s if s.is_terminal() => {}
                _ => self.move_run(r, TaskRunState::Killed, Lease::Release, None)?,
            }
        }
        let to = if running {
            ExecutionState::Killing
        } else {
            ExecutionState::Killed
        };
        self.move_execution(to, detail)
    }

    fn pause(&mut self) -> Result<(), Refusal> {
        if self.state != ExecutionState::Running {
            return Err(Refusal::forbidden(self.state, ExecutionState::Paused));
        }
        self.move_execution(ExecutionState::Paused, json!({ "by": "user" }))
    }

    fn resume(&mut self) -> Result<(), Refusal> {
        if self.state != ExecutionState::Paused {
            return Err(Refusal::forbidden(self.state, ExecutionState::Running));
        }
        self.move_execution(ExecutionState::Running, json!({ "by": "user" }))?;
        self.queue_runnable();
        Ok(())
    }

    fn restart(&mut self) -> Result<(), Refusal> {
        if !matches!(self.state, ExecutionState::Failed | ExecutionState::Killed) {
            return Err(Refusal::forbidden(self.state, ExecutionState::Restarted));
        }
        self.live_left_out();
        // A flow's failure it was allowed to go past is kept.
        let rerun: Vec<bool> = self
            .runs
            .iter()
            .map(|r| match r.state {
                TaskRunState::Killed => true,
                TaskRunState::Failed => !self.allowed_to_fail(r),
                _ => false,
            })
            .collect();
        if !rerun.contains(&true) {
            // A flow killed as a step finished goes on with its next step.
            if self.state == ExecutionState::Killed && self.snap.flow.is_some() && self.work_left()
            {
                self.move_execution(ExecutionState::Restarted, json!({ "by": "user" }))?;
                return self.advance(json!({ "by": "user" }));
            }
            // Killed after every task run had finished: nothing to run again.
            return Err(Refusal::forbidden(
                self.state,
                "RESTARTED (every task run finished; nothing to run again)",
            ));
        }
        self.move_execution(ExecutionState::Restarted, json!({ "by": "user" }))?;
        for (r, again) in rerun.into_iter().enumerate() {
            if again {
                self.move_run(r, TaskRunState::Created, Lease::Release, None)?;
            }
        }
        self.queue_runnable();
        Ok(())
    }

    /// The flow's snapshot, for as long as the plan is built.
    fn flow(&self) -> &'a FlowSnapshot {
        let snap: &'a Snapshot = self.snap;
        snap.flow.as_ref().expect("a flow")
    }

    /// What run `r` runs: its step, or its `for_each` step's per-item step.
    fn runnable_of(&self, r: &RunSnapshot) -> Option<&'a StepSpec> {
        let snap: &'a Snapshot = self.snap;
        snap.flow
            .as_ref()?
            .spec
            .step(&r.step)
            .map(StepSpec::runnable)
    }

    /// Whether run `r` is a flow step whose failure does not stop the flow.
    fn allowed_to_fail(&self, r: &RunSnapshot) -> bool {
        self.runnable_of(r).is_some_and(|s| s.allow_failure)
    }

    /// What run `r` produced: `{"outputs", "result"}` once it succeeded.
    fn produced_field(&self, r: &RunSnapshot, field: &str) -> Option<Value> {
        self.flow().produced.get(&r.id)?.get().get(field).cloned()
    }

    /// A `for_each` step's items (every item, even those not yet started),
    /// or why they cannot be had.
    fn items_of(&self, step: &StepSpec) -> Result<Vec<Value>, AttemptError> {
        let f = step.for_each.as_ref().expect("a for_each step");
        let place = format!("step {}, for_each.items", step.name);
        let error = |message: String| AttemptError {
            kind: ErrorKind::TemplateError,
            message,
        };
        let template = if f.items.contains("{{") {
            f.items.clone()
        } else {
            format!("{{{{ {} }}}}", f.items)
        };
        let template = Value::String(template);
        match self.with_context(&[&template], |ctx| flow::render(&place, &template, &ctx)) {
            Ok(Value::Array(items)) if items.len() <= flow::MAX_ITEMS => Ok(items),
            Ok(Value::Array(items)) => Err(error(format!(
                "{place}: {} items, over {}",
                items.len(),
                flow::MAX_ITEMS
            ))),
            Ok(other) => Err(error(format!(
                "{place}: {:?} gives {}, not an array",
                f.items,
                match other {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    Value::Object(_) => "an object",
                    Value::Array(_) => unreachable!(),
                }
            ))),
            Err(e) => Err(error(e.to_string())),
        }
    }

    /// Runs `f` on the context `templates` read, built only as far as they
    /// read it; should that fail (a name the analysis missed), on the whole
    /// context, whose error is the one to report.
    fn with_context<T, E>(
        &self,
        templates: &[&Value],
        f: impl Fn(Value) -> Result<T, E>,
    ) -> Result<T, E> {
        if let Some(reads) = flow::reads_of(templates) {
            let incomplete = self.incomplete.get();
            if let Ok(v) = f(self.context(Some(&reads))) {
                return Ok(v);
            }
            self.incomplete.set(incomplete);
        }
        f(self.context(None))
    }

    /// How many task runs of `step` the snapshot left out: (succeeded,
    /// not ended).
    fn left_out_of(&self, step: &str) -> (usize, usize) {
        match self.snap.flow.as_ref().and_then(|f| f.left_out.as_ref()) {
            Some(LeftOut {
                runs: Some((s, n)),
                live,
                ..
            }) if s == step => (*n as usize, *live as usize),
            Some(LeftOut {
                uncounted: Some(s), ..
            }) if s == step => {
                self.incomplete.set(true);
                (0, 0)
            }
            _ => (0, 0),
        }
    }

    /// Whether task runs that have not ended were left out: a plan that
    /// moves every such run cannot be made without them.
    fn live_left_out(&self) -> bool {
        let live = self.snap.flow.as_ref().and_then(|f| f.left_out.as_ref());
        if live.is_some_and(|l| l.live > 0) {
            self.incomplete.set(true);
            return true;
        }
        false
    }

    /// A `for_each` step's item count and up to `count` of its items from
    /// index `started`: the ones kept when it started, or its `items`
    /// rendered again.
    fn items_from(
        &self,
        step: &StepSpec,
        started: usize,
        count: usize,
    ) -> Result<(usize, Vec<(u32, Value)>), AttemptError> {
        if let Some(ahead) = self
            .flow()
            .items_ahead
            .as_ref()
            .filter(|a| a.step == step.name)
        {
            let total = ahead.total as usize;
            let next: Vec<(u32, Value)> = ahead
                .next
                .iter()
                .filter(|(i, _)| *i as usize >= started)
                .take(count)
                .map(|(i, v)| (*i, v.get().clone()))
                .collect();
            // What was kept starts where the step is (else render again).
            let from_here = started >= total
                || count == 0
                || next.first().is_some_and(|(i, _)| *i as usize == started);
            if from_here {
                return Ok((total, next));
            }
        }
        let items = self.items_of(step)?;
        let total = items.len();
        self.items
            .borrow_mut()
            .get_or_insert_with(|| (step.name.clone(), items.clone()));
        let next = items
            .into_iter()
            .enumerate()
            .skip(started)
            .take(count)
            .map(|(i, v)| (i as u32, v))
            .collect();
        Ok((total, next))
    }

    /// What a flow's templates see: `inputs`, `vars` and, for every step
    /// that has ended, `steps.NAME` with its `outputs`, `result` and
    /// `state` (a `for_each` step's are its items', in order). Only what
    /// `reads` names, when given.
    fn context(&self, reads: Option<&flow::Reads>) -> Value {
        let Some(flow) = &self.snap.flow else {
            return Value::Null;
        };
        let wants = |root: &str| reads.is_none_or(|r| r.reads(root));
        let wants_step = |name: &str| reads.is_none_or(|r| r.reads_step(name));
        let mut steps = Map::new();
        for step in &flow.spec.steps {
            let read =
                wants_step(&step.name) || step.children().iter().any(|c| wants_step(&c.name));
            if !read {
                continue;
            }
            if let Some(children) = &step.parallel {
                // Each of the steps run at once is steps.NAME; the parallel
                // step, once all have ended, has their outputs by name.
                let mut outputs = Map::new();
                let mut results = Map::new();
                let mut states = Vec::new();
                for child in children {
                    let last = self.runs.iter().rev().find(|r| r.step == child.name);
                    let Some(last) = last.filter(|r| r.state.is_terminal()) else {
                        continue;
                    };
                    let entry = json!({
                        "outputs": self.produced_field(last, "outputs").unwrap_or_else(|| json!({})),
                        "result": self.produced_field(last, "result").unwrap_or(Value::Null),
                        "state": last.state.as_str(),
                    });
                    outputs.insert(child.name.clone(), entry["outputs"].clone());
                    results.insert(child.name.clone(), entry["result"].clone());
                    states.push((last.state, child.allow_failure));
                    steps.insert(child.name.clone(), entry);
                }
                if states.len() == children.len() {
                    let state = if states.iter().all(|(s, _)| *s == TaskRunState::Skipped) {
                        TaskRunState::Skipped
                    } else if states
                        .iter()
                        .any(|(s, allowed)| *s == TaskRunState::Failed && !allowed)
                    {
                        TaskRunState::Failed
                    } else if states
                        .iter()
                        .any(|(s, _)| matches!(s, TaskRunState::Warning | TaskRunState::Failed))
                    {
                        TaskRunState::Warning
                    } else {
                        TaskRunState::Success
                    };
                    steps.insert(
                        step.name.clone(),
                        json!({"outputs": outputs, "result": results, "state": state.as_str()}),
                    );
                }
                continue;
            }
            let runs: Vec<&RunSnapshot> =
                self.runs.iter().filter(|r| r.step == step.name).collect();
            if step.for_each.is_some()
                && flow.left_out.is_some()
                && !runs.iter().any(|r| r.item.is_none())
            {
                // Its items' outputs are not all here.
                self.incomplete.set(true);
                continue;
            }
            let Some(last) = runs.last() else {
                continue;
            };
            if step.for_each.is_none() || last.item.is_none() {
                // A plain step (its latest run), or a for_each that ended
                // without items (one run, no attempt).
                if !last.state.is_terminal() {
                    continue;
                }
                let default = if step.for_each.is_some() {
                    json!([])
                } else {
                    json!({})
                };
                steps.insert(
                    step.name.clone(),
                    json!({
                        "outputs": self.produced_field(last, "outputs").unwrap_or(default),
                        "result": self.produced_field(last, "result").unwrap_or(Value::Null),
                        "state": last.state.as_str(),
                    }),
                );
                continue;
            }
            if runs.iter().any(|r| !r.state.is_terminal()) {
                continue;
            }
            let mut items: Vec<&RunSnapshot> = runs;
            items.sort_by_key(|r| r.item);
            let field = |r: &RunSnapshot, k: &str| self.produced_field(r, k).unwrap_or(Value::Null);
            let state = if items
                .iter()
                .any(|r| r.state == TaskRunState::Failed && !self.allowed_to_fail(r))
            {
                TaskRunState::Failed
            } else if items
                .iter()
                .any(|r| r.state == TaskRunState::Warning || r.state == TaskRunState::Failed)
            {
                TaskRunState::Warning
            } else {
                TaskRunState::Success
            };
            steps.insert(
                step.name.clone(),
                json!({
                    "outputs": items.iter().map(|r| field(r, "outputs")).collect::<Vec<_>>(),
                    "result": items.iter().map(|r| field(r, "result")).collect::<Vec<_>>(),
                    "state": state.as_str(),
                }),
            );
        }
        let mut ctx = Map::new();
        if wants("inputs") {
            ctx.insert("inputs".into(), flow.input.get().clone());
        }
        if wants("vars") {
            let vars = self.vars.as_ref().unwrap_or(&flow.vars);
            ctx.insert("vars".into(), Value::Object(vars.clone()));
        }
        if wants("steps") {
            ctx.insert("steps".into(), Value::Object(steps));
        }
        Value::Object(ctx)
    }

    /// Before a flow step's attempt: its `if` (first attempt only) and its
    /// input, rendered now that everything before it has ended (with
    /// `item` and `index` for a `for_each` item). Returns whether the
    /// attempt may start; if not, the run was skipped or failed and the
    /// flow moved on.
    fn prepare_step(&mut self, r: usize) -> Result<bool, Refusal> {
        let run = self.runs[r].clone();
        let name = run.step.clone();
        let Some(step) = self.runnable_of(&run) else {
            let e = flow::TemplateError {
                place: format!("step {name}"),
                template: String::new(),
                message: "the task version has no such step".into(),
            };
            self.fail_step(r, e)?;
            return Ok(false);
        };
        let item = run.item.map(|i| {
            let value = self.flow().items.get(&run.id);
            (i, value.map_or(Value::Null, |v| v.get().clone()))
        });
        let with_item = |mut ctx: Value| {
            if let Some((i, value)) = &item {
                ctx["item"] = value.clone();
                ctx["index"] = json!(i);
            }
            ctx
        };
        let place = match run.item {
            Some(i) => format!("step {name}[{i}], input"),
            None => format!("step {name}, input"),
        };
        if run.attempts == 0
            && run.item.is_none()
            && let Some(condition) = &step.condition
        {
            let place = format!("step {name}, if");
            let read = expression(condition);
            match self.with_context(&[&read], |ctx| {
                flow::condition(&place, condition, &with_item(ctx))
            }) {
                Ok(true) => {}
                Ok(false) => {
                    self.move_run(r, TaskRunState::Skipped, Lease::Release, None)?;
                    self.move_execution(ExecutionState::Running, json!({}))?;
                    self.settle(json!({ "skipped": name }))?;
                    return Ok(false);
                }
                Err(e) => {
                    self.fail_step(r, e)?;
                    return Ok(false);
                }
            }
        }
        // A subflow's input is its child's (null: the child task's own).
        let template = match &step.subflow {
            Some(sub) => sub.input.clone().unwrap_or(Value::Null),
            None => step.input.clone(),
        };
        match self.with_context(&[&template], |ctx| {
            flow::render(&place, &template, &with_item(ctx))
        }) {
            Ok(input) => {
                self.input = Some(input);
                Ok(true)
            }
            Err(e) => {
                self.fail_step(r, e)?;
                Ok(false)
            }
        }
    }

    /// A flow step fails before an attempt: a template could not be rendered.
    fn fail_step(&mut self, r: usize, e: flow::TemplateError) -> Result<(), Refusal> {
        let error = AttemptError {
            kind: ErrorKind::TemplateError,
            message: e.to_string(),
        };
        self.move_run(r, TaskRunState::Failed, Lease::Release, None)?;
        self.run_error = Some((self.runs[r].id.clone(), error.clone()));
        self.move_execution(ExecutionState::Running, json!({}))?;
        self.settle(json!({ "error": error }))
    }

    /// A flow step succeeded: its `save` sets variables from its outputs.
    fn save(&mut self, r: usize) -> Result<(), AttemptError> {
        let flow = self.flow();
        let run = self.runs[r].clone();
        let Some(step) = flow
            .spec
            .step(&run.step)
            .filter(|s| !s.save.is_empty() && s.for_each.is_none())
        else {
            return Ok(());
        };
        let outputs = self
            .produced_field(&run, "outputs")
            .unwrap_or_else(|| json!({}));
        let result = self.produced_field(&run, "result").unwrap_or(Value::Null);
        let mut vars = self.vars.clone().unwrap_or_else(|| flow.vars.clone());
        for (var, template) in &step.save {
            let place = format!("step {}, save.{var}", run.step);
            let template = Value::String(template.clone());
            let value = self
                .with_context(&[&template], |mut ctx| {
                    ctx["outputs"] = outputs.clone();
                    ctx["result"] = result.clone();
                    flow::render(&place, &template, &ctx)
                })
                .map_err(|e| AttemptError {
                    kind: ErrorKind::TemplateError,
                    message: e.to_string(),
                })?;
            vars.insert(var.clone(), value);
        }
        self.vars = Some(vars);
        Ok(())
    }

    /// The step after the flow's last task run's, if there is one.
    fn next_step(&self) -> Option<&'a StepSpec> {
        let flow = self.flow();
        let Some(last) = self.runs.last() else {
            return flow.spec.steps.first();
        };
        let top = flow.spec.top_level(&last.step)?;
        let at = flow.spec.steps.iter().position(|s| s.name == top.name)?;
        flow.spec.steps.get(at + 1)
    }

    /// Adds a task run this plan creates (queued when `CREATED`).
    fn create_run(
        &mut self,
        step: &StepSpec,
        state: TaskRunState,
        item: Option<(u32, Value)>,
        output: Option<Value>,
    ) -> Result<(), Refusal> {
        let flow = self.flow();
        let Some(id) = flow.new_ids.get(self.new_runs.len()).cloned() else {
            // The store hands enough ids for any plan; running out is a bug
            // there, refused rather than planned wrong.
            return Err(Refusal::Stale("no id left for a new task run".into()));
        };
        let max_attempts = flow.spec.retry_of(&step.name).max_attempts;
        self.runs.push(RunSnapshot {
            id: id.clone(),
            step: step.name.clone(),
            item: item.as_ref().map(|(i, _)| *i),
            state,
            attempts: 0,
            max_attempts,
            fence: 0,
            owner: None,
            not_before: None,
        });
        let mut detail = json!({ "task_run_id": id, "step": step.name });
        if let Some((i, _)) = &item {
            detail["item"] = json!(i);
        }
        self.events.push(PlannedEvent {
            kind: EventKind::TaskRunState,
            from: None,
            to: Some(state.as_str()),
            detail,
        });
        if state == TaskRunState::Created {
            self.timers.push(Timer::Runnable {
                run: id.clone(),
                not_before: None,
            });
        }
        self.new_runs.push(NewRun {
            id,
            step: step.name.clone(),
            max_attempts,
            state,
            item,
            output,
        });
        Ok(())
    }

    /// Starts flow step `next`: its task run, or a `for_each`'s first
    /// items (one run, ended, when it has none or its `if` is false).
    /// Returns whether anything is left to wait for.
    fn start_step(&mut self, next: &'a StepSpec) -> Result<bool, Refusal> {
        if let Some(children) = &next.parallel {
            let state = match &next.condition {
                None => TaskRunState::Created,
                Some(condition) => {
                    let place = format!("step {}, if", next.name);
                    let read = expression(condition);
                    match self
                        .with_context(&[&read], |ctx| flow::condition(&place, condition, &ctx))
                    {
                        Ok(true) => TaskRunState::Created,
                        Ok(false) => TaskRunState::Skipped,
                        Err(e) => {
                            self.execution_error = Some(AttemptError {
                                kind: ErrorKind::TemplateError,
                                message: e.to_string(),
                            });
                            return Ok(false);
                        }
                    }
                }
            };
            for child in children {
                self.create_run(child, state, None, None)?;
            }
            return Ok(state == TaskRunState::Created);
        }
        let Some(f) = &next.for_each else {
            self.create_run(next, TaskRunState::Created, None, None)?;
            return Ok(true);
        };
        if let Some(condition) = &next.condition {
            let place = format!("step {}, if", next.name);
            let read = expression(condition);
            match self.with_context(&[&read], |ctx| flow::condition(&place, condition, &ctx)) {
                Ok(true) => {}
                Ok(false) => {
                    self.create_run(next, TaskRunState::Skipped, None, None)?;
                    return Ok(false);
                }
                Err(e) => {
                    self.execution_error = Some(AttemptError {
                        kind: ErrorKind::TemplateError,
                        message: e.to_string(),
                    });
                    return Ok(false);
                }
            }
        }
        let items = match self.items_of(next) {
            Ok(items) => items,
            Err(e) => {
                self.execution_error = Some(e);
                return Ok(false);
            }
        };
        if items.is_empty() {
            let output = json!({ "outputs": [], "result": [] });
            self.create_run(next, TaskRunState::Success, None, Some(output))?;
            return Ok(false);
        }
        let first = (f.concurrency as usize).min(items.len());
        *self.items.borrow_mut() = Some((next.name.clone(), items.clone()));
        for (i, item) in items.into_iter().take(first).enumerate() {
            self.create_run(next, TaskRunState::Created, Some((i as u32, item)), None)?;
        }
        Ok(true)
    }

    /// The retry policy of run `r`: its step's in a flow, else the task's.
    fn retry_of(&self, r: usize) -> RetryPolicy {
        match &self.snap.flow {
            Some(flow) => flow.spec.retry_of(&self.runs[r].step),
            None => self.snap.retry,
        }
    }

    /// Whether a flow has work left after its last task run: items of its
    /// `for_each` not started yet, or a next step.
    fn work_left(&self) -> bool {
        let Some(last) = self.runs.last() else {
            return false;
        };
        if let Some(step) = self.flow().spec.step(&last.step)
            && step.for_each.is_some()
            && last.item.is_some()
        {
            let (done, live) = self.left_out_of(&last.step);
            let started = self.runs.iter().filter(|r| r.step == last.step).count() + done + live;
            if self
                .items_from(step, started, 0)
                .is_ok_and(|(total, _)| started < total)
            {
                return true;
            }
        }
        self.next_step().is_some()
    }

    /// The flow moves on: more `for_each` items start as others end (never
    /// more than its concurrency at once), the next step starts once the
    /// current one has ended, or the flow ends (a failure not allowed
    /// stops it, once what still runs has ended).
    fn advance(&mut self, detail: Value) -> Result<(), Refusal> {
        let flow = self.flow();
        loop {
            // Before the first step, nothing is current.
            if let Some(last) = self.runs.last().cloned() {
                let step = flow.spec.step(&last.step);
                // The current step's task runs: its own, each item's, or each
                // of its parallel steps' (restart re-runs a task run in place,
                // so each has one). Counted in place: a for_each has many.
                let parallel = flow
                    .spec
                    .top_level(&last.step)
                    .filter(|t| t.parallel.is_some());
                let in_step = |r: &RunSnapshot| match parallel {
                    Some(t) => t.children().iter().any(|c| c.name == r.step),
                    None => r.step == last.step,
                };
                let (done, live) = self.left_out_of(&last.step);
                let running = self
                    .runs
                    .iter()
                    .filter(|r| in_step(r) && !r.state.is_terminal())
                    .count()
                    + live;
                let started = self.runs.iter().filter(|r| in_step(r)).count() + done + live;
                let stopped = self
                    .runs
                    .iter()
                    .filter(|r| in_step(r))
                    .find(|r| {
                        r.state == TaskRunState::Killed
                            || (r.state == TaskRunState::Failed && !self.allowed_to_fail(r))
                    })
                    .map(|r| r.state);
                if let Some(stop) = stopped {
                    if running > 0 {
                        return Ok(()); // the others end first
                    }
                    let to = if stop == TaskRunState::Killed {
                        ExecutionState::Killed
                    } else {
                        ExecutionState::Failed
                    };
                    return self.move_execution(to, detail);
                }
                if let Some(step) = step.filter(|s| s.for_each.is_some() && last.item.is_some()) {
                    let f = step.for_each.as_ref().expect("a for_each step");
                    let room = (f.concurrency as usize).saturating_sub(running);
                    let (total, items) = match self.items_from(step, started, room) {
                        Ok(items) => items,
                        Err(e) => {
                            self.execution_error = Some(e.clone());
                            if running > 0 {
                                return Ok(());
                            }
                            return self
                                .move_execution(ExecutionState::Failed, json!({ "error": e }));
                        }
                    };
                    if !items.is_empty() {
                        for (i, item) in items {
                            self.create_run(step, TaskRunState::Created, Some((i, item)), None)?;
                        }
                        return Ok(());
                    }
                    if running > 0 || started < total {
                        return Ok(());
                    }
                } else if running > 0 {
                    return Ok(());
                }
            }
            // The current step has ended: the next one, or the end.
            let Some(next) = self.next_step() else {
                break;
            };
            if self.start_step(next)? {
                return Ok(());
            }
            if let Some(e) = self.execution_error.clone() {
                return self.move_execution(ExecutionState::Failed, json!({ "error": e }));
            }
        }
        self.finish_flow(detail)
    }

    /// Every step has ended well enough: the task's `outputs` and dataset
    /// are taken, and the flow ends WARNING or SUCCESS.
    fn finish_flow(&mut self, detail: Value) -> Result<(), Refusal> {
        let flow = self.flow();
        // Without declared outputs, the last step's: a plain step's are its
        // attempt's (stored as it succeeded); a parallel step's are its
        // steps' by name, a for_each's its items' in order, under its name
        // (an execution's outputs are an object).
        if flow.spec.outputs.is_none()
            && let Some(last) = flow.spec.steps.last()
            && (last.parallel.is_some() || last.for_each.is_some())
        {
            let ctx = self.context(Some(&flow::Reads::step(&last.name)));
            let value = &ctx["steps"][&last.name];
            if matches!(value["state"].as_str(), Some("SUCCESS" | "WARNING")) {
                let outputs = match (&value["outputs"], last.for_each.is_some()) {
                    (Value::Object(by_name), false) => by_name.clone().into_iter().collect(),
                    (items, _) => BTreeMap::from([(last.name.clone(), items.clone())]),
                };
                self.outputs = Some(outputs);
            }
        }
        if let Some(outputs) = &flow.spec.outputs {
            let mut rendered = BTreeMap::new();
            for (name, template) in outputs {
                let place = format!("outputs.{name}");
                match self.with_context(&[template], |ctx| flow::render(&place, template, &ctx)) {
                    Ok(v) => {
                        rendered.insert(name.clone(), v);
                    }
                    Err(e) => {
                        let error = AttemptError {
                            kind: ErrorKind::TemplateError,
                            message: e.to_string(),
                        };
                        self.execution_error = Some(error.clone());
                        return self
                            .move_execution(ExecutionState::Failed, json!({ "error": error }));
                    }
                }
            }
            self.outputs = Some(rendered);
        }
        if let Some(dataset) = &flow.spec.dataset
            && let Some((step, output)) = dataset.source()
        {
            let ctx = self.context(Some(&flow::Reads::step(step)));
            let value = ctx["steps"].get(step);
            let rows = match value {
                Some(v) if matches!(v["state"].as_str(), Some("SUCCESS" | "WARNING")) => {
                    dataset.rows(v["outputs"].get(output))
                }
                // The step did not run (skipped, or its failure allowed).
                _ => Ok(Vec::new()),
            };
            match rows {
                Ok(rows) => self.dataset = Some(rows),
                Err(message) => {
                    let error = AttemptError {
                        kind: ErrorKind::InvalidResult,
                        message,
                    };
                    self.execution_error = Some(error.clone());
                    return self.move_execution(ExecutionState::Failed, json!({ "error": error }));
                }
            }
        }
        let warned = self.runs.iter().any(|r| {
            r.state == TaskRunState::Warning
                || (r.state == TaskRunState::Failed && self.allowed_to_fail(r))
        });
        let to = if warned {
            ExecutionState::Warning
        } else {
            ExecutionState::Success
        };
        self.move_execution(to, detail)
    }

    /// Timers for every task run waiting for an attempt.
    fn queue_runnable(&mut self) {
        self.live_left_out();
        for r in &self.runs {
            if matches!(r.state, TaskRunState::Created | TaskRunState::Retrying) {
                self.timers.push(Timer::Runnable {
                    run: r.id.clone(),
                    not_before: r.not_before,
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "plan_flow_tests.rs"]
mod flow_tests;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use ExecutionState as E;
    use TaskRunState as R;

    /// A plan applied to a snapshot in memory: what a store's rows say
    /// after it, to plan the next event on.
    fn apply(snap: &Snapshot, plan: &Plan) -> Snapshot {
        let mut next = snap.clone();
        next.state = plan.state;
        for c in &plan.runs {
            if let Some(r) = next.runs.iter_mut().find(|r| r.id == c.run) {
                r.state = c.to;
                r.not_before = c.not_before;
                r.attempts = c.attempts;
                r.max_attempts = c.max_attempts;
                match &c.lease {
                    Lease::Take { worker, fence } => {
                        r.owner = Some(worker.clone());
                        r.fence = *fence;
                    }
                    Lease::Release => r.owner = None,
                }
            }
        }
        next
    }

    fn snap(state: E, run: R) -> Snapshot {
        Snapshot {
            execution_id: "e".into(),
            state,
            retry: RetryPolicy {
                max_attempts: 5,
                initial_backoff: Duration::from_secs(20),
                multiplier: 1.0,
                max_backoff: Duration::from_secs(60),
                jitter: 0.0,
            },
            flow: None,
            runs: vec![RunSnapshot {
                id: "r".into(),
                step: "main".into(),
                item: None,
                state: run,
                attempts: u32::from(run != R::Created),
                max_attempts: 5,
                fence: 1,
                owner: (run == R::Running).then(|| "w".into()),
                not_before: (run == R::Retrying).then_some(20_000),
            }],
        }
    }

    fn finished(status: AttemptStatus, error: Option<ErrorKind>) -> Event {
        Event::AttemptFinished {
            run: "r".into(),
            worker: "w".into(),
            fence: 1,
            status,
            error,
            now_ms: 0,
            jitter: 0.0,
        }
    }

    #[test]
    fn cancelling_during_a_backoff_kills_the_execution_at_once() {
        let p = plan(&snap(E::Running, R::Retrying), &Event::Cancel).unwrap();
        assert_eq!(p.state, E::Killed);
        assert_eq!(
            p.execution,
            Some(Transition {
                from: E::Running,
                to: E::Killed
            })
        );
        assert_eq!(p.runs.len(), 1);
        assert_eq!((p.runs[0].from, p.runs[0].to), (R::Retrying, R::Killed));
        assert!(p.timers.is_empty());
        let kinds: Vec<_> = p.events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![EventKind::TaskRunState, EventKind::ExecutionState]
        );
    }

    #[test]
    fn cancelling_a_running_attempt_interrupts_it_and_waits_for_it() {
        let s = snap(E::Running, R::Running);
        let p = plan(&s, &Event::Cancel).unwrap();
        assert_eq!(p.state, E::Killing);
        assert!(p.runs.is_empty());
        assert_eq!(p.timers, vec![Timer::Interrupt { run: "r".into() }]);
        // Whatever the attempt then reports, the execution ends KILLED; a
        // result it finished keeps its success, so a restart never runs it
        // again.
        let killing = apply(&s, &p);
        let failed = plan(
            &killing,
            &finished(AttemptStatus::Failed, Some(ErrorKind::Trap)),
        )
        .unwrap();
        assert_eq!((failed.runs[0].to, failed.state), (R::Killed, E::Killed));
        let done = plan(&killing, &finished(AttemptStatus::Success, None)).unwrap();
        assert_eq!((done.runs[0].to, done.state), (R::Success, E::Killed));
        assert!(matches!(
            plan(&apply(&killing, &done), &Event::Restart),
            Err(Refusal::Forbidden(_))
        ));
    }

    #[test]
    fn a_retryable_failure_with_attempts_left_waits_out_its_backoff() {
        let p = plan(
            &snap(E::Running, R::Running),
            &finished(AttemptStatus::Failed, Some(ErrorKind::ActionRetryable)),
        )
        .unwrap();
        assert_eq!(p.state, E::Running);
        assert_eq!(p.runs[0].to, R::Retrying);
        assert_eq!(p.runs[0].not_before, Some(20_000));
        assert_eq!(
            p.timers,
            vec![Timer::Runnable {
                run: "r".into(),
                not_before: Some(20_000)
            }]
        );
    }

    #[test]
    fn a_final_failure_or_the_last_attempt_fails_the_execution() {
        let p = plan(
            &snap(E::Running, R::Running),
            &finished(AttemptStatus::Failed, Some(ErrorKind::ActionFatal)),
        )
        .unwrap();
        assert_eq!((p.runs[0].to, p.state), (R::Failed, E::Failed));
        let mut last = snap(E::Running, R::Running);
        last.runs[0].attempts = 5;
        let p = plan(
            &last,
            &finished(AttemptStatus::Failed, Some(ErrorKind::Trap)),
        )
        .unwrap();
        assert_eq!((p.runs[0].to, p.state), (R::Failed, E::Failed));
    }

    #[test]
    fn a_stale_finish_is_refused() {
        let mut e = finished(AttemptStatus::Success, None);
        if let Event::AttemptFinished { fence, .. } = &mut e {
            *fence = 0;
        }
        assert!(matches!(
            plan(&snap(E::Running, R::Running), &e),
            Err(Refusal::Stale(_))
        ));
        assert!(matches!(
            plan(
                &snap(E::Running, R::Retrying),
                &finished(AttemptStatus::Success, None)
            ),
            Err(Refusal::Stale(_))
        ));
    }

    #[test]
    fn a_claim_waits_for_the_backoff_and_for_resume() {
        let claim = |now_ms| Event::Claim {
            run: "r".into(),
            worker: "w2".into(),
            now_ms,
        };
        let s = snap(E::Running, R::Retrying);
        assert!(matches!(
            plan(&s, &claim(19_999)),
            Err(Refusal::NotDue { .. })
        ));
        let p = plan(&s, &claim(20_000)).unwrap();
        assert_eq!(
            p.attempt,
            Some(AttemptChange::Start {
                run: "r".into(),
                number: 2,
                fence: 2,
                worker: "w2".into()
            })
        );
        assert!(matches!(
            plan(&snap(E::Paused, R::Retrying), &claim(20_000)),
            Err(Refusal::Forbidden(_))
        ));
        let p = plan(&snap(E::Created, R::Created), &claim(0)).unwrap();
        assert_eq!(p.state, E::Running);
    }

    #[test]
    fn pause_resume_and_restart_follow_the_machine() {
        let paused = plan(&snap(E::Running, R::Retrying), &Event::Pause).unwrap();
        assert_eq!(paused.state, E::Paused);
        assert!(plan(&snap(E::Paused, R::Retrying), &Event::Pause).is_err());
        let resumed = plan(&snap(E::Paused, R::Retrying), &Event::Resume).unwrap();
        assert_eq!(
            resumed.timers,
            vec![Timer::Runnable {
                run: "r".into(),
                not_before: Some(20_000)
            }]
        );
        assert!(plan(&snap(E::Running, R::Running), &Event::Resume).is_err());
        let restarted = plan(&snap(E::Killed, R::Killed), &Event::Restart).unwrap();
        assert_eq!(restarted.state, E::Restarted);
        assert_eq!(restarted.runs[0].to, R::Created);
        assert!(plan(&snap(E::Success, R::Success), &Event::Restart).is_err());
        assert!(plan(&snap(E::Success, R::Success), &Event::Cancel).is_err());
        assert!(plan(&snap(E::Killing, R::Running), &Event::Cancel).is_err());
    }

    #[test]
    fn a_lost_host_retries_under_the_policy_or_ends_a_killing_execution() {
        let lost = Event::HostLost {
            run: "r".into(),
            now_ms: 1_000,
            jitter: 0.0,
        };
        let p = plan(&snap(E::Running, R::Running), &lost).unwrap();
        assert_eq!(p.runs[0].to, R::Retrying);
        assert!(matches!(
            &p.attempt,
            Some(AttemptChange::Finish { error: Some(e), .. }) if e.kind == ErrorKind::HostCrash
        ));
        let p = plan(&snap(E::Killing, R::Running), &lost).unwrap();
        assert_eq!((p.runs[0].to, p.state), (R::Killed, E::Killed));
    }

    #[test]
    fn a_shutdown_gives_the_attempt_back() {
        let mut s = snap(E::Running, R::Running);
        s.runs[0].attempts = 5;
        let p = plan(
            &s,
            &Event::Shutdown {
                run: "r".into(),
                worker: "w".into(),
                fence: 1,
                now_ms: 7,
            },
        )
        .unwrap();
        assert_eq!(p.runs[0].to, R::Retrying);
        assert_eq!(p.runs[0].not_before, Some(7));
        assert_eq!(p.runs[0].max_attempts, 6);
        assert_eq!(p.state, E::Running);
    }
}
