//! What the actors hand to the Journal (the PostgreSQL writer in the `portcullis` crate), and the
//! handle they hand it with. Records go in order through one channel; the writer commits them in
//! groups. A durable write returns only once its group is committed.

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::decision::PassState;
use crate::domain::{CredentialKind, Decision, Direction, PassStatus, Reason};

#[derive(Debug, Clone)]
pub struct CheckinRecord {
    pub id: Uuid,
    pub org_id: Uuid,
    pub gate_id: Uuid,
    pub pass_id: Option<Uuid>,
    pub direction: Direction,
    pub decision: Decision,
    pub reason: Reason,
    pub source: &'static str,
    pub credential_kind: Option<CredentialKind>,
    pub decided_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Revocation {
    pub at: DateTime<Utc>,
    pub by: Option<Uuid>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct PassEventRecord {
    pub org_id: Uuid,
    pub pass_id: Uuid,
    pub kind: &'static str,
    pub status: PassStatus,
    pub uses_count: u32,
    pub actor_id: Option<Uuid>,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// An audit row committed with the change it describes (same transaction).
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub org_id: Option<Uuid>,
    pub actor_user_id: Option<Uuid>,
    pub actor_key_id: Option<Uuid>,
    pub client_addr: Option<std::net::IpAddr>,
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: String,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone)]
pub enum JournalRecord {
    Checkin(CheckinRecord),
    /// The pass's state as it is now (uses, inside, status, validity), and its revocation if any.
    Pass {
        state: Box<PassState>,
        revocation: Option<Revocation>,
    },
    PassEvent(PassEventRecord),
    Audit(Box<AuditRecord>),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("the journal is shut down")]
    Closed,
    #[error("the journal could not commit: {0}")]
    Commit(String),
}

/// A group of records written together, with whom to tell when they are durable.
#[derive(Debug)]
pub struct JournalBatch {
    pub records: Vec<JournalRecord>,
    pub ack: Option<oneshot::Sender<Result<(), JournalError>>>,
}

/// Records the journal could not take: counted and logged, never silent.
fn dropped(count: usize, err: &JournalError) {
    metrics::counter!("portcullis_journal_dropped_records_total").increment(count as u64);
    tracing::warn!(records = count, error = %err, "journal records dropped");
}

#[derive(Debug, Clone)]
pub struct JournalHandle {
    tx: mpsc::Sender<JournalBatch>,
}

impl JournalHandle {
    /// A handle and the receiving end the writer drains.
    pub fn channel(capacity: usize) -> (JournalHandle, mpsc::Receiver<JournalBatch>) {
        let (tx, rx) = mpsc::channel(capacity);
        (JournalHandle { tx }, rx)
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

    /// Queues records and waits until they are committed.
    pub async fn write_durable(&self, records: Vec<JournalRecord>) -> Result<(), JournalError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(JournalBatch { records, ack: Some(ack) }).await.map_err(|_| JournalError::Closed)?;
        done.await.map_err(|_| JournalError::Closed)?
    }
}
