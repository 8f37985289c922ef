//! Plugins written in Python (componentize-py, with `sdk/python`), run
//! through `ward run` and through the server: success, the error cases as
//! the SDK maps them, and limits. Built by `plugins/python/build.sh`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::server::Server;

/// A Python plugin's component, built by `plugins/python/build.sh`.
fn python(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/python")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build it with `plugins/python/build.sh` (or run `.ci/run`)",
        path.display()
    );
    path
}

/// `ward run COMPONENT --json ARGS…`: its exit code and report.
fn ward_run(component: &PathBuf, args: &[&str]) -> (Option<i32>, Value) {
    let cache = std::env::temp_dir().join("ward-polyglot-test-cache");
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("run")
        .arg(component)
        .args(args)
        .arg("--json")
        .env("WARD_CACHE_DIR", cache)
        .output()
        .expect("ward runs");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

#[test]
fn python_actions_run_locally_with_their_errors_and_limits() {
    let hello = python("hello");
    let (code, r) = ward_run(&hello, &["--input", r#"{"name":"Ada"}"#]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["result"], json!({"message": "Hello, Ada!"}));
    assert_eq!(r["outputs"]["message"], "Hello, Ada!");
    assert_eq!(r["metrics"][0]["name"], "greetings");
    assert_eq!(r["logs"][0]["message"], "greeting Ada");

    // Any exception is retryable, with its traceback; the SDK's cases keep theirs.
    let (code, r) = ward_run(&hello, &["--input", r#"{"fail":"retryable"}"#]);
    assert_eq!(code, Some(1));
    assert_eq!(r["error"]["kind"], "action_retryable", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Traceback") && message.contains("RuntimeError: asked to fail"),
        "{message}"
    );
    let (_, r) = ward_run(&hello, &["--input", r#"{"fail":"fatal"}"#]);
    assert_eq!(r["error"]["kind"], "action_fatal", "{r}");
    let (_, r) = ward_run(&hello, &["--input", r#"{"name":" "}"#]);
    assert_eq!(r["error"]["kind"], "invalid_input", "{r}");
    let (_, r) = ward_run(&hello, &["--input", "[1]"]);
    assert_eq!(
        r["error"]["kind"], "action_retryable",
        "a list has no .get: {r}"
    );

    // A Python loop is stopped by fuel, or by the clock.
    let (_, r) = ward_run(
        &hello,
        &["--input", r#"{"spin":true}"#, "--fuel", "50000000"],
    );
    assert_eq!(r["error"]["kind"], "fuel_exhausted", "{r}");
    let spin = [
        "--input",
        r#"{"spin":true}"#,
        "--fuel",
        "1000000000000",
        "--timeout",
        "300ms",
    ];
    let (_, r) = ward_run(&hello, &spin);
    assert_eq!(r["error"]["kind"], "timeout", "{r}");

    let clean = python("clean-csv");
    let input = json!({
        "csv": "Name, Age\n Ada ,36\n\nGrace,85\nAda,36\nbad\n,12\n",
        "required": ["name"]
    });
    let (code, r) = ward_run(&clean, &["--input", &input.to_string()]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(
        r["outputs"]["rows"],
        json!([{"name": "Ada", "age": "36"}, {"name": "Grace", "age": "85"}])
    );
    assert_eq!(r["outputs"]["rejected"], 3);
    assert_eq!(r["result"]["rows"], 2);
    assert_eq!(r["media"][0]["name"], "clean.csv");
    assert_eq!(r["media"][0]["content_type"], "text/csv");
    let rejected: Vec<(String, i64)> = r["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == "rejected_rows")
        .map(|m| {
            (
                m["tags"]["reason"].as_str().unwrap().to_string(),
                m["value"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rejected.len(), 3, "{:?}", r["metrics"]);
    // A dataclass input refuses fields it does not have.
    let (_, r) = ward_run(&clean, &["--input", r#"{"csv":"a\n1\n","colour":"red"}"#]);
    assert_eq!(r["error"]["kind"], "invalid_input", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("colour"),
        "{r}"
    );
}

fn attempts(e: &Value) -> usize {
    e["task_runs"][0]["attempts"].as_array().map_or(0, Vec::len)
}

/// A 19 MB Python component uploaded over the API within the default
/// limits, run as a task: success, retried failures, a fatal one, a timeout.
#[tokio::test]
async fn python_actions_upload_and_run_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch_bare(dir.path());
    let bytes = std::fs::read(python("hello")).unwrap();
    assert!(
        bytes.len() > 16 << 20,
        "a big component: {} bytes",
        bytes.len()
    );
    let r = reqwest::Client::new()
        .post(s.url("/plugins?name=py-hello&version=0.1.0"))
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    s.create_task(json!({
        "name": "py-hello", "action": "py-hello",
        "retry": {"max_attempts": 2, "initial_backoff": "10ms"},
        "limits": {"timeout": "1s"}
    }))
    .await;
    let wait = std::time::Duration::from_secs(120);
    let id = s.start("py-hello", json!({"name": "Ada"})).await;
    let e = s.wait_for(&id, "SUCCESS", wait).await;
    assert_eq!(e["outputs"]["message"], "Hello, Ada!");

    let id = s.start("py-hello", json!({"fail": "retryable"})).await;
    let e = s.wait_for(&id, "FAILED", wait).await;
    assert_eq!(attempts(&e), 2, "retried once: {e}");
    assert_eq!(e["error"]["kind"], "action_retryable", "{e}");

    let id = s.start("py-hello", json!({"fail": "fatal"})).await;
    let e = s.wait_for(&id, "FAILED", wait).await;
    assert_eq!(attempts(&e), 1, "not retried: {e}");
    assert_eq!(e["error"]["kind"], "action_fatal", "{e}");

    let id = s.start("py-hello", json!({"spin": true})).await;
    let e = s.wait_for(&id, "FAILED", wait).await;
    assert_eq!(e["error"]["kind"], "timeout", "{e}");
}
