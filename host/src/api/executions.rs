//! `/executions` and `/media`: start, list (filters, cursor, CSV), get,
//! control, logs and events (JSON or followed as server-sent events),
//! outputs, metrics, media.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::extract::{
    Path, Query, bool_param, choice_param, comma_words, int_param, last_event_id, wait_param,
};
use super::plugins::Component;
use super::problem::{ApiError, PROBLEM_JSON, Problem, parse_json};
use super::tasks::{NamespaceQuery, TASK_ID, task_id_of};
use super::{AppState, cursor};
use crate::model::auth::{Caller, Scope};
use crate::model::execution::{Event, Execution, StoredLog, Trigger};
use crate::model::state::ExecutionState;
use crate::model::task::TaskRef;
use crate::runtime::follow::{Feed, FeedItem};
use crate::runtime::service::StartRequest;
use crate::sandbox::report::MediaInfo;
use crate::store::{AttemptMetric, Control, ExecutionFilter};
use utoipa::{IntoParams, ToSchema};

/// What to start an execution with; every field may be left out.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// The input; the task's own `input` when absent.
    input: Option<Value>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// `http` (default), `cli` or `webhook`.
    #[schema(value_type = Option<StartTrigger>)]
    trigger: Option<String>,
    /// Values for the task's declared variables (others are refused).
    #[serde(default)]
    #[schema(value_type = Object)]
    variables: serde_json::Map<String, Value>,
}

/// The triggers a caller may name.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: `trigger` is checked by hand
pub enum StartTrigger {
    Http,
    Cli,
    Webhook,
}

/// How long a request waits for the execution to end.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Answer once the execution has ended, or after this long (`30s`,
    /// `500ms`, or whole seconds; cut to the server's `max_wait`, 60 s by
    /// default) with the execution as it is then: 202 and `Location`.
    #[param(value_type = Option<String>, example = "30s")]
    wait: Option<String>,
}

/// Start an execution of a task; with `wait`, answer when it has ended.
#[utoipa::path(post, path = "/tasks/{id}/executions", tag = "executions",
    params(
        ("id" = String, Path, description = TASK_ID),
        NamespaceQuery,
        WaitQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters: the same key for the same task returns the same execution (200 instead of 201)"),
    ),
    request_body(content = Option<StartBody>, description = "Optional: an empty body or `null` starts with the task's input"),
    responses(
        (status = 201, description = "The new execution; with `wait`, once it has ended (outputs, result, error)", body = Execution),
        (status = 200, description = "The execution this Idempotency-Key already started (with `wait`, once it has ended)", body = Execution),
        (status = 202, description = "With `wait`: the execution had not ended when the wait ran out (or the server stopped, after its shutdown grace); as it is then, its URL in `Location`", body = Execution,
            headers(("Location" = String, description = "The execution's URL"))),
        (status = 400, description = "Malformed JSON, a bad Idempotency-Key, namespace or wait, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such task", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over 1 MiB", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "A body of the wrong shape or an unknown trigger", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn start(
    State(svc): State<AppState>,
    caller: Caller,
    Path(task): Path<String>,
    Query(ns): Query<NamespaceQuery>,
    Query(wait): Query<WaitQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let found = ns.visible(&svc, &caller, &task).await?;
    take_trigger(&svc, &found.spec.namespace)?;
    let task = TaskRef::Id(found.id);
    let wait = wait_param(wait.wait.as_deref())?;
    let body = body?;
    let start: StartBody = if body.iter().all(u8::is_ascii_whitespace) {
        StartBody::default()
    } else {
        parse_json::<Option<StartBody>>(&body, "execution request")?.unwrap_or_default()
    };
    let trigger = match start.trigger.as_deref() {
        None => Trigger::Http,
        Some(t) => Trigger::parse(t)
            .filter(|t| matches!(t, Trigger::Http | Trigger::Cli | Trigger::Webhook))
            .ok_or_else(|| ApiError::Unprocessable {
                detail: "invalid trigger".into(),
                problems: vec![format!("trigger {t:?} must be http, cli or webhook")],
            })?,
    };
    let key = idempotency_key(&headers)?;
    let request = StartRequest {
        input: start.input,
        labels: start.labels,
        trigger,
        idempotency_key: key,
        variables: start.variables,
        scheduled_at: None,
        parent_id: None,
        token_id: caller.token_id.clone(),
    };
    let (exec, created) = match wait {
        None => svc.start_execution(&task, request).await?,
        Some(limit) => svc.start_execution_and_wait(&task, request, limit).await?,
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(match wait {
        None => (status, Json(exec)).into_response(),
        Some(_) => waited(exec, status),
    })
}

/// The `Idempotency-Key` header, checked.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Idempotency-Key must be 1-255 visible ASCII characters".into(),
                    )
                })?;
            Ok(Some(k.to_string()))
        }
    }
}

