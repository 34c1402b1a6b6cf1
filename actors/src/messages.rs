//! The messages the actors exchange, in one place: what the engine asks of an OrgActor, a
//! GateActor and a PassActor, and what a GateActor asks of a PassActor. Each actor's module
//! re-exports its own.

use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::decision::{Gate, PassState};
use crate::domain::{CredentialKind, Decision, Direction, Reason, Source};
use crate::engine::{CredentialRef, EngineError, OrgSnapshot};
use crate::journal::AuditRecord;

// ---- to an OrgActor ----

/// Replace the organization's configuration.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Configure(pub Arc<OrgSnapshot>);

/// Add credentials to the index.
#[derive(Message)]
#[rtype(result = "()")]
pub struct IndexCredentials(pub Vec<([u8; 32], CredentialRef)>);

/// Remove the organization and everything the engine holds for it; the actor stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Remove;

// ---- to a GateActor ----

/// Let this pass's actor decide at the gate (the gate adds its recent entries, for escorts).
#[derive(Message)]
#[rtype(result = "Result<Outcome, EngineError>")]
pub struct Decide {
    pub pass_id: Uuid,
    pub admit: Admit,
}

/// Take the decisions waiting in the gate's inbox into its queue (they were published when made).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// The gate's recent entries.
#[derive(Message)]
#[rtype(result = "Vec<Outcome>")]
pub struct Queue;

/// A decision as the gate, the API and the dashboards see it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub gate_id: Uuid,
    pub decision: Decision,
    pub reason: Reason,
    pub direction: Direction,
    pub pass_id: Option<Uuid>,
    pub holder_name: Option<String>,
    pub open_ms: Option<u32>,
    pub decided_at: DateTime<Utc>,
    #[serde(skip)]
    pub alert: Option<&'static str>,
}

impl Outcome {
    /// The check-in that journals this decision (a fresh id; its alert with it).
    pub fn checkin(
        &self,
        org_id: Uuid,
        source: crate::domain::Source,
        kind: Option<crate::domain::CredentialKind>,
    ) -> crate::journal::CheckinRecord {
        crate::journal::CheckinRecord {
            id: Uuid::now_v7(),
            org_id,
            gate_id: self.gate_id,
            pass_id: self.pass_id,
            direction: self.direction,
            decision: self.decision,
            reason: self.reason,
            source,
            credential_kind: kind,
            decided_at: self.decided_at,
            alert: self.alert.map(std::borrow::Cow::Borrowed),
        }
    }
}

// ---- to a PassActor ----

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    /// The actor was passivated; the caller retries on a fresh one.
    #[error("the pass moved")]
    Moved,
    #[error("the pass is not active")]
    NotActive,
    #[error("no such pass in this organization")]
    OtherOrganization,
    /// Asked to expire before its `valid_to` (it was extended since the expiry was scheduled).
    #[error("the pass is not due to expire")]
    NotDue,
    #[error("the pass is not suspended")]
    NotSuspended,
    #[error("`valid_to` must be after `valid_from`")]
    BadValidity,
    #[error("the change could not be made durable: {0}")]
    Journal(String),
}

/// Decide for this pass at a gate (sent by the GateActor).
#[derive(Message, Clone)]
#[rtype(result = "Result<Outcome, PassError>")]
pub struct Admit {
    pub snapshot: Arc<OrgSnapshot>,
    pub gate: Gate,
    pub direction: Direction,
    pub now: DateTime<Utc>,
    pub qr_step: Option<u64>,
    /// Passes admitted inward at this gate recently (for escorts).
    pub recent: Vec<(Uuid, DateTime<Utc>)>,
    pub source: Source,
    pub kind: Option<CredentialKind>,
}

/// An operator's (or the clock's) change to a pass.
#[derive(Debug, Clone)]
pub enum PassChange {
    Revoke { reason: String },
    Suspend,
    Resume,
    Extend { valid_to: DateTime<Utc> },
    Expire,
}

/// Apply a change, durably.
#[derive(Message, Clone)]
#[rtype(result = "Result<PassState, PassError>")]
pub struct Change {
    /// The organization the caller acts in: a pass of another one is not there for it.
    pub org_id: Option<Uuid>,
    pub change: PassChange,
    pub actor: Option<Uuid>,
    pub at: DateTime<Utc>,
    /// The audit row, committed in the same transaction as the change.
    pub audit: Option<AuditRecord>,
}

/// The current state.
#[derive(Message, Clone)]
#[rtype(result = "Result<PassState, PassError>")]
pub struct GetState;
