//! Operator sessions: login, refresh (single-use tokens, reuse revokes the session), logout,
//! password change, and the sweep of expired sessions.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::Pool;
use portcullis_actors::domain::Role;
use portcullis_actors::sched;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::app::App;
use crate::audit::{self, Actor, Event};
use crate::auth::AccessChange;
use crate::auth::cache::UserAccess;
use crate::auth::principal::UserPrincipal;
use crate::auth::tokens::TokenKeys;
use crate::crypto;
use crate::error::AppError;

pub const MIN_PASSWORD_CHARS: usize = 12;
pub const MAX_PASSWORD_CHARS: usize = 256;

/// What login and refresh answer (API.md).
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: SecretString,
    pub expires_in: u64,
    pub user: Arc<UserAccess>,
}

/// A token pair as sent to the client (the only place the refresh token is exposed). Not
/// `Debug`, so it cannot be logged by accident.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Tokens {
    pub access_token: String,
    /// Single use: a second use ends the session.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token lives.
    pub expires_in: u64,
    pub user: Me,
}

impl TokenPair {
    pub fn answer(&self) -> Tokens {
        Tokens {
            access_token: self.access_token.clone(),
            refresh_token: self.refresh_token.expose_secret().to_owned(),
            token_type: "Bearer",
            expires_in: self.expires_in,
            user: Me::of(&self.user),
        }
    }
}

/// `GET /me` and the `user` of a token pair: who is signed in, and their role in each
/// organization.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub is_platform_admin: bool,
    pub roles: Vec<OrgRole>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrgRole {
    pub org_id: Uuid,
    pub role: Role,
}

impl Me {
    pub fn of(user: &UserAccess) -> Self {
        let mut roles: Vec<OrgRole> = user.roles.iter().map(|(&org_id, &role)| OrgRole { org_id, role }).collect();
        roles.sort_by_key(|r| r.org_id);
        Me {
            id: user.user_id,
            email: user.email.clone(),
            name: user.name.clone(),
            is_platform_admin: user.is_platform_admin,
            roles,
        }
    }
}

/// A well-formed hash of nothing, verified when the account does not exist so that a failed
/// login takes as long whether or not the email is known.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| crypto::hash_password("decoy password that matches nothing").unwrap_or_default())
}

/// Checks a new password against the policy; the error names `field`.
pub fn check_password_policy(field: &str, password: &str) -> Result<(), AppError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(AppError::field(field, format!("must be at least {MIN_PASSWORD_CHARS} characters")));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(AppError::field(field, format!("must be at most {MAX_PASSWORD_CHARS} characters")));
    }
    Ok(())
}

/// argon2 is deliberately slow: run it off the async workers, under the default scheduling.
pub async fn verify_password(password: String, hash: String) -> Result<bool, AppError> {
    Ok(sched::blocking(move || crypto::verify_password(&password, &hash)).await?)
}

pub async fn hash_password(password: String) -> Result<String, AppError> {
    sched::blocking(move || crypto::hash_password(&password)).await?.map_err(AppError::internal)
}