/// The answer to a request that waited: `status` with an execution that
/// has ended, else 202 with it as it is and its `Location`.
fn waited(exec: Execution, status: StatusCode) -> Response {
    if exec.state.is_terminal() {
        return (status, Json(exec)).into_response();
    }
    let location = format!("/api/v1/executions/{}", exec.id);
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(exec),
    )
        .into_response()
}

/// Every value is taken as text and checked by hand, so that a bad one is
/// named in the error with what was wrong with it; the documented types
/// are what is accepted.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Comma-separated state names (any case) or `pending`, `completed`, `cancelled`.
    #[param(example = "running,pending")]
    status: Option<String>,
    /// A task's id, or its name in `namespace`.
    task_id: Option<String>,
    /// Only the executions this one started (its children).
    parent_id: Option<String>,
    /// Where a `task_id` that is a name is looked up.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$", default = "default")]
    namespace: Option<String>,
    /// Created at or after this RFC 3339 instant.
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Created before this RFC 3339 instant.
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 50)]
    limit: Option<String>,
    /// `next_cursor` of the previous page, unchanged.
    cursor: Option<String>,
    #[param(value_type = Option<Format>, inline)]
    format: Option<String>,
    /// Comma-separated fields of each execution to return (JSON only; `id`
    /// always), e.g. `id,state,task_id` to leave out inputs and outputs.
    /// Left out of the OpenAPI document, whose `Execution` has every field
    /// (docs/api.md describes it).
    #[param(ignore)]
    fields: Option<String>,
}

/// An execution's fields that `fields=` may name.
pub(super) const EXECUTION_FIELDS: &[&str] = &[
    "id",
    "task_id",
    "task_version",
    "namespace",
    "parent_id",
    "trigger",
    "input",
    "state",
    "created_at",
    "started_at",
    "ended_at",
    "duration_ms",
    "outputs",
    "result",
    "error",
    "labels",
    "idempotency_key",
    "current_step",
    "replay_of",
    "scheduled_at",
    "variables",
    "fuel_used",
];

/// The fields asked for, checked; `None` for all.
fn fields_param(raw: Option<&str>) -> Result<Option<Vec<&str>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let mut fields = vec!["id"];
    for word in comma_words(Some(raw)) {
        if !EXECUTION_FIELDS.contains(&word) {
            return Err(ApiError::BadRequest(format!(
                "fields: {word:?} is no field of an execution; one of {}",
                EXECUTION_FIELDS.join(", ")
            )));
        }
        if !fields.contains(&word) {
            fields.push(word);
        }
    }
    Ok(Some(fields))
}

/// How a page or an output is served.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: `format` is checked by hand
pub enum Format {
    Json,
    Csv,
}

/// A page of `GET /executions`, newest first.
#[derive(Serialize, ToSchema)]
pub struct ExecutionPage {
    executions: Vec<Execution>,
    /// Set when the page is full: the `cursor` of the next page.
    next_cursor: Option<String>,
}

