//! `/api/v1/orgs/{org}/passes`: issue, read, list, revoke, suspend, resume, extend, QR
//! (the use cases are in `app::passes`).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::app::passes::{self, Hold, IssuePass, PassFilter};
use crate::app::{App, Caller};
use crate::auth::principal::policy;
use crate::db::pagination::ListQuery;
use crate::error::AppError;
use crate::http::auth::{Authorized, ClientAddr};
use crate::http::extract::Json;
use crate::http::no_store;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    reason: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    #[serde(deserialize_with = "crate::app::input::timestamp")]
    valid_to: DateTime<Utc>,
}

#[derive(Deserialize)]
pub struct QrQuery {
    format: Option<String>,
}

fn pass_id(path: &(String, String)) -> Result<Uuid, AppError> {
    Uuid::try_parse(&path.1).map_err(|_| AppError::NotFound("pass"))
}

pub async fn issue(
    state: web::Data<App>,
    auth: Authorized<policy::PassesIssue>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<IssuePass>,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    let pass = passes::issue(&state, &caller, auth.org.id, body).await?;
    Ok(no_store(HttpResponse::Created()).json(pass))
}

pub async fn list(
    state: web::Data<App>,
    auth: Authorized<policy::PassesRead>,
    filter: web::Query<PassFilter>,
    page: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(passes::list(&state, &auth.principal, auth.org.id, &filter, &page).await?))
}

pub async fn get(
    state: web::Data<App>,
    auth: Authorized<policy::PassesRead>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(passes::get(&state, &auth.principal, auth.org.id, pass_id(&path)?).await?))
}

pub async fn revoke(
    state: web::Data<App>,
    auth: Authorized<policy::PassesRevoke>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<RevokeBody>,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    let revoked = passes::revoke(&state, &caller, auth.org.id, pass_id(&path)?, &body.reason).await?;
    Ok(HttpResponse::Ok().json(revoked))
}

pub async fn suspend(
    state: web::Data<App>,
    auth: Authorized<policy::PassesRevoke>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    hold(&state, &auth, &path, addr, Hold::Suspend).await
}

pub async fn resume(
    state: web::Data<App>,
    auth: Authorized<policy::PassesRevoke>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    hold(&state, &auth, &path, addr, Hold::Resume).await
}

async fn hold(
    state: &App,
    auth: &Authorized<policy::PassesRevoke>,
    path: &(String, String),
    addr: Option<std::net::IpAddr>,
    hold: Hold,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    Ok(HttpResponse::Ok().json(passes::hold(state, &caller, auth.org.id, pass_id(path)?, hold).await?))
}

pub async fn extend(
    state: web::Data<App>,
    auth: Authorized<policy::PassesIssue>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<ExtendBody>,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    Ok(HttpResponse::Ok().json(passes::extend(&state, &caller, auth.org.id, pass_id(&path)?, body.valid_to).await?))
}

/// The pass's current QR code, as `{payload, expires_in}` or (`?format=svg`) an image.
pub async fn qr(
    state: web::Data<App>,
    auth: Authorized<policy::PassesShowQr>,
    path: web::Path<(String, String)>,
    q: web::Query<QrQuery>,
) -> Result<HttpResponse, AppError> {
    let code = passes::qr(&state, &auth.principal, auth.org.id, pass_id(&path)?).await?;
    let mut response = no_store(HttpResponse::Ok());
    match q.format.as_deref() {
        None | Some("json") => Ok(response.json(code)),
        Some("svg") => {
            Ok(response.content_type("image/svg+xml").body(crate::engine::credentials::qr_svg(&code.payload)?))
        }
        Some(_) => Err(AppError::field("format", "must be `json` or `svg`")),
    }
}
