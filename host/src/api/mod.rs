//! The HTTP API under `/api/v1` (see docs/api.md): `app(service)` builds
//! the router; handlers extract input, call the runtime and serialize.
//!
//! Calls `runtime` (and reads through its store); never the sandbox.

mod cursor;
mod executions;
mod extract;
mod openapi;
mod plugins;
pub mod problem;
mod tasks;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use serde_json::json;

use crate::runtime::service::Service;

pub type AppState = Arc<Service>;

/// The API's router; tests drive it without a socket.
pub fn app(svc: Arc<Service>) -> Router {
    let plugin_limit = svc.config().max_plugin_bytes;
    let api = Router::new()
        .route(
            "/plugins",
            post(plugins::push)
                .get(plugins::list)
                .layer(DefaultBodyLimit::max(plugin_limit)),
        )
        .route("/plugins/{id}", get(plugins::get))
        .route("/tasks", post(tasks::create).get(tasks::list))
        .route(
            "/tasks/{id}",
            get(tasks::get).put(tasks::update).delete(tasks::delete),
        )
        .route("/tasks/{id}/executions", post(executions::start))
        .route("/executions", get(executions::list))
        .route("/executions/{id}", get(executions::get))
        .route("/executions/{id}/logs", get(executions::logs))
        .route("/executions/{id}/events", get(executions::events))
        .route("/executions/{id}/cancel", post(executions::cancel))
        .route("/executions/{id}/pause", post(executions::pause))
        .route("/executions/{id}/resume", post(executions::resume))
        .route("/executions/{id}/restart", post(executions::restart))
        .route("/executions/{id}/outputs", get(executions::outputs))
        .route("/executions/{id}/metrics", get(executions::metrics))
        .route("/executions/{id}/media", get(executions::media_list))
        .route("/media/{id}", get(executions::media))
        .route("/workers", get(workers))
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .route("/openapi.json", get(openapi::document))
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(svc);
    with_problems(
        Router::new()
            .nest("/api/v1", api)
            .fallback(no_such_endpoint),
    )
}

/// `routes` with every error response in problem+json (see
/// [`problem::problems_only`]). Around the whole router, not each route
/// (which `routes.layer` would do): only outside it do responses carry
/// axum's `Allow` header.
fn with_problems(routes: Router) -> Router {
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(problem::problems_only))
}

async fn no_such_endpoint(uri: axum::http::Uri) -> problem::ApiError {
    problem::ApiError::NotFound(format!(
        "no endpoint {}; the API is under /api/v1 (see /api/v1/openapi.json)",
        uri.path()
    ))
}

async fn workers(
    axum::extract::State(svc): axum::extract::State<AppState>,
) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "workers": [svc.worker_info()] }))
}
