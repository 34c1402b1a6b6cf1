//! `/api/v1/me/notifications…` and `/api/v1/me/notification-preferences`: the signed-in user's
//! own (API keys have none). The use cases are `app::notifications`.

use actix_web::{HttpResponse, web};
use uuid::Uuid;

use crate::app::{App, notifications};
use crate::auth::principal::Principal;
use crate::error::AppError;
use crate::http::auth::Authenticated;
use crate::http::extract::Json;

fn user(principal: &Principal) -> Result<Uuid, AppError> {
    principal.user_id().ok_or(AppError::Forbidden)
}

pub async fn list(
    state: web::Data<App>,
    Authenticated(principal): Authenticated,
    query: web::Query<notifications::NotificationQuery>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(notifications::list(&state, user(&principal)?, &query).await?))
}

pub async fn read(
    state: web::Data<App>,
    Authenticated(principal): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = Uuid::try_parse(&path).map_err(|_| AppError::NotFound("notification"))?;
    notifications::mark_read(&state, user(&principal)?, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn preferences(
    state: web::Data<App>,
    Authenticated(principal): Authenticated,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(notifications::preferences(&state, user(&principal)?).await?))
}

pub async fn set_preferences(
    state: web::Data<App>,
    Authenticated(principal): Authenticated,
    Json(body): Json<notifications::Preferences>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(notifications::set_preferences(&state, user(&principal)?, body).await?))
}
