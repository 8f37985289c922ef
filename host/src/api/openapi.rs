//! `GET /openapi.json`: the OpenAPI document, built with utoipa from the
//! routes this module lists next to the router.

use axum::Json;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::{
    InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Required, ResponseBuilder,
};

/// Every route: method, path, summary. Kept beside `api::app` so that a new
/// route is added to both.
const ROUTES: &[(HttpMethod, &str, &str)] = &[
    (
        HttpMethod::Post,
        "/plugins",
        "Upload a component (body: bytes; query: name, version)",
    ),
    (HttpMethod::Get, "/plugins", "List plugins"),
    (
        HttpMethod::Get,
        "/plugins/{id}",
        "Get a plugin by digest or name",
    ),
    (HttpMethod::Post, "/tasks", "Create a task"),
    (HttpMethod::Get, "/tasks", "List tasks"),
    (HttpMethod::Get, "/tasks/{id}", "Get a task by id or name"),
    (
        HttpMethod::Put,
        "/tasks/{id}",
        "Replace a task (new version)",
    ),
    (HttpMethod::Delete, "/tasks/{id}", "Delete a task"),
    (
        HttpMethod::Post,
        "/tasks/{id}/executions",
        "Start an execution (header Idempotency-Key)",
    ),
    (
        HttpMethod::Get,
        "/executions",
        "List executions (status, task_id, since, until, limit, cursor, format)",
    ),
    (
        HttpMethod::Get,
        "/executions/{id}",
        "Get an execution with its task runs and attempts",
    ),
    (
        HttpMethod::Get,
        "/executions/{id}/logs",
        "Log lines (after, follow=true for server-sent events)",
    ),
    (
        HttpMethod::Get,
        "/executions/{id}/events",
        "Events (after, follow=true for server-sent events)",
    ),
    (HttpMethod::Post, "/executions/{id}/cancel", "Cancel"),
    (HttpMethod::Post, "/executions/{id}/pause", "Pause"),
    (HttpMethod::Post, "/executions/{id}/resume", "Resume"),
    (
        HttpMethod::Post,
        "/executions/{id}/restart",
        "Restart failed task runs",
    ),
    (
        HttpMethod::Get,
        "/executions/{id}/outputs",
        "Outputs (name and format=csv for one output)",
    ),
    (
        HttpMethod::Get,
        "/executions/{id}/metrics",
        "Metrics of every attempt",
    ),
    (
        HttpMethod::Get,
        "/executions/{id}/media",
        "Media of every attempt",
    ),
    (HttpMethod::Get, "/media/{id}", "A media object's bytes"),
    (
        HttpMethod::Get,
        "/workers",
        "This host's slots, queues, busy count and heartbeat",
    ),
    (HttpMethod::Get, "/healthz", "Liveness"),
    (HttpMethod::Get, "/openapi.json", "This document"),
];

pub fn build() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for (method, path, summary) in ROUTES {
        let mut op = OperationBuilder::new()
            .summary(Some(*summary))
            .response("200", ResponseBuilder::new().description("OK"))
            .response(
                "4XX",
                ResponseBuilder::new().description("application/problem+json"),
            );
        if path.contains("{id}") {
            op = op.parameter(
                ParameterBuilder::new()
                    .name("id")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True),
            );
        }
        paths = paths.path(format!("/api/v1{path}"), PathItem::new(method.clone(), op));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Ward")
                .version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
        .paths(paths)
        .build()
}

pub async fn document() -> Json<OpenApi> {
    Json(build())
}
