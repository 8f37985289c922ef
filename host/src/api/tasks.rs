//! `/tasks`: create, list, get, replace (new version), delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{Path, Query};
use super::problem::{ApiError, PROBLEM_JSON, Problem, parse_json};
use crate::model::auth::Caller;
use crate::model::task::{Task, TaskRef, TaskSpec};

/// A task definition from a request body; without a `namespace` it is in
/// `namespace` (the caller's own, or the task's when it is replaced).
fn task_body(body: &[u8], namespace: &str) -> Result<TaskSpec, ApiError> {
    let mut value: serde_json::Value = parse_json(body, "task")?;
    if let Some(fields) = value.as_object_mut()
        && !fields.contains_key("namespace")
    {
        fields.insert("namespace".into(), namespace.into());
    }
    serde_json::from_value(value).map_err(|e| ApiError::Unprocessable {
        detail: "invalid task".into(),
        problems: vec![e.to_string()],
    })
}

/// A task a caller may write: one in a namespace it sees. Another
/// namespace is a 404 like its objects (a 403 only ever names a scope).
fn writable(caller: &Caller, spec: &TaskSpec) -> Result<(), ApiError> {
    if caller.sees(&spec.namespace) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "no namespace {:?}",
            spec.namespace
        )))
    }
}

/// Where a task name is looked up.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NamespaceQuery {
    /// The namespace a task name is looked up in (an id is looked up in
    /// every namespace).
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$", default = "default")]
    namespace: Option<String>,
}

/// `GET /tasks`.
#[derive(Serialize, ToSchema)]
pub struct TaskList {
    tasks: Vec<Task>,
}

impl NamespaceQuery {
    /// `id_or_name` as a task id, or as a name in this namespace (the
    /// caller's own, or `default` for an admin, when not given). An id
    /// matches by id only, whatever the namespace.
    pub fn task(&self, caller: &Caller, id_or_name: &str) -> Result<TaskRef, ApiError> {
        task_ref(caller, id_or_name, self.namespace.as_deref())
    }

    /// The live task `id_or_name` names that the caller sees; another
    /// namespace's is missing like one that does not exist.
    pub async fn visible(
        &self,
        svc: &AppState,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<Task, ApiError> {
        visible_task(svc, caller, id_or_name, self.namespace.as_deref()).await
    }
}

/// The `{id}` of `/tasks/{id}…` paths.
pub const TASK_ID: &str =
    "The task's id (a UUID, matched in every namespace) or its name in `namespace`";

/// See [`NamespaceQuery::task`]; `namespace` is checked like a task's, and
/// one the caller does not see is a 404.
pub fn task_ref(
    caller: &Caller,
    id_or_name: &str,
    namespace: Option<&str>,
) -> Result<TaskRef, ApiError> {
    if let Some(n) = namespace {
        crate::model::limits::check_name("namespace", n).map_err(ApiError::BadRequest)?;
    }
    let namespace = caller
        .namespace_for(namespace)
        .map_err(|other| ApiError::NotFound(format!("no {}", TaskRef::name(&other, id_or_name))))?;
    Ok(TaskRef::new(id_or_name, &namespace))
}

/// The namespace a feed or a count across executions is narrowed to: the
/// caller's own (another named → 404), or what an admin names (all when
/// none).
pub fn namespace_filter(
    caller: &Caller,
    asked: Option<String>,
) -> Result<Option<String>, ApiError> {
    match &caller.namespace {
        Some(own) if asked.as_ref().is_some_and(|n| n != own) => Err(ApiError::NotFound(format!(
            "no namespace {:?}",
            asked.unwrap_or_default()
        ))),
        Some(own) => Ok(Some(own.clone())),
        None => Ok(asked),
    }
}

/// The live task `id_or_name` (a name in `namespace`) names, if the caller
/// sees it.
pub async fn visible_task(
    svc: &AppState,
    caller: &Caller,
    id_or_name: &str,
    namespace: Option<&str>,
) -> Result<Task, ApiError> {
    let task = task_ref(caller, id_or_name, namespace)?;
    svc.task(&task)
        .await?
        .filter(|t| caller.sees(&t.spec.namespace))
        .ok_or_else(|| ApiError::NotFound(format!("no {task}")))
}

/// The id of the task `id_or_name` names (a name in `namespace`): an id
/// as given, even of a deleted task (its executions and events remain) —
/// for filters, which show only what the caller sees anyway.
pub async fn task_id_of(
    svc: &super::AppState,
    caller: &Caller,
    id_or_name: &str,
    namespace: Option<&str>,
) -> Result<String, ApiError> {
    match task_ref(caller, id_or_name, namespace)? {
        TaskRef::Id(id) => Ok(id),
        name => Ok(svc
            .task(&name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no {name}")))?
            .id),
    }
}

/// Create a task.
#[utoipa::path(post, path = "/tasks", tag = "tasks",
    request_body = TaskSpec,
    responses(
        (status = 201, description = "The task, version 1", body = Task),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "The name is taken in the namespace", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over 1 MiB", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "An invalid task; `problems` lists why", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn create(
    State(svc): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let namespace = caller.namespace_for(None).unwrap_or_default();
    let spec = task_body(&body?, &namespace)?;
    writable(&caller, &spec)?;
    let task = svc.create_task(spec).await?;
    Ok((StatusCode::CREATED, Json(shown(&svc, task).await?)))
}

/// List tasks.
#[utoipa::path(get, path = "/tasks", tag = "tasks",
    responses((status = 200, description = "Every task, by namespace and name", body = TaskList)))]
