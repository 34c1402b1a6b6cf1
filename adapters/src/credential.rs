//! What a reader or a turnstile hands over, read once, for every edge (HTTP decisions, OSDP,
//! panel dialects) and for pass issuance alike: Portcullis QR payloads, PINs, card values.
//!
//! QR codes rotate: `PCL1.<credential id>.<time step>.<mac>`, where the step is 30 s of Unix time
//! and the MAC is HMAC-SHA-256 under the credential's seed, truncated to 16 bytes. A code is
//! accepted during its step and the next one. The seed is the caller's (the server derives it
//! from its pepper and never stores it).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// The length of a QR time step, in seconds.
pub const QR_STEP_SECS: i64 = 30;
const QR_PREFIX: &str = "PCL1";
const MAC_BYTES: usize = 16;

/// The shortest and longest PIN a keypad takes.
pub const PIN_DIGITS: std::ops::RangeInclusive<usize> = 4..=12;

/// The QR step of a Unix time.
pub fn qr_step(unix_secs: i64) -> u64 {
    u64::try_from(unix_secs / QR_STEP_SECS).unwrap_or(0)
}

/// A parsed QR payload (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrCode {
    pub credential_id: Uuid,
    pub step: u64,
    mac: Vec<u8>,
}

fn mac(seed: &[u8], credential_id: Uuid, step: u64) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(seed).ok()?;
    mac.update(format!("{QR_PREFIX}.{credential_id}.{step}").as_bytes());
    Some(mac)
}

impl QrCode {
    /// The payload valid at `unix_secs`, and the seconds until it is no longer accepted.
    pub fn issue(seed: &[u8], credential_id: Uuid, unix_secs: i64) -> (String, i64) {
        let step = qr_step(unix_secs);
        let tag: Vec<u8> = mac(seed, credential_id, step)
            .map(|m| m.finalize().into_bytes().iter().take(MAC_BYTES).copied().collect())
            .unwrap_or_default();
        let payload = format!(
            "{QR_PREFIX}.{}.{step}.{}",
            URL_SAFE_NO_PAD.encode(credential_id.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag)
        );
        // Accepted through the end of the next step.
        let expires_in = i64::try_from(step + 2).unwrap_or(i64::MAX) * QR_STEP_SECS - unix_secs;
        (payload, expires_in)
    }

    /// Reads a payload; `None` when it is not a Portcullis QR code.
    pub fn parse(payload: &str) -> Option<QrCode> {
        let mut parts = payload.trim().split('.');
        if parts.next()? != QR_PREFIX {
            return None;
        }
        let id = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        let credential_id = Uuid::from_slice(&id).ok()?;
        let step = parts.next()?.parse().ok()?;
        let mac = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        (parts.next().is_none() && mac.len() == MAC_BYTES).then_some(QrCode { credential_id, step, mac })
    }

    /// Whether the MAC is right for `seed` (constant-time).
    pub fn verify(&self, seed: &[u8]) -> bool {
        mac(seed, self.credential_id, self.step).is_some_and(|m| m.verify_truncated_left(&self.mac).is_ok())
    }

    /// Whether the code is within its window at `unix_secs` (its step or the next).
    pub fn is_current(&self, unix_secs: i64) -> bool {
        let current = qr_step(unix_secs);
        self.step + 1 >= current && self.step <= current + 1
    }
}

/// Whether a PIN as typed is one a keypad could send.
pub fn check_pin(value: &str) -> Result<(), String> {
    if PIN_DIGITS.contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("a PIN is {} to {} digits", PIN_DIGITS.start(), PIN_DIGITS.end()))
    }
}

/// Digits of a new PIN for an organization holding `live` PINs: at least 6, and 4 more than the
/// digits of `live`, so that a random guess hits some live PIN at most about once in 10,000 tries
/// however large the organization grows (at most 12, the longest a keypad takes).
pub fn pin_digits(live: u64) -> u32 {
    let digits_of_live = live.checked_ilog10().map_or(1, |d| d + 1);
    (digits_of_live + 4).clamp(6, 12)
}

/// A fresh random PIN of `digits` digits (from the operating system's generator).
pub fn random_pin(digits: u32) -> String {
    use rand::Rng;
    let bound = 10u64.pow(digits.min(12));
    let n = rand::rngs::OsRng.gen_range(0..bound);
    format!("{n:0width$}", width = digits.min(12) as usize)
}

/// A card as a reader or an integration sends it: `"<facility>:<number>"` or the number alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardValue {
    pub facility: Option<u64>,
    pub number: u64,
}

fn digits(value: &str, max_len: usize) -> Result<u64, String> {
    if value.is_empty() || value.len() > max_len || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("must be 1 to {max_len} digits"));
    }
    value.parse().map_err(|_| "is too large".to_owned())
}

impl CardValue {
    pub fn parse(value: &str) -> Result<CardValue, String> {
        match value.split_once(':') {
            Some((facility, number)) => {
                Ok(CardValue { facility: Some(digits(facility, 5)?), number: digits(number, 11)? })
            }
            None => Ok(CardValue { facility: None, number: digits(value, 11)? }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &[u8] = b"a seed of thirty-two bytes or so";

    #[test]
    fn a_qr_code_is_accepted_in_its_step_and_the_next_only() {
        let id = Uuid::from_u128(7);
        let (payload, expires_in) = QrCode::issue(SEED, id, 1_000_000);
        assert!((30..=60).contains(&expires_in), "{expires_in}");
        let code = QrCode::parse(&payload);
        assert!(code.as_ref().is_some_and(|c| c.credential_id == id && c.verify(SEED)));
        assert!(code.as_ref().is_some_and(|c| !c.verify(b"another seed")));
        assert!(code.as_ref().is_some_and(|c| c.is_current(1_000_000 + 30) && !c.is_current(1_000_000 + 90)));
        assert_eq!(QrCode::parse("PCL1.garbage"), None);
        assert_eq!(QrCode::parse(&format!("{payload}.extra")), None);
    }

    #[test]
    fn pins_and_card_values_are_read_once() {
        assert!(check_pin("1234").is_ok() && check_pin("123").is_err() && check_pin("12a4").is_err());
        assert_eq!(pin_digits(0), 6);
        assert_eq!(pin_digits(99), 6);
        assert_eq!(pin_digits(100), 7);
        assert_eq!(pin_digits(u64::MAX), 12);
        let pin = random_pin(9);
        assert!(pin.len() == 9 && check_pin(&pin).is_ok(), "{pin}");
        assert_eq!(CardValue::parse("123:4567"), Ok(CardValue { facility: Some(123), number: 4567 }));
        assert_eq!(CardValue::parse("4567"), Ok(CardValue { facility: None, number: 4567 }));
        assert!(CardValue::parse("12:").is_err() && CardValue::parse("x").is_err());
    }
}
