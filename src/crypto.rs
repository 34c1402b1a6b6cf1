//! Secrets at rest: argon2 password hashes, and HMAC-SHA-256 under the server pepper for
//! everything that is looked up by value (API keys, refresh tokens, card numbers, PINs).

use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// An argon2id PHC string (salted, with its parameters) for a password.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches a stored PHC string. A malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// HMAC-SHA-256 of `value` under the pepper, with a purpose label so that a hash made for one
/// purpose (a card) can never be confused with one made for another (a PIN).
pub fn keyed_hash(pepper: &SecretString, purpose: &str, value: &str) -> Vec<u8> {
    // HMAC accepts keys of any length; this cannot fail, but the API is fallible.
    let Ok(mut mac) = HmacSha256::new_from_slice(pepper.expose_secret().as_bytes()) else {
        return Vec::new();
    };
    mac.update(purpose.as_bytes());
    mac.update(&[0]);
    mac.update(value.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Seals a secret the engine must be able to use again (an OSDP reader's SCBK): AES-256-GCM under
/// a key derived from the pepper for `purpose`, with a random nonce stored before the ciphertext.
pub fn seal_secret(pepper: &SecretString, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
    use aes_gcm::aead::{Aead, KeyInit};
    let key = keyed_hash(pepper, purpose, "sealed at rest");
    let Ok(cipher) = aes_gcm::Aes256Gcm::new_from_slice(&key) else { return Vec::new() };
    let nonce: [u8; 12] = rand::random();
    let mut sealed = nonce.to_vec();
    sealed.extend(cipher.encrypt(&nonce.into(), plaintext).unwrap_or_default());
    sealed
}

/// Opens what [`seal_secret`] sealed; `None` if it was sealed under another pepper or purpose, or
/// altered.
pub fn open_secret(pepper: &SecretString, purpose: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    use aes_gcm::aead::{Aead, KeyInit};
    let key = keyed_hash(pepper, purpose, "sealed at rest");
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).ok()?;
    if sealed.len() < 12 {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    cipher.decrypt(&nonce.into(), ciphertext).ok()
}

/// `n` random bytes from the OS, URL-safe base64 without padding.
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The environment an API key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEnv {
    Live,
    Test,
}

impl KeyEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyEnv::Live => "live",
            KeyEnv::Test => "test",
        }
    }
}

/// A freshly generated API key: the secret (shown once), its display prefix, and its stored hash.
pub struct NewApiKey {
    pub key: SecretString,
    pub prefix: String,
    pub hash: Vec<u8>,
}

pub const API_KEY_PURPOSE: &str = "api-key";

/// `pcl_live_<43 chars>`: 32 random bytes.
pub fn new_api_key(env: KeyEnv, pepper: &SecretString) -> NewApiKey {
    let key = format!("pcl_{}_{}", env.as_str(), random_token(32));
    let prefix: String = key.chars().take(format!("pcl_{}_", env.as_str()).len() + 6).collect();
    let hash = keyed_hash(pepper, API_KEY_PURPOSE, &key);
    NewApiKey { key: SecretString::from(key), prefix, hash }
}

#[cfg(test)]
mod sealed_tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_under_its_pepper_and_purpose() {
        let pepper = SecretString::from("a-pepper-of-at-least-thirty-two-bytes-0123".to_owned());
        let sealed = seal_secret(&pepper, "scbk", b"0123456789abcdef");
        assert!(!sealed.windows(16).any(|w| w == b"0123456789abcdef"), "not in the clear");
        assert_eq!(open_secret(&pepper, "scbk", &sealed).as_deref(), Some(&b"0123456789abcdef"[..]));
        assert_eq!(open_secret(&pepper, "other", &sealed), None);
        let other = SecretString::from("another-pepper-of-at-least-thirty-two-bytes".to_owned());
        assert_eq!(open_secret(&other, "scbk", &sealed), None);
        let mut altered = sealed.clone();
        if let Some(b) = altered.last_mut() {
            *b ^= 1;
        }
        assert_eq!(open_secret(&pepper, "scbk", &altered), None);
        assert_ne!(seal_secret(&pepper, "scbk", b"0123456789abcdef"), sealed, "a fresh nonce each time");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pepper() -> SecretString {
        SecretString::from("0123456789abcdef0123456789abcdef".to_owned())
    }

    #[test]
    fn password_round_trip() {
        let hash = hash_password("correct horse").unwrap_or_default();
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("correct horse"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a phc string"));
    }

    #[test]
    fn keyed_hash_separates_purposes_and_peppers() {
        let a = keyed_hash(&pepper(), "card", "123:4567");
        assert_eq!(a.len(), 32);
        assert_eq!(a, keyed_hash(&pepper(), "card", "123:4567"));
        assert_ne!(a, keyed_hash(&pepper(), "pin", "123:4567"));
        let other = SecretString::from("another-pepper-of-at-least-32-bytes!".to_owned());
        assert_ne!(a, keyed_hash(&other, "card", "123:4567"));
    }

    #[test]
    fn api_keys_are_prefixed_unique_and_hashed() {
        let one = new_api_key(KeyEnv::Live, &pepper());
        let two = new_api_key(KeyEnv::Test, &pepper());
        assert!(one.key.expose_secret().starts_with("pcl_live_"));
        assert!(two.key.expose_secret().starts_with("pcl_test_"));
        assert!(one.key.expose_secret().len() >= 9 + 43);
        assert!(one.key.expose_secret().starts_with(&one.prefix));
        assert_ne!(one.key.expose_secret(), two.key.expose_secret());
        assert_eq!(one.hash, keyed_hash(&pepper(), API_KEY_PURPOSE, one.key.expose_secret()));
    }
}
