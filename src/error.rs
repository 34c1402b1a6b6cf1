//! The one error type of the application ([`AppError`]): what went wrong, in the application's
//! terms. It knows nothing of HTTP; `src/http/error.rs` is the one place it becomes a status, a
//! stable code and the `{"error": {"code", "message", "details"}}` body.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a change conflicts with the current state: each is a stable code of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// A unique value (a name, a slug, a card number) is taken.
    AlreadyExists,
    /// Something still refers to the object.
    InUse,
    KeyRevoked,
    PassNotActive,
    PassNotSuspended,
    /// An optimistic-concurrency `version` is stale.
    VersionConflict,
    /// The visit is over, cancelled or denied: nothing more can happen to it.
    VisitNotOpen,
    /// The visitor matches the deny list: held for a security officer's review.
    VisitorDenied,
    /// Only a checked-in visitor can be checked out.
    VisitNotCheckedIn,
}

impl Conflict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Conflict::AlreadyExists => "already_exists",
            Conflict::InUse => "in_use",
            Conflict::KeyRevoked => "key_revoked",
            Conflict::PassNotActive => "pass_not_active",
            Conflict::PassNotSuspended => "pass_not_suspended",
            Conflict::VersionConflict => "version_conflict",
            Conflict::VisitNotOpen => "visit_not_open",
            Conflict::VisitorDenied => "visitor_denied",
            Conflict::VisitNotCheckedIn => "visit_not_checked_in",
        }
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("authentication is required")]
    MissingToken,
    #[error("the token is invalid")]
    InvalidToken,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the email or password is wrong")]
    InvalidCredentials,
    #[error("you do not have permission to do this")]
    Forbidden,
    #[error("the organization is read-only")]
    ReadOnly,
    #[error("the organization is blocked")]
    OrgBlocked,
    #[error("this key may not decide for this gate")]
    KeyNotBoundToGate,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{message}")]
    Conflict { code: Conflict, message: String },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be JSON (content-type: application/json)")]
    UnsupportedMediaType,
    #[error("the request is invalid")]
    Validation { fields: BTreeMap<String, String> },
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the service is not ready")]
    NotReady { checks: BTreeMap<&'static str, String> },
    #[error("the database is unavailable; try again shortly")]
    Unavailable(#[source] BoxError),
    #[error("the request took longer than {secs} s")]
    Timeout { secs: u64 },
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl AppError {
    /// A 422 naming one field.
    pub fn field(name: impl Into<String>, reason: impl Into<String>) -> Self {
        AppError::Validation { fields: BTreeMap::from([(name.into(), reason.into())]) }
    }

    /// A 500; the cause is logged, never sent.
    pub fn internal(err: impl Into<BoxError>) -> Self {
        AppError::Internal(err.into())
    }
}

/// `outer: middle: root` — every cause, for the log.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

impl From<deadpool_postgres::PoolError> for AppError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match err {
            // No connection in time, or none could be opened: the database, not the request.
            PoolError::Timeout(_) | PoolError::Backend(_) => AppError::Unavailable(err.into()),
            _ => AppError::internal(err),
        }
    }
}

impl From<tokio_postgres::Error> for AppError {
    fn from(err: tokio_postgres::Error) -> Self {
        if is_unavailable(&err) { AppError::Unavailable(err.into()) } else { AppError::internal(err) }
    }
}

/// Whether a PostgreSQL error says the server is away (connection lost or refused, shutting down,
/// out of resources, a statement cancelled by `statement_timeout`) rather than that the request
/// is wrong.
pub fn is_unavailable(err: &tokio_postgres::Error) -> bool {
    match err.code() {
        None => true,
        Some(code) => {
            *code == tokio_postgres::error::SqlState::QUERY_CANCELED
                || matches!(code.code().get(..2), Some("08" | "57" | "53" | "58"))
        }
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(err: tokio::task::JoinError) -> Self {
        AppError::internal(err)
    }
}

impl AppError {
    /// A foreign-key violation on delete: something still refers to the row (`in_use`).
    pub fn in_use(err: tokio_postgres::Error, message: &str) -> Self {
        if err.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
            AppError::Conflict { code: Conflict::InUse, message: message.to_owned() }
        } else {
            AppError::internal(err)
        }
    }

    /// A unique violation becomes `already_exists` with `message`; anything else is internal.
    pub fn unique(err: tokio_postgres::Error, message: &str) -> Self {
        if err.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            AppError::Conflict { code: Conflict::AlreadyExists, message: message.to_owned() }
        } else {
            AppError::internal(err)
        }
    }
}
