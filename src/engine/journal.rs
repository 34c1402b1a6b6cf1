//! The Journal's writer: drains the actors' records and commits them to PostgreSQL in groups
//! (one transaction per group: all check-ins in one `unnest` insert, the last state of each pass,
//! its events; statements pipelined), then tells each durable waiter.
//!
//! A group that fails is retried batch by batch, so one bad record (a gate deleted meanwhile)
//! fails only its own batch. Records that still cannot be written are logged and counted.
//! Retrying is safe: a commit whose answer was lost with its connection may have happened, so
//! check-ins are inserted idempotently (by their id) and pass updates write absolute values.

use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use std::collections::HashMap;

use portcullis_actors::decision::PassState;
use portcullis_actors::journal::{CheckinRecord, JournalBatch, JournalError, JournalRecord, Revocation};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Statement};

/// A group's check-ins, column by column, for one `unnest` insert.
#[derive(Default)]
struct CheckinColumns {
    id: Vec<uuid::Uuid>,
    org_id: Vec<uuid::Uuid>,
    gate_id: Vec<uuid::Uuid>,
    pass_id: Vec<Option<uuid::Uuid>>,
    direction: Vec<&'static str>,
    decision: Vec<&'static str>,
    reason: Vec<&'static str>,
    source: Vec<&'static str>,
    kind: Vec<Option<&'static str>>,
    decided_at: Vec<chrono::DateTime<chrono::Utc>>,
}

impl CheckinColumns {
    fn push(&mut self, c: &CheckinRecord) {
        self.id.push(c.id);
        self.org_id.push(c.org_id);
        self.gate_id.push(c.gate_id);
        self.pass_id.push(c.pass_id);
        self.direction.push(c.direction.as_str());
        self.decision.push(c.decision.as_str());
        self.reason.push(c.reason.as_str());
        self.source.push(c.source);
        self.kind.push(c.credential_kind.map(|k| k.as_str()));
        self.decided_at.push(c.decided_at);
    }

    fn into_params(self) -> Vec<Box<dyn ToSql + Sync + Send>> {
        vec![
            Box::new(self.id),
            Box::new(self.org_id),
            Box::new(self.gate_id),
            Box::new(self.pass_id),
            Box::new(self.direction),
            Box::new(self.decision),
            Box::new(self.reason),
            Box::new(self.source),
            Box::new(self.kind),
            Box::new(self.decided_at),
        ]
    }
}

const CHECKIN_INSERT: &str = "INSERT INTO checkins (id, org_id, gate_id, pass_id, direction, decision, reason, source, credential_kind, decided_at)
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
                          $7::text[], $8::text[], $9::text[], $10::timestamptz[])";

/// A group's first attempt, or a retry after a failure (idempotent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    First,
    Retry,
}

/// The journal's statements, prepared once per connection.
struct Statements {
    checkin: Statement,
    /// The same insert, skipping check-ins already there: for a retry, whose first attempt may
    /// have committed although its answer was lost.
    checkin_again: Statement,
    pass: Statement,
    event: Statement,
    audit: Statement,
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
            actix_rt::spawn(async move {
                match connection.await {
                    // The server is stopping (as with the managed cluster at shutdown): expected.
                    Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN) => {
                        tracing::info!("journal connection closed by the server's shutdown");
                    }
                    Err(e) => tracing::warn!(error = %crate::error::error_chain(&e), "journal connection lost"),
                    Ok(()) => {}
                }
            });
            let statements = Statements {
                checkin: client.prepare(CHECKIN_INSERT).await.map_err(err)?,
                checkin_again: client
                    .prepare(&format!("{CHECKIN_INSERT} ON CONFLICT (id) DO NOTHING"))
                    .await
                    .map_err(err)?,
                // Every pass of the group in one statement (each pass appears once in a group).
                pass: client
                    .prepare(
                        "UPDATE passes p SET uses_count = u.uses_count, inside = u.inside, last_gate_id = u.last_gate_id,
                                last_passage_at = u.last_passage_at, status = u.status, valid_to = u.valid_to,
                                revoked_at = coalesce(u.revoked_at, p.revoked_at), revoked_by = coalesce(u.revoked_by, p.revoked_by),
                                revoke_reason = coalesce(u.revoke_reason, p.revoke_reason), updated_at = now(), version = p.version + 1
                         FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::bool[], $5::uuid[], $6::timestamptz[], $7::text[],
                                     $8::timestamptz[], $9::timestamptz[], $10::uuid[], $11::text[])
                              AS u(org_id, id, uses_count, inside, last_gate_id, last_passage_at, status, valid_to,
                                   revoked_at, revoked_by, revoke_reason)
                         WHERE p.org_id = u.org_id AND p.id = u.id",
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
                audit: client.prepare(crate::audit::INSERT).await.map_err(err)?,
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
            linger(&mut rx, &mut group).await;
        }
        let records: usize = group.iter().map(|b| b.records.len()).sum();
        metrics::histogram!("portcullis_journal_batch_records").record(records as f64);
        let started = Instant::now();
        let result = commit(&mut conn, &group, Attempt::First).await;
        metrics::histogram!("portcullis_journal_commit_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => acknowledge(group, Ok(())),
            // Once more, batch by batch (a lost connection is reopened; one bad record fails only
            // its own batch), idempotently.
            Err(err) => {
                tracing::warn!(error = %err, batches = group.len(), "journal group failed; retrying batch by batch");
                for batch in group {
                    let result = commit(&mut conn, std::slice::from_ref(&batch), Attempt::Retry).await;
                    if let Err(err) = &result {
                        lost(batch.records.len(), err);
                    }
                    acknowledge(vec![batch], result.map_err(JournalError::Commit));
                }
            }
        }
    }
    tracing::info!("journal drained and closed");
}

