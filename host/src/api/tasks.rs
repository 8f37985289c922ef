//! `/tasks`: create, list, get, replace (new version), delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::problem::{ApiError, parse_json};
use crate::model::task::{Task, TaskSpec};

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
) -> Result<Json<Task>, ApiError> {
    svc.task(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))
}

pub async fn update(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Task>, ApiError> {
    let spec: TaskSpec = parse_json(&body?, "task")?;
    if svc.task(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no task {id}")));
    }
    Ok(Json(svc.update_task(&id, spec).await?))
}

pub async fn delete(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    svc.delete_task(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
