//! `POST /webhooks/{task}`: a signed request from a partner's system starts
//! an execution of a task that declares a `webhook` (see `model::webhook`
//! for the signature). A wrong, missing, stale or replayed signature is a
//! 401 and creates nothing; the JSON body is the input.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::AppState;
use super::executions::idempotency_key;
use super::extract::{Path, Query};
use super::problem::{ApiError, PROBLEM_JSON, Problem, parse_json};
use super::tasks::{NamespaceQuery, TASK_ID};
use crate::model::execution::{Execution, Trigger};
use crate::model::task::TaskRef;
use crate::model::webhook::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::runtime::service::StartRequest;

/// Start an execution from a signed webhook request.
#[utoipa::path(post, path = "/webhooks/{id}", tag = "executions",
    params(
        ("id" = String, Path, description = TASK_ID),
        NamespaceQuery,
        ("X-Ward-Timestamp" = String, Header, description = "The request's time, Unix seconds; within 5 minutes of the server's clock"),
        ("X-Ward-Signature" = String, Header, description = "`sha256=` and the hex HMAC-SHA256, keyed with the task's webhook secret, of `<timestamp>.<raw body>`; each signature is accepted once"),
        ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters: the same key for the same task returns the same execution (200 instead of 201)"),
    ),
    request_body(content = Option<Object>, description = "The execution's input, JSON; an empty body starts with the task's input"),
    responses(
        (status = 201, description = "The new execution (trigger `webhook`)", body = Execution),
        (status = 200, description = "The execution this Idempotency-Key already started", body = Execution),
        (status = 400, description = "A body that is not JSON, a bad Idempotency-Key or namespace, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 401, description = "The signature is missing, wrong, stale or already used; nothing was created", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such task, or it has no webhook", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over 1 MiB", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "The input does not match the task's input_schema", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn start(
    State(svc): State<AppState>,
    Path(task): Path<String>,
    Query(ns): Query<NamespaceQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // The task's webhook secret is the credential: no token, every namespace.
    let task_ref = ns.task(&crate::model::auth::Caller::unrestricted(), &task)?;
    let body = body?;
    let task = svc
        .task(&task_ref)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no {task_ref}")))?;
    let Some(secret) = task.spec.webhook.as_ref().and_then(|w| w.secret.as_deref()) else {
        return Err(ApiError::NotFound(format!("{task_ref} has no webhook")));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signature = webhook::verify(
        secret,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        svc.now_secs(),
    )
    .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(parse_json::<Value>(&body, "webhook body")?)
    };
    let key = idempotency_key(&headers)?;
    super::executions::take_trigger(&svc, &task.spec.namespace)?;
    if !svc.accept_webhook_signature(&task.id, &signature).await? {
        return Err(ApiError::Unauthorized(
            "this signature was already used: the request is a replay".into(),
        ));
    }
    let request = StartRequest {
        input,
        trigger: Trigger::Webhook,
        idempotency_key: key,
        ..Default::default()
    };
    let (exec, created) = match svc
        .start_execution(&TaskRef::Id(task.id.clone()), request)
        .await
    {
        Ok(started) => started,
        Err(e) => {
            // Nothing was made: the sender may send the same request again.
            svc.release_webhook_signature(&task.id, &signature).await;
            return Err(e.into());
        }
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(exec)).into_response())
}
