//! Point reads: one execution by id, with its task runs and attempts.
//!
//! These run inline on the calling thread, on read-only rusqlite
//! connections kept in a small pool, instead of on sqlx's worker threads:
//! a primary-key lookup takes microseconds, and the two thread hand-offs of
//! an sqlx query cost more than that (a profile of callers waiting for
//! their results showed a fifth of the server's CPU in sqlx's workers,
//! mostly waking and switching). Listings, which scan, stay on sqlx.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{Columns, EXECUTION_COLUMNS, execution_from_row, ms_to_rfc3339, run_state};
use crate::model::execution::{Attempt, AttemptPhase, Execution, TaskRun};
use crate::store::{StoreError, StoreResult};

/// Idle connections kept; more are opened while more readers are busy.
const KEEP: usize = 8;

pub(super) struct PointReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl PointReader {
    pub fn new(path: &Path) -> PointReader {
        PointReader {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on an idle connection (or a new one), inline.
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => self.open()?,
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < KEEP {
            idle.push(conn);
        }
        result
    }

    fn open(&self) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // A WAL reader waits only in rare cases (recovery after a crash);
        // briefly, since it waits on an async runtime's thread.
        conn.busy_timeout(Duration::from_secs(1))?;
        conn.execute_batch("PRAGMA mmap_size = 1073741824;")?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(conn)
    }

    /// The execution, with its task runs and attempts when `with_runs`.
    pub fn execution(&self, id: &str, with_runs: bool) -> StoreResult<Option<Execution>> {
        self.with(|c| {
            let exec = c
                .prepare_cached(&format!(
                    "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?"
                ))?
                .query_row([id], |row| Ok(execution_from_row(row)))
                .optional()?
                .transpose()?;
            let Some(mut exec) = exec else {
                return Ok(None);
            };
            if with_runs {
                exec.task_runs = Some(task_runs(c, id)?);
            }
            Ok(Some(exec))
        })
    }
}

fn task_runs(c: &Connection, execution_id: &str) -> StoreResult<Vec<TaskRun>> {
    let mut attempts: Vec<(String, Attempt)> = Vec::new();
    let mut st = c.prepare_cached(
        "SELECT id, task_run_id, number, status, error, usage, worker_id, started_at, ended_at \
         FROM attempts WHERE execution_id = ? ORDER BY number",
    )?;
    let mut rows = st.query([execution_id])?;
    while let Some(a) = rows.next()? {
        let status = a.string("status")?;
        attempts.push((
            a.string("task_run_id")?,
            Attempt {
                id: a.string("id")?,
                number: a.integer("number")? as u32,
                status: AttemptPhase::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("bad status {status}")))?,
                error: a.json("error")?,
                usage: a.json("usage")?,
                worker_id: a.string("worker_id")?,
                started_at: a.string("started_at")?,
                ended_at: a.text("ended_at")?,
            },
        ));
    }
    let mut runs = Vec::new();
    let mut st = c.prepare_cached(
        "SELECT id, step, state, not_before, checkpoint, input, error, output, item_index, item \
         FROM task_runs WHERE execution_id = ? ORDER BY rowid",
    )?;
    let mut rows = st.query([execution_id])?;
    while let Some(r) = rows.next()? {
        let id = r.string("id")?;
        runs.push(TaskRun {
            attempts: attempts
                .iter()
                .filter(|(run, _)| *run == id)
                .map(|(_, a)| a.clone())
                .collect(),
            id,
            step: r.string("step")?,
            index: r.int("item_index")?.map(|i| i as u32),
            item: r.json("item")?,
            state: run_state(&r.string("state")?)?,
            not_before: r.int("not_before")?.map(ms_to_rfc3339),
            checkpoint: r.json("checkpoint")?,
            input: r.json("input")?,
            error: r.json("error")?,
            output: r.json("output")?,
        });
    }
    Ok(runs)
}
