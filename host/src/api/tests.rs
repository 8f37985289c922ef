//! The API in process: `app(service).oneshot(request)` against a service on
//! a temporary SQLite store, as `ward serve` builds it but without a socket.
//! Plugins are registered in the store directly (no component is needed to
//! create tasks); executions then fail at their first attempt, which the
//! listing and lookup tests do not mind.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::routing::get;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::app;
use crate::model::execution::Plugin;
use crate::model::now;
use crate::model::task::Task;
use crate::runtime::service::{Service, ServiceConfig};
use crate::sandbox::{EngineConfig, MediaStore, MediaUrls, Sandbox};
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

/// One sandbox for the test binary: it owns a large instance pool.
fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| Arc::new(Sandbox::new(EngineConfig::small()).expect("sandbox starts")))
        .clone()
}

pub struct Api {
    pub app: Router,
    pub svc: Arc<Service>,
    _dir: tempfile::TempDir,
}

/// A response, its body read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts a problem+json answer with this status; returns its detail.
    #[track_caller]
    pub fn problem(&self, status: StatusCode) -> String {
        assert_eq!(
            (self.status, self.content_type()),
            (status, "application/problem+json"),
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let p = self.json();
        assert_eq!(p["status"], status.as_u16());
        assert_eq!(p["type"], "about:blank");
        assert!(p["title"].is_string());
        p["detail"].as_str().expect("a detail").to_string()
    }
}

impl Api {
    pub async fn new() -> Api {
        Api::with_slots(512).await
    }

    /// With `slots` 0 nothing is dispatched: a test moves executions on
    /// through the store itself.
    pub async fn with_slots(slots: usize) -> Api {
        Api::build(slots, false).await
    }

    /// Every call needs a token, as `ward serve` runs by default.
    pub async fn with_tokens() -> Api {
        Api::build(4, true).await
    }

