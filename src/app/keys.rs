//! API keys for devices and integrations: created, rotated and revoked here, for the HTTP routes
//! and for the `portcullis api-key` command alike. The secret exists only in the value returned
//! at creation or rotation; the database keeps its HMAC.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::app::input::{Fields, check_name, done};
use crate::app::{App, Caller};
use crate::audit::{self, Actor, Event};
use crate::auth::AccessChange;
use crate::db::pagination::{self, ListQuery, Page};
use portcullis_actors::domain::Role;

use crate::auth::permissions::Scope;
use crate::crypto::{self, KeyEnv};
use crate::db::query_one_as;
use crate::error::AppError;

/// An API key as its organization sees it: never its secret or hash.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    /// `live` or `test`.
    pub env: String,
    /// The secret's first characters, to recognise it.
    pub prefix: String,
    pub scopes: Vec<String>,
    /// The gates a `gate:decide` key may decide for (empty: none).
    pub gate_ids: Vec<Uuid>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key this one replaced.
    pub rotated_from: Option<Uuid>,
    /// The client certificate the key is bound to (hex SHA-256), if any.
    pub client_cert_sha256: Option<String>,
}

impl pagination::Identified for ApiKey {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// A key just made (created or rotated): the secret is in `key`, this once. Not `Debug`, so it
/// cannot be logged by accident.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NewApiKey {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The secret: shown once, never stored.
    pub key: String,
}

/// The columns a client may see (never `key_hash`).
pub const KEY_COLUMNS: &str = "id, org_id, name, env, prefix, scopes, gate_ids, created_by, created_at, expires_at, last_used_at, revoked_at, rotated_from, client_cert_sha256";

/// Who acts on a key. Creating, rotating and revoking a key all pass the same rule, checked here
/// and nowhere else: a member may act only on keys whose every scope they could grant
/// ([`Scope::first_beyond`]); the console (`portcullis api-key`, run by whoever operates the
/// server) may act on any.
#[derive(Debug, Clone, Copy)]
pub enum Grantor {
    Member(Role),
    Console,
}

impl Grantor {
    fn first_beyond(self, scopes: &[Scope]) -> Option<Scope> {
        match self {
            Grantor::Member(role) => Scope::first_beyond(role, scopes),
            Grantor::Console => None,
        }
    }

    /// For an existing key: 403, like any other action the caller's role does not allow.
    fn check_existing(self, scopes: &[Scope]) -> Result<(), AppError> {
        match self.first_beyond(scopes) {
            Some(_) => Err(AppError::Forbidden),
            None => Ok(()),
        }
    }
}

/// A request for a new key, as a client sends it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    gate_ids: Vec<Uuid>,
    env: Option<String>,
    #[serde(default, deserialize_with = "crate::app::input::opt_timestamp")]
    expires_at: Option<DateTime<Utc>>,
    /// The SHA-256 fingerprint of a device's TLS client certificate that acts as this key.
    client_cert_sha256: Option<String>,
}

/// A certificate fingerprint as it is stored: 64 lowercase hex digits (colons and case as
/// `openssl x509 -fingerprint -sha256` prints them are accepted).
pub fn fingerprint(text: &str) -> Result<String, AppError> {
    let hex: String = text.chars().filter(|c| *c != ':').map(|c| c.to_ascii_lowercase()).collect();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(AppError::field("client_cert_sha256", "must be a SHA-256 fingerprint: 64 hex digits"))
    }
}

impl CreateKey {
    /// The key it asks for; errors name the field (`scopes[1]`, `env`).
    pub fn spec(self) -> Result<KeySpec, AppError> {
        let mut scopes = Vec::new();
        for (i, scope) in self.scopes.iter().enumerate() {
            scopes.push(scope.parse::<Scope>().map_err(|e| AppError::field(format!("scopes[{i}]"), e.to_string()))?);
        }
        let env = match self.env.as_deref() {
            None | Some("live") => KeyEnv::Live,
            Some("test") => KeyEnv::Test,
            Some(_) => return Err(AppError::field("env", "must be `live` or `test`")),
        };
        let client_cert_sha256 = self.client_cert_sha256.as_deref().map(fingerprint).transpose()?;
        Ok(KeySpec {
            name: self.name,
            env,
            scopes,
            gate_ids: self.gate_ids,
            expires_at: self.expires_at,
            client_cert_sha256,
        })
    }
}

