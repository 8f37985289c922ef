//! Bearer tokens on every route: which scope each route needs (one table,
//! [`need`]), the middleware that finds the caller and checks it, and the
//! audit trail of what callers changed.
//!
//! Namespaces are checked where objects are read (the handlers, through
//! [`Caller::sees`]): another namespace's object is a 404 like a missing one.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::problem::ApiError;
use crate::model::auth::{AuditEntry, Caller, Scope};

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: liveness and the API's own description.
    Public,
    /// A token with this scope.
    Scope(Scope),
    /// Any live token.
    Token,
    /// The task's webhook secret (checked by the handler), no token.
    WebhookSignature,
    /// `media:read`, or a signed link (checked by the handler).
    MediaOrLink,
}

/// The scope each route needs, and the audit action it is recorded as
/// when it changes something. A route missing here needs `admin`, so that
/// a new endpoint is closed until it is given its place.
pub fn need(method: &Method, route: &str) -> (Need, Option<&'static str>) {
    use crate::model::auth::Scope::*;
    use Need::{MediaOrLink, Public, WebhookSignature};
    let get = method == Method::GET || method == Method::HEAD;
    match (get, method.as_str(), route) {
        (true, _, "/healthz" | "/openapi.json") => (Public, None),
        (true, _, "/whoami") => (Need::Token, None),
        (false, "POST", "/plugins") => (Need::Scope(PluginsWrite), Some("plugin.upload")),
        (true, _, "/plugins" | "/plugins/{id}") => (Need::Scope(TasksRead), None),
        (false, "POST", "/tasks") => (Need::Scope(TasksWrite), Some("task.create")),
        (false, "PUT", "/tasks/{id}") => (Need::Scope(TasksWrite), Some("task.update")),
        (false, "DELETE", "/tasks/{id}") => (Need::Scope(TasksWrite), Some("task.delete")),
        (false, "POST", "/tasks/{id}/schedule/pause") => {
            (Need::Scope(TasksWrite), Some("task.schedule.pause"))
        }
        (false, "POST", "/tasks/{id}/schedule/resume") => {
            (Need::Scope(TasksWrite), Some("task.schedule.resume"))
        }
        (true, _, "/tasks" | "/tasks/{id}" | "/tasks/{id}/dataset") => {
            (Need::Scope(TasksRead), None)
        }
        (false, "POST", "/tasks/{id}/executions") => (Need::Scope(ExecutionsTrigger), None),
        (false, "POST", "/webhooks/{id}") => (WebhookSignature, None),
        (false, "POST", "/executions/{id}/cancel") => {
            (Need::Scope(ExecutionsControl), Some("execution.cancel"))
        }
        (false, "POST", "/executions/{id}/pause") => {
            (Need::Scope(ExecutionsControl), Some("execution.pause"))
        }
        (false, "POST", "/executions/{id}/resume") => {
            (Need::Scope(ExecutionsControl), Some("execution.resume"))
        }
        (false, "POST", "/executions/{id}/restart") => {
            (Need::Scope(ExecutionsControl), Some("execution.restart"))
        }
        (false, "POST", "/executions/{id}/replay") => {
            (Need::Scope(ExecutionsControl), Some("execution.replay"))
        }
        (
            true,
            _,
            "/executions"
            | "/executions/{id}"
            | "/executions/{id}/logs"
            | "/executions/{id}/events"
            | "/executions/{id}/outputs"
            | "/executions/{id}/metrics"
            | "/executions/{id}/media"
            | "/executions/{id}/dataset"
            | "/events"
            | "/analytics",
        ) => (Need::Scope(ExecutionsRead), None),
        (true, _, "/media/{id}") => (MediaOrLink, None),
        (true, _, "/media/{id}/link") => (Need::Scope(MediaRead), None),
        (false, "POST", "/tokens") => (Need::Scope(Admin), Some("token.create")),
        (false, "DELETE", "/tokens/{id}") => (Need::Scope(Admin), Some("token.revoke")),
        (false, "PUT", "/namespaces/{name}/limits") => {
            (Need::Scope(Admin), Some("namespace.limits"))
        }
        _ => (Need::Scope(Admin), None),
    }
}

/// The route a matched path names, without the API's prefix.
fn route_of(matched: &str) -> &str {
    matched.strip_prefix("/api/v1").unwrap_or(matched)
}

