//! `/analytics`: how much ran, how much failed, how long things took and
//! waited, per time bucket, computed from the store on each request.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::extract::{Query, choice_param, comma_words};
use super::problem::{ApiError, PROBLEM_JSON, Problem};
use super::tasks::task_id_of;
use crate::model::analytics::{Analytics, Bucket, MAX_BUCKETS};
use crate::model::auth::Caller;
use crate::model::clock::parse_rfc3339_ms;
use crate::model::limits::check_name;
use crate::model::state::ExecutionState;
use crate::store::AnalyticsFilter;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsQuery {
    /// Executions created at or after this RFC 3339 instant (default: a day
    /// before `until`).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Executions created before this RFC 3339 instant (default: now).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// The buckets' width: `1m`, `1h` (default) or `1d`.
    #[param(value_type = Option<String>, example = "1h")]
    bucket: Option<String>,
    /// Only executions of this task: its id, or its name in `namespace`.
    task: Option<String>,
    /// Only executions in this namespace (also where a `task` name is looked up).
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    namespace: Option<String>,
    /// Only executions now in these states: comma-separated names (any case)
    /// or `pending`, `completed`, `cancelled`.
    state: Option<String>,
}

fn instant(name: &str, v: &str) -> Result<String, ApiError> {
    crate::model::parse_instant(v).map_err(|e| {
        ApiError::BadRequest(format!(
            "{name} must be an RFC 3339 time such as 2026-11-25T12:04:20Z, got {v:?} ({e})"
        ))
    })
}

/// Execution analytics per time bucket: executions started and finished by
/// final state, success rate, failures by error kind, duration and queue
/// wait percentiles, attempts per task run, fuel and memory; totals; the
/// busiest and most failing tasks. An execution counts in the bucket of
/// its creation.
#[utoipa::path(get, path = "/analytics", tag = "analytics",
    params(AnalyticsQuery),
    responses(
        (status = 200, description = "The figures", body = Analytics),
        (status = 400, description = "A bad query value, `since` not before `until`, or more than 10,000 buckets", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "`task` names no task in `namespace`", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn get(
    State(svc): State<AppState>,
    caller: Caller,
    Query(q): Query<AnalyticsQuery>,
) -> Result<Json<Analytics>, ApiError> {
    let bucket = Bucket::parse(choice_param(
        "bucket",
        q.bucket.as_deref(),
        &["1h", "1m", "1d"],
    )?)
    .expect("one of the choices");
    let until = match &q.until {
        Some(u) => instant("until", u)?,
        None => crate::model::now(),
    };
    let since = match &q.since {
        Some(s) => instant("since", s)?,
        None => {
            let until_ms = parse_rfc3339_ms(&until).unwrap_or_default() as i64;
            crate::model::clock::rfc3339_micros((until_ms - 86_400_000) * 1000)
        }
    };
    let ms = |t: &str| parse_rfc3339_ms(t).unwrap_or_default() as i64;
    if ms(&since) >= ms(&until) {
        return Err(ApiError::BadRequest(format!(
            "since ({since}) must be before until ({until})"
        )));
    }
    let buckets = (ms(&until) - ms(&since)) / bucket.millis() + 1;
    if buckets > MAX_BUCKETS {
        return Err(ApiError::BadRequest(format!(
            "{buckets} buckets of {} from since to until: at most {MAX_BUCKETS}; use a wider bucket",
            q.bucket.as_deref().unwrap_or("1h")
        )));
    }
    if let Some(n) = &q.namespace {
        check_name("namespace", n).map_err(ApiError::BadRequest)?;
    }
    let mut states = Vec::new();
    for word in comma_words(q.state.as_deref()) {
        states.extend(ExecutionState::from_filter(word).map_err(ApiError::BadRequest)?);
    }
    let task_id = match &q.task {
        Some(t) => Some(task_id_of(&svc, &caller, t, q.namespace.as_deref()).await?),
        None => None,
    };
    let namespace = super::tasks::namespace_filter(&caller, q.namespace)?;
    let filter = AnalyticsFilter {
        since,
        until,
        task_id,
        namespace,
        states,
    };
    Ok(Json(svc.analytics(&filter, bucket).await?))
}
