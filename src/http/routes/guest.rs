//! `/api/v1/guest/…`: a visitor's own view (the use cases are `app::guest`), and the guest page.

use actix_web::{HttpResponse, web};
use uuid::Uuid;

use crate::app::App;
use crate::app::guest::{self, CodeRequest, SignIn};
use crate::error::AppError;
use crate::http::auth::{ClientAddr, GuestAuth};
use crate::http::extract::Json;
use crate::http::no_store;

fn visit_id(path: &str) -> Result<Uuid, AppError> {
    super::path_id(path, "visit")
}

pub async fn sign_in(
    state: web::Data<App>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<SignIn>,
) -> Result<HttpResponse, AppError> {
    Ok(no_store(HttpResponse::Ok()).json(guest::sign_in(&state, body, addr).await?))
}

pub async fn request_code(
    state: web::Data<App>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<CodeRequest>,
) -> Result<HttpResponse, AppError> {
    guest::request_code(&state, body, addr).await?;
    Ok(HttpResponse::Accepted().finish())
}

pub async fn me(state: web::Data<App>, GuestAuth(guest): GuestAuth) -> Result<HttpResponse, AppError> {
    Ok(no_store(HttpResponse::Ok()).json(guest::home(&state, guest).await?))
}

#[derive(serde::Deserialize)]
pub struct QrQuery {
    format: Option<String>,
}

pub async fn qr(
    state: web::Data<App>,
    GuestAuth(guest): GuestAuth,
    path: web::Path<String>,
    query: web::Query<QrQuery>,
) -> Result<HttpResponse, AppError> {
    let code = guest::qr(&state, guest, visit_id(&path)?).await?;
    let mut response = no_store(HttpResponse::Ok());
    match query.format.as_deref() {
        None | Some("json") => Ok(response.json(code)),
        Some("svg") => {
            Ok(response.content_type("image/svg+xml").body(crate::engine::credentials::qr_svg(&code.payload)?))
        }
        Some(_) => Err(AppError::field("format", "must be `json` or `svg`")),
    }
}

pub async fn arrive(
    state: web::Data<App>,
    GuestAuth(guest): GuestAuth,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(guest::arrive(&state, guest, visit_id(&path)?).await?))
}

pub async fn register(
    state: web::Data<App>,
    GuestAuth(guest): GuestAuth,
    path: web::Path<String>,
    Json(body): Json<crate::app::visitors::Details>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(guest::register(&state, guest, visit_id(&path)?, body).await?))
}
