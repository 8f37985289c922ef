//! The runtime's errors: what a service call can fail with, with sources
//! kept. The API maps them to statuses in one place (`api::problem`).

use crate::model::state::Forbidden;
use crate::sandbox::LoadError;
use crate::store::StoreError;

/// Why a service call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what is stored (a name taken, a stale token).
    #[error("{0}")]
    Conflict(String),
    /// A transition the state machine forbids.
    #[error(transparent)]
    Forbidden(Forbidden),
    /// The request is well-formed but not acceptable; every problem listed.
    #[error("{message}")]
    Invalid {
        message: String,
        problems: Vec<String>,
    },
    /// The store failed (not a refusal): the source says how.
    #[error(transparent)]
    Store(StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a component could not be loaded: {0}")]
    Load(#[from] LoadError),
    #[error("a blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl ServiceError {
    /// Whether the same call may succeed if tried again later.
    pub fn is_retriable(&self) -> bool {
        match self {
            ServiceError::Store(e) => e.is_retriable(),
            ServiceError::Io { .. } | ServiceError::Join(_) => true,
            _ => false,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ServiceError::NotFound(m),
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            StoreError::Forbidden(f) => ServiceError::Forbidden(f),
            e @ (StoreError::Fenced(_) | StoreError::NotDue { .. }) => {
                ServiceError::Conflict(e.to_string())
            }
            failure => ServiceError::Store(failure),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_final_and_a_busy_store_is_retriable() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(ServiceError::from(StoreError::Sqlite(busy)).is_retriable());
        assert!(ServiceError::from(StoreError::Unavailable("stopped".into())).is_retriable());
        assert!(!ServiceError::from(StoreError::NotFound("no x".into())).is_retriable());
        assert!(!ServiceError::from(StoreError::Corrupt("bad row".into())).is_retriable());
        let forbidden = ServiceError::from(StoreError::Forbidden(Forbidden {
            from: "SUCCESS".into(),
            to: "PAUSED".into(),
        }));
        assert!(matches!(forbidden, ServiceError::Forbidden(_)));
        assert_eq!(forbidden.to_string(), "cannot go from SUCCESS to PAUSED");
    }
}
