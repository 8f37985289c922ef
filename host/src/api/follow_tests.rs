//! Followers and waiting callers, through the router in process: every
//! item exactly once and in order, resumption, lag, `?wait` outcomes and
//! release at shutdown. Assertions are on order and completeness, never
//! on timings (a bound only keeps a broken wait from hanging the suite).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, header};
use eventsource_stream::{Event as SseEvent, Eventsource as _};
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use super::control_tests::Harness;
use crate::model::state::{ExecutionState, TaskRunState};
use crate::runtime::follow::{Feed, FeedItem};
use crate::store::changes::Changes;

const BOUND: Duration = Duration::from_secs(60);

async fn harness() -> Harness {
    let h = Harness::new().await;
    h.task(json!({"name": "chaos", "action": "chaos"})).await;
    h
}

/// Every server-sent event of a followed feed until the stream closes.
async fn read_events(resp: axum::response::Response, limit: Option<usize>) -> Vec<SseEvent> {
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE].to_str().unwrap(),
        "text/event-stream"
    );
    let mut stream = resp.into_body().into_data_stream().eventsource();
    let mut got = Vec::new();
    let read = async {
        while let Some(event) = stream.next().await {
            got.push(event.unwrap());
            if limit.is_some_and(|n| got.len() >= n) {
                break;
            }
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("the follow ended");
    got
}

/// The ids and the JSON of the items (all but `end`).
fn items(events: &[SseEvent]) -> Vec<(i64, Value)> {
    events
        .iter()
        .filter(|e| e.event != "end")
        .map(|e| {
            (
                e.id.parse().unwrap(),
                serde_json::from_str(&e.data).unwrap(),
            )
        })
        .collect()
}

async fn stored(h: &Harness, id: &str, feed: &str) -> Vec<(i64, Value)> {
    let (status, _, page) = h
        .call(
            "GET",
            &format!("/api/v1/executions/{id}/{feed}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    page[feed]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["id"].as_i64().unwrap(), v.clone()))
        .collect()
}

fn end_state(events: &[SseEvent]) -> Value {
    let last = events.last().expect("an event");
    assert_eq!(last.event, "end", "the last event is the end: {events:?}");
    assert_eq!(
        events.iter().filter(|e| e.event == "end").count(),
        1,
        "one end"
    );
    serde_json::from_str::<Value>(&last.data).unwrap()["state"].clone()
}

#[tokio::test]
async fn a_follower_attached_before_the_first_line_gets_every_line_once_then_the_end() {
    let h = harness().await;
    let id = h
        .start("chaos", json!({"mode": "slow", "steps": 5, "step_ms": 20}))
        .await;
    let logs_url = format!("/api/v1/executions/{id}/logs?follow=true");
    let events_url = format!("/api/v1/executions/{id}/events?follow=true");
    let (logs, events) = tokio::join!(
        h.send("GET", &logs_url, &[], Value::Null),
        h.send("GET", &events_url, &[], Value::Null),
    );
    let (logs, events) = tokio::join!(read_events(logs, None), read_events(events, None));

    assert_eq!(end_state(&logs), "SUCCESS");
    let followed = items(&logs);
    assert_eq!(
        followed,
        stored(&h, &id, "logs").await,
        "every line, once, in order"
    );
    let steps: Vec<&str> = followed
        .iter()
        .filter_map(|(_, l)| l["message"].as_str())
        .filter(|m| m.starts_with("step "))
        .collect();
    assert_eq!(steps.len(), 5, "{steps:?}");
    assert!(logs.iter().all(|e| e.event == "log" || e.event == "end"));

    assert_eq!(end_state(&events), "SUCCESS");
    assert_eq!(items(&events), stored(&h, &id, "events").await);
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_resumes_without_gaps_or_repeats() {
    let h = harness().await;
    let id = h
        .start("chaos", json!({"mode": "slow", "steps": 6, "step_ms": 20}))
        .await;
    let url = format!("/api/v1/executions/{id}/logs?follow=true");
    let first = read_events(h.send("GET", &url, &[], Value::Null).await, Some(2)).await;
    assert_eq!(first.len(), 2);
    let last_id = first[1].id.clone();
    // `after=0` in the URL (as a reconnecting EventSource repeats it) loses
    // to the header.
    let rest = read_events(
        h.send(
            "GET",
            &format!("{url}&after=0"),
            &[("Last-Event-ID", &last_id)],
            Value::Null,
        )
        .await,
        None,
    )
    .await;
    assert_eq!(end_state(&rest), "SUCCESS");
    let mut all = items(&first);
    all.extend(items(&rest));
    assert_eq!(all, stored(&h, &id, "logs").await);

    let resp = h
        .send("GET", &url, &[("Last-Event-ID", "yesterday")], Value::Null)
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("Last-Event-ID must be an integer"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_lagging_follower_catches_up_from_the_store_without_loss() {
    // One unread change per execution before a follower lags.
    let h = Harness::configured(|_| {}, Arc::new(Changes::with_capacity(1))).await;
    h.task(json!({"name": "chaos", "action": "chaos"})).await;
    let id = h
        .start(
            "chaos",
            json!({"mode": "log_flood", "lines": 200, "size": 16}),
        )
        .await;
    let stream = h.svc.follow(&id, Feed::Logs, 0);
    // Read nothing until the execution has ended: the follower blocks on
    // its full buffer while hundreds of commits pass a channel of one.
    let ended = h
        .svc
        .wait_for_end(&id, false, BOUND)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.state, ExecutionState::Success);
    let got: Vec<FeedItem> = tokio::time::timeout(BOUND, stream.collect()).await.unwrap();
    assert_eq!(got.last(), Some(&FeedItem::End(ExecutionState::Success)));
    let ids: Vec<i64> = got.iter().filter_map(FeedItem::id).collect();
    let want: Vec<i64> = stored(&h, &id, "logs")
        .await
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        want.len(),
        600,
        "200 lines each to the log, stdout and stderr"
    );
    assert_eq!(ids, want, "every line once, in order");
}

#[tokio::test]
async fn wait_answers_with_the_ended_execution_for_success_failure_and_cancel() {
    let h = harness().await;
    let start = |input: Value| {
        let h = &h;
        async move {
            let resp = h
                .send(
                    "POST",
                    "/api/v1/tasks/chaos/executions?wait=30s",
                    &[],
                    json!({ "input": input }),
                )
                .await;
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let (status, ok) = start(json!({"mode": "ok"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(ok["state"], "SUCCESS");
    assert_eq!(ok["result"], json!({"ok": true}));

    let (status, failed) = start(json!({"mode": "fatal"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(failed["state"], "FAILED");
    assert_eq!(failed["error"]["kind"], "action_fatal", "{failed}");

    let sleeper = h
        .start("chaos", json!({"mode": "sleep", "ms": 600000}))
        .await;
    h.until_run(&sleeper, TaskRunState::Running).await;
    let url = format!("/api/v1/executions/{sleeper}?wait=30s");
    let (waited, cancelled) = tokio::join!(h.call("GET", &url, Value::Null), async {
        h.call(
            "POST",
            &format!("/api/v1/executions/{sleeper}/cancel"),
            Value::Null,
        )
        .await
    });
    assert_eq!(cancelled.0, StatusCode::OK);
    assert_eq!(waited.0, StatusCode::OK);
    assert_eq!(waited.2["state"], "KILLED");
    assert!(waited.2["task_runs"].is_array(), "GET keeps its task runs");

    // An execution that has already ended answers at once.
    let (status, _, again) = h
        .call(
            "GET",
            &format!("/api/v1/executions/{}?wait=30s", ok["id"].as_str().unwrap()),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["state"], "SUCCESS");
}

#[tokio::test]
async fn a_wait_that_runs_out_answers_202_with_the_execution_and_its_location() {
    let h = harness().await;
    let resp = h
        .send(
            "POST",
            "/api/v1/tasks/chaos/executions?wait=50ms",
            &[],
            json!({"input": {"mode": "sleep", "ms": 600000}}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let e: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        location,
        format!("/api/v1/executions/{}", e["id"].as_str().unwrap())
    );
    assert!(
        matches!(e["state"].as_str(), Some("CREATED" | "RUNNING")),
        "{e}"
    );

    let resp = h
        .send("GET", &format!("{location}?wait=0"), &[], Value::Null)
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()[header::LOCATION].to_str().unwrap(), location);

    for bad in ["soon", "-1s"] {
        let (status, content_type, problem) = h
            .call("GET", &format!("{location}?wait={bad}"), Value::Null)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(content_type, "application/problem+json");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .starts_with("wait must be")
        );
    }
}

#[tokio::test]
async fn a_wait_longer_than_max_wait_is_cut_to_it() {
    let h = Harness::configured(|c| c.max_wait = Duration::from_millis(100), Arc::default()).await;
    h.task(json!({"name": "chaos", "action": "chaos"})).await;
    let id = h
        .start("chaos", json!({"mode": "sleep", "ms": 600000}))
        .await;
    let (status, _, e) = tokio::time::timeout(
        BOUND,
        h.call(
            "GET",
            &format!("/api/v1/executions/{id}?wait=1h"),
            Value::Null,
        ),
    )
    .await
    .expect("cut to max_wait");
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(e["id"], id.as_str());
}

#[tokio::test]
async fn waits_and_follows_are_let_go_when_the_server_stops() {
    let h = Harness::configured(
        |c| c.shutdown_grace = Duration::from_millis(50),
        Arc::default(),
    )
    .await;
    h.task(json!({"name": "chaos", "action": "chaos"})).await;
    let id = h
        .start("chaos", json!({"mode": "sleep", "ms": 600000}))
        .await;
    h.until_run(&id, TaskRunState::Running).await;
    let wait_url = format!("/api/v1/executions/{id}?wait=60s");
    let waiting = h.send("GET", &wait_url, &[], Value::Null);
    let following = async {
        let resp = h
            .send(
                "GET",
                &format!("/api/v1/executions/{id}/events?follow=true"),
                &[],
                Value::Null,
            )
            .await;
        read_events(resp, None).await
    };
    let stop = async {
        // Let both reach their wait (a wait that started after the stop
        // would be let go at once as well).
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.svc.shutdown().await;
    };
    let (waited, followed, ()) =
        tokio::time::timeout(BOUND, async { tokio::join!(waiting, following, stop) })
            .await
            .expect("let go at shutdown");
    assert_eq!(waited.status(), StatusCode::ACCEPTED);
    assert!(
        followed.iter().all(|e| e.event == "event"),
        "the stream closes without an end: the execution has not ended"
    );
}

/// Every stored event of `query` (e.g. `task=ok`), paging with `next_after`.
async fn all_stored_events(h: &Harness, query: &str) -> Vec<(i64, Value)> {
    let mut after = 0;
    let mut all = Vec::new();
    loop {
        let (status, _, page) = h
            .call(
                "GET",
                &format!("/api/v1/events?{query}&after={after}&limit=1000"),
                Value::Null,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for e in page["events"].as_array().unwrap() {
            all.push((e["id"].as_i64().unwrap(), e.clone()));
        }
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => return all,
        }
    }
}

#[tokio::test]
async fn the_feed_of_all_events_resumes_mid_load_without_gaps_or_repeats() {
    let h = harness().await;
    h.task(json!({"name": "ok", "action": "chaos", "input": {"mode": "ok"}}))
        .await;
    let url = "/api/v1/events?follow=true&task=ok";
    let first = h.send("GET", url, &[], Value::Null).await;
    let load = async {
        let ids = futures_util::stream::iter(0..1000)
            .map(|_| h.start("ok", json!({"mode": "ok"})))
            .buffer_unordered(32)
            .collect::<Vec<String>>()
            .await;
        for id in &ids {
            h.svc.wait_for_end(id, false, BOUND).await.unwrap().unwrap();
        }
        ids
    };
    // The first client leaves after 1,500 events, while executions run.
    let (ids, first) = tokio::join!(load, read_events(first, Some(1500)));
    let stored = all_stored_events(&h, "task=ok").await;
    // Created, running, task run and attempt changes, success: several each.
    assert!(stored.len() > 4 * ids.len(), "{}", stored.len());
    let last_id = first.last().unwrap().id.clone();
    let rest = h
        .send("GET", url, &[("Last-Event-ID", &last_id)], Value::Null)
        .await;
    let rest = read_events(rest, Some(stored.len() - first.len())).await;
    let mut got = items(&first);
    got.extend(items(&rest));
    let got_ids: Vec<i64> = got.iter().map(|(i, _)| *i).collect();
    let want_ids: Vec<i64> = stored.iter().map(|(i, _)| *i).collect();
    assert_eq!(got_ids, want_ids, "every event once, in order");
    assert_eq!(got, stored);
    assert!(
        got.iter()
            .all(|(_, e)| e["task_id"].is_string() && e["namespace"] == "default")
    );
    let executions: std::collections::HashSet<&str> = got
        .iter()
        .filter_map(|(_, e)| e["execution_id"].as_str())
        .collect();
    assert_eq!(executions.len(), ids.len());
}

#[tokio::test]
async fn the_feed_of_all_events_filters_and_pages() {
    let h = harness().await;
    let ok = h.start("chaos", json!({"mode": "ok"})).await;
    let failed = h.start("chaos", json!({"mode": "fatal"})).await;
    for id in [&ok, &failed] {
        h.svc.wait_for_end(id, false, BOUND).await.unwrap();
    }
    let failures = all_stored_events(&h, "state=failed").await;
    assert!(!failures.is_empty());
    assert!(
        failures.iter().all(|(_, e)| e["to"] == "FAILED"),
        "{failures:?}"
    );
    assert!(
        failures
            .iter()
            .any(|(_, e)| e["execution_id"] == failed.as_str())
    );
    assert!(
        failures
            .iter()
            .all(|(_, e)| e["execution_id"] != ok.as_str())
    );
    assert!(
        all_stored_events(&h, "namespace=elsewhere")
            .await
            .is_empty()
    );

    // `tail`: the newest, oldest first; and a follow that starts with them.
    let all = all_stored_events(&h, "").await;
    let (_, _, tail) = h.call("GET", "/api/v1/events?tail=2", Value::Null).await;
    let tail_ids: Vec<i64> = tail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let newest: Vec<i64> = all[all.len() - 2..].iter().map(|(i, _)| *i).collect();
    assert_eq!(tail_ids, newest);
    assert_eq!(tail["next_after"], Value::Null);
    let followed = read_events(
        h.send("GET", "/api/v1/events?follow=true&tail=3", &[], Value::Null)
            .await,
        Some(3),
    )
    .await;
    let followed: Vec<i64> = items(&followed).into_iter().map(|(i, _)| i).collect();
    let newest3: Vec<i64> = all[all.len() - 3..].iter().map(|(i, _)| *i).collect();
    assert_eq!(followed, newest3);
    // A reconnect repeating the URL resumes after its Last-Event-ID instead.
    let from = all[all.len() - 6].0.to_string();
    let resumed = read_events(
        h.send(
            "GET",
            "/api/v1/events?follow=true&tail=3",
            &[("Last-Event-ID", &from)],
            Value::Null,
        )
        .await,
        Some(5),
    )
    .await;
    let resumed: Vec<i64> = items(&resumed).into_iter().map(|(i, _)| i).collect();
    let after: Vec<i64> = all[all.len() - 5..].iter().map(|(i, _)| *i).collect();
    assert_eq!(resumed, after);

    // Pages of one follow each other without overlap.
    let (_, _, page) = h.call("GET", "/api/v1/events?limit=2", Value::Null).await;
    let next = page["next_after"].as_i64().unwrap();
    assert_eq!(page["events"][1]["id"].as_i64(), Some(next));
    let (_, _, page2) = h
        .call(
            "GET",
            &format!("/api/v1/events?limit=2&after={next}"),
            Value::Null,
        )
        .await;
    assert!(page2["events"][0]["id"].as_i64().unwrap() > next);

    for (query, status, says) in [
        (
            "state=sleepy",
            StatusCode::BAD_REQUEST,
            "unknown state \"sleepy\"",
        ),
        ("namespace=a%20b", StatusCode::BAD_REQUEST, "namespace"),
        ("task=nosuch", StatusCode::NOT_FOUND, "no task"),
        ("after=-1", StatusCode::BAD_REQUEST, "after must be"),
        ("limit=0", StatusCode::BAD_REQUEST, "limit must be"),
        ("tail=0", StatusCode::BAD_REQUEST, "tail must be"),
    ] {
        let (got, _, problem) = h
            .call("GET", &format!("/api/v1/events?{query}"), Value::Null)
            .await;
        assert_eq!(got, status, "{query}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{query}: {problem}"
        );
    }
}

#[tokio::test]
async fn a_zero_wait_answers_with_the_created_execution_every_time() {
    let h = harness().await;
    for _ in 0..50 {
        let resp = h
            .send(
                "POST",
                "/api/v1/tasks/chaos/executions?wait=0",
                &[],
                json!({"input": {"mode": "sleep", "ms": 600000}}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let e: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            matches!(e["state"].as_str(), Some("CREATED" | "RUNNING")),
            "{e}"
        );
    }
}
