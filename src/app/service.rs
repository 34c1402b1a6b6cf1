//! The service's own state, for load balancers and monitoring: readiness and metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::app::App;
use crate::error::AppError;

/// How long readiness waits for the database before calling it unreachable.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/ready` reports.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`; or `degraded`: the database is away, gates still decide and the journal spools.
    pub status: &'static str,
    pub checks: BTreeMap<&'static str, &'static str>,
    pub spool: SpoolState,
}

/// The journal's spool: what waits on disk for PostgreSQL.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SpoolState {
    pub records: u64,
    pub bytes: u64,
    /// Seconds since the oldest record still waiting was spooled.
    pub oldest_age_s: Option<f64>,
    /// Batches answered and waiting in memory for the journal's writer (committed or spooled
    /// within moments; what a kill -9 would lose).
    pub queued_batches: usize,
}

fn spool_state(app: &App) -> SpoolState {
    let health = app.engine.journal().health();
    SpoolState {
        records: health.spooled_records(),
        bytes: health.spooled_bytes(),
        oldest_age_s: health.oldest_spooled().map(|t| (chrono::Utc::now() - t).num_milliseconds() as f64 / 1000.0),
        queued_batches: app.engine.journal().queued(),
    }
}

/// Whether the engine can do its job. With the database away it is `degraded`, not dead: gates
/// decide from memory and the journal spools to disk.
pub async fn ready(app: &App) -> Result<Readiness, AppError> {
    let probe = async {
        let client = app.pool.get().await.map_err(|e| e.to_string())?;
        client.simple_query("SELECT 1").await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let database = match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(err),
        Err(_) => Some("timed out".to_owned()),
    };
    if let Some(reason) = &database {
        tracing::warn!(%reason, "readiness check: database unreachable");
    }
    let spooling = app.engine.journal().health().spooling();
    let checks = BTreeMap::from([
        ("database", if database.is_none() { "ok" } else { "unreachable" }),
        ("journal", if spooling { "spooling" } else { "ok" }),
    ]);
    let status = if database.is_none() && !spooling { "ready" } else { "degraded" };
    Ok(Readiness { status, checks, spool: spool_state(app) })
}

/// The Prometheus text exposition, with the pool and uptime gauges brought up to date.
pub fn metrics_text(app: &App) -> String {
    let status = app.pool.status();
    metrics::gauge!("portcullis_db_pool_connections", "state" => "open").set(status.size as f64);
    metrics::gauge!("portcullis_db_pool_connections", "state" => "idle").set(status.available as f64);
    metrics::gauge!("portcullis_db_pool_waiting").set(status.waiting as f64);
    metrics::gauge!("portcullis_uptime_seconds").set(app.started_at.elapsed().as_secs_f64());
    let spool = spool_state(app);
    metrics::gauge!("portcullis_journal_spool_age_seconds").set(spool.oldest_age_s.unwrap_or(0.0));
    app.metrics.run_upkeep();
    app.metrics.render()
}
