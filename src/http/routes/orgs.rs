//! `/api/v1/orgs`: create (platform admin), list, read, update, access mode, export, delete
//! (the use cases are in `app::orgs`).

use actix_web::{HttpResponse, web};
use uuid::Uuid;

use crate::app::orgs::{self, CreateOrg, UpdateOrg};
use crate::app::{App, Caller};
use crate::auth::principal::policy;
use crate::db::pagination::ListQuery;
use crate::error::AppError;
use crate::http::auth::{Authenticated, Authorized, ClientAddr, PlatformAdmin};
use crate::http::extract::Json;
use crate::http::no_store;

pub async fn create(
    state: web::Data<App>,
    PlatformAdmin(principal): PlatformAdmin,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<CreateOrg>,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &principal, addr };
    Ok(HttpResponse::Created().json(orgs::create(&state, &caller, body).await?))
}

/// The organizations the caller can see.
pub async fn list(
    state: web::Data<App>,
    Authenticated(principal): Authenticated,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(orgs::list(&state, &principal, &query).await?))
}

pub async fn get(state: web::Data<App>, auth: Authorized<policy::OrgRead>) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(orgs::load(&state, auth.org.id).await?))
}

/// Name and time zone need `OrgUpdate`; the access mode needs `OrgAdminister` (checked by the
/// use case, which knows which the body names).
pub async fn update(
    state: web::Data<App>,
    path: web::Path<String>,
    Authenticated(principal): Authenticated,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<UpdateOrg>,
) -> Result<HttpResponse, AppError> {
    let org_id = Uuid::try_parse(&path).map_err(|_| AppError::NotFound("organization"))?;
    let caller = Caller { principal: &principal, addr };
    Ok(HttpResponse::Ok().json(orgs::update(&state, &caller, org_id, body).await?))
}

pub async fn delete(
    state: web::Data<App>,
    auth: Authorized<policy::OrgAdminister>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    orgs::delete(&state, &Caller { principal: &auth.principal, addr }, auth.org.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Everything the organization owns; personal data included, so no cache may keep a copy.
pub async fn export(
    state: web::Data<App>,
    auth: Authorized<policy::OrgExport>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    let export = orgs::export(&state, &Caller { principal: &auth.principal, addr }, auth.org.id).await?;
    Ok(no_store(HttpResponse::Ok()).json(export))
}
