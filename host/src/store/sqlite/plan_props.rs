//! Property tests: random sequences of events driven through the planner
//! and a real SQLite store, with the store's invariants checked after
//! every step against the rows themselves.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;

use super::SqliteStore;
use crate::model::clock::ManualClock;
use crate::model::execution::Trigger;
use crate::model::report::{AttemptError, AttemptReport, AttemptStatus, ErrorKind};
use crate::model::state::{ExecutionState, TaskRunState};
use crate::model::task::Task;
use crate::store::*;

/// How an attempt ends, as its guest reports it.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Success,
    Warning,
    Killed,
    Failed(ErrorKind),
}

#[derive(Debug, Clone)]
enum Op {
    Trigger,
    /// Claim the first runnable task run of execution `i` on worker `w`.
    Claim(usize, u8),
    /// Finish execution `i`'s running attempt with its own token.
    Finish(usize, Ending),
    /// A completion carrying an old token.
    StaleFinish(usize),
    /// The owning host shuts down while the attempt runs.
    Shutdown(usize),
    Control(usize, Control),
    /// The process dies and starts again: recovery runs.
    Crash,
    Advance(u64),
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![
        Just(Ending::Success),
        Just(Ending::Warning),
        Just(Ending::Killed),
        Just(Ending::Failed(ErrorKind::ActionRetryable)),
        Just(Ending::Failed(ErrorKind::Trap)),
        Just(Ending::Failed(ErrorKind::ActionFatal)),
        Just(Ending::Failed(ErrorKind::FuelExhausted)),
    ]
}

fn control() -> impl Strategy<Value = Control> {
    prop_oneof![
        Just(Control::Cancel),
        Just(Control::Pause),
        Just(Control::Resume),
        Just(Control::Restart),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Trigger),
        4 => (0..3usize, 0..2u8).prop_map(|(i, w)| Op::Claim(i, w)),
        4 => (0..3usize, ending()).prop_map(|(i, e)| Op::Finish(i, e)),
        1 => (0..3usize).prop_map(Op::StaleFinish),
        1 => (0..3usize).prop_map(Op::Shutdown),
        4 => (0..3usize, control()).prop_map(|(i, c)| Op::Control(i, c)),
        1 => Just(Op::Crash),
        2 => (0..3_000u64).prop_map(Op::Advance),
    ]
}

/// An attempt this test started and has not seen end.
#[derive(Debug, Clone)]
struct Running {
    run: String,
    attempt_id: String,
    number: u32,
    worker: String,
    fence: i64,
}

struct World {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: SqliteStore,
    clock: Arc<ManualClock>,
    task: Task,
    executions: Vec<String>,
    running: BTreeMap<String, Running>,
}

fn task() -> Task {
    Task {
        id: "0192f000-0000-7000-8000-000000000001".into(),
        version: 1,
        spec: serde_json::from_value(json!({
            "name": "props",
            "action": "noop",
            "retry": {"max_attempts": 3, "initial_backoff": "1s", "multiplier": 2.0, "max_backoff": "10s", "jitter": 0.2}
        }))
        .unwrap(),
        created_at: "2026-11-25T00:00:00.000000Z".into(),
        updated_at: "2026-11-25T00:00:00.000000Z".into(),
        schedule_state: None,
    }
}

/// A flow: a plain step, a for_each over three items one at a time, and a
/// step with an `if` and outputs that read all the items (so that an
/// item's events, which leave the succeeded items out, must read them all
/// again); with retries, so that every event has work to do.
fn flow_task() -> Task {
    let mut t = task();
    t.id = "0192f000-0000-7000-8000-000000000002".into();
    t.spec = serde_json::from_value(json!({
        "name": "flow-props",
        "retry": {"max_attempts": 3, "initial_backoff": "1s", "multiplier": 2.0, "max_backoff": "10s", "jitter": 0.2},
        "steps": [
            {"name": "a", "action": "noop"},
            {"name": "b", "for_each": {"items": "[1, 2, 3]", "concurrency": 1, "step": {"action": "noop", "input": {"n": "{{ item }}"}}}},
            {"name": "c", "action": "noop", "if": "steps.a.state == 'SUCCESS' and steps.b.outputs | length == 3"}
        ],
        "outputs": {"items": "{{ steps.b.outputs | length }}"}
    }))
    .unwrap();
    t
}

