//! The engine's server side: starting the actors from the database, the journal writer, the
//! expiry sweep, and the credential edge (QR, cards, PINs, Wiegand).
//!
//! The actors themselves, and the decision, live in the `portcullis-actors` crate.

pub mod controllers;
pub mod credentials;
pub mod journal;
pub mod load;
pub mod readers;
pub mod spool;

use std::time::Duration;

use chrono::Utc;
use deadpool_postgres::Pool;
use portcullis_actors::engine::{Engine, EngineError, EngineSettings};
use portcullis_actors::journal::JournalHandle;
use portcullis_actors::pass_actor::{PassChange, PassError};

use crate::config::Settings;
use load::LoadError;

/// The threads the gates', passes' and organizations' actors run on, by name (see
/// [`crate::telemetry::name_thread`]).
pub const ACTOR_THREAD: &std::ffi::CStr = c"engine-actors";

/// Records the journal may hold before writers wait (backpressure).
const JOURNAL_CAPACITY: usize = 16_384;

/// Starts the journal writer and the engine, and loads the engine from the database.
///
/// The journal writes over its own connection, driven on this (the engine's) runtime: pooled
/// connections are driven by whichever HTTP worker opened them and end with that worker, which
/// would cut the journal off in the middle of the shutdown flush. Its spool lives under
/// `<data_dir>/spool`; one left by an earlier run is replayed before anything new is written.
pub async fn start(pool: &Pool, config: &tokio_postgres::Config, settings: &Settings) -> Result<Engine, LoadError> {
    let spool = spool::Spool::open(&settings.data_dir.join("spool"), settings.journal.spool_max_bytes)?;
    let (journal, rx) = JournalHandle::channel(JOURNAL_CAPACITY);
    let health = journal.health().clone();
    let engine_settings = &settings.engine;
    let engine = Engine::new(
        journal,
        EngineSettings {
            pass_idle: Duration::from_secs(engine_settings.pass_idle_secs.max(1)),
            admit_bound: Duration::from_millis(engine_settings.admit_timeout_ms.max(1)),
            queue_len: engine_settings.gate_queue_len,
            arbiters: engine_settings.arbiters,
        },
        engine_settings.retained_events,
    );
    engine.on_each_thread(|| crate::telemetry::name_thread(ACTOR_THREAD));
    let writer = journal::WriterSettings {
        commit_timeout: Duration::from_millis(settings.journal.commit_timeout_ms.max(1)),
        retry: Duration::from_millis(settings.journal.retry_ms.max(1)),
        checkpoint: Duration::from_millis(settings.journal.checkpoint_ms.max(1)),
    };
    let left_over = !spool.is_empty();
    if left_over {
        // Spooling until the writer has replayed it (the writer reports the same when it starts).
        health.set(true, spool.records(), spool.bytes(), spool.oldest());
    }
    let replayed = health.clone();
    actix_rt::spawn(journal::run(config.clone(), rx, spool, writer, health, engine.downgrade()));
    if left_over {
        // What the last run spooled (uses, passages, revocations) is in the database before the
        // engine loads from it, or the engine would start without it.
        let mut waited = 0u64;
        while replayed.spooling() {
            actix_rt::time::sleep(Duration::from_millis(20)).await;
            waited += 20;
            if waited.is_multiple_of(5_000) {
                tracing::warn!(
                    records = replayed.spooled_records(),
                    "waiting for the spool to be replayed before loading"
                );
            }
        }
    }
    let client = pool.get().await?;
    client.execute(journal::PRUNE_BATCHES, &[]).await?;
    let (orgs, passes) = load::load_all(&client, &engine).await?;
    tracing::info!(orgs, passes, "engine loaded");
    let sweep = Duration::from_secs(engine_settings.expiry_sweep_secs.max(1));
    actix_rt::spawn(expire(pool.clone(), engine.clone(), sweep));
    Ok(engine)
}

/// Marks passes expired when their `valid_to` comes, from the engine's own schedule (no database
/// poll), through their actors, so the change is journaled and published like any other. It
/// sleeps until the next expiry, or at most `longest`; an earlier one scheduled meanwhile wakes it.
async fn expire(pool: Pool, engine: Engine, longest: Duration) {
    loop {
        if pool.is_closed() {
            return;
        }
        let now = Utc::now();
        for pass_id in engine.due_expiries(now) {
            match engine.change_pass(pass_id, PassChange::Expire, None).await {
                // Done; or extended, revoked or removed since it was scheduled: nothing to do.
                Ok(_)
                | Err(EngineError::Pass(PassError::NotDue | PassError::NotActive))
                | Err(EngineError::UnknownPass) => {}
                Err(err) => {
                    tracing::warn!(%pass_id, error = %err, "could not expire pass; trying again later");
                    let retry = chrono::Duration::from_std(longest).unwrap_or(chrono::Duration::seconds(1));
                    engine.schedule_expiry(pass_id, now + retry);
                }
            }
        }
        let until_next = engine.next_expiry().map_or(longest, |next| (next - now).to_std().unwrap_or(Duration::ZERO));
        tokio::select! {
            _ = actix_rt::time::sleep(until_next.min(longest)) => {}
            _ = engine.expiry_scheduled() => {}
        }
    }
}
