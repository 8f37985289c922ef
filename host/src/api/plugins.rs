//! `/plugins`: upload (validated against the world), list, get.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{Path, Query};
use super::problem::{ApiError, PROBLEM_JSON, Problem};
use crate::model::auth::Caller;
use crate::model::execution::Plugin;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PushQuery {
    /// The plugin's name (tasks name it as their `action`).
    #[param(required = true, value_type = String, pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    name: Option<String>,
    version: Option<String>,
    /// The namespace it is registered in [default: the token's, or
    /// `default` for an admin].
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    namespace: Option<String>,
}

/// A WebAssembly component's bytes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Component(#[allow(dead_code)] Vec<u8>);

/// `GET /plugins`.
#[derive(Serialize, ToSchema)]
pub struct PluginList {
    plugins: Vec<Plugin>,
}

/// Upload a component.
#[utoipa::path(post, path = "/plugins", tag = "plugins",
    params(PushQuery),
    request_body(content = Component, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "The new plugin", body = Plugin),
        (status = 200, description = "The same bytes were uploaded before: that plugin", body = Plugin),
        (status = 400, description = "An empty body, or a query that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "Other bytes were uploaded under this name and version before", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over the host's largest component", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "No name, a name that looks like a digest or an id, or not a component of the ward:action world", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn push(
    State(svc): State<AppState>,
    caller: Caller,
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
    let namespace = in_namespace(&caller, q.namespace.as_deref())?;
    let (plugin, created) = svc
        .add_plugin(&namespace, &name, q.version, body.to_vec())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(plugin)))
}

/// List plugins.
#[utoipa::path(get, path = "/plugins", tag = "plugins",
    params(NamespaceParam),
    responses((status = 200, description = "Every plugin, by name and age", body = PluginList)))]
pub async fn list(
    State(svc): State<AppState>,
    caller: Caller,
    Query(q): Query<NamespaceParam>,
) -> Result<Json<PluginList>, ApiError> {
    let namespace = match (&q.namespace, caller.is_admin()) {
        (None, true) => None,
        (asked, _) => Some(in_namespace(&caller, asked.as_deref())?),
    };
    Ok(Json(PluginList {
        plugins: svc.plugins(namespace.as_deref()).await?,
    }))
}

/// A plugin list's or lookup's namespace.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NamespaceParam {
    /// The plugins of this namespace [default: the token's; an admin's list
    /// has every namespace, an admin's lookup `default`].
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    namespace: Option<String>,
}

/// The namespace a plugin request works in, checked; another than the
/// caller's own is a 404.
fn in_namespace(caller: &Caller, asked: Option<&str>) -> Result<String, ApiError> {
    if let Some(n) = asked {
        crate::model::limits::check_name("namespace", n).map_err(ApiError::BadRequest)?;
    }
    caller
        .namespace_for(asked)
        .map_err(|other| ApiError::NotFound(format!("no namespace {other:?}")))
}

/// Get a plugin by digest or name.
#[utoipa::path(get, path = "/plugins/{id}", tag = "plugins",
    params(("id" = String, Path, description = "`sha256:<hex>`, the hex alone, or a name (its newest version)"), NamespaceParam),
    responses(
        (status = 200, description = "The plugin", body = Plugin),
        (status = 400, description = "A URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such plugin", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn get(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<NamespaceParam>,
) -> Result<Json<Plugin>, ApiError> {
    let namespace = in_namespace(&caller, q.namespace.as_deref())?;
    svc.plugin(&namespace, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no plugin {id}")))
}
