//! The Journal's writer: drains the actors' records and commits them to PostgreSQL in groups
//! (one transaction per group, statements pipelined), then tells each durable waiter.
//!
//! A group that fails is retried batch by batch, so one bad record (a gate deleted meanwhile)
//! fails only its own batch. Records that still cannot be written are logged and counted.

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures_util::future::try_join_all;
use portcullis_actors::journal::{JournalBatch, JournalError, JournalRecord};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;

/// Most batches in one transaction.
const MAX_GROUP: usize = 512;
/// How long a group with no durable waiter lingers to gather more.
const LINGER: Duration = Duration::from_millis(2);

pub async fn run(pool: Pool, mut rx: mpsc::Receiver<JournalBatch>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        drain(&mut rx, &mut group);
        if group.iter().all(|b| b.ack.is_none()) {
            tokio::time::sleep(LINGER).await;
            drain(&mut rx, &mut group);
        }
        let records: usize = group.iter().map(|b| b.records.len()).sum();
        metrics::histogram!("portcullis_journal_batch_records").record(records as f64);
        let started = Instant::now();
        let result = commit(&pool, &group).await;
        metrics::histogram!("portcullis_journal_commit_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => acknowledge(group, Ok(())),
            Err(err) if group.len() > 1 => {
                tracing::warn!(error = %err, batches = group.len(), "journal group failed; retrying batch by batch");
                for batch in group {
                    let result = commit(&pool, std::slice::from_ref(&batch)).await;
                    if let Err(err) = &result {
                        lost(batch.records.len(), err);
                    }
                    acknowledge(vec![batch], result.map_err(JournalError::Commit));
                }
            }
            Err(err) => {
                lost(records, &err);
                acknowledge(group, Err(JournalError::Commit(err)));
            }
        }
    }
    tracing::info!("journal drained and closed");
}

fn drain(rx: &mut mpsc::Receiver<JournalBatch>, group: &mut Vec<JournalBatch>) {
    while group.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(batch) => group.push(batch),
            Err(_) => break,
        }
    }
}

fn lost(records: usize, err: &str) {
    metrics::counter!("portcullis_journal_failed_records_total").increment(records as u64);
    tracing::error!(records, error = %err, "journal records could not be written");
}

fn acknowledge(group: Vec<JournalBatch>, result: Result<(), JournalError>) {
    for batch in group {
        if let Some(ack) = batch.ack {
            let _ = ack.send(result.clone());
        }
    }
}

async fn commit(pool: &Pool, group: &[JournalBatch]) -> Result<(), String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    let checkin = tx
        .prepare_cached(
            "INSERT INTO checkins (id, org_id, gate_id, pass_id, direction, decision, reason, source, credential_kind, decided_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await
        .map_err(|e| e.to_string())?;
    let pass = tx
        .prepare_cached(
            "UPDATE passes SET uses_count = $3, inside = $4, last_gate_id = $5, last_passage_at = $6, status = $7,
                    valid_to = $8, revoked_at = coalesce($9, revoked_at), revoked_by = coalesce($10, revoked_by),
                    revoke_reason = coalesce($11, revoke_reason), updated_at = now(), version = version + 1
             WHERE org_id = $1 AND id = $2",
        )
        .await
        .map_err(|e| e.to_string())?;
    let event = tx
        .prepare_cached(
            "INSERT INTO pass_events (org_id, pass_id, kind, status, uses_count, actor_id, reason, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await
        .map_err(|e| e.to_string())?;

    // Statements are pipelined on the connection, in submission order.
    let mut pending = Vec::new();
    for record in group.iter().flat_map(|b| &b.records) {
        let (statement, params): (_, Vec<Box<dyn ToSql + Sync + Send>>) = match record {
            JournalRecord::Checkin(c) => (
                &checkin,
                vec![
                    Box::new(c.id),
                    Box::new(c.org_id),
                    Box::new(c.gate_id),
                    Box::new(c.pass_id),
                    Box::new(c.direction.as_str()),
                    Box::new(c.decision.as_str()),
                    Box::new(c.reason.as_str()),
                    Box::new(c.source),
                    Box::new(c.credential_kind.map(|k| k.as_str())),
                    Box::new(c.decided_at),
                ],
            ),
            JournalRecord::Pass { state, revocation } => (
                &pass,
                vec![
                    Box::new(state.org_id),
                    Box::new(state.id),
                    Box::new(i32::try_from(state.uses_count).unwrap_or(i32::MAX)),
                    Box::new(state.inside),
                    Box::new(state.last_gate_id),
                    Box::new(state.last_passage_at),
                    Box::new(state.status.as_str()),
                    Box::new(state.valid_to),
                    Box::new(revocation.as_ref().map(|r| r.at)),
                    Box::new(revocation.as_ref().and_then(|r| r.by)),
                    Box::new(revocation.as_ref().map(|r| r.reason.clone())),
                ],
            ),
            JournalRecord::PassEvent(e) => (
                &event,
                vec![
                    Box::new(e.org_id),
                    Box::new(e.pass_id),
                    Box::new(e.kind),
                    Box::new(e.status.as_str()),
                    Box::new(i32::try_from(e.uses_count).unwrap_or(i32::MAX)),
                    Box::new(e.actor_id),
                    Box::new(e.reason.clone()),
                    Box::new(e.at),
                ],
            ),
        };
        pending.push((statement, params));
    }
    let executions = pending.iter().map(|(statement, params)| {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let tx = &tx;
        async move { tx.execute(*statement, &refs).await }
    });
    try_join_all(executions).await.map_err(|e| crate::error::error_chain(&e))?;
    tx.commit().await.map_err(|e| e.to_string())
}
