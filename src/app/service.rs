//! The service's own state, for load balancers and monitoring: readiness and metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::app::App;
use crate::error::AppError;

/// How long readiness waits for the database before calling it unreachable.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `Ok` when the engine can do its job: the database answers.
pub async fn ready(app: &App) -> Result<(), AppError> {
    let probe = async {
        let client = app.pool.get().await.map_err(|e| e.to_string())?;
        client.simple_query("SELECT 1").await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let reason = match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(err)) => err,
        Err(_) => "timed out".to_owned(),
    };
    tracing::warn!(%reason, "readiness check failed: database");
    Err(AppError::NotReady { checks: BTreeMap::from([("database", "unreachable".to_owned())]) })
}

/// The Prometheus text exposition, with the pool and uptime gauges brought up to date.
pub fn metrics_text(app: &App) -> String {
    let status = app.pool.status();
    metrics::gauge!("portcullis_db_pool_connections", "state" => "open").set(status.size as f64);
    metrics::gauge!("portcullis_db_pool_connections", "state" => "idle").set(status.available as f64);
    metrics::gauge!("portcullis_db_pool_waiting").set(status.waiting as f64);
    metrics::gauge!("portcullis_uptime_seconds").set(app.started_at.elapsed().as_secs_f64());
    app.metrics.run_upkeep();
    app.metrics.render()
}
