//! The retry rule: which failures another attempt may fix, and how long to
//! wait before it. Pure: the caller supplies the random jitter, so the
//! planner that uses this stays deterministic and testable.

use super::report::ErrorKind;
use super::task::RetryPolicy;

/// Whether a task run whose attempt failed with `kind` may get another
/// attempt: the action asked for one (`action_retryable`), or the failure
/// may be passing (a trap, a timeout, a host that died). The action's own
/// verdicts (`action_fatal`, `invalid_input`), a result that is not JSON, a
/// component that does not load and a cancellation are final; so are fuel,
/// memory and stack exhaustion, which the same input would hit again.
pub fn is_retryable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ActionRetryable | ErrorKind::Trap | ErrorKind::Timeout | ErrorKind::HostCrash
    )
}

/// The wait in milliseconds before attempt `failed_attempt + 1`:
/// `initial × multiplier^(n-1)`, capped at `max_backoff`, then moved by
/// `jitter_unit × jitter` of itself. `jitter_unit` is a random number in
/// `[-1, 1]` (clamped), drawn by the caller.
pub fn backoff_ms(policy: &RetryPolicy, failed_attempt: u32, jitter_unit: f64) -> i64 {
    let exp = failed_attempt.saturating_sub(1).min(64) as i32;
    let base = policy.initial_backoff.as_secs_f64() * policy.multiplier.powi(exp);
    let capped = base.min(policy.max_backoff.as_secs_f64());
    let unit = if jitter_unit.is_finite() {
        jitter_unit.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let secs = (capped * (1.0 + unit * policy.jitter.clamp(0.0, 1.0))).max(0.0);
    (secs * 1000.0).round() as i64
}

/// A jitter unit for [`backoff_ms`], uniformly in `[-1, 1]`.
pub fn random_jitter() -> f64 {
    use rand::Rng;
    rand::rng().random_range(-1.0..=1.0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(1),
            jitter,
        }
    }

    #[test]
    fn the_actions_verdict_is_final() {
        assert!(is_retryable(ErrorKind::ActionRetryable));
        assert!(is_retryable(ErrorKind::Trap));
        assert!(is_retryable(ErrorKind::Timeout));
        for k in [
            ErrorKind::ActionFatal,
            ErrorKind::InvalidInput,
            ErrorKind::InvalidResult,
            ErrorKind::LoadFailed,
            ErrorKind::Cancelled,
            ErrorKind::FuelExhausted,
        ] {
            assert!(!is_retryable(k), "{k}");
        }
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let p = policy(0.0);
        assert_eq!(backoff_ms(&p, 1, 0.7), 100);
        assert_eq!(backoff_ms(&p, 2, 0.0), 200);
        assert_eq!(backoff_ms(&p, 3, 0.0), 400);
        assert_eq!(backoff_ms(&p, 10, 0.0), 1000);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = policy(0.5);
        assert_eq!(backoff_ms(&p, 2, -1.0), 100);
        assert_eq!(backoff_ms(&p, 2, 1.0), 300);
        assert_eq!(backoff_ms(&p, 2, 7.0), 300);
        assert_eq!(backoff_ms(&p, 2, f64::NAN), 200);
        for _ in 0..200 {
            let d = backoff_ms(&p, 2, random_jitter());
            assert!((100..=300).contains(&d), "{d}");
        }
    }
}
