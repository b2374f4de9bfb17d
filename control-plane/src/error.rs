//! The control plane's error type and its one mapping to gRPC status.

use berth_proto::{ErrorCode, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// Stored data that does not parse: a bug or a hand-edited database.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a database error is a unique-constraint violation.
pub fn is_unique_violation(err: &sea_orm::DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

impl Error {
    /// Stored data that does not parse.
    pub fn corrupt(what: &str, e: impl std::fmt::Display) -> Self {
        Error::Corrupt(format!("{what}: {e}"))
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            Error::Db(_) | Error::Corrupt(_) => ErrorCode::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let code = err.code();
        let message = if code == ErrorCode::Internal {
            // Logged in full here; the caller gets a short, clean message.
            tracing::error!(error = %err, "internal error");
            "internal error; see the control plane's log".to_owned()
        } else {
            err.to_string()
        };
        tonic::Status::new(code.grpc(), message)
    }
}