    async fn build(slots: usize, require_tokens: bool) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("ward.db"))
                .await
                .unwrap(),
        );
        let media = Arc::new(
            MediaStore::open(
                &dir.path().join("media"),
                MediaUrls::Prefix("http://ward.test/api/v1/media/".into()),
            )
            .unwrap(),
        );
        let mut config = ServiceConfig::new(dir.path().join("components"));
        config.slots = slots;
        // Tokens have their own tests (auth_tests); the rest are about the rest.
        config.require_tokens = require_tokens;
        let svc = Service::start(store, sandbox(), media, config)
            .await
            .unwrap();
        for (namespace, name) in [
            ("default", "noop"),
            ("default", "hello"),
            ("team", "hello"),
            ("team", "noop"),
        ] {
            svc.store()
                .put_plugin(&Plugin {
                    id: format!(
                        "sha256:{}",
                        crate::sandbox::component::digest(name.as_bytes())
                    ),
                    namespace: namespace.into(),
                    name: name.into(),
                    version: None,
                    size: 4,
                    created_at: now(),
                })
                .await
                .unwrap();
        }
        Api {
            app: app(svc.clone()),
            svc,
            _dir: dir,
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `path` is under `/api/v1`.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"))
            .header(header::CONTENT_TYPE, "application/json");
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.send(req.body(body).unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Creates a task; returns it.
    pub async fn task(&self, spec: Value) -> Value {
        let r = self.post("/tasks", spec).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    /// Starts an execution of `task` (`query` may name a namespace); returns it.
    pub async fn start(&self, task: &str, query: &str) -> Value {
        self.start_with(task, query, json!({})).await
    }

    /// Starts an execution of `task` with `body`; returns it.
    pub async fn start_with(&self, task: &str, query: &str, body: Value) -> Value {
        let r = self
            .post(&format!("/tasks/{task}/executions{query}"), body)
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

// ---- every status an error can have, each in problem+json ----

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let api = Api::new().await;
    let req = Request::post("/api/v1/tasks")
        .body(Body::from("{\"name\": "))
        .unwrap();
    let detail = api.send(req).await.problem(StatusCode::BAD_REQUEST);
    assert!(detail.starts_with("malformed JSON"), "{detail}");
}

#[tokio::test]
async fn an_unknown_id_or_route_is_a_404_problem() {
    let api = Api::new().await;
    let id = uuid::Uuid::now_v7().to_string();
    let detail = api
        .get(&format!("/executions/{id}"))
        .await
        .problem(StatusCode::NOT_FOUND);
    assert_eq!(detail, format!("no execution {id}"));
    let detail = api
        .get("/nothing/here")
        .await
        .problem(StatusCode::NOT_FOUND);
    assert!(
        detail.contains("no endpoint /api/v1/nothing/here"),
        "{detail}"
    );
    let outside = Request::get("/elsewhere").body(Body::empty()).unwrap();
    let detail = api.send(outside).await.problem(StatusCode::NOT_FOUND);
    assert!(detail.contains("no endpoint /elsewhere"), "{detail}");
}

#[tokio::test]
async fn a_method_a_route_lacks_is_a_405_problem_naming_what_it_allows() {
    let api = Api::new().await;
    let r = api.call(Method::DELETE, "/executions", None).await;
    assert_eq!(
        r.problem(StatusCode::METHOD_NOT_ALLOWED),
        "method DELETE is not allowed on /api/v1/executions; allowed: GET"
    );
    assert!(r.headers[header::ALLOW].to_str().unwrap().contains("GET"));
    let r = api.call(Method::PATCH, "/tasks/greet", None).await;
    assert_eq!(
        r.problem(StatusCode::METHOD_NOT_ALLOWED),
        "method PATCH is not allowed on /api/v1/tasks/greet; allowed: GET, PUT, DELETE"
    );
}

#[tokio::test]
async fn an_error_response_no_handler_made_becomes_a_problem() {
    let routes = Router::new()
        .route(
            "/teapot",
            get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
        .route("/gone", get(|| async { StatusCode::GONE }))
        .route("/fine", get(|| async { "fine" }));
    let api = Api {
        app: super::with_problems(routes),
        ..Api::new().await
    };
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let detail = api
        .send(get("/teapot"))
        .await
        .problem(StatusCode::IM_A_TEAPOT);
    assert_eq!(detail, "short and stout");
    let detail = api.send(get("/gone")).await.problem(StatusCode::GONE);
    assert_eq!(detail, "gone");
    let ok = api.send(get("/fine")).await;
    assert_eq!(
        (ok.status, ok.body.as_slice()),
        (StatusCode::OK, &b"fine"[..])
    );
}

#[tokio::test]
async fn a_name_taken_is_a_409_problem() {
    let api = Api::new().await;
    api.task(json!({"name": "greet", "action": "hello"})).await;
    let detail = api
        .post("/tasks", json!({"name": "greet", "action": "noop"}))
        .await
        .problem(StatusCode::CONFLICT);
    assert!(
        detail.starts_with("a task named \"greet\" already exists in namespace \"default\""),
        "{detail}"
    );
}

#[tokio::test]
async fn an_oversized_body_is_a_413_problem() {
    let api = Api::new().await;
    let big = json!({"name": "big", "action": "noop", "input": {"x": "y".repeat(2 << 20)}});
    let detail = api
        .post("/tasks", big)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(detail.starts_with("request body too large"), "{detail}");
}

#[tokio::test]
async fn an_invalid_task_is_a_422_problem_listing_every_problem() {
    let api = Api::new().await;
    let r = api
        .post(
            "/tasks",
            json!({"name": "bad name", "action": "missing", "retry": {"max_attempts": 0}}),
        )
        .await;
    assert_eq!(r.problem(StatusCode::UNPROCESSABLE_ENTITY), "invalid task");
    let problems: Vec<String> = serde_json::from_value(r.json()["problems"].clone()).unwrap();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("\"missing\" is not a registered plugin"))
    );
    // The wrong shape is a 422 too; bad syntax was a 400.
    let r = api.post("/tasks", json!({"name": 3})).await;
    assert_eq!(r.problem(StatusCode::UNPROCESSABLE_ENTITY), "invalid task");
}

// ---- task names and namespaces ----

#[tokio::test]
async fn a_name_is_looked_up_in_the_namespace_asked_for_only() {
    let api = Api::new().await;
    let default = api.task(json!({"name": "greet", "action": "hello"})).await;
    let team = api
        .task(json!({"name": "greet", "namespace": "team", "action": "hello"}))
        .await;
    assert_eq!(api.get("/tasks/greet").await.json()["id"], default["id"]);
    assert_eq!(
        api.get("/tasks/greet?namespace=team").await.json()["id"],
        team["id"]
    );
    let detail = api
        .get("/tasks/greet?namespace=other")
        .await
        .problem(StatusCode::NOT_FOUND);
    assert_eq!(detail, "no task \"greet\" in namespace \"other\"");
    // An id matches by id, whatever the namespace.
    let team_id = team["id"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/tasks/{team_id}")).await.json()["id"],
        team["id"]
    );
    let upper = team_id.to_uppercase();
    assert_eq!(
        api.get(&format!("/tasks/{upper}?namespace=x")).await.json()["id"],
        team["id"]
    );
    let detail = api
        .get("/tasks/greet?namespace=not%20valid")
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert!(
        detail.starts_with("namespace name \"not valid\""),
        "{detail}"
    );

    // Starting and listing by name use the namespace too.
    let exec = api.start("greet", "?namespace=team").await;
    assert_eq!(exec["task_id"], team["id"]);
    let listed = api
        .get("/executions?task_id=greet&namespace=team")
        .await
        .json();
    assert_eq!(
        ids(&listed, "executions"),
        vec![exec["id"].as_str().unwrap()]
    );
    let listed = api.get("/executions?task_id=greet").await.json();
    assert!(ids(&listed, "executions").is_empty());
    let detail = api
        .get("/executions?task_id=greet&namespace=other")
        .await
        .problem(StatusCode::NOT_FOUND);
    assert_eq!(detail, "no task \"greet\" in namespace \"other\"");
    let listed = api
        .get(&format!("/executions?task_id={team_id}"))
        .await
        .json();
    assert_eq!(ids(&listed, "executions").len(), 1);

    // Replacing by name replaces that namespace's task.
    let r = api
        .call(
            Method::PUT,
            "/tasks/greet?namespace=team",
            Some(json!({"name": "greet", "namespace": "team", "action": "noop"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["version"].clone()),
        (StatusCode::OK, json!(2))
    );
    assert_eq!(r.json()["id"], team["id"]);
    assert_eq!(api.get("/tasks/greet").await.json()["version"], 1);
}

#[tokio::test]
async fn a_delete_by_id_deletes_exactly_that_task() {
    let api = Api::new().await;
    let a = api.task(json!({"name": "greet", "action": "hello"})).await;
    let b = api
        .task(json!({"name": "greet", "namespace": "team", "action": "hello"}))
        .await;
    let a_id = a["id"].as_str().unwrap();
    // A task named after a's id, as could be written before names were
    // checked.
    let mut legacy: Task = serde_json::from_value(a.clone()).unwrap();
    legacy.id = uuid::Uuid::now_v7().to_string();
    legacy.spec.name = a_id.to_string();
    api.svc.store().create_task(&legacy).await.unwrap();

    let r = api
        .call(Method::DELETE, &format!("/tasks/{a_id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let left = ids(&api.get("/tasks").await.json(), "tasks");
    assert_eq!(left.len(), 2);
    assert!(left.contains(&legacy.id) && left.contains(&b["id"].as_str().unwrap().to_string()));
    api.get("/tasks/greet").await.problem(StatusCode::NOT_FOUND);

    // By name: the one in the namespace asked for.
    let r = api
        .call(Method::DELETE, "/tasks/greet?namespace=team", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        ids(&api.get("/tasks").await.json(), "tasks"),
        vec![legacy.id]
    );
    let detail = api
        .call(Method::DELETE, "/tasks/greet?namespace=team", None)
        .await
        .problem(StatusCode::NOT_FOUND);
    assert_eq!(detail, "no task \"greet\" in namespace \"team\"");
}

#[tokio::test]
async fn a_task_name_that_looks_like_an_id_is_refused() {
    let api = Api::new().await;
    let id = uuid::Uuid::now_v7().to_string();
    let r = api
        .post("/tasks", json!({"name": id, "action": "hello"}))
        .await;
    assert_eq!(r.problem(StatusCode::UNPROCESSABLE_ENTITY), "invalid task");
    assert_eq!(
        r.json()["problems"],
        json!([format!(
            "task name \"{id}\" looks like a task id (a UUID); names cannot look like ids"
        )])
    );
    api.task(json!({"name": "greet", "action": "hello"})).await;
    let r = api
        .call(
            Method::PUT,
            "/tasks/greet",
            Some(json!({"name": id, "action": "hello"})),
        )
        .await;
    assert_eq!(r.problem(StatusCode::UNPROCESSABLE_ENTITY), "invalid task");
}

// ---- since and until ----

#[tokio::test]
async fn since_and_until_compare_instants_in_any_rfc3339_spelling() {
    let api = Api::new().await;
    api.task(json!({"name": "greet", "action": "hello"})).await;
    let first = api.start("greet", "").await;
    let created = first["created_at"].as_str().unwrap().to_string();
    let at = chrono::DateTime::parse_from_rfc3339(&created).unwrap();
    // The whole second after `first` was created, with a space: as text it
    // sorts before `created` (' ' < 'T'), as an instant after.
    let next_second = (at + chrono::Duration::seconds(1))
        .format("%Y-%m-%d %H:%M:%SZ")
        .to_string();
    let list = |q: String| {
        let api = &api;
        async move {
            let r = api.get(&format!("/executions?{q}")).await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{q}: {}",
                String::from_utf8_lossy(&r.body)
            );
            ids(&r.json(), "executions")
        }
    };
    let enc = |t: &str| t.replace('+', "%2B").replace(' ', "%20");
    assert!(
        list(format!("since={}", enc(&next_second)))
            .await
            .is_empty()
    );
    assert_eq!(list(format!("until={}", enc(&next_second))).await.len(), 1);
    // The same instant at +01:00, with a lowercase t and z elsewhere.
    let plus_one = at
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%.6f%:z")
        .to_string();
    assert_eq!(list(format!("since={}", enc(&plus_one))).await.len(), 1);
    assert!(list(format!("until={}", enc(&plus_one))).await.is_empty());
    let lower = created.replace('T', "t").replace('Z', "z");
    assert_eq!(list(format!("since={lower}")).await.len(), 1);
    assert!(list(format!("until={lower}")).await.is_empty());

    let detail = api
        .get("/executions?since=yesterday")
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert!(
        detail.starts_with("since must be an RFC 3339 time"),
        "{detail}"
    );
    assert!(detail.contains("got \"yesterday\""), "{detail}");
}

// ---- cursors ----

#[tokio::test]
async fn pages_follow_the_cursors_the_server_issued() {
    let api = Api::new().await;
    api.task(json!({"name": "greet", "action": "hello"})).await;
    let mut started = Vec::new();
    for _ in 0..5 {
        started.push(
            api.start("greet", "").await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    started.reverse(); // listed newest first
    let mut seen = Vec::new();
    let mut query = "/executions?limit=2".to_string();
    loop {
        let page = api.get(&query).await.json();
        seen.extend(ids(&page, "executions"));
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert!(
                    !started.iter().any(|id| c.contains(id.as_str())),
                    "opaque: {c}"
                );
                query = format!("/executions?limit=2&cursor={c}");
            }
            None => break,
        }
    }
    assert_eq!(seen, started);
}

#[tokio::test]
async fn a_cursor_the_server_did_not_issue_is_a_400() {
    let api = Api::new().await;
    let id = uuid::Uuid::now_v7().to_string();
    for bad in ["garbage", "", id.as_str(), "djE6bm9wZQ"] {
        let detail = api
            .get(&format!("/executions?cursor={bad}"))
            .await
            .problem(StatusCode::BAD_REQUEST);
        assert!(
            detail.contains("is not one this server issued"),
            "{bad:?}: {detail}"
        );
    }
}

// ---- query strings and URLs ----

#[tokio::test]
async fn a_bad_query_value_is_a_400_naming_it() {
    let api = Api::new().await;
    api.task(json!({"name": "greet", "action": "hello"})).await;
    let exec = api.start("greet", "").await;
    let id = exec["id"].as_str().unwrap();
    for (path, expected) in [
        (
            "/executions?limit=-1".to_string(),
            "limit must be an integer 1-1000, got \"-1\"",
        ),
        (
            "/executions?limit=1001".into(),
            "limit must be an integer 1-1000, got \"1001\"",
        ),
        (
            "/executions?format=xml".into(),
            "format must be json or csv, got \"xml\"",
        ),
        (
            "/executions?status=sleepy".into(),
            "unknown status \"sleepy\": use one of",
        ),
        (
            format!("/executions/{id}/logs?after=abc"),
            "after must be an integer 0-9223372036854775807, got \"abc\"",
        ),
        (
            format!("/executions/{id}/events?follow=maybe"),
            "follow must be true or false, got \"maybe\"",
        ),
        (
            format!("/executions/{id}/outputs?format=xml"),
            "format must be json or csv, got \"xml\"",
        ),
        (
            format!("/executions/{id}/outputs?format=csv"),
            "format=csv needs name=OUTPUT: only one output at a time has a CSV form",
        ),
        (
            "/executions?limit=1&limit=2".into(),
            "invalid query string: duplicate field `limit`",
        ),
    ] {
        let detail = api.get(&path).await.problem(StatusCode::BAD_REQUEST);
        assert!(detail.starts_with(expected), "{path}: {detail}");
    }
}

#[tokio::test]
async fn invalid_utf8_in_the_url_is_a_400_problem() {
    let api = Api::new().await;
    let detail = api
        .get("/executions/%FF")
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert_eq!(
        detail,
        "path parameter id is not valid UTF-8 once percent-decoded"
    );
    let detail = api
        .get("/executions?status=%FF")
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert_eq!(
        detail,
        "the query string is not valid UTF-8 once percent-decoded"
    );
}

// Control verbs in every state: `control_tests.rs` (with real guests).

// ---- the OpenAPI document ----

/// The served document, and a check of real responses against it.
struct Contract {
    doc: Value,
}

impl Contract {
    async fn of(api: &Api) -> Contract {
        let r = api.get("/openapi.json").await;
        assert_eq!(r.status, StatusCode::OK);
        Contract { doc: r.json() }
    }

    /// Asserts that `reply`, to `method` on the documented `path`, is a
    /// documented status and its JSON body fits the documented schema.
    #[track_caller]
    fn check(&self, method: &str, path: &str, reply: &Reply) {
        let op = &self.doc["paths"][format!("/api/v1{path}")][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        let response = &op["responses"][reply.status.as_str()];
        assert!(
            response.is_object(),
            "{method} {path}: status {} is not documented",
            reply.status
        );
        let content_type = reply.content_type().split(';').next().unwrap_or_default();
        let schema = &response["content"][content_type]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} {}: {content_type} is not documented",
            reply.status
        );
        // The schema with the document's components, for its $refs.
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::validator_for(&root).expect("a valid schema");
        let body = reply.json();
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {}: {errors:?}\n{body:#}",
            reply.status
        );
    }
}

#[tokio::test]
async fn every_operation_documents_its_errors_as_problems() {
    let api = Api::new().await;
    let doc = Contract::of(&api).await.doc;
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 34, "{:?}", paths.keys().collect::<Vec<_>>());
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"][PROBLEM]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                assert!(p["schema"].is_object(), "{method} {path}: {p}");
            }
        }
    }
    assert_eq!(operations, 40);
}