/// A `since`/`until` bound as the instant in the stored form (see
/// [`crate::model::parse_instant`]).
pub(super) fn instant(name: &str, v: Option<&str>) -> Result<Option<String>, ApiError> {
    v.map(|t| {
        crate::model::parse_instant(t).map_err(|e| {
            ApiError::BadRequest(format!(
                "{name} must be an RFC 3339 time such as 2026-11-25T12:04:20Z or \
                 2026-11-25T13:04:20+01:00, got {t:?} ({e})"
            ))
        })
    })
    .transpose()
}

/// List executions, newest first.
#[utoipa::path(get, path = "/executions", tag = "executions",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of executions (format=json), or the same as CSV (its next page's cursor in the X-Next-Cursor header)", content(
            (ExecutionPage = "application/json"),
            (String = "text/csv"),
        ), headers(("x-next-cursor" = String, description = "format=csv: the next page's cursor; absent on the last page"))),
        (status = 400, description = "A bad query value or cursor", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "`task_id` names no task in `namespace`", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn list(
    State(svc): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let mut states = Vec::new();
    for word in comma_words(q.status.as_deref()) {
        states.extend(ExecutionState::from_filter(word).map_err(ApiError::BadRequest)?);
    }
    let since = instant("since", q.since.as_deref())?;
    let until = instant("until", q.until.as_deref())?;
    let limit = int_param("limit", q.limit.as_deref(), 1..=1000u32, 50)?;
    let format = choice_param("format", q.format.as_deref(), &["json", "csv"])?;
    let fields = fields_param(q.fields.as_deref())?;
    let task_id = match &q.task_id {
        None => None,
        Some(t) => Some(task_id_of(&svc, &caller, t, q.namespace.as_deref()).await?),
    };
    let filter = ExecutionFilter {
        states,
        task_id,
        namespace: super::tasks::namespace_filter(&caller, q.namespace.clone())?,
        parent_id: q.parent_id.clone(),
        since,
        until,
        cursor: q.cursor.as_deref().map(cursor::decode).transpose()?,
        limit,
    };
    let list = svc.executions(&filter).await?;
    let next = (list.len() == limit as usize)
        .then(|| list.last().map(|e| cursor::encode(&e.id)))
        .flatten();
    match format {
        "json" => match fields {
            None => Ok(Json(ExecutionPage {
                executions: list,
                next_cursor: next,
            })
            .into_response()),
            Some(fields) => {
                let executions: Vec<Value> = list
                    .iter()
                    .map(|e| {
                        let mut v = serde_json::to_value(e).unwrap_or_default();
                        if let Some(map) = v.as_object_mut() {
                            map.retain(|k, _| fields.contains(&k.as_str()));
                        }
                        v
                    })
                    .collect();
                Ok(
                    Json(serde_json::json!({"executions": executions, "next_cursor": next}))
                        .into_response(),
                )
            }
        },
        _ => {
            let mut w = csv_writer();
            let header = [
                "id",
                "task_id",
                "state",
                "trigger",
                "created_at",
                "started_at",
                "ended_at",
                "duration_ms",
                "namespace",
                "parent_id",
                "fuel_used",
            ];
            w.write_record(header).map_err(csv_failed)?;
            for e in &list {
                w.write_record([
                    e.id.as_str(),
                    e.task_id.as_str(),
                    e.state.as_str(),
                    e.trigger.as_str(),
                    e.created_at.as_str(),
                    e.started_at.as_deref().unwrap_or_default(),
                    e.ended_at.as_deref().unwrap_or_default(),
                    &e.duration_ms.map(|d| format!("{d:.3}")).unwrap_or_default(),
                    e.namespace.as_str(),
                    e.parent_id.as_deref().unwrap_or_default(),
                    &e.fuel_used.to_string(),
                ])
                .map_err(csv_failed)?;
            }
            let out = csv_text(w)?;
            // CSV has no room for the cursor: the next page's is a header.
            let mut response =
                ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response();
            if let Some(next) = next.and_then(|n| header::HeaderValue::from_str(&n).ok()) {
                response.headers_mut().insert(NEXT_CURSOR, next);
            }
            Ok(response)
        }
    }
}

/// The header a CSV page of executions carries its `next_cursor` in.
pub const NEXT_CURSOR: header::HeaderName = header::HeaderName::from_static("x-next-cursor");

/// RFC 4180 CSV with CRLF line ends, quoting only what needs it.
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new())
}

