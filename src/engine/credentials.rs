//! Credentials at the edge: what a gate presents becomes lookup keys for the engine's index.
//!
//! Everything is hashed with the server pepper before it is looked up, so the index, like the
//! database, holds no card number, PIN or QR secret. Malformed input is a 422 naming the field;
//! input that is well-formed but unreadable (a Wiegand frame with bad parity) is a deny.
//!
//! How a credential is read (QR payloads, PINs, card values, Wiegand frames) is the adapters'
//! (`portcullis_adapters::credential`, `::wiegand`); here it meets the pepper: QR seeds are
//! derived from it, and lookups are keyed hashes under it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use portcullis_actors::domain::{CardFormat, CredentialKind, Reason};
use portcullis_actors::engine::Presented;
use portcullis_adapters::credential::{CardValue, QrCode, check_pin, pin_digits, random_pin};
use portcullis_adapters::wiegand;
use secrecy::SecretString;
use serde::Deserialize;
use uuid::Uuid;

use crate::crypto;
use crate::error::AppError;

/// Purposes of the lookup hashes (see `crypto::keyed_hash`).
pub const CARD: &str = "card";
pub const CARD_NUMBER: &str = "card-number";
pub const PIN: &str = "pin";
pub const QR: &str = "qr";
const QR_SEED: &str = "qr-seed";

/// A credential in a decision request (API.md).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialInput {
    Qr { value: String },
    Card { value: String },
    Pin { value: String },
    Wiegand { bits: String },
}

fn to_key(hash: Vec<u8>) -> [u8; 32] {
    let mut key = [0u8; 32];
    for (to, from) in key.iter_mut().zip(hash) {
        *to = from;
    }
    key
}

pub fn lookup_key(pepper: &SecretString, purpose: &str, value: &str) -> [u8; 32] {
    to_key(crypto::keyed_hash(pepper, purpose, value))
}

/// The card key: facility and number, facility 0 for formats without one.
pub fn card_value(facility: u64, number: u64) -> String {
    format!("{facility}:{number}")
}

/// Turns a presented credential into lookup keys, or a verdict the edge can already give.
pub fn present(input: &CredentialInput, pepper: &SecretString, now: DateTime<Utc>) -> Result<Presented, AppError> {
    let presented = |kind, lookups, qr_step, verdict| Presented { kind: Some(kind), lookups, qr_step, verdict };
    match input {
        CredentialInput::Card { value } => {
            let card = CardValue::parse(value).map_err(|reason| AppError::field("credential.value", reason))?;
            let lookups = match card.facility {
                Some(facility) => vec![lookup_key(pepper, CARD, &card_value(facility, card.number))],
                None => vec![lookup_key(pepper, CARD_NUMBER, &card.number.to_string())],
            };
            Ok(presented(CredentialKind::Card, lookups, None, None))
        }
        CredentialInput::Wiegand { bits } => {
            let frame = wiegand::parse_bits(bits).map_err(|e| AppError::field("credential.bits", e.to_string()))?;
            match wiegand::decode(&frame) {
                Ok(cards) => {
                    let lookups =
                        cards.iter().map(|c| lookup_key(pepper, CARD, &card_value(c.facility, c.number))).collect();
                    Ok(presented(CredentialKind::Card, lookups, None, None))
                }
                // The reader sent something it could not read properly: a deny, not a client error.
                Err(err) => {
                    tracing::info!(error = %err, "unreadable Wiegand frame");
                    Ok(presented(CredentialKind::Card, Vec::new(), None, Some(Reason::InvalidCredential)))
                }
            }
        }
        CredentialInput::Pin { value } => {
            check_pin(value).map_err(|reason| AppError::field("credential.value", reason))?;
            Ok(presented(CredentialKind::Pin, vec![lookup_key(pepper, PIN, value)], None, None))
        }
        CredentialInput::Qr { value } => {
            let code = QrCode::parse(value)
                .ok_or_else(|| AppError::field("credential.value", "is not a Portcullis QR code"))?;
            let lookups = vec![lookup_key(pepper, QR, &code.credential_id.to_string())];
            let verdict = if !code.verify(&qr_seed(pepper, code.credential_id)) {
                Some(Reason::InvalidCredential)
            } else if !code.is_current(now.timestamp()) {
                Some(Reason::StaleQr)
            } else {
                None
            };
            Ok(presented(CredentialKind::Qr, lookups, Some(code.step), verdict))
        }
    }
}

/// The codec's format for a card format of the API (the same four, by name).
pub fn wiegand_format(format: CardFormat) -> wiegand::Format {
    match format {
        CardFormat::H10301 => wiegand::Format::H10301,
        CardFormat::H10306 => wiegand::Format::H10306,
        CardFormat::H10304 => wiegand::Format::H10304,
        CardFormat::H10302 => wiegand::Format::H10302,
    }
}