pub async fn login(
    state: &App,
    email: &str,
    password: String,
    addr: Option<IpAddr>,
    user_agent: Option<String>,
) -> Result<TokenPair, AppError> {
    let email = email.trim().to_lowercase();
    state.auth.limiter.check(&email, addr)?;
    let client = state.pool.get().await?;
    // A known address is one the account has signed in from before (its sessions remember it).
    let row = client
        .query_opt(
            "SELECT u.id, u.password_hash, u.disabled_at IS NOT NULL,
                    EXISTS (SELECT 1 FROM sessions s WHERE s.user_id = u.id AND s.client_addr = $2)
             FROM users u WHERE u.email = $1",
            &[&email, &addr],
        )
        .await?;
    let (user_id, hash, disabled, known) = match &row {
        Some(row) => (
            Some(row.try_get::<_, Uuid>(0)?),
            row.try_get::<_, String>(1)?,
            row.try_get::<_, bool>(2)?,
            row.try_get::<_, bool>(3)?,
        ),
        None => (None, decoy_hash().to_owned(), false, false),
    };
    state.auth.limiter.check_account(&email, known)?;
    let matches = verify_password(password, hash).await?;
    let failure = match (user_id, matches, disabled) {
        (None, _, _) => Some("unknown_account"),
        (Some(_), false, _) => Some("wrong_password"),
        (Some(_), true, true) => Some("account_disabled"),
        (Some(_), true, false) => None,
    };
    let actor = Actor::user(user_id, addr);
    if let Some(reason) = failure {
        // A disabled account with the right password is not a guess: it does not back off.
        if reason != "account_disabled" {
            state.auth.limiter.failed(&email, addr, known);
        }
        metrics::counter!("portcullis_logins_total", "outcome" => "failed").increment(1);
        let target = user_id.map(|id| id.to_string()).unwrap_or_default();
        let event = Event::new(None, "auth.login_failed", "user", target).details(json!({ "reason": reason }));
        audit::record(&client, actor, event).await?;
        // One answer for every failure: it must not tell whether the email exists.
        return Err(AppError::InvalidCredentials);
    }
    let user_id = user_id.ok_or(AppError::InvalidCredentials)?;
    state.auth.limiter.succeeded(&email, addr);
    let session_id = Uuid::now_v7();
    let (refresh_token, refresh_hash) = state.auth.tokens.new_refresh(session_id);
    let expires_at =
        Utc::now() + Duration::seconds(i64::try_from(state.auth.tokens.refresh_ttl_secs).unwrap_or(i64::MAX));
    client
        .execute(
            "INSERT INTO sessions (id, user_id, refresh_token_hash, expires_at, client_addr, user_agent)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&session_id, &user_id, &refresh_hash, &expires_at, &addr, &user_agent],
        )
        .await?;
    audit::record(&client, actor, Event::new(None, "auth.login", "session", session_id)).await?;
    metrics::counter!("portcullis_logins_total", "outcome" => "succeeded").increment(1);
    let user = state.auth.cache.get(&client, user_id).await?.ok_or(AppError::InvalidCredentials)?;
    Ok(TokenPair {
        access_token: state.auth.tokens.issue_access(user_id, session_id)?,
        refresh_token,
        expires_in: state.auth.tokens.access_ttl_secs,
        user,
    })
}

pub async fn refresh(state: &App, token: &str, addr: Option<IpAddr>) -> Result<TokenPair, AppError> {
    let session_id = TokenKeys::refresh_session(token).ok_or(AppError::InvalidToken)?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT user_id, refresh_token_hash, revoked_at, expires_at FROM sessions WHERE id = $1 FOR UPDATE",
            &[&session_id],
        )
        .await?;
    let Some(row) = row else { return Err(AppError::InvalidToken) };
    let user_id: Uuid = row.try_get(0)?;
    if row.try_get::<_, Option<DateTime<Utc>>>(2)?.is_some() {
        return Err(AppError::InvalidToken);
    }
    if row.try_get::<_, DateTime<Utc>>(3)? <= Utc::now() {
        return Err(AppError::TokenExpired);
    }
    let presented = state.auth.tokens.refresh_hash(token);
    if row.try_get::<_, &[u8]>(1)? != presented.as_slice() {
        let spent = tx
            .query_opt(
                "SELECT 1 FROM spent_refresh_tokens WHERE token_hash = $1 AND session_id = $2",
                &[&presented, &session_id],
            )
            .await?;
        if spent.is_none() {
            // Never issued for this session (a guess or a forgery naming it): merely invalid. Ending
            // the session here would let anyone who read its id log its owner out.
            return Err(AppError::InvalidToken);
        }
        // A token this session really issued and already spent: it was copied. End the session
        // for everyone holding it.
        tx.execute(
            "UPDATE sessions SET revoked_at = now(), revoke_reason = 'refresh_token_reused' WHERE id = $1",
            &[&session_id],
        )
        .await?;
        audit::record(
            &tx,
            Actor::user(Some(user_id), addr),
            Event::new(None, "auth.refresh_reuse_detected", "session", session_id),
        )
        .await?;
        tx.commit().await?;
        state.auth.changed(AccessChange::Session(session_id));
        return Err(AppError::InvalidToken);
    }
    let user = match state.auth.cache.get(&tx, user_id).await? {
        Some(user) if !user.disabled => user,
        _ => return Err(AppError::InvalidToken),
    };
    let (refresh_token, refresh_hash) = state.auth.tokens.new_refresh(session_id);
    tx.execute(
        "UPDATE sessions SET refresh_token_hash = $2, last_used_at = now() WHERE id = $1",
        &[&session_id, &refresh_hash],
    )
    .await?;
    tx.execute("INSERT INTO spent_refresh_tokens (token_hash, session_id) VALUES ($1, $2)", &[&presented, &session_id])
        .await?;
    tx.commit().await?;
    Ok(TokenPair {
        access_token: state.auth.tokens.issue_access(user_id, session_id)?,
        refresh_token,
        expires_in: state.auth.tokens.access_ttl_secs,
        user,
    })
}

