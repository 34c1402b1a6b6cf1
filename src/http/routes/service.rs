//! Service endpoints for load balancers, monitoring and humans: `/health`, `/ready`, `/version`,
//! `/metrics`. They carry no tenant data and need no authentication.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::app::App;
use crate::error::AppError;

/// How long `/ready` waits for the database before calling it unreachable.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is up and serving HTTP.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The engine can do its job: the database answers.
pub async fn ready(state: web::Data<App>) -> Result<HttpResponse, AppError> {
    let probe = async {
        let client = state.pool.get().await.map_err(|e| e.to_string())?;
        client.simple_query("SELECT 1").await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(json!({ "status": "ready", "checks": { "database": "ok" } }))),
        outcome => {
            let reason = match outcome {
                Ok(Err(err)) => err,
                _ => "timed out".to_owned(),
            };
            tracing::warn!(%reason, "readiness check failed: database");
            Err(AppError::NotReady { checks: BTreeMap::from([("database", "unreachable".to_owned())]) })
        }
    }
}

pub async fn version(state: web::Data<App>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "schema_version": state.schema_version,
    }))
}

/// Prometheus text exposition.
pub async fn metrics(state: web::Data<App>) -> HttpResponse {
    let status = state.pool.status();
    metrics::gauge!("portcullis_db_pool_connections", "state" => "open").set(status.size as f64);
    metrics::gauge!("portcullis_db_pool_connections", "state" => "idle").set(status.available as f64);
    metrics::gauge!("portcullis_db_pool_waiting").set(status.waiting as f64);
    metrics::gauge!("portcullis_uptime_seconds").set(state.started_at.elapsed().as_secs_f64());
    state.metrics.run_upkeep();
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .body(state.metrics.render())
}
