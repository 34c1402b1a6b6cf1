//! Who is calling ([`Principal`]) and whether they may act on an organization ([`Authorized`]).
//!
//! A bearer token starting `pcl_` is an API key; anything else must be an access token (JWT) whose
//! session is still live. Organization routes extract `Authorized<policy::X>`: it resolves `{org}`
//! from the path, checks the caller's role (or key scopes) there against the permission table, then
//! the organization's access mode. A caller with no standing in the organization gets 404, as if
//! it did not exist; a member without the permission gets 403.

use std::future::Future;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use chrono::Utc;
use portcullis_actors::domain::{AccessMode, Role};
use uuid::Uuid;

use crate::auth::cache::{KeyEntry, UserAccess};
use crate::auth::permissions::{Permission, Scope, role_allows};
use crate::crypto;
use crate::error::ApiError;
use crate::http::AppState;

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
    state: &AppState,
    principal: &Principal,
    org_id: Uuid,
    permission: Permission,
) -> Result<OrgContext, ApiError> {
    let standing = principal.standing(org_id, permission);
    let outcome = if standing == Standing::Allowed { "allowed" } else { "denied" };
    metrics::counter!("portcullis_authz_checks_total", "outcome" => outcome).increment(1);
    match standing {
        Standing::NotMember => return Err(ApiError::NotFound("organization")),
        Standing::Denied => return Err(ApiError::Forbidden),
        Standing::Allowed => {}
    }
    let client = state.pool.get().await?;
    let row = client.query_opt("SELECT access_mode FROM organizations WHERE id = $1", &[&org_id]).await?;
    let Some(row) = row else { return Err(ApiError::NotFound("organization")) };
    let access_mode: AccessMode = row.try_get::<_, &str>(0)?.parse().map_err(ApiError::internal)?;
    if !permission.ignores_access_mode() {
        match access_mode {
            AccessMode::Blocked => return Err(ApiError::OrgBlocked),
            AccessMode::ReadOnly if permission.is_mutation() => return Err(ApiError::ReadOnly),
            _ => {}
        }
    }
    Ok(OrgContext { id: org_id, access_mode })
}

/// The bearer token of a request.
fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else { return Err(ApiError::MissingToken) };
    let value = value.to_str().map_err(|_| ApiError::InvalidToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::InvalidToken);
    }
    Ok(token.trim().to_owned())
}

/// The bearer token of a request, for routes that authenticate by hand.
pub fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    bearer(req)
}

/// Resolves a bearer token to the principal behind it.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    if token.starts_with("pcl_") {
        return authenticate_key(state, token).await;
    }
    // Signature and expiry first: a forged token never takes a database connection.
    let claims = state.auth.tokens.verify_access(token)?;
    let client = state.pool.get().await?;
    let live = client
        .query_opt(
            "SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()",
            &[&claims.sid, &claims.sub],
        )
        .await?;
    if live.is_none() {
        return Err(ApiError::InvalidToken);
    }
    match state.auth.cache.get(&client, claims.sub).await? {
        Some(access) if !access.disabled => Ok(Principal::User(UserPrincipal { session_id: claims.sid, access })),
        _ => Err(ApiError::InvalidToken),
    }
}

/// An API key, from the cache when it was seen recently (keys rotated or revoked through this
/// engine leave the cache at once; the TTL bounds changes made elsewhere).
async fn authenticate_key(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let hash = crypto::keyed_hash(&state.auth.pepper, crypto::API_KEY_PURPOSE, token);
    let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else { return Err(ApiError::InvalidToken) };
    let entry = match state.auth.keys.get(&hash) {
        Some(entry) => entry,
        None => {
            let client = state.pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT id, org_id, scopes, gate_ids, expires_at, revoked_at IS NOT NULL, last_used_at
                     FROM api_keys WHERE key_hash = $1",
                    &[&hash.as_slice()],
                )
                .await?;
            // Unknown keys are not cached: guessing must not fill memory.
            let Some(row) = row else { return Err(ApiError::InvalidToken) };
            let scopes: Vec<String> = row.try_get(2)?;
            let entry = KeyEntry {
                key_id: row.try_get(0)?,
                org_id: row.try_get(1)?,
                // A scope this build does not know grants nothing.
                scopes: scopes.iter().filter_map(|s| s.parse().ok()).collect(),
                gate_ids: row.try_get(3)?,
                expires_at: row.try_get(4)?,
                revoked: row.try_get(5)?,
                last_used_at: row.try_get(6)?,
            };
            state.auth.keys.put(hash, entry.clone());
            entry
        }
    };
    if entry.revoked {
        return Err(ApiError::InvalidToken);
    }
    let now = Utc::now();
    if entry.expires_at.is_some_and(|exp| exp <= now) {
        return Err(ApiError::TokenExpired);
    }
    if entry.last_used_at.is_none_or(|t| (now - t).num_seconds() >= LAST_USED_RESOLUTION_SECS) {
        state.auth.keys.touch(&hash, now);
        let pool = state.pool.clone();
        let key_id = entry.key_id;
        // Off the request path: a device's swipe never waits for this write.
        actix_web::rt::spawn(async move {
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

fn app_state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>().cloned().ok_or_else(|| ApiError::internal("application state missing"))
}

type Boxed<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

/// Any authenticated caller.
pub struct Authenticated(pub Principal);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Boxed<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (state, token) = (app_state(req), bearer(req));
        Box::pin(async move { Ok(Authenticated(authenticate(&*state?, &token?).await?)) })
    }
}

/// An authenticated platform administrator.
pub struct PlatformAdmin(pub Principal);

impl FromRequest for PlatformAdmin {
    type Error = ApiError;
    type Future = Boxed<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (state, token) = (app_state(req), bearer(req));
        Box::pin(async move {
            let principal = authenticate(&*state?, &token?).await?;
            let allowed = principal.is_platform_admin();
            metrics::counter!("portcullis_authz_checks_total", "outcome" => if allowed { "allowed" } else { "denied" })
                .increment(1);
            if allowed { Ok(PlatformAdmin(principal)) } else { Err(ApiError::Forbidden) }
        })
    }
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
        AuditRead,
    );
}

/// A caller allowed `P::PERMISSION` in the organization named by the `{org}` path segment.
pub struct Authorized<P: Policy> {
    pub principal: Principal,
    pub org: OrgContext,
    _policy: PhantomData<P>,
}

impl<P: Policy + 'static> FromRequest for Authorized<P> {
    type Error = ApiError;
    type Future = Boxed<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (state, token) = (app_state(req), bearer(req));
        let org_id = req.match_info().get("org").map(Uuid::try_parse);
        Box::pin(async move {
            let state = state?;
            let principal = authenticate(&state, &token?).await?;
            let Some(Ok(org_id)) = org_id else { return Err(ApiError::NotFound("organization")) };
            let org = authorize(&state, &principal, org_id, P::PERMISSION).await?;
            Ok(Authorized { principal, org, _policy: PhantomData })
        })
    }
}

/// The peer address of the connection (not a client-supplied header, which anyone can forge).
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequest for ClientAddr {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(ClientAddr(req.peer_addr().map(|a| a.ip()))))
    }
}
