//! End-to-end tests of the service: a real `ward serve` process on an
//! ephemeral port with a temporary data dir, driven over HTTP — every
//! endpoint, bad input, retries with backoff, cancel, pause/resume,
//! restart, idempotency, 1,000 concurrent executions, and a kill -9 crash.

mod common;
#[path = "polyglot/mod.rs"]
mod polyglot;

use std::time::{Duration, Instant};

use common::server::Server;
use serde_json::{Value, json};

fn millis(ts: &Value) -> f64 {
    let t = humantime::parse_rfc3339_weak(ts.as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn attempts(e: &Value) -> Vec<Value> {
    e["task_runs"][0]["attempts"].as_array().unwrap().clone()
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn every_endpoint_serves_a_hello_execution() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());

    assert_eq!(s.get("/healthz").await, (200, json!({"status": "ok"})));
    let (_, plugins) = s.get("/plugins").await;
    let names: Vec<&str> = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for n in ["hello", "word-count", "thumbnail", "chaos"] {
        assert!(names.contains(&n), "{names:?}");
    }
    let (status, hello) = s.get("/plugins/hello").await;
    assert_eq!(status, 200);
    assert!(hello["id"].as_str().unwrap().starts_with("sha256:"));
    let (status, same) = s
        .get(&format!("/plugins/{}", hello["id"].as_str().unwrap()))
        .await;
    assert_eq!((status, &same["name"]), (200, &json!("hello")));

    // The example task is ready.
    let (status, task) = s.get("/tasks/hello").await;
    assert_eq!(status, 200, "{task}");
    let id = s.start("hello", json!({"name": "Ada"})).await;
    let e = s.wait_for(&id, "SUCCESS", WAIT).await;
    assert_eq!(e["result"]["message"], "Hello, Ada!");
    assert_eq!(e["outputs"]["message"], "Hello, Ada!");
    assert_eq!(e["trigger"], "http");
    assert!(e["duration_ms"].as_f64().unwrap() >= 0.0);
    let a = attempts(&e);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["status"], "success");
    assert!(a[0]["usage"]["fuel_consumed"].as_u64().unwrap() > 0);

    let (_, logs) = s.get(&format!("/executions/{id}/logs")).await;
    assert_eq!(logs["logs"][0]["message"], "greeting Ada");
    let (_, events) = s.get(&format!("/executions/{id}/events")).await;
    let states: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "execution.state")
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["CREATED", "RUNNING", "SUCCESS"]);
    // Following a finished execution's events replays them, then ends.
    let sse = s
        .http
        .get(s.url(&format!("/executions/{id}/events?follow=true")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sse.matches("event: event").count(),
        events["events"].as_array().unwrap().len(),
        "{sse}"
    );
    assert!(
        sse.contains("event: end") && sse.contains(r#""state":"SUCCESS""#),
        "{sse}"
    );
    let (_, outputs) = s.get(&format!("/executions/{id}/outputs")).await;
    assert_eq!(outputs["message"], "Hello, Ada!");
    let (_, metrics) = s.get(&format!("/executions/{id}/metrics")).await;
    assert!(
        metrics["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "greetings" && m["attempt"] == 1)
    );

    let (_, workers) = s.get("/workers").await;
    assert!(workers["workers"][0]["slots"].as_u64().unwrap() > 0);
    assert!(workers["workers"][0]["heartbeat"].is_string());
    let (_, doc) = s.get("/openapi.json").await;
    assert!(
        doc["paths"]["/api/v1/executions/{id}/cancel"].is_object(),
        "{}",
        doc["paths"]
    );
}

#[tokio::test]
async fn tasks_are_versioned_and_media_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    let t = s
        .create_task(json!({"name": "wc", "action": "word-count", "input": {"text": "a b a"}}))
        .await;
    assert_eq!(t["version"], 1);
    let (status, t2) = s
        .http
        .put(s.url("/tasks/wc"))
        .json(&json!({"name": "wc", "action": "word-count", "input": {"text": "x y x", "format": "csv"}}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 200);
    let t2: Value = t2.json().await.unwrap();
    assert_eq!(t2["version"], 2);
    let (_, list) = s.get("/tasks").await;
    assert!(
        list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "wc")
    );

    // No input: the task's default input (of version 2) is used.
    let (status, e) = s.post("/tasks/wc/executions", Value::Null).await;
    assert_eq!(status, 201, "{e}");
    let id = e["id"].as_str().unwrap();
    assert_eq!(e["task_version"], 2);
    let e = s.wait_for(id, "SUCCESS", WAIT).await;
    assert_eq!(e["outputs"]["words"], 3);
    let csv = s
        .http
        .get(s.url(&format!("/executions/{id}/outputs?name=top&format=csv")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("word,count\r\nx,2\r\n"), "{csv}");

    let (_, media) = s.get(&format!("/executions/{id}/media")).await;
    let m = &media["media"][0];
    assert_eq!(m["content_type"], "text/csv");
    let url = m["url"].as_str().unwrap();
    assert!(
        url.ends_with(&format!("/api/v1/media/{}", m["id"].as_str().unwrap())),
        "{url}"
    );
    let r = s.http.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv");
    assert_eq!(
        r.headers()["etag"].to_str().unwrap(),
        format!("\"{}\"", m["sha256"].as_str().unwrap())
    );
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len() as u64, m["size"].as_u64().unwrap());

    let r = s.http.delete(s.url("/tasks/wc")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(s.get("/tasks/wc").await.0, 404);
}

#[tokio::test]
async fn bad_input_gets_the_right_status_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    let post_raw = |path: &str, body: Vec<u8>| {
        let req = s.http.post(s.url(path)).body(body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            (status, ct, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, ct, body) = post_raw("/tasks", b"{not json".to_vec()).await;
    assert_eq!(status, 400);
    assert_eq!(ct.as_deref(), Some("application/problem+json"));
    assert_eq!(body["status"], 400);

    let (status, _, body) = post_raw(
        "/tasks",
        br#"{"name": "bad name", "action": "nope", "retry": {"max_attempts": 0}}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 422);
    let problems = body["problems"].as_array().unwrap();
    assert!(problems.len() >= 3, "{body}");
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("not a registered plugin"))
    );

    // A fresh client: the server may close this connection after a 413.
    let r = reqwest::Client::new()
        .post(s.url("/tasks"))
        .bearer_auth(&s.token)
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Without a token: 401, read rather than reset while the body is sent.
    let r = reqwest::Client::new()
        .post(s.url("/plugins?name=big"))
        .body(vec![0u8; 8 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");

    let (status, _, body) = post_raw("/plugins?name=junk", b"not a component".to_vec()).await;
    assert_eq!(status, 422);
    assert!(
        body["problems"][0]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly file"),
        "{body}"
    );

    assert_eq!(s.get("/executions/nope").await.0, 404);
    assert_eq!(s.get("/tasks/nope").await.0, 404);
    assert_eq!(s.post("/tasks/nope/executions", json!({})).await.0, 404);
    assert_eq!(s.post("/executions/nope/cancel", json!({})).await.0, 404);
    assert_eq!(s.get("/executions?status=bogus").await.0, 400);
    assert_eq!(s.get("/executions?limit=0").await.0, 400);

    // A finished execution cannot be cancelled or resumed.
    let id = s.start("hello", json!({})).await;
    s.wait_for(&id, "SUCCESS", WAIT).await;
    let (status, body) = s.post(&format!("/executions/{id}/cancel"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        s.post(&format!("/executions/{id}/resume"), json!({}))
            .await
            .0,
        409
    );
    assert_eq!(s.execution(&id).await["state"], "SUCCESS");
    let (_, tasks) = s.get("/tasks").await;
    assert_eq!(
        tasks["tasks"].as_array().unwrap().len(),
        1,
        "nothing was created: {tasks}"
    );
}

#[tokio::test]
async fn retries_back_off_and_fatal_errors_are_final() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "flappy", "action": "chaos", "input": {"mode": "retryable"},
        "retry": {"max_attempts": 3, "initial_backoff": "200ms", "multiplier": 2.0, "jitter": 0.0}
    }))
    .await;
    let id = s.start("flappy", json!({"mode": "retryable"})).await;
    let e = s.wait_for(&id, "FAILED", WAIT).await;
    let a = attempts(&e);
    assert_eq!(a.len(), 3);
    assert_eq!(
        a.iter()
            .map(|a| a["number"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let gap1 = millis(&a[1]["started_at"]) - millis(&a[0]["ended_at"]);
    let gap2 = millis(&a[2]["started_at"]) - millis(&a[1]["ended_at"]);
    assert!(gap1 >= 190.0, "first backoff {gap1} ms");
    assert!(gap2 >= 390.0, "second backoff {gap2} ms");
    assert_eq!(e["error"]["kind"], "action_retryable");

    let id = s.start("flappy", json!({"mode": "fatal"})).await;
    let e = s.wait_for(&id, "FAILED", WAIT).await;
    assert_eq!(attempts(&e).len(), 1, "fatal is never retried");
    assert_eq!(e["error"]["kind"], "action_fatal");
    let id = s.start("flappy", json!({"mode": "invalid_input"})).await;
    assert_eq!(attempts(&s.wait_for(&id, "FAILED", WAIT).await).len(), 1);
}

#[tokio::test]
async fn cancel_stops_a_looping_guest() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({"name": "spin", "action": "chaos", "limits": {"fuel": 1_000_000_000_000_000u64, "timeout": "60s"}}))
        .await;
    let id = s.start("spin", json!({"mode": "loop"})).await;
    s.wait_for(&id, "RUNNING", WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let (status, e) = s.post(&format!("/executions/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{e}");
    assert!(
        matches!(e["state"].as_str().unwrap(), "KILLING" | "KILLED"),
        "{e}"
    );
    let e = s.wait_for(&id, "KILLED", WAIT).await;
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(attempts(&e)[0]["status"], "killed");
    assert_eq!(attempts(&e)[0]["error"]["kind"], "cancelled");

    // A queued execution is killed at once.
    s.create_task(json!({"name": "one", "action": "chaos", "concurrency": 1}))
        .await;
    let blocker = s.start("one", json!({"mode": "sleep", "ms": 60000})).await;
    s.wait_for(&blocker, "RUNNING", WAIT).await;
    let queued = s.start("one", json!({"mode": "ok"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        s.execution(&queued).await["state"],
        "CREATED",
        "the task's concurrency limit holds it"
    );
    let (_, e) = s
        .post(&format!("/executions/{queued}/cancel"), json!({}))
        .await;
    assert_eq!(e["state"], "KILLED");
    s.post(&format!("/executions/{blocker}/cancel"), json!({}))
        .await;
    s.wait_for(&blocker, "KILLED", WAIT).await;
}

/// The engine issue's reproduction: a cancel while the task run waits out
/// a retry's backoff ends the execution at once, and nothing runs later.
#[tokio::test]
async fn cancel_during_a_retry_backoff_kills_the_execution_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "retrier", "action": "chaos",
        "retry": {"max_attempts": 5, "initial_backoff": "20s", "multiplier": 1.0}
    }))
    .await;
    let id = s.start("retrier", json!({"mode": "retryable"})).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let e = s.execution(&id).await;
        if e["task_runs"][0]["state"] == "RETRYING" {
            break;
        }
        assert!(Instant::now() < deadline, "never retrying: {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    let (status, e) = s.post(&format!("/executions/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["state"], "KILLED", "{e}");
    let e = s.execution(&id).await;
    let took = t.elapsed();
    assert_eq!(e["state"], "KILLED", "{e}");
    assert_eq!(e["task_runs"][0]["state"], "KILLED", "{e}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(attempts(&e).len(), 1);
    // Cancelled: a second cancel is a 409, and restart brings it back.
    let (status, _) = s.post(&format!("/executions/{id}/cancel"), json!({})).await;
    assert_eq!(status, 409);
    let (status, e) = s
        .post(&format!("/executions/{id}/restart"), json!({}))
        .await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["state"], "RESTARTED", "{e}");
}

#[tokio::test]
async fn pause_holds_new_attempts_until_resume() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "flaky", "action": "chaos",
        "retry": {"max_attempts": 3, "initial_backoff": "300ms", "jitter": 0.0}
    }))
    .await;
    let id = s.start("flaky", json!({"mode": "flaky"})).await;
    // First attempt fails fast; the task run waits for its backoff.
    let deadline = Instant::now() + WAIT;
    while attempts(&s.execution(&id).await)
        .first()
        .is_none_or(|a| a["status"] == "running")
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, e) = s.post(&format!("/executions/{id}/pause"), json!({})).await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["state"], "PAUSED");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let e = s.execution(&id).await;
    assert_eq!(e["state"], "PAUSED");
    assert_eq!(attempts(&e).len(), 1, "no attempt starts while paused");
    assert_eq!(
        s.post(&format!("/executions/{id}/pause"), json!({}))
            .await
            .0,
        409
    );

    let (status, e) = s.post(&format!("/executions/{id}/resume"), json!({})).await;
    assert_eq!((status, e["state"].as_str()), (200, Some("RUNNING")));
    let e = s.wait_for(&id, "SUCCESS", WAIT).await;
    assert_eq!(attempts(&e).len(), 2);
    assert_eq!(e["result"]["resumed_from"]["step"], 1);
}

