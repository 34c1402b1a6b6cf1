//! What happened, read back: the audit log and the check-in journal, newest first.

use chrono::{DateTime, Utc};
use portcullis_actors::domain::{CredentialKind, Decision, Direction};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::app::App;
use crate::db::pagination::{self, Page};
use crate::db::query_as;
use crate::error::AppError;

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    action: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct CheckinQuery {
    gate_id: Option<Uuid>,
    pass_id: Option<Uuid>,
    decision: Option<Decision>,
    #[serde(default, deserialize_with = "crate::app::input::opt_timestamp")]
    from: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "crate::app::input::opt_timestamp")]
    to: Option<DateTime<Utc>>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// One security-relevant action: who did what to which object, from where (never secrets).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// e.g. `pass.revoked`, `api_key.rotated`.
    pub action: String,
    pub actor_user_id: Option<Uuid>,
    pub actor_key_id: Option<Uuid>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub client_addr: Option<String>,
    /// What changed, without sensitive values.
    #[schema(value_type = Object)]
    pub details: Value,
}

/// One decision of the journal.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkin {
    pub id: Uuid,
    pub gate_id: Uuid,
    pub pass_id: Option<Uuid>,
    pub direction: Direction,
    pub decision: Decision,
    /// Why (a `Reason` spelling; read as text, so rows journaled by older versions stay readable).
    pub reason: String,
    /// Where the credential came from (`api`, `osdp`, `uhppote`, …).
    pub source: String,
    pub credential_kind: Option<CredentialKind>,
    pub decided_at: DateTime<Utc>,
}

/// The organization's audit log (its ids are the cursor).
pub async fn audit_log(app: &App, org_id: Uuid, query: &AuditQuery) -> Result<Page<AuditEntry>, AppError> {
    let limit = pagination::limit(query.limit)?;
    let before: Option<i64> = pagination::decode(query.cursor.as_deref())?;
    let client = app.pool.get().await?;
    let items = query_as(
        &client,
        "SELECT id, at, action, actor_user_id, actor_key_id, target_type, target_id, host(client_addr) AS client_addr, details
         FROM audit_log
         WHERE org_id = $1 AND ($2::text IS NULL OR action = $2) AND ($3::bigint IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4",
        &[&org_id, &query.action, &before, &(limit + 1)],
    )
    .await?;
    Ok(pagination::page(items, limit, |entry: &AuditEntry| Some(entry.id.to_string())))
}

/// The organization's decisions, filtered.
pub async fn checkins(app: &App, org_id: Uuid, q: &CheckinQuery) -> Result<Page<Checkin>, AppError> {
    let limit = pagination::limit(q.limit)?;
    // Check-in ids are time-ordered (UUIDv7), so the id is the cursor.
    let before: Option<Uuid> = pagination::decode(q.cursor.as_deref())?;
    let client = app.pool.get().await?;
    let items = query_as(
        &client,
        "SELECT id, gate_id, pass_id, direction, decision, reason, source, credential_kind, decided_at FROM checkins
         WHERE org_id = $1 AND ($2::uuid IS NULL OR gate_id = $2) AND ($3::uuid IS NULL OR pass_id = $3)
           AND ($4::text IS NULL OR decision = $4) AND ($5::timestamptz IS NULL OR decided_at >= $5)
           AND ($6::timestamptz IS NULL OR decided_at < $6) AND ($7::uuid IS NULL OR id < $7)
         ORDER BY id DESC LIMIT $8",
        &[&org_id, &q.gate_id, &q.pass_id, &q.decision.map(Decision::as_str), &q.from, &q.to, &before, &(limit + 1)],
    )
    .await?;
    Ok(pagination::page(items, limit, |checkin: &Checkin| Some(checkin.id.to_string())))
}
