//! End-to-end tests of flows against a real `ward serve`: steps one after
//! another with outputs and variables passed on, `if`, `allow_failure`,
//! template errors, restart from the failed step, bad definitions, a flow
//! killed mid-way (kill -9) that finishes after a restart without running
//! its finished steps again; input and output schemas; signed webhooks.

mod common;

use std::time::Duration;

use common::server::Server;
use common::{millis, unix_ms};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// The task run of `step`.
fn run<'a>(e: &'a Value, step: &str) -> &'a Value {
    e["task_runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["step"] == step)
        .unwrap_or_else(|| panic!("no task run of step {step}: {e}"))
}

fn steps(e: &Value) -> Vec<(String, String)> {
    e["task_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["step"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn attempts(e: &Value, step: &str) -> usize {
    run(e, step)["attempts"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_flow_passes_outputs_and_variables_from_step_to_step() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "report",
        "variables": {"words": 0, "suffix": "!"},
        "steps": [
            {"name": "greet", "action": "hello", "description": "say hello",
             "input": {"name": "{{ inputs.who }}"}},
            {"name": "count", "action": "word-count",
             "input": {"text": "{{ steps.greet.outputs.message }} and some more"},
             "save": {"words": "{{ outputs.words }}"}},
            {"name": "shout", "action": "hello", "if": "vars.words > 100",
             "input": {"name": "never"}},
            {"name": "sum_up", "action": "hello",
             "input": {"name": "{{ vars.words }} words{{ vars.suffix }}"}}
        ],
        "outputs": {"greeting": "{{ steps.greet.outputs.message }}", "words": "{{ vars.words }}",
                    "skipped": "{{ steps.shout.state }}"}
    }))
    .await;
    let (status, e) = s
        .post(
            "/tasks/report/executions?wait=30s",
            json!({"input": {"who": "Ada"}, "variables": {"suffix": "?"}}),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    assert_eq!(e["state"], "SUCCESS", "{e}");
    assert_eq!(
        e["outputs"],
        json!({"greeting": "Hello, Ada!", "skipped": "SKIPPED", "words": 5})
    );
    assert_eq!(e["variables"], json!({"words": 5, "suffix": "?"}));
    let e = s.execution(e["id"].as_str().unwrap()).await;
    assert_eq!(
        steps(&e),
        [
            ("greet".into(), "SUCCESS".into()),
            ("count".into(), "SUCCESS".into()),
            ("shout".into(), "SKIPPED".into()),
            ("sum_up".into(), "SUCCESS".into())
        ]
    );
    assert_eq!(
        run(&e, "count")["input"],
        json!({"text": "Hello, Ada! and some more"})
    );
    assert_eq!(attempts(&e, "shout"), 0, "a skipped step never runs");
    assert_eq!(run(&e, "sum_up")["input"], json!({"name": "5 words?"}));
    // The step the flow is at (here: the last one it ran), for the grid.
    assert_eq!(e["current_step"], json!({"name": "sum_up"}));

    // A variable the task does not declare is refused, and nothing is made.
    let (status, problem) = s
        .post(
            "/tasks/report/executions",
            json!({"input": {"who": "Ada"}, "variables": {"nope": 1}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem["problems"][0].as_str().unwrap().contains("nope"));
    let (_, all) = s.get("/executions?task_id=report").await;
    assert_eq!(all["executions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn failures_stop_the_flow_unless_allowed_and_restart_resumes_at_the_failed_step() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "fragile",
        "steps": [
            {"name": "optional", "action": "chaos", "input": {"mode": "fatal"}, "allow_failure": true},
            {"name": "first", "action": "hello", "input": {"name": "one"}},
            {"name": "picky", "action": "chaos", "input": {"mode": "{{ inputs.mode }}"}},
            {"name": "after", "action": "hello", "input": {"name": "{{ steps.first.outputs.message }}"}}
        ]
    }))
    .await;
    let id = s.start("fragile", json!({"mode": "fatal"})).await;
    let e = s.wait_for(&id, "FAILED", WAIT).await;
    assert_eq!(
        steps(&e),
        [
            ("optional".into(), "FAILED".into()),
            ("first".into(), "SUCCESS".into()),
            ("picky".into(), "FAILED".into()),
        ],
        "a failure not allowed stops the flow: `after` never starts"
    );
    assert_eq!(e["error"]["kind"], "action_fatal");

    // Restart re-runs only `picky` (its input rendered again, the same),
    // which fails the same way; the earlier steps still ran once.
    let (status, r) = s
        .post(&format!("/executions/{id}/restart"), json!(null))
        .await;
    assert_eq!(status, 200, "{r}");
    let e = s.wait_for(&id, "FAILED", WAIT).await;
    assert_eq!(attempts(&e, "picky"), 2);
    assert_eq!(attempts(&e, "first"), 1, "finished steps are not run again");
    assert_eq!(attempts(&e, "optional"), 1, "an allowed failure is kept");

    // A flow whose failing step was allowed to fail goes on and ends WARNING.
    let id = s.start("fragile", json!({"mode": "ok"})).await;
    let e = s.wait_for(&id, "terminal", WAIT).await;
    assert_eq!(e["state"], "WARNING", "{e}");
    let e = s.execution(&id).await;
    assert_eq!(run(&e, "after")["input"], json!({"name": "Hello, one!"}));
}

#[tokio::test]
async fn a_template_that_cannot_render_fails_its_step_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "typo",
        "steps": [
            {"name": "a", "action": "hello", "input": {"name": "x"}},
            {"name": "b", "action": "hello", "input": {"name": "{{ steps.a.outputs.mesage }}"}},
            {"name": "c", "action": "noop"}
        ]
    }))
    .await;
    let id = s.start("typo", json!({})).await;
    let e = s.wait_for(&id, "FAILED", WAIT).await;
    assert_eq!(e["error"]["kind"], "template_error", "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("step b, input.name"), "{message}");
    assert!(message.contains("steps.a.outputs.mesage"), "{message}");
    let e = s.execution(&id).await;
    assert_eq!(run(&e, "b")["state"], "FAILED");
    assert_eq!(run(&e, "b")["error"]["kind"], "template_error");
    assert_eq!(attempts(&e, "b"), 0, "it never ran");
    assert_eq!(
        e["task_runs"].as_array().unwrap().len(),
        2,
        "c never started"
    );
}

