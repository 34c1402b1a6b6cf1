//! Service endpoints for load balancers, monitoring and humans: `/health`, `/ready`, `/version`,
//! `/metrics`. They carry no tenant data and need no authentication.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::app::{App, service};
use crate::error::AppError;

/// The process is up and serving HTTP.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The engine can do its job (`ready`), or does it without its database (`degraded`).
pub async fn ready(state: web::Data<App>) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(service::ready(&state).await?))
}

pub async fn version(state: web::Data<App>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "schema_version": state.schema_version,
    }))
}

/// The API document (OpenAPI 3.1).
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::http::openapi::document())
}

/// Prometheus text exposition.
pub async fn metrics(state: web::Data<App>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .body(service::metrics_text(&state))
}
