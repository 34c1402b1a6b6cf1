//! The Journal's writer: drains the actors' records and commits them to PostgreSQL in groups
//! (one transaction per group: all check-ins in one `unnest` insert, the changed passes, the
//! events; statements pipelined), then tells each durable waiter.
//!
//! A passage changes only what its check-in already records (uses, inside, last gate and
//! passage), so the pass row is not rewritten in the passage's commit: it is a checkpoint, written
//! `journal.checkpoint_ms` later for every pass that passed meanwhile, in one transaction, and
//! whenever the journal is flushed or closed. A consuming admit's commit is then its check-in
//! alone. An engine killed before its checkpoint leaves rows behind; the next start counts the
//! check-ins after each row's `last_passage_at` into it (`load::catch_up_passes`).
//!
//! A group whose commit fails or does not come back within `journal.commit_timeout_ms`
//! (PostgreSQL gone or hung) is appended to the [`Spool`] instead, and so is every later group
//! until the spool has been replayed, in order, into PostgreSQL: the journal keeps taking records
//! through an outage, and its durable waiters are told [`Durability::Spooled`]. It tries
//! PostgreSQL again every `journal.retry_ms`. A spool left by a stopped or killed engine is
//! replayed after the next start.
//!
//! Writing twice is safe, which is what makes both retries and the replay possible (a commit
//! whose answer was lost may have happened): check-ins are inserted by their id, pass updates
//! write absolute values, and a batch holding rows that would be duplicated (pass events, audit
//! rows) is written with an id recorded in `journal_batches` in the same transaction, and skipped
//! when replayed if that id is there. A group PostgreSQL rejects (a gate deleted meanwhile) is
//! retried batch by batch, so one bad record fails only its own batch; what still cannot be
//! written is logged and counted, never silent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::future::try_join_all;
use portcullis_actors::decision::PassState;
use portcullis_actors::engine::WeakEngine;
use portcullis_actors::events::Event;
use portcullis_actors::journal::{
    CheckinRecord, Durability, JournalBatch, JournalError, JournalHealth, JournalRecord, Revocation,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Statement};
use uuid::Uuid;

use super::spool::{Spool, SpoolEntry};

/// The journal connection's `application_name`: it stands apart from the pool's connections in
/// `pg_stat_activity` (what an operator looks at when commits slow down, and how the bench finds
/// its server process).
pub const APPLICATION_NAME: &str = "portcullis-journal";

/// Forgets batch ids older than a week: they matter only while a spool that may hold them waits to
/// be replayed (run at start and by the periodic sweep).
pub const PRUNE_BATCHES: &str = "DELETE FROM journal_batches WHERE written_at < now() - interval '7 days'";

/// How the writer runs (from the `[journal]` settings).
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    pub commit_timeout: Duration,
    pub retry: Duration,
    /// How long a pass row may stay behind its check-ins (`journal.checkpoint_ms`).
    pub checkpoint: Duration,
}

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
        self.source.push(c.source.as_str());
        self.kind.push(c.credential_kind.map(|k| k.as_str()));
        self.decided_at.push(c.decided_at);
    }

    /// The entries (allows of a pass), as the outbox's `entered` statement takes them.
    fn entries(&self) -> Entries {
        let mut entries = Entries::default();
        for (i, decision) in self.decision.iter().enumerate() {
            let pass = self.pass_id.get(i).copied().flatten();
            if let (true, Some(pass)) = (*decision == "allow", pass) {
                let column = |v: &Vec<uuid::Uuid>| v.get(i).copied().unwrap_or_default();
                entries.id.push(column(&self.id));
                entries.org_id.push(column(&self.org_id));
                entries.gate_id.push(column(&self.gate_id));
                entries.pass_id.push(pass);
                entries.direction.push(self.direction.get(i).copied().unwrap_or("in"));
                entries.source.push(self.source.get(i).copied().unwrap_or("api"));
                entries.decided_at.push(self.decided_at.get(i).copied().unwrap_or_default());
            }
        }
        entries
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

/// A group's entries of a pass, column by column, for their outbox events.
#[derive(Default)]
struct Entries {
    id: Vec<uuid::Uuid>,
    org_id: Vec<uuid::Uuid>,
    gate_id: Vec<uuid::Uuid>,
    pass_id: Vec<uuid::Uuid>,
    direction: Vec<&'static str>,
    source: Vec<&'static str>,
    decided_at: Vec<chrono::DateTime<chrono::Utc>>,
    /// The pass's first entry (its uses went to 1 in this group).
    first_arrival: Vec<bool>,
}

impl Entries {
    fn into_params(self) -> Vec<Box<dyn ToSql + Sync + Send>> {
        vec![
            Box::new(self.id),
            Box::new(self.org_id),
            Box::new(self.gate_id),
            Box::new(self.pass_id),
            Box::new(self.direction),
            Box::new(self.source),
            Box::new(self.decided_at),
            Box::new(self.first_arrival),
        ]
    }
}

const CHECKIN_INSERT: &str = "INSERT INTO checkins (id, org_id, gate_id, pass_id, direction, decision, reason, source, credential_kind, decided_at)
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
                          $7::text[], $8::text[], $9::text[], $10::timestamptz[])";