#[tokio::test]
async fn a_bad_flow_definition_gets_every_problem_listed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    let (status, p) = s
        .post(
            "/tasks",
            json!({
                "name": "broken",
                "variables": {"n": 0},
                "steps": [
                    {"name": "a", "action": "no-such-plugin", "input": {"x": "{{ steps.b.outputs }}"}},
                    {"name": "b", "action": "hello", "input": {"name": "{{ 1 + }}"},
                     "save": {"m": "{{ outputs.x }}"}},
                    {"name": "a", "action": "hello"}
                ]
            }),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    let problems: Vec<&str> = p["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let all = problems.join("\n");
    for expected in [
        "steps.b is not a step before this one",
        "step b, input.name",
        "variable \"m\" is not declared",
        "step name \"a\" is used twice",
        "\"no-such-plugin\" is not a registered plugin",
    ] {
        assert!(all.contains(expected), "{expected:?} in\n{all}");
    }
    let (status, p) = s
        .post(
            "/tasks",
            json!({"name": "both", "action": "hello", "steps": [{"name": "a", "action": "hello"}]}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    let (status, p) = s
        .post(
            "/tasks",
            json!({"name": "later", "steps": [{"name": "a", "action": "hello", "parallel": []}]}),
        )
        .await;
    assert_eq!(status, 422, "an unknown step field is refused: {p}");
    let (_, tasks) = s.get("/tasks").await;
    assert!(
        tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] == "hello"),
        "nothing was created: {tasks}"
    );
}

#[tokio::test]
async fn a_flow_killed_mid_way_finishes_after_a_restart_without_rerunning_finished_steps() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "long",
        "retry": {"max_attempts": 3, "initial_backoff": "100ms"},
        "steps": [
            {"name": "before", "action": "hello", "input": {"name": "before"}},
            {"name": "slow", "action": "chaos", "input": {"mode": "slow", "steps": 6, "step_ms": 250},
             "description": "takes its time"},
            {"name": "after", "action": "hello", "input": {"name": "{{ steps.before.outputs.message }}"}}
        ]
    }))
    .await;
    let id = s.start("long", json!({})).await;
    // Kill while `slow` runs, after a checkpoint or two (the record says so).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let e = s.execution(&id).await;
        let slow = e["task_runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["step"] == "slow" && r["state"] == "RUNNING");
        if slow.is_some() {
            assert_eq!(
                e["current_step"],
                json!({"name": "slow", "description": "takes its time"}),
                "{e}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slow never ran: {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.kill();

    let s = Server::launch(dir.path());
    let e = s.wait_for(&id, "terminal", WAIT).await;
    assert_eq!(e["state"], "SUCCESS", "{e}");
    let e = s.execution(&id).await;
    assert_eq!(
        attempts(&e, "before"),
        1,
        "a finished step is not run again"
    );
    let slow = &run(&e, "slow")["attempts"];
    assert_eq!(slow.as_array().unwrap().len(), 2, "{e}");
    assert_eq!(slow[0]["error"]["kind"], "host_crash");
    assert_eq!(attempts(&e, "after"), 1);
    assert_eq!(run(&e, "after")["input"], json!({"name": "Hello, before!"}));
    assert_eq!(e["outputs"], json!({"message": "Hello, Hello, before!!"}));
}

#[tokio::test]
async fn schemas_refuse_bad_inputs_and_outputs_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "typed",
        "action": "hello",
        "input_schema": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}},
            "additionalProperties": false
        }
    }))
    .await;
    let (status, p) = s
        .post(
            "/tasks/typed/executions",
            json!({"input": {"name": 7, "extra": true}}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    let problems = p["problems"].to_string();
    assert!(problems.contains("/name"), "{problems}");
    assert!(problems.contains("extra"), "{problems}");
    let (_, all) = s.get("/executions?task_id=typed").await;
    assert!(
        all["executions"].as_array().unwrap().is_empty(),
        "nothing created"
    );
    let id = s.start("typed", json!({"name": "Ada"})).await;
    s.wait_for(&id, "SUCCESS", WAIT).await;

    // A step's outputs are checked before they are published.
    s.create_task(json!({
        "name": "checked",
        "steps": [
            {"name": "greet", "action": "hello", "input": {"name": "Ada"},
             "outputs_schema": {"type": "object", "required": ["message"],
                                "properties": {"message": {"type": "integer"}}}},
            {"name": "never", "action": "noop"}
        ]
    }))
    .await;
    let id = s.start("checked", json!({})).await;
    let e = s.wait_for(&id, "FAILED", WAIT).await;
    assert_eq!(e["error"]["kind"], "invalid_result", "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("/message"), "{message}");
    assert_eq!(e["outputs"], json!({}), "invalid outputs are not published");
    assert_eq!(e["task_runs"].as_array().map(Vec::len), Some(1));

    let (status, p) = s
        .post(
            "/tasks",
            json!({"name": "bad-schema", "action": "hello", "input_schema": {"type": "nonsense"},
                   "outputs_schema": {"$ref": "http://127.0.0.1:9/remote.json"}}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    assert_eq!(p["problems"].as_array().unwrap().len(), 2, "{p}");
}

const SECRET: &str = "partner-shared-secret";

async fn hook(
    s: &Server,
    task: &str,
    body: &str,
    ts: i64,
    signature: Option<String>,
    key: Option<&str>,
) -> (u16, Value) {
    let ts = ts.to_string();
    let mut r = s
        .http
        .post(s.url(&format!("/webhooks/{task}")))
        .header("content-type", "application/json")
        .header("X-Ward-Timestamp", &ts)
        .body(body.to_string());
    if let Some(sig) = signature {
        r = r.header("X-Ward-Signature", sig);
    }
    if let Some(k) = key {
        r = r.header("Idempotency-Key", k);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Now, as Unix seconds (the webhook timestamp).
fn now() -> i64 {
    unix_ms() / 1000
}

#[tokio::test]
async fn webhooks_start_executions_from_signed_requests_only() {
    use ward::model::webhook::sign;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    let task = s
        .create_task(json!({"name": "hooked", "action": "hello", "webhook": {"secret": SECRET}}))
        .await;
    assert!(!task.to_string().contains(SECRET), "write-only: {task}");
    let (_, got) = s.get("/tasks/hooked").await;
    assert!(!got.to_string().contains(SECRET), "{got}");
    let (_, list) = s.get("/tasks").await;
    assert!(!list.to_string().contains(SECRET));

    let body = r#"{"name":"Partner"}"#;
    let ts = now();
    let good = sign(SECRET, &ts.to_string(), body.as_bytes());
    let (status, e) = hook(&s, "hooked", body, ts, Some(good.clone()), None).await;
    assert_eq!(status, 201, "{e}");
    assert_eq!(e["trigger"], "webhook");
    assert_eq!(e["input"], json!({"name": "Partner"}));
    let first = e["id"].as_str().unwrap().to_string();
    s.wait_for(&first, "SUCCESS", WAIT).await;

    // The same request again is a replay.
    let (status, p) = hook(&s, "hooked", body, ts, Some(good), None).await;
    assert_eq!(status, 401, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("replay"), "{p}");
    // Wrong secret, body changed after signing, no signature, stale, future.
    let wrong = sign("not-the-right-secret", &ts.to_string(), body.as_bytes());
    assert_eq!(hook(&s, "hooked", body, ts, Some(wrong), None).await.0, 401);
    let tampered = sign(SECRET, &ts.to_string(), body.as_bytes());
    assert_eq!(
        hook(
            &s,
            "hooked",
            r#"{"name":"Mallory"}"#,
            ts,
            Some(tampered),
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(hook(&s, "hooked", body, ts, None, None).await.0, 401);
    for skew in [-400, 400] {
        let t = ts + skew;
        let sig = sign(SECRET, &t.to_string(), body.as_bytes());
        let (status, p) = hook(&s, "hooked", body, t, Some(sig), None).await;
        assert_eq!(status, 401, "{skew}: {p}");
    }
    let (_, all) = s.get("/executions?task_id=hooked").await;
    assert_eq!(
        all["executions"].as_array().unwrap().len(),
        1,
        "only the good one"
    );

    // Idempotency-Key: a second signed request with the same key gets the
    // same execution.
    let t2 = now();
    let sig = sign(SECRET, &t2.to_string(), b"{}");
    let (status, a) = hook(&s, "hooked", "{}", t2, Some(sig), Some("order-1")).await;
    assert_eq!(status, 201, "{a}");
    let sig = sign(SECRET, &(t2 + 1).to_string(), b"{}");
    let (status, b) = hook(&s, "hooked", "{}", t2 + 1, Some(sig), Some("order-1")).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(a["id"], b["id"]);

    // Replacing the task without the secret keeps it.
    let (status, updated) = s
        .http
        .put(s.url("/tasks/hooked"))
        .json(&json!({"name": "hooked", "action": "hello", "priority": 3, "webhook": {}}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(updated.json::<Value>().await.unwrap()["version"], 2);
    let t3 = now() + 2; // not the first request's signature again
    let sig = sign(SECRET, &t3.to_string(), body.as_bytes());
    assert_eq!(hook(&s, "hooked", body, t3, Some(sig), None).await.0, 201);

    // A task without a webhook has none to call; a bad body is a 400.
    let sig = sign(SECRET, &t3.to_string(), b"{}");
    assert_eq!(hook(&s, "hello", "{}", t3, Some(sig), None).await.0, 404);
    let sig = sign(SECRET, &t3.to_string(), b"not json");
    assert_eq!(
        hook(&s, "hooked", "not json", t3, Some(sig), None).await.0,
        400
    );
    let (status, p) = s
        .post(
            "/tasks",
            json!({"name": "weak", "action": "hello", "webhook": {"secret": "short"}}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
}

/// The scheduled executions of `task`, oldest tick first.
async fn scheduled(s: &Server, task: &str) -> Vec<Value> {
    let (status, all) = s
        .get(&format!("/executions?task_id={task}&limit=1000"))
        .await;
    assert_eq!(status, 200, "{all}");
    let mut e: Vec<Value> = all["executions"].as_array().unwrap().clone();
    for x in &e {
        assert_eq!(x["trigger"], "schedule", "{x}");
    }
    e.sort_by_key(|x| x["scheduled_at"].as_str().unwrap().to_string());
    e
}

#[tokio::test]
async fn a_per_second_schedule_fires_each_tick_exactly_once_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    let task = s
        .create_task(
            json!({"name": "tick", "action": "chaos", "input": {"mode": "ok"},
            "schedule": {"cron": "* * * * * *", "catch_up": "all"}}),
        )
        .await;
    assert!(task["schedule_state"]["next_fire_at"].is_string(), "{task}");
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    // Killed at once: ticks fired may not be recorded as handled yet.
    s.kill();
    let s = Server::launch(dir.path());
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let e = scheduled(&s, "tick").await;
    assert!(e.len() >= 4, "{} executions", e.len());
    let ticks: Vec<i64> = e.iter().map(|x| millis(&x["scheduled_at"])).collect();
    for pair in ticks.windows(2) {
        // Every second once: catch_up all fills the downtime, no tick twice.
        assert_eq!(pair[1] - pair[0], 1_000, "{ticks:?}");
    }
    assert!(ticks.iter().all(|t| t % 1_000 == 0), "{ticks:?}");

    // Paused, nothing fires; resumed, it goes on from now.
    let (status, t) = s.post("/tasks/tick/schedule/pause", json!(null)).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["schedule_state"]["paused"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = scheduled(&s, "tick").await.len();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(scheduled(&s, "tick").await.len(), before, "paused");
    let (status, t) = s.post("/tasks/tick/schedule/resume", json!(null)).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["schedule_state"]["paused"], false);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = scheduled(&s, "tick").await;
    assert!(after.len() > before, "resumed");
    assert!(
        after.len() <= before + 3,
        "ticks passed while paused are not caught up: {} then {}",
        before,
        after.len()
    );
    let (status, _) = s.post("/tasks/hello/schedule/pause", json!(null)).await;
    assert_eq!(status, 409, "hello has no schedule");
}

#[tokio::test]
async fn missed_ticks_follow_each_catch_up_policy() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    let now_ms = unix_ms;
    // Made and paused well between two ticks: this server fires none.
    while !(1_000..3_000).contains(&(now_ms() % 10_000)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for policy in ["none", "latest", "all"] {
        let name = format!("every10-{policy}");
        s.create_task(json!({"name": name, "action": "chaos",
            "schedule": {"cron": "*/10 * * * * *", "catch_up": policy,
                         "input": {"mode": "ok", "from": "schedule"}}}))
            .await;
        let (status, t) = s
            .post(&format!("/tasks/{name}/schedule/pause"), json!(null))
            .await;
        assert_eq!(status, 200, "{t}");
    }
    let data = s.data.clone();
    s.terminate();
    // Restart between ticks (5-8 s past one), so that no tick is on time.
    while !(5_000..6_000).contains(&(now_ms() % 10_000)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = now_ms() - 60_000;
    {
        let db = rusqlite::Connection::open(data.join("ward.db")).unwrap();
        // As if the server had been down for a minute, running: the last
        // tick each schedule handled was 60 s ago.
        let n = db
            .execute("UPDATE schedules SET last_tick_ms = ?, paused = 0", [last])
            .unwrap();
        assert_eq!(n, 3);
    }
    let relaunched = now_ms();
    let s = Server::launch(&data);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let newest_tick = (relaunched / 10_000) * 10_000;
    // Only the ticks from before the restart: later ones fire on time
    // whatever the policy (should the start be slow).
    let missed = |e: Vec<Value>| -> Vec<Value> {
        e.into_iter()
            .filter(|x| millis(&x["scheduled_at"]) < relaunched)
            .collect()
    };
    let none = missed(scheduled(&s, "every10-none").await);
    assert!(none.is_empty(), "none fires no missed tick: {none:?}");
    let latest = missed(scheduled(&s, "every10-latest").await);
    assert_eq!(latest.len(), 1, "{latest:?}");
    assert_eq!(millis(&latest[0]["scheduled_at"]), newest_tick);
    assert_eq!(
        latest[0]["input"],
        json!({"mode": "ok", "from": "schedule"})
    );
    s.wait_for(latest[0]["id"].as_str().unwrap(), "SUCCESS", WAIT)
        .await;
    let all = missed(scheduled(&s, "every10-all").await);
    let ticks: Vec<i64> = all.iter().map(|x| millis(&x["scheduled_at"])).collect();
    assert_eq!(ticks.len(), 6, "{ticks:?}");
    assert_eq!(*ticks.last().unwrap(), newest_tick);
    assert!(ticks[0] > last);
    // The next tick fires on time for all three.
    let (_, t) = s.get("/tasks/every10-none").await;
    let next = millis(&t["schedule_state"]["next_fire_at"]);
    assert_eq!(next % 10_000, 0);
    assert!(next > newest_tick && next <= now_ms() + 10_000, "{t}");
}

#[tokio::test]
async fn successful_executions_add_rows_to_the_task_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "words",
        "steps": [
            {"name": "count", "action": "word-count", "input": {"text": "{{ inputs.text }}", "top": 3}}
        ],
        "dataset": {"from": "steps.count.outputs.top",
                    "schema": {"type": "object", "required": ["word", "count"],
                               "properties": {"word": {"type": "string"}, "count": {"type": "integer"}}}}
    }))
    .await;
    let a = s.start("words", json!({"text": "b a b c b a d"})).await;
    s.wait_for(&a, "SUCCESS", WAIT).await;
    let b = s.start("words", json!({"text": "x y, x"})).await;
    s.wait_for(&b, "SUCCESS", WAIT).await;

    let (status, page) = s.get("/tasks/words/dataset").await;
    assert_eq!(status, 200, "{page}");
    let rows = page["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "{page}");
    assert_eq!(rows[0]["execution_id"], a.as_str());
    assert_eq!(rows[0]["index"], 0);
    assert_eq!(rows[0]["data"], json!({"word": "b", "count": 3}));
    assert_eq!(rows[3]["execution_id"], b.as_str());
    assert!(page["next_cursor"].is_null());

    // Pages: two rows at a time, every row once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            None => "/tasks/words/dataset?limit=2".to_string(),
            Some(c) => format!("/tasks/words/dataset?limit=2&cursor={c}"),
        };
        let (status, page) = s.get(&q).await;
        assert_eq!(status, 200, "{page}");
        for r in page["rows"].as_array().unwrap() {
            seen.push(r["id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(seen, ids);
    let (status, _) = s.get("/tasks/words/dataset?cursor=garbage").await;
    assert_eq!(status, 400);

    // One execution's rows, and the CSV export (over HTTP and the CLI).
    let (_, only_b) = s.get(&format!("/executions/{b}/dataset")).await;
    assert_eq!(only_b["rows"].as_array().unwrap().len(), 2, "{only_b}");
    let csv = s
        .http
        .get(s.url("/tasks/words/dataset?format=csv"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,execution_id,index,created_at,word,count");
    assert_eq!(lines.len(), 6, "{csv}");
    assert!(lines[1].ends_with(",b,3"), "{csv}");
    let jsonl = s
        .http
        .get(s.url(&format!(
            "/tasks/words/dataset?format=jsonl&execution_id={a}"
        )))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(jsonl.lines().count(), 3, "{jsonl}");
    let server = s.base.trim_end_matches("/api/v1").to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .env("WARD_TOKEN", &s.token)
        .args([
            "--server", &server, "task", "dataset", "words", "--format", "csv",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), csv);

    // Rows that fail the schema fail the execution and add nothing.
    s.create_task(json!({
        "name": "strict",
        "steps": [{"name": "count", "action": "word-count", "input": {"text": "a b"}}],
        "dataset": {"from": "steps.count.outputs.top",
                    "schema": {"type": "object", "required": ["missing"]}}
    }))
    .await;
    let c = s.start("strict", json!({})).await;
    let e = s.wait_for(&c, "FAILED", WAIT).await;
    assert_eq!(e["error"]["kind"], "invalid_result", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("row 0"),
        "{e}"
    );
    let (_, none) = s.get("/tasks/strict/dataset").await;
    assert!(none["rows"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn replay_runs_the_same_version_again_from_a_step_keeping_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "pipeline",
        "variables": {"n": 0},
        "steps": [
            {"name": "first", "action": "word-count", "input": {"text": "{{ inputs.text }}"},
             "save": {"n": "{{ outputs.words }}"}},
            {"name": "second", "action": "chaos", "input": {"mode": "{{ inputs.mode }}"}},
            {"name": "third", "action": "hello", "input": {"name": "{{ vars.n }} words"}}
        ]
    }))
    .await;
    let ok = s
        .start("pipeline", json!({"text": "one two three", "mode": "ok"}))
        .await;
    let original = s.wait_for(&ok, "SUCCESS", WAIT).await;

    let (status, r) = s
        .post(
            &format!("/executions/{ok}/replay"),
            json!({"from_step": "second"}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["replay_of"], ok.as_str());
    assert_eq!(r["task_version"], original["task_version"]);
    assert_eq!(r["input"], original["input"]);
    let id = r["id"].as_str().unwrap().to_string();
    let e = s.wait_for(&id, "SUCCESS", WAIT).await;
    let e = s.execution(e["id"].as_str().unwrap()).await;
    assert_eq!(attempts(&e, "first"), 0, "taken over, not run again");
    assert_eq!(run(&e, "first")["state"], "SUCCESS");
    assert_eq!(attempts(&e, "second"), 1);
    assert_eq!(
        run(&e, "third")["input"],
        json!({"name": "3 words"}),
        "the saved variable"
    );
    assert_eq!(e["variables"], json!({"n": 3}));
    assert_eq!(e["outputs"], original["outputs"]);

    // A whole replay runs every step again.
    let (status, r) = s
        .post(&format!("/executions/{ok}/replay"), json!(null))
        .await;
    assert_eq!(status, 201, "{r}");
    let e = s.wait_for(r["id"].as_str().unwrap(), "SUCCESS", WAIT).await;
    let e = s.execution(e["id"].as_str().unwrap()).await;
    assert_eq!(attempts(&e, "first"), 1);

    // Replaying past a step that did not finish, or from no step, is refused.
    let bad = s
        .start("pipeline", json!({"text": "a", "mode": "fatal"}))
        .await;
    s.wait_for(&bad, "FAILED", WAIT).await;
    let (status, p) = s
        .post(
            &format!("/executions/{bad}/replay"),
            json!({"from_step": "third"}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    assert!(p["problems"][0].as_str().unwrap().contains("second"), "{p}");
    let (status, _) = s
        .post(
            &format!("/executions/{bad}/replay"),
            json!({"from_step": "nope"}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = s
        .post(
            "/executions/01a23000-0000-7000-8000-000000000000/replay",
            json!(null),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn for_each_runs_a_step_per_item_within_its_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "fan-out",
        "steps": [
            {"name": "split", "action": "chaos", "input": {"mode": "echo", "parts": "{{ inputs.parts }}"}},
            {"name": "count", "description": "count each part",
             "for_each": {"items": "steps.split.result.input.parts", "concurrency": 2,
                          "step": {"action": "chaos", "input": {"mode": "slow", "steps": 2, "step_ms": 100, "part": "{{ item }}", "at": "{{ index }}"}}}},
            {"name": "total", "action": "word-count",
             "input": {"text": "{% for r in steps.count.result %}{{ r.ran | length }} {% endfor %}"}}
        ],
        "outputs": {"items": "{{ steps.count.outputs | length }}", "parts": "{{ steps.split.result.input.parts }}"}
    }))
    .await;
    let parts = json!(["one", "two", "three", "four", "five"]);
    let (status, e) = s
        .post(
            "/tasks/fan-out/executions?wait=60s",
            json!({"input": {"parts": parts}}),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    assert_eq!(e["state"], "SUCCESS", "{e}");
    assert_eq!(e["outputs"], json!({"items": 5, "parts": parts}));
    let e = s.execution(e["id"].as_str().unwrap()).await;
    let items: Vec<&Value> = e["task_runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["step"] == "count")
        .collect();
    assert_eq!(items.len(), 5);
    let mut indexes: Vec<u64> = items.iter().map(|r| r["index"].as_u64().unwrap()).collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2, 3, 4]);
    for r in &items {
        let i = r["index"].as_u64().unwrap() as usize;
        assert_eq!(r["item"], parts[i]);
        assert_eq!(r["input"]["part"], parts[i]);
        assert_eq!(r["input"]["at"], i);
    }
    // Never more than two at once: at each attempt's start, count those running.
    let spans: Vec<(i64, i64)> = items
        .iter()
        .map(|r| {
            let a = &r["attempts"][0];
            (millis(&a["started_at"]), millis(&a["ended_at"]))
        })
        .collect();
    for (start, _) in &spans {
        let at_once = spans
            .iter()
            .filter(|(s, e)| s <= start && start < e)
            .count();
        assert!(at_once <= 2, "{at_once} at once: {spans:?}");
    }
    assert_eq!(run(&e, "total")["input"], json!({"text": "2 2 2 2 2 "}));
    // Analytics count its 7 task runs (kept on the execution as each is
    // made) against its attempts.
    let runs = e["task_runs"].as_array().unwrap();
    let attempts: usize = runs
        .iter()
        .map(|r| r["attempts"].as_array().unwrap().len())
        .sum();
    let (_, a) = s.get("/analytics?task=fan-out").await;
    assert_eq!(runs.len(), 7);
    assert_eq!(
        a["totals"]["attempts_per_task_run"].as_f64().unwrap(),
        attempts as f64 / 7.0,
        "{a}"
    );
}

#[tokio::test]
async fn the_readme_flow_splits_counts_each_part_and_merges_a_report_and_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    let spec =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/word-report.yaml");
    let server = s.base.trim_end_matches("/api/v1").to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .env("WARD_TOKEN", &s.token)
        .args(["--server", &server, "task", "create", "-f"])
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = "the cat sat\non the mat\n\nthe dog sat\non the log\nthe end\n";
    let (status, e) = s
        .post(
            "/tasks/word-report/executions?wait=60s",
            json!({"input": {"text": text}}),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    assert_eq!(e["state"], "SUCCESS", "{e}");
    assert_eq!(
        e["outputs"],
        json!({"words": 14, "distinct": 8, "parts": 3})
    );
    let id = e["id"].as_str().unwrap().to_string();
    let e = s.execution(&id).await;
    let items = e["task_runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["step"] == "count")
        .count();
    assert_eq!(items, 3, "one word count per part");

    // The report is a CSV media, the rows are the task's dataset.
    let (_, media) = s.get(&format!("/executions/{id}/media")).await;
    let report = media["media"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "counts.csv")
        .unwrap_or_else(|| panic!("{media}"))
        .clone();
    assert_eq!(report["content_type"], "text/csv");
    let (_, rows) = s.get("/tasks/word-report/dataset").await;
    let rows = rows["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[0]["data"], json!({"word": "the", "count": 5}));

    // The CLI shows the step tree.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .env("WARD_TOKEN", &s.token)
        .args(["--server", &server, "execution", "get", &id])
        .output()
        .unwrap();
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown.contains("split"), "{shown}");
    assert!(shown.contains("count[2]"), "{shown}");
    assert!(shown.contains("merge"), "{shown}");
}

#[tokio::test]
async fn parallel_steps_run_at_once_and_the_next_step_sees_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "both",
        "steps": [
            {"name": "at_once", "parallel": [
                {"name": "slow_a", "action": "chaos", "input": {"mode": "slow", "steps": 3, "step_ms": 100}},
                {"name": "slow_b", "action": "chaos", "input": {"mode": "slow", "steps": 3, "step_ms": 100}},
                {"name": "greet", "action": "hello", "input": {"name": "{{ inputs.who }}"}}
            ]},
            {"name": "after", "action": "hello",
             "input": {"name": "{{ steps.greet.outputs.message }} {{ steps.at_once.outputs | length }}"}}
        ]
    }))
    .await;
    let (status, e) = s
        .post(
            "/tasks/both/executions?wait=60s",
            json!({"input": {"who": "Ada"}}),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    assert_eq!(e["state"], "SUCCESS", "{e}");
    let e = s.execution(e["id"].as_str().unwrap()).await;
    let span = |step: &str| {
        let a = &run(&e, step)["attempts"][0];
        (millis(&a["started_at"]), millis(&a["ended_at"]))
    };
    let (a, b) = (span("slow_a"), span("slow_b"));
    assert!(a.0 < b.1 && b.0 < a.1, "they overlap: {a:?} {b:?}");
    let after = span("after");
    assert!(after.0 >= a.1 && after.0 >= b.1, "after waits for all");
    assert_eq!(run(&e, "after")["input"], json!({"name": "Hello, Ada! 3"}));
}

#[tokio::test]
async fn a_flow_may_start_with_a_for_each_or_a_parallel_step() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "each-first",
        "steps": [
            {"name": "greet", "for_each": {"items": "inputs.names", "concurrency": 2,
                                           "step": {"action": "hello", "input": {"name": "{{ item }}"}}}},
            {"name": "after", "action": "hello",
             "input": {"name": "{{ steps.greet.outputs | map(attribute='message') | join(' / ') }}"}}
        ]
    }))
    .await;
    let (status, e) = s
        .post(
            "/tasks/each-first/executions?wait=30s",
            json!({"input": {"names": ["Ada", "Grace", "Alan"]}}),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    assert_eq!(e["state"], "SUCCESS", "{e}");
    assert_eq!(
        e["outputs"]["message"],
        "Hello, Hello, Ada! / Hello, Grace! / Hello, Alan!!"
    );
    // Without the wait too, and with no items at all.
    let id = s.start("each-first", json!({"names": ["X"]})).await;
    s.wait_for(&id, "SUCCESS", WAIT).await;
    let (status, e) = s
        .post(
            "/tasks/each-first/executions?wait=30s",
            json!({"input": {"names": []}}),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    assert_eq!(e["state"], "FAILED", "hello refuses an empty name: {e}");

    s.create_task(json!({
        "name": "both-first",
        "steps": [{"name": "two", "parallel": [
            {"name": "a", "action": "hello", "input": {"name": "a"}},
            {"name": "b", "action": "hello", "input": {"name": "b"}}
        ]}],
        "outputs": {"both": "{{ steps.two.outputs }}"}
    }))
    .await;
    let id = s.start("both-first", json!({})).await;
    let e = s.wait_for(&id, "SUCCESS", WAIT).await;
    assert_eq!(
        e["outputs"]["both"],
        json!({"a": {"message": "Hello, a!"}, "b": {"message": "Hello, b!"}})
    );

    // Without declared outputs, the last step's: a parallel step's by
    // name, a for_each's in item order under its name, whichever ended last.
    s.create_task(json!({
        "name": "both-only",
        "steps": [{"name": "two", "parallel": [
            {"name": "a", "action": "hello", "input": {"name": "a"}},
            {"name": "b", "action": "hello", "input": {"name": "b"}}
        ]}]
    }))
    .await;
    let id = s.start("both-only", json!({})).await;
    let e = s.wait_for(&id, "SUCCESS", WAIT).await;
    assert_eq!(
        e["outputs"],
        json!({"a": {"message": "Hello, a!"}, "b": {"message": "Hello, b!"}})
    );
    s.create_task(json!({
        "name": "each-only",
        "steps": [{"name": "greet", "for_each": {"items": "inputs.names", "concurrency": 3,
            "step": {"action": "hello", "input": {"name": "{{ item }}"}}}}]
    }))
    .await;
    let id = s
        .start("each-only", json!({"names": ["x", "y", "z"]}))
        .await;
    let e = s.wait_for(&id, "SUCCESS", WAIT).await;
    let messages: Vec<Value> = ["x", "y", "z"]
        .iter()
        .map(|n| json!({"message": format!("Hello, {n}!")}))
        .collect();
    assert_eq!(e["outputs"], json!({"greet": messages}));
}

#[tokio::test]
async fn a_subflow_runs_another_task_as_a_child_and_a_cancel_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "child",
        "steps": [{"name": "greet", "action": "hello", "input": {"name": "{{ inputs.who }}"}}]
    }))
    .await;
    s.create_task(
        json!({"name": "sleeper", "action": "chaos", "input": {"mode": "sleep", "ms": 60000}}),
    )
    .await;
    s.create_task(json!({
        "name": "parent",
        "steps": [
            {"name": "call", "subflow": {"task": "child", "input": {"who": "{{ inputs.who }}"}}},
            {"name": "after", "action": "hello", "input": {"name": "{{ steps.call.outputs.message }}"}}
        ]
    }))
    .await;
    let (status, e) = s
        .post(
            "/tasks/parent/executions?wait=30s",
            json!({"input": {"who": "Ada"}}),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    assert_eq!(e["state"], "SUCCESS", "{e}");
    assert_eq!(e["outputs"]["message"], "Hello, Hello, Ada!!");
    let parent = e["id"].as_str().unwrap().to_string();
    let (_, children) = s.get(&format!("/executions?parent_id={parent}")).await;
    let children = children["executions"].as_array().unwrap().clone();
    assert_eq!(children.len(), 1, "{children:?}");
    assert_eq!(children[0]["parent_id"], parent.as_str());
    assert_eq!(children[0]["trigger"], "flow");
    assert_eq!(children[0]["state"], "SUCCESS");
    let e = s.execution(&parent).await;
    assert_eq!(
        run(&e, "call")["output"]["outputs"]["execution_id"],
        children[0]["id"]
    );

    // Cancelling the parent cancels its child.
    s.create_task(json!({
        "name": "waits",
        "steps": [{"name": "long", "subflow": {"task": "sleeper"}}]
    }))
    .await;
    let id = s.start("waits", json!({})).await;
    let deadline = std::time::Instant::now() + WAIT;
    let child = loop {
        let (_, c) = s.get(&format!("/executions?parent_id={id}")).await;
        if let Some(c) = c["executions"].as_array().and_then(|a| a.first()).cloned()
            && c["state"] == "RUNNING"
        {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "no running child");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (status, r) = s
        .post(&format!("/executions/{id}/cancel"), json!(null))
        .await;
    assert_eq!(status, 200, "{r}");
    let e = s.wait_for(&id, "KILLED", WAIT).await;
    assert_eq!(e["state"], "KILLED");
    s.wait_for(child["id"].as_str().unwrap(), "KILLED", WAIT)
        .await;

    // A subflow of a task that does not exist is refused at create, and so
    // is one that would start a cycle (child → parent → child).
    let (status, p) = s
        .post(
            "/tasks",
            json!({"name": "dangling", "steps": [{"name": "x", "subflow": {"task": "nope"}}]}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    let r = s
        .http
        .put(s.url("/tasks/child"))
        .json(&json!({"name": "child", "steps": [{"name": "back", "subflow": {"task": "parent"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert!(p["problems"][0].as_str().unwrap().contains("cycle"), "{p}");
}
