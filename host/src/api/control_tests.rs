//! Every control verb in every execution state, through the router in
//! process (`app(svc).oneshot(…)`): the status, the content type and the
//! state each call answers with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::model::state::{ExecutionState, TaskRunState};
use crate::model::task::TaskRef;
use crate::runtime::service::{Service, ServiceConfig};
use crate::sandbox::{EngineConfig, MediaStore, MediaUrls, Sandbox};
use crate::store::sqlite::SqliteStore;

/// A service on a temporary data dir with the chaos plugin registered.
pub(super) struct Harness {
    pub svc: Arc<Service>,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::configured(|_| {}, Arc::default()).await
    }

    /// A harness whose service config `configure` adjusts and whose store
    /// publishes its commits on `changes`.
    pub async fn configured(
        configure: impl FnOnce(&mut ServiceConfig),
        changes: Arc<crate::store::changes::Changes>,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open_with(
                &dir.path().join("ward.db"),
                crate::model::clock::system(),
                changes,
            )
            .await
            .unwrap(),
        );
        let media = Arc::new(
            MediaStore::open(
                &dir.path().join("media"),
                MediaUrls::Prefix("http://localhost/api/v1/media/".into()),
            )
            .unwrap(),
        );
        let sandbox = Arc::new(Sandbox::new(EngineConfig::default()).unwrap());
        let mut config = ServiceConfig::new(dir.path().join("components"));
        config.require_tokens = false;
        configure(&mut config);
        let svc = Service::start(store, sandbox, media, config).await.unwrap();
        let chaos = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/target/wasm32-wasip2/release/chaos.wasm");
        let bytes = std::fs::read(&chaos)
            .unwrap_or_else(|e| panic!("{}: {e} (build plugins/ first)", chaos.display()));
        svc.add_plugin("default", "chaos", None, bytes)
            .await
            .unwrap();
        Harness { svc, _dir: dir }
    }

    pub async fn call(&self, method: &str, uri: &str, body: Value) -> (StatusCode, String, Value) {
        let resp = self.send(method, uri, &[], body).await;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, content_type, json)
    }

    /// The router's response to one request, its body unread.
    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> axum::response::Response {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Body::from(body.to_string())).unwrap();
        super::app(self.svc.clone()).oneshot(req).await.unwrap()
    }

    pub async fn task(&self, spec: Value) {
        let spec = serde_json::from_value(spec).unwrap();
        self.svc.create_task(spec).await.unwrap();
    }

    pub async fn start(&self, task: &str, input: Value) -> String {
        let (e, _) = self
            .svc
            .start_execution(
                &TaskRef::name("default", task),
                crate::runtime::service::StartRequest {
                    input: Some(input),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        e.id
    }

    /// Waits until `check` holds for the execution (bounded).
    async fn until(
        &self,
        id: &str,
        what: &str,
        check: impl Fn(&crate::model::execution::Execution) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let e = self.svc.execution(id, true).await.unwrap().unwrap();
            if check(&e) {
                return;
            }
            assert!(Instant::now() < deadline, "{id} never {what}: {e:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn until_state(&self, id: &str, state: ExecutionState) {
        self.until(id, state.as_str(), |e| e.state == state).await;
    }

    pub async fn until_run(&self, id: &str, state: TaskRunState) {
        self.until(id, state.as_str(), |e| {
            e.task_runs.as_ref().is_some_and(|r| r[0].state == state)
        })
        .await;
    }
}

/// The states an execution can be held in, and how to get one there.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Held {
    Created,
    /// RUNNING with its attempt running.
    Running,
    /// RUNNING while its task run waits out a retry's backoff.
    Backoff,
    /// PAUSED with its attempt still running.
    Paused,
    /// PAUSED during a backoff.
    PausedBackoff,
    Success,
    Failed,
    Killed,
    Restarted,
}

async fn hold(h: &Harness, held: Held) -> String {
    match held {
        Held::Created | Held::Restarted => {
            // A task limited to one attempt at once, kept busy.
            let task = format!("held-{}", uuid::Uuid::now_v7().simple());
            h.task(json!({"name": task, "action": "chaos", "concurrency": 1}))
                .await;
            let failed = (held == Held::Restarted).then_some(());
            let failed = match failed {
                Some(()) => {
                    let id = h.start(&task, json!({"mode": "fatal"})).await;
                    h.until_state(&id, ExecutionState::Failed).await;
                    Some(id)
                }
                None => None,
            };
            let blocker = h.start(&task, json!({"mode": "sleep", "ms": 600000})).await;
            h.until_state(&blocker, ExecutionState::Running).await;
            match failed {
                Some(id) => {
                    h.svc
                        .control(&id, crate::store::Control::Restart)
                        .await
                        .unwrap();
                    id
                }
                None => h.start(&task, json!({"mode": "ok"})).await,
            }
        }
        Held::Running | Held::Paused => {
            let id = h
                .start("plain", json!({"mode": "sleep", "ms": 600000}))
                .await;
            h.until_run(&id, TaskRunState::Running).await;
            if held == Held::Paused {
                h.svc
                    .control(&id, crate::store::Control::Pause)
                    .await
                    .unwrap();
            }
            id
        }
        Held::Backoff | Held::PausedBackoff => {
            let id = h.start("retrier", json!({"mode": "retryable"})).await;
            h.until_run(&id, TaskRunState::Retrying).await;
            if held == Held::PausedBackoff {
                h.svc
                    .control(&id, crate::store::Control::Pause)
                    .await
                    .unwrap();
            }
            id
        }
        Held::Success => {
            let id = h.start("plain", json!({"mode": "ok"})).await;
            h.until_state(&id, ExecutionState::Success).await;
            id
        }
        Held::Failed => {
            let id = h.start("plain", json!({"mode": "fatal"})).await;
            h.until_state(&id, ExecutionState::Failed).await;
            id
        }
        Held::Killed => {
            let id = Box::pin(hold(h, Held::Created)).await;
            h.svc
                .control(&id, crate::store::Control::Cancel)
                .await
                .unwrap();
            id
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_control_verb_in_every_state_answers_with_its_own_plan() {
    use Held::*;
    let h = Harness::new().await;
    h.task(json!({"name": "plain", "action": "chaos"})).await;
    h.task(json!({
        "name": "retrier", "action": "chaos",
        "retry": {"max_attempts": 5, "initial_backoff": "20s", "multiplier": 1.0}
    }))
    .await;
    // (state, verb, expected: Some(state answered) for 200, None for 409)
    let table: &[(Held, &str, Option<&str>)] = &[
        (Created, "cancel", Some("KILLED")),
        (Created, "pause", None),
        (Created, "resume", None),
        (Created, "restart", None),
        (Running, "cancel", Some("KILLING")),
        (Running, "pause", Some("PAUSED")),
        (Running, "resume", None),
        (Running, "restart", None),
        (Backoff, "cancel", Some("KILLED")),
        (Backoff, "pause", Some("PAUSED")),
        (Backoff, "resume", None),
        (Backoff, "restart", None),
        (Paused, "cancel", Some("KILLING")),
        (Paused, "pause", None),
        (Paused, "resume", Some("RUNNING")),
        (Paused, "restart", None),
        (PausedBackoff, "cancel", Some("KILLED")),
        (PausedBackoff, "resume", Some("RUNNING")),
        (Success, "cancel", None),
        (Success, "pause", None),
        (Success, "resume", None),
        (Success, "restart", None),
        (Failed, "cancel", None),
        (Failed, "pause", None),
        (Failed, "resume", None),
        (Failed, "restart", Some("RESTARTED")),
        (Killed, "cancel", None),
        (Killed, "pause", None),
        (Killed, "resume", None),
        (Killed, "restart", Some("RESTARTED")),
        (Restarted, "cancel", Some("KILLED")),
        (Restarted, "pause", None),
        (Restarted, "resume", None),
        (Restarted, "restart", None),
    ];
    for &(held, verb, expected) in table {
        let id = hold(&h, held).await;
        let before = h.svc.execution(&id, true).await.unwrap().unwrap();
        let (status, content_type, body) = h
            .call(
                "POST",
                &format!("/api/v1/executions/{id}/{verb}"),
                json!({}),
            )
            .await;
        match expected {
            Some(state) => {
                assert_eq!(status, StatusCode::OK, "{held:?} {verb}: {body}");
                assert_eq!(body["state"], state, "{held:?} {verb}: {body}");
                assert_eq!(body["id"], id.as_str());
            }
            None => {
                assert_eq!(status, StatusCode::CONFLICT, "{held:?} {verb}: {body}");
                assert_eq!(content_type, "application/problem+json");
                assert!(
                    body["detail"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("cannot go from")),
                    "{held:?} {verb}: {body}"
                );
                let after = h.svc.execution(&id, true).await.unwrap().unwrap();
                assert_eq!(before.state, after.state, "{held:?} {verb} changed nothing");
            }
        }
    }
    // The killed ones settle: a KILLING execution ends KILLED once its
    // guest has stopped.
    let id = hold(&h, Running).await;
    h.call(
        "POST",
        &format!("/api/v1/executions/{id}/cancel"),
        json!({}),
    )
    .await;
    h.until_state(&id, ExecutionState::Killed).await;
}

#[tokio::test]
async fn an_unknown_execution_is_a_404_for_every_verb() {
    let h = Harness::new().await;
    for verb in ["cancel", "pause", "resume", "restart"] {
        let (status, content_type, body) = h
            .call(
                "POST",
                &format!("/api/v1/executions/{}/{verb}", uuid::Uuid::now_v7()),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{verb}: {body}");
        assert_eq!(content_type, "application/problem+json");
    }
}