const PROBLEM: &str = "application/problem+json";

#[tokio::test]
async fn real_responses_fit_the_document() {
    let api = Api::new().await;
    let contract = Contract::of(&api).await;
    let check = |method, path: &str, reply: &Reply| contract.check(method, path, reply);

    let created = api
        .post(
            "/tasks",
            json!({"name": "greet", "action": "hello", "limits": {"memory": "64MiB"}}),
        )
        .await;
    check("post", "/tasks", &created);
    let task_id = created.json()["id"].as_str().unwrap().to_string();
    check(
        "get",
        "/tasks/{id}",
        &api.get(&format!("/tasks/{task_id}")).await,
    );
    check("get", "/tasks", &api.get("/tasks").await);
    let invalid = api.post("/tasks", json!({"name": "", "action": ""})).await;
    check("post", "/tasks", &invalid);
    check("get", "/tasks/{id}", &api.get("/tasks/nope").await);

    let started = api
        .post(
            "/tasks/greet/executions",
            json!({"input": {"name": "Ada"}, "labels": {"k": "v"}}),
        )
        .await;
    check("post", "/tasks/{id}/executions", &started);
    let id = started.json()["id"].as_str().unwrap().to_string();
    // Let the attempt run (and fail: there is no component) so that the
    // execution has a task run with an attempt and an error.
    for _ in 0..100 {
        let e = api.get(&format!("/executions/{id}")).await.json();
        if e["state"] == "FAILED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let got = api.get(&format!("/executions/{id}")).await;
    assert_eq!(got.json()["state"], "FAILED", "{}", got.json());
    check("get", "/executions/{id}", &got);
    check("get", "/executions", &api.get("/executions?limit=1").await);
    check("get", "/executions", &api.get("/executions?limit=0").await);
    check(
        "get",
        "/executions/{id}/logs",
        &api.get(&format!("/executions/{id}/logs")).await,
    );
    check(
        "get",
        "/executions/{id}/events",
        &api.get(&format!("/executions/{id}/events")).await,
    );
    check(
        "get",
        "/executions/{id}/outputs",
        &api.get(&format!("/executions/{id}/outputs")).await,
    );
    check(
        "get",
        "/executions/{id}/metrics",
        &api.get(&format!("/executions/{id}/metrics")).await,
    );
    check(
        "get",
        "/executions/{id}/media",
        &api.get(&format!("/executions/{id}/media")).await,
    );
    let restarted = api
        .post(&format!("/executions/{id}/restart"), json!(null))
        .await;
    check("post", "/executions/{id}/restart", &restarted);
    let paused = api
        .post(&format!("/executions/{id}/pause"), json!(null))
        .await;
    check("post", "/executions/{id}/pause", &paused);
    check(
        "get",
        "/executions/{id}",
        &api.get("/executions/nope").await,
    );

    check("get", "/plugins", &api.get("/plugins").await);
    check("get", "/plugins/{id}", &api.get("/plugins/hello").await);
    check("get", "/workers", &api.get("/workers").await);
    check("get", "/healthz", &api.get("/healthz").await);
}

/// The bytes of a test plugin built in `plugins/`.
pub fn component(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../plugins/target/wasm32-wasip2/release/{name}.wasm"
    ));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (build plugins/ first)", path.display()))
}