/// A checked request for a new key.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub name: String,
    pub env: KeyEnv,
    pub scopes: Vec<Scope>,
    pub gate_ids: Vec<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
    pub client_cert_sha256: Option<String>,
}

impl KeySpec {
    /// Checks what can be checked without the database; errors name the field.
    pub fn check(&self) -> Result<(), AppError> {
        let mut fields = Fields::new();
        check_name(&mut fields, "name", &self.name);
        done(fields)?;
        if self.scopes.is_empty() {
            return Err(AppError::field("scopes", "must name at least one scope"));
        }
        if self.scopes.contains(&Scope::GateDecide) && self.gate_ids.is_empty() {
            return Err(AppError::field("gate_ids", "a gate:decide key must be bound to its gates"));
        }
        if self.expires_at.is_some_and(|t| t <= Utc::now()) {
            return Err(AppError::field("expires_at", "must be in the future"));
        }
        Ok(())
    }
}

/// Creates a key in `org_id`; returns its public description with the secret `key` added.
pub async fn create(
    client: &impl GenericClient,
    pepper: &SecretString,
    org_id: Uuid,
    spec: &KeySpec,
    grantor: Grantor,
    actor: Actor,
) -> Result<NewApiKey, AppError> {
    spec.check()?;
    // Nobody mints a key that can do more than they can.
    if let Some(scope) = grantor.first_beyond(&spec.scopes) {
        return Err(AppError::field("scopes", format!("your role may not grant `{scope}`")));
    }
    insert(client, pepper, org_id, spec, actor, None).await
}

async fn insert(
    client: &impl GenericClient,
    pepper: &SecretString,
    org_id: Uuid,
    spec: &KeySpec,
    actor: Actor,
    rotated_from: Option<Uuid>,
) -> Result<NewApiKey, AppError> {
    let known: i64 = client
        .query_one("SELECT count(*) FROM gates WHERE org_id = $1 AND id = ANY($2)", &[&org_id, &spec.gate_ids])
        .await?
        .try_get(0)?;
    let mut unique = spec.gate_ids.clone();
    unique.sort();
    unique.dedup();
    if usize::try_from(known).ok() != Some(unique.len()) {
        return Err(AppError::field("gate_ids", "every gate must belong to this organization"));
    }
    let new = crypto::new_api_key(spec.env, pepper);
    let id = Uuid::now_v7();
    let scopes: Vec<String> = spec.scopes.iter().map(|s| s.as_str().to_owned()).collect();
    client
        .execute(
            "INSERT INTO api_keys (id, org_id, name, env, prefix, key_hash, scopes, gate_ids, created_by, expires_at, rotated_from,
                                   client_cert_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &id, &org_id, &spec.name.trim(), &spec.env.as_str(), &new.prefix, &new.hash, &scopes, &unique,
                &actor.user_id, &spec.expires_at, &rotated_from, &spec.client_cert_sha256,
            ],
        )
        .await
        .map_err(|e| AppError::unique(e, "a live key is already bound to this client certificate"))?;
    let action = if rotated_from.is_some() { "api_key.rotated" } else { "api_key.created" };
    let details =
        json!({ "scopes": scopes, "env": spec.env.as_str(), "gate_ids": unique, "rotated_from": rotated_from });
    audit::record(client, actor, Event::new(Some(org_id), action, "api_key", id).details(details)).await?;
    let api_key = describe(client, org_id, id).await?;
    Ok(NewApiKey { api_key, key: secrecy::ExposeSecret::expose_secret(&new.key).to_owned() })
}

/// The keys of `org_id`, without secrets.
pub async fn list(app: &App, org_id: Uuid, query: &ListQuery) -> Result<Page<ApiKey>, AppError> {
    let client = app.pool.get().await?;
    let select = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1");
    pagination::by_id(&client, &select, "id", &[&org_id], query.cursor.as_deref(), query.limit).await
}

/// Creates a key for a caller (who may grant only what they hold); the secret is in the answer.
pub async fn create_for(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    request: CreateKey,
) -> Result<NewApiKey, AppError> {
    let spec = request.spec()?;
    let grantor = member(caller, org_id)?;
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let key = create(&tx, &app.auth.pepper, org_id, &spec, grantor, caller.actor()).await?;
    tx.commit().await?;
    Ok(key)
}