/// Gathers more batches for a group nobody waits on, for up to [`LINGER`], but never delays a
/// durable waiter: the group goes as soon as one arrives.
async fn linger(rx: &mut mpsc::Receiver<JournalBatch>, group: &mut Vec<JournalBatch>) {
    let deadline = tokio::time::Instant::now() + LINGER;
    while group.len() < MAX_GROUP {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(batch)) => {
                let durable = batch.ack.is_some();
                group.push(batch);
                if durable {
                    break;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    drain(rx, group);
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

/// The group's pass states, column by column, for the one `UPDATE … FROM unnest`.
fn pass_columns(passes: &[(&PassState, Option<&Revocation>)]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    vec![
        Box::new(passes.iter().map(|(s, _)| s.org_id).collect::<Vec<_>>()),
        Box::new(passes.iter().map(|(s, _)| s.id).collect::<Vec<_>>()),
        Box::new(passes.iter().map(|(s, _)| i32::try_from(s.uses_count).unwrap_or(i32::MAX)).collect::<Vec<_>>()),
        Box::new(passes.iter().map(|(s, _)| s.inside).collect::<Vec<_>>()),
        Box::new(passes.iter().map(|(s, _)| s.last_gate_id).collect::<Vec<_>>()),
        Box::new(passes.iter().map(|(s, _)| s.last_passage_at).collect::<Vec<_>>()),
        Box::new(passes.iter().map(|(s, _)| s.status.as_str()).collect::<Vec<_>>()),
        Box::new(passes.iter().map(|(s, _)| s.valid_to).collect::<Vec<_>>()),
        Box::new(passes.iter().map(|(_, r)| r.map(|r| r.at)).collect::<Vec<_>>()),
        Box::new(passes.iter().map(|(_, r)| r.and_then(|r| r.by)).collect::<Vec<_>>()),
        Box::new(passes.iter().map(|(_, r)| r.map(|r| r.reason.clone())).collect::<Vec<_>>()),
    ]
}

async fn commit(conn: &mut Connection, group: &[JournalBatch], attempt: Attempt) -> Result<(), String> {
    let (client, statements) = conn.get().await?;
    let checkin = match attempt {
        Attempt::First => &statements.checkin,
        Attempt::Retry => &statements.checkin_again,
    };
    let (pass, event, audit) = (&statements.pass, &statements.event, &statements.audit);

    // The whole group's check-ins go in as one statement.
    let mut checkins = CheckinColumns::default();
    // Each pass record is the pass's whole state, so only the last one of a group needs writing;
    // a revocation anywhere in the group is kept with it.
    let mut passes: Vec<(&PassState, Option<&Revocation>)> = Vec::new();
    let mut pass_index: HashMap<uuid::Uuid, usize> = HashMap::new();
    let mut events = Vec::new();
    let mut audits = Vec::new();
    for record in group.iter().flat_map(|b| &b.records) {
        match record {
            JournalRecord::Checkin(c) => checkins.push(c),
            JournalRecord::Pass { state, revocation } => {
                match pass_index.get(&state.id).and_then(|&i| passes.get_mut(i)) {
                    Some(seen) => {
                        seen.0 = state;
                        seen.1 = revocation.as_ref().or(seen.1);
                    }
                    None => {
                        pass_index.insert(state.id, passes.len());
                        passes.push((state, revocation.as_ref()));
                    }
                }
            }
            JournalRecord::PassEvent(e) => events.push(e),
            JournalRecord::Audit(a) => audits.push(a),
        }
    }

    // Statements are pipelined on the connection, in submission order.
    let mut pending: Vec<(&Statement, Vec<Box<dyn ToSql + Sync + Send>>)> = Vec::new();
    if !checkins.id.is_empty() {
        pending.push((checkin, checkins.into_params()));
    }
    if !passes.is_empty() {
        pending.push((pass, pass_columns(&passes)));
    }
    for e in events {
        pending.push((
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
        ));
    }
    for a in &audits {
        pending.push((
            audit,
            vec![
                Box::new(a.org_id),
                Box::new(a.actor_user_id),
                Box::new(a.actor_key_id),
                Box::new(a.action),
                Box::new(a.target_type),
                Box::new(a.target_id.clone()),
                Box::new(a.client_addr),
                Box::new(a.details.clone()),
            ],
        ));
    }
    let client = &*client;
    let executions = pending.iter().map(|(statement, params)| {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        async move { client.execute(*statement, &refs).await }
    });
    // One round trip: BEGIN, the statements and COMMIT go out together, in this order (the join
    // polls them in order, and a query is sent when first polled). If a statement fails,
    // PostgreSQL ignores the rest and turns the COMMIT into a rollback; the error is ours.
    futures_util::future::try_join3(
        client.batch_execute("BEGIN"),
        try_join_all(executions),
        client.batch_execute("COMMIT"),
    )
    .await
    .map_err(|e| crate::error::error_chain(&e))?;
    for a in audits {
        crate::audit::logged(a.action, a.target_type, &a.target_id);
    }
    Ok(())
}
