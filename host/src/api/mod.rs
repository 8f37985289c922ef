//! The HTTP API under `/api/v1` (see docs/api.md): `app(service)` builds
//! the router; handlers extract input, call the runtime and serialize.
//!
//! Calls `runtime` (and reads through its store); never the sandbox.

mod access;
mod analytics;
#[cfg(test)]
mod analytics_tests;
pub mod auth;
#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod control_tests;
mod cursor;
mod datasets;
mod events;
mod executions;
mod extract;
#[cfg(test)]
mod follow_tests;
pub mod listener;
mod openapi;
mod plugins;
pub mod problem;
mod tasks;
#[cfg(test)]
mod tests;
mod web;
mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::runtime::service::{Service, WorkerInfo};

pub type AppState = Arc<Service>;

/// The API's router; tests drive it without a socket.
pub fn app(svc: Arc<Service>) -> Router {
    let (api, doc) = routes(svc.config().max_plugin_bytes).split_for_parts();
    with_problems(
        api.layer(Extension(Arc::new(openapi::finish(doc))))
            .route("/metrics", axum::routing::get(prometheus))
            .route_layer(axum::middleware::from_fn_with_state(
                svc.clone(),
                auth::authorize,
            ))
            // The page asks for a token itself; serving it needs none.
            .merge(web::routes())
            .route_layer(axum::middleware::from_fn(count_requests))
            .with_state(svc)
            .fallback(no_such_endpoint),
    )
}

