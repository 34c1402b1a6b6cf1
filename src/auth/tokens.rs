//! Access tokens (JWT, HS256, short-lived, bound to a session) and refresh tokens (opaque,
//! single-use, stored only as a peppered hash).
//!
//! A refresh token is `pcr_<session id>_<secret>`: the session id lets a *reused* token be traced
//! to its session, which is then revoked (the token was stolen or replayed).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto;
use crate::error::AppError;

const ISSUER: &str = "portcullis";
const REFRESH_PREFIX: &str = "pcr_";
const REFRESH_PURPOSE: &str = "refresh-token";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user.
    pub sub: Uuid,
    /// The session the token belongs to; revoking the session ends the token.
    pub sid: Uuid,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
}

/// Signs and checks tokens with the server's secrets.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pepper: SecretString,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
}

impl TokenKeys {
    pub fn new(jwt_secret: &SecretString, pepper: SecretString, access_ttl_secs: u64, refresh_ttl_secs: u64) -> Self {
        let secret = jwt_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            pepper,
            access_ttl_secs,
            refresh_ttl_secs,
        }
    }

    pub fn issue_access(&self, user_id: Uuid, session_id: Uuid) -> Result<String, AppError> {
        let now = unix_now();
        let claims = AccessClaims {
            sub: user_id,
            sid: session_id,
            iat: now,
            exp: now + self.access_ttl_secs,
            iss: ISSUER.into(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(AppError::internal)
    }

    /// Checks signature, algorithm, issuer and expiry.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, AppError> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation).map(|data| data.claims).map_err(
            |err| match err.kind() {
                ErrorKind::ExpiredSignature => AppError::TokenExpired,
                _ => AppError::InvalidToken,
            },
        )
    }

    /// A new refresh token for a session, and the hash to store.
    pub fn new_refresh(&self, session_id: Uuid) -> (SecretString, Vec<u8>) {
        let token = format!("{REFRESH_PREFIX}{}_{}", session_id.simple(), crypto::random_token(32));
        let hash = self.refresh_hash(&token);
        (SecretString::from(token), hash)
    }

    pub fn refresh_hash(&self, token: &str) -> Vec<u8> {
        crypto::keyed_hash(&self.pepper, REFRESH_PURPOSE, token)
    }

    /// The session a refresh token claims to belong to; `None` when it is not one of ours.
    pub fn refresh_session(token: &str) -> Option<Uuid> {
        let rest = token.strip_prefix(REFRESH_PREFIX)?;
        let (session, secret) = rest.split_once('_')?;
        (!secret.is_empty()).then_some(())?;
        Uuid::try_parse(session).ok()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ttl: u64) -> TokenKeys {
        TokenKeys::new(
            &SecretString::from("jwt-secret-for-unit-tests-0123456789abcdef".to_owned()),
            SecretString::from("pepper-for-unit-tests-0123456789abcdef".to_owned()),
            ttl,
            3600,
        )
    }

    #[test]
    fn access_tokens_round_trip() {
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let token = keys(60).issue_access(user, session).unwrap_or_default();
        let claims = keys(60).verify_access(&token).ok();
        assert_eq!(claims.map(|c| (c.sub, c.sid)), Some((user, session)));
    }

    #[test]
    fn tampered_foreign_and_garbage_tokens_are_invalid() {
        let token = keys(60).issue_access(Uuid::new_v4(), Uuid::new_v4()).unwrap_or_default();
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(keys(60).verify_access(&tampered), Err(AppError::InvalidToken)));
        let other = TokenKeys::new(
            &SecretString::from("another-secret-entirely-0123456789abcdef!".to_owned()),
            SecretString::from("pepper".to_owned()),
            60,
            60,
        );
        assert!(matches!(other.verify_access(&token), Err(AppError::InvalidToken)));
        assert!(matches!(keys(60).verify_access("not.a.jwt"), Err(AppError::InvalidToken)));
    }

    #[test]
    fn an_expired_token_says_so() {
        let keys = keys(60);
        let now = unix_now();
        let claims = AccessClaims {
            sub: Uuid::new_v4(),
            sid: Uuid::new_v4(),
            iat: now - 120,
            exp: now - 60,
            iss: ISSUER.into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap_or_default();
        assert!(matches!(keys.verify_access(&token), Err(AppError::TokenExpired)));
    }

    #[test]
    fn the_none_algorithm_is_refused() {
        // {"alg":"none"} header with valid-looking claims and no signature.
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let token = format!("{header}.e30.");
        assert!(matches!(keys(60).verify_access(&token), Err(AppError::InvalidToken)));
    }

    #[test]
    fn refresh_tokens_name_their_session_and_hash_differently() {
        let keys = keys(60);
        let session = Uuid::new_v4();
        let (token, hash) = keys.new_refresh(session);
        assert_eq!(TokenKeys::refresh_session(token.expose_secret()), Some(session));
        assert_eq!(keys.refresh_hash(token.expose_secret()), hash);
        let (other, other_hash) = keys.new_refresh(session);
        assert_ne!(token.expose_secret(), other.expose_secret());
        assert_ne!(hash, other_hash);
        assert_eq!(TokenKeys::refresh_session("pcr_nothex_abc"), None);
        assert_eq!(TokenKeys::refresh_session("bearer-something"), None);
    }
}