/// A group's first attempt, or a replay (of the spool, or batch by batch after a rejection)
/// that may find some of it written already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    First,
    Replay,
}

/// Why a commit did not happen.
#[derive(Debug)]
enum Failure {
    /// PostgreSQL refused it (the transaction rolled back): writing it again will not help.
    Rejected(String),
    /// PostgreSQL could not be reached, or did not answer in time: the outcome is unknown.
    Unreachable(String),
}

impl Failure {
    fn from_postgres(err: &tokio_postgres::Error) -> Failure {
        let message = crate::error::error_chain(err);
        // The server away (the same test as the API's 503), not the records.
        if crate::error::is_unavailable(err) { Failure::Unreachable(message) } else { Failure::Rejected(message) }
    }
}

/// The journal's statements, prepared once per connection.
struct Statements {
    checkin: Statement,
    /// The same insert, skipping check-ins already there: for a replay, whose first attempt may
    /// have committed although its answer was lost.
    checkin_again: Statement,
    /// A refusal replaces the check-in of its id (or is one, if that never got written).
    refusal: Statement,
    pass: Statement,
    /// The passage columns of passes whose rows are behind their check-ins (the checkpoint).
    checkpoint: Statement,
    /// A pass event, and its outbox event (`visitpass.<kind>`) in the same statement.
    event: Statement,
    /// The outbox events of the group's entries (`visitpass.checked_in` / `_out`), by check-in id.
    entered: Statement,
    /// A refused admit's entry event, taken back if it has not gone out yet.
    unentered: Statement,
    /// `alert.raised` for check-ins that raise one (by check-in id; the event's id is derived
    /// from it, so a replay writes it once).
    alerted: Statement,
    audit: Statement,
    batches: Statement,
    /// The batch ids not yet written (a replay skips the others).
    batches_new: Statement,
}

/// The journal's own connection, reopened when lost.
struct Connection {
    config: Config,
    open: Option<(Client, Statements)>,
}

impl Connection {
    /// Forgets the connection (after a timeout its state is unknown); the next use reconnects.
    fn reset(&mut self) {
        self.open = None;
    }

