//! Plans, applied: reads the planner's [`Snapshot`] of an execution inside
//! the writer's transaction, asks `model::plan` what an event does, and
//! writes exactly the plan. No transition rule lives here: a refusal comes
//! from the planner before the first write, so it leaves the batch as it was.
//!
//! The snapshot is read in the same transaction that applies the plan, on
//! the one writer thread, so nothing can change between the two; a store
//! with several writers (PostgreSQL) reads it `FOR UPDATE` instead.

use rusqlite::{Connection, params};
use serde_json::json;

use super::super::*;
use super::writes::{push_event, task_version_spec};
use crate::model::clock::{Clock, parse_rfc3339_ms};
use crate::model::plan::{
    self, AttemptChange, Event, FlowSnapshot, Lease, Plan, Refusal, RunSnapshot, Snapshot, Timer,
};
use crate::model::report::{AttemptReport, AttemptStatus};

impl From<Refusal> for StoreError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Forbidden(f) => StoreError::Forbidden(f),
            Refusal::Stale(m) => StoreError::Fenced(m),
            Refusal::NotDue { run, not_before } => StoreError::NotDue { run, not_before },
            Refusal::UnknownRun(run) => StoreError::NotFound(format!("no task run {run}")),
            // Planned again on a whole snapshot before it gets here.
            Refusal::Incomplete => StoreError::Corrupt(r.to_string()),
        }
    }
}

/// The execution's row beside its snapshot: what applying needs.
pub(super) struct Loaded {
    pub snap: Snapshot,
    pub started_at: Option<String>,
    pub task_id: String,
    pub task_version: i64,
    pub input: String,
    /// The execution's task version, parsed (cached on the writer thread).
    pub spec: std::sync::Arc<crate::model::task::TaskSpec>,
    /// Per task run, in the snapshot's order.
    pub runs: Vec<RunRow>,
    /// The flow's step shown as running (JSON), as stored.
    pub current_step: Option<String>,
}

/// A task run's columns the planner does not need.
pub(super) struct RunRow {
    pub step: String,
    pub checkpoint: Option<String>,
    pub priority: i32,
    pub queue: String,
}

