//! Webhook endpoints and their deliveries (`/api/v1/orgs/{org}/webhooks`), for `org_admin` and
//! `developer`: the developer console's side of events out (the dispatcher is `outbox`).
//!
//! A secret is shown once, when made (creation, rotation), and kept sealed; after a rotation the
//! old secret signs alongside the new one for 24 hours. Every change is audited, without secrets.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::app::{App, Caller};
use crate::audit::{self, Event as AuditEvent};
use crate::db::pagination::{self, ListQuery, Page};
use crate::error::AppError;
use crate::outbox::dispatcher::SECRET_PURPOSE;
use crate::outbox::{self, signing, targets};

/// How long a rotated-out secret still signs.
const ROTATION_OVERLAP: &str = "24 hours";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `https://…` (or `http://`) where events are POSTed.
    url: String,
    /// Event types to deliver (`["*"]`: all; see `GET /api/v1/event-types`).
    event_types: Vec<String>,
    description: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
    /// `true` re-enables an endpoint that was disabled (by hand, a 410, or days of failures).
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeliverSince {
    /// Every event of the endpoint's types since this time is delivered again.
    since: DateTime<Utc>,
}

/// An endpoint as the API shows it (its secret only when just made).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// Since when every delivery has failed, if the last one did.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `whsec_…`: shown in the answer that made it, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A new secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    pub secret: String,
    /// Until when the previous secret still signs (alongside this one).
    pub previous_valid_until: DateTime<Utc>,
}

/// One attempt in the delivery log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub attempt: i32,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub at: DateTime<Utc>,
    /// `delivered`, `failed` (an answer other than 2xx), `timeout`, `unreachable`, `refused` (the
    /// target is not allowed, or its URL is wrong).
    pub outcome: String,
    /// The first bytes of the answer, or why there was none.
    pub response: Option<String>,
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// A redelivery or a test event, queued.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Queued {
    /// Events queued for delivery.
    pub events: i64,
    /// The test event's id (for `test`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
}

const COLUMNS: &str =
    "id, url, description, event_types, enabled, disabled_reason, failing_since, created_at, updated_at";

fn view(row: &tokio_postgres::Row) -> Result<WebhookView, AppError> {
    Ok(WebhookView {
        id: row.try_get(0)?,
        url: row.try_get(1)?,
        description: row.try_get(2)?,
        event_types: row.try_get(3)?,
        enabled: row.try_get(4)?,
        disabled_reason: row.try_get(5)?,
        failing_since: row.try_get(6)?,
        created_at: row.try_get(7)?,
        updated_at: row.try_get(8)?,
        secret: None,
    })
}

/// A URL we may deliver to: its syntax, and (unless private targets are allowed) where its host
/// resolves now. A name that does not resolve yet is accepted: the delivery log will say so.
async fn check_url(app: &App, url: &str) -> Result<String, AppError> {
    let (_, host, port) = targets::parse(url).map_err(|why| AppError::field("url", why))?;
    // An address literal resolves to itself: the same check covers it.
    match targets::resolve(&host, port, app.settings.webhooks.allow_private_addresses).await {
        Err(why) if why.contains("private") => Err(AppError::field("url", why)),
        _ => Ok(url.trim().to_owned()),
    }
}

fn check_types(types: &[String]) -> Result<Vec<String>, AppError> {
    if types.is_empty() || types.len() > 50 {
        return Err(AppError::field("event_types", "must list 1 to 50 event types, or [\"*\"]"));
    }
    if let Some((i, bad)) = types.iter().enumerate().find(|(_, t)| !outbox::is_event_type(t)) {
        return Err(AppError::field(format!("event_types[{i}]"), format!("`{bad}` is not an event type")));
    }
    let mut types = types.to_vec();
    types.sort();
    types.dedup();
    Ok(types)
}

fn check_description(description: Option<&str>) -> Result<Option<String>, AppError> {
    match description.map(str::trim) {
        Some(text) if text.chars().count() > 500 => {
            Err(AppError::field("description", "must be at most 500 characters"))
        }
        Some("") | None => Ok(None),
        Some(text) => Ok(Some(text.to_owned())),
    }
}

/// An endpoint that wants entries: the journal writes them from now on (the dispatcher's periodic
/// check turns that off again when none does).
fn wants_entries(app: &App, types: &[String]) {
    if types.iter().any(|t| matches!(t.as_str(), "*" | "visitpass.checked_in" | "visitpass.checked_out")) {
        app.engine.journal().health().set_entries_wanted(true);
    }
}

fn seal(app: &App, secret: &str) -> Vec<u8> {
    crate::crypto::seal_secret(&app.auth.pepper, SECRET_PURPOSE, secret.as_bytes())
}