    async fn get(&mut self) -> Result<&mut (Client, Statements), Failure> {
        if self.open.as_ref().is_none_or(|(client, _)| client.is_closed()) {
            self.open = None;
            let err = |e: tokio_postgres::Error| Failure::Unreachable(crate::error::error_chain(&e));
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
                refusal: client
                    .prepare(&format!(
                        "{CHECKIN_INSERT} ON CONFLICT (id) DO UPDATE SET decision = EXCLUDED.decision, reason = EXCLUDED.reason"
                    ))
                    .await
                    .map_err(err)?,
                batches: client
                    .prepare("INSERT INTO journal_batches (id) SELECT unnest($1::uuid[])")
                    .await
                    .map_err(err)?,
                batches_new: client
                    .prepare(
                        "INSERT INTO journal_batches (id) SELECT unnest($1::uuid[]) ON CONFLICT (id) DO NOTHING RETURNING id",
                    )
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
                // Never moves a row back (a passage's time only grows), and drops a gate deleted
                // since the passage rather than the whole checkpoint.
                checkpoint: client
                    .prepare(
                        "UPDATE passes p SET uses_count = u.uses_count, inside = u.inside,
                                last_gate_id = (SELECT g.id FROM gates g WHERE g.org_id = u.org_id AND g.id = u.last_gate_id),
                                last_passage_at = u.last_passage_at, updated_at = now(), version = p.version + 1
                         FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::bool[], $5::uuid[], $6::timestamptz[])
                              AS u(org_id, id, uses_count, inside, last_gate_id, last_passage_at)
                         WHERE p.org_id = u.org_id AND p.id = u.id
                           AND (p.last_passage_at IS NULL OR p.last_passage_at < u.last_passage_at)",
                    )
                    .await
                    .map_err(err)?,
                event: client
                    .prepare(
                        "WITH e AS (
                             INSERT INTO pass_events (org_id, pass_id, kind, status, uses_count, actor_id, reason, at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                             RETURNING org_id, pass_id, kind, status, uses_count, actor_id, reason, at
                         )
                         INSERT INTO outbox (id, org_id, type, payload, occurred_at)
                         SELECT $9, e.org_id, 'visitpass.' || e.kind,
                                jsonb_build_object('pass_id', e.pass_id, 'holder_name', p.holder_name,
                                                   'status', e.status, 'reason', e.reason, 'actor_id', e.actor_id,
                                                   'uses_count', e.uses_count),
                                e.at
                         FROM e JOIN passes p ON p.org_id = e.org_id AND p.id = e.pass_id",
                    )
                    .await
                    .map_err(err)?,
                entered: client
                    .prepare(
                        "INSERT INTO outbox (id, org_id, type, payload, occurred_at)
                         SELECT u.id, u.org_id, 'visitpass.checked_' || u.direction,
                                jsonb_build_object('pass_id', u.pass_id, 'holder_name', p.holder_name,
                                                   'gate_id', u.gate_id, 'direction', u.direction,
                                                   'source', u.source, 'checkin_id', u.id,
                                                   'first_arrival', u.first_arrival),
                                u.decided_at
                         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
                                     $7::timestamptz[], $8::bool[])
                              AS u(id, org_id, gate_id, pass_id, direction, source, decided_at, first_arrival)
                         LEFT JOIN passes p ON p.org_id = u.org_id AND p.id = u.pass_id
                         -- Entries are the busiest events: written when someone wants them (an enabled
                         -- endpoint of the type, or the host told of a first arrival).
                         WHERE u.first_arrival OR EXISTS (
                             SELECT 1 FROM webhook_endpoints w WHERE w.org_id = u.org_id AND w.enabled
                               AND ('*' = ANY(w.event_types) OR 'visitpass.checked_' || u.direction = ANY(w.event_types)))
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .await
                    .map_err(err)?,
                unentered: client
                    .prepare("DELETE FROM outbox WHERE id = ANY($1)")
                    .await
                    .map_err(err)?,
                alerted: client
                    .prepare(
                        "INSERT INTO outbox (id, org_id, type, payload, occurred_at)
                         SELECT md5(c.id::text || '/alert')::uuid, c.org_id, 'alert.raised',
                                jsonb_build_object('alert', u.alert, 'gate_id', c.gate_id, 'pass_id', c.pass_id,
                                                   'holder_name', p.holder_name, 'checkin_id', c.id),
                                c.decided_at
                         FROM unnest($1::uuid[], $2::text[]) AS u(id, alert)
                         JOIN checkins c ON c.id = u.id
                         LEFT JOIN passes p ON p.org_id = c.org_id AND p.id = c.pass_id
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .await
                    .map_err(err)?,
                audit: client.prepare(crate::audit::INSERT).await.map_err(err)?,
            };
            self.open = Some((client, statements));
        }
        self.open.as_mut().ok_or_else(|| Failure::Unreachable("no connection".to_owned()))
    }
}

/// Most batches in one transaction.
const MAX_GROUP: usize = 512;
/// How long a group with no durable waiter lingers to gather more.
const LINGER: Duration = Duration::from_millis(2);
/// Most passes in one checkpoint statement.
const CHECKPOINT_CHUNK: usize = 5_000;

type Ack = Option<oneshot::Sender<Result<Durability, JournalError>>>;

/// Batches taken from the channel together, ready to commit or spool.
struct Group {
    entries: Vec<SpoolEntry>,
    acks: Vec<Ack>,
}

impl Group {
    fn new(batches: Vec<JournalBatch>) -> Group {
        let now = Utc::now();
        let (entries, acks) = batches
            .into_iter()
            .map(|b| {
                let id = b.records.iter().any(|r| !r.is_idempotent()).then(Uuid::now_v7);
                (SpoolEntry { id, spooled_at: now, records: b.records }, b.ack)
            })
            .unzip();
        Group { entries, acks }
    }

    fn records(&self) -> usize {
        self.entries.iter().map(|e| e.records.len()).sum()
    }
}

fn acknowledge(acks: Vec<Ack>, result: &Result<Durability, JournalError>) {
    for ack in acks.into_iter().flatten() {
        let _ = ack.send(result.clone());
    }
}

/// Tells committed groups' durable waiters, from a thread of its own. Each waiter is a task on an
/// actor's thread, and the scheduler tends to run a thread it wakes at once in place of its waker:
/// told from the writer, a group of 32 waiters held it about 180 µs (measured under `allow-32`)
/// before its next commit could start, with PostgreSQL idle meanwhile. This thread is
/// `SCHED_BATCH` (see [`portcullis_actors::sched`]), so handing it a group costs the writer one
/// wake and no wait.
struct Acker {
    tx: Option<std::sync::mpsc::Sender<Vec<Ack>>>,
}

