//! Per-user access (platform admin flag, roles per organization), cached.
//!
//! Changes made through this node invalidate the entry at once; the TTL bounds how long another
//! node's change can go unseen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use deadpool_postgres::GenericClient;
use portcullis_actors::domain::Role;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct UserAccess {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub is_platform_admin: bool,
    pub disabled: bool,
    /// Active memberships only.
    pub roles: HashMap<Uuid, Role>,
}

impl UserAccess {
    /// The user's role in an organization; a platform admin is one everywhere.
    pub fn role_in(&self, org_id: Uuid) -> Option<Role> {
        if self.is_platform_admin { Some(Role::PlatformAdmin) } else { self.roles.get(&org_id).copied() }
    }
}

pub struct AccessCache {
    // Why a concurrent map: every authenticated request on every worker reads it.
    entries: DashMap<Uuid, (Instant, Arc<UserAccess>)>,
    ttl: Duration,
}

impl AccessCache {
    pub fn new(ttl: Duration) -> Self {
        AccessCache { entries: DashMap::new(), ttl }
    }

    /// The user's access, from the cache or the database; `None` if the user does not exist.
    pub async fn get(
        &self,
        client: &impl GenericClient,
        user_id: Uuid,
    ) -> Result<Option<Arc<UserAccess>>, tokio_postgres::Error> {
        if let Some(entry) = self.entries.get(&user_id)
            && entry.0.elapsed() < self.ttl
        {
            metrics::counter!("portcullis_authz_cache_total", "result" => "hit").increment(1);
            return Ok(Some(entry.1.clone()));
        }
        metrics::counter!("portcullis_authz_cache_total", "result" => "miss").increment(1);
        let Some(user) = client
            .query_opt(
                "SELECT email, name, is_platform_admin, disabled_at IS NOT NULL FROM users WHERE id = $1",
                &[&user_id],
            )
            .await?
        else {
            self.entries.remove(&user_id);
            return Ok(None);
        };
        let memberships = client
            .query("SELECT org_id, role FROM memberships WHERE user_id = $1 AND disabled_at IS NULL", &[&user_id])
            .await?;
        let mut roles = HashMap::new();
        for row in memberships {
            let role: &str = row.try_get(1)?;
            match role.parse::<Role>() {
                Ok(role) => {
                    roles.insert(row.try_get(0)?, role);
                }
                Err(err) => tracing::error!(%user_id, %err, "membership with an unknown role ignored"),
            }
        }
        let access = Arc::new(UserAccess {
            user_id,
            email: user.try_get(0)?,
            name: user.try_get(1)?,
            is_platform_admin: user.try_get(2)?,
            disabled: user.try_get(3)?,
            roles,
        });
        self.entries.insert(user_id, (Instant::now(), access.clone()));
        Ok(Some(access))
    }

    /// Forget one user (their roles or status changed).
    pub fn invalidate(&self, user_id: Uuid) {
        self.entries.remove(&user_id);
    }

    /// Forget everyone (an organization and its memberships were deleted).
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// Drops expired entries.
    pub fn purge_expired(&self) {
        self.entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
    }
}

/// What an API key's lookup found, cached so that devices deciding at a gate do not wait on the
/// database for every swipe.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub key_id: Uuid,
    pub org_id: Uuid,
    pub scopes: Vec<crate::auth::permissions::Scope>,
    pub gate_ids: Vec<Uuid>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked: bool,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub struct KeyCache {
    // Why a concurrent map: every device request on every worker reads it.
    entries: DashMap<[u8; 32], (Instant, KeyEntry)>,
    ttl: Duration,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        KeyCache { entries: DashMap::new(), ttl }
    }

    pub fn get(&self, hash: &[u8; 32]) -> Option<KeyEntry> {
        let entry = self.entries.get(hash)?;
        (entry.0.elapsed() < self.ttl).then(|| entry.1.clone())
    }

    pub fn put(&self, hash: [u8; 32], entry: KeyEntry) {
        self.entries.insert(hash, (Instant::now(), entry));
    }

    pub fn touch(&self, hash: &[u8; 32], at: chrono::DateTime<chrono::Utc>) {
        if let Some(mut entry) = self.entries.get_mut(hash) {
            entry.1.last_used_at = Some(at);
        }
    }

    /// Forget a key (rotated or revoked through this engine).
    pub fn invalidate(&self, key_id: Uuid) {
        self.entries.retain(|_, (_, e)| e.key_id != key_id);
    }

    pub fn purge_expired(&self) {
        self.entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
    }
}
