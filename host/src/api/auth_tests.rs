//! Tokens, scopes and namespaces through the API: every endpoint × every
//! scope × an object of the token's own namespace or another's, with the
//! exact status each must answer; and tokens that are missing, wrong,
//! expired or revoked.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use super::tests::{Api, Reply, component};
use crate::model::auth::Scope;
use crate::runtime::access::NewToken;

impl Api {
    async fn token(&self, namespace: Option<&str>, scopes: &[Scope]) -> String {
        self.token_and_id(namespace, scopes).await.1
    }

    /// A new token's record and secret.
    async fn token_and_id(
        &self,
        namespace: Option<&str>,
        scopes: &[Scope],
    ) -> (crate::model::auth::Token, String) {
        self.svc
            .create_token(NewToken {
                namespace: namespace.map(String::from),
                scopes: scopes.iter().copied().collect(),
                ..NewToken::default()
            })
            .await
            .unwrap()
    }

    /// `path` is under `/api/v1`; `body` JSON, or a component's bytes.
    async fn call_as(
        &self,
        token: Option<&str>,
        method: &Method,
        path: &str,
        body: &Body0,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("/api/v1{path}"));
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Body0::None => req.body(Body::empty()),
            Body0::Json(v) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            Body0::Bytes(b) => req.body(Body::from(b.clone())),
        };
        self.send(req.unwrap()).await
    }
}

#[derive(Clone)]
enum Body0 {
    None,
    Json(Value),
    Bytes(Vec<u8>),
}

/// What one namespace holds for the table: a task, an ended execution of
/// it, and a media object.
struct Objects {
    task: String,
    execution: String,
    media: String,
    /// A token to revoke (again and again: revoking is idempotent).
    victim: String,
}