impl Acker {
    fn start() -> Acker {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Ack>>();
        let spawned = portcullis_actors::sched::spawn_batch("journal-acks", move || {
            while let Ok(acks) = rx.recv() {
                acknowledge(acks, &Ok(Durability::Committed));
            }
        });
        match spawned {
            Ok(_) => Acker { tx: Some(tx) },
            Err(err) => {
                tracing::warn!(error = %err, "no thread for the journal's acknowledgements; the writer sends them itself");
                Acker { tx: None }
            }
        }
    }

    fn committed(&self, acks: Vec<Ack>) {
        if acks.iter().all(Option::is_none) {
            return;
        }
        match &self.tx {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(acks)) = tx.send(acks) {
                    acknowledge(acks, &Ok(Durability::Committed));
                }
            }
            None => acknowledge(acks, &Ok(Durability::Committed)),
        }
    }
}

fn lost(records: usize, err: &str) {
    metrics::counter!("portcullis_journal_failed_records_total").increment(records as u64);
    tracing::error!(records, error = %err, "journal records could not be written");
}

struct Writer {
    conn: Connection,
    /// Taken while an append runs on a blocking thread (`None` only if that thread was lost).
    spool: Option<Spool>,
    settings: WriterSettings,
    health: Arc<JournalHealth>,
    engine: WeakEngine,
    /// Set from a failed commit until the spool is replayed: groups go to the spool.
    degraded: Option<Instant>,
    /// How far the spool has been replayed (it is emptied once wholly replayed).
    replayed_to: u64,
    replayed_records: u64,
    /// Each pass's state after its passages committed since its row was last written: the
    /// checkpoint's work, due `settings.checkpoint` after `behind_since` (every pass that passed
    /// meanwhile, in one transaction).
    behind: HashMap<Uuid, PassState>,
    behind_since: Option<tokio::time::Instant>,
    acker: Acker,
}

/// Runs the writer until every handle is dropped. A non-empty spool (left by an engine that
/// stopped while PostgreSQL was away, or was killed) is replayed first.
pub async fn run(
    mut config: Config,
    rx: mpsc::Receiver<JournalBatch>,
    spool: Spool,
    settings: WriterSettings,
    health: Arc<JournalHealth>,
    engine: WeakEngine,
) {
    config.application_name(APPLICATION_NAME);
    let degraded = (!spool.is_empty()).then(Instant::now);
    if degraded.is_some() {
        tracing::warn!(
            records = spool.records(),
            bytes = spool.bytes(),
            "the journal's spool holds records from before; replaying them"
        );
    }
    let mut writer = Writer {
        conn: Connection { config, open: None },
        spool: Some(spool),
        settings,
        health,
        engine,
        degraded,
        replayed_to: 0,
        replayed_records: 0,
        behind: HashMap::new(),
        behind_since: None,
        acker: Acker::start(),
    };
    writer.report();
    writer.run(rx).await;
}

impl Writer {
    async fn run(&mut self, mut rx: mpsc::Receiver<JournalBatch>) {
        loop {
            if self.degraded.is_some() {
                if !self.run_degraded(&mut rx).await {
                    break;
                }
                continue;
            }
            let first = match self.behind_since {
                None => rx.recv().await,
                Some(since) => tokio::select! {
                    batch = rx.recv() => batch,
                    () = tokio::time::sleep_until(since + self.settings.checkpoint) => {
                        self.checkpoint().await;
                        continue;
                    }
                },
            };
            let Some(first) = first else { break };
            let mut batches = vec![first];
            drain(&mut rx, &mut batches);
            if batches.iter().all(|b| b.ack.is_none()) {
                linger(&mut rx, &mut batches).await;
            }
            // A flush (a batch of nothing, waited on) also waits for the checkpoint: whoever
            // flushes reads the pass rows as the engine has them.
            let (flushes, batches): (Vec<_>, Vec<_>) =
                batches.into_iter().partition(|b| b.records.is_empty() && b.ack.is_some());
            if !batches.is_empty() {
                self.commit_online(Group::new(batches)).await;
            }
            if !flushes.is_empty() {
                let durability = match self.degraded {
                    None => {
                        self.checkpoint().await;
                        Durability::Committed
                    }
                    Some(_) => Durability::Spooled,
                };
                acknowledge(flushes.into_iter().map(|b| b.ack).collect(), &Ok(durability));
            }
        }
        if self.degraded.is_none() {
            self.checkpoint().await;
        }
        match self.degraded {
            None => tracing::info!("journal drained and closed"),
            Some(_) => tracing::warn!(
                records = self.spool.as_ref().map_or(0, Spool::records),
                "journal closed with records in its spool; they are replayed at the next start"
            ),
        }
    }

