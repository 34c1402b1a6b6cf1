//! The audit log: every security-relevant action, with who, where from, on what, and when; never
//! secrets and never personal payloads (no emails, names or passwords in `details`).

use std::net::IpAddr;

use deadpool_postgres::GenericClient;
use portcullis_actors::journal::AuditRecord;
use serde_json::Value;
use uuid::Uuid;

use crate::auth::principal::Principal;

/// Who acted, and from which address.
#[derive(Debug, Clone, Copy, Default)]
pub struct Actor {
    pub user_id: Option<Uuid>,
    pub key_id: Option<Uuid>,
    pub addr: Option<IpAddr>,
}

impl Actor {
    pub fn of(principal: &Principal, addr: Option<IpAddr>) -> Self {
        Actor { user_id: principal.user_id(), key_id: principal.key_id(), addr }
    }

    pub fn user(user_id: Option<Uuid>, addr: Option<IpAddr>) -> Self {
        Actor { user_id, key_id: None, addr }
    }
}

/// One audited action.
#[derive(Debug, Clone)]
pub struct Event {
    pub org_id: Option<Uuid>,
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: String,
    pub details: Value,
}

impl Event {
    pub fn new(
        org_id: Option<Uuid>,
        action: &'static str,
        target_type: &'static str,
        target_id: impl ToString,
    ) -> Self {
        Event {
            org_id,
            action,
            target_type,
            target_id: target_id.to_string(),
            details: Value::Object(Default::default()),
        }
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// The one statement that writes an audit row (here, and in the journal's commit).
pub const INSERT: &str =
    "INSERT INTO audit_log (org_id, actor_user_id, actor_key_id, action, target_type, target_id, client_addr, details)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// The log line of a committed audit row (no details: they may name people).
pub fn logged(action: &str, target_type: &str, target_id: &str) {
    tracing::info!(action, target_type, target_id, "audit");
}

impl Event {
    /// The row for the journal, to be committed with the change it describes.
    pub fn for_journal(self, actor: Actor) -> AuditRecord {
        AuditRecord {
            org_id: self.org_id,
            actor_user_id: actor.user_id,
            actor_key_id: actor.key_id,
            client_addr: actor.addr,
            action: self.action.into(),
            target_type: self.target_type.into(),
            target_id: self.target_id,
            details: self.details,
        }
    }
}

/// Writes the event, in the caller's transaction when there is one.
pub async fn record(client: &impl GenericClient, actor: Actor, event: Event) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            INSERT,
            &[
                &event.org_id,
                &actor.user_id,
                &actor.key_id,
                &event.action,
                &event.target_type,
                &event.target_id,
                &actor.addr,
                &event.details,
            ],
        )
        .await?;
    logged(event.action, event.target_type, &event.target_id);
    Ok(())
}
