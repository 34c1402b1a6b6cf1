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

/// What an API key's lookup found, kept in memory so that devices deciding at a gate never wait
/// on the database: a key seen once is answered from here, and a background refresh
/// ([`KeyCache::refresh`]) keeps it current. While the database is away, the last good copy stays.
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

impl KeyEntry {
    /// From the columns [`KEY_COLUMNS`] names, starting at column `at` of the row.
    pub fn from_row(row: &tokio_postgres::Row, at: usize) -> Result<KeyEntry, tokio_postgres::Error> {
        let scopes: Vec<String> = row.try_get(at + 2)?;
        Ok(KeyEntry {
            key_id: row.try_get(at)?,
            org_id: row.try_get(at + 1)?,
            // A scope this build does not know grants nothing.
            scopes: scopes.iter().filter_map(|s| s.parse().ok()).collect(),
            gate_ids: row.try_get(at + 3)?,
            expires_at: row.try_get(at + 4)?,
            revoked: row.try_get(at + 5)?,
            last_used_at: row.try_get(at + 6)?,
        })
    }
}

/// The columns [`KeyEntry::from_row`] reads, in order.
pub const KEY_COLUMNS: &str = "id, org_id, scopes, gate_ids, expires_at, revoked_at IS NOT NULL, last_used_at";

pub struct KeyCache {
    // Why a concurrent map: every device request on every worker reads it.
    entries: DashMap<[u8; 32], KeyEntry>,
    /// How often [`KeyCache::refresh`] runs: the longest a change made through another node
    /// goes unseen while the database is reachable.
    pub refresh_every: Duration,
}

impl KeyCache {
    pub fn new(refresh_every: Duration) -> Self {
        KeyCache { entries: DashMap::new(), refresh_every }
    }

    pub fn get(&self, hash: &[u8; 32]) -> Option<KeyEntry> {
        self.entries.get(hash).map(|e| e.clone())
    }

    pub fn put(&self, hash: [u8; 32], entry: KeyEntry) {
        self.entries.insert(hash, entry);
    }

    pub fn touch(&self, hash: &[u8; 32], at: chrono::DateTime<chrono::Utc>) {
        if let Some(mut entry) = self.entries.get_mut(hash) {
            entry.last_used_at = Some(at);
        }
    }

    /// Forget a key (rotated or revoked through this engine).
    pub fn invalidate(&self, key_id: Uuid) {
        self.entries.retain(|_, e| e.key_id != key_id);
    }

    /// Re-reads every key held from the database (one query): changed ones are updated; deleted
    /// and revoked ones dropped (a certificate whose key was rotated elsewhere then finds its new
    /// key). On an error nothing changes: the last good copy serves until the next try.
    pub async fn refresh(&self, client: &impl GenericClient) -> Result<usize, tokio_postgres::Error> {
        let mut ids: Vec<Uuid> = self.entries.iter().map(|e| e.key_id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(0);
        }
        let rows = client.query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ANY($1)"), &[&ids]).await?;
        let mut fresh = HashMap::with_capacity(rows.len());
        for row in &rows {
            let entry = KeyEntry::from_row(row, 0)?;
            fresh.insert(entry.key_id, entry);
        }
        self.entries.retain(|_, held| match fresh.get(&held.key_id) {
            Some(entry) if !entry.revoked => {
                // A touch not yet written is newer than the row.
                let last_used_at = entry.last_used_at.max(held.last_used_at);
                *held = KeyEntry { last_used_at, ..entry.clone() };
                true
            }
            _ => false,
        });
        Ok(rows.len())
    }
}