/// Lookup keys to store for a new card credential: (facility+number, number alone).
pub fn card_keys(
    pepper: &SecretString,
    format: CardFormat,
    facility: Option<u64>,
    number: u64,
) -> Result<([u8; 32], [u8; 32]), AppError> {
    // The format's limits are the Wiegand codec's: one definition of each card format.
    let layout = wiegand_format(format);
    let (max_facility, max_number, has_facility) = (layout.max_facility(), layout.max_number(), layout.has_facility());
    let facility = match (facility, has_facility) {
        (Some(f), true) if f <= max_facility => f,
        (Some(_), true) => {
            return Err(AppError::field(
                "credential.facility_code",
                format!("must be at most {max_facility} for {format}"),
            ));
        }
        (None, true) => return Err(AppError::field("credential.facility_code", format!("is required for {format}"))),
        (Some(_), false) => {
            return Err(AppError::field("credential.facility_code", format!("{format} has no facility code")));
        }
        (None, false) => 0,
    };
    if number > max_number {
        return Err(AppError::field("credential.card_number", format!("must be at most {max_number} for {format}")));
    }
    Ok((lookup_key(pepper, CARD, &card_value(facility, number)), lookup_key(pepper, CARD_NUMBER, &number.to_string())))
}

/// The QR code of a credential valid at `now`, and the seconds it has left.
pub fn qr_code(pepper: &SecretString, credential_id: Uuid, now: DateTime<Utc>) -> (String, i64) {
    QrCode::issue(&qr_seed(pepper, credential_id), credential_id, now.timestamp())
}

/// The per-credential QR seed: derived, never stored; shown once when the pass is issued.
pub fn qr_seed(pepper: &SecretString, credential_id: Uuid) -> Vec<u8> {
    crypto::keyed_hash(pepper, QR_SEED, &credential_id.to_string())
}

pub fn qr_seed_text(pepper: &SecretString, credential_id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(qr_seed(pepper, credential_id))
}

/// A credential row as stored: the lookup hashes, never the value itself.
pub struct StoredCredential<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub pass_id: Uuid,
    pub kind: CredentialKind,
    pub format: Option<CardFormat>,
    pub lookup_hash: &'a [u8],
    pub number_hash: Option<&'a [u8]>,
    pub display_hint: Option<&'a str>,
    /// A card's facility and number, sealed ([`seal_card`]), for controllers that keep card tables.
    pub card_sealed: Option<&'a [u8]>,
}

/// The purpose a card number is sealed under (see `crypto::seal_secret`).
const CARD_SEALED: &str = "card-number-sealed";

/// A card's facility and number, sealed for the controllers that need the number itself.
pub fn seal_card(pepper: &SecretString, facility: u64, number: u64) -> Vec<u8> {
    crypto::seal_secret(pepper, CARD_SEALED, card_value(facility, number).as_bytes())
}

/// A sealed card's facility and number (`None`: not sealed under this pepper).
pub fn open_card(pepper: &SecretString, sealed: &[u8]) -> Option<(u64, u64)> {
    let text = String::from_utf8(crypto::open_secret(pepper, CARD_SEALED, sealed)?).ok()?;
    let (facility, number) = text.split_once(':')?;
    Some((facility.parse().ok()?, number.parse().ok()?))
}

/// Chooses a PIN no live credential of `org_id` holds, inside the issuing transaction; returns
/// the PIN (to show once) and its lookup key. A clash is retried, never reported: whether a PIN
/// is in use is nobody's business.
pub async fn new_pin(
    client: &impl deadpool_postgres::GenericClient,
    pepper: &SecretString,
    org_id: Uuid,
) -> Result<(String, [u8; 32]), AppError> {
    let live: i64 = client
        .query_one(
            "SELECT count(*) FROM credentials WHERE org_id = $1 AND kind = 'pin' AND revoked_at IS NULL",
            &[&org_id],
        )
        .await?
        .try_get(0)?;
    let digits = pin_digits(live.unsigned_abs());
    for _ in 0..16 {
        let pin = random_pin(digits);
        let key = lookup_key(pepper, PIN, &pin);
        let taken = client
            .query_opt(
                "SELECT 1 FROM credentials WHERE org_id = $1 AND kind = 'pin' AND lookup_hash = $2 AND revoked_at IS NULL",
                &[&org_id, &key.as_slice()],
            )
            .await?;
        if taken.is_none() {
            return Ok((pin, key));
        }
    }
    // Sixteen clashes in a row at under 1 in 10,000 each: the count above was badly wrong.
    Err(AppError::internal("no free PIN found in 16 tries"))
}

