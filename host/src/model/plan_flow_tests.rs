//! The planner's flow cases: steps one after another, `if`, `save`,
//! `allow_failure`, templates that fail, the task's `outputs`, restart.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use ExecutionState as E;
use TaskRunState as R;

/// An execution of a flow, planned event by event as a store would apply
/// the plans (runs, new runs, variables, outputs, what attempts produced).
struct Sim {
    snap: Snapshot,
    outputs: Option<BTreeMap<String, Value>>,
    errors: Vec<(String, AttemptError)>,
    next: u32,
}

impl Sim {
    fn new(task: Value) -> Sim {
        let mut task = task;
        task["name"] = json!("flow");
        let spec: TaskSpec = serde_json::from_value(task).unwrap();
        let problems = spec.problems(&Default::default());
        assert!(problems.is_empty(), "{problems:?}");
        let first = spec.first_step().to_string();
        let max_attempts = spec.retry_of(&first).max_attempts;
        Sim {
            snap: Snapshot {
                execution_id: "e".into(),
                state: E::Created,
                retry: spec.retry,
                runs: vec![RunSnapshot {
                    id: "r1".into(),
                    step: first,
                    item: None,
                    state: R::Created,
                    attempts: 0,
                    max_attempts,
                    fence: 0,
                    owner: None,
                    not_before: None,
                }],
                flow: Some(FlowSnapshot {
                    input: json!({"who": "Ada", "n": 2}).into(),
                    vars: spec.variables.clone(),
                    spec: Arc::new(spec),
                    produced: BTreeMap::new(),
                    items: BTreeMap::new(),
                    new_ids: (2..200).map(|i| format!("r{i}")).collect(),
                    left_out: None,
                    items_ahead: None,
                }),
            },
            outputs: None,
            errors: Vec::new(),
            next: 2,
        }
    }

    fn flow(&self) -> &FlowSnapshot {
        self.snap.flow.as_ref().unwrap()
    }

    fn run(&self, step: &str) -> &RunSnapshot {
        self.snap.runs.iter().find(|r| r.step == step).unwrap()
    }

    /// The task run of item `i` of a for_each step.
    fn item(&self, step: &str, i: u32) -> &RunSnapshot {
        self.snap
            .runs
            .iter()
            .find(|r| r.step == step && r.item == Some(i))
            .unwrap()
    }

    /// Claims a given task run.
    fn claim_run(&mut self, run: &str) -> Plan {
        let p = plan(
            &self.snap,
            &Event::Claim {
                run: run.into(),
                worker: "w".into(),
                now_ms: 0,
            },
        )
        .unwrap();
        self.apply(&p);
        p
    }

    /// Ends a given task run's running attempt.
    fn finish_run(&mut self, run: &str, status: AttemptStatus, outputs: Value) -> Plan {
        let r = self.snap.runs.iter().find(|r| r.id == run).unwrap().clone();
        let mut snap = self.snap.clone();
        if matches!(status, AttemptStatus::Success | AttemptStatus::Warning) {
            snap.flow.as_mut().unwrap().produced.insert(
                r.id.clone(),
                json!({"outputs": outputs, "result": null}).into(),
            );
        }
        let error = (status == AttemptStatus::Failed).then_some(ErrorKind::ActionFatal);
        let p = plan(
            &snap,
            &Event::AttemptFinished {
                run: r.id.clone(),
                worker: "w".into(),
                fence: r.fence,
                status,
                error,
                now_ms: 0,
                jitter: 0.0,
            },
        )
        .unwrap();
        self.snap.flow = snap.flow;
        self.apply(&p);
        p
    }

