//! `GET /analytics` through the router, on executions whose outcomes the
//! test decides (the figures' arithmetic is tested on rows in
//! `model::analytics`).

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::control_tests::Harness;

#[tokio::test]
async fn analytics_count_what_ran_and_how_it_ended() {
    let h = Harness::new().await;
    h.task(json!({"name": "chaos", "action": "chaos"})).await;
    let since = crate::model::now();
    let mut ids = Vec::new();
    for mode in ["ok", "ok", "ok", "fatal", "fatal"] {
        ids.push(h.start("chaos", json!({ "mode": mode })).await);
    }
    for id in &ids {
        h.svc
            .wait_for_end(id, false, std::time::Duration::from_secs(60))
            .await
            .unwrap();
    }
    let url = format!("/api/v1/analytics?bucket=1m&since={since}");
    let (status, _, a) = h.call("GET", &url, Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    let t = &a["totals"];
    assert_eq!(t["started"], 5);
    assert_eq!(t["finished"], json!({"SUCCESS": 3, "FAILED": 2}));
    assert_eq!(t["success_rate"], 0.6);
    assert_eq!(t["failures"], json!({"action_fatal": 2}));
    assert_eq!(t["attempts_per_task_run"], 1.0);
    assert!(t["fuel"].as_u64().unwrap() > 0);
    assert!(t["duration_ms"]["p95"].as_f64().unwrap() >= t["duration_ms"]["p50"].as_f64().unwrap());
    assert!(t["queue_wait_ms"]["max"].as_f64().unwrap() >= 0.0);
    let in_buckets: u64 = a["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["started"].as_u64().unwrap())
        .sum();
    assert_eq!(in_buckets, 5);
    assert_eq!(a["bucket"], "1m");
    assert_eq!(a["top_by_volume"][0]["name"], "chaos");
    assert_eq!(a["top_by_volume"][0]["executions"], 5);
    assert_eq!(a["top_by_failures"][0]["failures"], 2);

    let (_, _, failed) = h
        .call(
            "GET",
            &format!("{url}&state=failed&task=chaos"),
            Value::Null,
        )
        .await;
    assert_eq!(failed["totals"]["started"], 2);
    let (_, _, none) = h
        .call("GET", &format!("{url}&namespace=elsewhere"), Value::Null)
        .await;
    assert_eq!(none["totals"]["started"], 0);
    assert_eq!(none["totals"]["success_rate"], Value::Null);

    for (query, status, says) in [
        ("bucket=5m", StatusCode::BAD_REQUEST, "bucket must be"),
        ("since=yesterday", StatusCode::BAD_REQUEST, "since must be"),
        (
            "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            StatusCode::BAD_REQUEST,
            "must be before",
        ),
        (
            "since=2026-01-01T00:00:00Z&until=2026-02-01T00:00:00Z&bucket=1m",
            StatusCode::BAD_REQUEST,
            "use a wider bucket",
        ),
        ("task=nosuch", StatusCode::NOT_FOUND, "no task"),
        ("state=sleepy", StatusCode::BAD_REQUEST, "unknown status"),
    ] {
        let (got, _, problem) = h
            .call("GET", &format!("/api/v1/analytics?{query}"), Value::Null)
            .await;
        assert_eq!(got, status, "{query}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{query}: {problem}"
        );
    }
}
