//! Time, injected: the runtime and the store ask a [`Clock`] instead of the
//! system, so that tests can move time on instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of "now".
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;

    /// Now as RFC 3339 UTC with microseconds (fixed width: sortable as text).
    fn now_rfc3339(&self) -> String {
        rfc3339_micros(self.now_ms() * 1000)
    }
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    fn now_rfc3339(&self) -> String {
        humantime::format_rfc3339_micros(SystemTime::now()).to_string()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    pub fn starting_at(ms: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            ms: AtomicI64::new(ms),
        })
    }

    pub fn advance(&self, by: Duration) {
        self.ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// The system clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// Unix microseconds as RFC 3339 UTC with six fractional digits.
pub fn rfc3339_micros(us: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

/// An RFC 3339 time as unix milliseconds (fractional).
pub fn parse_rfc3339_ms(s: &str) -> Option<f64> {
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::starting_at(1_764_000_000_000);
        assert_eq!(c.now_ms(), 1_764_000_000_000);
        assert_eq!(c.now_rfc3339(), "2025-11-24T16:00:00.000000Z");
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now_ms(), 1_764_000_001_500);
        assert_eq!(
            parse_rfc3339_ms(&c.now_rfc3339()),
            Some(1_764_000_001_500.0)
        );
    }
}
