//! The Journal's writer: drains the actors' records and commits them to PostgreSQL in groups
//! (one transaction per group, statements pipelined), then tells each durable waiter.
//!
//! A group that fails is retried batch by batch, so one bad record (a gate deleted meanwhile)
//! fails only its own batch. Records that still cannot be written are logged and counted.
//! Retrying is safe: a commit whose answer was lost with its connection may have happened, so
//! check-ins are inserted idempotently (by their id) and pass updates write absolute values.

use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use portcullis_actors::journal::{JournalBatch, JournalError, JournalRecord};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Statement};

/// The journal's statements, prepared once per connection.
struct Statements {
    checkin: Statement,
    pass: Statement,
    event: Statement,
}

/// The journal's own connection, reopened when lost.
struct Connection {
    config: Config,
    open: Option<(Client, Statements)>,
}

impl Connection {
    async fn get(&mut self) -> Result<&mut (Client, Statements), String> {
        if self.open.as_ref().is_none_or(|(client, _)| client.is_closed()) {
            self.open = None;
            let err = |e: tokio_postgres::Error| crate::error::error_chain(&e);
            let (client, connection) = self.config.connect(NoTls).await.map_err(err)?;
            actix_web::rt::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "journal connection lost");
                }
            });
            let statements = Statements {
                checkin: client
                    .prepare(
                        "INSERT INTO checkins (id, org_id, gate_id, pass_id, direction, decision, reason, source, credential_kind, decided_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .await
                    .map_err(err)?,
                pass: client
                    .prepare(
                        "UPDATE passes SET uses_count = $3, inside = $4, last_gate_id = $5, last_passage_at = $6, status = $7,
                                valid_to = $8, revoked_at = coalesce($9, revoked_at), revoked_by = coalesce($10, revoked_by),
                                revoke_reason = coalesce($11, revoke_reason), updated_at = now(), version = version + 1
                         WHERE org_id = $1 AND id = $2",
                    )
                    .await
                    .map_err(err)?,
                event: client
                    .prepare(
                        "INSERT INTO pass_events (org_id, pass_id, kind, status, uses_count, actor_id, reason, at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .await
                    .map_err(err)?,
            };
            self.open = Some((client, statements));
        }
        self.open.as_mut().ok_or_else(|| "no connection".to_owned())
    }
}

/// Most batches in one transaction.
const MAX_GROUP: usize = 512;
/// How long a group with no durable waiter lingers to gather more.
const LINGER: Duration = Duration::from_millis(2);

pub async fn run(config: Config, mut rx: mpsc::Receiver<JournalBatch>) {
    let mut conn = Connection { config, open: None };
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
        let result = commit(&mut conn, &group).await;
        metrics::histogram!("portcullis_journal_commit_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => acknowledge(group, Ok(())),
            Err(err) if group.len() > 1 => {
                tracing::warn!(error = %err, batches = group.len(), "journal group failed; retrying batch by batch");
                for batch in group {
                    let result = commit(&mut conn, std::slice::from_ref(&batch)).await;
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

async fn commit(conn: &mut Connection, group: &[JournalBatch]) -> Result<(), String> {
    let (client, statements) = conn.get().await?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    let (checkin, pass, event) = (&statements.checkin, &statements.pass, &statements.event);

    // Statements are pipelined on the connection, in submission order.
    let mut pending = Vec::new();
    for record in group.iter().flat_map(|b| &b.records) {
        let (statement, params): (&Statement, Vec<Box<dyn ToSql + Sync + Send>>) = match record {
            JournalRecord::Checkin(c) => (
                checkin,
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
                pass,
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
                event,
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
