//! `/tokens`, `/audit` and `/namespaces/{name}/limits`: an admin's tools
//! for who may call, what they did, and each namespace's fair share.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{Path, Query, int_param};
use super::problem::{ApiError, PROBLEM_JSON, Problem, parse_json};
use crate::model::auth::{AuditEntry, NamespaceLimits, Scope, Token};
use crate::runtime::access::NewToken;

/// `GET /whoami`: the caller, as its token makes it.
#[derive(Serialize, ToSchema)]
pub struct Whoami {
    /// `null` on a server run with `--no-auth`.
    token_id: Option<String>,
    /// `null`: every namespace (an admin).
    namespace: Option<String>,
    #[schema(value_type = Vec<String>)]
    scopes: std::collections::BTreeSet<Scope>,
}

/// Who the token is: its namespace and scopes (any live token), so that a
/// client can show what it may do.
#[utoipa::path(get, path = "/whoami", tag = "access",
    responses((status = 200, description = "The caller", body = Whoami)))]
pub async fn whoami(caller: crate::model::auth::Caller) -> Json<Whoami> {
    Json(Whoami {
        token_id: caller.token_id,
        namespace: caller.namespace,
        scopes: caller.scopes,
    })
}

/// `POST /tokens`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// What the token is for.
    name: Option<String>,
    /// Its namespace; leave it out for an admin token.
    namespace: Option<String>,
    /// A list, or one string of comma- or space-separated scopes.
    #[schema(value_type = Vec<String>, example = json!(["tasks:read", "executions:trigger"]))]
    #[serde(deserialize_with = "scope_list")]
    scopes: Vec<Scope>,
    /// How long it lives (`30d`, `12h`); for ever when left out. Also
    /// accepted as `expires_in`.
    #[schema(example = "30d")]
    #[serde(alias = "expires_in")]
    expires: Option<String>,
}

/// Scopes as a list, or as the CLI takes them: `"tasks:read,media:read"`.
fn scope_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Scope>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        List(Vec<String>),
        Text(String),
    }
    use std::str::FromStr;
    match Written::deserialize(d).map_err(|_| {
        serde::de::Error::custom(
            "scopes must be a list of scopes (or one string of them, comma-separated), e.g. [\"tasks:read\"]",
        )
    })? {
        Written::List(list) => list
            .iter()
            .map(|s| Scope::from_str(s))
            .collect::<Result<_, _>>()
            .map_err(serde::de::Error::custom),
        Written::Text(text) => crate::model::auth::parse_scopes(&text)
            .map(|set| set.into_iter().collect())
            .map_err(serde::de::Error::custom),
    }
}

/// A new token with its secret, shown only here.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    token: Token,
    /// `Authorization: Bearer <secret>`; never shown again.
    secret: String,
}

/// `GET /tokens`.
#[derive(Serialize, ToSchema)]
pub struct TokenList {
    tokens: Vec<Token>,
}

/// Make a token (admin).
#[utoipa::path(post, path = "/tokens", tag = "access",
    request_body = TokenRequest,
    responses(
        (status = 201, description = "The token and its secret (shown once)", body = CreatedToken),
        (status = 400, description = "Malformed JSON or a bad `expires`", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "An unknown scope, an admin token with a namespace or another without", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn create_token(
    State(svc): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let req: TokenRequest = parse_json(&body?, "token request")?;
    let expires_in = req
        .expires
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("expires: {e} (e.g. 30d, 12h)")))?;
    let (token, secret) = svc
        .create_token(NewToken {
            name: req.name,
            namespace: req.namespace,
            scopes: req.scopes.into_iter().collect(),
            expires_in,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })))
}

/// Every token, never a secret (admin).
#[utoipa::path(get, path = "/tokens", tag = "access",
    responses((status = 200, description = "Every token, oldest first", body = TokenList)))]
pub async fn list_tokens(State(svc): State<AppState>) -> Result<Json<TokenList>, ApiError> {
    Ok(Json(TokenList {
        tokens: svc.tokens().await?,
    }))
}

/// Revoke a token at once (admin).
#[utoipa::path(delete, path = "/tokens/{id}", tag = "access",
    params(("id" = String, Path, description = "The token's id")),
    responses(
        (status = 200, description = "The token, revoked", body = Token),
        (status = 404, description = "No such token", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "The last live admin token", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn revoke_token(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Token>, ApiError> {
    Ok(Json(svc.revoke_token(&id).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this namespace's entries.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    namespace: Option<String>,
    /// Entries with a greater id.
    #[param(value_type = Option<i64>, minimum = 0, default = 0)]
    after: Option<String>,
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 100)]
    limit: Option<String>,
}

/// `GET /audit`.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    entries: Vec<AuditEntry>,
}

/// The audit trail: every upload, change and control request with the
/// token that made it, oldest first (admin).
#[utoipa::path(get, path = "/audit", tag = "access",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of entries", body = AuditPage),
        (status = 400, description = "A bad query value", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn audit(
    State(svc): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let after = int_param("after", q.after.as_deref(), 0..=i64::MAX, 0)?;
    let limit = int_param("limit", q.limit.as_deref(), 1..=1000u32, 100)?;
    if let Some(n) = &q.namespace {
        crate::model::limits::check_name("namespace", n).map_err(ApiError::BadRequest)?;
    }
    Ok(Json(AuditPage {
        entries: svc
            .audit_trail(q.namespace.as_deref(), after, limit)
            .await?,
    }))
}

/// A namespace's limits and what it uses now.
#[derive(Serialize, ToSchema)]
pub struct NamespaceShare {
    namespace: String,
    limits: NamespaceLimits,
    /// Bytes of media and outputs its executions hold.
    stored_bytes: u64,
}

/// A namespace's fair share (admin).
#[utoipa::path(get, path = "/namespaces/{name}/limits", tag = "access",
    params(("name" = String, Path, description = "The namespace")),
    responses(
        (status = 200, description = "Its limits (none set: `{}`) and use", body = NamespaceShare),
        (status = 400, description = "A bad namespace name", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn get_limits(
    State(svc): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<NamespaceShare>, ApiError> {
    crate::model::limits::check_name("namespace", &name).map_err(ApiError::BadRequest)?;
    let limits = svc.namespace_limits(&name);
    share(&svc, name, limits).await
}

async fn share(
    svc: &AppState,
    namespace: String,
    limits: NamespaceLimits,
) -> Result<Json<NamespaceShare>, ApiError> {
    Ok(Json(NamespaceShare {
        stored_bytes: svc.stored_bytes(&namespace).await?,
        limits,
        namespace,
    }))
}

/// Set a namespace's fair share (admin): running attempts at once,
/// triggers per second (429 beyond), stored bytes. A field left out is no
/// limit.
#[utoipa::path(put, path = "/namespaces/{name}/limits", tag = "access",
    params(("name" = String, Path, description = "The namespace")),
    request_body = NamespaceLimits,
    responses(
        (status = 200, description = "The limits now", body = NamespaceShare),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "A limit out of range or an unknown field", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn set_limits(
    State(svc): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<NamespaceShare>, ApiError> {
    let limits: NamespaceLimits = parse_json(&body?, "namespace limits")?;
    let limits = svc.set_namespace_limits(&name, limits).await?;
    share(&svc, name, limits).await
}
