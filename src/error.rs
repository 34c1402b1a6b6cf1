//! The one error type of the HTTP API and the one place errors become HTTP responses.
//!
//! Every error is `{"error": {"code", "message", "details"}}` with a stable `code` (API.md). A 500
//! says nothing about its cause to the client; the log has the whole cause chain, tied to the
//! response by the `x-request-id` header.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
    Conflict { code: &'static str, message: String },
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
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ApiError {
    /// A 422 naming one field.
    pub fn field(name: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::Validation { fields: BTreeMap::from([(name.into(), reason.into())]) }
    }

    /// A 500; the cause is logged, never sent.
    pub fn internal(err: impl Into<BoxError>) -> Self {
        ApiError::Internal(err.into())
    }

    /// The stable code table: every code and its status, in one place.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingToken => "missing_token",
            ApiError::InvalidToken => "invalid_token",
            ApiError::TokenExpired => "token_expired",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::Forbidden => "forbidden",
            ApiError::ReadOnly => "read_only",
            ApiError::OrgBlocked => "org_blocked",
            ApiError::KeyNotBoundToGate => "key_not_bound_to_gate",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict { code, .. } => code,
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Validation { .. } => "validation_failed",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::NotReady { .. } => "not_ready",
            ApiError::Internal(_) => "internal",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::Validation { fields } => json!({ "fields": fields }),
            ApiError::PayloadTooLarge { limit } => json!({ "limit_bytes": limit }),
            ApiError::RateLimited { retry_after_secs } => {
                json!({ "retry_after_secs": retry_after_secs })
            }
            ApiError::NotReady { checks } => json!({ "checks": checks }),
            _ => json!({}),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken | ApiError::TokenExpired | ApiError::InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden | ApiError::ReadOnly | ApiError::OrgBlocked | ApiError::KeyNotBoundToGate => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(source) = self {
            // Runs inside the request's span, so the log line carries the request id.
            tracing::error!(error.chain = %error_chain(source.as_ref()), "request failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::RateLimited { retry_after_secs } = self {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(*retry_after_secs)));
        }
        if matches!(self, ApiError::MissingToken | ApiError::InvalidToken | ApiError::TokenExpired) {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        response.json(json!({
            "error": { "code": self.code(), "message": self.to_string(), "details": self.details() }
        }))
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

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        ApiError::internal(err)
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(err: tokio_postgres::Error) -> Self {
        ApiError::internal(err)
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(err: actix_web::error::BlockingError) -> Self {
        ApiError::internal(err)
    }
}

impl ApiError {
    /// A foreign-key violation on delete: something still refers to the row (409 `in_use`).
    pub fn in_use(err: tokio_postgres::Error, message: &str) -> Self {
        if err.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
            ApiError::Conflict { code: "in_use", message: message.to_owned() }
        } else {
            ApiError::internal(err)
        }
    }

    /// A unique violation becomes 409 `already_exists` with `message`; anything else is a 500.
    pub fn unique(err: tokio_postgres::Error, message: &str) -> Self {
        if err.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            ApiError::Conflict { code: "already_exists", message: message.to_owned() }
        } else {
            ApiError::internal(err)
        }
    }
}
