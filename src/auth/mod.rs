//! Identity and authorization: who is calling, and may they do this here.
//!
//! - [`permissions`] — the permission table (roles) and API-key scopes.
//! - [`tokens`] — JWT access tokens and single-use refresh tokens.
//! - [`principal`] — resolving a bearer token to a [`principal::Principal`], and the
//!   [`principal::Authorized`] extractor that every organization route uses.
//! - [`cache`] — per-user roles, cached with a TTL and invalidated on change.
//! - [`limits`] — login rate limits per account and per client address.

pub mod cache;
pub mod limits;
pub mod permissions;
pub mod principal;
pub mod tokens;

use secrecy::SecretString;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::config::{AuthSettings, Secrets};
use cache::{AccessCache, KeyCache};
use limits::LoginLimiter;
use tokens::TokenKeys;

/// A change that may take away what a caller could do. Open streams re-check their access when
/// one concerns them, so a disabled member, a revoked key or a blocked organization stops
/// receiving frames at once rather than when its token expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessChange {
    /// The user's status or roles changed (or all their other sessions ended).
    User(Uuid),
    Session(Uuid),
    Key(Uuid),
    /// The organization's access mode changed.
    Org(Uuid),
}

/// Everything authentication needs, shared by all workers.
pub struct AuthContext {
    pub tokens: TokenKeys,
    pub pepper: SecretString,
    pub cache: AccessCache,
    pub keys: KeyCache,
    pub limiter: LoginLimiter,
    changes: broadcast::Sender<AccessChange>,
}

impl AuthContext {
    pub fn new(settings: &AuthSettings, secrets: Secrets) -> Self {
        AuthContext {
            tokens: TokenKeys::new(
                &secrets.jwt_secret,
                secrets.api_key_pepper.clone(),
                settings.access_token_ttl_secs,
                settings.refresh_token_ttl_secs,
            ),
            pepper: secrets.api_key_pepper,
            cache: AccessCache::new(std::time::Duration::from_secs(settings.permission_cache_ttl_secs)),
            keys: KeyCache::new(std::time::Duration::from_secs(settings.permission_cache_ttl_secs)),
            limiter: LoginLimiter::new(settings.login_attempts_per_account, settings.login_attempts_per_address),
            // A stream that falls this far behind re-checks its access anyway.
            changes: broadcast::channel(1024).0,
        }
    }

    /// Announces a change to open streams (made through this node; the streams' periodic check
    /// covers changes made elsewhere).
    pub fn changed(&self, change: AccessChange) {
        match change {
            AccessChange::User(user_id) => self.cache.invalidate(user_id),
            AccessChange::Key(key_id) => self.keys.invalidate(key_id),
            AccessChange::Session(_) | AccessChange::Org(_) => {}
        }
        // No receiver (no open stream) is not an error.
        let _ = self.changes.send(change);
    }

    pub fn subscribe_changes(&self) -> broadcast::Receiver<AccessChange> {
        self.changes.subscribe()
    }
}