#[tokio::test]
async fn restart_reruns_failed_task_runs_with_numbers_continuing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({"name": "once", "action": "chaos"}))
        .await;
    let id = s.start("once", json!({"mode": "flaky"})).await;
    let e = s.wait_for(&id, "FAILED", WAIT).await;
    assert_eq!(attempts(&e).len(), 1);
    let (status, e) = s
        .post(&format!("/executions/{id}/restart"), json!({}))
        .await;
    assert_eq!(status, 200, "{e}");
    assert!(
        matches!(
            e["state"].as_str().unwrap(),
            "RESTARTED" | "RUNNING" | "SUCCESS"
        ),
        "{e}"
    );
    let e = s.wait_for(&id, "SUCCESS", WAIT).await;
    let a = attempts(&e);
    assert_eq!(a.len(), 2);
    assert_eq!(a[1]["number"], 2);
    assert_eq!(
        e["result"]["resumed_from"]["step"], 1,
        "the checkpoint carried over"
    );
    assert_eq!(
        s.post(&format!("/executions/{id}/restart"), json!({}))
            .await
            .0,
        409,
        "SUCCESS is final"
    );
}

#[tokio::test]
async fn idempotency_keys_return_the_same_execution() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    let start = |key: &'static str| {
        let req = s
            .http
            .post(s.url("/tasks/hello/executions"))
            .header("Idempotency-Key", key)
            .json(&json!({"input": {"name": "k"}}));
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s1, e1) = start("order-17").await;
    let (s2, e2) = start("order-17").await;
    let (s3, e3) = start("order-18").await;
    assert_eq!((s1, s2, s3), (201, 200, 201));
    assert_eq!(e1["id"], e2["id"]);
    assert_ne!(e1["id"], e3["id"]);
    assert_eq!(e1["idempotency_key"], "order-17");
    let (_, list) = s.get("/executions?task_id=hello").await;
    assert_eq!(list["executions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_thousand_concurrent_executions_all_succeed_and_list_filters_work() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({"name": "noop", "action": "noop"}))
        .await;
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut handles = Vec::new();
    for _ in 0..1000 {
        let (http, url, sem) = (s.http.clone(), s.url("/tasks/noop/executions"), sem.clone());
        handles.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let r = http.post(url).send().await.unwrap();
            assert_eq!(r.status(), 201);
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, done) = s
            .get("/executions?status=completed&task_id=noop&limit=1000")
            .await;
        let n = done["executions"].as_array().unwrap().len();
        if n == 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} of 1000 completed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, failed) = s.get("/executions?status=failed,killed").await;
    assert!(failed["executions"].as_array().unwrap().is_empty());

    // Cursor pagination walks all of them exactly once, newest first.
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/executions?task_id=noop&limit=300&cursor={c}"),
            None => "/executions?task_id=noop&limit=300".to_string(),
        };
        let (_, page) = s.get(&q).await;
        for e in page["executions"].as_array().unwrap() {
            assert!(seen.insert(e["id"].as_str().unwrap().to_string()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1000);
    let r = s
        .http
        .get(s.url("/executions?task_id=noop&limit=5&format=csv"))
        .send()
        .await
        .unwrap();
    let next = r.headers()["x-next-cursor"].to_str().unwrap().to_string();
    let csv = r.text().await.unwrap();
    assert_eq!(csv.lines().count(), 6);
    assert!(csv.starts_with(
        "id,task_id,state,trigger,created_at,started_at,ended_at,duration_ms,namespace,parent_id,fuel_used"
    ));
    let page = |q: String| {
        let http = s.http.clone();
        let url = s.url(&q);
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let second = page(format!(
        "/executions?task_id=noop&limit=5&format=csv&cursor={next}"
    ))
    .await;
    let json_second = s
        .get(&format!(
            "/executions?task_id=noop&limit=5&fields=id&cursor={next}"
        ))
        .await
        .1;
    assert_eq!(
        second.lines().nth(1).unwrap().split(',').next().unwrap(),
        json_second["executions"][0]["id"].as_str().unwrap(),
        "the header's cursor is the JSON page's"
    );
    assert!(csv.lines().nth(1).unwrap().contains(",SUCCESS,http,"));
}

#[tokio::test]
async fn followers_see_log_lines_while_the_guest_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({"name": "slow", "action": "chaos"}))
        .await;
    let id = s
        .start("slow", json!({"mode": "slow", "steps": 4, "step_ms": 400}))
        .await;
    let started = Instant::now();
    let mut r = s
        .http
        .get(s.url(&format!("/executions/{id}/logs?follow=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let mut first_line_at = None;
    while let Some(chunk) = r.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        if first_line_at.is_none() && text.contains("step 0 done") {
            first_line_at = Some(started.elapsed());
        }
        if text.contains("event: end") {
            break;
        }
    }
    let first = first_line_at.expect("a log line arrived");
    // Step 0 ends at ~400 ms of a ~1.6 s run; it must arrive well before the end.
    assert!(
        first < Duration::from_millis(1300),
        "first line after {first:?}"
    );
    for step in 0..4 {
        assert!(text.contains(&format!("step {step} done")), "{text}");
    }
    assert!(text.contains(r#"data: {"state":"SUCCESS"}"#), "{text}");
}

#[tokio::test]
async fn a_killed_server_loses_nothing_and_reruns_only_unfinished_work() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "slow", "action": "chaos",
        "retry": {"max_attempts": 3, "initial_backoff": "100ms"}
    }))
    .await;
    let quick: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(s.start("slow", json!({"mode": "ok"})).await);
        }
        ids
    };
    for id in &quick {
        s.wait_for(id, "SUCCESS", WAIT).await;
    }
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(
            s.start("slow", json!({"mode": "slow", "steps": 6, "step_ms": 250}))
                .await,
        );
    }
    // Mid-attempt: some steps checkpointed, the rest not done.
    for id in &slow {
        s.wait_for(id, "RUNNING", WAIT).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.kill();

    let s = Server::launch(dir.path());
    for id in &quick {
        let e = s.execution(id).await;
        assert_eq!(e["state"], "SUCCESS");
        assert_eq!(attempts(&e).len(), 1, "finished work is not run again");
    }
    for id in &slow {
        let e = s.wait_for(id, "terminal", WAIT).await;
        assert_eq!(e["state"], "SUCCESS", "{e}");
        let a = attempts(&e);
        assert_eq!(a.len(), 2, "{e}");
        assert_eq!(a[0]["error"]["kind"], "host_crash");
        let resumed = e["result"]["resumed_from"].as_u64().unwrap();
        assert!(resumed >= 1, "the checkpoint carried over: {e}");
        assert_eq!(
            e["result"]["ran"].as_array().unwrap().len() as u64,
            6 - resumed
        );
    }
    let (_, all) = s.get("/executions?limit=1000").await;
    assert_eq!(all["executions"].as_array().unwrap().len(), 7, "none lost");
}

