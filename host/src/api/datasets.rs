//! `GET /tasks/{id}/dataset` and `GET /executions/{id}/dataset`: the rows
//! successful executions added to a task's dataset, oldest first. JSON
//! comes in pages (`limit`, `next_cursor`); JSON lines and CSV stream every
//! row after the cursor, a page at a time from the store, so an export of
//! a million rows holds one page in memory.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::executions::instant;
use super::extract::{Path, Query, choice_param, int_param};
use super::problem::{ApiError, PROBLEM_JSON, Problem};
use super::tasks::TASK_ID;
use crate::model::auth::Caller;
use crate::model::dataset::{DatasetRow, DatasetSpec};
use crate::model::task::TaskRef;
use crate::store::DatasetFilter;

/// Rows read from the store per step of a stream.
const STREAM_PAGE: u32 = 1_000;

/// The query of both dataset endpoints.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DatasetQuery {
    /// Where a task name is looked up (`/tasks/{id}/dataset`).
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$", default = "default")]
    namespace: Option<String>,
    /// `json` (a page), `jsonl` or `csv` (every row after `cursor`).
    #[param(value_type = Option<DatasetFormat>, inline)]
    format: Option<String>,
    /// Rows added at or after this RFC 3339 instant.
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Only this execution's rows.
    execution_id: Option<String>,
    /// `next_cursor` of the previous page, unchanged.
    cursor: Option<String>,
    /// Rows per page (format=json).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000, default = 1000)]
    limit: Option<String>,
}

/// How dataset rows are served.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: `format` is checked by hand
pub enum DatasetFormat {
    Json,
    Jsonl,
    Csv,
}

/// A page of dataset rows.
#[derive(Serialize, ToSchema)]
pub struct DatasetPage {
    rows: Vec<DatasetRow>,
    /// Set when the page is full: pass it as `cursor` for the next one.
    next_cursor: Option<String>,
}

const CURSOR_VERSION: &str = "d1:";

fn encode(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_VERSION}{id}"))
}

fn decode(cursor: &str) -> Result<i64, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.strip_prefix(CURSOR_VERSION)?.parse::<i64>().ok())
        .filter(|id| *id >= 0)
        .ok_or_else(|| {
            let shown: String = cursor.chars().take(64).collect();
            ApiError::BadRequest(format!(
                "cursor {shown:?} is not one this server issued; pass next_cursor unchanged"
            ))
        })
}