pub async fn list(State(svc): State<AppState>, caller: Caller) -> Result<Json<TaskList>, ApiError> {
    let mut tasks = Vec::new();
    for t in svc.tasks().await? {
        if !caller.sees(&t.spec.namespace) {
            continue;
        }
        tasks.push(shown(&svc, t).await?);
    }
    Ok(Json(TaskList { tasks }))
}

/// Get a task by id, or by name in a namespace.
#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = TASK_ID), NamespaceQuery),
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 400, description = "A bad namespace, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such task", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn get(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Result<Json<Task>, ApiError> {
    let found = q.visible(&svc, &caller, &id).await?;
    Ok(Json(shown(&svc, found).await?))
}

/// Replace a task: its new version.
#[utoipa::path(put, path = "/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = TASK_ID), NamespaceQuery),
    request_body = TaskSpec,
    responses(
        (status = 200, description = "The task, its version one more", body = Task),
        (status = 400, description = "Malformed JSON, a bad namespace, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such task", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "The new name is taken in the namespace", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over 1 MiB", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "An invalid task; `problems` lists why", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn update(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<NamespaceQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Task>, ApiError> {
    let found = q.visible(&svc, &caller, &id).await?;
    let spec = task_body(&body?, &found.spec.namespace)?;
    writable(&caller, &spec)?;
    // Exactly the task found (by id, even when it was named).
    let task = svc.update_task(&TaskRef::Id(found.id), spec).await?;
    Ok(Json(shown(&svc, task).await?))
}

/// A task as the API shows it: its secrets left out, its schedule's state in.
async fn shown(svc: &AppState, task: Task) -> Result<Task, ApiError> {
    let mut task = task.redacted();
    task.schedule_state = svc.schedule_state(&task).await?;
    Ok(task)
}

/// Pause a task's schedule: no tick fires until it is resumed.
#[utoipa::path(post, path = "/tasks/{id}/schedule/pause", tag = "tasks",
    params(("id" = String, Path, description = TASK_ID), NamespaceQuery),
    responses(
        (status = 200, description = "The task, its `schedule_state` paused", body = Task),
        (status = 400, description = "A bad namespace, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such task", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "The task has no schedule", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn pause_schedule(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Result<Json<Task>, ApiError> {
    let found = q.visible(&svc, &caller, &id).await?;
    let task = svc.pause_schedule(&TaskRef::Id(found.id), true).await?;
    Ok(Json(task.redacted()))
}

/// Resume a task's schedule: it fires from its next tick on (ticks passed
/// while paused are not caught up).
#[utoipa::path(post, path = "/tasks/{id}/schedule/resume", tag = "tasks",
    params(("id" = String, Path, description = TASK_ID), NamespaceQuery),
    responses(
        (status = 200, description = "The task, its `schedule_state` running, with its next tick", body = Task),
        (status = 400, description = "A bad namespace, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such task", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "The task has no schedule", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn resume_schedule(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Result<Json<Task>, ApiError> {
    let found = q.visible(&svc, &caller, &id).await?;
    let task = svc.pause_schedule(&TaskRef::Id(found.id), false).await?;
    Ok(Json(task.redacted()))
}

/// Delete a task (exactly the one named).
#[utoipa::path(delete, path = "/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = TASK_ID), NamespaceQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A bad namespace, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such task", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn delete(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Result<StatusCode, ApiError> {
    let found = q.visible(&svc, &caller, &id).await?;
    svc.delete_task(&TaskRef::Id(found.id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