/// The bearer secret of a request, if it sends one.
fn bearer(request: &Request) -> Result<Option<&str>, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    match text.split_once(' ') {
        Some((kind, secret)) if kind.eq_ignore_ascii_case("bearer") => Ok(Some(secret.trim())),
        _ => Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`".into(),
        )),
    }
}

/// Middleware on every route: finds the caller (an extension the handlers
/// read), refuses what its scopes do not allow, and records what changes.
pub async fn authorize(State(svc): State<AppState>, mut request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| route_of(m.as_str()).to_string())
        .unwrap_or_default();
    let (need, action) = need(request.method(), &route);
    let caller = if !svc.config().require_tokens {
        Caller::unrestricted()
    } else {
        // Read before any await: a request's body is not `Sync`.
        let secret = match bearer(&request) {
            Ok(secret) => secret.map(String::from),
            Err(e) => return super::refuse_unread(request, e.into_response()),
        };
        match identify(&svc, secret.as_deref(), need).await {
            Ok(Some(caller)) => caller,
            Ok(None) => return next.run(request).await,
            Err(e) => return super::refuse_unread(request, e.into_response()),
        }
    };
    let entry = action.map(|action| AuditEntry {
        id: 0,
        ts: String::new(),
        token_id: caller.token_id.clone(),
        namespace: caller
            .namespace
            .clone()
            .or_else(|| namespace_in(request.uri().query())),
        action: action.into(),
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        status: 0,
        object: object_of(&route, request.uri().path()),
    });
    let missing = match need {
        Need::Scope(scope) => caller.require(scope).err(),
        _ => None,
    };
    let response = match missing {
        Some(missing) => super::refuse_unread(
            request,
            ApiError::Forbidden(missing.to_string()).into_response(),
        ),
        None => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
    };
    if let Some(entry) = entry {
        let status = response.status().as_u16();
        svc.audit(AuditEntry { status, ..entry }).await;
    }
    response
}

/// The caller of a request that must show a token; `Ok(None)` for a route
/// that needs none and was sent none (a webhook, a signed media link, the
/// public routes).
async fn identify(
    svc: &AppState,
    secret: Option<&str>,
    need: Need,
) -> Result<Option<Caller>, ApiError> {
    let Some(secret) = secret else {
        return match need {
            Need::Public | Need::WebhookSignature | Need::MediaOrLink => Ok(None),
            Need::Scope(_) | Need::Token => Err(ApiError::Unauthorized(
                "this endpoint needs `Authorization: Bearer <token>` (a first start writes an admin token to admin.token in the data dir)".into(),
            )),
        };
    };
    match svc.authenticate(secret).await? {
        Some(caller) => Ok(Some(caller)),
        None => Err(ApiError::Unauthorized(
            "the token is unknown, expired or revoked".into(),
        )),
    }
}

/// The `{id}` or `{name}` segment of `path` where `route` has one.
fn object_of(route: &str, path: &str) -> Option<String> {
    let path = route_of(path);
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(pattern, _)| pattern.starts_with('{'))
        .map(|(_, segment)| segment.to_string())
}

/// The `namespace` query value, if any (an admin's request names it).
fn namespace_in(query: Option<&str>) -> Option<String> {
    let uri: axum::http::Uri = format!("/?{}", query?).parse().ok()?;
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "namespace")
        .map(|(_, v)| v)
}

/// The caller of a request, as [`authorize`] found it, for handlers. A
/// route that needs no token (a webhook, a signed link) has no caller when
/// none was sent: such handlers take `Option<Caller>`.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Unauthorized("this endpoint needs `Authorization: Bearer <token>`".into())
        })
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_not_in_the_table_needs_admin() {
        assert_eq!(
            need(&Method::GET, "/no/such/route"),
            (Need::Scope(Scope::Admin), None)
        );
        assert_eq!(need(&Method::GET, "/healthz").0, Need::Public);
        assert_eq!(
            need(&Method::POST, "/executions/{id}/cancel"),
            (
                Need::Scope(Scope::ExecutionsControl),
                Some("execution.cancel")
            )
        );
    }

    #[test]
    fn the_object_of_a_request_is_its_id_segment() {
        assert_eq!(
            object_of("/executions/{id}/cancel", "/api/v1/executions/abc/cancel"),
            Some("abc".into())
        );
        assert_eq!(object_of("/tasks", "/api/v1/tasks"), None);
        assert_eq!(
            namespace_in(Some("a=1&namespace=acme")),
            Some("acme".into())
        );
    }
}
