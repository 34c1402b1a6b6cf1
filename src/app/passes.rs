//! Passes: issue, read, list, revoke, suspend, resume, extend, show the QR code.
//!
//! Issuing writes the pass to PostgreSQL in one transaction (pass, credential, pass event, audit
//! row), then hands it to the engine; every later change goes through the pass's actor, which
//! makes it durable before answering, with its audit row in the same commit. So when a revoke
//! returns, every gate already refuses the pass.

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::GenericClient;
use portcullis_actors::decision::PassState;
use portcullis_actors::domain::{CardFormat, CredentialKind, PassStatus, PassType};
use portcullis_actors::engine::{CredentialRef, EngineError};
use portcullis_actors::pass_actor::{Change, PassChange, PassError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::app::input::{Checked, Fields, Name};
use crate::app::{App, Caller, host_scope};
use crate::audit::{self, Event as AuditEvent};
use crate::auth::permissions::Permission;
use crate::auth::principal::{Principal, Standing};
use crate::db::pagination::{self, Page};
use crate::db::{query_as, query_one_as};
use crate::engine::credentials;
use crate::engine::load::{PASS_COLUMNS, pass_from_row};
use crate::error::{AppError, Conflict};

const PASS_SELECT: &str =
    "SELECT id, org_id, access_rule_id, appointment_id, visitor_id, escort_pass_id, holder_name, type,
        max_uses, group_size, uses_count, status, valid_from, valid_to, inside, last_gate_id, last_passage_at,
        issued_by, revoked_at, revoked_by, revoke_reason, created_at, updated_at
     FROM passes";

/// A pass as stored, with the engine's live view (status, uses, inside, validity) laid over it
/// when one pass is read.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pass {
    pub id: Uuid,
    pub org_id: Uuid,
    pub access_rule_id: Uuid,
    pub appointment_id: Option<Uuid>,
    pub visitor_id: Option<Uuid>,
    /// The pass whose holder must be let through first (escort rules).
    pub escort_pass_id: Option<Uuid>,
    pub holder_name: String,
    #[serde(rename = "type")]
    pub pass_type: PassType,
    pub max_uses: Option<i32>,
    pub group_size: i32,
    pub uses_count: i32,
    pub status: PassStatus,
    pub valid_from: DateTime<Utc>,
    pub valid_to: DateTime<Utc>,
    pub inside: bool,
    pub last_gate_id: Option<Uuid>,
    pub last_passage_at: Option<DateTime<Utc>>,
    pub issued_by: Option<Uuid>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<Uuid>,
    pub revoke_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Entries left (when one pass is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<u32>,
    /// Its live credentials, never their secrets (when one pass is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Vec<PassCredential>>,
}

impl pagination::Identified for Pass {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// A credential of a pass, without its secret.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PassCredential {
    pub id: Uuid,
    pub kind: CredentialKind,
    pub card_format: Option<CardFormat>,
    /// What a person may see of it (a card's last digits).
    pub display_hint: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A pass just issued: the secret part of its credential is in `credential`, this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedPass {
    #[serde(flatten)]
    pub pass: Pass,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<ShownCredential>,
}

/// The secret of a new credential, shown once (never stored: a QR seed is derived, a PIN hashed).
/// Not `Debug`, so it cannot be logged by accident.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShownCredential {
    Qr { credential_id: Uuid, seed: String, payload: String, expires_in: i64 },
    Pin { credential_id: Uuid, value: String },
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialSpec {
    Qr,
    Card {
        format: CardFormat,
        facility_code: Option<u64>,
        card_number: u64,
    },
    /// The engine chooses the PIN (never the caller: a chosen PIN that clashes would tell the
    /// caller that someone else's PIN works). `value` is accepted only to say so.
    Pin {
        value: Option<serde_json::Value>,
    },
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuePass {
    #[schema(value_type = String)]
    holder_name: Checked<Name>,
    access_rule_id: Uuid,
    #[serde(rename = "type")]
    pass_type: PassType,
    max_uses: Option<i32>,
    group_size: Option<i32>,
    #[serde(deserialize_with = "crate::app::input::timestamp")]
    valid_from: DateTime<Utc>,
    #[serde(deserialize_with = "crate::app::input::timestamp")]
    valid_to: DateTime<Utc>,
    credential: CredentialSpec,
    escort_pass_id: Option<Uuid>,
}

#[derive(Deserialize)]
pub struct PassFilter {
    pub status: Option<PassStatus>,
    /// Part of the holder's name (case-insensitive).
    pub q: Option<String>,
}

/// What a revocation answers: the actor's own account of it, not a re-read.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    pub id: Uuid,
    pub status: PassStatus,
    pub revoked_at: DateTime<Utc>,
    pub revoked_by: Option<Uuid>,
    pub reason: String,
}

/// A live QR code: the payload and the seconds it has left.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LiveQr {
    pub payload: String,
    pub expires_in: i64,
}

impl LiveQr {
    /// The code of a QR credential valid now.
    pub fn now(pepper: &secrecy::SecretString, credential_id: Uuid) -> Self {
        let (payload, expires_in) = credentials::qr_code(pepper, credential_id, Utc::now());
        LiveQr { payload, expires_in }
    }
}

/// Whether the caller may read every pass of the organization (not only those they issued).
fn may_read_every_pass(principal: &Principal, org_id: Uuid) -> bool {
    principal.standing(org_id, Permission::PassesRead) == Standing::Allowed && host_scope(principal, org_id).is_none()
}

/// The stored pass, with the engine's live view (uses, inside, status) laid over it.
async fn describe(
    app: &App,
    client: &impl GenericClient,
    org_id: Uuid,
    id: Uuid,
    only_issued_by: Option<Uuid>,
) -> Result<Pass, AppError> {
    let mut pass: Pass = query_one_as(
        client,
        &format!("{PASS_SELECT} WHERE org_id = $1 AND id = $2 AND ($3::uuid IS NULL OR issued_by = $3)"),
        &[&org_id, &id, &only_issued_by],
    )
    .await?
    .ok_or(AppError::NotFound("pass"))?;
    let live = if app.engine.holds_pass(id) { app.engine.pass_state(id).await } else { None };
    if let Some(live) = live.filter(|l| l.org_id == org_id) {
        pass.status = live.status;
        pass.uses_count = i32::try_from(live.uses_count).unwrap_or(i32::MAX);
        pass.inside = live.inside;
        pass.last_gate_id = live.last_gate_id;
        pass.valid_to = live.valid_to;
        pass.uses_left = Some(live.uses_left());
    } else {
        let stored = client.query_one(&format!("SELECT {PASS_COLUMNS} FROM passes WHERE id = $1"), &[&id]).await?;
        let state = pass_from_row(&stored).map_err(AppError::internal)?;
        pass.uses_left = Some(state.uses_left());
    }
    let credentials = query_as(
        client,
        "SELECT id, kind, card_format, display_hint, created_at FROM credentials
         WHERE org_id = $1 AND pass_id = $2 AND revoked_at IS NULL ORDER BY id",
        &[&org_id, &id],
    )
    .await?;
    pass.credentials = Some(credentials);
    Ok(pass)
}

/// Issues a pass; the answer shows its QR seed or PIN this once.
pub async fn issue(app: &App, caller: &Caller<'_>, org_id: Uuid, body: IssuePass) -> Result<IssuedPass, AppError> {
    let pepper = &app.auth.pepper;
    let mut fields = Fields::new();
    let holder = body.holder_name.take(&mut fields, "holder_name");
    if body.valid_to <= body.valid_from {
        fields.insert("valid_to".to_owned(), "must be after valid_from".to_owned());
    }
    let (max_uses, group_size) = match body.pass_type {
        PassType::Single => (None, 1),
        PassType::Multi => match body.max_uses {
            Some(n) if n >= 1 => (Some(n), 1),
            _ => {
                fields.insert("max_uses".to_owned(), "a multi-use pass needs max_uses of at least 1".to_owned());
                (None, 1)
            }
        },
        PassType::Group => match body.group_size {
            Some(n) if (2..=1000).contains(&n) => (None, n),
            _ => {
                fields.insert("group_size".to_owned(), "a group pass is for 2 to 1000 people".to_owned());
                (None, 2)
            }
        },
    };
    let credential_id = Uuid::now_v7();
    let card_sealed = match &body.credential {
        CredentialSpec::Card { facility_code, card_number, .. } => {
            Some(credentials::seal_card(pepper, facility_code.unwrap_or(0), *card_number))
        }
        _ => None,
    };
    let (kind, format, lookup, number_hash, hint) = match &body.credential {
        CredentialSpec::Qr => (
            CredentialKind::Qr,
            None,
            credentials::lookup_key(pepper, credentials::QR, &credential_id.to_string()),
            None,
            None,
        ),
        CredentialSpec::Card { format, facility_code, card_number } => {
            match credentials::card_keys(pepper, *format, *facility_code, *card_number) {
                Ok((full, number)) => (
                    CredentialKind::Card,
                    Some(*format),
                    full,
                    Some(number),
                    Some(format!("…{:02}", card_number % 100)),
                ),
                Err(AppError::Validation { fields: f }) => {
                    fields.extend(f);
                    (CredentialKind::Card, Some(*format), [0; 32], None, None)
                }
                Err(other) => return Err(other),
            }
        }
        CredentialSpec::Pin { value } => {
            if value.is_some() {
                fields.insert(
                    "credential.value".to_owned(),
                    "PINs are generated by the engine and returned once; leave `value` out".to_owned(),
                );
            }
            // Chosen below, inside the transaction, once the organization's PIN count is known.
            (CredentialKind::Pin, None, [0; 32], None, None)
        }
    };
    // A card number is chosen by the caller, so a clash with another pass's card cannot be hidden
    // from them: cards are assigned only by callers who may read every pass anyway.
    if kind == CredentialKind::Card && !may_read_every_pass(caller.principal, org_id) {
        return Err(AppError::Forbidden);
    }
    let mut client = app.pool.get().await?;
    if client
        .query_opt("SELECT 1 FROM access_rules WHERE org_id = $1 AND id = $2", &[&org_id, &body.access_rule_id])
        .await?
        .is_none()
    {
        fields.insert("access_rule_id".to_owned(), "no such access rule in this organization".to_owned());
    }
    if let Some(escort) = body.escort_pass_id
        && client.query_opt("SELECT 1 FROM passes WHERE org_id = $1 AND id = $2", &[&org_id, &escort]).await?.is_none()
    {
        fields.insert("escort_pass_id".to_owned(), "no such pass in this organization".to_owned());
    }
    if !fields.is_empty() {
        return Err(AppError::Validation { fields });
    }
    let Some(holder) = holder else { return Err(AppError::internal("a checked field was missing without a reason")) };
    let holder = holder.as_str();

    let id = Uuid::now_v7();
    let issued_by = caller.principal.user_id();
    let tx = client.transaction().await?;
    let mut lookup = lookup;
    let pin = match kind {
        CredentialKind::Pin => {
            let (pin, key) = credentials::new_pin(&tx, pepper, org_id).await?;
            lookup = key;
            Some(pin)
        }
        _ => None,
    };
    let draft = NewPass {
        id,
        org_id,
        access_rule_id: body.access_rule_id,
        holder,
        pass_type: body.pass_type,
        max_uses,
        group_size,
        valid_from: body.valid_from,
        valid_to: body.valid_to,
        escort_pass_id: body.escort_pass_id,
        issued_by,
        appointment_id: None,
        visitor_id: None,
        status: PassStatus::Active,
    };
    let stored = credentials::StoredCredential {
        id: credential_id,
        org_id,
        pass_id: id,
        kind,
        format,
        lookup_hash: &lookup,
        number_hash: number_hash.as_ref().map(|h| h.as_slice()),
        display_hint: hint.as_deref(),
        card_sealed: card_sealed.as_deref(),
    };
    let row = write_pass(&tx, &draft, &stored, caller.actor()).await?;
    tx.commit().await?;
    app.outbox.wake();
    let credential = CredentialRef { pass_id: id, kind };
    let mut keys = vec![(lookup, credential)];
    if let Some(number) = number_hash {
        keys.push((number, credential));
    }
    hand_over(app, &row, keys, issued_by).await?;

    let pass = describe(app, &client, org_id, id, None).await?;
    let credential = if kind == CredentialKind::Qr {
        // The seed is shown this once; it is derived, never stored.
        let (payload, expires_in) = credentials::qr_code(pepper, credential_id, Utc::now());
        let seed = credentials::qr_seed_text(pepper, credential_id);
        Some(ShownCredential::Qr { credential_id, seed, payload, expires_in })
    } else {
        // Shown this once; only its keyed hash is stored.
        pin.map(|value| ShownCredential::Pin { credential_id, value })
    };
    Ok(IssuedPass { pass, credential })
}

/// A pass about to be written: what its row, its first event and `visitpass.issued` say.
pub(crate) struct NewPass<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub access_rule_id: Uuid,
    pub holder: &'a str,
    pub pass_type: PassType,
    pub max_uses: Option<i32>,
    pub group_size: i32,
    pub valid_from: DateTime<Utc>,
    pub valid_to: DateTime<Utc>,
    pub escort_pass_id: Option<Uuid>,
    pub issued_by: Option<Uuid>,
    /// The visit it admits (a visitor's pass).
    pub appointment_id: Option<Uuid>,
    pub visitor_id: Option<Uuid>,
    /// `active`, or `suspended` for a visitor invited but not yet checked in.
    pub status: PassStatus,
}