/// Which execution to read: by its id, or as the one a task run is in.
#[derive(Clone, Copy)]
pub(super) enum Key<'a> {
    Execution(&'a str),
    TaskRun(&'a str),
}

/// The execution's columns of `load`'s first query.
const HEAD: &str =
    "e.id, e.state, e.started_at, e.task_id, e.task_version, e.input, e.variables, e.current_step";
/// A task run's columns, from index `HEAD_LEN` in the first query and 0
/// in the others.
const RUN: &str = "tr.id, tr.state, tr.attempts, tr.max_attempts, tr.fence, tr.owner, \
     tr.not_before, tr.step, tr.checkpoint, tr.priority, tr.queue, tr.output, tr.item_index, \
     tr.item, tr.rowid";
const HEAD_LEN: usize = 8;
/// The states of an item that ended without succeeding.
const UNWELL: &str = "'WARNING', 'FAILED', 'KILLED', 'SKIPPED'";

/// The execution's columns of `load`'s first query: id, state,
/// started_at, task_id, task_version, input, variables, current_step.
type Head = (
    String,
    String,
    Option<String>,
    String,
    i64,
    String,
    String,
    Option<String>,
);

/// One task run read: what the planner sees, what applying needs, and
/// its row id (the order the runs were made in).
struct ReadRun {
    rowid: i64,
    snap: RunSnapshot,
    row: RunRow,
    output: Option<String>,
    item: Option<String>,
}

fn read_run(r: &rusqlite::Row<'_>, at: usize) -> StoreResult<Option<ReadRun>> {
    let Some(id) = r.get::<_, Option<String>>(at)? else {
        return Ok(None); // an execution without task runs (left join)
    };
    let state: String = r.get(at + 1)?;
    Ok(Some(ReadRun {
        rowid: r.get(at + 14)?,
        snap: RunSnapshot {
            id,
            step: r.get(at + 7)?,
            item: r.get::<_, Option<i64>>(at + 12)?.map(|i| i as u32),
            state: state.parse().map_err(StoreError::Corrupt)?,
            attempts: r.get::<_, i64>(at + 2)? as u32,
            max_attempts: r.get::<_, i64>(at + 3)? as u32,
            fence: r.get(at + 4)?,
            owner: r.get(at + 5)?,
            not_before: r.get(at + 6)?,
        },
        row: RunRow {
            step: r.get(at + 7)?,
            checkpoint: r.get(at + 8)?,
            priority: r.get::<_, i64>(at + 9)? as i32,
            queue: r.get(at + 10)?,
        },
        output: r.get(at + 11)?,
        item: r.get(at + 13)?,
    }))
}

/// Reads an execution and its task runs, or `None` if there is none (an
/// execution being created may have no task run yet). One read per event:
/// the writer thread is the service's bottleneck at saturation.
///
/// How much of an execution an event reads.
#[derive(Clone, Copy)]
pub(super) enum Read<'a> {
    /// Every task run: controls, a flow's start, a plan that asked for all.
    Whole,
    /// What an event about task run `run` needs (see [`load`]); `starts`:
    /// whether it may start more `for_each` items (an attempt's end may; a
    /// claim only starts its own attempt).
    Around { run: &'a str, starts: bool },
}

/// `read`: `Around` the task run an event is about: the `for_each` items
/// that succeeded (but that one) are left out, so that an item's events
/// cost the items still running, not the whole step; the planner says
/// when it needs them ([`plan::Refusal::Incomplete`]).
pub(super) fn load(c: &Connection, key: Key<'_>, read_as: Read<'_>) -> StoreResult<Option<Loaded>> {
    let (around, starts) = match read_as {
        Read::Whole => (None, true),
        Read::Around { run, starts } => (Some(run), starts),
    };
    let only_plain = if around.is_some() {
        " AND tr.item_index IS NULL"
    } else {
        ""
    };
    let (mut st, id) = match key {
        Key::Execution(id) => (
            c.prepare_cached(&format!(
                "SELECT {HEAD}, {RUN} FROM executions e LEFT JOIN task_runs tr \
                 ON tr.execution_id = e.id{only_plain} WHERE e.id = ? ORDER BY tr.rowid"
            ))?,
            id,
        ),
        Key::TaskRun(run) => (
            c.prepare_cached(&format!(
                "SELECT {HEAD}, {RUN} FROM executions e LEFT JOIN task_runs tr \
                 ON tr.execution_id = e.id{only_plain} \
                 WHERE e.id = (SELECT execution_id FROM task_runs WHERE id = ?) ORDER BY tr.rowid"
            ))?,
            run,
        ),
    };
    let mut rows = st.query([id])?;
    let mut head: Option<Head> = None;
    let mut read = Vec::new();
    while let Some(r) = rows.next()? {
        if head.is_none() {
            head = Some((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ));
        }
        read.extend(read_run(r, HEAD_LEN)?);
    }
    drop(rows);
    let Some((execution_id, state, started_at, task_id, task_version, input, variables, current)) =
        head
    else {
        return Ok(None);
    };
    let spec = task_version_spec(c, &task_id, task_version)?;
    let has_items = spec.has_for_each();
    let mut left_out = None;
    let execution_state: ExecutionState = state.parse().map_err(StoreError::Corrupt)?;
    if around.is_some() && has_items && execution_state == ExecutionState::Killing {
        // Killing moves every task run not ended: read them all.
        return load(c, key, Read::Whole);
    }
    let mut items_ahead = None;
    if let Some(run) = around.filter(|_| has_items) {
        // The event's own task run.
        let mut st = c.prepare_cached(&format!(
            "SELECT {RUN} FROM task_runs tr WHERE tr.id = ? AND tr.execution_id = ? \
             AND tr.item_index IS NOT NULL"
        ))?;
        let mut rows = st.query([run, &execution_id])?;
        while let Some(r) = rows.next()? {
            read.extend(read_run(r, 0)?);
        }
        drop(rows);
        read.sort_by_key(|r| r.rowid);
        let own = read
            .iter()
            .find(|r| r.snap.id == run && r.snap.item.is_some());
        let mut out = plan::LeftOut::default();
        match own.map(|r| (r.snap.step.clone(), r.snap.state)) {
            Some((step, own_state)) if starts => {
                let f = spec.step(&step).and_then(|s| s.for_each.as_ref());
                let concurrency = f.map_or(1, |f| f.concurrency);
                let ahead = items_around(c, &execution_id, &step, concurrency)?;
                if ahead.ended_unwell > 0 {
                    read_unwell(c, &execution_id, run, &mut read)?;
                }
                let here = read.iter().filter(|r| r.snap.step == step).count() as u32;
                // The event's own is read, not counted.
                let live = ahead
                    .live
                    .saturating_sub(u32::from(!own_state.is_terminal()));
                let done = ahead.started.saturating_sub(here + live);
                items_ahead = ahead.kept;
                out.runs = Some((step, done));
                out.live = live;
            }
            // A claim starts its own attempt; should it end the item
            // instead, the plan needs the counts and is incomplete.
            Some((step, _)) => out.uncounted = Some(step),
            // A step after the items: those that did not succeed still
            // stop the flow or mark it.
            None => read_unwell(c, &execution_id, run, &mut read)?,
        }
        left_out = Some(out);
    } else if has_items
        && let Some(last) = read.last().filter(|r| r.snap.item.is_some())
        && let Some(f) = spec.step(&last.snap.step).and_then(|s| s.for_each.as_ref())
    {
        // Read whole: the current step's items not started yet, if kept.
        items_ahead = items_around(c, &execution_id, &last.snap.step, f.concurrency)?.kept;
    }
    let mut snaps = Vec::with_capacity(read.len());
    let mut runs = Vec::with_capacity(read.len());
    let mut produced = std::collections::BTreeMap::new();
    let mut items = std::collections::BTreeMap::new();
    for r in read {
        if let Some(output) = r.output {
            produced.insert(r.snap.id.clone(), plan::Stored::text(output));
        }
        if let Some(item) = r.item {
            items.insert(r.snap.id.clone(), plan::Stored::text(item));
        }
        snaps.push(r.snap);
        runs.push(r.row);
    }
    let flow = if spec.is_flow() {
        Some(FlowSnapshot {
            spec: spec.clone(),
            input: plan::Stored::text(input.clone()),
            vars: serde_json::from_str(&variables)?,
            produced,
            items,
            new_ids: new_ids(spec.most_new_runs()),
            left_out,
            items_ahead,
        })
    } else {
        None
    };
    Ok(Some(Loaded {
        snap: Snapshot {
            execution_id,
            state: execution_state,
            retry: spec.retry,
            runs: snaps,
            flow,
        },
        started_at,
        task_id,
        task_version,
        input,
        spec,
        runs,
        current_step: current,
    }))
}

/// Ids for the task runs a plan may create: one UUID v7 and the ones
/// after it (a plan uses few of them; one clock read and one random draw
/// instead of one per id).
fn new_ids(n: usize) -> Vec<String> {
    let first = uuid::Uuid::now_v7().as_u128();
    (0..n as u128)
        .map(|i| uuid::Uuid::from_u128(first.wrapping_add(i)).to_string())
        .collect()
}

/// Adds the items that ended without succeeding (but `run`) to `read`:
/// a failure stops its step, a warning marks the flow.
fn read_unwell(
    c: &Connection,
    execution_id: &str,
    run: &str,
    read: &mut Vec<ReadRun>,
) -> StoreResult<()> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {RUN} FROM task_runs tr INDEXED BY task_runs_items_left \
         WHERE tr.execution_id = ? AND tr.item_index IS NOT NULL \
         AND tr.state != 'SUCCESS' AND tr.state IN ({UNWELL}) AND tr.id != ?"
    ))?;
    let mut rows = st.query([execution_id, run])?;
    while let Some(r) = rows.next()? {
        read.extend(read_run(r, 0)?);
    }
    drop(rows);
    read.sort_by_key(|r| r.rowid);
    Ok(())
}