#[tokio::test]
async fn sigterm_lets_running_attempts_finish() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({"name": "slow", "action": "chaos"}))
        .await;
    let id = s
        .start("slow", json!({"mode": "slow", "steps": 3, "step_ms": 300}))
        .await;
    s.wait_for(&id, "RUNNING", WAIT).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = s.wait_exit(Duration::from_secs(20));
    assert!(exited, "the server exits after its running attempt");

    let s = Server::launch(dir.path());
    let e = s.execution(&id).await;
    assert_eq!(e["state"], "SUCCESS", "{e}");
    assert_eq!(
        attempts(&e).len(),
        1,
        "finished within the grace period, not re-run"
    );
}

#[tokio::test]
async fn an_attempt_cut_short_by_shutdown_runs_again_without_using_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ward.json");
    std::fs::write(&config, r#"{"shutdown_grace": "200ms"}"#).unwrap();
    let s = Server::launch_with(dir.path(), &["--config", config.to_str().unwrap()]);
    // One attempt in all: only a shutdown may give it a second.
    s.create_task(json!({"name": "slow", "action": "chaos"}))
        .await;
    let id = s
        .start("slow", json!({"mode": "slow", "steps": 10, "step_ms": 300}))
        .await;
    s.wait_for(&id, "RUNNING", WAIT).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(s.wait_exit(Duration::from_secs(20)), "the server exits");

    let s = Server::launch(dir.path());
    let e = s.wait_for(&id, "terminal", WAIT).await;
    assert_eq!(e["state"], "SUCCESS", "{e}");
    let a = attempts(&e);
    assert_eq!(a.len(), 2, "{e}");
    assert_eq!(a[0]["error"]["kind"], "host_crash", "{e}");
    assert!(
        a[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shut down"),
        "{e}"
    );
    assert_eq!(a[1]["status"], "success");
}

#[tokio::test]
async fn a_stopping_server_lets_its_waiting_and_following_callers_go() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ward.json");
    std::fs::write(&config, r#"{"shutdown_grace": "200ms"}"#).unwrap();
    let s = Server::launch_with(dir.path(), &["--config", config.to_str().unwrap()]);
    s.create_task(json!({"name": "sleeper", "action": "chaos"}))
        .await;
    let id = s
        .start("sleeper", json!({"mode": "sleep", "ms": 600000}))
        .await;
    s.wait_for(&id, "RUNNING", WAIT).await;
    let waiting = s
        .http
        .get(s.url(&format!("/executions/{id}?wait=60s")))
        .send();
    let following = async {
        let r = s
            .http
            .get(s.url(&format!("/executions/{id}/events?follow=true")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // The whole body: it ends when the server lets the follower go.
        r.text().await.unwrap_or_default()
    };
    let stop = async {
        // Both requests are in by then (a later one is let go at once too).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &s.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let (waited, followed, ()) =
        tokio::time::timeout(WAIT, async { tokio::join!(waiting, following, stop) })
            .await
            .expect("let go when the server stops");
    let waited = waited.unwrap();
    assert_eq!(waited.status(), 202);
    assert!(
        waited.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with(&id)
    );
    assert!(followed.contains("event: event"), "{followed}");
    assert!(!followed.contains("event: end"), "not ended: {followed}");
    assert!(s.wait_exit(Duration::from_secs(20)), "the server exits");
}

/// The value of `metric` with every label in `labels`, from a scrape.
fn metric(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{metric} is not a number: {other:?}"),
        })
}

async fn scrape(s: &Server) -> prometheus_parse::Scrape {
    let r = s
        .http
        .get(s.base.replace("/api/v1", "/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

#[tokio::test]
async fn metrics_count_known_work_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({"name": "m", "action": "chaos"})).await;
    let mut ids = Vec::new();
    for mode in ["ok", "ok", "ok", "ok", "ok", "fatal", "fatal", "fatal"] {
        ids.push(s.start("m", json!({ "mode": mode })).await);
    }
    for id in &ids {
        s.wait_for(id, "terminal", WAIT).await;
    }
    let m = scrape(&s).await;
    let get = |name: &str, labels: &[(&str, &str)]| metric(&m, name, labels);
    assert_eq!(get("ward_executions", &[("state", "SUCCESS")]), Some(5.0));
    assert_eq!(get("ward_executions", &[("state", "FAILED")]), Some(3.0));
    assert_eq!(get("ward_executions", &[("state", "RUNNING")]), Some(0.0));
    assert_eq!(
        get(
            "ward_attempts_total",
            &[("outcome", "success"), ("error_kind", "none")]
        ),
        Some(5.0)
    );
    assert_eq!(
        get(
            "ward_attempts_total",
            &[("outcome", "failed"), ("error_kind", "action_fatal")]
        ),
        Some(3.0)
    );
    assert_eq!(get("ward_attempt_duration_seconds_count", &[]), Some(8.0));
    assert_eq!(get("ward_queue_wait_seconds_count", &[]), Some(8.0));
    assert!(get("ward_fuel_consumed_total", &[]).unwrap() > 0.0);
    assert_eq!(
        get(
            "ward_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/api/v1/tasks/:id/executions"),
                ("status", "201")
            ]
        ),
        Some(8.0)
    );
    assert_eq!(get("ward_slots", &[]), Some(512.0));
    assert_eq!(get("ward_slots_busy", &[]), Some(0.0));
    assert!(get("ward_store_commit_batch_size_count", &[]).unwrap() >= 1.0);
    assert!(get("ward_store_commit_seconds_count", &[]).unwrap() >= 1.0);

    // A new process counts the stored executions again.
    s.kill();
    let s = Server::launch(dir.path());
    let m = scrape(&s).await;
    assert_eq!(
        metric(&m, "ward_executions", &[("state", "SUCCESS")]),
        Some(5.0)
    );
    assert_eq!(
        metric(&m, "ward_executions", &[("state", "FAILED")]),
        Some(3.0)
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--plugins")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = stdout.map(Result::unwrap);
    assert!(stdout.any(|l| l.starts_with("Ward is serving on ")));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let lines: Vec<String> = stderr.lines().map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert!(
        lines.iter().any(|l| l.contains("shutting down")),
        "{lines:?}"
    );
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        assert!(v["message"].is_string(), "{line}");
    }
}

/// OTLP/HTTP requests received on loopback, decoded.
#[derive(Clone, Default)]
struct Collector {
    requests: std::sync::Arc<
        std::sync::Mutex<
            Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
        >,
    >,
}

impl Collector {
    /// Listens on an ephemeral loopback port; returns its base URL.
    async fn start(&self) -> String {
        use axum::routing::post;
        let requests = self.requests.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: axum::body::Bytes| async move {
                use prost::Message;
                let decoded =
                    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body);
                match decoded {
                    Ok(r) => {
                        requests.lock().unwrap().push(r);
                        axum::http::StatusCode::OK
                    }
                    Err(_) => axum::http::StatusCode::BAD_REQUEST,
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// Every span received, with the resource's service name.
    fn spans(&self) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
        let mut out = Vec::new();
        for r in self.requests.lock().unwrap().iter() {
            for rs in &r.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| a.value.as_ref())
                    .map(|v| format!("{:?}", v.value))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }
}

fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            V::StringValue(s) => s.clone(),
            V::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_follow_an_execution_through_task_runs_attempts_and_host_calls() {
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let s = Server::launch_env(
        &dir.path().join("data"),
        &["--otlp-endpoint", &endpoint],
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("RUST_LOG", "ward=debug"),
        ],
        log,
    );
    s.create_task(json!({
        "name": "flaky", "action": "chaos", "input": {"mode": "flaky"},
        "retry": {"max_attempts": 3, "initial_backoff": "50ms", "jitter": 0.0}
    }))
    .await;
    let id = s.start("flaky", json!({"mode": "flaky"})).await;
    let e = s.wait_for(&id, "SUCCESS", WAIT).await;
    let runs = e["task_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(attempts(&e).len(), 2, "fails once after a checkpoint");

    // The trace id is the execution's id.
    let trace_id = uuid::Uuid::parse_str(&id).unwrap().as_bytes().to_vec();
    let deadline = Instant::now() + WAIT;
    let spans = loop {
        let spans: Vec<_> = collector
            .spans()
            .into_iter()
            .filter(|(_, s)| s.trace_id == trace_id)
            .collect();
        let count = |name: &str| spans.iter().filter(|(_, s)| s.name == name).count();
        if count("execution") == 1 && count("task_run") == 1 && count("attempt") == 2 {
            break spans;
        }
        assert!(Instant::now() < deadline, "spans so far: {spans:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(spans.iter().all(|(service, _)| service.contains("ward")));
    let named = |name: &str| -> Vec<&opentelemetry_proto::tonic::trace::v1::Span> {
        spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name)
            .collect()
    };
    let execution = named("execution");
    assert_eq!(execution.len(), 1, "{spans:#?}");
    let execution = execution[0];
    assert!(
        execution.parent_span_id.is_empty(),
        "the execution is the root"
    );
    assert_eq!(
        attribute(execution, "ward.execution.id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        attribute(execution, "ward.state").as_deref(),
        Some("SUCCESS")
    );
    assert!(execution.end_time_unix_nano >= execution.start_time_unix_nano);

    let task_run = named("task_run");
    assert_eq!(task_run.len(), 1, "{spans:#?}");
    let task_run = task_run[0];
    assert_eq!(task_run.parent_span_id, execution.span_id);
    assert_eq!(attribute(task_run, "ward.attempts").as_deref(), Some("2"));
    assert_eq!(
        attribute(task_run, "ward.task_run.id").as_deref(),
        runs[0]["id"].as_str()
    );

    let mut attempt_spans = named("attempt");
    attempt_spans.sort_by_key(|s| attribute(s, "ward.attempt"));
    for (n, a) in attempt_spans.iter().enumerate() {
        assert_eq!(a.parent_span_id, task_run.span_id, "attempt {}", n + 1);
        assert_eq!(attribute(a, "ward.attempt"), Some((n + 1).to_string()));
        assert!(a.start_time_unix_nano >= task_run.start_time_unix_nano);
    }
    assert_eq!(
        attribute(attempt_spans[0], "ward.error.kind").as_deref(),
        Some("action_retryable")
    );
    assert_eq!(
        attempt_spans[0].status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        attribute(attempt_spans[1], "ward.outcome").as_deref(),
        Some("success")
    );

    // Host calls are children of the attempt that made them.
    let children = |attempt: &opentelemetry_proto::tonic::trace::v1::Span| -> Vec<String> {
        let mut names: Vec<String> = spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.parent_span_id == attempt.span_id)
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        children(attempt_spans[0]),
        ["host.checkpoint", "host.last-checkpoint"]
    );
    assert_eq!(children(attempt_spans[1]), ["host.last-checkpoint"]);

    // Log lines written during an attempt carry its trace id.
    let hex: String = trace_id.iter().map(|b| format!("{b:02x}")).collect();
    s.terminate(); // a graceful exit flushes the traces
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let ended: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("attempt ended"))
        .collect();
    assert_eq!(ended.len(), 2, "{logs}");
    assert!(
        ended.iter().all(|l| l.contains(&format!("trace_id={hex}"))),
        "{ended:#?}"
    );
}

/// A server with at most 8 connections and `read_timeout`, no plugins; and
/// its address for raw TCP clients.
fn limited_server(dir: &std::path::Path, read_timeout: &str) -> (Server, String) {
    let s = Server::launch_with(
        dir,
        &[
            "--read-timeout",
            read_timeout,
            "--max-connections",
            "8",
            "--plugins",
            dir.to_str().unwrap(),
        ],
    );
    let addr = s
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api/v1")
        .to_string();
    (s, addr)
}

/// Slow and idle clients cannot hold the server: a client that never
/// finishes its headers is cut off after the read timeout, and at the
/// connection cap the longest idle connection is closed for a new one.
#[tokio::test]
async fn slow_and_idle_clients_do_not_hold_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (s, addr) = limited_server(dir.path(), "1s");
    // Closed by the server: a read ends (0 bytes, or an error), with or
    // without a 408 first.
    async fn closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }

    // Slowloris: headers begun, never finished.
    let mut slow = Vec::new();
    for _ in 0..6 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET /api/v1/healthz HTTP/1.1\r\nHost: ward\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(tcp);
    }
    let began = Instant::now();
    for tcp in &mut slow {
        assert!(
            closed_within(tcp, Duration::from_secs(10)).await,
            "a slow client is cut off"
        );
    }
    assert!(began.elapsed() < Duration::from_secs(10));
    drop(slow);

    // Still served after them.
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);
    // A body that stops arriving: the request fails and the connection ends.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(b"POST /api/v1/tasks HTTP/1.1\r\nHost: ward\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a stalled body is cut off");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    // A connection that sends nothing at all is cut off too.
    let mut mute = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(
        closed_within(&mut mute, Duration::from_secs(10)).await,
        "a mute client is cut off"
    );
    drop(s);

    // With a long read timeout: idle connections up to the cap; a new
    // request is still served, and the longest idle one was closed for it,
    // the others left open.
    let dir = tempfile::tempdir().unwrap();
    let (s, addr) = limited_server(dir.path(), "60s");
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(5)).await,
        "the longest idle is closed"
    );
    assert!(
        !closed_within(&mut idle[1], Duration::from_millis(300)).await,
        "the others stay"
    );
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);
}

