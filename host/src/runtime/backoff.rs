//! Exponential backoff with jitter between attempts.

use std::time::Duration;

use rand::Rng;

use crate::model::task::RetryPolicy;

/// The wait before attempt `failed_attempt + 1`: `initial × multiplier^(n-1)`,
/// capped at `max_backoff`, then moved by up to ±`jitter` of itself.
pub fn backoff(policy: &RetryPolicy, failed_attempt: u32) -> Duration {
    let exp = failed_attempt.saturating_sub(1).min(64) as i32;
    let base = policy.initial_backoff.as_secs_f64() * policy.multiplier.powi(exp);
    let capped = base.min(policy.max_backoff.as_secs_f64());
    let jitter = if policy.jitter > 0.0 {
        rand::rng().random_range(-policy.jitter..=policy.jitter)
    } else {
        0.0
    };
    Duration::from_secs_f64((capped * (1.0 + jitter)).max(0.0))
}

#[cfg(test)]
mod tests {
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
    fn grows_exponentially_up_to_the_cap() {
        let p = policy(0.0);
        assert_eq!(backoff(&p, 1), Duration::from_millis(100));
        assert_eq!(backoff(&p, 2), Duration::from_millis(200));
        assert_eq!(backoff(&p, 3), Duration::from_millis(400));
        assert_eq!(backoff(&p, 10), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = policy(0.5);
        for _ in 0..200 {
            let d = backoff(&p, 2).as_secs_f64();
            assert!((0.1..=0.3).contains(&d), "{d}");
        }
    }
}
