//! Panels that ask in their vendor's dialect, answered exactly like our own decision API (same
//! actors, journal and stream; the check-in's `source` names the dialect).
//!
//! BAS-IP "remote access server" (PROTOCOLS.md): the panel POSTs the identifier it read and falls
//! back to its own decision after about 10 s without an answer, so the answer must come well
//! inside that (it does: decisions never wait on the database beyond the admit bound).

use portcullis_actors::domain::{Decision, Source};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::App;
use crate::app::decisions::decide_from;
use crate::auth::principal::Principal;
use crate::engine::credentials::CredentialInput;
use crate::error::AppError;

/// What a BAS-IP panel sends. Panels add fields of their own (device info, time): they are
/// accepted and ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BasIpRequest {
    identifier_number: String,
    identifier_type: String,
}

/// What a BAS-IP panel expects back.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BasIpAnswer {
    pub handled: bool,
    pub access: BasIpAccess,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BasIpAccess {
    pub granted: bool,
    pub lock_number: u8,
}

/// The lock a verdict opens (the panel's first).
const LOCK: u8 = 1;

/// The identifier as one of our credentials: cards by their number (`FC:CN` or the number
/// alone), codes as PINs, QR payloads as they are.
fn credential(request: &BasIpRequest) -> Result<CredentialInput, AppError> {
    let value = request.identifier_number.trim().to_owned();
    match request.identifier_type.trim().to_ascii_lowercase().as_str() {
        "card" | "ukey" | "mifare" | "em_marine" | "em-marine" => Ok(CredentialInput::Card { value }),
        "pin" | "code" | "inner_code" | "access_code" => Ok(CredentialInput::Pin { value }),
        "qr" | "qr_code" => Ok(CredentialInput::Qr { value }),
        _ => Err(AppError::field("identifier_type", "must be card, ukey, pin, code or qr")),
    }
}

/// Decides for a BAS-IP panel holding a device key bound to the gate.
pub async fn bas_ip(
    app: &App,
    principal: &Principal,
    gate_id: Uuid,
    request: BasIpRequest,
) -> Result<BasIpAnswer, AppError> {
    let verdict = decide_from(app, principal, gate_id, &credential(&request)?, None, Source::BasIp).await?;
    Ok(BasIpAnswer {
        handled: true,
        access: BasIpAccess { granted: verdict.decision == Decision::Allow, lock_number: LOCK },
    })
}