/// What an item's end needs to know of its `for_each` step, in one read.
struct ItemsAround {
    /// Items started: the latest item's index and one (items start in
    /// order; a restart re-runs one in place).
    started: u32,
    /// Items waiting or running (the event's own included).
    live: u32,
    /// Items that ended but did not succeed (the event's own included).
    ended_unwell: u32,
    /// The step's kept items from `started` on (as many as may start), or
    /// `None` if none were kept (it started before they were).
    kept: Option<plan::ItemsAhead>,
}

fn items_around(
    c: &Connection,
    execution_id: &str,
    step: &str,
    concurrency: u32,
) -> StoreResult<ItemsAround> {
    // From the item before `started` (every item is kept), so that a step
    // with all its items started still says how many it has; as many as
    // may start: the places the items not ended leave, and the one ending.
    let rows = c
        .prepare_cached(
            "WITH s AS (SELECT COALESCE(MAX(item_index) + 1, 0) AS started FROM task_runs \
                 WHERE execution_id = ?1 AND step = ?2 AND item_index IS NOT NULL), \
             l AS (SELECT COALESCE(SUM(state IN ('CREATED', 'RUNNING', 'RETRYING')), 0) AS live, \
                 COUNT(*) AS ended FROM task_runs INDEXED BY task_runs_items_left \
                 WHERE execution_id = ?1 AND item_index IS NOT NULL AND state != 'SUCCESS') \
             SELECT s.started, l.live, f.idx, f.item, f.total, l.ended - l.live FROM s CROSS JOIN l \
             LEFT JOIN flow_items f ON f.execution_id = ?1 AND f.step = ?2 \
                 AND f.idx >= MAX(s.started, 1) - 1 \
             ORDER BY f.idx LIMIT (SELECT MAX(?3 - live, 0) + 2 FROM l)",
        )?
        .query_map(params![execution_id, step, concurrency], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let started = rows.first().map_or(0, |r| r.0 as u32);
    let live = rows.first().map_or(0, |r| r.1 as u32);
    let ended_unwell = rows.first().map_or(0, |r| r.5 as u32);
    let total = rows.iter().find_map(|r| r.4);
    let next = rows
        .into_iter()
        .filter_map(|(_, _, idx, item, _, _)| Some((idx? as u32, item?)))
        .filter(|(i, _)| *i >= started)
        .take(concurrency as usize)
        .map(|(i, item)| (i, plan::Stored::text(item)))
        .collect();
    Ok(ItemsAround {
        started,
        live,
        ended_unwell,
        kept: total.map(|t| plan::ItemsAhead {
            step: step.to_string(),
            total: t as u32,
            next,
        }),
    })
}

/// Plans `event` for the execution `key` names, reading only what the
/// event's task run needs (see [`load`]) unless the planner asks
/// for all; `adjust` adds to the snapshot what the event carries.
pub(super) fn load_and_plan(
    c: &Connection,
    key: Key<'_>,
    read: Read<'_>,
    adjust: impl Fn(&mut Loaded),
    event: &Event,
) -> StoreResult<Option<(Loaded, Plan)>> {
    let around = matches!(read, Read::Around { .. });
    let Some(mut loaded) = load(c, key, read)? else {
        return Ok(None);
    };
    adjust(&mut loaded);
    match plan::plan(&loaded.snap, event) {
        Ok(plan) => {
            #[cfg(test)]
            if around {
                // What was left out never changes a plan made without it.
                let mut whole = load(c, key, Read::Whole)?.expect("read just now");
                adjust(&mut whole);
                if let (Some(w), Some(l)) = (&mut whole.snap.flow, &loaded.snap.flow) {
                    w.new_ids = l.new_ids.clone();
                }
                // (Items rendered again are kept again: the same rows.)
                let kept = |mut p: Plan| {
                    p.items = None;
                    p
                };
                let planned = plan::plan(&whole.snap, event).map(kept);
                assert_eq!(planned, Ok(kept(plan.clone())), "{event:?}");
            }
            Ok(Some((loaded, plan)))
        }
        Err(Refusal::Incomplete) if around => {
            let Some(mut loaded) = load(c, key, Read::Whole)? else {
                return Ok(None);
            };
            adjust(&mut loaded);
            let plan = plan::plan(&loaded.snap, event)?;
            Ok(Some((loaded, plan)))
        }
        Err(e) => Err(e.into()),
    }
}

/// What applying a plan produced for the caller.
pub(super) struct Applied {
    pub plan: Plan,
    /// The id of the attempt the plan started, if it started one.
    pub attempt_id: Option<String>,
}

/// What the event carries beyond the plan: data to store with it.
#[derive(Default)]
pub(super) struct Extra<'a> {
    /// The lease of a claim.
    pub lease_until: Option<i64>,
    /// The report of a finished attempt.
    pub report: Option<&'a AttemptReport>,
}

