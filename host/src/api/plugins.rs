//! `/plugins`: upload (validated against the world), list, get.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Path, Query};
use super::problem::ApiError;
use crate::model::execution::Plugin;

#[derive(Deserialize)]
pub struct PushQuery {
    name: Option<String>,
    version: Option<String>,
}

pub async fn push(
    State(svc): State<AppState>,
    Query(q): Query<PushQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Plugin>), ApiError> {
    let body = body?;
    let name = q.name.ok_or_else(|| ApiError::Unprocessable {
        detail: "a plugin needs a name".into(),
        problems: vec!["query parameter `name` is required".into()],
    })?;
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "empty body: send the component's bytes".into(),
        ));
    }
    let (plugin, created) = svc.add_plugin(&name, q.version, body.to_vec()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(plugin)))
}

pub async fn list(State(svc): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "plugins": svc.store().plugins().await? })))
}

pub async fn get(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Plugin>, ApiError> {
    svc.store()
        .plugin(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no plugin {id}")))
}
