//! `/tasks`: create, list, get, replace (new version), delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Path, Query};
use super::problem::{ApiError, parse_json};
use crate::model::task::{Task, TaskRef, TaskSpec};

/// Where a task name is looked up.
#[derive(Deserialize)]
pub struct NamespaceQuery {
    namespace: Option<String>,
}

impl NamespaceQuery {
    /// `id_or_name` as a task id, or as a name in this namespace (`default`
    /// when not given). An id matches by id only, whatever the namespace.
    pub fn task(&self, id_or_name: &str) -> Result<TaskRef, ApiError> {
        task_ref(id_or_name, self.namespace.as_deref())
    }
}

/// See [`NamespaceQuery::task`]; `namespace` is checked like a task's.
pub fn task_ref(id_or_name: &str, namespace: Option<&str>) -> Result<TaskRef, ApiError> {
    let namespace = namespace.unwrap_or("default");
    crate::sandbox::limits::check_name("namespace", namespace).map_err(ApiError::BadRequest)?;
    Ok(TaskRef::new(id_or_name, namespace))
}

pub async fn create(
    State(svc): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let spec: TaskSpec = parse_json(&body?, "task")?;
    Ok((StatusCode::CREATED, Json(svc.create_task(spec).await?)))
}

pub async fn list(State(svc): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "tasks": svc.store().tasks().await? })))
}

pub async fn get(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Result<Json<Task>, ApiError> {
    let task = q.task(&id)?;
    svc.task(&task)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no {task}")))
}

pub async fn update(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<NamespaceQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Task>, ApiError> {
    let task = q.task(&id)?;
    let spec: TaskSpec = parse_json(&body?, "task")?;
    if svc.task(&task).await?.is_none() {
        return Err(ApiError::NotFound(format!("no {task}")));
    }
    Ok(Json(svc.update_task(&task, spec).await?))
}

pub async fn delete(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Result<StatusCode, ApiError> {
    svc.delete_task(&q.task(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
