//! The rows analytics add up: one per execution created in a window, read
//! in one range scan on `executions_by_created` (usage is kept on the
//! execution as attempts end, its task-run count by a trigger).
//! Runs on a blocking thread with one of the point reader's connections.

use rusqlite::params_from_iter;

use super::point::PointReader;
use super::{Columns, exec_state};
use crate::model::analytics::Row;
use crate::model::clock::parse_rfc3339_ms;
use crate::store::{AnalyticsFilter, StoreError, StoreResult};

pub(super) fn rows(reader: &PointReader, f: &AnalyticsFilter) -> StoreResult<Vec<Row>> {
    let mut sql = String::from(
        "SELECT created_at, started_at, state, duration_ms, task_id, attempts, fuel, memory_peak, task_runs, \
         CASE WHEN state = 'FAILED' THEN json_extract(error, '$.kind') END AS error_kind \
         FROM executions x WHERE created_at >= ? AND created_at < ?",
    );
    let mut args: Vec<String> = vec![f.since.clone(), f.until.clone()];
    if let Some(t) = &f.task_id {
        sql.push_str(" AND task_id = ?");
        args.push(t.clone());
    }
    if let Some(n) = &f.namespace {
        sql.push_str(" AND namespace = ?");
        args.push(n.clone());
    }
    if !f.states.is_empty() {
        sql.push_str(" AND state IN (");
        sql.push_str(&vec!["?"; f.states.len()].join(", "));
        sql.push(')');
        args.extend(f.states.iter().map(|s| s.as_str().to_string()));
    }
    reader.with(|c| {
        let mut st = c.prepare_cached(&sql)?;
        let mut rows = st.query(params_from_iter(args.iter()))?;
        let mut out = Vec::new();
        let time = |r: &rusqlite::Row<'_>, col: &str| -> StoreResult<Option<i64>> {
            Ok(match r.text(col)? {
                Some(t) => Some(
                    parse_rfc3339_ms(&t)
                        .ok_or_else(|| StoreError::Corrupt(format!("{col} {t:?} is not a time")))?
                        as i64,
                ),
                None => None,
            })
        };
        while let Some(r) = rows.next()? {
            out.push(Row {
                created_ms: time(r, "created_at")?.unwrap_or_default(),
                started_ms: time(r, "started_at")?,
                state: exec_state(&r.string("state")?)?,
                duration_ms: r.real("duration_ms")?,
                task_id: r.string("task_id")?,
                error_kind: r.text("error_kind")?,
                attempts: r.integer("attempts")?.max(0) as u64,
                task_runs: r.integer("task_runs")?.max(0) as u64,
                fuel: r.integer("fuel")?.max(0) as u64,
                memory_peak_bytes: r.integer("memory_peak")?.max(0) as u64,
            });
        }
        Ok(out)
    })
}