/// Writes a pass in `tx`: its row, its credential, its first pass event, the audit row and the
/// `visitpass.issued` event. Returns the stored row, for [`hand_over`] once `tx` commits.
pub(crate) async fn write_pass(
    tx: &impl GenericClient,
    pass: &NewPass<'_>,
    credential: &credentials::StoredCredential<'_>,
    actor: audit::Actor,
) -> Result<tokio_postgres::Row, AppError> {
    let (id, org_id) = (pass.id, pass.org_id);
    tx.execute(
        "INSERT INTO passes (id, org_id, access_rule_id, holder_name, type, max_uses, group_size, valid_from, valid_to,
                             escort_pass_id, issued_by, appointment_id, visitor_id, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        &[
            &id,
            &org_id,
            &pass.access_rule_id,
            &pass.holder,
            &pass.pass_type.as_str(),
            &pass.max_uses,
            &pass.group_size,
            &pass.valid_from,
            &pass.valid_to,
            &pass.escort_pass_id,
            &pass.issued_by,
            &pass.appointment_id,
            &pass.visitor_id,
            &pass.status.as_str(),
        ],
    )
    .await?;
    credentials::store(tx, credential)
        .await
        .map_err(|e| AppError::unique(e, "this card is assigned to another live pass of the organization"))?;
    tx.execute(
        "INSERT INTO pass_events (org_id, pass_id, kind, status, uses_count, actor_id) VALUES ($1, $2, 'issued', $4, 0, $3)",
        &[&org_id, &id, &pass.issued_by, &pass.status.as_str()],
    )
    .await?;
    let kind = credential.kind;
    let event = AuditEvent::new(Some(org_id), "pass.issued", "pass", id)
        .details(json!({ "type": pass.pass_type, "credential": kind, "status": pass.status }));
    audit::record(tx, actor, event).await?;
    let payload = json!({
        "pass_id": id, "holder_name": pass.holder, "type": pass.pass_type, "valid_from": pass.valid_from,
        "valid_to": pass.valid_to, "access_rule_id": pass.access_rule_id, "issued_by": pass.issued_by,
        "credential": kind, "status": pass.status, "visitor_id": pass.visitor_id, "appointment_id": pass.appointment_id,
    });
    crate::outbox::record(tx, org_id, "visitpass.issued", payload).await?;
    Ok(tx.query_one(&format!("SELECT {PASS_COLUMNS} FROM passes WHERE id = $1"), &[&id]).await?)
}

