//! A decision's credential, as a turnstile sends it: the JSON `{kind, value|bits}`, then the
//! reading of its value (QR payload, card value, PIN, Wiegand bit string) into lookup keys.
//! Also every reader of the adapters on the raw text. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::engine::credentials::{CredentialInput, present};
use portcullis_adapters::credential::{CardValue, QrCode, check_pin};
use portcullis_adapters::wiegand;

fuzz_target!(|data: &[u8]| {
    let pepper = secrecy::SecretString::from("fuzz-pepper-0123456789abcdef-0123456789".to_owned());
    if let Ok(input) = serde_json::from_slice::<CredentialInput>(data) {
        let _ = present(&input, &pepper, chrono::Utc::now());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(qr) = QrCode::parse(text) {
            let _ = qr.verify(b"seed");
            let _ = qr.is_current(chrono::Utc::now().timestamp());
        }
        let _ = CardValue::parse(text);
        let _ = check_pin(text);
        if let Ok(bits) = wiegand::parse_bits(text) {
            let _ = wiegand::decode(&bits);
        }
    }
});
