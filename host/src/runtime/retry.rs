//! Which failures another attempt may fix.

use crate::sandbox::ErrorKind;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
