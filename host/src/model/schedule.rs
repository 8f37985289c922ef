//! Schedules: a task's `schedule: {cron, timezone, input, catch_up}` and
//! which ticks are due when the scheduler wakes.
//!
//! A tick fires at most once, ever: its execution carries the idempotency
//! key [`tick_key`], so a tick fired again after a crash (before the
//! scheduler could record it) returns the execution it already made. The
//! scheduler records the last tick it handled; ticks after it that passed
//! while no scheduler ran (downtime, a pause) are *missed* and follow
//! `catch_up`. Pure: the time comes in.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How late a tick from before the scheduler started may be and still
/// count as on time (not missed): the start's own latency, not downtime.
/// Ticks after the start are never missed, however busy the host.
pub const ON_TIME_MS: i64 = 2_000;
/// Most missed ticks `catch_up: all` fires at once (the newest ones).
pub const MAX_CATCH_UP: usize = 1_000;

/// A task's schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Five fields (minute hour day month weekday), or six with seconds
    /// first: `0 2 * * *`, `*/10 * * * * *`.
    #[schema(example = "0 2 * * *")]
    pub cron: String,
    /// An IANA time zone the cron is read in.
    #[serde(default = "utc")]
    #[schema(example = "Europe/Paris", default = "UTC")]
    pub timezone: String,
    /// The input of each scheduled execution (the task's own when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// What to do with ticks missed while no scheduler ran.
    #[serde(default)]
    pub catch_up: CatchUp,
}

fn utc() -> String {
    "UTC".into()
}

/// Missed ticks: none of them, only the latest, or every one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    #[default]
    None,
    Latest,
    All,
}

/// A schedule as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleState {
    pub paused: bool,
    /// The next tick (RFC 3339), unless paused.
    pub next_fire_at: Option<String>,
    /// The last tick handled (fired, or skipped as missed).
    pub last_tick_at: Option<String>,
}

/// A schedule, parsed.
pub struct Parsed {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl ScheduleSpec {
    /// The cron and time zone, parsed, or why not.
    pub fn parse(&self) -> Result<Parsed, String> {
        let cron = croner::Cron::from_str(self.cron.trim())
            .map_err(|e| format!("schedule.cron {:?}: {e}", self.cron))?;
        let tz = chrono_tz::Tz::from_str(self.timezone.trim()).map_err(|_| {
            format!(
                "schedule.timezone {:?} is not an IANA time zone (e.g. Europe/Paris, UTC)",
                self.timezone
            )
        })?;
        Ok(Parsed { cron, tz })
    }
}

impl Parsed {
    /// The first tick strictly after `after_ms` (unix ms), if any.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = self.tz.from_utc_datetime(&utc_ms(after_ms)?.naive_utc());
        self.cron
            .find_next_occurrence(&after, false)
            .ok()
            .map(|t| t.with_timezone(&Utc).timestamp_millis())
    }

    /// The last tick at or before `at_ms` (`inclusive`), or strictly before.
    fn previous(&self, at_ms: i64, inclusive: bool) -> Option<i64> {
        let at = self.tz.from_utc_datetime(&utc_ms(at_ms)?.naive_utc());
        self.cron
            .find_previous_occurrence(&at, inclusive)
            .ok()
            .map(|t| t.with_timezone(&Utc).timestamp_millis())
    }

    /// The ticks to fire at `now_ms` when the last one handled was
    /// `last_ms` and the scheduler has run since `awake_ms`, oldest first:
    /// those on time, and the missed ones (passed while no scheduler ran)
    /// as `catch_up` says.
    pub fn due(&self, last_ms: i64, now_ms: i64, awake_ms: i64, catch_up: CatchUp) -> Vec<i64> {
        // Walked back from now, so that a long downtime costs no more than
        // the ticks that can fire: at most MAX_CATCH_UP missed ones, and
        // the few on time (a cron ticks at most once a second).
        let most = MAX_CATCH_UP + (ON_TIME_MS / 1000) as usize + 1;
        let mut back = Vec::new();
        let mut tick = self.previous(now_ms, true);
        while let Some(t) = tick {
            if t <= last_ms || back.len() == most {
                break;
            }
            back.push(t);
            tick = self.previous(t, false);
        }
        back.reverse();
        let (missed, on_time): (Vec<i64>, Vec<i64>) =
            back.into_iter().partition(|t| *t < awake_ms - ON_TIME_MS);
        let skip = missed.len().saturating_sub(MAX_CATCH_UP);
        let mut fire: Vec<i64> = match catch_up {
            CatchUp::None => Vec::new(),
            CatchUp::Latest if on_time.is_empty() => missed.last().copied().into_iter().collect(),
            CatchUp::Latest => Vec::new(),
            CatchUp::All => missed[skip..].to_vec(),
        };
        fire.extend(on_time);
        fire
    }
}