/// Writes a credential (pass issuance and the demo seed alike).
pub async fn store(
    client: &impl deadpool_postgres::GenericClient,
    c: &StoredCredential<'_>,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO credentials (id, org_id, pass_id, kind, card_format, lookup_hash, number_hash, display_hint,
                                      card_sealed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &c.id,
                &c.org_id,
                &c.pass_id,
                &c.kind.as_str(),
                &c.format.map(CardFormat::as_str),
                &c.lookup_hash,
                &c.number_hash,
                &c.display_hint,
                &c.card_sealed,
            ],
        )
        .await
}

/// An SVG image of a payload.
pub fn qr_svg(payload: &str) -> Result<String, AppError> {
    let code = qrcode::QrCode::new(payload.as_bytes()).map_err(AppError::internal)?;
    Ok(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(240, 240).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::TimeZone;

    fn pepper() -> SecretString {
        SecretString::from("unit-test-pepper-0123456789abcdef-0123".to_owned())
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
    }

    fn verdict(value: &str, now: DateTime<Utc>) -> Option<Reason> {
        present(&CredentialInput::Qr { value: value.to_owned() }, &pepper(), now).ok().and_then(|p| p.verdict)
    }

    #[test]
    fn a_fresh_code_verifies_and_rotates() {
        let id = Uuid::new_v4();
        let (code, expires_in) = qr_code(&pepper(), id, at(1_800_000_000));
        assert!(expires_in > 30 && expires_in <= 60, "{expires_in}");
        assert_eq!(verdict(&code, at(1_800_000_000)), None);
        assert_eq!(verdict(&code, at(1_800_000_000 + 30)), None, "still good during the next step");
        assert_eq!(verdict(&code, at(1_800_000_000 + 90)), Some(Reason::StaleQr), "a minute-old screenshot");
        let (later, _) = qr_code(&pepper(), id, at(1_800_000_000 + 60));
        assert_ne!(code, later);
    }

    #[test]
    fn a_forged_or_foreign_code_is_refused() {
        let id = Uuid::new_v4();
        let (code, _) = qr_code(&pepper(), id, at(1_800_000_000));
        let other = SecretString::from("another-pepper-0123456789abcdef-012345".to_owned());
        let (foreign, _) = qr_code(&other, id, at(1_800_000_000));
        assert_eq!(verdict(&foreign, at(1_800_000_000)), Some(Reason::InvalidCredential));
        // Change the step without re-signing.
        let parts: Vec<&str> = code.split('.').collect();
        let bumped = format!("{}.{}.{}.{}", parts[0], parts[1], "1", parts[3]);
        assert_eq!(verdict(&bumped, at(1_800_000_000)), Some(Reason::InvalidCredential));
        assert!(present(&CredentialInput::Qr { value: "https://example.com".into() }, &pepper(), at(0)).is_err());
    }

    #[test]
    fn cards_pins_and_frames_become_lookups_or_field_errors() {
        let p = pepper();
        let card = |v: &str| present(&CredentialInput::Card { value: v.into() }, &p, at(0));
        assert_eq!(card("123:4567").ok().map(|c| c.lookups), Some(vec![lookup_key(&p, CARD, "123:4567")]));
        assert_eq!(card("4567").ok().map(|c| c.lookups), Some(vec![lookup_key(&p, CARD_NUMBER, "4567")]));
        assert!(card("12a").is_err() && card("").is_err() && card("1:").is_err());
        let frame = present(&CredentialInput::Wiegand { bits: "10111101100010001110101110".into() }, &p, at(0));
        assert_eq!(frame.ok().map(|c| c.lookups), Some(vec![lookup_key(&p, CARD, "123:4567")]));
        let bad_parity = present(&CredentialInput::Wiegand { bits: "10111101100010001110101111".into() }, &p, at(0));
        assert_eq!(bad_parity.ok().and_then(|c| c.verdict), Some(Reason::InvalidCredential));
        assert!(present(&CredentialInput::Wiegand { bits: "10201".into() }, &p, at(0)).is_err());
        assert!(present(&CredentialInput::Pin { value: "12".into() }, &p, at(0)).is_err());
        let keys = card_keys(&p, CardFormat::H10301, Some(123), 4567).ok();
        assert_eq!(keys.map(|k| k.0), Some(lookup_key(&p, CARD, "123:4567")));
        assert!(card_keys(&p, CardFormat::H10301, Some(256), 1).is_err());
        assert!(card_keys(&p, CardFormat::H10301, None, 1).is_err());
        assert!(card_keys(&p, CardFormat::H10302, None, 4567).is_ok());
    }
}
