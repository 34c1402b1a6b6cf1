//! What the actors hand to the Journal (the PostgreSQL writer in the `portcullis` crate), and the
//! handle they hand it with. Records go in order through one channel; the writer commits them in
//! groups, or, while PostgreSQL is away, appends them to its on-disk spool (which is why records
//! are serializable). A durable write returns once its group is committed or spooled, and says
//! which ([`Durability`]).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::decision::PassState;
use crate::domain::{CredentialKind, Decision, Direction, PassEventKind, PassStatus, Reason, Source};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckinRecord {
    pub id: Uuid,
    pub org_id: Uuid,
    pub gate_id: Uuid,
    pub pass_id: Option<Uuid>,
    pub direction: Direction,
    pub decision: Decision,
    pub reason: Reason,
    pub source: Source,
    pub credential_kind: Option<CredentialKind>,
    pub decided_at: DateTime<Utc>,
    /// Something security should look at (`revoked_pass_inside`, `controller_out_of_sync`): the
    /// journal raises it as an event with the check-in. (Absent in spools of older versions.)
    #[serde(default)]
    pub alert: Option<Cow<'static, str>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    pub at: DateTime<Utc>,
    pub by: Option<Uuid>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassEventRecord {
    pub org_id: Uuid,
    pub pass_id: Uuid,
    pub kind: PassEventKind,
    pub status: PassStatus,
    pub uses_count: u32,
    pub actor_id: Option<Uuid>,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// An audit row committed with the change it describes (same transaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub org_id: Option<Uuid>,
    pub actor_user_id: Option<Uuid>,
    pub actor_key_id: Option<Uuid>,
    pub client_addr: Option<std::net::IpAddr>,
    pub action: Cow<'static, str>,
    pub target_type: Cow<'static, str>,
    pub target_id: String,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JournalRecord {
    Checkin(CheckinRecord),
    /// Replaces the check-in of the same id written before it: a consuming admit whose commit
    /// did not come in time was refused after all (`fail_mode` `closed`), so the allow it first
    /// recorded must not stand if that commit lands late.
    Refusal(CheckinRecord),
    /// The pass's state as it is now (uses, inside, status, validity), and its revocation if any.
    /// Written with the batch it comes in.
    Pass {
        state: Box<PassState>,
        revocation: Option<Revocation>,
    },
    /// The pass's state after a passage (an allowed entry or exit), which changes only what its
    /// check-ins already say: uses, inside, last gate and passage. The pass row is its checkpoint,
    /// written behind the check-ins (see the writer); a row left behind by a crash is brought up
    /// to date from the check-ins after it when the engine next starts.
    Passage(Box<PassState>),
    PassEvent(PassEventRecord),
    Audit(Box<AuditRecord>),
}

impl JournalRecord {
    /// Whether writing the record twice would leave two rows (check-ins are written by their id,
    /// pass states as absolute values: those may be written again safely).
    pub fn is_idempotent(&self) -> bool {
        !matches!(self, JournalRecord::PassEvent(_) | JournalRecord::Audit(_))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("the journal is shut down")]
    Closed,
    #[error("the journal could not commit: {0}")]
    Commit(String),
    #[error("the journal can neither commit nor spool: {0}")]
    Unavailable(String),
}

/// Where a durable write's records are once it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Committed to PostgreSQL.
    Committed,
    /// Appended (and synced) to the on-disk spool while PostgreSQL is away; committed when it
    /// returns.
    Spooled,
}

/// A group of records written together, with whom to tell when they are durable.
#[derive(Debug)]
pub struct JournalBatch {
    pub records: Vec<JournalRecord>,
    pub ack: Option<oneshot::Sender<Result<Durability, JournalError>>>,
}

/// Records the journal could not take: counted and logged, never silent.
fn dropped(count: usize, err: &JournalError) {
    metrics::counter!("portcullis_journal_dropped_records_total").increment(count as u64);
    tracing::warn!(records = count, error = %err, "journal records dropped");
}

/// How the journal is doing, as its writer tells it (for `/ready`, `/metrics` and the stream).
#[derive(Debug, Default)]
pub struct JournalHealth {
    spooling: AtomicBool,
    spooled_records: AtomicU64,
    spooled_bytes: AtomicU64,
    /// When the oldest spooled record was spooled (milliseconds since the epoch; 0: none).
    oldest_spooled_ms: AtomicI64,
    /// Whether no one wants entries as events (no webhook endpoint subscribed to them): the
    /// journal then writes only first arrivals. Unset (wanted) until someone looks.
    entries_unwanted: AtomicBool,
}

impl JournalHealth {
    /// Whether entries are wanted as events (see `entries_unwanted`).
    pub fn entries_wanted(&self) -> bool {
        !self.entries_unwanted.load(Ordering::Relaxed)
    }

    pub fn set_entries_wanted(&self, wanted: bool) {
        self.entries_unwanted.store(!wanted, Ordering::Relaxed);
    }

    /// Whether records go to the spool rather than to PostgreSQL.
    pub fn spooling(&self) -> bool {
        self.spooling.load(Ordering::Relaxed)
    }

    pub fn spooled_records(&self) -> u64 {
        self.spooled_records.load(Ordering::Relaxed)
    }

    pub fn spooled_bytes(&self) -> u64 {
        self.spooled_bytes.load(Ordering::Relaxed)
    }

    /// When the oldest record still in the spool was spooled.
    pub fn oldest_spooled(&self) -> Option<DateTime<Utc>> {
        match self.oldest_spooled_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }

    /// The writer's report: spooling or not, and what the spool holds.
    pub fn set(&self, spooling: bool, records: u64, bytes: u64, oldest: Option<DateTime<Utc>>) {
        self.spooling.store(spooling, Ordering::Relaxed);
        self.spooled_records.store(records, Ordering::Relaxed);
        self.spooled_bytes.store(bytes, Ordering::Relaxed);
        self.oldest_spooled_ms.store(oldest.map_or(0, |t| t.timestamp_millis()), Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
pub struct JournalHandle {
    tx: mpsc::Sender<JournalBatch>,
    health: Arc<JournalHealth>,
}

impl JournalHandle {
    /// A handle and the receiving end the writer drains.
    pub fn channel(capacity: usize) -> (JournalHandle, mpsc::Receiver<JournalBatch>) {
        let (tx, rx) = mpsc::channel(capacity);
        (JournalHandle { tx, health: Arc::default() }, rx)
    }

    pub fn health(&self) -> &Arc<JournalHealth> {
        &self.health
    }

    /// Batches waiting in the channel for the writer (answered, not yet committed or spooled).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues records; waits only if the writer is far behind (backpressure).
    pub async fn write(&self, records: Vec<JournalRecord>) -> Result<(), JournalError> {
        self.tx.send(JournalBatch { records, ack: None }).await.map_err(|_| JournalError::Closed)
    }

    /// Queues records whose answer does not wait for them. If the journal is shut down they are
    /// lost: that is counted and logged, never silent.
    pub async fn write_or_count(&self, records: Vec<JournalRecord>) {
        let count = records.len();
        if let Err(err) = self.write(records).await {
            dropped(count, &err);
        }
    }

    /// Queues records without waiting when the channel has room (the usual case); `Err` hands
    /// them back when it is full, for the caller to wait with [`JournalHandle::write_or_count`].
    pub fn try_write(&self, records: Vec<JournalRecord>) -> Result<(), Vec<JournalRecord>> {
        use mpsc::error::TrySendError;
        match self.tx.try_send(JournalBatch { records, ack: None }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(batch)) => Err(batch.records),
            Err(TrySendError::Closed(batch)) => {
                dropped(batch.records.len(), &JournalError::Closed);
                Ok(())
            }
        }
    }

    /// Queues records and waits until they are committed (or spooled: see [`Durability`]).
    pub async fn write_durable(&self, records: Vec<JournalRecord>) -> Result<Durability, JournalError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(JournalBatch { records, ack: Some(ack) }).await.map_err(|_| JournalError::Closed)?;
        done.await.map_err(|_| JournalError::Closed)?
    }
}