pub async fn create(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    body: CreateWebhook,
) -> Result<WebhookView, AppError> {
    let url = check_url(app, &body.url).await?;
    let types = check_types(&body.event_types)?;
    let description = check_description(body.description.as_deref())?;
    let secret = signing::new_secret();
    let id = Uuid::now_v7();
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO webhook_endpoints (org_id, id, url, description, event_types, secret_sealed)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
            ),
            &[&org_id, &id, &url, &description, &types, &seal(app, &secret)],
        )
        .await?;
    let details = json!({ "event_types": types });
    audit::record(
        &tx,
        caller.actor(),
        AuditEvent::new(Some(org_id), "webhook.created", "webhook", id).details(details),
    )
    .await?;
    tx.commit().await?;
    wants_entries(app, &types);
    Ok(WebhookView { secret: Some(secret), ..view(&row)? })
}

pub async fn list(app: &App, org_id: Uuid) -> Result<Page<WebhookView>, AppError> {
    let client = app.pool.get().await?;
    let rows = client
        .query(&format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE org_id = $1 ORDER BY id"), &[&org_id])
        .await?;
    Ok(Page { items: rows.iter().map(view).collect::<Result<_, _>>()?, next_cursor: None })
}

async fn load(client: &impl GenericClient, org_id: Uuid, id: Uuid) -> Result<WebhookView, AppError> {
    let row = client
        .query_opt(&format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE org_id = $1 AND id = $2"), &[&org_id, &id])
        .await?
        .ok_or(AppError::NotFound("webhook"))?;
    view(&row)
}

pub async fn get(app: &App, org_id: Uuid, id: Uuid) -> Result<WebhookView, AppError> {
    load(&app.pool.get().await?, org_id, id).await
}

pub async fn update(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    id: Uuid,
    body: UpdateWebhook,
) -> Result<WebhookView, AppError> {
    let url = match &body.url {
        Some(url) => Some(check_url(app, url).await?),
        None => None,
    };
    let types = body.event_types.as_deref().map(check_types).transpose()?;
    let description = match &body.description {
        Some(text) => Some(check_description(Some(text))?),
        None => None,
    };
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &format!(
                "UPDATE webhook_endpoints SET url = coalesce($3, url), event_types = coalesce($4, event_types),
                     description = CASE WHEN $5 THEN $6 ELSE description END,
                     enabled = coalesce($7, enabled),
                     disabled_reason = CASE WHEN coalesce($7, enabled) THEN NULL
                                            WHEN $7 = false THEN 'disabled by hand' ELSE disabled_reason END,
                     failing_since = CASE WHEN $7 THEN NULL ELSE failing_since END,
                     updated_at = now()
                 WHERE org_id = $1 AND id = $2 RETURNING {COLUMNS}"
            ),
            &[&org_id, &id, &url, &types, &description.is_some(), &description.flatten(), &body.enabled],
        )
        .await?
        .ok_or(AppError::NotFound("webhook"))?;
    let changed: Vec<&str> = [
        ("url", body.url.is_some()),
        ("event_types", body.event_types.is_some()),
        ("description", body.description.is_some()),
        ("enabled", body.enabled.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect();
    let details = json!({ "changed": changed, "enabled": body.enabled });
    audit::record(
        &tx,
        caller.actor(),
        AuditEvent::new(Some(org_id), "webhook.updated", "webhook", id).details(details),
    )
    .await?;
    tx.commit().await?;
    app.outbox.wake();
    let view = view(&row)?;
    if view.enabled {
        wants_entries(app, &view.event_types);
    }
    Ok(view)
}

pub async fn delete(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<(), AppError> {
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    if tx.execute("DELETE FROM webhook_endpoints WHERE org_id = $1 AND id = $2", &[&org_id, &id]).await? == 0 {
        return Err(AppError::NotFound("webhook"));
    }
    audit::record(&tx, caller.actor(), AuditEvent::new(Some(org_id), "webhook.deleted", "webhook", id)).await?;
    tx.commit().await?;
    Ok(())
}

/// A new secret; the old one signs too for 24 hours, so receivers can switch without losing any.
pub async fn rotate_secret(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<RotatedSecret, AppError> {
    let secret = signing::new_secret();
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &format!(
                "UPDATE webhook_endpoints SET previous_sealed = secret_sealed, secret_sealed = $3,
                     previous_until = now() + interval '{ROTATION_OVERLAP}', updated_at = now()
                 WHERE org_id = $1 AND id = $2 RETURNING previous_until"
            ),
            &[&org_id, &id, &seal(app, &secret)],
        )
        .await?
        .ok_or(AppError::NotFound("webhook"))?;
    audit::record(&tx, caller.actor(), AuditEvent::new(Some(org_id), "webhook.secret_rotated", "webhook", id)).await?;
    tx.commit().await?;
    Ok(RotatedSecret { secret, previous_valid_until: row.try_get(0)? })
}

/// A `webhook.test` event, for this endpoint only.
pub async fn test(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<Queued, AppError> {
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    load(&tx, org_id, id).await?;
    let payload = json!({ "endpoint_id": id, "message": "a test event from Portcullis" });
    let event_id = outbox::record(&tx, org_id, "webhook.test", payload).await?;
    // Fanned out here, to this endpoint alone.
    tx.execute(
        "INSERT INTO webhook_deliveries (org_id, endpoint_id, event_id, seq)
         SELECT $1, $2, $3, seq FROM outbox WHERE id = $3",
        &[&org_id, &id, &event_id],
    )
    .await?;
    audit::record(&tx, caller.actor(), AuditEvent::new(Some(org_id), "webhook.tested", "webhook", id)).await?;
    tx.commit().await?;
    app.outbox.wake();
    Ok(Queued { events: 1, event_id: Some(event_id) })
}

/// The delivery log, newest attempt first.
pub async fn deliveries(app: &App, org_id: Uuid, id: Uuid, page: &ListQuery) -> Result<Page<DeliveryView>, AppError> {
    let limit = pagination::limit(page.limit)?;
    let before: Option<Uuid> = pagination::decode(page.cursor.as_deref())?;
    let client = app.pool.get().await?;
    load(&client, org_id, id).await?;
    let rows = client
        .query(
            "SELECT id, event_id, event_type, attempt, status_code, latency_ms, at, outcome, response, next_retry_at
             FROM webhook_attempts WHERE org_id = $1 AND endpoint_id = $2 AND ($3::uuid IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4",
            &[&org_id, &id, &before, &(limit + 1)],
        )
        .await?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(DeliveryView {
                id: r.try_get(0)?,
                event_id: r.try_get(1)?,
                event_type: r.try_get(2)?,
                attempt: r.try_get(3)?,
                status_code: r.try_get(4)?,
                latency_ms: r.try_get(5)?,
                at: r.try_get(6)?,
                outcome: r.try_get(7)?,
                response: r.try_get(8)?,
                next_retry_at: r.try_get(9)?,
            })
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    Ok(pagination::page(items, limit, |d| Some(d.id.to_string())))
}

/// Queues deliveries for the endpoint (`insert`: an `INSERT INTO webhook_deliveries` taking
/// `$1` org, `$2` endpoint and `$3` `param`), audited as a redelivery with how many were queued;
/// `None` (nothing written) when `must_queue` and nothing was.
#[expect(clippy::too_many_arguments, reason = "a use case's caller and target, and the query it runs")]
async fn requeue(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    id: Uuid,
    insert: &str,
    param: &(dyn tokio_postgres::types::ToSql + Sync),
    mut details: serde_json::Value,
    must_queue: bool,
) -> Result<Option<u64>, AppError> {
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    load(&tx, org_id, id).await?;
    let queued = tx.execute(insert, &[&org_id, &id, param]).await?;
    if must_queue && queued == 0 {
        return Ok(None);
    }
    if let Some(object) = details.as_object_mut() {
        object.insert("events".to_owned(), json!(queued));
    }
    audit::record(
        &tx,
        caller.actor(),
        AuditEvent::new(Some(org_id), "webhook.redelivered", "webhook", id).details(details),
    )
    .await?;
    tx.commit().await?;
    app.outbox.wake();
    Ok(Some(queued))
}

/// Delivers one event again (whatever became of it), as soon as the dispatcher gets to it.
pub async fn redeliver(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    id: Uuid,
    event_id: Uuid,
) -> Result<Queued, AppError> {
    let insert = "INSERT INTO webhook_deliveries (org_id, endpoint_id, event_id, seq)
                  SELECT $1, $2, o.id, o.seq FROM outbox o WHERE o.org_id = $1 AND o.id = $3
                  ON CONFLICT (org_id, endpoint_id, event_id) DO UPDATE SET state = 'pending', next_at = now()";
    let details = json!({ "event_id": event_id });
    requeue(app, caller, org_id, id, insert, &event_id, details, true).await?.ok_or(AppError::NotFound("event"))?;
    Ok(Queued { events: 1, event_id: None })
}

/// Delivers again every event of the endpoint's types since a time.
pub async fn redeliver_since(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    id: Uuid,
    body: RedeliverSince,
) -> Result<Queued, AppError> {
    let insert = "INSERT INTO webhook_deliveries (org_id, endpoint_id, event_id, seq)
                  SELECT $1, w.id, o.id, o.seq FROM outbox o
                  JOIN webhook_endpoints w ON w.org_id = o.org_id AND w.id = $2
                  WHERE o.org_id = $1 AND o.occurred_at >= $3 AND o.type <> 'webhook.test'
                    AND ('*' = ANY(w.event_types) OR o.type = ANY(w.event_types))
                  ON CONFLICT (org_id, endpoint_id, event_id) DO UPDATE SET state = 'pending', next_at = now()";
    let details = json!({ "since": body.since });
    let queued = requeue(app, caller, org_id, id, insert, &body.since, details, false).await?.unwrap_or(0);
    Ok(Queued { events: i64::try_from(queued).unwrap_or(i64::MAX), event_id: None })
}