/// A new execution `id` of `task`, triggered over HTTP with an empty input.
fn http_execution(id: &str, task: &Task) -> NewExecution {
    NewExecution {
        id: id.to_string(),
        task: task.clone(),
        task_run_id: uuid::Uuid::now_v7().to_string(),
        trigger: Trigger::Http,
        input: json!({}),
        labels: Default::default(),
        idempotency_key: None,
        parent_id: None,
        variables: Default::default(),
        scheduled_at: None,
        replay: None,
        token_id: None,
    }
}

impl World {
    async fn new() -> World {
        World::with_task(task()).await
    }

    async fn with_task(task: Task) -> World {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("props.db");
        let clock = ManualClock::starting_at(1_764_000_000_000);
        let store = SqliteStore::open_with_clock(&path, clock.clone())
            .await
            .unwrap();
        store.create_task(&task).await.unwrap();
        World {
            _dir: dir,
            path,
            store,
            clock,
            task,
            executions: Vec::new(),
            running: BTreeMap::new(),
        }
    }

    fn execution(&self, i: usize) -> Option<String> {
        (!self.executions.is_empty()).then(|| self.executions[i % self.executions.len()].clone())
    }

    fn report(&self, number: u32, ending: Ending) -> AttemptReport {
        let mut r = AttemptReport::failed_before_start(number, ErrorKind::Trap, "test".to_string());
        match ending {
            Ending::Success => {
                r.status = AttemptStatus::Success;
                r.error = None;
                r.result = Some(json!({"ok": true}));
            }
            Ending::Warning => {
                r.status = AttemptStatus::Warning;
                r.error = None;
            }
            Ending::Killed => {
                r.status = AttemptStatus::Killed;
                r.error = Some(AttemptError {
                    kind: ErrorKind::Cancelled,
                    message: "cancelled".into(),
                });
            }
            Ending::Failed(kind) => {
                r.status = AttemptStatus::Failed;
                r.error = Some(AttemptError {
                    kind,
                    message: "failed".into(),
                });
            }
        }
        r
    }

    fn finish_of(&self, exec: &str, a: &Running, report: AttemptReport) -> FinishAttempt {
        FinishAttempt {
            attempt_id: a.attempt_id.clone(),
            task_run_id: a.run.clone(),
            execution_id: exec.to_string(),
            worker: a.worker.clone(),
            fence: a.fence,
            report,
            jitter: 0.5,
            shutdown: false,
        }
    }