    fn apply(&mut self, plan: &Plan) {
        self.snap.state = plan.state;
        for c in &plan.runs {
            let r = self.snap.runs.iter_mut().find(|r| r.id == c.run).unwrap();
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
        for new in &plan.new_runs {
            self.snap.runs.push(RunSnapshot {
                id: new.id.clone(),
                step: new.step.clone(),
                item: new.item.as_ref().map(|(i, _)| *i),
                state: new.state,
                attempts: 0,
                max_attempts: new.max_attempts,
                fence: 0,
                owner: None,
                not_before: None,
            });
            let flow = self.snap.flow.as_mut().unwrap();
            if let Some((_, item)) = &new.item {
                flow.items.insert(new.id.clone(), item.clone().into());
            }
            if let Some(output) = &new.output {
                flow.produced.insert(new.id.clone(), output.clone().into());
            }
            self.next += 1;
            let id = format!("r{}", self.next + 1000);
            flow.new_ids.remove(0);
            flow.new_ids.push(id);
        }
        if let Some(vars) = &plan.vars {
            self.snap.flow.as_mut().unwrap().vars = vars.clone();
        }
        if let Some(o) = &plan.outputs {
            self.outputs = Some(o.clone());
        }
        if let Some(e) = &plan.run_error {
            self.errors.push(e.clone());
        }
    }

    /// Claims the step's task run; returns the plan (applied).
    fn claim(&mut self, step: &str) -> Plan {
        let run = self.run(step).id.clone();
        self.claim_run(&run)
    }

    /// Ends the step's running attempt with `status`, having produced
    /// `outputs` (when it succeeded); returns the plan (applied).
    fn finish(&mut self, step: &str, status: AttemptStatus, outputs: Value) -> Plan {
        let run = self.run(step).id.clone();
        self.finish_run(&run, status, outputs)
    }

    fn states(&self) -> Vec<(String, R)> {
        self.snap
            .runs
            .iter()
            .map(|r| (r.step.clone(), r.state))
            .collect()
    }
}

fn started_input(p: &Plan) -> Value {
    assert!(
        matches!(p.attempt, Some(AttemptChange::Start { .. })),
        "{p:?}"
    );
    p.input.clone().expect("a rendered input")
}

#[test]
fn steps_run_one_after_another_with_outputs_passed_on() {
    let mut sim = Sim::new(json!({"steps": [
        {"name": "list", "action": "noop", "input": {"who": "{{ inputs.who }}"}},
        {"name": "count", "action": "noop",
         "input": {"items": "{{ steps.list.outputs.items }}", "n": "{{ steps.list.outputs.items | length }}"}}
    ]}));
    let p = sim.claim("list");
    assert_eq!(started_input(&p), json!({"who": "Ada"}));
    assert_eq!(p.state, E::Running);
    let p = sim.finish("list", AttemptStatus::Success, json!({"items": [1, 2, 3]}));
    // The next step's task run is created and queued; the flow goes on.
    let new = p.new_runs.first().cloned().expect("the next step");
    assert_eq!(new.step, "count");
    assert_eq!(
        p.timers,
        vec![Timer::Runnable {
            run: new.id.clone(),
            not_before: None
        }]
    );
    assert_eq!(p.state, E::Running);
    assert!(
        p.events.iter().any(|e| e.kind == EventKind::TaskRunState
            && e.from.is_none()
            && e.to == Some("CREATED"))
    );
    let p = sim.claim("count");
    assert_eq!(started_input(&p), json!({"items": [1, 2, 3], "n": 3}));
    let p = sim.finish("count", AttemptStatus::Success, json!({"total": 6}));
    assert_eq!(p.state, E::Success);
    assert!(p.new_runs.is_empty());
}

#[test]
fn a_false_if_skips_the_step_without_an_attempt() {
    let mut sim = Sim::new(json!({"steps": [
        {"name": "a", "action": "noop"},
        {"name": "b", "action": "noop", "if": "inputs.n > 5"},
        {"name": "c", "action": "noop", "if": "{{ steps.b.state == 'SKIPPED' }}"}
    ]}));
    sim.claim("a");
    sim.finish("a", AttemptStatus::Success, json!({}));
    let p = sim.claim("b");
    assert!(p.attempt.is_none(), "skipped: {p:?}");
    assert_eq!(p.new_runs.first().map(|n| n.step.as_str()), Some("c"));
    let p = sim.claim("c");
    started_input(&p);
    sim.finish("c", AttemptStatus::Success, json!({}));
    assert_eq!(sim.snap.state, E::Success);
    assert_eq!(
        sim.states(),
        vec![
            ("a".into(), R::Success),
            ("b".into(), R::Skipped),
            ("c".into(), R::Success)
        ]
    );
}

#[test]
fn a_failed_step_stops_the_flow_unless_its_failure_is_allowed() {
    let steps = json!([
        {"name": "a", "action": "noop"},
        {"name": "b", "action": "noop"}
    ]);
    let mut sim = Sim::new(json!({"steps": steps}));
    sim.claim("a");
    let p = sim.finish("a", AttemptStatus::Failed, json!({}));
    assert_eq!(p.state, E::Failed);
    assert!(p.new_runs.is_empty(), "later steps never start");

    let mut allowed = steps.clone();
    allowed[0]["allow_failure"] = json!(true);
    let mut sim = Sim::new(json!({"steps": allowed}));
    sim.claim("a");
    let p = sim.finish("a", AttemptStatus::Failed, json!({}));
    assert_eq!(p.state, E::Running);
    assert_eq!(p.new_runs.first().map(|n| n.step.clone()), Some("b".into()));
    sim.claim("b");
    let p = sim.finish("b", AttemptStatus::Success, json!({}));
    assert_eq!(p.state, E::Warning);
}

#[test]
fn a_template_that_fails_fails_its_step_naming_the_step_and_expression() {
    let mut sim = Sim::new(json!({"steps": [
        {"name": "a", "action": "noop"},
        {"name": "b", "action": "noop", "input": {"x": "{{ steps.a.outputs.missing }}"}}
    ]}));
    sim.claim("a");
    sim.finish("a", AttemptStatus::Success, json!({"present": 1}));
    let p = sim.claim("b");
    assert!(p.attempt.is_none());
    assert_eq!(p.state, E::Failed);
    assert_eq!(sim.run("b").state, R::Failed);
    let (run, error) = sim.errors.last().unwrap();
    assert_eq!(run, &sim.run("b").id);
    assert_eq!(error.kind, ErrorKind::TemplateError);
    assert!(
        error.message.contains("step b, input.x"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("steps.a.outputs.missing"),
        "{}",
        error.message
    );
}

#[test]
fn save_sets_variables_that_later_steps_and_outputs_read() {
    let mut sim = Sim::new(json!({
        "variables": {"total": 0, "label": "none"},
        "steps": [
            {"name": "a", "action": "noop", "save": {"total": "{{ outputs.count + vars.total }}", "label": "a-{{ outputs.count }}"}},
            {"name": "b", "action": "noop", "input": {"t": "{{ vars.total }}"}, "save": {"total": "{{ vars.total * 10 }}"}}
        ],
        "outputs": {"final": "{{ vars.total }}", "from_a": "{{ steps.a.outputs.count }}"}
    }));
    sim.claim("a");
    let p = sim.finish("a", AttemptStatus::Success, json!({"count": 4}));
    assert_eq!(
        p.vars,
        Some(
            json!({"total": 4, "label": "a-4"})
                .as_object()
                .unwrap()
                .clone()
        )
    );
    let p = sim.claim("b");
    assert_eq!(started_input(&p), json!({"t": 4}));
    let p = sim.finish("b", AttemptStatus::Success, json!({}));
    assert_eq!(p.state, E::Success);
    assert_eq!(sim.flow().vars["total"], json!(40));
    assert_eq!(
        sim.outputs,
        Some(BTreeMap::from([
            ("final".to_string(), json!(40)),
            ("from_a".to_string(), json!(4)),
        ]))
    );
}

#[test]
fn a_save_that_fails_fails_the_step_though_its_attempt_succeeded() {
    let mut sim = Sim::new(json!({
        "variables": {"v": 0},
        "steps": [
            {"name": "a", "action": "noop", "save": {"v": "{{ outputs.nope }}"}},
            {"name": "b", "action": "noop"}
        ]
    }));
    sim.claim("a");
    let p = sim.finish("a", AttemptStatus::Success, json!({}));
    assert!(matches!(
        p.attempt,
        Some(AttemptChange::Finish {
            status: AttemptStatus::Success,
            ..
        })
    ));
    assert_eq!(sim.run("a").state, R::Failed);
    assert_eq!(p.state, E::Failed);
    assert_eq!(sim.errors.last().unwrap().1.kind, ErrorKind::TemplateError);
}

#[test]
fn restart_reruns_the_step_that_stopped_the_flow_and_keeps_the_rest() {
    let mut sim = Sim::new(json!({"steps": [
        {"name": "a", "action": "noop", "allow_failure": true},
        {"name": "b", "action": "noop", "save": {}},
        {"name": "c", "action": "noop", "input": {"from_b": "{{ steps.b.outputs.v }}"}}
    ]}));
    sim.claim("a");
    sim.finish("a", AttemptStatus::Failed, json!({}));
    sim.claim("b");
    sim.finish("b", AttemptStatus::Success, json!({"v": 7}));
    sim.claim("c");
    let p = sim.finish("c", AttemptStatus::Failed, json!({}));
    assert_eq!(p.state, E::Failed);

    let p = plan(&sim.snap, &Event::Restart).unwrap();
    sim.apply(&p);
    // Only c runs again: a's failure was allowed, b succeeded.
    let reset: Vec<_> = p.runs.iter().map(|c| (c.run.clone(), c.to)).collect();
    assert_eq!(reset, vec![(sim.run("c").id.clone(), R::Created)]);
    let p = sim.claim("c");
    assert_eq!(started_input(&p), json!({"from_b": 7}));
    let p = sim.finish("c", AttemptStatus::Success, json!({}));
    assert_eq!(p.state, E::Warning, "a's allowed failure still shows");
    assert_eq!(sim.run("c").attempts, 2);
}

#[test]
fn a_paused_flow_creates_its_next_step_but_does_not_start_it() {
    let mut sim = Sim::new(json!({"steps": [
        {"name": "a", "action": "noop"},
        {"name": "b", "action": "noop"}
    ]}));
    sim.claim("a");
    let p = plan(&sim.snap, &Event::Pause).unwrap();
    sim.apply(&p);
    let p = sim.finish("a", AttemptStatus::Success, json!({}));
    assert_eq!(p.state, E::Paused);
    assert!(!p.new_runs.is_empty());
    let b = sim.run("b").id.clone();
    assert!(matches!(
        plan(
            &sim.snap,
            &Event::Claim {
                run: b,
                worker: "w".into(),
                now_ms: 0
            }
        ),
        Err(Refusal::Forbidden(_))
    ));
    let p = plan(&sim.snap, &Event::Resume).unwrap();
    assert_eq!(p.timers.len(), 1, "resume queues the next step");
}

#[test]
fn every_planned_edge_of_a_flow_is_allowed_by_the_state_machine() {
    // The builder checks each edge as it plans; a flow exercising skip,
    // template failure and allowed failure plans without a refusal.
    let mut sim = Sim::new(json!({"steps": [
        {"name": "a", "action": "noop", "if": "false"},
        {"name": "b", "action": "noop", "allow_failure": true, "input": {"x": "{{ inputs.nope }}"}},
        {"name": "c", "action": "noop"}
    ]}));
    sim.claim("a");
    sim.claim("b");
    sim.claim("c");
    let p = sim.finish("c", AttemptStatus::Success, json!({}));
    assert_eq!(p.state, E::Warning);
    assert_eq!(
        sim.states(),
        vec![
            ("a".into(), R::Skipped),
            ("b".into(), R::Failed),
            ("c".into(), R::Success)
        ]
    );
}

#[test]
fn a_flow_killed_as_a_step_finished_restarts_with_its_next_step() {
    let mut sim = Sim::new(json!({"steps": [
        {"name": "a", "action": "noop"},
        {"name": "b", "action": "noop"}
    ]}));
    sim.claim("a");
    let p = plan(&sim.snap, &Event::Cancel).unwrap();
    sim.apply(&p);
    assert_eq!(sim.snap.state, E::Killing);
    // The attempt had already succeeded: its result is kept, the flow ends KILLED.
    let p = sim.finish("a", AttemptStatus::Success, json!({}));
    assert_eq!(p.state, E::Killed);
    assert!(p.new_runs.is_empty());
    let p = plan(&sim.snap, &Event::Restart).unwrap();
    assert_eq!(p.state, E::Restarted);
    assert_eq!(p.new_runs.first().map(|n| n.step.as_str()), Some("b"));
    sim.apply(&p);
    sim.claim("b");
    let p = sim.finish("b", AttemptStatus::Success, json!({}));
    assert_eq!(p.state, E::Success);
}

#[test]
fn a_step_backs_off_by_its_own_retry_policy() {
    let mut sim = Sim::new(json!({
        "retry": {"max_attempts": 3, "initial_backoff": "1s", "jitter": 0.0},
        "steps": [{"name": "a", "action": "noop",
                   "retry": {"max_attempts": 3, "initial_backoff": "40s", "max_backoff": "1m", "jitter": 0.0}}]
    }));
    sim.claim("a");
    let run = sim.run("a").clone();
    let p = plan(
        &sim.snap,
        &Event::AttemptFinished {
            run: run.id.clone(),
            worker: "w".into(),
            fence: run.fence,
            status: AttemptStatus::Failed,
            error: Some(ErrorKind::ActionRetryable),
            now_ms: 0,
            jitter: 0.0,
        },
    )
    .unwrap();
    assert_eq!(p.runs[0].to, R::Retrying);
    assert_eq!(p.runs[0].not_before, Some(40_000));
}

#[test]
fn a_failed_outputs_template_fails_the_execution_not_a_step() {
    let mut sim = Sim::new(json!({
        "steps": [{"name": "a", "action": "noop"}],
        "outputs": {"x": "{{ steps.a.outputs.nope }}"}
    }));
    sim.claim("a");
    let p = sim.finish("a", AttemptStatus::Success, json!({}));
    assert_eq!(p.state, E::Failed);
    assert!(p.run_error.is_none(), "step a succeeded");
    let e = p.execution_error.expect("the execution's error");
    assert_eq!(e.kind, ErrorKind::TemplateError);
    assert!(e.message.contains("outputs.x"), "{}", e.message);
    assert_eq!(sim.run("a").state, R::Success);
}

fn each(concurrency: u32, child: Value) -> Value {
    json!({"steps": [
        {"name": "list", "action": "noop"},
        {"name": "pages", "for_each": {"items": "steps.list.outputs.urls", "concurrency": concurrency, "step": child}},
        {"name": "report", "action": "noop", "input": {
            "n": "{{ steps.pages.outputs | length }}", "all": "{{ steps.pages.outputs }}"}}
    ]})
}

fn live(sim: &Sim, step: &str) -> usize {
    sim.snap
        .runs
        .iter()
        .filter(|r| r.step == step && !r.state.is_terminal())
        .count()
}

#[test]
fn for_each_runs_one_task_run_per_item_never_more_than_its_concurrency() {
    let mut sim = Sim::new(each(
        2,
        json!({"action": "noop", "input": {"url": "{{ item }}", "i": "{{ index }}"}}),
    ));
    sim.claim("list");
    let urls = json!(["u0", "u1", "u2", "u3", "u4"]);
    let p = sim.finish("list", AttemptStatus::Success, json!({"urls": urls}));
    assert_eq!(p.new_runs.len(), 2, "the first two items");
    assert_eq!(p.timers.len(), 2);
    assert_eq!(live(&sim, "pages"), 2);
    // Items end out of order; a new one starts as each ends.
    let r1 = sim.item("pages", 1).id.clone();
    let p = sim.claim_run(&r1);
    assert_eq!(started_input(&p), json!({"url": "u1", "i": 1}));
    let p = sim.finish_run(&r1, AttemptStatus::Success, json!({"v": 1}));
    assert_eq!(p.new_runs.len(), 1);
    assert_eq!(p.new_runs[0].item.as_ref().map(|(i, _)| *i), Some(2));
    for i in [0, 2, 3, 4] {
        assert!(live(&sim, "pages") <= 2, "concurrency");
        let id = sim.item("pages", i).id.clone();
        sim.claim_run(&id);
        sim.finish_run(&id, AttemptStatus::Success, json!({"v": i}));
    }
    assert_eq!(sim.snap.state, E::Running);
    let report = sim.claim("report");
    assert_eq!(
        started_input(&report),
        json!({"n": 5, "all": [{"v": 0}, {"v": 1}, {"v": 2}, {"v": 3}, {"v": 4}]})
    );
    let p = sim.finish("report", AttemptStatus::Success, json!({}));
    assert_eq!(p.state, E::Success);
}

#[test]
fn for_each_over_no_items_ends_at_once_and_the_flow_goes_on() {
    let mut sim = Sim::new(each(4, json!({"action": "noop"})));
    sim.claim("list");
    let p = sim.finish("list", AttemptStatus::Success, json!({"urls": []}));
    let made: Vec<(String, R)> = p
        .new_runs
        .iter()
        .map(|n| (n.step.clone(), n.state))
        .collect();
    assert_eq!(
        made,
        vec![("pages".into(), R::Success), ("report".into(), R::Created)]
    );
    let report = sim.claim("report");
    assert_eq!(started_input(&report), json!({"n": 0, "all": []}));
}

#[test]
fn a_failed_item_stops_new_items_and_the_flow_once_the_others_end() {
    let mut sim = Sim::new(each(2, json!({"action": "noop"})));
    sim.claim("list");
    sim.finish(
        "list",
        AttemptStatus::Success,
        json!({"urls": [1, 2, 3, 4]}),
    );
    let (a, b) = (
        sim.item("pages", 0).id.clone(),
        sim.item("pages", 1).id.clone(),
    );
    sim.claim_run(&a);
    sim.claim_run(&b);
    let p = sim.finish_run(&a, AttemptStatus::Failed, json!({}));
    assert!(p.new_runs.is_empty(), "no new item after a failure");
    assert_eq!(p.state, E::Running, "item 1 still runs");
    let p = sim.finish_run(&b, AttemptStatus::Success, json!({}));
    assert_eq!(p.state, E::Failed);
    assert_eq!(
        sim.snap.runs.iter().filter(|r| r.step == "pages").count(),
        2
    );

    // Restart re-runs the failed item; the rest then follow.
    let p = plan(&sim.snap, &Event::Restart).unwrap();
    sim.apply(&p);
    sim.claim_run(&a);
    let p = sim.finish_run(&a, AttemptStatus::Success, json!({}));
    assert_eq!(p.new_runs.len(), 2, "items 2 and 3");
}

#[test]
fn allowed_item_failures_go_on_and_end_warning() {
    let mut sim = Sim::new(each(4, json!({"action": "noop", "allow_failure": true})));
    sim.claim("list");
    sim.finish("list", AttemptStatus::Success, json!({"urls": [1, 2]}));
    let (a, b) = (
        sim.item("pages", 0).id.clone(),
        sim.item("pages", 1).id.clone(),
    );
    sim.claim_run(&a);
    sim.finish_run(&a, AttemptStatus::Failed, json!({}));
    sim.claim_run(&b);
    sim.finish_run(&b, AttemptStatus::Success, json!({"ok": true}));
    let report = sim.claim("report");
    assert_eq!(
        started_input(&report),
        json!({"n": 2, "all": [null, {"ok": true}]})
    );
    let p = sim.finish("report", AttemptStatus::Success, json!({}));
    assert_eq!(p.state, E::Warning);
}

#[test]
fn items_that_are_not_an_array_fail_the_flow_naming_the_step() {
    let mut sim = Sim::new(each(2, json!({"action": "noop"})));
    sim.claim("list");
    let p = sim.finish(
        "list",
        AttemptStatus::Success,
        json!({"urls": "not a list"}),
    );
    assert_eq!(p.state, E::Failed);
    let e = p.execution_error.expect("the execution's error");
    assert_eq!(e.kind, ErrorKind::TemplateError);
    assert!(
        e.message.contains("step pages, for_each.items"),
        "{}",
        e.message
    );
    assert!(e.message.contains("not an array"), "{}", e.message);
}

#[test]
fn cancelling_a_for_each_kills_its_waiting_items_and_waits_for_running_ones() {
    let mut sim = Sim::new(each(2, json!({"action": "noop"})));
    sim.claim("list");
    sim.finish("list", AttemptStatus::Success, json!({"urls": [1, 2, 3]}));
    let a = sim.item("pages", 0).id.clone();
    sim.claim_run(&a);
    let p = plan(&sim.snap, &Event::Cancel).unwrap();
    sim.apply(&p);
    assert_eq!(p.state, E::Killing);
    assert_eq!(sim.item("pages", 1).state, R::Killed);
    let p = sim.finish_run(&a, AttemptStatus::Killed, json!({}));
    assert_eq!(p.state, E::Killed);
    assert!(p.new_runs.is_empty());
}

fn fan() -> Value {
    json!({"steps": [
        {"name": "first", "action": "noop"},
        {"name": "both", "parallel": [
            {"name": "left", "action": "noop", "input": {"from": "{{ steps.first.outputs.v }}"}},
            {"name": "right", "action": "noop"}
        ]},
        {"name": "last", "action": "noop", "input": {
            "l": "{{ steps.left.outputs.v }}", "all": "{{ steps.both.outputs }}"}}
    ]})
}

#[test]
fn parallel_steps_start_at_once_and_the_flow_waits_for_all() {
    let mut sim = Sim::new(fan());
    sim.claim("first");
    let p = sim.finish("first", AttemptStatus::Success, json!({"v": 1}));
    let made: Vec<&str> = p.new_runs.iter().map(|n| n.step.as_str()).collect();
    assert_eq!(made, ["left", "right"]);
    let p = sim.claim("right");
    started_input(&p);
    let p = sim.finish("right", AttemptStatus::Success, json!({"v": "r"}));
    assert!(p.new_runs.is_empty(), "left still to run");
    let p = sim.claim("left");
    assert_eq!(started_input(&p), json!({"from": 1}));
    let p = sim.finish("left", AttemptStatus::Success, json!({"v": "l"}));
    assert_eq!(p.new_runs.first().map(|n| n.step.as_str()), Some("last"));
    let p = sim.claim("last");
    assert_eq!(
        started_input(&p),
        json!({"l": "l", "all": {"left": {"v": "l"}, "right": {"v": "r"}}})
    );
    let p = sim.finish("last", AttemptStatus::Success, json!({}));
    assert_eq!(p.state, E::Success);
}

#[test]
fn a_failed_parallel_step_fails_the_flow_once_the_others_end() {
    let mut sim = Sim::new(fan());
    sim.claim("first");
    sim.finish("first", AttemptStatus::Success, json!({"v": 1}));
    sim.claim("left");
    sim.claim("right");
    let p = sim.finish("left", AttemptStatus::Failed, json!({}));
    assert_eq!(p.state, E::Running, "right still runs");
    let p = sim.finish("right", AttemptStatus::Success, json!({}));
    assert_eq!(p.state, E::Failed);
    assert!(p.new_runs.is_empty());
    // Restart re-runs only the failed one, then the flow goes on.
    let p = plan(&sim.snap, &Event::Restart).unwrap();
    assert_eq!(p.runs.len(), 1);
    sim.apply(&p);
    sim.claim("left");
    let p = sim.finish("left", AttemptStatus::Success, json!({"v": 2}));
    assert_eq!(p.new_runs.first().map(|n| n.step.as_str()), Some("last"));
}

#[test]
fn a_parallel_step_whose_if_is_false_skips_all_of_its_steps() {
    let mut task = fan();
    task["steps"][1]["if"] = json!("steps.first.outputs.v > 5");
    task["steps"][2]["input"] = json!({"s": "{{ steps.both.state }}"});
    let mut sim = Sim::new(task);
    sim.claim("first");
    let p = sim.finish("first", AttemptStatus::Success, json!({"v": 1}));
    let made: Vec<(&str, R)> = p
        .new_runs
        .iter()
        .map(|n| (n.step.as_str(), n.state))
        .collect();
    assert_eq!(
        made,
        [
            ("left", R::Skipped),
            ("right", R::Skipped),
            ("last", R::Created)
        ]
    );
    let p = sim.claim("last");
    assert_eq!(started_input(&p), json!({"s": "SKIPPED"}));
}

#[test]
fn parallel_definitions_are_checked() {
    let mut spec: TaskSpec = serde_json::from_value(json!({"name": "x", "steps": [
        {"name": "a", "parallel": [
            {"name": "b", "action": "noop", "input": {"x": "{{ steps.c.outputs }}"}},
            {"name": "c", "action": "noop"}
        ]},
        {"name": "d", "action": "noop", "input": {"x": "{{ steps.b.outputs }}"}}
    ]}))
    .unwrap();
    let p = spec.problems(&Default::default());
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("steps.c is not a step before this one"),
        "{p:?}"
    );
    spec.steps[0].parallel.as_mut().unwrap()[1].name = "b".into();
    let p = spec.problems(&Default::default());
    assert!(p.iter().any(|x| x.contains("used twice")), "{p:?}");
}

/// What a store reads for an item's event: the items that succeeded left
/// out (but counted), the items not started yet as kept when the step
/// started. The next item comes from what was kept (its template is not
/// rendered again), and a template that reads the step's outputs gets the
/// plan refused as incomplete, to be planned on every task run.
#[test]
fn an_item_is_planned_without_the_items_that_succeeded() {
    let mut sim = Sim::new(each(
        2,
        json!({"action": "noop", "input": {"url": "{{ item }}"}}),
    ));
    sim.claim("list");
    let urls = json!(["u0", "u1", "u2", "u3", "u4"]);
    let p = sim.finish("list", AttemptStatus::Success, json!({"urls": urls}));
    let kept = p
        .items
        .clone()
        .expect("the items are kept as the step starts");
    assert_eq!(
        kept,
        ("pages".to_string(), urls.as_array().unwrap().clone())
    );
    for i in [0, 1] {
        let id = sim.item("pages", i).id.clone();
        sim.claim_run(&id);
        sim.finish_run(&id, AttemptStatus::Success, json!({"v": i}));
    }
    // As read for item 2's events: items 0 and 1 left out, and the list's
    // outputs gone, so that rendering `items` again would fail.
    let mut compact = sim.snap.clone();
    compact
        .runs
        .retain(|r| r.step != "pages" || r.item >= Some(2));
    let flow = compact.flow.as_mut().unwrap();
    flow.produced.clear();
    flow.left_out = Some(LeftOut {
        runs: Some(("pages".into(), 2)),
        live: 0,
        uncounted: None,
    });
    flow.items_ahead = Some(ItemsAhead {
        step: "pages".into(),
        total: 5,
        next: vec![(4, json!("u4").into())],
    });
    let mut part = Sim {
        snap: compact,
        outputs: None,
        errors: Vec::new(),
        next: sim.next,
    };
    let r2 = part.item("pages", 2).id.clone();
    // Items waiting or running may be counted instead of read: the same
    // plan, and a plan that must move them (a cancel) is incomplete.
    let r3 = part.item("pages", 3).id.clone();
    // Item 3 (waiting) counted as live instead of read.
    let counting_r3 = |snap: &Snapshot| {
        let mut counted = snap.clone();
        counted.runs.retain(|r| r.id != r3);
        counted
            .flow
            .as_mut()
            .unwrap()
            .left_out
            .as_mut()
            .unwrap()
            .live = 1;
        counted
    };
    let counted = counting_r3(&part.snap);
    assert_eq!(plan(&counted, &Event::Cancel), Err(Refusal::Incomplete));
    let claim2 = Event::Claim {
        run: r2.clone(),
        worker: "w".into(),
        now_ms: 0,
    };
    assert_eq!(plan(&counted, &claim2), plan(&part.snap, &claim2));
    let p = part.claim_run(&r2);
    assert_eq!(started_input(&p), json!({"url": "u2"}));
    let counted = counting_r3(&part.snap);
    let fence = part.snap.runs.iter().find(|r| r.id == r2).unwrap().fence;
    let finished = |snap: &Snapshot| {
        let mut snap = snap.clone();
        let flow = snap.flow.as_mut().unwrap();
        let out = json!({"outputs": {"v": 2}, "result": null});
        flow.produced.insert(r2.clone(), out.into());
        plan(
            &snap,
            &Event::AttemptFinished {
                run: r2.clone(),
                worker: "w".into(),
                fence,
                status: AttemptStatus::Success,
                error: None,
                now_ms: 0,
                jitter: 0.0,
            },
        )
    };
    assert_eq!(finished(&counted), finished(&part.snap));
    let p = part.finish_run(&r2, AttemptStatus::Success, json!({"v": 2}));
    let made: Vec<_> = p.new_runs.iter().map(|n| n.item.clone()).collect();
    assert_eq!(
        made,
        [Some((4, json!("u4")))],
        "the last item, from what was kept"
    );
    assert!(p.items.is_none(), "nothing rendered again");
    for i in [3, 4] {
        let id = part.item("pages", i).id.clone();
        part.claim_run(&id);
        part.finish_run(&id, AttemptStatus::Success, json!({"v": i}));
    }
    assert_eq!(part.snap.state, E::Running, "the report step is next");
    let report = part.run("report").id.clone();
    let claim = Event::Claim {
        run: report,
        worker: "w".into(),
        now_ms: 0,
    };
    assert_eq!(plan(&part.snap, &claim), Err(Refusal::Incomplete));
}

/// Without declared outputs, a flow that ends with a parallel step has
/// its steps' outputs by name, and one that ends with a for_each its
/// items' outputs in item order (under the step's name), whichever ended
/// last.
#[test]
fn a_flow_ending_with_parallel_or_for_each_has_that_steps_outputs() {
    let mut sim = Sim::new(json!({"steps": [
        {"name": "both", "parallel": [
            {"name": "left", "action": "noop"},
            {"name": "right", "action": "noop"}
        ]}
    ]}));
    sim.snap.runs.clear(); // such a flow is stored without a task run
    let p = plan(&sim.snap, &Event::Begin).unwrap();
    sim.apply(&p);
    for (step, v) in [("right", "r"), ("left", "l")] {
        sim.claim(step);
        sim.finish(step, AttemptStatus::Success, json!({"v": v}));
    }
    assert_eq!(sim.snap.state, E::Success);
    let outputs = sim.outputs.clone().expect("the parallel step's outputs");
    assert_eq!(
        Value::Object(outputs.into_iter().collect()),
        json!({"left": {"v": "l"}, "right": {"v": "r"}})
    );

    let mut sim = Sim::new(json!({"steps": [
        {"name": "pages", "for_each": {"items": "[0, 1, 2]", "concurrency": 3, "step": {"action": "noop"}}}
    ]}));
    sim.snap.runs.clear(); // such a flow is stored without a task run
    let p = plan(&sim.snap, &Event::Begin).unwrap();
    sim.apply(&p);
    for i in [2, 0, 1] {
        let id = sim.item("pages", i).id.clone();
        sim.claim_run(&id);
        sim.finish_run(&id, AttemptStatus::Success, json!({"i": i}));
    }
    assert_eq!(sim.snap.state, E::Success);
    let outputs = sim.outputs.clone().expect("the for_each step's outputs");
    assert_eq!(
        Value::Object(outputs.into_iter().collect()),
        json!({"pages": [{"i": 0}, {"i": 1}, {"i": 2}]})
    );
}