/// `GET /metrics` (outside `/api/v1`): every metric in Prometheus's text
/// format, the dispatcher's gauges read now.
async fn prometheus(axum::extract::State(svc): axum::extract::State<AppState>) -> Response {
    let info = svc.worker_info();
    crate::telemetry::dispatch_now(info.busy, info.slots, &info.queues);
    let text = match crate::telemetry::render() {
        Some(text) => text,
        None => crate::telemetry::install().render(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Counts each request by its route's pattern, never the path itself (ids
/// would make a series each), written `/api/v1/executions/:id`: braces in
/// label values trip simple exposition parsers.
async fn count_requests(
    route: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().to_string();
    let route = route.as_str().replace('{', ":").replace('}', "");
    let began = std::time::Instant::now();
    let response = next.run(request).await;
    crate::telemetry::http_request(&method, route, response.status().as_u16(), began.elapsed());
    response
}

/// Every route with its OpenAPI operation, so that the route list exists
/// once: the router and the document are both made from it.
fn routes(plugin_limit: usize) -> OpenApiRouter<AppState> {
    let (schemas, paths, plugins) = routes!(plugins::push, plugins::list);
    let plugins = (
        schemas,
        paths,
        plugins.layer(DefaultBodyLimit::max(plugin_limit)),
    );
    let api = OpenApiRouter::new()
        .routes(plugins)
        .routes(routes!(plugins::get))
        .routes(routes!(tasks::create, tasks::list))
        .routes(routes!(tasks::get, tasks::update, tasks::delete))
        .routes(routes!(tasks::pause_schedule))
        .routes(routes!(datasets::of_task))
        .routes(routes!(datasets::of_execution))
        .routes(routes!(tasks::resume_schedule))
        .routes(routes!(executions::start))
        .routes(routes!(webhooks::start))
        .routes(routes!(executions::list))
        .routes(routes!(executions::get))
        .routes(routes!(executions::logs))
        .routes(routes!(executions::events))
        .routes(routes!(executions::cancel))
        .routes(routes!(executions::pause))
        .routes(routes!(executions::resume))
        .routes(routes!(executions::restart))
        .routes(routes!(executions::replay))
        .routes(routes!(executions::outputs))
        .routes(routes!(executions::metrics))
        .routes(routes!(executions::media_list))
        .routes(routes!(executions::media))
        .routes(routes!(executions::media_link))
        .routes(routes!(events::list))
        .routes(routes!(analytics::get))
        .routes(routes!(access::create_token, access::list_tokens))
        .routes(routes!(access::revoke_token))
        .routes(routes!(access::audit))
        .routes(routes!(access::whoami))
        .routes(routes!(access::get_limits, access::set_limits))
        .routes(routes!(workers))
        .routes(routes!(healthz))
        .routes(routes!(openapi::document))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(axum::middleware::from_fn(move |r, n| {
            declared_length(plugin_limit, r, n)
        }));
    OpenApiRouter::with_openapi(openapi::base()).nest("/api/v1", api)
}

/// The largest JSON body a route reads.
const JSON_BODY_LIMIT: usize = 1 << 20;

/// A body over its route's limit (`DefaultBodyLimit`: a component upload's,
/// or JSON's) is refused as soon as it grows over it; a declared
/// `Content-Length` over it is refused here at once, before a byte of the
/// body is read, so that announcing 100 GB holds neither a connection nor a
/// task.
async fn declared_length(
    plugin_limit: usize,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Inside `nest("/api/v1")` the path is seen without its prefix.
    let path = request.uri().path().trim_end_matches('/');
    let upload = request.method() == axum::http::Method::POST
        && (path == "/plugins" || path == "/api/v1/plugins");
    let limit = if upload {
        plugin_limit
    } else {
        JSON_BODY_LIMIT
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => refuse_unread(
            request,
            problem::ApiError::TooLarge(format!(
                "request body too large: Content-Length {n} is over this route's limit of {limit} bytes"
            ))
            .into_response(),
        ),
        _ => next.run(request).await,
    }
}

/// Answers a request refused before its body was read (too large, no
/// token): a bounded part of the body is read and dropped while the answer
/// is sent, so that a client still writing it sees the answer rather than
/// a reset connection; then the connection closes.
pub(crate) fn refuse_unread(request: axum::extract::Request, mut response: Response) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = request
        .headers()
        .contains_key(axum::http::header::TRANSFER_ENCODING);
    if declared.is_none_or(|n| n == 0) && !chunked {
        return response;
    }
    let body = request.into_body();
    tokio::spawn(drain(
        body,
        declared.unwrap_or(LINGER_BYTES).min(LINGER_BYTES),
    ));
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// The most of a refused body read before its connection is closed.
const LINGER_BYTES: u64 = 16 << 20;

/// Reads up to `at_most` bytes of `body` within 5 s, discarding them.
async fn drain(body: axum::body::Body, at_most: u64) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while read < at_most {
            match stream.next().await {
                Some(Ok(chunk)) => read += chunk.len() as u64,
                _ => break,
            }
        }
    })
    .await;
}

async fn no_such_endpoint(uri: axum::http::Uri) -> problem::ApiError {
    problem::ApiError::NotFound(format!(
        "no endpoint {}; the API is under /api/v1 (see /api/v1/openapi.json)",
        uri.path()
    ))
}

/// `GET /workers`.
#[derive(Serialize, ToSchema)]
struct WorkerList {
    workers: Vec<WorkerInfo>,
}

/// This host's slots, queues, busy count and heartbeat.
#[utoipa::path(get, path = "/workers", tag = "hosts",
    responses((status = 200, description = "This host", body = WorkerList)))]
async fn workers(axum::extract::State(svc): axum::extract::State<AppState>) -> Json<WorkerList> {
    Json(WorkerList {
        workers: vec![svc.worker_info()],
    })
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "hosts",
    responses((status = 200, description = "Serving", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `routes` with every error response in problem+json (see
/// [`problem::problems_only`]). Around the whole router, not each route
/// (which `routes.layer` would do): only outside it do responses carry
/// axum's `Allow` header.
fn with_problems(routes: Router) -> Router {
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(problem::problems_only))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
}

/// A handler that panicked: a 500 problem whose id is in the server's log
/// with the panic's message. The server goes on serving (its locks recover
/// from poisoning).
fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    problem::ApiError::Internal(format!("a request handler panicked: {message}")).into_response()
}
