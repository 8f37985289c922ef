//! Plugins written in Python (componentize-py, with `sdk/python`) and
//! JavaScript (componentize-js, with `sdk/js`), run through `ward run` and
//! through the server: success, the error cases as each SDK maps them, and
//! limits. Built by `plugins/python/build.sh` and `plugins/js/build.sh`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::server::Server;

/// A plugin's component in `lang` (`python`, `js`), built by
/// `plugins/LANG/build.sh`.
fn component(lang: &str, name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../plugins/target/{lang}"))
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build it with `plugins/{lang}/build.sh` (or run `.ci/run`)",
        path.display()
    );
    path
}

fn python(name: &str) -> PathBuf {
    component("python", name)
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

/// The hello action of each language: its result, output, metric and log;
/// any exception retryable (with where it was thrown), the SDK's cases
/// kept; a loop stopped by fuel and by the clock.
#[test]
fn hello_in_python_and_javascript_runs_locally_with_its_errors_and_limits() {
    for (lang, thrown) in [
        ("python", "RuntimeError: asked to fail"),
        ("js", "Error: asked to fail"),
    ] {
        let hello = component(lang, "hello");
        let (code, r) = ward_run(&hello, &["--input", r#"{"name":"Ada"}"#]);
        assert_eq!(code, Some(0), "{lang}: {r}");
        assert_eq!(r["result"], json!({"message": "Hello, Ada!"}), "{lang}");
        assert_eq!(r["outputs"]["message"], "Hello, Ada!", "{lang}");
        assert_eq!(r["metrics"][0]["name"], "greetings", "{lang}");
        assert_eq!(r["logs"][0]["message"], "greeting Ada", "{lang}");

        let (code, r) = ward_run(&hello, &["--input", r#"{"fail":"retryable"}"#]);
        assert_eq!(code, Some(1), "{lang}");
        assert_eq!(r["error"]["kind"], "action_retryable", "{lang}: {r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(message.contains(thrown), "{lang}: {message}");
        let (_, r) = ward_run(&hello, &["--input", r#"{"fail":"fatal"}"#]);
        assert_eq!(r["error"]["kind"], "action_fatal", "{lang}: {r}");
        assert_eq!(r["error"]["message"], "asked to fail for good", "{lang}");
        let (_, r) = ward_run(&hello, &["--input", r#"{"name":" "}"#]);
        assert_eq!(r["error"]["kind"], "invalid_input", "{lang}: {r}");

        let spin = ["--input", r#"{"spin":true}"#, "--fuel", "50000000"];
        let (_, r) = ward_run(&hello, &spin);
        assert_eq!(r["error"]["kind"], "fuel_exhausted", "{lang}: {r}");
        let spin = [
            "--input",
            r#"{"spin":true}"#,
            "--fuel",
            "1000000000000",
            "--timeout",
            "300ms",
        ];
        let (_, r) = ward_run(&hello, &spin);
        assert_eq!(r["error"]["kind"], "timeout", "{lang}: {r}");
    }
}

/// clean-csv: rows kept and rejected, the cleaned CSV as a media, a counter
/// per rejected row by reason; a dataclass input refuses unknown fields.
#[test]
fn python_clean_csv_cleans_rows_and_counts_the_rejected() {
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
    for reason in ["width", "missing", "duplicate"] {
        assert!(
            rejected.contains(&(reason.to_string(), 1)),
            "{reason}: {rejected:?}"
        );
    }
    // A dataclass input refuses fields it does not have.
    let (_, r) = ward_run(&clean, &["--input", r#"{"csv":"a\n1\n","colour":"red"}"#]);
    assert_eq!(r["error"]["kind"], "invalid_input", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("colour"),
        "{r}"
    );
}

/// A Python guest that overflows the wasm stack or runs into the memory
/// limit ends as a failed attempt with a clear error; what it wrote to
/// stderr first is in the attempt's logs.
#[test]
fn python_misbehaviour_ends_as_a_failed_attempt() {
    let chaos = python("chaos");
    let (code, r) = ward_run(&chaos, &["--input", r#"{"mode":"recurse"}"#]);
    assert_eq!(code, Some(1));
    assert_eq!(r["error"]["kind"], "stack_overflow", "{r}");
    let stderr: Vec<&Value> = r["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["source"] == "stderr")
        .collect();
    assert_eq!(stderr[0]["message"], "about to recurse without end", "{r}");

    // The runtime itself aborting is a trap, and its message ends with the
    // guest's last words on stderr.
    let (code, r) = ward_run(&chaos, &["--input", r#"{"mode":"abort"}"#]);
    assert_eq!(code, Some(1));
    assert_eq!(r["error"]["kind"], "trap", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("stderr:\nthe runtime gives up here"),
        "{r}"
    );

    let (_, r) = ward_run(
        &chaos,
        &["--input", r#"{"mode":"memory"}"#, "--memory", "64MiB"],
    );
    assert_eq!(r["error"]["kind"], "action_retryable", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .trim_end()
            .ends_with("MemoryError"),
        "{r}"
    );
    let peak = r["usage"]["memory_peak_bytes"].as_u64().unwrap();
    assert!(peak <= 64 << 20, "the limit held: {peak}");
}

/// json-transform: paths into the document, nested mappings, a path that
/// finds nothing (null, counted), a bad path refused as invalid input.
#[test]
fn js_json_transform_maps_a_document() {
    let transform = component("js", "json-transform");
    let input = json!({
        "document": {"user": {"name": "Ada", "address": {"city": "London"}}, "tags": ["x", "y"], "id": 7},
        "mapping": {"name": "user.name", "city": "user.address.city", "tag": "tags[1]",
                    "zip": "user.zip", "meta": {"id": "id", "all": "$"}}
    });
    let (code, r) = ward_run(&transform, &["--input", &input.to_string()]);
    assert_eq!(code, Some(0), "{r}");
    let expected = json!({"name": "Ada", "city": "London", "tag": "y", "zip": null,
        "meta": {"id": 7, "all": input["document"]}});
    assert_eq!(r["result"], expected);
    assert_eq!(r["outputs"]["document"], expected);
    let counter = |name: &str| {
        r["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()["value"]
            .clone()
    };
    assert_eq!(counter("fields_mapped"), 5);
    assert_eq!(counter("missing_fields"), 1);
    let bad = json!({"document": {}, "mapping": {"x": "a..b"}});
    let (_, r) = ward_run(&transform, &["--input", &bad.to_string()]);
    assert_eq!(r["error"]["kind"], "invalid_input", "{r}");
}

fn attempts(e: &Value) -> usize {
    e["task_runs"][0]["attempts"].as_array().map_or(0, Vec::len)
}

/// Big components (a 19 MB Python one, a 12 MB JavaScript one) uploaded
/// over the API within the default limits, run as tasks: success, retried
/// failures, a fatal one, a timeout.
#[tokio::test]
async fn python_and_javascript_actions_upload_and_run_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch_bare(dir.path());
    for lang in ["python", "js"] {
        let bytes = std::fs::read(component(lang, "hello")).unwrap();
        assert!(
            bytes.len() > 10 << 20,
            "{lang}: a big component: {} bytes",
            bytes.len()
        );
        let name = format!("{lang}-hello");
        let r = reqwest::Client::new()
            .post(s.url(&format!("/plugins?name={name}&version=0.1.0")))
            .bearer_auth(&s.token)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{lang}: {}", r.text().await.unwrap());
        s.create_task(json!({
            "name": name, "action": name,
            "retry": {"max_attempts": 2, "initial_backoff": "10ms"},
            "limits": {"timeout": "1s", "fuel": 1_000_000_000_000_000u64}
        }))
        .await;
        let wait = std::time::Duration::from_secs(120);
        let id = s.start(&name, json!({"name": "Ada"})).await;
        let e = s.wait_for(&id, "SUCCESS", wait).await;
        assert_eq!(e["outputs"]["message"], "Hello, Ada!", "{lang}");

        let id = s.start(&name, json!({"fail": "retryable"})).await;
        let e = s.wait_for(&id, "FAILED", wait).await;
        assert_eq!(attempts(&e), 2, "{lang}: retried once: {e}");
        assert_eq!(e["error"]["kind"], "action_retryable", "{lang}: {e}");

        let id = s.start(&name, json!({"fail": "fatal"})).await;
        let e = s.wait_for(&id, "FAILED", wait).await;
        assert_eq!(attempts(&e), 1, "{lang}: not retried: {e}");
        assert_eq!(e["error"]["kind"], "action_fatal", "{lang}: {e}");

        let id = s.start(&name, json!({"spin": true})).await;
        let e = s.wait_for(&id, "FAILED", wait).await;
        assert_eq!(e["error"]["kind"], "timeout", "{lang}: {e}");

        // Built against a newer world than this Ward's: refused at upload,
        // naming the import, before any attempt can fail on it.
        let bytes = std::fs::read(component(lang, "hello")).unwrap();
        let newer = replace_all(&bytes, b"ward:action/host@0.1.0", b"ward:action/host@0.2.0");
        let r = reqwest::Client::new()
            .post(s.url(&format!("/plugins?name={lang}-newer&version=0.1.0")))
            .bearer_auth(&s.token)
            .header("content-type", "application/wasm")
            .body(newer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{lang}");
        let problem: Value = r.json().await.unwrap();
        let detail = problem["problems"][0].as_str().unwrap_or_default();
        assert!(
            detail.starts_with(
                "component imports `ward:action/host@0.2.0`, which this Ward does not provide"
            ),
            "{lang}: {problem}"
        );
    }
}

/// `bytes` with every `from` replaced by `to` (of the same length).
fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut i = 0;
    while let Some(at) = out[i..].windows(from.len()).position(|w| w == from) {
        out[i + at..i + at + from.len()].copy_from_slice(to);
        i += at + from.len();
    }
    assert!(i > 0, "{} not found", String::from_utf8_lossy(from));
    out
}

/// What `./start.sh` promises: a server started from the repository has the
/// Python and JavaScript examples registered beside the Rust ones (compiled
/// after it is up), ready to run as tasks.
#[tokio::test]
async fn a_server_started_from_the_repository_registers_the_python_and_js_examples() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch_from_repository(dir.path());
    let wanted = [
        "hello",
        "python-hello",
        "python-clean-csv",
        "js-hello",
        "js-json-transform",
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let (status, list) = s.get("/plugins").await;
        assert_eq!(status, 200, "{list}");
        let names: Vec<&str> = list["plugins"]
            .as_array()
            .map(|items| items.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        if wanted.iter().all(|w| names.contains(w)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "examples not all registered: {names:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    for name in ["python-clean-csv", "js-json-transform"] {
        s.create_task(json!({"name": name, "action": name})).await;
    }
    let id = s
        .start("python-clean-csv", json!({"csv": "name,age\nAda,36\n,\n"}))
        .await;
    let e = s
        .wait_for(&id, "SUCCESS", std::time::Duration::from_secs(60))
        .await;
    assert_eq!(e["outputs"]["rows"][0]["name"], "Ada", "{e}");
    let id = s
        .start(
            "js-json-transform",
            json!({"document": {"a": {"b": 2}}, "mapping": {"x": "a.b"}}),
        )
        .await;
    let e = s
        .wait_for(&id, "SUCCESS", std::time::Duration::from_secs(60))
        .await;
    assert_eq!(e["outputs"]["document"], json!({"x": 2}), "{e}");
}