impl Api {
    async fn run_greet(&self) -> Value {
        self.start_with("greet", "?wait=60s", json!({"input": {"name": "Ada"}}))
            .await
    }

    async fn upload(&self, query: &str, bytes: Vec<u8>) -> Reply {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("/api/v1/plugins?{query}"))
            .header(header::CONTENT_TYPE, "application/wasm")
            .body(Body::from(bytes))
            .unwrap();
        self.send(req).await
    }
}

/// A name and version always mean the same bytes; names never pass for
/// digests; a task runs the bytes its action meant when it was last
/// changed, whatever is uploaded under that name later.
#[tokio::test]
async fn a_plugin_name_and_version_always_mean_the_same_bytes() {
    let api = Api::new().await;
    let (hello, noop) = (component("hello"), component("noop"));
    let hello_id = format!("sha256:{}", crate::sandbox::component::digest(&hello));
    let noop_id = format!("sha256:{}", crate::sandbox::component::digest(&noop));

    let r = api.upload("name=greeter&version=1.0", noop.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let first = r.json();
    assert_eq!(first["id"], noop_id);
    // The same bytes again: that plugin, not a new one.
    let r = api.upload("name=greeter&version=1.0", noop.clone()).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, first));
    // Other bytes under a name and version taken: refused, naming the owner.
    let detail = api
        .upload("name=greeter&version=1.0", hello.clone())
        .await
        .problem(StatusCode::CONFLICT);
    assert!(
        detail.starts_with(&format!(
            "plugin \"greeter\" version \"1.0\" is already {noop_id}"
        )),
        "{detail}"
    );
    // The same bytes may have another name too; a name without a version
    // is held to its bytes as well.
    let r = api.upload("name=solo", noop.clone()).await;
    assert_eq!(
        (r.status, r.json()["name"].clone()),
        (StatusCode::CREATED, json!("solo"))
    );
    let detail = api
        .upload("name=solo", hello.clone())
        .await
        .problem(StatusCode::CONFLICT);
    assert!(detail.contains("without a version"), "{detail}");

    // Names that could be read as a digest or an id are refused.
    let zeros = "0".repeat(64);
    for name in [
        format!("sha256:{zeros}"),
        zeros.clone(),
        uuid::Uuid::now_v7().to_string(),
    ] {
        let r = api
            .upload(&format!("name={name}&version=1"), noop.clone())
            .await;
        r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    // A digest only ever finds the content with that hash.
    assert_eq!(
        api.get(&format!("/plugins/sha256:{zeros}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get(&format!("/plugins/{zeros}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get(&format!("/plugins/{noop_id}")).await.json()["name"],
        "greeter"
    );
    let r = api
        .post(
            "/tasks",
            json!({"name": "ghost", "action": format!("sha256:{zeros}")}),
        )
        .await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY);

    // A task resolves its action when created ...
    let task = api
        .task(json!({"name": "greet", "action": "greeter"}))
        .await;
    assert_eq!(
        task["resolved_actions"],
        json!({"greeter": noop_id}),
        "{task}"
    );
    // ... and runs those bytes after a newer upload under the name.
    let r = api.upload("name=greeter&version=2.0", hello.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let e = api.run_greet().await;
    assert_eq!(e["state"], "SUCCESS", "{e}");
    assert_eq!(e["result"], Value::Null, "noop ran: {e}");
    // Changing the task resolves the name again: now the newest upload.
    let r = api
        .call(
            Method::PUT,
            "/tasks/greet",
            Some(json!({"name": "greet", "action": "greeter"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["resolved_actions"], json!({"greeter": hello_id}));
    let e = api.run_greet().await;
    assert_eq!(e["result"]["message"], "Hello, Ada!", "{e}");
    // What a caller sends as resolved_actions is replaced.
    let r = api
        .post(
            "/tasks",
            json!({"name": "sneaky", "action": "greeter", "resolved_actions": {"greeter": noop_id}}),
        )
        .await;
    assert_eq!(r.json()["resolved_actions"], json!({"greeter": hello_id}));
}

/// A declared `Content-Length` over the route's limit is a 413 at once: the
/// body (here: none at all, as from a client that announces 100 GB and
/// sends nothing) is never awaited.
#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_is_read() {
    let api = Api::new().await;
    let never = || {
        Body::from_stream(futures_util::stream::pending::<
            Result<Vec<u8>, std::io::Error>,
        >())
    };
    for (uri, declared, limit) in [
        ("/api/v1/tasks", "99999999999", "1048576"),
        ("/api/v1/tasks", "1048577", "1048576"),
        (
            "/api/v1/plugins?name=big",
            "99999999999",
            &*(64u64 << 20).to_string(),
        ),
    ] {
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_LENGTH, declared)
            .body(never())
            .unwrap();
        let reply = tokio::time::timeout(std::time::Duration::from_secs(10), api.send(req))
            .await
            .expect("answered without waiting for the body");
        let detail = reply.problem(StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            detail.contains(&format!(
                "Content-Length {declared} is over this route's limit of {limit} bytes"
            )),
            "{detail}"
        );
    }
    // Within the limit, the body is read as before.
    let r = api
        .post("/tasks", json!({"name": "small", "action": "noop"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

/// A handler that panics answers a 500 problem with an id (the log has the
/// panic under it), and the same router goes on serving.
#[tokio::test]
async fn a_panic_in_a_handler_is_a_500_with_an_id_and_the_server_goes_on() {
    async fn boom() -> &'static str {
        panic!("the handler broke")
    }
    let app = super::with_problems(
        Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" })),
    );
    for _ in 0..2 {
        let resp = app
            .clone()
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let problem: Value = serde_json::from_slice(&body).unwrap();
        let detail = problem["detail"].as_str().unwrap();
        let id = detail
            .strip_prefix("internal error ")
            .and_then(|rest| rest.split(':').next())
            .unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{detail}");
        assert!(
            !detail.contains("the handler broke"),
            "details stay in the log: {detail}"
        );
        let fine = app
            .clone()
            .oneshot(Request::get("/fine").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(fine.status(), StatusCode::OK);
    }
}

/// Lists can leave out what they do not need (`fields=`), and labels are
/// bounded in count, names and size.
#[tokio::test]
async fn lists_return_the_fields_asked_for_and_labels_are_bounded() {
    let api = Api::with_slots(0).await;
    api.task(json!({"name": "t", "action": "noop"})).await;
    let r = api
        .post(
            "/tasks/t/executions",
            json!({"input": {"big": "x".repeat(10_000)}, "labels": {"team": "a"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let page = api.get("/executions?fields=state,task_id").await.json();
    let e = &page["executions"][0];
    let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["id", "task_id", "state"], "{e}");
    assert!(page.get("next_cursor").is_some());
    let full = api.get("/executions").await.json();
    assert!(full["executions"][0]["input"]["big"].is_string());
    // Every field an execution has can be asked for.
    for key in full["executions"][0].as_object().unwrap().keys() {
        assert!(
            super::executions::EXECUTION_FIELDS.contains(&key.as_str()),
            "{key}"
        );
    }
    let detail = api
        .get("/executions?fields=state,secrets")
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert!(
        detail.starts_with("fields: \"secrets\" is no field of an execution"),
        "{detail}"
    );

    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("l{i}"), json!("v"))).collect();
    let r = api
        .post("/tasks/t/executions", json!({"labels": many}))
        .await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["problems"], json!(["at most 64 labels, got 65"]));
    let r = api
        .post(
            "/tasks/t/executions",
            json!({"labels": {"big": "v".repeat(1025)}}),
        )
        .await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    // Inputs are bounded in bytes too, an execution's and a task's.
    let r = api
        .post(
            "/tasks/t/executions",
            json!({"input": {"big": "x".repeat(300 << 10)}}),
        )
        .await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let problems = r.json()["problems"].to_string();
    assert!(
        problems.contains("over the 256 KiB an input may be"),
        "{problems}"
    );
    let r = api
        .post(
            "/tasks",
            json!({"name": "big-input", "action": "noop", "input": {"x": "y".repeat(300 << 10)}}),
        )
        .await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.json()["problems"].to_string().contains("256 KiB"),
        "{}",
        r.json()
    );
}

/// A secret is sealed at rest, never shown, read by the task's own attempts
/// through get-variable, and redacted from what they report; an update that
/// sends it back as shown keeps it.
#[tokio::test]
async fn secrets_are_sealed_never_shown_and_redacted_from_reports() {
    let api = Api::new().await;
    let r = api.upload("name=chaos", component("chaos")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let secret = "hunter2-very-secret";
    let spec = json!({
        "name": "s", "action": "chaos",
        "input": {"mode": "variable", "name": "token"},
        "grants": {"variables": {"plain": "p"}, "secrets": {"token": secret}}
    });
    let task = api.task(spec.clone()).await;
    assert_eq!(
        task["grants"]["secrets"],
        json!({"token": "(secret)"}),
        "{task}"
    );
    assert!(!task.to_string().contains(secret));
    let listed = api.get("/tasks").await;
    assert!(!String::from_utf8_lossy(&listed.body).contains(secret));
    let r = api.post("/tasks/s/executions?wait=60s", json!({})).await;
    let e = r.json();
    assert_eq!(e["state"], "SUCCESS", "{e}");
    // The guest read the secret (what it returned is exactly the secret)...
    assert_eq!(e["result"], json!({"value": "[secret]"}), "{e}");
    let id = e["id"].as_str().unwrap();
    let full = api.get(&format!("/executions/{id}")).await;
    assert!(!String::from_utf8_lossy(&full.body).contains(secret));
    // ... and the store holds it sealed only.
    for entry in std::fs::read_dir(api._dir.path()).unwrap().flatten() {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the secret in the clear",
                entry.path().display()
            );
        }
    }
    // Sent back as shown: kept.
    let mut again = spec.clone();
    again["grants"]["secrets"]["token"] = json!("(secret)");
    let r = api.call(Method::PUT, "/tasks/s", Some(again)).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let e = api
        .post("/tasks/s/executions?wait=60s", json!({}))
        .await
        .json();
    assert_eq!(e["result"], json!({"value": "[secret]"}), "{e}");
    // "(secret)" with nothing stored under the name: refused.
    let mut missing = spec.clone();
    missing["name"] = json!("s2");
    missing["grants"]["secrets"]["token"] = json!("(secret)");
    api.post("/tasks", missing)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    // A name both a variable and a secret: refused.
    let mut both = spec;
    both["name"] = json!("s3");
    both["grants"]["variables"]["token"] = json!("x");
    api.post("/tasks", both)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
}

/// A signed link serves its object until it expires; a link whose
/// signature, object or expiry was changed is a 403.
#[tokio::test]
async fn a_signed_media_link_works_for_its_object_until_it_expires() {
    let api = Api::new().await;
    api.upload("name=chaos", component("chaos")).await;
    api.task(
        json!({"name": "m", "action": "chaos", "input": {"mode": "media_flood", "size": 8 << 20}}),
    )
    .await;
    let e = api
        .post("/tasks/m/executions?wait=60s", json!({}))
        .await
        .json();
    let id = e["id"].as_str().unwrap();
    let media = api.get(&format!("/executions/{id}/media")).await.json();
    let (first, second) = (&media["media"][0], &media["media"][1]);
    let object = first["id"].as_str().unwrap();

    let link = api
        .get(&format!("/media/{object}/link?expires_in=10m"))
        .await
        .json();
    let url = link["url"].as_str().unwrap();
    let query = url.split_once('?').unwrap().1;
    assert!(link["expires_at"].is_string(), "{link}");
    let r = api.get(&format!("/media/{object}?{query}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), 8 << 20);

    let expires: u64 = query
        .split('&')
        .next()
        .unwrap()
        .trim_start_matches("expires=")
        .parse()
        .unwrap();
    let signature = query.rsplit_once("signature=").unwrap().1;
    let other = second["id"].as_str().unwrap();
    for bad in [
        format!("/media/{other}?{query}"),
        format!(
            "/media/{object}?expires={}&signature={signature}",
            expires + 1
        ),
        format!(
            "/media/{object}?expires={expires}&signature={}",
            "0".repeat(64)
        ),
        format!("/media/{object}?expires={expires}"),
        format!("/media/{object}?expires=1&signature={}", {
            // Signed by this host, but long expired.
            api.svc.sign_media_link(object, 1)
        }),
    ] {
        api.get(&bad).await.problem(StatusCode::FORBIDDEN);
    }
    for bad in ["0s", "8d", "soon"] {
        api.get(&format!("/media/{object}/link?expires_in={bad}"))
            .await
            .problem(StatusCode::BAD_REQUEST);
    }
    api.get("/media/nope/link")
        .await
        .problem(StatusCode::NOT_FOUND);
}