    async fn commit_online(&mut self, group: Group) {
        let records = group.records();
        metrics::histogram!("portcullis_journal_batch_records").record(records as f64);
        let started = Instant::now();
        let result = self.commit(&group.entries, Attempt::First).await;
        metrics::histogram!("portcullis_journal_commit_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => self.acker.committed(group.acks),
            Err(Failure::Unreachable(err)) => {
                self.degrade(&err);
                self.spool_or_lose(group).await;
            }
            // Once more, batch by batch, so one bad record fails only its own batch.
            Err(Failure::Rejected(err)) => {
                tracing::warn!(error = %err, batches = group.entries.len(), "journal group rejected; retrying batch by batch");
                let mut rest = group.entries.into_iter().zip(group.acks);
                for (entry, ack) in rest.by_ref() {
                    match self.commit(std::slice::from_ref(&entry), Attempt::Replay).await {
                        Ok(()) => acknowledge(vec![ack], &Ok(Durability::Committed)),
                        Err(Failure::Rejected(err)) => {
                            lost(entry.records.len(), &err);
                            acknowledge(vec![ack], &Err(JournalError::Commit(err)));
                        }
                        Err(Failure::Unreachable(err)) => {
                            self.degrade(&err);
                            self.spool_or_lose(Group { entries: vec![entry], acks: vec![ack] }).await;
                            break;
                        }
                    }
                }
                let (entries, acks) = rest.unzip();
                if self.degraded.is_some() {
                    self.spool_or_lose(Group { entries, acks }).await;
                }
            }
        }
    }

    /// Commits within the bound; a commit that does not answer in time leaves its connection in
    /// an unknown state, so it is dropped.
    async fn commit(&mut self, entries: &[SpoolEntry], attempt: Attempt) -> Result<(), Failure> {
        let entries_wanted = self.health.entries_wanted();
        let result =
            within(self.settings.commit_timeout, commit(&mut self.conn, entries, attempt, entries_wanted)).await;
        let written = self.forget_if_unreachable(result)?;
        self.remember(written);
        Ok(())
    }

    /// A connection that failed or did not answer in time is in an unknown state: the next use
    /// opens another.
    fn forget_if_unreachable<T>(&mut self, result: Result<T, Failure>) -> Result<T, Failure> {
        if let Err(Failure::Unreachable(_)) = &result {
            self.conn.reset();
        }
        result
    }

    /// Takes a committed group's passages for the checkpoint.
    fn remember(&mut self, written: Written) {
        for id in &written.superseded {
            self.behind.remove(id);
        }
        for state in written.passages {
            self.behind.insert(state.id, state);
        }
        if self.behind.is_empty() {
            self.behind_since = None;
        } else if self.behind_since.is_none() {
            self.behind_since = Some(tokio::time::Instant::now());
        }
    }

    /// Writes the passage columns of every pass row behind its check-ins, in one transaction.
    /// Nothing depends on it but how current the rows are (the check-ins are the record): if it
    /// fails, the same passes are tried again at the next one.
    async fn checkpoint(&mut self) {
        if self.behind.is_empty() {
            self.behind_since = None;
            return;
        }
        let started = Instant::now();
        let passes: Vec<&PassState> = self.behind.values().collect();
        let count = passes.len();
        let result = within(self.settings.commit_timeout, checkpoint(&mut self.conn, &passes)).await;
        match self.forget_if_unreachable(result) {
            Ok(()) => {
                metrics::histogram!("portcullis_journal_checkpoint_seconds").record(started.elapsed().as_secs_f64());
                metrics::counter!("portcullis_journal_checkpoint_passes_total").increment(count as u64);
                self.behind.clear();
                self.behind_since = None;
            }
            Err(Failure::Unreachable(err) | Failure::Rejected(err)) => {
                tracing::warn!(passes = count, error = %err, "pass checkpoint failed; trying again later");
                self.behind_since = Some(tokio::time::Instant::now());
            }
        }
    }

    fn degrade(&mut self, err: &str) {
        if self.degraded.is_some() {
            return;
        }
        self.degraded = Some(Instant::now());
        metrics::counter!("portcullis_journal_degraded_total").increment(1);
        tracing::error!(error = %err, "PostgreSQL is unreachable; the journal spools to disk until it returns");
        self.alert("journal_degraded", format!("PostgreSQL is unreachable ({err}); decisions are spooled to disk"));
        self.report();
    }

    fn alert(&self, alert: &'static str, detail: String) {
        if let Some(engine) = self.engine.upgrade() {
            engine.publish_everywhere(&Event::Service { alert, detail });
        }
    }

