//! How the client commands show times and durations: RFC 3339 stamps as
//! the server sends them, shortened for tables and log lines, and
//! milliseconds as `850ms`, `12.3s`, `4m05s`.

use std::time::SystemTime;

/// An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` (UTC as sent).
pub fn short_time(ts: &str) -> String {
    match (ts.get(..10), ts.get(10..11), ts.get(11..19)) {
        (Some(date), Some("T"), Some(time)) => format!("{date} {time}"),
        _ => ts.to_string(),
    }
}

/// An RFC 3339 time's time of day to the millisecond (`HH:MM:SS.mmm`).
pub fn time_of_day(ts: &str) -> String {
    let Some(rest) = ts.get(11..) else {
        return ts.to_string();
    };
    let end = rest.find(['Z', '+', '-']).unwrap_or(rest.len());
    let time = &rest[..end];
    match time.split_once('.') {
        Some((hms, frac)) => format!("{hms}.{}", frac.get(..3).unwrap_or(frac)),
        None => time.to_string(),
    }
}

/// An RFC 3339 time as a clock reading, if it is one.
pub fn parse_time(ts: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(ts).ok()
}

/// Milliseconds as `850ms`, `12.3s`, `4m05s` or `2h03m`.
pub fn duration_display(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "-".into();
    }
    if ms < 1_000.0 {
        return format!("{ms:.0}ms");
    }
    if ms < 60_000.0 {
        return format!("{:.1}s", ms / 1_000.0);
    }
    let secs = (ms / 1_000.0) as u64;
    if secs < 3_600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3_600, secs % 3_600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_are_short() {
        assert_eq!(
            short_time("2026-03-01T12:00:03.123456Z"),
            "2026-03-01 12:00:03"
        );
        assert_eq!(short_time("soon"), "soon");
        assert_eq!(time_of_day("2026-03-01T12:00:03.123456Z"), "12:00:03.123");
        assert_eq!(time_of_day("2026-03-01T12:00:03Z"), "12:00:03");
        assert_eq!(duration_display(12.4), "12ms");
        assert_eq!(duration_display(1_234.0), "1.2s");
        assert_eq!(duration_display(245_000.0), "4m05s");
        assert_eq!(duration_display(7_380_000.0), "2h03m");
        assert_eq!(duration_display(-1.0), "-");
        assert!(parse_time("2026-03-01T12:00:03Z").is_some());
        assert!(parse_time("soon").is_none());
    }
}