    /// Applies one op; `Ok(true)` if the store accepted it, `Ok(false)` if
    /// it refused it (which must change nothing).
    async fn apply(&mut self, op: &Op) -> bool {
        match op {
            Op::Trigger => {
                let id = uuid::Uuid::now_v7().to_string();
                let (e, created) = self
                    .store
                    .create_execution(http_execution(&id, &self.task))
                    .await
                    .unwrap();
                assert!(created);
                assert_eq!(e.state, ExecutionState::Created);
                self.executions.push(id);
                true
            }
            Op::Claim(i, w) => {
                let Some(exec) = self.execution(*i) else {
                    return false;
                };
                let run = self.run_of(&exec).await;
                let worker = format!("worker-{w}");
                match self.store.start_attempt(&run, &worker, 0).await {
                    // A flow step skipped, or failed before an attempt.
                    Ok(Claimed::Settled(out)) => {
                        assert!(
                            self.task.spec.is_flow(),
                            "a one-action task starts an attempt"
                        );
                        self.check_outcome(&exec, &out).await;
                        true
                    }
                    Ok(Claimed::Started(started)) => {
                        assert!(
                            !self.running.contains_key(&exec),
                            "a second attempt started while one runs"
                        );
                        self.running.insert(
                            exec,
                            Running {
                                run,
                                attempt_id: started.attempt_id,
                                number: started.number,
                                worker,
                                fence: started.fence,
                            },
                        );
                        true
                    }
                    Err(StoreError::Forbidden(_) | StoreError::NotDue { .. }) => false,
                    Err(e) => panic!("claim: {e}"),
                }
            }
            Op::Finish(i, ending) => {
                let Some(exec) = self.execution(*i) else {
                    return false;
                };
                let Some(a) = self.running.get(&exec).cloned() else {
                    return false;
                };
                let f = self.finish_of(&exec, &a, self.report(a.number, *ending));
                let out = self.store.finish_attempt(f).await.unwrap();
                self.running.remove(&exec);
                self.check_outcome(&exec, &out).await;
                true
            }
            Op::StaleFinish(i) => {
                let Some(exec) = self.execution(*i) else {
                    return false;
                };
                let run = self.run_of(&exec).await;
                let stale = Running {
                    run,
                    attempt_id: "stale".into(),
                    number: 1,
                    worker: "worker-0".into(),
                    fence: -1,
                };
                let f = self.finish_of(&exec, &stale, self.report(1, Ending::Success));
                assert!(matches!(
                    self.store.finish_attempt(f).await,
                    Err(StoreError::Fenced(_))
                ));
                false
            }
            Op::Shutdown(i) => {
                let Some(exec) = self.execution(*i) else {
                    return false;
                };
                let Some(a) = self.running.get(&exec).cloned() else {
                    return false;
                };
                let mut f = self.finish_of(&exec, &a, self.report(a.number, Ending::Killed));
                f.shutdown = true;
                let out = self.store.finish_attempt(f).await.unwrap();
                self.running.remove(&exec);
                self.check_outcome(&exec, &out).await;
                true
            }
            Op::Control(i, c) => {
                let Some(exec) = self.execution(*i) else {
                    return false;
                };
                match self.store.control(&exec, *c).await {
                    Ok(out) => {
                        self.check_outcome(&exec, &out).await;
                        true
                    }
                    Err(StoreError::Forbidden(_)) => false,
                    Err(e) => panic!("control: {e}"),
                }
            }
            Op::Crash => {
                // A new process: the old one's writer is gone with it.
                let store = SqliteStore::open_with_clock(&self.path, self.clock.clone())
                    .await
                    .unwrap();
                self.store = store;
                let rec = self.store.recover().await.unwrap();
                assert_eq!(rec.crashed_attempts as usize, self.running.len());
                self.running.clear();
                true
            }
            Op::Advance(ms) => {
                self.clock.advance(Duration::from_millis(*ms));
                true
            }
        }
    }

    /// The task run an execution is at: the latest not ended, else the
    /// latest (a one-action task has one).
    async fn run_of(&self, exec: &str) -> String {
        let e = self.store.execution(exec, true).await.unwrap().unwrap();
        let runs = e.task_runs.unwrap();
        runs.iter()
            .rev()
            .find(|r| !r.state.is_terminal())
            .or(runs.last())
            .unwrap()
            .id
            .clone()
    }

    /// What a call answered is what the store now holds.
    async fn check_outcome(&self, exec: &str, out: &PlanOutcome) {
        let e = self.store.execution(exec, false).await.unwrap().unwrap();
        assert_eq!(e.state, out.state, "the answer is the plan's own state");
    }

    /// Every write before this is committed once it returns.
    async fn barrier(&self) {
        self.store.renew_leases("nobody", 0).await.unwrap();
    }
}

/// Every row of every table, in a stable order.
fn dump(path: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut out = Vec::new();
    for table in [
        "executions",
        "task_runs",
        "attempts",
        "events",
        "media",
        "logs",
    ] {
        let mut st = c
            .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
            .unwrap();
        let n = st.column_count();
        let mut rows = st.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let cols: Vec<String> = (0..n)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect();
            out.push(format!("{table}: {}", cols.join(" | ")));
        }
    }
    out
}

fn parse<T: std::str::FromStr<Err = String>>(s: &str) -> T {
    s.parse().unwrap()
}

