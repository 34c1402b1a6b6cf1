//! Who is calling ([`Principal`]) and whether they may act on an organization ([`authorize`]).
//!
//! A bearer token starting `pcl_` is an API key; anything else must be an access token (JWT) whose
//! session is still live. [`authorize`] checks the caller's role (or key scopes) in an
//! organization against the permission table, then the organization's access mode. A caller with
//! no standing in the organization gets `NotFound`, as if it did not exist; a member without the
//! permission gets `Forbidden`. The HTTP extractors built on these (`Authorized<policy::X>`) live
//! in `http::auth`.

use std::sync::Arc;

use chrono::Utc;
use deadpool_postgres::Pool;
use portcullis_actors::domain::{AccessMode, Role};
use uuid::Uuid;

use crate::auth::AuthContext;
use crate::auth::cache::{KEY_COLUMNS, KeyEntry, UserAccess};
use crate::auth::permissions::{Permission, Scope, role_allows};
use crate::crypto;
use crate::error::AppError;

/// A key's `last_used_at` is written at most this often, so a busy device does not write per call.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

#[derive(Debug, Clone)]
pub enum Principal {
    User(UserPrincipal),
    Key(KeyPrincipal),
}

#[derive(Debug, Clone)]
pub struct UserPrincipal {
    pub session_id: Uuid,
    pub access: Arc<UserAccess>,
}

#[derive(Debug, Clone)]
pub struct KeyPrincipal {
    pub key_id: Uuid,
    pub org_id: Uuid,
    pub scopes: Vec<Scope>,
    pub gate_ids: Vec<Uuid>,
}

/// How a caller stands with one organization for one permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    NotMember,
    Denied,
    Allowed,
}

impl Principal {
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Principal::User(u) => Some(u.access.user_id),
            Principal::Key(_) => None,
        }
    }

    pub fn key_id(&self) -> Option<Uuid> {
        match self {
            Principal::Key(k) => Some(k.key_id),
            Principal::User(_) => None,
        }
    }

    pub fn is_platform_admin(&self) -> bool {
        matches!(self, Principal::User(u) if u.access.is_platform_admin)
    }

    /// The caller's role in an organization (keys have none).
    pub fn role_in(&self, org_id: Uuid) -> Option<Role> {
        match self {
            Principal::User(u) => u.access.role_in(org_id),
            Principal::Key(_) => None,
        }
    }

    pub fn standing(&self, org_id: Uuid, permission: Permission) -> Standing {
        let allowed = match self {
            Principal::User(u) => match u.access.role_in(org_id) {
                None => return Standing::NotMember,
                Some(role) => role_allows(role, permission),
            },
            Principal::Key(k) if k.org_id != org_id => return Standing::NotMember,
            Principal::Key(k) => permission.scope().is_some_and(|s| k.scopes.contains(&s)),
        };
        if allowed { Standing::Allowed } else { Standing::Denied }
    }
}

/// The organization a request acts on, once authorized.
#[derive(Debug, Clone, Copy)]
pub struct OrgContext {
    pub id: Uuid,
    pub access_mode: AccessMode,
}

/// Checks `permission` for `principal` in `org_id`, then the organization's access mode.
pub async fn authorize(
    pool: &Pool,
    principal: &Principal,
    org_id: Uuid,
    permission: Permission,
) -> Result<OrgContext, AppError> {
    let standing = principal.standing(org_id, permission);
    let outcome = if standing == Standing::Allowed { "allowed" } else { "denied" };
    metrics::counter!("portcullis_authz_checks_total", "outcome" => outcome).increment(1);
    match standing {
        Standing::NotMember => return Err(AppError::NotFound("organization")),
        Standing::Denied => return Err(AppError::Forbidden),
        Standing::Allowed => {}
    }
    let client = pool.get().await?;
    let row = client.query_opt("SELECT access_mode FROM organizations WHERE id = $1", &[&org_id]).await?;
    let Some(row) = row else { return Err(AppError::NotFound("organization")) };
    let access_mode: AccessMode = row.try_get::<_, &str>(0)?.parse().map_err(AppError::internal)?;
    if !permission.ignores_access_mode() {
        match access_mode {
            AccessMode::Blocked => return Err(AppError::OrgBlocked),
            AccessMode::ReadOnly if permission.is_mutation() => return Err(AppError::ReadOnly),
            _ => {}
        }
    }
    Ok(OrgContext { id: org_id, access_mode })
}

