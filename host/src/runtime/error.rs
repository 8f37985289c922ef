//! The runtime's errors: what a service call can fail with. The API maps
//! them to statuses in one place (`api::problem`).

use crate::store::StoreError;

/// Why a service call failed; the API maps these to statuses.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A transition the state machine forbids.
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    Invalid {
        message: String,
        problems: Vec<String>,
    },
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ServiceError::NotFound(m),
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            StoreError::Forbidden(f) => ServiceError::Forbidden(f.to_string()),
            StoreError::Fenced(m) => ServiceError::Conflict(m),
            e @ StoreError::NotDue { .. } => ServiceError::Conflict(e.to_string()),
            StoreError::Internal(m) => ServiceError::Internal(m),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