/// The invariants, read from the rows.
fn check_invariants(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    let executions: Vec<(String, String)> = c
        .prepare("SELECT id, state FROM executions")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (id, state) in executions {
        let state: ExecutionState = parse(&state);
        let runs: Vec<(String, String, i64)> = c
            .prepare("SELECT id, state, attempts FROM task_runs WHERE execution_id = ?")
            .unwrap()
            .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let all_terminal = runs
            .iter()
            .all(|(_, s, _)| parse::<TaskRunState>(s).is_terminal());
        // A flow runs one step at a time here (its for_each one item at a
        // time): never two task runs waiting or running at once.
        let live = runs
            .iter()
            .filter(|(_, s, _)| !parse::<TaskRunState>(s).is_terminal())
            .count();
        assert!(
            live <= 1,
            "execution {id} has {live} task runs not ended: {runs:?}"
        );
        assert_eq!(
            state.is_terminal(),
            all_terminal,
            "execution {id} is {state} with task runs {runs:?}"
        );

        // Every state change has its event: the recorded changes chain up
        // from creation to the state stored now.
        let changes: Vec<(Option<String>, Option<String>)> = c
            .prepare("SELECT from_state, to_state FROM events WHERE execution_id = ? AND kind = 'execution.state' ORDER BY id")
            .unwrap()
            .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut at: Option<String> = None;
        for (from, to) in &changes {
            assert_eq!(from, &at, "execution {id}: events {changes:?}");
            assert_ne!(from, to, "execution {id}: an event that changes nothing");
            at = to.clone();
        }
        assert_eq!(at.as_deref(), Some(state.as_str()), "execution {id}");

        for (run, run_state, attempts) in &runs {
            let changes: Vec<(Option<String>, Option<String>)> = c
                .prepare("SELECT from_state, to_state FROM events WHERE execution_id = ? AND kind = 'task_run.state' AND json_extract(detail, '$.task_run_id') = ? ORDER BY id")
                .unwrap()
                .query_map([&id, run], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            // A first task run is created with its execution; a flow's
            // later ones by an event from nothing.
            let mut at = "CREATED".to_string();
            for (i, (from, to)) in changes.iter().enumerate() {
                if i > 0 || from.is_some() {
                    assert_eq!(from.as_deref(), Some(at.as_str()), "run {run}: {changes:?}");
                }
                at = to.clone().unwrap();
            }
            assert_eq!(&at, run_state, "run {run}");

            let numbers: Vec<(i64, String)> = c
                .prepare(
                    "SELECT number, status FROM attempts WHERE task_run_id = ? ORDER BY number",
                )
                .unwrap()
                .query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let expected: Vec<i64> = (1..=*attempts).collect();
            let got: Vec<i64> = numbers.iter().map(|(n, _)| *n).collect();
            assert_eq!(got, expected, "run {run}: attempt numbers without gaps");
            let ok = numbers.iter().filter(|(_, s)| s == "success").count();
            assert!(ok <= 1, "run {run}: {ok} successful attempts");
            let running = numbers.iter().filter(|(_, s)| s == "running").count();
            assert_eq!(
                running,
                usize::from(run_state == "RUNNING"),
                "run {run} is {run_state} with {running} attempts running"
            );
        }
    }
}

async fn drive(ops: Vec<Op>) {
    drive_with(World::new().await, ops).await
}

async fn drive_with(mut w: World, ops: Vec<Op>) {
    w.apply(&Op::Trigger).await;
    w.barrier().await;
    for op in &ops {
        let before = dump(&w.path);
        let accepted = w.apply(op).await;
        w.barrier().await;
        if !accepted {
            assert_eq!(before, dump(&w.path), "refused {op:?} changed rows");
        }
        check_invariants(&w.path);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_events_keep_the_store_consistent(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(drive(ops));
    }

    #[test]
    fn random_events_keep_a_flow_consistent(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { drive_with(World::with_task(flow_task()).await, ops).await });
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The reproduction: a cancel during a retry's backoff.
#[test]
fn cancelling_during_a_backoff_ends_the_execution_killed() {
    rt().block_on(async {
        let mut w = World::new().await;
        w.apply(&Op::Trigger).await;
        assert!(w.apply(&Op::Claim(0, 0)).await);
        w.apply(&Op::Finish(0, Ending::Failed(ErrorKind::ActionRetryable)))
            .await;
        let exec = w.executions[0].clone();
        let out = w.store.control(&exec, Control::Cancel).await.unwrap();
        assert_eq!(out.state, ExecutionState::Killed);
        assert!(out.interrupt.is_empty() && out.runnable.is_empty());
        let e = w.store.execution(&exec, true).await.unwrap().unwrap();
        assert_eq!(e.state, ExecutionState::Killed);
        assert_eq!(e.task_runs.unwrap()[0].state, TaskRunState::Killed);
        // The timer that was set for the retry finds nothing to run.
        w.clock.advance(Duration::from_secs(30));
        assert!(!w.apply(&Op::Claim(0, 0)).await);
        check_invariants(&w.path);
    });
}

#[test]
fn controls_during_a_backoff_a_claim_and_after_a_crash() {
    use Control::*;
    for (setup, controls) in [
        // During a backoff.
        (
            vec![
                Op::Claim(0, 0),
                Op::Finish(0, Ending::Failed(ErrorKind::Trap)),
            ],
            vec![Pause, Resume, Cancel, Restart],
        ),
        // Right after a claim: the attempt runs.
        (vec![Op::Claim(0, 0)], vec![Pause, Resume, Cancel, Restart]),
        // After a crash: recovery scheduled a retry.
        (
            vec![Op::Claim(0, 0), Op::Crash],
            vec![Pause, Resume, Restart, Cancel],
        ),
    ] {
        for c in controls {
            rt().block_on(async {
                let mut w = World::new().await;
                w.apply(&Op::Trigger).await;
                for op in &setup {
                    w.apply(op).await;
                }
                w.barrier().await;
                let before = dump(&w.path);
                let accepted = w.apply(&Op::Control(0, c)).await;
                w.barrier().await;
                if !accepted {
                    assert_eq!(before, dump(&w.path));
                }
                // Whatever it did, the attempt can still end and the
                // execution settles.
                w.apply(&Op::Finish(0, Ending::Success)).await;
                w.barrier().await;
                check_invariants(&w.path);
            });
        }
    }
}

#[test]
fn a_cancel_racing_a_claim_leaves_a_consistent_execution() {
    rt().block_on(async {
        for _ in 0..20 {
            let mut w = World::new().await;
            w.apply(&Op::Trigger).await;
            let exec = w.executions[0].clone();
            let run = w.run_of(&exec).await;
            let World {
                _dir, path, store, ..
            } = w;
            let store = Arc::new(store);
            let (claim, cancel) = tokio::join!(
                store.start_attempt(&run, "worker-0", 0),
                store.control(&exec, Control::Cancel)
            );
            store.renew_leases("nobody", 0).await.unwrap();
            let cancel = cancel.unwrap();
            match claim {
                // Claimed first: the cancel must interrupt it.
                Ok(_) => assert_eq!(
                    (cancel.state, cancel.interrupt.len()),
                    (ExecutionState::Killing, 1)
                ),
                // Cancelled first: nothing to claim.
                Err(StoreError::Forbidden(_)) => assert_eq!(cancel.state, ExecutionState::Killed),
                Err(e) => panic!("{e}"),
            }
            check_invariants(&path);
        }
    });
}

/// The flow world does drive a flow to its end: each claim and finish
/// moves it one task run on (a, the three items of b, c).
#[test]
fn the_flow_world_runs_every_step() {
    rt().block_on(async {
        let mut w = World::with_task(flow_task()).await;
        w.apply(&Op::Trigger).await;
        for _ in 0..5 {
            assert!(w.apply(&Op::Claim(0, 0)).await);
            assert!(w.apply(&Op::Finish(0, Ending::Success)).await);
        }
        w.barrier().await;
        let exec = w.executions[0].clone();
        let e = w.store.execution(&exec, true).await.unwrap().unwrap();
        assert_eq!(e.state, ExecutionState::Success);
        let steps: Vec<(String, Option<u32>)> = e
            .task_runs
            .unwrap()
            .iter()
            .map(|r| (r.step.clone(), r.index))
            .collect();
        assert_eq!(
            steps,
            [
                ("a".to_string(), None),
                ("b".to_string(), Some(0)),
                ("b".to_string(), Some(1)),
                ("b".to_string(), Some(2)),
                ("c".to_string(), None)
            ]
        );
        assert_eq!(e.outputs.get("items"), Some(&json!(3)));
        check_invariants(&w.path);
    });
}

/// Items run side by side: each item's claim and finish is planned on the
/// task runs it needs (the items that succeeded left out, those running
/// counted), which the store's test build checks against a plan on every
/// task run at each event; a warning, a retry, and a cancel while items
/// run (read whole) end as they would.
#[test]
fn items_side_by_side_are_planned_on_what_they_need() {
    rt().block_on(async {
        let mut t = task();
        t.id = "0192f000-0000-7000-8000-000000000003".into();
        t.spec = serde_json::from_value(json!({
            "name": "items",
            "retry": {"max_attempts": 2, "initial_backoff": "1s"},
            "steps": [
                {"name": "each", "for_each": {"items": "[0, 1, 2, 3, 4, 5, 6, 7]", "concurrency": 3,
                    "step": {"action": "noop", "input": {"n": "{{ item }}"}}}},
                {"name": "after", "action": "noop", "input": {"all": "{{ steps.each.outputs }}"}}
            ]
        }))
        .unwrap();
        let w = World::with_task(t).await;
        let exec = uuid::Uuid::now_v7().to_string();
        let (_, created) = w
            .store
            .create_execution(http_execution(&exec, &w.task))
            .await
            .unwrap();
        assert!(created);
        let live = |e: &crate::model::execution::Execution| -> Vec<(String, Option<u32>)> {
            e.task_runs
                .as_ref()
                .unwrap()
                .iter()
                .filter(|r| !r.state.is_terminal())
                .map(|r| (r.id.clone(), r.index))
                .collect()
        };
        let mut running: BTreeMap<u32, Running> = BTreeMap::new();
        let claim = |run: String| async {
            match w.store.start_attempt(&run, "w", 0).await.unwrap() {
                Claimed::Started(s) => Running {
                    attempt_id: s.attempt_id,
                    run,
                    worker: "w".into(),
                    fence: s.fence,
                    number: s.number,
                },
                other => panic!("{other:?}"),
            }
        };
        // Items 0-2 start; 1 succeeds, then 0 (with a warning), then 2 fails
        // once and is retried: a new item starts as each ends.
        let e = w.store.execution(&exec, true).await.unwrap().unwrap();
        assert_eq!(live(&e).len(), 3);
        for (id, i) in live(&e) {
            running.insert(i.unwrap(), claim(id).await);
        }
        for (i, ending) in [
            (1, Ending::Success),
            (0, Ending::Warning),
            (2, Ending::Failed(ErrorKind::ActionRetryable)),
        ] {
            let a = running.remove(&i).unwrap();
            let mut report = w.report(a.number, ending);
            report.outputs.insert("i".into(), json!(i));
            w.store
                .finish_attempt(w.finish_of(&exec, &a, report))
                .await
                .unwrap();
            let e = w.store.execution(&exec, true).await.unwrap().unwrap();
            assert!(live(&e).len() <= 3, "concurrency: {:?}", live(&e));
        }
        let e = w.store.execution(&exec, true).await.unwrap().unwrap();
        let waiting: Vec<Option<u32>> = live(&e).iter().map(|(_, i)| *i).collect();
        assert_eq!(
            waiting,
            [Some(2), Some(3), Some(4)],
            "item 2 retrying, 3 and 4 started"
        );
        // Item 3 runs; a cancel kills the waiting ones and waits for it.
        let r3 = live(&e)
            .iter()
            .find(|(_, i)| *i == Some(3))
            .unwrap()
            .0
            .clone();
        let a3 = claim(r3).await;
        let out = w.store.control(&exec, Control::Cancel).await.unwrap();
        assert_eq!(out.state, ExecutionState::Killing);
        let mut report = w.report(a3.number, Ending::Success);
        report.outputs.insert("i".into(), json!(3));
        let out = w
            .store
            .finish_attempt(w.finish_of(&exec, &a3, report))
            .await
            .unwrap();
        assert_eq!(out.state, ExecutionState::Killed);
        // Restarted, the flow runs the killed items and the rest, then the
        // step after, which reads every item's outputs.
        w.store.control(&exec, Control::Restart).await.unwrap();
        loop {
            let e = w.store.execution(&exec, true).await.unwrap().unwrap();
            let Some((run, _)) = live(&e).into_iter().next() else {
                break;
            };
            w.clock.advance(Duration::from_secs(5));
            let a = claim(run).await;
            let mut report = w.report(a.number, Ending::Success);
            report.outputs.insert("done".into(), json!(true));
            w.store
                .finish_attempt(w.finish_of(&exec, &a, report))
                .await
                .unwrap();
        }
        let e = w.store.execution(&exec, true).await.unwrap().unwrap();
        assert_eq!(e.state, ExecutionState::Warning, "item 0 warned");
        let runs = e.task_runs.unwrap();
        let after = runs.iter().find(|r| r.step == "after").unwrap();
        let all = after.input.as_ref().unwrap()["all"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(all, 8, "the step after sees every item's outputs");
    });
}