/// Resolves a bearer token to the principal behind it.
pub async fn authenticate(pool: &Pool, auth: &AuthContext, token: &str) -> Result<Principal, AppError> {
    if token.starts_with("pcl_") {
        return authenticate_key(pool, auth, token).await;
    }
    // Signature and expiry first: a forged token never takes a database connection.
    let claims = auth.tokens.verify_access(token)?;
    let client = pool.get().await?;
    let live = client
        .query_opt(
            "SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()",
            &[&claims.sid, &claims.sub],
        )
        .await?;
    if live.is_none() {
        return Err(AppError::InvalidToken);
    }
    match auth.cache.get(&client, claims.sub).await? {
        Some(access) if !access.disabled => Ok(Principal::User(UserPrincipal { session_id: claims.sid, access })),
        _ => Err(AppError::InvalidToken),
    }
}

/// An API key, from memory once it has been seen (keys rotated or revoked through this engine
/// leave the cache at once; the background refresh bounds changes made elsewhere, and keeps the
/// last good copy while the database is away, so a device's decision never waits on it).
async fn authenticate_key(pool: &Pool, auth: &AuthContext, token: &str) -> Result<Principal, AppError> {
    let hash = crypto::keyed_hash(&auth.pepper, crypto::API_KEY_PURPOSE, token);
    let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else { return Err(AppError::InvalidToken) };
    key_principal(pool, auth, hash, "key_hash = $1", &hash.as_slice()).await
}

/// A device that showed a TLS client certificate (verified against `server.tls.client_ca_file`)
/// instead of a token: it acts as the live API key its fingerprint is registered on.
pub async fn authenticate_certificate(
    pool: &Pool,
    auth: &AuthContext,
    fingerprint: &str,
) -> Result<Principal, AppError> {
    let hash = crypto::keyed_hash(&auth.pepper, CLIENT_CERT_PURPOSE, fingerprint);
    let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else { return Err(AppError::InvalidToken) };
    key_principal(pool, auth, hash, "client_cert_sha256 = $1 AND revoked_at IS NULL", &fingerprint).await
}

/// The cache key of a client certificate (beside keys' hashes, in another purpose).
const CLIENT_CERT_PURPOSE: &str = "client-cert";

/// The key found by `filter` (one parameter), from memory when it was seen before.
async fn key_principal(
    pool: &Pool,
    auth: &AuthContext,
    hash: [u8; 32],
    filter: &str,
    param: &(dyn tokio_postgres::types::ToSql + Sync),
) -> Result<Principal, AppError> {
    let entry = match auth.keys.get(&hash) {
        Some(entry) => entry,
        None => {
            let client = pool.get().await?;
            let select = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE {filter}");
            let row = client.query_opt(&select, &[param]).await?;
            // Unknown keys are not cached: guessing must not fill memory.
            let Some(row) = row else { return Err(AppError::InvalidToken) };
            let entry = KeyEntry::from_row(&row, 0)?;
            auth.keys.put(hash, entry.clone());
            entry
        }
    };
    if entry.revoked {
        return Err(AppError::InvalidToken);
    }
    let now = Utc::now();
    if entry.expires_at.is_some_and(|exp| exp <= now) {
        return Err(AppError::TokenExpired);
    }
    if entry.last_used_at.is_none_or(|t| (now - t).num_seconds() >= LAST_USED_RESOLUTION_SECS) {
        auth.keys.touch(&hash, now);
        let pool = pool.clone();
        let key_id = entry.key_id;
        // Off the request path: a device's swipe never waits for this write.
        actix_rt::spawn(async move {
            if let Ok(client) = pool.get().await {
                let _ = client.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", &[&key_id]).await;
            }
        });
    }
    Ok(Principal::Key(KeyPrincipal {
        key_id: entry.key_id,
        org_id: entry.org_id,
        scopes: entry.scopes,
        gate_ids: entry.gate_ids,
    }))
}

/// A permission a route requires, as a type (`Authorized<policy::UsersManage>`).
pub trait Policy {
    const PERMISSION: Permission;
}

/// One marker type per permission.
pub mod policy {
    use super::{Permission, Policy};

    macro_rules! policies {
        ($($name:ident),+ $(,)?) => {
            $(
                #[doc = concat!("Requires [`Permission::", stringify!($name), "`].")]
                pub struct $name;
                impl Policy for $name {
                    const PERMISSION: Permission = Permission::$name;
                }
            )+
        };
    }

    policies!(
        OrgRead,
        OrgUpdate,
        OrgAdminister,
        OrgExport,
        UsersRead,
        UsersManage,
        ConfigRead,
        ConfigWrite,
        GateModeSet,
        PassesRead,
        PassesIssue,
        PassesShowQr,
        PassesRevoke,
        CheckinsRead,
        StreamWatch,
        KeysManage,
        WebhooksManage,
        AuditRead,
        VisitorsRead,
        VisitorsInvite,
        VisitsCheckIn,
        DenyListManage,
    );
}