/// One key of `org_id`, without its secret.
pub async fn get(app: &App, org_id: Uuid, id: Uuid) -> Result<ApiKey, AppError> {
    describe(&app.pool.get().await?, org_id, id).await
}

/// Rotates a key for a caller; the old key is dead and the new one live when this returns.
pub async fn rotate_for(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<NewApiKey, AppError> {
    let grantor = member(caller, org_id)?;
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let key = rotate(&tx, &app.auth.pepper, org_id, id, grantor, caller.actor()).await?;
    tx.commit().await?;
    app.auth.changed(AccessChange::Key(id));
    Ok(key)
}

/// Revokes a key for a caller; it is refused everywhere on this node when this returns.
pub async fn revoke_for(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<ApiKey, AppError> {
    let grantor = member(caller, org_id)?;
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let key = revoke(&tx, org_id, id, grantor, caller.actor()).await?;
    tx.commit().await?;
    app.auth.changed(AccessChange::Key(id));
    Ok(key)
}

/// The caller as a grantor of key scopes (keys never manage keys: `KeysManage` is user-only).
fn member(caller: &Caller<'_>, org_id: Uuid) -> Result<Grantor, AppError> {
    caller.principal.role_in(org_id).map(Grantor::Member).ok_or(AppError::Forbidden)
}

/// The public description of a key of `org_id`.
pub async fn describe(client: &impl GenericClient, org_id: Uuid, id: Uuid) -> Result<ApiKey, AppError> {
    query_one_as(client, &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 AND id = $2"), &[&org_id, &id])
        .await?
        .ok_or(AppError::NotFound("api key"))
}

/// Locks a live key of `org_id` for a change by `grantor`: 404 if unknown, 403 if the key holds a
/// scope the grantor may not grant, 409 `key_revoked` if revoked.
async fn lock_live(
    client: &impl GenericClient,
    org_id: Uuid,
    id: Uuid,
    grantor: Grantor,
) -> Result<(tokio_postgres::Row, Vec<Scope>), AppError> {
    let row = client
        .query_opt(
            "SELECT name, env, scopes, gate_ids, expires_at, revoked_at IS NOT NULL, client_cert_sha256 FROM api_keys
             WHERE org_id = $1 AND id = $2 FOR UPDATE",
            &[&org_id, &id],
        )
        .await?
        .ok_or(AppError::NotFound("api key"))?;
    let stored: Vec<String> = row.try_get(2)?;
    // A scope this build does not know is one nobody below the console may act on.
    let scopes: Vec<Scope> = stored.iter().filter_map(|s| s.parse().ok()).collect();
    if scopes.len() != stored.len() && matches!(grantor, Grantor::Member(_)) {
        return Err(AppError::Forbidden);
    }
    grantor.check_existing(&scopes)?;
    if row.try_get::<_, bool>(5)? {
        return Err(AppError::Conflict {
            code: crate::error::Conflict::KeyRevoked,
            message: "the key is revoked".into(),
        });
    }
    Ok((row, scopes))
}

/// Replaces a key by a new one with the same attributes, atomically: when this returns (and the
/// caller's transaction commits) the old key no longer works and the new one does.
pub async fn rotate(
    client: &impl GenericClient,
    pepper: &SecretString,
    org_id: Uuid,
    id: Uuid,
    grantor: Grantor,
    actor: Actor,
) -> Result<NewApiKey, AppError> {
    let (row, scopes) = lock_live(client, org_id, id, grantor).await?;
    let spec = KeySpec {
        name: row.try_get(0)?,
        env: if row.try_get::<_, &str>(1)? == "test" { KeyEnv::Test } else { KeyEnv::Live },
        scopes,
        gate_ids: row.try_get(3)?,
        expires_at: row.try_get(4)?,
        client_cert_sha256: row.try_get(6)?,
    };
    client.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", &[&id]).await?;
    insert(client, pepper, org_id, &spec, actor, Some(id)).await
}

pub async fn revoke(
    client: &impl GenericClient,
    org_id: Uuid,
    id: Uuid,
    grantor: Grantor,
    actor: Actor,
) -> Result<ApiKey, AppError> {
    lock_live(client, org_id, id, grantor).await?;
    client.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", &[&id]).await?;
    audit::record(client, actor, Event::new(Some(org_id), "api_key.revoked", "api_key", id)).await?;
    describe(client, org_id, id).await
}
