//! A gate asks: may this credential pass now? Answered from memory by the engine's actors.

use std::time::Instant;

use chrono::{DateTime, Utc};
use portcullis_actors::domain::{AccessMode, Decision, Direction, Reason, Source};
use portcullis_actors::engine::EngineError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::App;
use crate::auth::permissions::{Permission, Scope};
use crate::auth::principal::{Principal, Standing};
use crate::engine::credentials::{self, CredentialInput};
use crate::error::AppError;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    credential: CredentialInput,
    direction: Option<Direction>,
}

/// The verdict as the gate receives it. A deny is a verdict, not an error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: Reason,
    pub gate_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_ms: Option<u32>,
    pub direction: Direction,
    pub decided_at: DateTime<Utc>,
}

/// Decides for a device key bound to the gate. Another organization's gate is not there for the
/// caller (the same `NotFound` as an unknown gate).
pub async fn decide(
    app: &App,
    principal: &Principal,
    gate_id: Uuid,
    request: DecisionRequest,
) -> Result<Verdict, AppError> {
    decide_from(app, principal, gate_id, &request.credential, request.direction, Source::Api).await
}

/// [`decide`] for a credential read by an adapter (a panel's dialect, a reader on a bus).
pub async fn decide_from(
    app: &App,
    principal: &Principal,
    gate_id: Uuid,
    credential: &CredentialInput,
    direction: Option<Direction>,
    source: Source,
) -> Result<Verdict, AppError> {
    let started = Instant::now();
    let org_id = app.engine.gate_org(gate_id).ok_or(AppError::NotFound("gate"))?;
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
    if app.engine.snapshot(org_id).is_some_and(|s| s.access_mode == AccessMode::Blocked) {
        return Err(AppError::OrgBlocked);
    }
    let presented = credentials::present(credential, &app.auth.pepper, Utc::now())?;
    let outcome = match app.engine.decide(gate_id, presented, direction, source).await {
        Ok(outcome) => outcome,
        Err(EngineError::UnknownGate) => return Err(AppError::NotFound("gate")),
        Err(err) => return Err(AppError::internal(err)),
    };
    metrics::histogram!("portcullis_decision_duration_seconds").record(started.elapsed().as_secs_f64());
    Ok(Verdict {
        decision: outcome.decision,
        reason: outcome.reason,
        gate_id: outcome.gate_id,
        pass_id: outcome.pass_id,
        holder_name: outcome.holder_name,
        open_ms: outcome.open_ms,
        direction: outcome.direction,
        decided_at: outcome.decided_at,
    })
}
