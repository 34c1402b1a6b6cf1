//! The engine's server side: starting the actors from the database, the journal writer, the
//! expiry sweep, and the credential edge (QR, cards, PINs, Wiegand).
//!
//! The actors themselves, and the decision, live in the `portcullis-actors` crate.

pub mod credentials;
pub mod journal;
pub mod load;

use std::time::Duration;

use deadpool_postgres::Pool;
use portcullis_actors::engine::{Engine, EngineError, EngineSettings};
use portcullis_actors::journal::JournalHandle;
use portcullis_actors::pass_actor::PassChange;
use uuid::Uuid;

use crate::config::EngineSettings as Settings;
use load::LoadError;

/// Records the journal may hold before writers wait (backpressure).
const JOURNAL_CAPACITY: usize = 16_384;

/// Starts the journal writer and the engine, and loads the engine from the database.
///
/// The journal writes over its own connection, driven on this (the engine's) runtime: pooled
/// connections are driven by whichever HTTP worker opened them and end with that worker, which
/// would cut the journal off in the middle of the shutdown flush.
pub async fn start(pool: &Pool, config: &tokio_postgres::Config, settings: &Settings) -> Result<Engine, LoadError> {
    let (journal, rx) = JournalHandle::channel(JOURNAL_CAPACITY);
    actix_rt::spawn(journal::run(config.clone(), rx));
    let engine = Engine::new(
        journal,
        EngineSettings {
            pass_idle: Duration::from_secs(settings.pass_idle_secs.max(1)),
            queue_len: settings.gate_queue_len,
        },
        settings.retained_events,
    );
    let client = pool.get().await?;
    let (orgs, passes) = load::load_all(&client, &engine).await?;
    tracing::info!(orgs, passes, "engine loaded");
    actix_rt::spawn(expire(pool.clone(), engine.clone(), Duration::from_secs(settings.expiry_sweep_secs.max(1))));
    Ok(engine)
}

/// Marks passes past `valid_to` expired, through their actors (so the change is journaled and
/// published like any other).
async fn expire(pool: Pool, engine: Engine, every: Duration) {
    let mut ticker = actix_rt::time::interval(every);
    loop {
        ticker.tick().await;
        if pool.is_closed() {
            return;
        }
        let due: Vec<Uuid> = match pool.get().await {
            Ok(client) => match client
                .query(
                    "SELECT id FROM passes WHERE status IN ('active', 'suspended') AND valid_to <= now() ORDER BY valid_to LIMIT 500",
                    &[],
                )
                .await
            {
                Ok(rows) => rows.iter().filter_map(|r| r.try_get(0).ok()).collect(),
                Err(err) => {
                    tracing::warn!(error = %err, "expiry sweep failed");
                    continue;
                }
            },
            Err(_) => continue,
        };
        for pass_id in due {
            match engine.change_pass(pass_id, PassChange::Expire, None).await {
                Ok(_) => {}
                // Not held by the engine (e.g. issued elsewhere and never loaded): mark it directly.
                Err(EngineError::UnknownPass) => {
                    if let Ok(client) = pool.get().await {
                        let _ = client
                            .execute("UPDATE passes SET status = 'expired', updated_at = now() WHERE id = $1 AND status IN ('active', 'suspended')", &[&pass_id])
                            .await;
                    }
                }
                Err(err) => tracing::warn!(%pass_id, error = %err, "could not expire pass"),
            }
        }
    }
}