/// Every way the chaos plugin misbehaves, at once, through the server: each
/// execution ends as its attempt's limit or error says (or succeeds with the
/// flood cut at its quota), the server keeps serving others throughout, and
/// its memory stays bounded.
#[tokio::test]
async fn hostile_guests_through_the_server_end_as_limited_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(json!({
        "name": "hostile", "action": "chaos",
        "limits": {"fuel": 2_000_000_000u64, "timeout": "5s", "memory": "64MiB"}
    }))
    .await;
    s.create_task(json!({"name": "greet", "action": "hello"}))
        .await;
    let cases: Vec<(Value, &str, Option<&str>)> = vec![
        (json!({"mode": "loop"}), "FAILED", Some("fuel_exhausted")),
        (json!({"mode": "sleep"}), "FAILED", Some("timeout")),
        (
            json!({"mode": "memory_bomb"}),
            "FAILED",
            Some("memory_limit"),
        ),
        (
            json!({"mode": "stack_overflow"}),
            "FAILED",
            Some("stack_overflow"),
        ),
        (
            json!({"mode": "panic", "message": "boom"}),
            "FAILED",
            Some("trap"),
        ),
        (
            json!({"mode": "non_json"}),
            "FAILED",
            Some("invalid_result"),
        ),
        (
            json!({"mode": "big_result", "size": 2 << 20}),
            "FAILED",
            Some("invalid_result"),
        ),
        (
            json!({"mode": "output_flood", "size": 512 * 1024}),
            "SUCCESS",
            None,
        ),
        (
            json!({"mode": "log_flood", "lines": 2000, "size": 1024}),
            "SUCCESS",
            None,
        ),
        (
            json!({"mode": "media_flood", "size": 8 << 20}),
            "SUCCESS",
            None,
        ),
        (
            json!({"mode": "metric_flood", "series": 2500}),
            "SUCCESS",
            None,
        ),
        (json!({"mode": "fs_escape"}), "SUCCESS", None),
        (json!({"mode": "socket"}), "SUCCESS", None),
        (json!({"mode": "bad_names"}), "SUCCESS", None),
    ];
    let mut started = Vec::new();
    for (input, state, kind) in &cases {
        started.push((
            s.start("hostile", input.clone()).await,
            input,
            *state,
            *kind,
        ));
    }
    // Meanwhile the server serves a well-behaved task.
    let id = s.start("greet", json!({"name": "Ada"})).await;
    let e = s.wait_for(&id, "SUCCESS", Duration::from_secs(60)).await;
    assert_eq!(e["outputs"]["message"], "Hello, Ada!");
    for (id, input, state, kind) in started {
        let e = s.wait_for(&id, state, Duration::from_secs(120)).await;
        if let Some(kind) = kind {
            assert_eq!(e["error"]["kind"], kind, "{input}: {e}");
        }
    }
    // What the floods left is within their quotas.
    let (status, health) = s.get("/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", s.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(
        rss_kib < 1 << 20,
        "the server stayed under 1 GiB: {rss_kib} KiB"
    );
    let id = s.start("greet", json!({"name": "again"})).await;
    s.wait_for(&id, "SUCCESS", Duration::from_secs(60)).await;
}