    /// Appends the group to the spool and tells its waiters; if even that fails, the records are
    /// lost, loudly, and durable waiters are refused.
    async fn spool_or_lose(&mut self, mut group: Group) {
        // A batch with no records (a flush) only waits for what is before it.
        group.entries.retain(|e| !e.records.is_empty());
        if group.entries.is_empty() {
            acknowledge(group.acks, &Ok(Durability::Spooled));
            return;
        }
        let records = group.records();
        // The append and its fsync run on a blocking thread: this one also drives the engine's
        // timers and the readers' buses.
        let appended = match self.spool.take() {
            Some(mut spool) => {
                let entries = std::mem::take(&mut group.entries);
                match tokio::task::spawn_blocking(move || {
                    let result = spool.append(&entries);
                    (spool, result)
                })
                .await
                {
                    Ok((spool, result)) => {
                        self.spool = Some(spool);
                        result.map_err(|e| e.to_string())
                    }
                    Err(err) => Err(format!("the spool's thread was lost: {err}")),
                }
            }
            None => Err("the spool is not available".to_owned()),
        };
        match appended {
            Ok(()) => {
                metrics::counter!("portcullis_journal_spooled_records_total").increment(records as u64);
                acknowledge(group.acks, &Ok(Durability::Spooled));
            }
            Err(err) => {
                lost(records, &err);
                acknowledge(group.acks, &Err(JournalError::Unavailable(err)));
            }
        }
        self.report();
    }

    /// While degraded: spools what arrives, tries PostgreSQL every `retry`, and replays the spool
    /// when it answers. Returns `false` once the channel is closed.
    async fn run_degraded(&mut self, rx: &mut mpsc::Receiver<JournalBatch>) -> bool {
        let mut next_try = tokio::time::Instant::now();
        loop {
            tokio::select! {
                batch = rx.recv() => {
                    let Some(first) = batch else { return false };
                    let mut batches = vec![first];
                    drain(rx, &mut batches);
                    self.spool_or_lose(Group::new(batches)).await;
                }
                () = tokio::time::sleep_until(next_try) => {
                    self.report();
                    match self.replay(rx).await {
                        Ok(()) => return true,
                        Err(err) => {
                            tracing::debug!(error = %err, "PostgreSQL still unreachable");
                            next_try = tokio::time::Instant::now() + self.settings.retry;
                        }
                    }
                }
            }
        }
    }

    /// Replays the spool in order into PostgreSQL, taking whatever arrives meanwhile into the
    /// spool behind it; once it is all written, empties it and leaves the degraded state.
    async fn replay(&mut self, rx: &mut mpsc::Receiver<JournalBatch>) -> Result<(), String> {
        let started = Instant::now();
        let mut replayed = 0u64;
        loop {
            let spool = self.spool.as_ref().ok_or("the spool is not available")?;
            let mut reader = spool.reader(self.replayed_to).map_err(|e| e.to_string())?;
            let chunk: Vec<SpoolEntry> = std::iter::from_fn(|| reader.next_entry()).take(MAX_GROUP).collect();
            if chunk.is_empty() {
                if let Some(why) = reader.damaged() {
                    tracing::error!(
                        why,
                        at_byte = reader.position,
                        "the spool could not be read further; the rest of it is lost"
                    );
                }
                break;
            }
            let end = reader.position;
            match self.commit(&chunk, Attempt::Replay).await {
                Ok(()) => {}
                Err(Failure::Unreachable(err)) => return Err(err),
                Err(Failure::Rejected(err)) => {
                    tracing::warn!(error = %err, batches = chunk.len(), "spooled group rejected; replaying batch by batch");
                    for entry in &chunk {
                        match self.commit(std::slice::from_ref(entry), Attempt::Replay).await {
                            Ok(()) => {}
                            Err(Failure::Rejected(err)) => lost(entry.records.len(), &err),
                            Err(Failure::Unreachable(err)) => return Err(err),
                        }
                    }
                }
            }
            let records: usize = chunk.iter().map(|e| e.records.len()).sum();
            (self.replayed_to, replayed) = (end, replayed + records as u64);
            self.replayed_records += records as u64;
            // Keep taking records while replaying: they go behind what is being replayed.
            let mut batches = Vec::new();
            drain(rx, &mut batches);
            if !batches.is_empty() {
                self.spool_or_lose(Group::new(batches)).await;
            }
            self.report();
        }
        self.spool.as_mut().ok_or("the spool is not available")?.clear().map_err(|e| e.to_string())?;
        let outage = self.degraded.take().map(|t| t.elapsed()).unwrap_or_default();
        (self.replayed_to, self.replayed_records) = (0, 0);
        self.report();
        tracing::info!(
            replayed,
            replay_ms = started.elapsed().as_millis() as u64,
            outage_s = outage.as_secs(),
            "PostgreSQL is back; the spool is replayed and empty"
        );
        self.alert(
            "journal_recovered",
            format!("PostgreSQL is back; {replayed} spooled records written after {} s", outage.as_secs()),
        );
        Ok(())
    }

