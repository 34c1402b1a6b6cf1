//! `POST /api/v1/gates/{gate}/decisions`: a turnstile asks, the engine answers from memory (the
//! use case is `app::decisions`); `POST /api/v1/gates/{gate}/bas-ip`: the same, in a BAS-IP
//! panel's dialect (`app::panels`).

use actix_web::{HttpRequest, HttpResponse, web};
use uuid::Uuid;

use crate::app::App;
use crate::app::decisions::{self, DecisionRequest};
use crate::error::AppError;
use crate::http::auth::{authenticate_credential, credential};
use crate::http::extract::Json;

pub async fn decide(
    state: web::Data<App>,
    req: HttpRequest,
    path: web::Path<String>,
    Json(body): Json<DecisionRequest>,
) -> Result<HttpResponse, AppError> {
    let principal = authenticate_credential(&state, credential(&req)).await?;
    let gate_id = Uuid::try_parse(&path).map_err(|_| AppError::NotFound("gate"))?;
    Ok(HttpResponse::Ok().json(decisions::decide(&state, &principal, gate_id, body).await?))
}

/// `POST /api/v1/gates/{gate}/bas-ip`: a BAS-IP panel's "remote access server" request.
pub async fn bas_ip(
    state: web::Data<App>,
    req: HttpRequest,
    path: web::Path<String>,
    Json(body): Json<crate::app::panels::BasIpRequest>,
) -> Result<HttpResponse, AppError> {
    let principal = authenticate_credential(&state, credential(&req)).await?;
    let gate_id = Uuid::try_parse(&path).map_err(|_| AppError::NotFound("gate"))?;
    Ok(HttpResponse::Ok().json(crate::app::panels::bas_ip(&state, &principal, gate_id, body).await?))
}
