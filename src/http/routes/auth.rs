//! `/api/v1/auth/*` and `/api/v1/me`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::app::App;
use crate::app::sessions::{self, Me};
use crate::auth::principal::{Principal, UserPrincipal};
use crate::error::AppError;
use crate::http::auth::{Authenticated, ClientAddr};
use crate::http::extract::Json;
use crate::http::no_store;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

fn operator(principal: Principal) -> Result<UserPrincipal, AppError> {
    match principal {
        Principal::User(user) => Ok(user),
        Principal::Key(_) => Err(AppError::Forbidden),
    }
}

pub async fn login(
    state: web::Data<App>,
    req: HttpRequest,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<LoginRequest>,
) -> Result<HttpResponse, AppError> {
    let user_agent =
        req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(200).collect());
    let pair = sessions::login(&state, &body.email, body.password, addr, user_agent).await?;
    Ok(no_store(HttpResponse::Ok()).json(pair.answer()))
}

pub async fn refresh(
    state: web::Data<App>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<RefreshRequest>,
) -> Result<HttpResponse, AppError> {
    let pair = sessions::refresh(&state, &body.refresh_token, addr).await?;
    Ok(no_store(HttpResponse::Ok()).json(pair.answer()))
}

pub async fn logout(
    state: web::Data<App>,
    ClientAddr(addr): ClientAddr,
    Authenticated(principal): Authenticated,
) -> Result<HttpResponse, AppError> {
    sessions::logout(&state, &operator(principal)?, addr).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn change_password(
    state: web::Data<App>,
    ClientAddr(addr): ClientAddr,
    Authenticated(principal): Authenticated,
    Json(body): Json<ChangePasswordRequest>,
) -> Result<HttpResponse, AppError> {
    let user = operator(principal)?;
    sessions::change_password(&state, &user, body.current_password, body.new_password, addr).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn me(Authenticated(principal): Authenticated) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(Me::of(&operator(principal)?.access)))
}