/// The rows of a task's dataset.
#[utoipa::path(get, path = "/tasks/{id}/dataset", tag = "tasks",
    params(("id" = String, Path, description = TASK_ID), DatasetQuery),
    responses(
        (status = 200, description = "A page of rows (format=json), or every row after the cursor as JSON lines or CSV (columns: id, execution_id, index, created_at, then the dataset schema's properties, else the first row's keys)", content(
            (DatasetPage = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )),
        (status = 400, description = "A bad query value, namespace or cursor", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such task", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn of_task(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<DatasetQuery>,
) -> Result<Response, ApiError> {
    let task = super::tasks::visible_task(&svc, &caller, &id, q.namespace.as_deref()).await?;
    let columns = task.spec.dataset.as_ref().and_then(DatasetSpec::columns);
    serve(svc, q, Some(task.id), None, columns).await
}

/// The rows one execution added to its task's dataset.
#[utoipa::path(get, path = "/executions/{id}/dataset", tag = "executions",
    params(("id" = String, Path, description = "The execution's id"), DatasetQuery),
    responses(
        (status = 200, description = "A page of rows (format=json), or every row as JSON lines or CSV", content(
            (DatasetPage = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )),
        (status = 400, description = "A bad query value or cursor", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such execution", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn of_execution(
    State(svc): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<DatasetQuery>,
) -> Result<Response, ApiError> {
    let exec = super::executions::load(&svc, &caller, &id, false).await?;
    let task = svc.task(&TaskRef::Id(exec.task_id.clone())).await?;
    let columns = task.and_then(|t| t.spec.dataset.as_ref().and_then(DatasetSpec::columns));
    serve(svc, q, None, Some(exec.id), columns).await
}

async fn serve(
    svc: AppState,
    q: DatasetQuery,
    task_id: Option<String>,
    execution_id: Option<String>,
    columns: Option<Vec<String>>,
) -> Result<Response, ApiError> {
    let format = choice_param("format", q.format.as_deref(), &["json", "jsonl", "csv"])?;
    let limit = int_param("limit", q.limit.as_deref(), 1..=10_000u32, 1_000)?;
    let filter = DatasetFilter {
        task_id,
        execution_id: execution_id.or(q.execution_id),
        since: instant("since", q.since.as_deref())?,
        after: q.cursor.as_deref().map(decode).transpose()?.unwrap_or(0),
        limit,
    };
    if format == "json" {
        let rows = svc.dataset_rows(&filter).await?;
        let next_cursor = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| encode(r.id)))
            .flatten();
        return Ok(Json(DatasetPage { rows, next_cursor }).into_response());
    }
    let first = svc
        .dataset_rows(&DatasetFilter {
            limit: STREAM_PAGE,
            ..filter.clone()
        })
        .await?;
    let csv = format == "csv";
    let columns = columns.unwrap_or_else(|| {
        first
            .first()
            .map(|r| r.data.keys().cloned().collect())
            .unwrap_or_default()
    });
    let head = if csv {
        let mut names = vec!["id", "execution_id", "index", "created_at"];
        names.extend(columns.iter().map(String::as_str));
        csv_line(names.iter().map(|s| s.to_string()))
    } else {
        Vec::new()
    };
    struct Pages {
        svc: AppState,
        filter: DatasetFilter,
        rows: Option<Vec<DatasetRow>>,
    }
    let pages = Pages {
        svc,
        filter: DatasetFilter {
            limit: STREAM_PAGE,
            ..filter
        },
        rows: Some(first),
    };
    let body = futures_util::stream::unfold(pages, move |mut p| {
        let columns = columns.clone();
        async move {
            let rows = match p.rows.take() {
                Some(rows) => rows,
                None => match p.svc.dataset_rows(&p.filter).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "a dataset stream ended early");
                        return None;
                    }
                },
            };
            if rows.is_empty() {
                return None;
            }
            if rows.len() < p.filter.limit as usize {
                // The last page: after it, an empty read ends the stream.
                p.rows = Some(Vec::new());
            }
            p.filter.after = rows.last().map_or(p.filter.after, |r| r.id);
            let mut chunk = Vec::new();
            for r in &rows {
                if csv {
                    let mut fields = vec![
                        r.id.to_string(),
                        r.execution_id.clone(),
                        r.index.to_string(),
                        r.created_at.clone(),
                    ];
                    fields.extend(columns.iter().map(|c| match r.data.get(c) {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                    }));
                    chunk.extend(csv_line(fields.into_iter()));
                } else if let Ok(mut line) = serde_json::to_vec(r) {
                    line.push(b'\n');
                    chunk.extend(line);
                }
            }
            Some((Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)), p))
        }
    });
    let head = futures_util::stream::once(async move { Ok(bytes::Bytes::from(head)) });
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    use futures_util::StreamExt;
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(head.chain(body)),
    )
        .into_response())
}

/// One CSV record (RFC 4180, CRLF).
fn csv_line(fields: impl Iterator<Item = String>) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let fields: Vec<String> = fields.collect();
    let _ = w.write_record(&fields);
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_foreign_ones_are_refused() {
        assert_eq!(decode(&encode(42)).unwrap(), 42);
        for bad in ["", "42", "garbage", &URL_SAFE_NO_PAD.encode("d1:-1")] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_lines_quote_what_needs_it() {
        let line = csv_line(["a".into(), "b,c".into(), "d\"e".into()].into_iter());
        assert_eq!(String::from_utf8(line).unwrap(), "a,\"b,c\",\"d\"\"e\"\r\n");
    }
}