/// Granted outbound HTTP through a real server: the `http-fetch` example
/// fetches from a local server it is granted; the same guest refused a host
/// not granted, a private address, a redirect to one, a request flood and a
/// huge body, and a guest filling its scratch dir, each end as a failed
/// attempt naming the reason, while the server serves others — and a token
/// of another namespace sees none of it.
#[tokio::test]
async fn granted_http_and_its_abuse_through_the_server() {
    let addr = common::local_server().await;
    let local = addr.to_string();
    let port = addr.port();

    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    let trusted = json!({"allow": [local, format!("localhost:{port}")], "allow_private": [local]});
    let task = |name: &str, grants: Value| {
        json!({"name": name, "action": "http-fetch", "grants": grants,
               "retry": {"max_attempts": 1}, "limits": {"timeout": "10s"}})
    };
    s.create_task(task("fetch", json!({"http": trusted}))).await;
    s.create_task(task("fetch-ungranted", json!({}))).await;
    s.create_task(task(
        "fetch-public-only",
        json!({"http": {"allow": [local]}}),
    ))
    .await;
    s.create_task(task(
        "fetch-limited",
        json!({"http": {"allow": [local], "allow_private": [local], "max_requests": 3, "max_bytes": "1MiB"}}),
    ))
    .await;
    s.create_task(
        json!({"name": "filler", "action": "chaos", "grants": {"scratch": true},
        "retry": {"max_attempts": 1}}),
    )
    .await;

    let ok = s
        .start("fetch", json!({"url": format!("http://{local}/hello")}))
        .await;
    let cases = [
        (
            "fetch-ungranted",
            format!("http://{local}/hello"),
            "grants no outbound HTTP",
        ),
        (
            "fetch",
            "http://example.com/".to_string(),
            "is not in grants.http.allow",
        ),
        (
            "fetch-public-only",
            format!("http://{local}/hello"),
            "loopback",
        ),
        (
            "fetch",
            format!("http://localhost:{port}/hello"),
            "not reachable unless",
        ),
        (
            "fetch",
            format!("http://{local}/to/localhost:{port}"),
            "localhost is 127.0.0.1",
        ),
        (
            "fetch-limited",
            format!("http://{local}/loop"),
            "max_requests (3) reached",
        ),
        (
            "fetch-limited",
            format!("http://{local}/huge"),
            "over grants.http.max_bytes",
        ),
    ];
    let mut refused = Vec::new();
    for (task, url, reason) in &cases {
        refused.push((
            s.start(task, json!({"url": url, "max_redirects": 10}))
                .await,
            *reason,
        ));
    }
    let filler = s.start("filler", json!({"mode": "disk_fill"})).await;

    let e = s.wait_for(&ok, "SUCCESS", Duration::from_secs(60)).await;
    assert_eq!(e["outputs"]["status"], 200, "{e}");
    assert_eq!(e["outputs"]["size"], 13);
    assert!(e["outputs"]["headers"].is_object(), "{e}");
    let (_, logs) = s.get(&format!("/executions/{ok}/logs")).await;
    let http: Vec<&Value> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["source"] == "http")
        .collect();
    assert_eq!(http.len(), 1, "{logs}");
    assert!(
        http[0]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("GET {local} → 200, 13 bytes")),
        "{logs}"
    );
    // The request is an event of the execution too.
    let (_, events) = s.get(&format!("/executions/{ok}/events")).await;
    let calls: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "http.request")
        .collect();
    assert_eq!(calls.len(), 1, "{events}");
    let call = &calls[0]["detail"];
    assert_eq!(
        (
            &call["method"],
            &call["host"],
            &call["status"],
            &call["bytes"],
            &call["attempt"]
        ),
        (
            &json!("GET"),
            &json!(local),
            &json!("200"),
            &json!(13),
            &json!(1)
        ),
        "{events}"
    );
    assert!(call["ms"].as_f64().unwrap() >= 0.0, "{call}");
    let (_, media) = s.get(&format!("/executions/{ok}/media")).await;
    let object = media["media"][0]["id"].as_str().unwrap().to_string();

    for (id, reason) in refused {
        let e = s.wait_for(&id, "FAILED", Duration::from_secs(60)).await;
        let (_, logs) = s.get(&format!("/executions/{id}/logs")).await;
        let said = logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["source"] == "http")
            .any(|l| l["message"].as_str().unwrap().contains(reason));
        assert!(said, "{reason}: {e}\n{logs}");
        let (_, events) = s.get(&format!("/executions/{id}/events")).await;
        assert!(
            events["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "http.request"),
            "{reason}: {events}"
        );
    }
    let e = s.wait_for(&filler, "FAILED", Duration::from_secs(60)).await;
    assert_eq!(e["error"]["kind"], "disk_limit", "{e}");

    // Another namespace's token sees none of it.
    let r = s
        .http
        .post(s.url("/tokens"))
        .json(&json!({"namespace": "acme", "scopes": ["executions:read", "media:read", "tasks:read"]}))
        .send()
        .await
        .unwrap();
    let secret = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let other = reqwest::Client::new();
    for path in [
        format!("/executions/{ok}"),
        format!("/executions/{ok}/logs"),
        format!("/media/{object}"),
        "/tasks/fetch".to_string(),
        "/plugins/http-fetch".to_string(),
    ] {
        let r = other
            .get(s.url(&path))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = other
        .get(s.url("/executions"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["executions"], json!([]));
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);
}