pub async fn logout(state: &App, user: &UserPrincipal, addr: Option<IpAddr>) -> Result<(), AppError> {
    let client = state.pool.get().await?;
    client
        .execute(
            "UPDATE sessions SET revoked_at = now(), revoke_reason = 'logout' WHERE id = $1 AND revoked_at IS NULL",
            &[&user.session_id],
        )
        .await?;
    state.auth.changed(AccessChange::Session(user.session_id));
    let actor = Actor::user(Some(user.access.user_id), addr);
    audit::record(&client, actor, Event::new(None, "auth.logout", "session", user.session_id)).await?;
    Ok(())
}

pub async fn change_password(
    state: &App,
    user: &UserPrincipal,
    current: String,
    new: String,
    addr: Option<IpAddr>,
) -> Result<(), AppError> {
    check_password_policy("new_password", &new)?;
    if current == new {
        return Err(AppError::field("new_password", "must differ from the current password"));
    }
    // Guessing the current password through this route is rate limited like login.
    state.auth.limiter.check(&user.access.email, addr)?;
    let user_id = user.access.user_id;
    let mut client = state.pool.get().await?;
    let hash: String =
        client.query_one("SELECT password_hash FROM users WHERE id = $1", &[&user_id]).await?.try_get(0)?;
    let actor = Actor::user(Some(user_id), addr);
    if !verify_password(current, hash).await? {
        // Signed in already, so the address is known: only the pair backs off.
        state.auth.limiter.failed(&user.access.email, addr, true);
        let event = Event::new(None, "auth.password_change_failed", "user", user_id);
        audit::record(&client, actor, event).await?;
        return Err(AppError::InvalidCredentials);
    }
    let new_hash = hash_password(new).await?;
    let tx = client.transaction().await?;
    tx.execute(
        "UPDATE users SET password_hash = $2, password_changed_at = now(), updated_at = now() WHERE id = $1",
        &[&user_id, &new_hash],
    )
    .await?;
    let ended = tx
        .execute(
            "UPDATE sessions SET revoked_at = now(), revoke_reason = 'password_changed'
             WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL",
            &[&user_id, &user.session_id],
        )
        .await?;
    let event = Event::new(None, "auth.password_changed", "user", user_id).details(json!({ "sessions_ended": ended }));
    audit::record(&tx, actor, event).await?;
    tx.commit().await?;
    // The user's other sessions ended: so do their streams.
    state.auth.changed(AccessChange::User(user_id));
    Ok(())
}

/// Deletes sessions past their expiry (they can no longer be refreshed or used).
pub async fn sweep_expired(pool: &Pool) -> Result<u64, AppError> {
    let client = pool.get().await?;
    Ok(client.execute("DELETE FROM sessions WHERE expires_at < now()", &[]).await?)
}
