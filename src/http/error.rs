//! The one place an [`AppError`] becomes an HTTP response: its status, its stable code (API.md),
//! and the body `{"error": {"code", "message", "details"}}`. A 500 says nothing about its cause to
//! the client; the log has the whole cause chain, tied to the response by `x-request-id`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};

use crate::error::{AppError, error_chain};

/// The stable code table: every code and its status, in one place.
pub fn code(err: &AppError) -> &'static str {
    match err {
        AppError::MissingToken => "missing_token",
        AppError::InvalidToken => "invalid_token",
        AppError::TokenExpired => "token_expired",
        AppError::InvalidCredentials => "invalid_credentials",
        AppError::Forbidden => "forbidden",
        AppError::ReadOnly => "read_only",
        AppError::OrgBlocked => "org_blocked",
        AppError::KeyNotBoundToGate => "key_not_bound_to_gate",
        AppError::NotFound(_) => "not_found",
        AppError::MethodNotAllowed => "method_not_allowed",
        AppError::Conflict { code, .. } => code.as_str(),
        AppError::PayloadTooLarge { .. } => "payload_too_large",
        AppError::UnsupportedMediaType => "unsupported_media_type",
        AppError::Validation { .. } => "validation_failed",
        AppError::RateLimited { .. } => "rate_limited",
        AppError::NotReady { .. } => "not_ready",
        AppError::Unavailable(_) => "database_unavailable",
        AppError::Timeout { .. } => "timeout",
        AppError::Internal(_) => "internal",
    }
}

fn details(err: &AppError) -> Value {
    match err {
        AppError::Validation { fields } => json!({ "fields": fields }),
        AppError::PayloadTooLarge { limit } => json!({ "limit_bytes": limit }),
        AppError::RateLimited { retry_after_secs } => json!({ "retry_after_secs": retry_after_secs }),
        AppError::NotReady { checks } => json!({ "checks": checks }),
        _ => json!({}),
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::MissingToken | AppError::InvalidToken | AppError::TokenExpired | AppError::InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            AppError::Forbidden | AppError::ReadOnly | AppError::OrgBlocked | AppError::KeyNotBoundToGate => {
                StatusCode::FORBIDDEN
            }
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::NotReady { .. } | AppError::Unavailable(_) | AppError::Timeout { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            // Runs inside the request's span, so the log line carries the request id.
            AppError::Internal(source) => {
                tracing::error!(error.chain = %error_chain(source.as_ref()), "request failed")
            }
            AppError::Unavailable(source) => {
                tracing::warn!(error.chain = %error_chain(source.as_ref()), "request failed: database unavailable");
            }
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            AppError::RateLimited { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from(*retry_after_secs)));
            }
            AppError::Unavailable(_) | AppError::Timeout { .. } => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from(1u32)));
            }
            _ => {}
        }
        if matches!(self, AppError::MissingToken | AppError::InvalidToken | AppError::TokenExpired) {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        response.json(json!({
            "error": { "code": code(self), "message": self.to_string(), "details": details(self) }
        }))
    }
}
