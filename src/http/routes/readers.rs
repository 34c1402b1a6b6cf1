//! `/api/v1/orgs/{org}/gates/{gate}/reader`: the gate's OSDP reader (the use case is
//! `app::readers`).

use actix_web::{HttpResponse, web};
use uuid::Uuid;

use crate::app::{App, Caller, readers};
use crate::auth::principal::policy;
use crate::error::AppError;
use crate::http::auth::{Authorized, ClientAddr};
use crate::http::extract::Json;

fn gate_id(path: &(String, String)) -> Result<Uuid, AppError> {
    Uuid::try_parse(&path.1).map_err(|_| AppError::NotFound("gate"))
}

pub async fn put(
    state: web::Data<App>,
    auth: Authorized<policy::ConfigWrite>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<readers::ReaderBody>,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    Ok(HttpResponse::Ok().json(readers::put(&state, &caller, auth.org.id, gate_id(&path)?, body).await?))
}

pub async fn get(
    state: web::Data<App>,
    auth: Authorized<policy::ConfigRead>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(readers::get(&state, auth.org.id, gate_id(&path)?).await?))
}

pub async fn delete(
    state: web::Data<App>,
    auth: Authorized<policy::ConfigWrite>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    readers::delete(&state, &caller, auth.org.id, gate_id(&path)?).await?;
    Ok(HttpResponse::NoContent().finish())
}