/// Plans `event` for the loaded execution (read whole) and writes the plan.
pub(super) fn plan_and_apply(
    c: &Connection,
    clock: &dyn Clock,
    loaded: &Loaded,
    event: &Event,
    extra: Extra<'_>,
) -> StoreResult<Applied> {
    // Every refusal happens here, before the first write.
    let plan = plan::plan(&loaded.snap, event)?;
    apply(c, clock, loaded, plan, extra)
}

/// Writes `plan`, made for `loaded`.
pub(super) fn apply(
    c: &Connection,
    clock: &dyn Clock,
    loaded: &Loaded,
    plan: Plan,
    extra: Extra<'_>,
) -> StoreResult<Applied> {
    let id = &loaded.snap.execution_id;
    let ts = clock.now_rfc3339();
    let mut attempt_id = None;

    match &plan.attempt {
        Some(AttemptChange::Start {
            run,
            number,
            fence,
            worker,
        }) => {
            let aid = uuid::Uuid::now_v7().to_string();
            c.prepare_cached(
                "INSERT INTO attempts (id, task_run_id, execution_id, number, status, worker_id, fence, started_at) \
                 VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
            )?
            .execute(params![aid, run, id, number, worker, fence, ts])?;
            attempt_id = Some(aid);
        }
        Some(AttemptChange::Finish {
            run,
            number,
            status,
            error,
        }) => {
            // The guest's report, unless the planner decided how the
            // attempt ended (a lost host, a shutdown): then only its usage.
            let guest = extra.report.filter(|_| error.is_none());
            let error_text = match (guest, error) {
                (Some(r), _) => r.error.as_ref().map(serde_json::to_string).transpose()?,
                (None, planned) => planned.as_ref().map(serde_json::to_string).transpose()?,
            };
            let usage = extra.report.map(|r| r.usage).unwrap_or_default();
            let report = guest.map(|r| {
                json!({
                    "result": r.result, "outputs": r.outputs, "metrics": r.metrics, "media": r.media,
                    "warnings": r.warnings, "checkpoint": r.checkpoint,
                })
                .to_string()
            });
            c.prepare_cached(
                "UPDATE attempts SET status = ?, error = ?, usage = ?, report = ?, ended_at = ? \
                 WHERE task_run_id = ? AND number = ? AND status = 'running'",
            )?
            .execute(params![
                status.as_str(),
                error_text,
                serde_json::to_string(&usage)?,
                report,
                ts,
                run,
                number
            ])?;
            if let Some(r) = guest {
                write_report(c, id, run, *number, r, &ts, &loaded.spec)?;
            } else {
                // The planner's error is the execution's once it has ended.
                let error = error_text.filter(|_| plan.state.is_terminal());
                c.prepare_cached(
                    "UPDATE executions SET error = COALESCE(?, error), attempts = attempts + 1, \
                     fuel = fuel + ?, memory_peak = MAX(memory_peak, ?) WHERE id = ?",
                )?
                .execute(params![
                    error,
                    usage.fuel_consumed as i64,
                    usage.memory_peak_bytes as i64,
                    id
                ])?;
            }
        }
        None => {}
    }

    // What the finished attempt leaves on its task run (its checkpoint;
    // in a flow, what it produced), written with the run's move.
    let mut left = match (&plan.attempt, extra.report) {
        (
            Some(AttemptChange::Finish {
                run, error: None, ..
            }),
            Some(r),
        ) => {
            let succeeded = matches!(r.status, AttemptStatus::Success | AttemptStatus::Warning);
            let output = (loaded.spec.is_flow() && succeeded).then(|| produced(r).to_string());
            let checkpoint = r.checkpoint.as_ref().map(|cp| cp.to_string());
            Some((run.as_str(), output, checkpoint))
        }
        _ => None,
    };
    for ch in &plan.runs {
        let (output, checkpoint) = match left.take_if(|(run, ..)| *run == ch.run) {
            Some((_, output, checkpoint)) => (output, checkpoint),
            None => (None, None),
        };
        match &ch.lease {
            Lease::Take { worker, fence } => c
                .prepare_cached(
                    "UPDATE task_runs SET state = ?, attempts = ?, max_attempts = ?, not_before = ?, \
                     owner = ?, fence = ?, lease_until = ?, input = COALESCE(?, input) WHERE id = ?",
                )?
                .execute(params![
                    ch.to.as_str(),
                    ch.attempts,
                    ch.max_attempts,
                    ch.not_before,
                    worker,
                    fence,
                    extra.lease_until,
                    // The input rendered for the attempt this claim starts.
                    plan.input.as_ref().map(|v| v.to_string()),
                    ch.run
                ])?,
            Lease::Release => c
                .prepare_cached(
                    "UPDATE task_runs SET state = ?1, attempts = ?2, max_attempts = ?3, not_before = ?4, \
                     owner = NULL, lease_until = NULL, \
                     error = CASE WHEN ?1 = 'CREATED' THEN NULL ELSE error END, \
                     output = CASE WHEN ?1 = 'CREATED' THEN NULL ELSE COALESCE(?6, output) END, \
                     checkpoint = COALESCE(?7, checkpoint) WHERE id = ?5",
                )?
                .execute(params![
                    ch.to.as_str(),
                    ch.attempts,
                    ch.max_attempts,
                    ch.not_before,
                    ch.run,
                    output,
                    checkpoint
                ])?,
        };
    }

    if let Some((run, output, checkpoint)) = left {
        // The run did not move (no plan does that today): written alone.
        c.prepare_cached(
            "UPDATE task_runs SET output = COALESCE(?, output), checkpoint = COALESCE(?, checkpoint) \
             WHERE id = ?",
        )?
        .execute(params![output, checkpoint, run])?;
    }
    for new in &plan.new_runs {
        c.prepare_cached(
            "INSERT INTO task_runs (id, execution_id, task_id, step, state, max_attempts, queue, priority, \
             item_index, item, output) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![
            new.id,
            id,
            loaded.task_id,
            new.step,
            new.state.as_str(),
            new.max_attempts,
            loaded.spec.queue,
            loaded.spec.priority,
            new.item.as_ref().map(|(i, _)| *i),
            new.item.as_ref().map(|(_, v)| v.to_string()),
            new.output.as_ref().map(|v| v.to_string()),
        ])?;
    }
    if let Some((step, items)) = &plan.items {
        let mut insert = c.prepare_cached(
            "INSERT OR REPLACE INTO flow_items (execution_id, step, idx, item, total) \
             VALUES (?, ?, ?, ?, ?)",
        )?;
        for (i, item) in items.iter().enumerate() {
            insert.execute(params![
                id,
                step,
                i as i64,
                item.to_string(),
                items.len() as i64
            ])?;
        }
    }
    if let (Some(_), Some(AttemptChange::Start { run, .. })) = (&plan.input, &plan.attempt) {
        // A flow's step running now, for the grid.
        let step = loaded
            .snap
            .runs
            .iter()
            .find(|r| &r.id == run)
            .map(|r| r.step.as_str())
            .unwrap_or_default();
        let current = json!({
            "name": step,
            "description": loaded.spec.step(step).and_then(|s| s.description.clone()),
        });
        let current = current.to_string();
        // A for_each's items all show the same step: written once.
        if loaded.current_step.as_deref() != Some(current.as_str()) {
            c.prepare_cached("UPDATE executions SET current_step = ? WHERE id = ?")?
                .execute(params![current, id])?;
        }
    }
    if let Some((run, error)) = &plan.run_error {
        let error = serde_json::to_string(error)?;
        c.prepare_cached("UPDATE task_runs SET error = ? WHERE id = ?")?
            .execute(params![error, run])?;
        if plan.state.is_terminal() {
            c.prepare_cached("UPDATE executions SET error = ? WHERE id = ?")?
                .execute(params![error, id])?;
        }
    }
    if let Some(error) = plan
        .execution_error
        .as_ref()
        .filter(|_| plan.state.is_terminal())
    {
        c.prepare_cached("UPDATE executions SET error = ? WHERE id = ?")?
            .execute(params![serde_json::to_string(error)?, id])?;
    }
    if let Some(vars) = &plan.vars {
        c.prepare_cached("UPDATE executions SET variables = ? WHERE id = ?")?
            .execute(params![serde_json::to_string(vars)?, id])?;
    }
    if let Some(rows) = plan.dataset.as_ref().filter(|_| plan.state.is_terminal()) {
        let mut insert = c.prepare_cached(
            "INSERT INTO dataset_rows (task_id, execution_id, row_index, created_at, data) \
             VALUES (?, ?, ?, ?, ?)",
        )?;
        for (i, row) in rows.iter().enumerate() {
            insert.execute(params![
                loaded.task_id,
                id,
                i as i64,
                ts,
                serde_json::to_string(row)?
            ])?;
        }
    }
    if let Some(outputs) = &plan.outputs {
        c.prepare_cached("UPDATE executions SET outputs = ? WHERE id = ?")?
            .execute(params![serde_json::to_string(outputs)?, id])?;
    }

    if let Some(t) = plan.execution {
        use ExecutionState as E;
        if t.to.is_terminal() {
            if loaded.spec.has_for_each() {
                // A restart renders what it needs again.
                c.prepare_cached("DELETE FROM flow_items WHERE execution_id = ?")?
                    .execute([id])?;
            }
            let duration = loaded
                .started_at
                .as_deref()
                .and_then(parse_rfc3339_ms)
                .zip(parse_rfc3339_ms(&ts))
                .map(|(a, b)| b - a);
            c.prepare_cached(
                "UPDATE executions SET state = ?, ended_at = ?, duration_ms = ? WHERE id = ?",
            )?
            .execute(params![t.to.as_str(), ts, duration, id])?;
        } else if t.to == E::Running {
            c.prepare_cached(
                "UPDATE executions SET state = ?, started_at = COALESCE(started_at, ?) WHERE id = ?",
            )?
            .execute(params![t.to.as_str(), ts, id])?;
        } else if t.to == E::Restarted {
            c.prepare_cached(
                "UPDATE executions SET state = ?, ended_at = NULL, duration_ms = NULL, error = NULL WHERE id = ?",
            )?
            .execute(params![t.to.as_str(), id])?;
        } else {
            c.prepare_cached("UPDATE executions SET state = ? WHERE id = ?")?
                .execute(params![t.to.as_str(), id])?;
        }
    }

    for e in &plan.events {
        push_event(
            id,
            (&loaded.task_id, &loaded.spec.namespace),
            &ts,
            e.kind.as_str(),
            e.from,
            e.to,
            &e.detail,
        );
    }
    Ok(Applied { plan, attempt_id })
}