    /// Tells `/ready`, `/metrics` and the health handle what the spool holds.
    fn report(&self) {
        let spool = self.spool.as_ref();
        let records = spool.map_or(0, Spool::records).saturating_sub(self.replayed_records);
        let bytes = spool.map_or(0, Spool::bytes).saturating_sub(self.replayed_to);
        let oldest = if records == 0 { None } else { spool.and_then(Spool::oldest) };
        self.health.set(self.degraded.is_some(), records, bytes, oldest);
        metrics::gauge!("portcullis_journal_spooling").set(if self.degraded.is_some() { 1.0 } else { 0.0 });
        metrics::gauge!("portcullis_journal_spool_records").set(records as f64);
        metrics::gauge!("portcullis_journal_spool_bytes").set(bytes as f64);
        // Its age is computed when read (`/metrics`, `/ready`), from `oldest`.
    }
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

/// `work` within `bound`: no answer in time is [`Failure::Unreachable`].
async fn within<T>(bound: Duration, work: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::time::timeout(bound, work).await.unwrap_or_else(|_| {
        Err(Failure::Unreachable(format!("no answer from PostgreSQL within {} ms", bound.as_millis())))
    })
}

/// One transaction updating the passage columns of the given passes' rows, a chunk a statement.
async fn checkpoint(conn: &mut Connection, passes: &[&PassState]) -> Result<(), Failure> {
    let (client, statements) = conn.get().await?;
    let client = &*client;
    let pg = |e: tokio_postgres::Error| Failure::from_postgres(&e);
    let pending: Vec<Pending> = passes
        .chunks(CHECKPOINT_CHUNK)
        .map(|chunk| -> Pending {
            let columns: Vec<Box<dyn ToSql + Sync + Send>> = vec![
                Box::new(chunk.iter().map(|s| s.org_id).collect::<Vec<_>>()),
                Box::new(chunk.iter().map(|s| s.id).collect::<Vec<_>>()),
                Box::new(chunk.iter().map(|s| i32::try_from(s.uses_count).unwrap_or(i32::MAX)).collect::<Vec<_>>()),
                Box::new(chunk.iter().map(|s| s.inside).collect::<Vec<_>>()),
                Box::new(chunk.iter().map(|s| s.last_gate_id).collect::<Vec<_>>()),
                Box::new(chunk.iter().map(|s| s.last_passage_at).collect::<Vec<_>>()),
            ];
            (&statements.checkpoint, columns)
        })
        .collect();
    pipelined(client, &pending, false).await.map_err(pg)?;
    Ok(())
}

/// A statement and its parameters.
type Pending<'s> = (&'s Statement, Vec<Box<dyn ToSql + Sync + Send>>);

