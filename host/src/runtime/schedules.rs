//! The scheduler: fires each scheduled task's ticks as executions (trigger
//! `schedule`, `scheduled_at` the tick), and pauses and resumes schedules.
//!
//! It sleeps until the earliest next tick of any schedule (or a change of
//! tasks or schedules), then for each task fires what `model::schedule`
//! says is due since the last tick it handled, and records that tick. A
//! tick's execution carries the tick as its idempotency key, so a tick
//! fired again after a crash (fired, not yet recorded) makes no second
//! execution: each tick fires exactly once across restarts. A new schedule
//! starts from the moment it is first seen; a resumed one from its resume.

use std::sync::Arc;
use std::time::Duration;

use super::service::{Service, ServiceError, ServiceResult, StartRequest};
use crate::model::clock::rfc3339_micros;
use crate::model::execution::Trigger;
use crate::model::schedule::{ScheduleState, tick_key};
use crate::model::task::{Task, TaskRef};
use crate::store::ScheduleRow;

/// Longest sleep between two looks at the schedules (a clock that jumps
/// is noticed by then).
const MAX_SLEEP: Duration = Duration::from_secs(30);

impl Service {
    /// Runs until shutdown.
    pub(super) async fn scheduler(self: Arc<Self>) {
        // Ticks before this are missed (downtime); later ones are only late.
        let awake = self.clock.now_ms();
        let mut failures = 0u32;
        loop {
            let next = match self.fire_due_ticks(awake).await {
                Ok(Pass {
                    next,
                    failed: false,
                }) => {
                    failures = 0;
                    next
                }
                Ok(Pass { failed: true, .. }) | Err(_) => {
                    // Back off, 1 s doubling to 30 s, instead of spinning.
                    failures = failures.saturating_add(1);
                    let wait = 1_000i64 << failures.min(5).saturating_sub(1);
                    Some(self.clock.now_ms() + wait.min(MAX_SLEEP.as_millis() as i64))
                }
            };
            let sleep = next
                .map(|at| Duration::from_millis((at - self.clock.now_ms()).max(0) as u64))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.schedules_changed.notified() => {}
                _ = self.closing.cancelled() => return,
            }
            if !self.accepting.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
        }
    }

    /// One pass: fires every due tick; returns the earliest next tick, and
    /// whether a tick could not fire (it is tried again after a backoff).
    async fn fire_due_ticks(&self, awake: i64) -> ServiceResult<Pass> {
        let rows = self.store.schedules().await?;
        let now = self.clock.now_ms();
        let mut pass = Pass {
            next: None,
            failed: false,
        };
        for task in self.store.tasks().await? {
            let Some(schedule) = &task.spec.schedule else {
                continue;
            };
            let Ok(parsed) = schedule.parse() else {
                continue; // refused at create; an older build's spec
            };
            let Some(row) = rows.get(&task.id).copied() else {
                // First seen: ticks count from now.
                self.store.record_tick(&task.id, now).await?;
                pass.next = min(pass.next, parsed.next_after(now));
                continue;
            };
            if row.paused {
                continue;
            }
            let mut last = row.last_tick_ms;
            let mut failed = false;
            for tick in parsed.due(row.last_tick_ms, now, awake, schedule.catch_up) {
                match self.fire(&task, tick).await {
                    Ok(()) => {}
                    // This tick can never fire (say its input fails the
                    // task's input_schema): skipped, and said.
                    Err(ServiceError::Invalid { message, problems }) => {
                        tracing::warn!(task = %task.id, tick, %message, ?problems, "scheduler: a tick was refused and skipped");
                    }
                    Err(e) => {
                        tracing::warn!(task = %task.id, tick, error = %e, "scheduler: a tick did not fire; it is tried again");
                        failed = true;
                        break;
                    }
                }
                last = tick;
            }
            // Missed ticks that were not to fire are handled too.
            if !failed {
                last = last.max(now);
            }
            pass.failed |= failed;
            if last != row.last_tick_ms {
                // Never touches `paused`: a pause that raced this pass holds.
                self.store.record_tick(&task.id, last).await?;
            }
            pass.next = min(pass.next, parsed.next_after(last));
        }
        Ok(pass)
    }

    async fn fire(&self, task: &Task, tick: i64) -> ServiceResult<()> {
        let schedule = task.spec.schedule.as_ref().expect("a scheduled task");
        let request = StartRequest {
            input: schedule.input.clone(),
            trigger: Trigger::Schedule,
            idempotency_key: Some(tick_key(tick)),
            scheduled_at: Some(rfc3339_micros(tick * 1000)),
            ..Default::default()
        };
        let (exec, created) = self
            .start_execution(&TaskRef::Id(task.id.clone()), request)
            .await?;
        if created {
            tracing::debug!(task = %task.id, execution = %exec.id, tick, "scheduled execution started");
        }
        Ok(())
    }

    /// Pauses or resumes a task's schedule; a resumed schedule fires from
    /// now on (ticks passed while paused are not caught up).
    pub async fn pause_schedule(&self, task: &TaskRef, paused: bool) -> ServiceResult<Task> {
        let mut task = self
            .task(task)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no {task}")))?;
        if task.spec.schedule.is_none() {
            return Err(ServiceError::Conflict(format!(
                "task {} has no schedule",
                task.spec.name
            )));
        }
        let row = ScheduleRow {
            last_tick_ms: self.clock.now_ms(),
            paused,
        };
        let current = self.store.schedule(&task.id).await?;
        let row = match current {
            // Pausing keeps the last tick; resuming starts from now.
            Some(c) if paused => ScheduleRow {
                last_tick_ms: c.last_tick_ms,
                paused,
            },
            _ => row,
        };
        self.store.set_schedule(&task.id, row).await?;
        self.schedules_changed.notify_one();
        task.schedule_state = self.schedule_state(&task).await?;
        Ok(task)
    }

    /// Where `task`'s schedule stands (none without a schedule).
    pub async fn schedule_state(&self, task: &Task) -> ServiceResult<Option<ScheduleState>> {
        let Some(schedule) = &task.spec.schedule else {
            return Ok(None);
        };
        let row = self.store.schedule(&task.id).await?;
        let paused = row.is_some_and(|r| r.paused);
        let from = row.map_or(self.clock.now_ms(), |r| r.last_tick_ms);
        let next = match schedule.parse() {
            Ok(p) if !paused => p.next_after(from.max(self.clock.now_ms() - 1)),
            _ => None,
        };
        Ok(Some(ScheduleState {
            paused,
            next_fire_at: next.map(|t| rfc3339_micros(t * 1000)),
            last_tick_at: row.map(|r| rfc3339_micros(r.last_tick_ms * 1000)),
        }))
    }
}

/// What a pass of the scheduler found.
struct Pass {
    next: Option<i64>,
    failed: bool,
}

fn min(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
