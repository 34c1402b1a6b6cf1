//! The HTTP edge: extractors, middleware and routes. Handlers are thin: extract, parse into a
//! domain type, call one service, respond.

pub mod extract;
pub mod input;
pub mod middleware;
pub mod pagination;
pub mod routes;

use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::Pool;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::AuthContext;
use crate::config::Settings;

/// Shared, read-only state of every worker.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub settings: Arc<Settings>,
    pub auth: Arc<AuthContext>,
    pub engine: portcullis_actors::engine::Engine,
    pub metrics: PrometheusHandle,
    pub schema_version: i32,
    pub started_at: Instant,
}
