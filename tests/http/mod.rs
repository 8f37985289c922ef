//! Granted outbound HTTP (`grants.http`) through the `http-fetch` example
//! against a local server: what a grant lets through, and every way around
//! it a guest might try — a host not granted, a private address by name and
//! by literal, a redirect to one, a request flood, a huge or stalled
//! response — each refused with the host's reason in its `http` log line.

use std::time::Duration;

use serde_json::{Value, json};
use ward::model::net::HttpGrant;
use ward::sandbox::report::LogSource;
use ward::sandbox::{AttemptReport, AttemptStatus, ErrorKind};

use super::common::{load, local_server, sandbox, spec};

fn grant(value: Value) -> HttpGrant {
    serde_json::from_value(value).unwrap()
}

async fn fetch(url: String, grant: Option<HttpGrant>) -> AttemptReport {
    let mut s = spec(json!({ "url": url }));
    s.http = grant;
    sandbox().run(&load("http_fetch"), s).await
}

fn http_lines(r: &AttemptReport) -> Vec<String> {
    r.logs
        .iter()
        .filter(|l| l.source == LogSource::Http)
        .map(|l| l.message.clone())
        .collect()
}

#[track_caller]
fn refused(r: &AttemptReport, reason: &str) {
    assert_eq!(r.status, AttemptStatus::Failed, "{r:#?}");
    assert_eq!(r.error_kind(), Some(ErrorKind::ActionFatal), "{r:#?}");
    let lines = http_lines(r);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("denied") && l.contains(reason)),
        "no http line says {reason:?}: {lines:?}"
    );
}

#[tokio::test]
async fn a_granted_fetch_stores_the_body_and_is_logged_and_counted() {
    let addr = local_server().await;
    let host = addr.to_string();
    let r = fetch(
        format!("http://{host}/hello"),
        Some(grant(json!({"allow": [host], "allow_private": [host]}))),
    )
    .await;
    assert_eq!(r.status, AttemptStatus::Success, "{r:#?}");
    let result = r.result.clone().unwrap();
    assert_eq!(result["status"], 200);
    assert_eq!(result["size"], 13);
    use sha2::Digest;
    assert_eq!(
        result["sha256"],
        hex::encode(sha2::Sha256::digest(b"hello, world\n"))
    );
    assert_eq!(result["headers"]["content-type"], "text/plain");
    assert_eq!(r.media.len(), 1);
    assert_eq!(r.media[0].size, 13);
    let lines = http_lines(&r);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("GET {host} → 200, 13 bytes,")),
        "{lines:?}"
    );
    let counted = r.metrics.iter().any(|m| {
        matches!(m, ward::sandbox::report::Metric::Counter { name, tags, value: 1 }
            if name == "http.requests" && tags["status"] == "200" && tags["host"] == host)
    });
    assert!(counted, "{:?}", r.metrics);
}

#[tokio::test]
async fn without_a_grant_or_outside_it_nothing_leaves() {
    let addr = local_server().await;
    let r = fetch(format!("http://{addr}/hello"), None).await;
    refused(&r, "grants no outbound HTTP");
    let r = fetch(
        "http://example.com/".into(),
        Some(grant(
            json!({"allow": [addr.to_string()], "allow_private": [addr.to_string()]}),
        )),
    )
    .await;
    refused(&r, "example.com:80 is not in grants.http.allow");
    // The port counts.
    let other = format!("127.0.0.1:{}", addr.port() + 1);
    let r = fetch(
        format!("http://{other}/hello"),
        Some(grant(
            json!({"allow": [addr.to_string()], "allow_private": [addr.to_string()]}),
        )),
    )
    .await;
    refused(&r, "is not in grants.http.allow");
}

#[tokio::test]
async fn private_addresses_are_refused_by_literal_by_name_and_after_a_redirect() {
    let addr = local_server().await;
    let port = addr.port();
    // A literal: granted, but loopback without allow_private.
    let r = fetch(
        format!("http://127.0.0.1:{port}/hello"),
        Some(grant(json!({"allow": [format!("127.0.0.1:{port}")]}))),
    )
    .await;
    refused(&r, "loopback");
    let r = fetch(
        format!("http://[::ffff:127.0.0.1]:{port}/hello"),
        Some(grant(
            json!({"allow": [format!("[::ffff:127.0.0.1]:{port}")]}),
        )),
    )
    .await;
    refused(&r, "loopback");
    // A name that resolves to loopback.
    let r = fetch(
        format!("http://localhost:{port}/hello"),
        Some(grant(json!({"allow": [format!("localhost:{port}")]}))),
    )
    .await;
    refused(
        &r,
        "not reachable unless grants.http.allow_private lists localhost",
    );
    // A granted private host redirects to another name that resolves to
    // loopback, and to the cloud metadata address: each a new request,
    // checked again.
    let trusted = format!("127.0.0.1:{port}");
    let g = grant(json!({
        "allow": [trusted, format!("localhost:{port}"), "169.254.169.254"],
        "allow_private": [trusted],
    }));
    let r = fetch(
        format!("http://{trusted}/to/localhost:{port}"),
        Some(g.clone()),
    )
    .await;
    refused(&r, "localhost is 127.0.0.1, loopback");
    let lines = http_lines(&r);
    assert!(lines[0].contains("→ 302"), "{lines:?}");
    let r = fetch(format!("http://{trusted}/to/169.254.169.254"), Some(g)).await;
    refused(&r, "link-local");
}

#[tokio::test]
async fn floods_huge_bodies_and_stalls_end_at_the_grant_s_limits() {
    let addr = local_server().await;
    let host = addr.to_string();
    let limited = |extra: Value| {
        let mut g = json!({"allow": [host], "allow_private": [host]});
        g.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Some(grant(g))
    };
    // A redirect loop is a request flood: the sixth request is refused.
    let mut s = spec(json!({"url": format!("http://{host}/loop"), "max_redirects": 100}));
    s.http = limited(json!({"max_requests": 5}));
    let r = sandbox().run(&load("http_fetch"), s).await;
    refused(&r, "grants.http.max_requests (5) reached");
    assert_eq!(http_lines(&r).len(), 6);

    let r = fetch(
        format!("http://{host}/huge"),
        limited(json!({"max_bytes": "1MiB"})),
    )
    .await;
    assert_eq!(r.error_kind(), Some(ErrorKind::ActionFatal), "{r:#?}");
    let lines = http_lines(&r);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("over grants.http.max_bytes")),
        "{lines:?}"
    );
    assert!(r.media.is_empty());

    let began = std::time::Instant::now();
    let r = fetch(
        format!("http://{host}/stall"),
        limited(json!({"timeout": "500ms"})),
    )
    .await;
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(r.error_kind(), Some(ErrorKind::ActionRetryable), "{r:#?}");
    let lines = http_lines(&r);
    assert!(lines.iter().any(|l| l.contains("timeout")), "{lines:?}");
}