async fn fill(api: &Api, admin: &str, ns: &str) -> Objects {
    let as_admin = |method: Method, path: String, body: Body0| async move {
        let r = api.call_as(Some(admin), &method, &path, &body).await;
        assert!(
            r.status.is_success(),
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    };
    as_admin(
        Method::POST,
        format!("/plugins?name=chaos&namespace={ns}"),
        Body0::Bytes(component("chaos")),
    )
    .await;
    let task = as_admin(
        Method::POST,
        "/tasks".into(),
        Body0::Json(
            json!({"name": "t", "namespace": ns, "action": "chaos", "input": {"mode": "ok"}}),
        ),
    )
    .await;
    as_admin(
        Method::POST,
        "/tasks".into(),
        Body0::Json(json!({"name": "m", "namespace": ns, "action": "chaos",
            "input": {"mode": "media_flood", "size": 1 << 20}})),
    )
    .await;
    let path = |t: &str| format!("/tasks/{t}/executions?namespace={ns}&wait=60s");
    let execution = as_admin(Method::POST, path("t"), Body0::Json(json!({}))).await;
    assert!(execution["fuel_used"].as_u64().unwrap() > 0, "{execution}");
    let with_media = as_admin(Method::POST, path("m"), Body0::Json(json!({}))).await;
    let media = as_admin(
        Method::GET,
        format!("/executions/{}/media", with_media["id"].as_str().unwrap()),
        Body0::None,
    )
    .await;
    let victim = api.token_and_id(Some(ns), &[Scope::TasksRead]).await.0.id;
    Objects {
        victim,
        task: task["id"].as_str().unwrap().into(),
        execution: execution["id"].as_str().unwrap().into(),
        media: media["media"][0]["id"].as_str().unwrap().into(),
    }
}

/// Every endpoint, as (method, path with `{task}`/`{execution}`/`{media}`/
/// `{ns}` to fill, body, the scope it needs, whether it names an object).
fn endpoints(chaos: &[u8]) -> Vec<(Method, &'static str, Body0, Option<Scope>, bool)> {
    use Scope::*;
    let none = Body0::None;
    let empty = Body0::Json(json!({}));
    let task = Body0::Json(json!({"name": "t", "action": "chaos", "input": {"mode": "ok"}}));
    vec![
        (Method::GET, "/healthz", none.clone(), None, false),
        (Method::GET, "/openapi.json", none.clone(), None, false),
        (
            Method::GET,
            "/plugins",
            none.clone(),
            Some(TasksRead),
            false,
        ),
        (
            Method::GET,
            "/plugins?namespace={ns}",
            none.clone(),
            Some(TasksRead),
            true,
        ),
        (
            Method::GET,
            "/plugins/chaos?namespace={ns}",
            none.clone(),
            Some(TasksRead),
            true,
        ),
        (
            Method::POST,
            "/plugins?name=chaos&namespace={ns}",
            Body0::Bytes(chaos.to_vec()),
            Some(PluginsWrite),
            true,
        ),
        (Method::GET, "/tasks", none.clone(), Some(TasksRead), false),
        (
            Method::POST,
            "/tasks",
            Body0::Json(json!({"name": "{unique}", "namespace": "{ns}", "action": "chaos"})),
            Some(TasksWrite),
            true,
        ),
        (
            Method::GET,
            "/tasks/{task}",
            none.clone(),
            Some(TasksRead),
            true,
        ),
        (Method::PUT, "/tasks/{task}", task, Some(TasksWrite), true),
        (
            Method::GET,
            "/tasks/{task}/dataset",
            none.clone(),
            Some(TasksRead),
            true,
        ),
        (
            Method::POST,
            "/tasks/{task}/schedule/pause",
            none.clone(),
            Some(TasksWrite),
            true,
        ),
        (
            Method::POST,
            "/tasks/{task}/schedule/resume",
            none.clone(),
            Some(TasksWrite),
            true,
        ),
        (
            Method::POST,
            "/tasks/{task}/executions",
            empty.clone(),
            Some(ExecutionsTrigger),
            true,
        ),
        (
            Method::GET,
            "/executions",
            none.clone(),
            Some(ExecutionsRead),
            false,
        ),
        (
            Method::GET,
            "/executions?task_id=t&namespace={ns}",
            none.clone(),
            Some(ExecutionsRead),
            true,
        ),
        (
            Method::GET,
            "/executions/{execution}",
            none.clone(),
            Some(ExecutionsRead),
            true,
        ),
        (
            Method::GET,
            "/executions/{execution}/logs",
            none.clone(),
            Some(ExecutionsRead),
            true,
        ),
        (
            Method::GET,
            "/executions/{execution}/events",
            none.clone(),
            Some(ExecutionsRead),
            true,
        ),
        (
            Method::GET,
            "/executions/{execution}/outputs",
            none.clone(),
            Some(ExecutionsRead),
            true,
        ),
        (
            Method::GET,
            "/executions/{execution}/metrics",
            none.clone(),
            Some(ExecutionsRead),
            true,
        ),
        (
            Method::GET,
            "/executions/{execution}/media",
            none.clone(),
            Some(ExecutionsRead),
            true,
        ),
        (
            Method::GET,
            "/executions/{execution}/dataset",
            none.clone(),
            Some(ExecutionsRead),
            true,
        ),
        (
            Method::POST,
            "/executions/{execution}/cancel",
            none.clone(),
            Some(ExecutionsControl),
            true,
        ),
        (
            Method::POST,
            "/executions/{execution}/pause",
            none.clone(),
            Some(ExecutionsControl),
            true,
        ),
        (
            Method::POST,
            "/executions/{execution}/resume",
            none.clone(),
            Some(ExecutionsControl),
            true,
        ),
        (
            Method::POST,
            "/executions/{execution}/restart",
            none.clone(),
            Some(ExecutionsControl),
            true,
        ),
        (
            Method::POST,
            "/executions/{execution}/replay",
            none.clone(),
            Some(ExecutionsControl),
            true,
        ),
        (
            Method::GET,
            "/events?namespace={ns}",
            none.clone(),
            Some(ExecutionsRead),
            true,
        ),
        (
            Method::GET,
            "/analytics?namespace={ns}",
            none.clone(),
            Some(ExecutionsRead),
            true,
        ),
        (
            Method::GET,
            "/media/{media}",
            none.clone(),
            Some(MediaRead),
            true,
        ),
        (
            Method::GET,
            "/media/{media}/link",
            none.clone(),
            Some(MediaRead),
            true,
        ),
        (Method::GET, "/workers", none.clone(), Some(Admin), false),
        (Method::GET, "/tokens", none.clone(), Some(Admin), false),
        (
            Method::POST,
            "/tokens",
            Body0::Json(json!({"namespace": "{ns}", "scopes": ["tasks:read"]})),
            Some(Admin),
            true,
        ),
        (
            Method::DELETE,
            "/tokens/{victim}",
            none.clone(),
            Some(Admin),
            false,
        ),
        (Method::GET, "/audit", none.clone(), Some(Admin), false),
        (
            Method::GET,
            "/namespaces/{ns}/limits",
            none.clone(),
            Some(Admin),
            true,
        ),
        (
            Method::PUT,
            "/namespaces/{ns}/limits",
            empty,
            Some(Admin),
            true,
        ),
    ]
}

fn fill_in(text: &str, ns: &str, o: &Objects) -> String {
    text.replace("{ns}", ns)
        .replace("{task}", &o.task)
        .replace("{execution}", &o.execution)
        .replace("{media}", &o.media)
        .replace("{victim}", &o.victim)
        .replace("{unique}", &uuid::Uuid::now_v7().simple().to_string())
}

fn filled(body: &Body0, ns: &str, o: &Objects) -> Body0 {
    match body {
        Body0::Json(v) => {
            Body0::Json(serde_json::from_str(&fill_in(&v.to_string(), ns, o)).unwrap())
        }
        other => other.clone(),
    }
}

#[tokio::test]
async fn every_endpoint_answers_each_scope_and_namespace_exactly() {
    let api = Api::with_tokens().await;
    let admin = api.token(None, &[Scope::Admin]).await;
    let own = fill(&api, &admin, "a").await;
    let other = fill(&api, &admin, "b").await;
    let chaos = component("chaos");
    let mut tokens = vec![(Scope::Admin, admin.clone())];
    for scope in Scope::ALL.into_iter().filter(|s| *s != Scope::Admin) {
        tokens.push((scope, api.token(Some("a"), &[scope]).await));
    }
    let mut checked = 0;
    for (method, path, body, needs, names_object) in endpoints(&chaos) {
        // What the admin gets for namespace a's object is what any token
        // allowed to do it gets; the admin sees namespace b's as well.
        let own_path = fill_in(path, "a", &own);
        let own_body = filled(&body, "a", &own);
        let expected = api
            .call_as(Some(&admin), &method, &own_path, &own_body)
            .await
            .status;
        assert!(
            !matches!(expected.as_u16(), 401 | 403 | 404) && expected.as_u16() < 500,
            "{method} {own_path} as admin: {expected}"
        );
        for (scope, token) in &tokens {
            let allowed = needs.is_none_or(|n| n == *scope || *scope == Scope::Admin);
            let r = api
                .call_as(Some(token), &method, &own_path, &own_body)
                .await;
            let want = if allowed {
                expected
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(
                r.status,
                want,
                "{method} {own_path} with {scope}: {}",
                String::from_utf8_lossy(&r.body)
            );
            if want == StatusCode::FORBIDDEN {
                let detail = r.problem(StatusCode::FORBIDDEN);
                assert!(detail.contains(needs.unwrap().as_str()), "{detail}");
            }
            checked += 1;
            if !names_object {
                continue;
            }
            let other_path = fill_in(path, "b", &other);
            let other_body = filled(&body, "b", &other);
            let r = api
                .call_as(Some(token), &method, &other_path, &other_body)
                .await;
            let want = match (allowed, *scope == Scope::Admin) {
                (false, _) => StatusCode::FORBIDDEN,
                (true, true) => r.status, // the admin reaches b too (checked below)
                // Even a task written into another namespace: a 404.
                (true, false) => StatusCode::NOT_FOUND,
            };
            assert_eq!(
                r.status,
                want,
                "{method} {other_path} with {scope}: {}",
                String::from_utf8_lossy(&r.body)
            );
            if *scope == Scope::Admin {
                assert!(
                    !matches!(r.status.as_u16(), 401 | 403 | 404) && r.status.as_u16() < 500,
                    "{method} {other_path} as admin: {}",
                    r.status
                );
            }
            checked += 1;
        }
        // No token: only the public routes answer.
        let r = api.call_as(None, &method, &own_path, &own_body).await;
        let want = if needs.is_none() {
            expected
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(r.status, want, "{method} {own_path} without a token");
        if want == StatusCode::UNAUTHORIZED {
            assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
        }
    }
    assert!(checked > 400, "{checked}");

    // Lists show only the caller's namespace.
    let reader = api
        .token(Some("a"), &[Scope::TasksRead, Scope::ExecutionsRead])
        .await;
    let tasks = api
        .call_as(Some(&reader), &Method::GET, "/tasks", &Body0::None)
        .await
        .json();
    assert!(
        tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["namespace"] == "a"),
        "{tasks}"
    );
    let all = api
        .call_as(Some(&admin), &Method::GET, "/tasks", &Body0::None)
        .await
        .json();
    assert!(
        all["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["namespace"] == "b")
    );
    let execs = api
        .call_as(
            Some(&reader),
            &Method::GET,
            "/executions?limit=1000",
            &Body0::None,
        )
        .await
        .json();
    let list = execs["executions"].as_array().unwrap();
    assert!(
        !list.is_empty() && list.iter().all(|e| e["namespace"] == "a"),
        "{execs}"
    );
    let events = api
        .call_as(
            Some(&reader),
            &Method::GET,
            "/events?limit=1000",
            &Body0::None,
        )
        .await
        .json();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["namespace"] == "a"),
        "{events}"
    );
}

#[tokio::test]
async fn missing_wrong_expired_and_revoked_tokens_are_401() {
    let api = Api::with_tokens().await;
    let get = |token: Option<String>| {
        let api = &api;
        async move {
            api.call_as(token.as_deref(), &Method::GET, "/tasks", &Body0::None)
                .await
        }
    };
    let detail = get(None).await.problem(StatusCode::UNAUTHORIZED);
    assert!(detail.contains("Bearer"), "{detail}");
    get(Some("ward_".to_string() + &"0".repeat(64)))
        .await
        .problem(StatusCode::UNAUTHORIZED);
    get(Some("not even a token".into()))
        .await
        .problem(StatusCode::UNAUTHORIZED);
    let r = api
        .send(
            Request::get("/api/v1/tasks")
                .header(header::AUTHORIZATION, "Basic YTpi")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    r.problem(StatusCode::UNAUTHORIZED);

    let (token, secret) = api.token_and_id(Some("a"), &[Scope::TasksRead]).await;
    assert!(
        secret.starts_with("ward_") && secret.len() == 5 + 64,
        "{secret}"
    );
    assert_eq!(get(Some(secret.clone())).await.status, StatusCode::OK);
    api.svc.revoke_token(&token.id).await.unwrap();
    let detail = get(Some(secret)).await.problem(StatusCode::UNAUTHORIZED);
    assert!(detail.contains("revoked"), "{detail}");

    let (_, short) = api
        .svc
        .create_token(NewToken {
            namespace: Some("a".into()),
            scopes: [Scope::TasksRead].into(),
            expires_in: Some(std::time::Duration::from_millis(300)),
            ..NewToken::default()
        })
        .await
        .unwrap();
    assert_eq!(get(Some(short.clone())).await.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    get(Some(short)).await.problem(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_are_shown_once_and_stored_as_hashes() {
    let api = Api::with_tokens().await;
    let admin = api.token(None, &[Scope::Admin]).await;
    let r = api
        .call_as(
            Some(&admin),
            &Method::POST,
            "/tokens",
            &Body0::Json(json!({"namespace": "acme", "scopes": ["tasks:read", "executions:trigger"], "expires": "30d", "name": "ci"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let made = r.json();
    let secret = made["secret"].as_str().unwrap().to_string();
    assert_eq!(made["namespace"], "acme");
    assert_eq!(made["scopes"], json!(["tasks:read", "executions:trigger"]));
    assert!(made["expires_at"].is_string());
    // Any live token may ask who it is.
    let me = api
        .call_as(Some(&secret), &Method::GET, "/whoami", &Body0::None)
        .await
        .json();
    assert_eq!(me["namespace"], "acme");
    assert_eq!(me["scopes"], json!(["tasks:read", "executions:trigger"]));
    assert_eq!(me["token_id"], made["id"]);
    api.call_as(None, &Method::GET, "/whoami", &Body0::None)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    let listed = api
        .call_as(Some(&admin), &Method::GET, "/tokens", &Body0::None)
        .await;
    let text = String::from_utf8_lossy(&listed.body).to_string();
    assert!(
        !text.contains(&secret) && !text.contains("secret"),
        "{text}"
    );
    assert!(!text.contains(&admin));
    let stored = api.svc.store().tokens().await.unwrap();
    assert_eq!(stored.len(), 2);
    for bad in [
        json!({"scopes": ["tasks:read"]}),
        json!({"namespace": "a", "scopes": ["admin"]}),
        json!({"namespace": "a", "scopes": []}),
        json!({"namespace": "a", "scopes": ["tasks:delete"]}),
    ] {
        let r = api
            .call_as(
                Some(&admin),
                &Method::POST,
                "/tokens",
                &Body0::Json(bad.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        if bad["scopes"] == json!(["tasks:delete"]) {
            r.problem(StatusCode::UNPROCESSABLE_ENTITY);
            let body = String::from_utf8_lossy(&r.body);
            assert!(body.contains("tasks:delete"), "{body}");
        }
    }
    // Scopes as one string, as the CLI takes them; `expires_in` for `expires`.
    let r = api
        .call_as(
            Some(&admin),
            &Method::POST,
            "/tokens",
            &Body0::Json(
                json!({"namespace": "a", "scopes": "tasks:read, media:read", "expires_in": "1h"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let made_too = r.json();
    assert_eq!(made_too["scopes"], json!(["tasks:read", "media:read"]));
    assert!(made_too["expires_at"].is_string());
    let r = api
        .call_as(
            Some(&admin),
            &Method::POST,
            "/tokens",
            &Body0::Json(json!({"namespace": "a", "scopes": ["tasks:read"], "expires": "soon"})),
        )
        .await;
    r.problem(StatusCode::BAD_REQUEST);
    let id = made["id"].as_str().unwrap();
    let r = api
        .call_as(
            Some(&admin),
            &Method::DELETE,
            &format!("/tokens/{id}"),
            &Body0::None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["revoked_at"].is_string());
    let r = api
        .call_as(Some(&secret), &Method::GET, "/tasks", &Body0::None)
        .await;
    r.problem(StatusCode::UNAUTHORIZED);

    // The last live admin token stays: nobody could make another.
    let own = api.svc.tokens().await.unwrap();
    let admin_id = own
        .iter()
        .find(|t| t.namespace.is_none())
        .unwrap()
        .id
        .clone();
    let r = api
        .call_as(
            Some(&admin),
            &Method::DELETE,
            &format!("/tokens/{admin_id}"),
            &Body0::None,
        )
        .await;
    assert!(
        r.problem(StatusCode::CONFLICT)
            .contains("last live admin token")
    );
    let second = api.token(None, &[Scope::Admin]).await;
    let r = api
        .call_as(
            Some(&second),
            &Method::DELETE,
            &format!("/tokens/{admin_id}"),
            &Body0::None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    api.call_as(Some(&admin), &Method::GET, "/tasks", &Body0::None)
        .await
        .problem(StatusCode::UNAUTHORIZED);
}

/// Uploads, changes and control requests are in the audit trail with the
/// token that made them, refused ones too.
#[tokio::test]
async fn the_audit_trail_names_the_token_of_every_change() {
    let api = Api::with_tokens().await;
    let admin = api.token(None, &[Scope::Admin]).await;
    let objects = fill(&api, &admin, "a").await;
    let (writer_token, writer) = api
        .token_and_id(Some("a"), &[Scope::ExecutionsControl])
        .await;
    let cancel = format!("/executions/{}/cancel", objects.execution);
    api.call_as(Some(&writer), &Method::POST, &cancel, &Body0::None)
        .await;
    api.call_as(
        Some(&writer),
        &Method::DELETE,
        &format!("/tasks/{}", objects.task),
        &Body0::None,
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    let trail = api
        .call_as(
            Some(&admin),
            &Method::GET,
            "/audit?limit=1000",
            &Body0::None,
        )
        .await
        .json();
    let entries = trail["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.starts_with(&["plugin.upload", "task.create", "task.create"]),
        "{actions:?}"
    );
    let cancelled = entries
        .iter()
        .find(|e| e["action"] == "execution.cancel")
        .unwrap();
    assert_eq!(cancelled["token_id"], writer_token.id.as_str());
    assert_eq!(cancelled["object"], objects.execution.as_str());
    assert_eq!(cancelled["namespace"], "a");
    let refused = entries
        .iter()
        .find(|e| e["action"] == "task.delete")
        .unwrap();
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["token_id"], writer_token.id.as_str());
    assert!(entries.iter().all(|e| e["ts"].is_string()));

    // A control request that changes something is also in the
    // execution's own events, with the token that asked.
    let sleeper = api
        .call_as(
            Some(&admin),
            &Method::POST,
            "/tasks/t/executions?namespace=a",
            &Body0::Json(json!({"input": {"mode": "sleep", "ms": 60000}})),
        )
        .await
        .json();
    let sleeper = sleeper["id"].as_str().unwrap();
    let r = api
        .call_as(
            Some(&writer),
            &Method::POST,
            &format!("/executions/{sleeper}/cancel"),
            &Body0::None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let events = api
        .call_as(
            Some(&admin),
            &Method::GET,
            &format!("/executions/{sleeper}/events"),
            &Body0::None,
        )
        .await
        .json();
    let control = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "control")
        .unwrap_or_else(|| panic!("{events}"));
    assert_eq!(control["detail"]["action"], "cancel");
    assert_eq!(control["detail"]["token_id"], writer_token.id.as_str());
    // And its creation names the token that triggered it.
    let created = &events["events"][0];
    assert_eq!(created["to"], "CREATED", "{events}");
    assert_eq!(created["detail"]["trigger"], "http");
    let by = created["detail"]["token_id"].as_str().unwrap();
    let tokens = api
        .call_as(Some(&admin), &Method::GET, "/tokens", &Body0::None)
        .await
        .json();
    let maker = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == by)
        .unwrap_or_else(|| panic!("{by} in {tokens}"));
    assert_eq!(maker["scopes"], json!(["admin"]));
}

/// A namespace triggering at ten times its rate gets 429s with
/// `Retry-After` for the excess and runs at most its share of attempts at
/// once; another namespace's executions meanwhile start as soon as a slot
/// is free, not behind the flood's backlog.
#[tokio::test]
async fn a_flooding_namespace_does_not_delay_another_beyond_its_share() {
    let api = Api::with_tokens().await; // 4 slots
    let admin = api.token(None, &[Scope::Admin]).await;
    fill(&api, &admin, "greedy").await;
    fill(&api, &admin, "calm").await;
    let r = api
        .call_as(
            Some(&admin),
            &Method::PUT,
            "/namespaces/greedy/limits",
            &Body0::Json(json!({"running": 2, "triggers_per_second": 2, "burst": 4})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["limits"]["running"], 2);
    let greedy = api.token(Some("greedy"), &[Scope::ExecutionsTrigger]).await;
    let calm = api
        .token(
            Some("calm"),
            &[Scope::ExecutionsTrigger, Scope::ExecutionsRead],
        )
        .await;
    // Asleep, not spinning: slots are what is shared here, not the CPU.
    let slow = Body0::Json(json!({"input": {"mode": "sleep", "ms": 1000}}));

    // At least 10× the rate: 200 triggers at once, answered within 10 s.
    // The bucket lets its burst through and one more per 500 ms; the rest
    // are 429.
    let began = std::time::Instant::now();
    let answers = futures_util::future::join_all(
        (0..200).map(|_| api.call_as(Some(&greedy), &Method::POST, "/tasks/t/executions", &slow)),
    )
    .await;
    let elapsed = began.elapsed().as_secs_f64();
    assert!(
        200.0 / elapsed >= 10.0 * 2.0,
        "200 triggers took {elapsed:.1}s"
    );
    let (mut accepted, mut refused) = (0, 0);
    for r in answers {
        match r.status {
            StatusCode::CREATED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let retry: u64 = r.headers[header::RETRY_AFTER]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(retry >= 1);
                assert!(r.problem(StatusCode::TOO_MANY_REQUESTS).contains("greedy"));
                refused += 1;
            }
            other => panic!("{other}: {}", String::from_utf8_lossy(&r.body)),
        }
    }
    let most = 4.0 + 2.0 * elapsed + 1.0;
    assert!(
        accepted >= 4 && (accepted as f64) <= most,
        "{accepted} accepted in {elapsed:.2}s (at most {most:.0})"
    );
    assert_eq!(accepted + refused, 200);

    // The calm namespace's triggers all pass, and each of its executions
    // starts within a spin or so although greedy's backlog is seconds long.
    let mut waits = Vec::new();
    for _ in 0..5 {
        let r = api
            .call_as(
                Some(&calm),
                &Method::POST,
                "/tasks/t/executions?wait=30s",
                &Body0::Json(json!({"input": {"mode": "ok"}})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let e = r.json();
        assert_eq!(e["state"], "SUCCESS", "{e}");
        let ms = |k: &str| crate::model::clock::parse_rfc3339_ms(e[k].as_str().unwrap()).unwrap();
        waits.push((ms("started_at") - ms("created_at")) as i64);
        assert!(greedy_running(&api).await <= 2);
    }
    // Greedy's backlog at its share of 2: accepted × 1 s / 2.
    let backlog_ms = accepted as i64 * 1000 / 2;
    let worst = *waits.iter().max().unwrap();
    println!(
        "calm's queue waits (ms): {waits:?}; greedy accepted {accepted} of 200 in {elapsed:.2}s"
    );
    assert!(
        worst * 10 < backlog_ms,
        "calm waited up to {worst} ms with greedy's backlog at {backlog_ms} ms: {waits:?}"
    );
    api.svc.shutdown().await;
}

/// How many of greedy's executions are running now.
async fn greedy_running(api: &Api) -> usize {
    api.svc
        .executions(&crate::store::ExecutionFilter {
            namespace: Some("greedy".into()),
            states: vec![crate::model::state::ExecutionState::Running],
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

/// A namespace's stored bytes limit cuts its attempts' media and outputs
/// to what is left, then refuses to start more.
#[tokio::test]
async fn a_namespace_stores_no_more_than_its_limit() {
    let api = Api::with_tokens().await;
    let admin = api.token(None, &[Scope::Admin]).await;
    fill(&api, &admin, "a").await;
    let held = api.svc.stored_bytes("a").await.unwrap();
    assert!(held >= 1 << 20, "fill stored media: {held}");
    let limit = held + (3 << 20);
    let r = api
        .call_as(
            Some(&admin),
            &Method::PUT,
            "/namespaces/a/limits",
            &Body0::Json(json!({"stored_bytes": limit})),
        )
        .await;
    assert_eq!(r.json()["stored_bytes"], held);
    let run = || async {
        api.call_as(
            Some(&admin),
            &Method::POST,
            "/tasks/m/executions?namespace=a&wait=60s",
            &Body0::Json(json!({})),
        )
        .await
        .json()
    };
    let first = run().await;
    let id = first["id"].as_str().unwrap();
    let media = api
        .call_as(
            Some(&admin),
            &Method::GET,
            &format!("/executions/{id}/media"),
            &Body0::None,
        )
        .await
        .json();
    assert_eq!(media["media"].as_array().unwrap().len(), 3, "{first}");
    assert!(api.svc.stored_bytes("a").await.unwrap() <= limit);
    let second = run().await;
    assert_eq!(second["state"], "FAILED", "{second}");
    assert!(second.to_string().contains("at its limit of"), "{second}");
    api.svc.shutdown().await;
}

/// A token holds at most `max_follows_per_token` streams open; closing one
/// makes room; another token is not held up by it.
#[tokio::test]
async fn a_token_holds_a_bounded_number_of_followed_streams() {
    use tower::ServiceExt;
    let api = Api::with_tokens().await;
    let admin = api.token(None, &[Scope::Admin]).await;
    let objects = fill(&api, &admin, "a").await;
    let reader = api.token(Some("a"), &[Scope::ExecutionsRead]).await;
    let open = |token: &str, path: String| {
        let req = Request::get(format!("/api/v1{path}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        api.app.clone().oneshot(req)
    };
    let cap = api.svc.config().max_follows_per_token;
    let mut streams = Vec::new();
    for i in 0..cap {
        let path = if i % 2 == 0 {
            "/events?follow=true".to_string()
        } else {
            format!("/executions/{}/logs?follow=true", objects.execution)
        };
        let r = open(&reader, path).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        streams.push(r);
    }
    let r = open(&reader, "/events?follow=true".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    // Pages are not streams.
    let r = open(&reader, "/events".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Another token is not counted with this one.
    let r = open(&admin, "/events?follow=true".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    streams.pop();
    let r = open(&reader, "/events?follow=true".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// The web page is served without a token (it asks for one itself), from
/// this binary, under a policy that lets it reach only this origin.
#[tokio::test]
async fn the_web_page_is_served_without_a_token() {
    let api = Api::with_tokens().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = api
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            r.content_type().starts_with(kind),
            "{path}: {}",
            r.content_type()
        );
        let policy = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains("default-src 'self'"), "{policy}");
    }
    let page = api
        .send(Request::get("/").body(Body::empty()).unwrap())
        .await;
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains("<script src=\"/ui/app.js\"></script>"));
    // The API beside it still needs a token.
    api.send(Request::get("/api/v1/tasks").body(Body::empty()).unwrap())
        .await
        .problem(StatusCode::UNAUTHORIZED);
}