fn csv_text(w: csv::Writer<Vec<u8>>) -> Result<String, ApiError> {
    let bytes = w
        .into_inner()
        .map_err(|e| ApiError::Internal(format!("writing CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| ApiError::Internal(format!("writing CSV: {e}")))
}

fn csv_failed(e: csv::Error) -> ApiError {
    ApiError::Internal(format!("writing CSV: {e}"))
}

/// The execution `id`, if the caller sees it (another namespace's is
/// missing like one that does not exist).
pub async fn load(
    svc: &AppState,
    caller: &Caller,
    id: &str,
    with_runs: bool,
) -> Result<Execution, ApiError> {
    svc.execution(id, with_runs)
        .await?
        .filter(|e| caller.sees(&e.namespace))
        .ok_or_else(|| ApiError::NotFound(format!("no execution {id}")))
}

/// One more stream for the caller's token, or 429.
pub fn follow_permit(
    svc: &AppState,
    caller: &Caller,
) -> Result<crate::runtime::access::FollowPermit, ApiError> {
    svc.follow_permit(caller).map_err(|cap| ApiError::TooMany {
        detail: format!(
            "this token already holds {cap} followed streams open, its most: close one first"
        ),
        retry_after: 1,
    })
}

/// Takes a trigger from the namespace's share, or answers 429.
pub fn take_trigger(svc: &AppState, namespace: &str) -> Result<(), ApiError> {
    svc.take_trigger(namespace).map_err(|over| {
        let secs = over.retry_after.as_secs_f64().ceil() as u64;
        ApiError::TooMany {
            detail: format!(
                "namespace {:?} is over its share of {} triggers per second; try again in {} ms",
                over.namespace,
                over.rate,
                over.retry_after.as_millis().max(1)
            ),
            retry_after: secs.max(1),
        }
    })
}

/// Get an execution with its task runs and attempts; with `wait`, once it
/// has ended.
#[utoipa::path(get, path = "/executions/{id}", tag = "executions",
    params(("id" = String, Path, description = "The execution's id"), WaitQuery),
    responses(
        (status = 200, description = "The execution, with `task_runs` (with `wait`: once it has ended)", body = Execution),
        (status = 202, description = "With `wait`: the execution had not ended when the wait ran out (or the server stopped, after its shutdown grace); as it is then", body = Execution,
            headers(("Location" = String, description = "The execution's URL"))),
        (status = 400, description = "A bad wait, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such execution", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn get(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(wait): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let Some(limit) = wait_param(wait.wait.as_deref())? else {
        return Ok(Json(load(&svc, &caller, &id, true).await?).into_response());
    };
    load(&svc, &caller, &id, false).await?;
    let exec = svc
        .wait_for_end(&id, true, limit)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no execution {id}")))?;
    Ok(waited(exec, StatusCode::OK))
}

async fn control(
    svc: AppState,
    caller: Caller,
    id: String,
    c: Control,
) -> Result<Json<Execution>, ApiError> {
    load(&svc, &caller, &id, false).await?;
    Ok(Json(
        svc.control_by(&id, c, caller.token_id.as_deref()).await?,
    ))
}

/// Cancel an execution.
#[utoipa::path(post, path = "/executions/{id}/cancel", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "The execution once the change is committed", body = Execution),
        (status = 400, description = "A URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such execution", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "A transition the state machine forbids", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn cancel(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Execution>, ApiError> {
    control(svc, caller, id, Control::Cancel).await
}

/// Pause an execution: no new attempts start.
#[utoipa::path(post, path = "/executions/{id}/pause", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "The execution once the change is committed", body = Execution),
        (status = 400, description = "A URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such execution", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "A transition the state machine forbids", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn pause(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Execution>, ApiError> {
    control(svc, caller, id, Control::Pause).await
}

/// Resume a paused execution.
#[utoipa::path(post, path = "/executions/{id}/resume", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "The execution once the change is committed", body = Execution),
        (status = 400, description = "A URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such execution", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "A transition the state machine forbids", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn resume(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Execution>, ApiError> {
    control(svc, caller, id, Control::Resume).await
}

/// Restart an execution's failed task runs.
#[utoipa::path(post, path = "/executions/{id}/restart", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "The execution once the change is committed", body = Execution),
        (status = 400, description = "A URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such execution", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "A transition the state machine forbids", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn restart(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Execution>, ApiError> {
    control(svc, caller, id, Control::Restart).await
}

/// What to replay; may be left out.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// A flow step to start from: the steps before it are not run again
    /// (their task runs, outputs and saved variables are taken over).
    from_step: Option<String>,
}

/// Replay an execution: a new one of the same task version with the same
/// input, linked to it by `replay_of`.
#[utoipa::path(post, path = "/executions/{id}/replay", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    request_body(content = Option<ReplayBody>, description = "Optional: `from_step` for a flow"),
    responses(
        (status = 201, description = "The new execution", body = Execution),
        (status = 400, description = "Malformed JSON, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such execution, or its task version is gone", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over 1 MiB", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "`from_step` is no step of the task version, or a step before it did not finish", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn replay(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Execution>), ApiError> {
    let original = load(&svc, &caller, &id, false).await?;
    take_trigger(&svc, &original.namespace)?;
    let body = body?;
    let replay: ReplayBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayBody::default()
    } else {
        parse_json::<Option<ReplayBody>>(&body, "replay request")?.unwrap_or_default()
    };
    let exec = svc
        .replay(&id, replay.from_step, caller.token_id.clone())
        .await?;
    Ok((StatusCode::CREATED, Json(exec)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only items with a greater id.
    #[param(value_type = Option<i64>, minimum = 0, default = 0)]
    after: Option<String>,
    /// Server-sent events until the execution has ended, instead of a page.
    #[param(value_type = Option<bool>, default = false)]
    follow: Option<String>,
}

/// One server-sent event of a followed feed, as a client parses it.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only: axum's Sse writes the events
pub struct FeedEvent {
    /// `log` or `event` (one item each), then `end` once.
    #[schema(example = "log")]
    event: String,
    /// The item's id (absent on `end`): `after` to resume from.
    id: Option<String>,
    /// JSON: the item (a StoredLog or an Event), or `{"state": …}` on `end`.
    data: String,
}

/// `GET /executions/{id}/logs`.
#[derive(Serialize, ToSchema)]
pub struct LogPage {
    logs: Vec<StoredLog>,
}

/// `GET /executions/{id}/events`.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    events: Vec<Event>,
}

/// Where a page of a feed starts and whether to follow it.
struct FeedRequest {
    after: i64,
    follow: bool,
}

impl StreamQuery {
    /// `Last-Event-ID` (sent by a reconnecting event source) wins over
    /// `after`: it is where the client really got to.
    fn checked(&self, headers: &HeaderMap) -> Result<FeedRequest, ApiError> {
        let after = int_param("after", self.after.as_deref(), 0..=i64::MAX, 0)?;
        Ok(FeedRequest {
            after: last_event_id(headers)?.unwrap_or(after),
            follow: bool_param("follow", self.follow.as_deref())?,
        })
    }
}

/// The server-sent event of a followed item.
fn sse_event(item: FeedItem) -> Option<SseEvent> {
    let event = match &item {
        FeedItem::Log(l) => SseEvent::default().event("log").json_data(l),
        FeedItem::Event(e) => SseEvent::default().event("event").json_data(e),
        FeedItem::End(state) => SseEvent::default()
            .event("end")
            .json_data(json!({ "state": state })),
    };
    let event = event.ok()?;
    Some(match item.id() {
        Some(id) => event.id(id.to_string()),
        None => event,
    })
}

/// A paged source of an execution's items.
#[derive(Clone, Copy)]
enum Page {
    Logs,
    Events,
}

impl Page {
    fn feed(self) -> Feed {
        match self {
            Page::Logs => Feed::Logs,
            Page::Events => Feed::Events,
        }
    }

    async fn read(self, svc: &AppState, id: &str, after: i64) -> Result<Value, ApiError> {
        const LIMIT: u32 = 100_000;
        Ok(match self {
            Page::Logs => json!({ "logs": svc.logs(id, after, LIMIT).await? }),
            Page::Events => json!({ "events": svc.events(id, after, LIMIT).await? }),
        })
    }
}

async fn feed(
    svc: AppState,
    caller: Caller,
    id: String,
    q: StreamQuery,
    headers: HeaderMap,
    page: Page,
) -> Result<Response, ApiError> {
    let q = q.checked(&headers)?;
    load(&svc, &caller, &id, false).await?;
    if q.follow {
        let permit = follow_permit(&svc, &caller)?;
        let stream = svc
            .follow(&id, page.feed(), q.after)
            .filter_map(move |item| {
                let _held = &permit;
                std::future::ready(sse_event(item).map(Ok::<_, Infallible>))
            });
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    Ok(Json(page.read(&svc, &id, q.after).await?).into_response())
}

/// An execution's log lines, or follow them.
#[utoipa::path(get, path = "/executions/{id}/logs", tag = "executions",
    params(
        ("id" = String, Path, description = "The execution's id"),
        StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume a follow after this item id (sent by a reconnecting event source; wins over `after`)"),
    ),
    responses(
        (status = 200, description = "Every line after `after`; with follow=true, server-sent events `log` (a StoredLog each) then `end`", content(
            (LogPage = "application/json"),
            (FeedEvent = "text/event-stream"),
        )),
        (status = 400, description = "A bad query value or Last-Event-ID, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such execution", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn logs(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    feed(svc, caller, id, q, headers, Page::Logs).await
}

/// An execution's events, or follow them.
#[utoipa::path(get, path = "/executions/{id}/events", tag = "executions",
    params(
        ("id" = String, Path, description = "The execution's id"),
        StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume a follow after this item id (sent by a reconnecting event source; wins over `after`)"),
    ),
    responses(
        (status = 200, description = "Every event after `after`; with follow=true, server-sent events `event` (an Event each) then `end`", content(
            (EventPage = "application/json"),
            (FeedEvent = "text/event-stream"),
        )),
        (status = 400, description = "A bad query value or Last-Event-ID, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such execution", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn events(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    feed(svc, caller, id, q, headers, Page::Events).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutputsQuery {
    /// One output instead of all.
    name: Option<String>,
    /// `csv` needs `name`, an output that is an array of objects.
    #[param(value_type = Option<Format>, inline)]
    format: Option<String>,
}

/// An execution's outputs, or one of them (as JSON or CSV).
#[utoipa::path(get, path = "/executions/{id}/outputs", tag = "executions",
    params(("id" = String, Path, description = "The execution's id"), OutputsQuery),
    responses(
        (status = 200, description = "The outputs object, the output named, or that output as CSV", content(
            (Value = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, description = "A bad format, csv without a name, an output with no CSV form, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such execution or output", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn outputs(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<OutputsQuery>,
) -> Result<Response, ApiError> {
    let format = choice_param("format", q.format.as_deref(), &["json", "csv"])?;
    if format == "csv" && q.name.is_none() {
        return Err(ApiError::BadRequest(
            "format=csv needs name=OUTPUT: only one output at a time has a CSV form".into(),
        ));
    }
    let exec = load(&svc, &caller, &id, false).await?;
    let Some(name) = q.name else {
        return Ok(Json(exec.outputs).into_response());
    };
    let value = exec
        .outputs
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("execution {id} has no output {name:?}")))?;
    if format == "csv" {
        Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            output_csv(&name, value)?,
        )
            .into_response())
    } else {
        Ok(Json(value.clone()).into_response())
    }
}

/// An array of objects as CSV: columns are the keys in order of first appearance.
fn output_csv(name: &str, value: &Value) -> Result<String, ApiError> {
    let rows = value
        .as_array()
        .filter(|a| a.iter().all(Value::is_object))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "output {name:?} is not an array of objects, so it has no CSV form"
            ))
        })?;
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        for k in row.as_object().expect("checked").keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let mut w = csv_writer();
    w.write_record(&columns).map_err(csv_failed)?;
    for row in rows {
        let obj = row.as_object().expect("checked");
        w.write_record(columns.iter().map(|c| match obj.get(c) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        }))
        .map_err(csv_failed)?;
    }
    csv_text(w)
}

/// `GET /executions/{id}/metrics`.
#[derive(Serialize, ToSchema)]
pub struct MetricList {
    metrics: Vec<AttemptMetric>,
}

/// The metrics every attempt of an execution reported.
#[utoipa::path(get, path = "/executions/{id}/metrics", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "Metrics by attempt", body = MetricList),
        (status = 400, description = "A URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such execution", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn metrics(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<MetricList>, ApiError> {
    load(&svc, &caller, &id, false).await?;
    Ok(Json(MetricList {
        metrics: svc.metrics(&id).await?,
    }))
}

/// `GET /executions/{id}/media`.
#[derive(Serialize, ToSchema)]
pub struct MediaList {
    media: Vec<MediaInfo>,
}

/// The media every attempt of an execution stored.
#[utoipa::path(get, path = "/executions/{id}/media", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "Media records", body = MediaList),
        (status = 400, description = "A URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such execution", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn media_list(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<MediaList>, ApiError> {
    load(&svc, &caller, &id, false).await?;
    Ok(Json(MediaList {
        media: svc.media_of(&id).await?,
    }))
}

/// `GET /media/{id}/link`'s query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// How long the link works: `1h` (default) up to `7d`.
    #[param(example = "1h")]
    expires_in: Option<String>,
}

/// A signed link to a media object.
#[derive(Serialize, ToSchema)]
pub struct MediaLink {
    /// The object's URL with `expires` and `signature`: it works without
    /// any other credential until it expires.
    url: String,
    /// RFC 3339.
    expires_at: String,
}

/// A link to share a media object: signed (HMAC-SHA256 with a key derived
/// from the host's secret key) for its id and expiry.
#[utoipa::path(get, path = "/media/{id}/link", tag = "media",
    params(("id" = String, Path, description = "The media object's id"), LinkQuery),
    responses(
        (status = 200, description = "The link", body = MediaLink),
        (status = 400, description = "A bad `expires_in`, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such media object", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn media_link(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Result<Json<MediaLink>, ApiError> {
    let info = svc
        .media(&id)
        .await?
        .filter(|(_, namespace)| caller.sees(namespace))
        .ok_or_else(|| ApiError::NotFound(format!("no media {id}")))?
        .0;
    let ttl = match q.expires_in.as_deref() {
        None => std::time::Duration::from_secs(3600),
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| ApiError::BadRequest(format!("expires_in: {e}")))?,
    };
    if ttl < std::time::Duration::from_secs(1)
        || ttl > std::time::Duration::from_secs(7 * 24 * 3600)
    {
        return Err(ApiError::BadRequest(
            "expires_in must be between 1s and 7d".into(),
        ));
    }
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + ttl.as_secs();
    let signature = svc.sign_media_link(&info.id, expires);
    Ok(Json(MediaLink {
        url: format!("{}?expires={expires}&signature={signature}", info.url),
        expires_at: humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires),
        )
        .to_string(),
    }))
}

/// A signed link's parameters on `GET /media/{id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignedQuery {
    /// From a link made by `GET /media/{id}/link`: unix seconds.
    expires: Option<String>,
    /// From a link made by `GET /media/{id}/link`.
    signature: Option<String>,
}

/// A media object's bytes.
#[utoipa::path(get, path = "/media/{id}", tag = "media",
    params(
        ("id" = String, Path, description = "The media object's id"),
        ("If-None-Match" = Option<String>, Header, description = "The ETag of a copy the caller has"),
        SignedQuery,
    ),
    responses(
        (status = 200, description = "The bytes, with the object's Content-Type, Content-Length and ETag", content_type = "*/*", body = Component),
        (status = 304, description = "The caller's copy (If-None-Match) is current"),
        (status = 400, description = "A URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 403, description = "A signed link whose signature is wrong or that has expired", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such media object", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn media(
    State(svc): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<String>,
    Query(signed): Query<SignedQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let linked = signed.expires.is_some() || signed.signature.is_some();
    if linked {
        let expires = signed
            .expires
            .as_deref()
            .and_then(|e| e.parse::<u64>().ok());
        let valid = match (expires, signed.signature.as_deref()) {
            (Some(expires), Some(signature)) => svc.media_link_valid(&id, expires, signature),
            _ => false,
        };
        if !valid {
            return Err(ApiError::Forbidden(
                "this link's signature is not valid for this object, or the link has expired"
                    .into(),
            ));
        }
    }
    // A valid link is the credential; without one, a token with
    // media:read in the object's namespace.
    let caller = match (linked, caller) {
        (true, _) => None,
        (false, Some(caller)) => {
            caller
                .require(Scope::MediaRead)
                .map_err(|m| ApiError::Forbidden(m.to_string()))?;
            Some(caller)
        }
        (false, None) => {
            return Err(ApiError::Unauthorized(
                "this media object needs `Authorization: Bearer <token>` with media:read, or a signed link (GET /media/{id}/link)".into(),
            ));
        }
    };
    let info = svc
        .media(&id)
        .await?
        .filter(|(_, namespace)| caller.as_ref().is_none_or(|c| c.sees(namespace)))
        .ok_or_else(|| ApiError::NotFound(format!("no media {id}")))?
        .0;
    let etag = format!("\"{}\"", info.sha256);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let file = svc
        .media_store()
        .open_object(&info.id, &info.name)
        .map_err(|e| ApiError::Internal(format!("opening media {id}: {e}")))?;
    let file = tokio::fs::File::from_std(file.into_std());
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, info.content_type.clone()),
            (header::CONTENT_LENGTH, info.size.to_string()),
            (header::ETAG, etag),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let v = json!([{"a": "plain", "b": "x,y", "c": "say \"hi\"", "d": "two\nlines"}]);
        assert_eq!(
            output_csv("q", &v).unwrap(),
            "a,b,c,d\r\nplain,\"x,y\",\"say \"\"hi\"\"\",\"two\nlines\"\r\n"
        );
    }

    #[test]
    fn arrays_of_objects_become_csv() {
        let v = json!([{"word": "a", "count": 2}, {"word": "b,c", "extra": true}]);
        let csv = output_csv("top", &v).unwrap();
        assert_eq!(csv, "word,count,extra\r\na,2,\r\n\"b,c\",,true\r\n");
        assert!(output_csv("n", &json!(3)).is_err());
    }
}
