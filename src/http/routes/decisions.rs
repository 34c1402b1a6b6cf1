//! `POST /api/v1/gates/{gate}/decisions`: a turnstile asks, the engine answers from memory.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use portcullis_actors::domain::{AccessMode, Direction};
use portcullis_actors::engine::EngineError;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::app::App;
use crate::auth::permissions::{Permission, Scope};
use crate::auth::principal::{Principal, Standing};
use crate::engine::credentials::{self, CredentialInput};
use crate::error::AppError;
use crate::http::auth::{authenticate_with, bearer_token};
use crate::http::extract::Json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    credential: CredentialInput,
    direction: Option<Direction>,
}

pub async fn decide(
    state: web::Data<App>,
    req: HttpRequest,
    path: web::Path<String>,
    Json(body): Json<DecisionRequest>,
) -> Result<HttpResponse, AppError> {
    let started = Instant::now();
    let principal = authenticate_with(&state, &bearer_token(&req)?).await?;
    let gate_id = Uuid::try_parse(&path).map_err(|_| AppError::NotFound("gate"))?;
    let org_id = state.engine.gate_org(gate_id).ok_or(AppError::NotFound("gate"))?;
    // Another organization's gate is not there for this caller: the same 404 as an unknown one.
    if principal.standing(org_id, Permission::GateDecide) == Standing::NotMember {
        return Err(AppError::NotFound("gate"));
    }
    let Principal::Key(key) = principal else { return Err(AppError::Forbidden) };
    if !key.scopes.contains(&Scope::GateDecide) {
        return Err(AppError::Forbidden);
    }
    if !key.gate_ids.contains(&gate_id) {
        return Err(AppError::KeyNotBoundToGate);
    }
    if state.engine.snapshot(org_id).is_some_and(|s| s.access_mode == AccessMode::Blocked) {
        return Err(AppError::OrgBlocked);
    }
    let presented = credentials::present(&body.credential, &state.auth.pepper, Utc::now())?;
    let outcome = match state.engine.decide(gate_id, presented, body.direction, "api").await {
        Ok(outcome) => outcome,
        Err(EngineError::UnknownGate) => return Err(AppError::NotFound("gate")),
        Err(err) => return Err(AppError::internal(err)),
    };
    metrics::histogram!("portcullis_decision_duration_seconds").record(started.elapsed().as_secs_f64());
    let mut body = json!({
        "decision": outcome.decision,
        "reason": outcome.reason,
        "gate_id": outcome.gate_id,
        "direction": outcome.direction,
        "decided_at": outcome.decided_at,
    });
    if let Some(pass_id) = outcome.pass_id {
        body["pass_id"] = json!(pass_id);
    }
    if let Some(holder) = &outcome.holder_name {
        body["holder_name"] = json!(holder);
    }
    if let Some(open_ms) = outcome.open_ms {
        body["open_ms"] = json!(open_ms);
    }
    Ok(HttpResponse::Ok().json(body))
}
