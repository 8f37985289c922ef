//! The domain model shared by store, runtime, sandbox and API: tasks,
//! executions, task runs, attempts, attempt reports, events, the state
//! machines, the transition planner, the retry rule and the clock.
//!
//! The leaf: it depends on nothing else of Ward, so every layer can use it
//! without pointing back. Nothing here does I/O.

pub mod analytics;
pub mod auth;
pub mod clock;
pub mod dataset;
pub mod execution;
pub mod flow;
pub mod limits;
pub mod net;
pub mod plan;
pub mod report;
pub mod retry;
pub mod schedule;
pub mod schema;
pub mod state;
pub mod task;
pub mod webhook;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, as RFC 3339 with microseconds (sortable as text).
pub fn now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// An RFC 3339 time a caller wrote (`T`, `t` or a space between date and
/// time; `Z`, `z` or a numeric offset; any fraction) as the same instant in
/// the form [`now`] writes (UTC, microseconds, fixed width), so that stored
/// times compare with it correctly as text.
///
/// Rounded up to the microsecond, which keeps both `stored >= t` and
/// `stored < t` exact for stored microsecond times, and clamped to the
/// years 1970-9999 that stored times lie in.
pub fn parse_instant(text: &str) -> Result<String, String> {
    const LAST_MICRO: i128 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
    let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| e.to_string())?;
    let micros = i128::from(t.timestamp()) * 1_000_000
        + i128::from(t.timestamp_subsec_nanos().div_ceil(1_000));
    let micros = micros.clamp(0, LAST_MICRO) as u64;
    let instant = UNIX_EPOCH + Duration::from_micros(micros);
    Ok(humantime::format_rfc3339_micros(instant).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_in_any_rfc3339_spelling_become_the_stored_form() {
        let same = [
            "2026-11-25T12:04:20Z",
            "2026-11-25t12:04:20z",
            "2026-11-25 12:04:20Z",
            "2026-11-25T13:04:20+01:00",
            "2026-11-25T07:34:20-04:30",
            "2026-11-25T12:04:20.000000000Z",
        ];
        for text in same {
            assert_eq!(
                parse_instant(text).as_deref(),
                Ok("2026-11-25T12:04:20.000000Z"),
                "{text}"
            );
        }
        assert_eq!(
            parse_instant("2026-11-25T12:04:14.5+00:00").unwrap(),
            "2026-11-25T12:04:14.500000Z"
        );
        for bad in [
            "2026-11-25",
            "12:04:20Z",
            "2026-11-25T12:04:20",
            "yesterday",
            "",
        ] {
            assert!(parse_instant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_parsed_instant_compares_with_stored_times_as_the_instants_do() {
        let stored = "2026-11-25T12:04:14.123456Z";
        // A fraction finer than stored times rounds up: 14.1234561 is after
        // the stored time, so `stored >= since` must be false.
        assert!(
            stored
                < parse_instant("2026-11-25T12:04:14.1234561Z")
                    .unwrap()
                    .as_str()
        );
        assert!(
            stored
                >= parse_instant("2026-11-25T12:04:14.123456Z")
                    .unwrap()
                    .as_str()
        );
        assert!(stored < parse_instant("2026-11-25 12:04:20Z").unwrap().as_str());
        assert!(stored >= parse_instant("2026-11-25T13:04:14+01:00").unwrap().as_str());
        assert!(now() > parse_instant("1969-12-31T23:00:00-02:00").unwrap());
        assert_eq!(
            parse_instant("1900-01-01T00:00:00Z").unwrap(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            parse_instant("9999-12-31T23:59:59-05:00").unwrap(),
            "9999-12-31T23:59:59.999999Z"
        );
    }
}