/// What a finished attempt produced: media records, the task run's
/// checkpoint, the execution's outputs, result and error.
fn write_report(
    c: &Connection,
    execution_id: &str,
    run: &str,
    number: u32,
    r: &AttemptReport,
    ts: &str,
    spec: &crate::model::task::TaskSpec,
) -> StoreResult<()> {
    if !r.media.is_empty() {
        let attempt_id: String = c
            .prepare_cached("SELECT id FROM attempts WHERE task_run_id = ? AND number = ?")?
            .query_row(params![run, number], |row| row.get(0))?;
        for m in &r.media {
            c.prepare_cached(
                "INSERT INTO media (id, execution_id, attempt_id, name, content_type, size, sha256, url, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![m.id, execution_id, attempt_id, m.name, m.content_type, m.size as i64, m.sha256, m.url, ts])?;
        }
    }
    let succeeded = matches!(r.status, AttemptStatus::Success | AttemptStatus::Warning);
    // A one-action task's outputs and result are its last attempt's. A
    // flow's are its last successful step's, or the task's own `outputs`
    // rendered at its end: a failed attempt leaves them.
    let (outputs, result) = if !spec.is_flow() {
        (Some(serde_json::to_string(&r.outputs)?), true)
    } else {
        let outputs = (succeeded && spec.outputs.is_none())
            .then(|| serde_json::to_string(&r.outputs))
            .transpose()?;
        (outputs, succeeded)
    };
    // With what the attempt used: analytics read these per execution.
    c.prepare_cached(
        "UPDATE executions SET outputs = COALESCE(?, outputs), \
         result = CASE WHEN ? THEN ? ELSE result END, error = ?, attempts = attempts + 1, \
         fuel = fuel + ?, memory_peak = MAX(memory_peak, ?) WHERE id = ?",
    )?
    .execute(params![
        outputs,
        result,
        r.result.as_ref().map(|v| v.to_string()),
        r.error.as_ref().map(serde_json::to_string).transpose()?,
        r.usage.fuel_consumed as i64,
        r.usage.memory_peak_bytes as i64,
        execution_id
    ])?;
    Ok(())
}

/// What a successful attempt produced, as later flow steps read it.
pub(super) fn produced(r: &AttemptReport) -> serde_json::Value {
    json!({ "outputs": r.outputs, "result": r.result })
}

/// The plan's timers as the runtime needs them.
pub(super) fn outcome(loaded: &Loaded, plan: &Plan) -> PlanOutcome {
    let mut out = PlanOutcome {
        state: plan.state,
        runnable: Vec::new(),
        interrupt: Vec::new(),
    };
    for t in &plan.timers {
        match t {
            Timer::Runnable { run, not_before } => {
                let at = loaded.snap.runs.iter().position(|r| &r.id == run);
                let (priority, queue) = match at {
                    Some(i) => (loaded.runs[i].priority, loaded.runs[i].queue.clone()),
                    // The flow's next step, created by this plan.
                    None if plan.new_runs.iter().any(|n| &n.id == run) => {
                        (loaded.spec.priority, loaded.spec.queue.clone())
                    }
                    None => continue,
                };
                out.runnable.push(Runnable {
                    task_run_id: run.clone(),
                    execution_id: loaded.snap.execution_id.clone(),
                    task_id: loaded.task_id.clone(),
                    priority,
                    queue,
                    not_before: *not_before,
                });
            }
            Timer::Interrupt { run } => out.interrupt.push(run.clone()),
        }
    }
    out
}

/// A user's control request, planned and applied.
pub(super) fn control(
    c: &Connection,
    clock: &dyn Clock,
    id: &str,
    control: Control,
    by: Option<&str>,
) -> StoreResult<PlanOutcome> {
    let loaded = load(c, Key::Execution(id), Read::Whole)?
        .ok_or_else(|| StoreError::NotFound(format!("no execution {id}")))?;
    let (event, action) = match control {
        Control::Cancel => (Event::Cancel, "cancel"),
        Control::Pause => (Event::Pause, "pause"),
        Control::Resume => (Event::Resume, "resume"),
        Control::Restart => (Event::Restart, "restart"),
    };
    let applied = plan_and_apply(c, clock, &loaded, &event, Extra::default())?;
    // Who asked, in the same commit as what it changed (the audit trail in
    // the execution's own events); a refused request wrote nothing.
    push_event(
        id,
        (&loaded.task_id, &loaded.spec.namespace),
        &clock.now_rfc3339(),
        "control",
        None,
        None,
        &json!({"action": action, "token_id": by}),
    );
    Ok(outcome(&loaded, &applied.plan))
}

/// A claim: the next attempt of a task run starts on `worker`.
pub(super) fn start_attempt(
    c: &Connection,
    clock: &dyn Clock,
    run_id: &str,
    worker: &str,
    lease_until: i64,
) -> StoreResult<Claimed> {
    let event = Event::Claim {
        run: run_id.to_string(),
        worker: worker.to_string(),
        now_ms: clock.now_ms(),
    };
    let (loaded, plan) = load_and_plan(
        c,
        Key::TaskRun(run_id),
        Read::Around {
            run: run_id,
            starts: false,
        },
        |_| {},
        &event,
    )?
    .ok_or_else(|| StoreError::NotFound(format!("no task run {run_id}")))?;
    let applied = apply(
        c,
        clock,
        &loaded,
        plan,
        Extra {
            lease_until: Some(lease_until),
            report: None,
        },
    )?;
    let Some(AttemptChange::Start { number, fence, .. }) = applied.plan.attempt else {
        // A flow step skipped, or failed before an attempt: what follows.
        return Ok(Claimed::Settled(outcome(&loaded, &applied.plan)));
    };
    let i = loaded
        .snap
        .runs
        .iter()
        .position(|r| r.id == run_id)
        .expect("the planner found this run");
    let input = match applied.plan.input {
        Some(rendered) => rendered,
        None => serde_json::from_str(&loaded.input)?,
    };
    Ok(Claimed::Started(StartedAttempt {
        attempt_id: applied.attempt_id.expect("a started attempt has an id"),
        number,
        fence,
        max_attempts: loaded.snap.runs[i].max_attempts,
        checkpoint: loaded.runs[i].checkpoint.clone(),
        input,
        task_version: loaded.task_version,
        spec: loaded.spec.clone(),
        step: loaded.runs[i].step.clone(),
    }))
}

/// An attempt's end, reported by the worker that ran it.
pub(super) fn finish_attempt(
    c: &Connection,
    clock: &dyn Clock,
    f: &FinishAttempt,
) -> StoreResult<PlanOutcome> {
    // A flow plans what follows with what this attempt produced.
    let adjust = |loaded: &mut Loaded| {
        if let Some(flow) = &mut loaded.snap.flow
            && matches!(
                f.report.status,
                AttemptStatus::Success | AttemptStatus::Warning
            )
        {
            flow.produced
                .insert(f.task_run_id.clone(), produced(&f.report).into());
        }
    };
    let event = if f.shutdown {
        Event::Shutdown {
            run: f.task_run_id.clone(),
            worker: f.worker.clone(),
            fence: f.fence,
            now_ms: clock.now_ms(),
        }
    } else {
        Event::AttemptFinished {
            run: f.task_run_id.clone(),
            worker: f.worker.clone(),
            fence: f.fence,
            status: f.report.status,
            error: f.report.error_kind(),
            now_ms: clock.now_ms(),
            jitter: f.jitter,
        }
    };
    let key = Key::Execution(&f.execution_id);
    let (loaded, plan) = load_and_plan(
        c,
        key,
        Read::Around {
            run: &f.task_run_id,
            starts: true,
        },
        adjust,
        &event,
    )?
    .ok_or_else(|| StoreError::NotFound(format!("no execution {}", f.execution_id)))?;
    let applied = apply(
        c,
        clock,
        &loaded,
        plan,
        Extra {
            lease_until: None,
            report: Some(&f.report),
        },
    )?;
    // Each outbound request is an event of the execution, committed with
    // the attempt (at most MAX_HTTP_EVENTS; the metrics count them all).
    let now = clock.now_rfc3339();
    for call in f.report.http.iter().take(MAX_HTTP_EVENTS) {
        push_event(
            &f.execution_id,
            (&loaded.task_id, &loaded.spec.namespace),
            &now,
            "http.request",
            None,
            None,
            &json!({
                "task_run_id": f.task_run_id, "attempt": f.report.attempt,
                "method": call.method, "host": call.host, "status": call.status,
                "bytes": call.bytes, "ms": (call.ms * 10.0).round() / 10.0,
            }),
        );
    }
    Ok(outcome(&loaded, &applied.plan))
}

/// Outbound requests recorded as events per attempt.
pub(crate) const MAX_HTTP_EVENTS: usize = 1000;

/// Closes the attempts a dead process left running: each task run's host
/// is lost, and the planner retries it under its policy (or ends a killing
/// execution).
pub(super) fn recover(
    c: &Connection,
    clock: &dyn Clock,
    jitter: &mut dyn FnMut() -> f64,
) -> StoreResult<Recovery> {
    let running: Vec<(String, String)> = c
        .prepare_cached(
            "SELECT id, execution_id FROM task_runs WHERE state = 'RUNNING' ORDER BY id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut rec = Recovery::default();
    for (run, execution_id) in running {
        let event = Event::HostLost {
            run: run.clone(),
            now_ms: clock.now_ms(),
            jitter: jitter(),
        };
        let key = Key::Execution(&execution_id);
        let Some((loaded, plan)) = load_and_plan(
            c,
            key,
            Read::Around {
                run: &run,
                starts: true,
            },
            |_| {},
            &event,
        )?
        else {
            continue;
        };
        let applied = apply(c, clock, &loaded, plan, Extra::default())?;
        rec.crashed_attempts += 1;
        if applied.plan.state == ExecutionState::Killed {
            rec.killed_executions += 1;
        }
    }
    Ok(rec)
}