fn utc_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
}

/// The idempotency key of a tick's execution: the same tick never makes
/// two executions of a task.
pub fn tick_key(tick_ms: i64) -> String {
    format!("schedule:{tick_ms}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cron: &str, tz: &str) -> Parsed {
        ScheduleSpec {
            cron: cron.into(),
            timezone: tz.into(),
            input: None,
            catch_up: CatchUp::None,
        }
        .parse()
        .unwrap()
    }

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn a_daily_cron_is_read_in_its_time_zone() {
        let s = spec("0 2 * * *", "Europe/Paris");
        // 2 AM in Paris is 01:00 UTC in winter.
        assert_eq!(
            s.next_after(ms("2026-12-01T12:00:00Z")),
            Some(ms("2026-12-02T01:00:00Z"))
        );
        // and 00:00 UTC in summer.
        assert_eq!(
            s.next_after(ms("2026-07-01T12:00:00Z")),
            Some(ms("2026-07-02T00:00:00Z"))
        );
    }

    #[test]
    fn seconds_are_optional() {
        let s = spec("*/10 * * * * *", "UTC");
        assert_eq!(
            s.next_after(ms("2026-12-01T00:00:01Z")),
            Some(ms("2026-12-01T00:00:10Z"))
        );
        let every_second = spec("* * * * * *", "UTC");
        let t = ms("2026-12-01T00:00:00Z");
        assert_eq!(every_second.next_after(t), Some(t + 1000));
    }

    #[test]
    fn bad_crons_and_zones_are_refused() {
        for (cron, tz) in [
            ("61 * * * *", "UTC"),
            ("nonsense", "UTC"),
            ("* * * * *", "Mars/Base"),
        ] {
            let s = ScheduleSpec {
                cron: cron.into(),
                timezone: tz.into(),
                input: None,
                catch_up: CatchUp::None,
            };
            assert!(s.parse().is_err(), "{cron} {tz}");
        }
    }

    #[test]
    fn on_time_ticks_fire_and_missed_ones_follow_catch_up() {
        let s = spec("* * * * *", "UTC"); // every minute
        let last = ms("2026-12-01T10:00:00Z");
        // Down for 5 minutes; woken 1 s after the 10:05 tick.
        let now = ms("2026-12-01T10:05:01Z");
        let on_time = ms("2026-12-01T10:05:00Z");
        assert_eq!(s.due(last, now, now, CatchUp::None), vec![on_time]);
        assert_eq!(s.due(last, now, now, CatchUp::Latest), vec![on_time]);
        let all = s.due(last, now, now, CatchUp::All);
        assert_eq!(all.len(), 5);
        assert_eq!(all[0], ms("2026-12-01T10:01:00Z"));
        assert_eq!(*all.last().unwrap(), on_time);
        // Woken between ticks after downtime: latest fires the newest missed.
        let between = ms("2026-12-01T10:05:30Z");
        assert!(s.due(last, between, between, CatchUp::None).is_empty());
        assert_eq!(
            s.due(last, between, between, CatchUp::Latest),
            vec![on_time]
        );
        assert_eq!(s.due(last, between, between, CatchUp::All).len(), 5);
        // Nothing is due twice.
        assert!(s.due(on_time, between, between, CatchUp::All).is_empty());
    }

    #[test]
    fn a_late_tick_after_the_scheduler_started_is_never_missed() {
        let s = spec("* * * * *", "UTC");
        let awake = ms("2026-12-01T10:00:00Z");
        // The host was busy: the 10:01 tick is handled 30 s late.
        let now = ms("2026-12-01T10:01:30Z");
        assert_eq!(
            s.due(awake, now, awake, CatchUp::None),
            vec![ms("2026-12-01T10:01:00Z")]
        );
    }

    #[test]
    fn catching_up_is_bounded() {
        let s = spec("* * * * * *", "UTC");
        let last = ms("2026-12-01T00:00:00Z");
        let now = last + 3_600_000;
        let all = s.due(last, now, now, CatchUp::All);
        assert_eq!(
            all.len(),
            MAX_CATCH_UP + 3,
            "the newest missed plus the on-time ones"
        );
        assert_eq!(*all.last().unwrap(), now);
    }
}