/// Runs the statements as one transaction in one round trip: BEGIN (unless `began`), the
/// statements and COMMIT go out together, in this order (the join polls them in order, and a
/// query is sent when first polled). If a statement fails, PostgreSQL ignores the rest and turns
/// the COMMIT into a rollback; the error is ours.
async fn pipelined(client: &Client, pending: &[Pending<'_>], began: bool) -> Result<(), tokio_postgres::Error> {
    let executions = pending.iter().map(|(statement, params)| {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        async move { client.execute(*statement, &refs).await }
    });
    if began {
        futures_util::future::try_join(try_join_all(executions), client.batch_execute("COMMIT")).await?;
    } else {
        futures_util::future::try_join3(
            client.batch_execute("BEGIN"),
            try_join_all(executions),
            client.batch_execute("COMMIT"),
        )
        .await?;
    }
    Ok(())
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

/// What a committed group leaves for the checkpoint.
#[derive(Default)]
struct Written {
    /// Passes whose whole state the group wrote: anything older waiting for the checkpoint is
    /// superseded.
    superseded: Vec<Uuid>,
    /// The state of each pass after the group's last passage (none written since in the group).
    passages: Vec<PassState>,
}

async fn commit(
    conn: &mut Connection,
    entries: &[SpoolEntry],
    attempt: Attempt,
    entries_wanted: bool,
) -> Result<Written, Failure> {
    let (client, statements) = conn.get().await?;
    let client = &*client;
    let pg = |e: tokio_postgres::Error| Failure::from_postgres(&e);
    let ids: Vec<Uuid> = entries.iter().filter_map(|e| e.id).collect();
    // A replay first learns which of its batches with an id are not written yet (in the same
    // transaction, so no one else writes them meanwhile) and skips the others.
    let mut skip: Vec<Uuid> = Vec::new();
    let mut began = false;
    if attempt == Attempt::Replay && !ids.is_empty() {
        let fresh = futures_util::future::try_join(
            client.batch_execute("BEGIN"),
            client.query(&statements.batches_new, &[&ids]),
        )
        .await;
        let fresh = match fresh {
            Ok((_, rows)) => rows,
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(pg(e));
            }
        };
        let fresh: Vec<Uuid> = fresh.iter().filter_map(|r| r.try_get(0).ok()).collect();
        skip = ids.iter().filter(|id| !fresh.contains(id)).copied().collect();
        began = true;
    }
    let entries = entries.iter().filter(|e| e.id.is_none_or(|id| !skip.contains(&id)));
    let checkin = match attempt {
        Attempt::First => &statements.checkin,
        Attempt::Replay => &statements.checkin_again,
    };
    let (pass, event, audit) = (&statements.pass, &statements.event, &statements.audit);

    // The whole group's check-ins go in as one statement, and its refusals as another after it.
    let mut checkins = CheckinColumns::default();
    // Check-ins that raise an alert: their own, or an anti-passback refusal.
    let mut alerts: (Vec<Uuid>, Vec<String>) = (Vec::new(), Vec::new());
    let mut refusals = CheckinColumns::default();
    // Each pass record is the pass's whole state, so only the last one of a group needs writing;
    // a revocation anywhere in the group is kept with it.
    let mut passes: Vec<(&PassState, Option<&Revocation>)> = Vec::new();
    let mut pass_index: HashMap<Uuid, usize> = HashMap::new();
    // Passages after a pass's last whole state in the group: left for the checkpoint.
    let mut passages: HashMap<Uuid, &PassState> = HashMap::new();
    // Each pass's newest state in the group, of either kind (for its entries' first arrival).
    let mut newest: HashMap<Uuid, &PassState> = HashMap::new();
    let mut events = Vec::new();
    let mut audits = Vec::new();
    for record in entries.flat_map(|e| &e.records) {
        match record {
            JournalRecord::Checkin(c) => {
                checkins.push(c);
                let anti_passback = c.reason == portcullis_actors::domain::Reason::AntiPassback;
                let alert = c.alert.as_deref().or(anti_passback.then_some("anti_passback"));
                if let Some(alert) = alert {
                    alerts.0.push(c.id);
                    alerts.1.push(alert.to_owned());
                }
            }
            JournalRecord::Refusal(c) => refusals.push(c),
            JournalRecord::Passage(state) => {
                passages.insert(state.id, state);
                newest.insert(state.id, state);
            }
            JournalRecord::Pass { state, revocation } => {
                passages.remove(&state.id);
                newest.insert(state.id, state);
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
    let mut pending: Vec<Pending> = Vec::new();
    if attempt == Attempt::First && !ids.is_empty() {
        pending.push((&statements.batches, vec![Box::new(ids)]));
    }
    // Entries of a pass go out as events, written with their check-ins.
    let mut entered = checkins.entries();
    entered.first_arrival = entered
        .pass_id
        .iter()
        .zip(&entered.direction)
        .map(|(pass, direction)| *direction == "in" && newest.get(pass).is_some_and(|state| state.uses_count == 1))
        .collect();
    let refused = refusals.id.clone();
    if !checkins.id.is_empty() {
        pending.push((checkin, checkins.into_params()));
    }
    // Entries go out only when wanted (by an endpoint, or a host's first-arrival notice).
    if !entered.id.is_empty() && (entries_wanted || entered.first_arrival.contains(&true)) {
        pending.push((&statements.entered, entered.into_params()));
    }
    if !alerts.0.is_empty() {
        pending.push((&statements.alerted, vec![Box::new(alerts.0), Box::new(alerts.1)]));
    }
    if !refusals.id.is_empty() {
        pending.push((&statements.refusal, refusals.into_params()));
        pending.push((&statements.unentered, vec![Box::new(refused)]));
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
                Box::new(e.kind.as_str()),
                Box::new(e.status.as_str()),
                Box::new(i32::try_from(e.uses_count).unwrap_or(i32::MAX)),
                Box::new(e.actor_id),
                Box::new(e.reason.clone()),
                Box::new(e.at),
                Box::new(Uuid::now_v7()),
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
                Box::new(a.action.clone()),
                Box::new(a.target_type.clone()),
                Box::new(a.target_id.clone()),
                Box::new(a.client_addr),
                Box::new(a.details.clone()),
            ],
        ));
    }
    // BEGIN went out already with a replay's batch ids.
    pipelined(client, &pending, began).await.map_err(pg)?;
    for a in audits {
        crate::audit::logged(&a.action, &a.target_type, &a.target_id);
    }
    Ok(Written {
        superseded: passes.iter().map(|(state, _)| state.id).collect(),
        passages: passages.into_values().cloned().collect(),
    })
}