/// Brings the pass rows up to the engine's passages (the journal writes those behind the
/// check-ins), for a reader of `inside` or `uses_count` in the database. Best effort: while the
/// journal spools, rows stay as they are.
pub(crate) async fn rows_current(app: &App) {
    if let Err(err) = app.engine.flush().await {
        tracing::warn!(error = %err, "pass rows may be behind the engine: the journal could not be flushed");
    }
}

/// Hands a committed pass to the engine: in force at every gate when this returns.
pub(crate) async fn hand_over(
    app: &App,
    row: &tokio_postgres::Row,
    keys: Vec<([u8; 32], CredentialRef)>,
    issued_by: Option<Uuid>,
) -> Result<(), AppError> {
    let pass = pass_from_row(row).map_err(AppError::internal)?;
    app.engine.issue_pass(pass, keys, issued_by).await.map_err(AppError::internal)
}

pub async fn list(
    app: &App,
    principal: &Principal,
    org_id: Uuid,
    filter: &PassFilter,
    page: &pagination::ListQuery,
) -> Result<Page<Pass>, AppError> {
    rows_current(app).await;
    let client = app.pool.get().await?;
    let only = host_scope(principal, org_id);
    let status = filter.status.map(PassStatus::as_str);
    let name = filter.q.as_deref().filter(|s| !s.is_empty());
    let select = format!(
        "{PASS_SELECT} WHERE org_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::uuid IS NULL OR issued_by = $3)
           AND ($4::text IS NULL OR holder_name ILIKE '%' || replace(replace(replace($4, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%')"
    );
    pagination::by_id(&client, &select, "id", &[&org_id, &status, &only, &name], page.cursor.as_deref(), page.limit)
        .await
}

pub async fn get(app: &App, principal: &Principal, org_id: Uuid, id: Uuid) -> Result<Pass, AppError> {
    let client = app.pool.get().await?;
    describe(app, &client, org_id, id, host_scope(principal, org_id)).await
}

/// Applies a change through the pass's actor: checked against the organization in memory,
/// durable (with `audit`, in the same commit) and in force at every gate on return.
pub(crate) async fn change_pass(
    app: &App,
    actor: audit::Actor,
    org_id: Uuid,
    id: Uuid,
    change: PassChange,
    audit: Option<AuditEvent>,
) -> Result<(PassState, DateTime<Utc>), AppError> {
    // Microseconds: what PostgreSQL keeps, so the answer and a later read agree.
    let at = Utc::now().trunc_subsecs(6);
    let audit = audit.map(|event| event.for_journal(actor));
    let request = Change { org_id: Some(org_id), change, actor: actor.user_id, at, audit };
    match app.engine.apply(id, request).await {
        Ok(pass) => {
            // Its event was committed with it (by the journal): deliver it now.
            app.outbox.wake();
            Ok((pass, at))
        }
        Err(EngineError::Pass(PassError::NotActive)) => {
            Err(AppError::Conflict { code: Conflict::PassNotActive, message: "the pass is not active".into() })
        }
        Err(EngineError::Pass(PassError::NotSuspended)) => {
            Err(AppError::Conflict { code: Conflict::PassNotSuspended, message: "the pass is not suspended".into() })
        }
        Err(EngineError::Pass(PassError::BadValidity)) => Err(AppError::field("valid_to", "must be after valid_from")),
        Err(EngineError::Pass(PassError::OtherOrganization)) => Err(AppError::NotFound("pass")),
        // Unknown, or expired or revoked long ago (the engine no longer holds it).
        Err(EngineError::UnknownPass) => {
            let client = app.pool.get().await?;
            let stored =
                client.query_opt("SELECT status FROM passes WHERE org_id = $1 AND id = $2", &[&org_id, &id]).await?;
            let Some(stored) = stored else { return Err(AppError::NotFound("pass")) };
            let status: String = stored.try_get(0)?;
            Err(AppError::Conflict { code: Conflict::PassNotActive, message: format!("the pass is {status}") })
        }
        Err(other) => Err(AppError::internal(other)),
    }
}

/// Revokes a pass: in force at every gate, and its pass row, pass event and audit row committed
/// together, when this returns.
pub async fn revoke(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid, reason: &str) -> Result<Revoked, AppError> {
    let reason = reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(AppError::field("reason", "must be 1 to 500 characters"));
    }
    let audit = AuditEvent::new(Some(org_id), "pass.revoked", "pass", id);
    let revoke = PassChange::Revoke { reason: reason.clone() };
    let (pass, at) = change_pass(app, caller.actor(), org_id, id, revoke, Some(audit)).await?;
    Ok(Revoked { id, status: pass.status, revoked_at: at, revoked_by: caller.principal.user_id(), reason })
}

/// Suspending a pass, or resuming it.
#[derive(Debug, Clone, Copy)]
pub enum Hold {
    Suspend,
    Resume,
}

/// Suspends or resumes a pass: in force at every gate, and audited, when this returns.
pub async fn hold(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid, hold: Hold) -> Result<Pass, AppError> {
    let (action, change) = match hold {
        Hold::Suspend => ("pass.suspended", PassChange::Suspend),
        Hold::Resume => ("pass.resumed", PassChange::Resume),
    };
    change_pass(app, caller.actor(), org_id, id, change, Some(AuditEvent::new(Some(org_id), action, "pass", id)))
        .await?;
    describe(app, &app.pool.get().await?, org_id, id, None).await
}

/// Moves `valid_to` (hosts: of their own passes only).
pub async fn extend(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    id: Uuid,
    valid_to: DateTime<Utc>,
) -> Result<Pass, AppError> {
    let client = app.pool.get().await?;
    describe(app, &client, org_id, id, host_scope(caller.principal, org_id)).await?;
    let audit = AuditEvent::new(Some(org_id), "pass.extended", "pass", id);
    change_pass(app, caller.actor(), org_id, id, PassChange::Extend { valid_to }, Some(audit)).await?;
    describe(app, &client, org_id, id, None).await
}

/// The pass's current QR code (hosts: of their own passes only).
pub async fn qr(app: &App, principal: &Principal, org_id: Uuid, id: Uuid) -> Result<LiveQr, AppError> {
    let only = host_scope(principal, org_id);
    let client = app.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT c.id FROM credentials c JOIN passes p ON p.org_id = c.org_id AND p.id = c.pass_id
             WHERE c.org_id = $1 AND c.pass_id = $2 AND c.kind = 'qr' AND c.revoked_at IS NULL
               AND ($3::uuid IS NULL OR p.issued_by = $3)",
            &[&org_id, &id, &only],
        )
        .await?
        .ok_or(AppError::NotFound("QR credential"))?;
    Ok(LiveQr::now(&app.auth.pepper, row.try_get(0)?))
}