/// Example plugins are registered under Ward's version, so that other bytes
/// uploaded under that name and version are refused; an example rebuilt
/// since (other bytes in the folder) becomes a new version, its digest as
/// build metadata, and the first keeps its meaning.
#[tokio::test]
async fn examples_take_wards_version_and_a_rebuilt_one_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples");
    std::fs::create_dir_all(&examples).unwrap();
    let hello = std::fs::read(common::plugin("hello")).unwrap();
    let noop = std::fs::read(common::plugin("noop")).unwrap();
    std::fs::write(examples.join("hello.wasm"), &hello).unwrap();
    let id = |bytes: &[u8]| format!("sha256:{}", ward::sandbox::component::digest(bytes));
    let ward = env!("CARGO_PKG_VERSION").to_string();
    // The `hello` plugins, (version, id), by version.
    let hellos = |s: &Server| {
        let (http, url) = (s.http.clone(), s.url("/plugins"));
        async move {
            let list: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            let mut v: Vec<(String, String)> = list["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["name"] == "hello")
                .map(|p| {
                    (
                        p["version"].as_str().unwrap().into(),
                        p["id"].as_str().unwrap().into(),
                    )
                })
                .collect();
            v.sort();
            v
        }
    };

    let s = Server::launch_with(dir.path(), &["--plugins", examples.to_str().unwrap()]);
    assert_eq!(hellos(&s).await, [(ward.clone(), id(&hello))]);
    let r = s
        .http
        .post(s.url(&format!("/plugins?name=hello&version={ward}")))
        .body(noop.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "{}", r.text().await.unwrap());
    drop(s);

    std::fs::write(examples.join("hello.wasm"), &noop).unwrap();
    let s = Server::launch_with(dir.path(), &["--plugins", examples.to_str().unwrap()]);
    let digest = ward::sandbox::component::digest(&noop);
    assert_eq!(
        hellos(&s).await,
        [
            (ward.clone(), id(&hello)),
            (format!("{ward}+{}", &digest[..12]), id(&noop))
        ]
    );
}
