//! `/events`: every execution's events in one feed, a page at a time or
//! followed as server-sent events (the web page's and integrations' feed).

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{Query, bool_param, comma_words, int_param, last_event_id};
use super::problem::{ApiError, PROBLEM_JSON, Problem};
use super::tasks::task_id_of;
use crate::model::auth::Caller;
use crate::model::execution::ScopedEvent;
use crate::model::limits::check_name;
use crate::model::state::{ExecutionState, TaskRunState};
use crate::store::EventFilter;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events with a greater id.
    #[param(value_type = Option<i64>, minimum = 0, default = 0)]
    after: Option<String>,
    /// Server-sent events: the stored events, then each as it is committed,
    /// until the client leaves (or the server stops).
    #[param(value_type = Option<bool>, default = false)]
    follow: Option<String>,
    /// Only executions in this namespace (also where a `task` name is looked up).
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    namespace: Option<String>,
    /// Only executions of this task: its id, or its name in `namespace`.
    task: Option<String>,
    /// Only state changes into these states: comma-separated execution or
    /// task-run state names, any case.
    #[param(example = "failed,killed")]
    state: Option<String>,
    /// Events per page (not with `follow`).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 100)]
    limit: Option<String>,
    /// Start with the newest this many stored events: a page of them, or a
    /// follow from them on. Ignored with `after` or `Last-Event-ID`.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    tail: Option<String>,
}

/// A page of `GET /events`, oldest first.
#[derive(Serialize, ToSchema)]
pub struct EventsPage {
    events: Vec<ScopedEvent>,
    /// Set when the page is full: the `after` of the next page.
    next_after: Option<i64>,
}

/// One state name for the filter, as stored.
fn state_name(word: &str) -> Result<String, ApiError> {
    if let Ok(s) = word.parse::<ExecutionState>() {
        return Ok(s.as_str().to_string());
    }
    if let Ok(s) = word.parse::<TaskRunState>() {
        return Ok(s.as_str().to_string());
    }
    Err(ApiError::BadRequest(format!(
        "unknown state {word:?}: use execution states ({}) or task-run states ({})",
        ExecutionState::ALL
            .iter()
            .map(|s| s.as_str().to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(", "),
        TaskRunState::ALL
            .iter()
            .map(|s| s.as_str().to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Every execution's events, or follow them.
#[utoipa::path(get, path = "/events", tag = "events",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume a follow after this event id (sent by a reconnecting event source; wins over `after`)"),
    ),
    responses(
        (status = 200, description = "A page of events after `after`; with follow=true, server-sent events `event` (a ScopedEvent each, `id:` its id) that go on until the client leaves", content(
            (EventsPage = "application/json"),
            (super::executions::FeedEvent = "text/event-stream"),
        )),
        (status = 400, description = "A bad query value or Last-Event-ID, or a URL that is not UTF-8", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "`task` names no task in `namespace`", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn list(
    State(svc): State<AppState>,
    caller: Caller,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let resume = last_event_id(&headers)?;
    let after = match resume {
        Some(id) => id,
        None => int_param("after", q.after.as_deref(), 0..=i64::MAX, 0)?,
    };
    let follow = bool_param("follow", q.follow.as_deref())?;
    let limit = int_param("limit", q.limit.as_deref(), 1..=1000u32, 100)?;
    let tail = match q.tail.as_deref() {
        None => None,
        Some(t) => Some(int_param("tail", Some(t), 1..=10_000u32, 1)?),
    };
    // A client resuming (Last-Event-ID) or asking from a point (`after`)
    // gets everything after it, whatever `tail` its URL repeats.
    let tail = tail.filter(|_| resume.is_none() && q.after.is_none());
    if let Some(n) = &q.namespace {
        check_name("namespace", n).map_err(ApiError::BadRequest)?;
    }
    let states = comma_words(q.state.as_deref())
        .map(state_name)
        .collect::<Result<Vec<_>, _>>()?;
    let task_id = match &q.task {
        Some(t) => Some(task_id_of(&svc, &caller, t, q.namespace.as_deref()).await?),
        None => None,
    };
    let namespace = super::tasks::namespace_filter(&caller, q.namespace)?;
    let filter = EventFilter {
        namespace,
        task_id,
        states,
    };
    if follow {
        let permit = super::executions::follow_permit(&svc, &caller)?;
        let stream = svc.follow_all(filter, after, tail).filter_map(move |e| {
            let _held = &permit;
            let event = SseEvent::default()
                .event("event")
                .id(e.event.id.to_string())
                .json_data(&e)
                .ok();
            std::future::ready(event.map(Ok::<_, Infallible>))
        });
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let events = match tail {
        Some(n) => svc.all_events(&filter, 0, n, true).await?,
        None => svc.all_events(&filter, after, limit, false).await?,
    };
    let next_after = (tail.is_none() && events.len() == limit as usize)
        .then(|| events.last().map(|e| e.event.id))
        .flatten();
    Ok(Json(EventsPage { events, next_after }).into_response())
}
