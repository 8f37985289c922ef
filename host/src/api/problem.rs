//! `ApiError` → `application/problem+json`: the only place that chooses
//! statuses. Internal details are logged, never sent.

use axum::extract::Request;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::runtime::service::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// A webhook request whose signature is missing, wrong, stale or used.
    #[error("{0}")]
    Unauthorized(String),
    /// An existing route without a handler for the method; `allowed` is the
    /// route's `Allow` header.
    #[error("method {method} is not allowed on {path}; allowed: {}", shown_methods(.allowed))]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: String,
    },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{detail}")]
    Unprocessable {
        detail: String,
        problems: Vec<String>,
    },
    #[error("{0}")]
    TooLarge(String),
    /// Over a rate (a namespace's triggers per second): try again after
    /// `retry_after` whole seconds.
    #[error("{detail}")]
    TooMany { detail: String, retry_after: u64 },
    /// An error response that no handler made (axum's or a layer's own),
    /// given the problem+json form under its status.
    #[error("{detail}")]
    Other { status: StatusCode, detail: String },
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Other { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An `Allow` header as a list for people: `GET, POST` (HEAD goes without
/// saying beside GET).
fn shown_methods(allow: &str) -> String {
    let methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    methods
        .iter()
        .filter(|m| !(**m == "HEAD" && methods.contains(&"GET")))
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(m) => ApiError::NotFound(m),
            ServiceError::Conflict(m) => ApiError::Conflict(m),
            ServiceError::Forbidden(f) => ApiError::Conflict(f.to_string()),
            ServiceError::Invalid { message, problems } => ApiError::Unprocessable {
                detail: message,
                problems,
            },
            // The source chain goes to the log, never to the caller.
            failure => ApiError::Internal(error_chain(&failure)),
        }
    }
}

/// An error and its sources, for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("request body too large: {r}"))
        } else {
            ApiError::BadRequest(format!("cannot read the request body: {r}"))
        }
    }
}

/// The body of every error response (RFC 9457 problem details).
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What was wrong, for people.
    pub detail: String,
    /// Every problem with the request body (422 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub problems: Option<Vec<String>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: self.to_string(),
            problems: None,
        };
        let mut allow = None;
        let mut retry_after = None;
        let unauthorized = matches!(self, ApiError::Unauthorized(_));
        match self {
            ApiError::Internal(m) => {
                // The details stay in the log, found by the id the caller gets.
                let id = uuid::Uuid::now_v7();
                tracing::error!(%id, error = %m, "internal error");
                body.detail =
                    format!("internal error {id}: the server logged what went wrong under this id");
            }
            ApiError::Unprocessable { problems, .. } => body.problems = Some(problems),
            ApiError::MethodNotAllowed { allowed, .. } => allow = Some(allowed),
            ApiError::TooMany { retry_after: s, .. } => retry_after = Some(s),
            _ => {}
        }
        let body = serde_json::to_string(&body).expect("a problem serializes");
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(v) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            headers.insert(header::ALLOW, v);
        }
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// A path that does not match the URL, or a segment that is not UTF-8.
impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        use axum::extract::path::ErrorKind;
        match r {
            PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
                ErrorKind::InvalidUtf8InPathParam { key } => ApiError::BadRequest(format!(
                    "path parameter {key} is not valid UTF-8 once percent-decoded"
                )),
                // The handler does not fit its route: ours to fix.
                ErrorKind::WrongNumberOfParameters { .. } | ErrorKind::UnsupportedType { .. } => {
                    ApiError::Internal(e.body_text())
                }
                _ => ApiError::BadRequest(e.body_text()),
            },
            other => ApiError::Internal(other.body_text()),
        }
    }
}

/// A query string that does not fit the handler's parameters (e.g. one
/// given twice).
impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        match std::error::Error::source(&r) {
            Some(inner) => ApiError::BadRequest(format!("invalid query string: {inner}")),
            None => ApiError::BadRequest(r.body_text()),
        }
    }
}

/// Middleware: gives the problem+json form to error responses no handler
/// made — above all axum's empty 405, which names neither the method nor
/// what the route allows.
pub async fn problems_only(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let resp = next.run(req).await;
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = resp
            .headers()
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        return ApiError::MethodNotAllowed {
            method,
            path,
            allowed,
        }
        .into_response();
    }
    let body = axum::body::to_bytes(resp.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    tracing::warn!(%status, %path, body = %text, "an error response was not problem+json");
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    ApiError::Other { status, detail }.into_response()
}

/// Parses a JSON body: bad syntax is 400, the wrong shape 422.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::BadRequest(format!("malformed JSON: {e}"))
            }
            Category::Data => ApiError::Unprocessable {
                detail: format!("invalid {what}"),
                problems: vec![e.to_string()],
            },
        }
    })
}
