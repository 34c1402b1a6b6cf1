//! `/api/v1/orgs/{org}/controllers/{controller}`: a controller that decides by itself (the use
//! case is `app::controllers`).

use actix_web::{HttpResponse, web};
use uuid::Uuid;

use crate::app::{App, Caller, controllers};
use crate::auth::principal::policy;
use crate::error::AppError;
use crate::http::auth::{Authorized, ClientAddr};
use crate::http::extract::Json;

fn controller_id(path: &(String, String)) -> Result<Uuid, AppError> {
    Uuid::try_parse(&path.1).map_err(|_| AppError::NotFound("controller"))
}

pub async fn put(
    state: web::Data<App>,
    auth: Authorized<policy::ConfigWrite>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<controllers::ControllerBody>,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    Ok(HttpResponse::Ok().json(controllers::put(&state, &caller, auth.org.id, controller_id(&path)?, body).await?))
}

pub async fn get(
    state: web::Data<App>,
    auth: Authorized<policy::ConfigRead>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(controllers::get(&state, auth.org.id, controller_id(&path)?).await?))
}

pub async fn delete(
    state: web::Data<App>,
    auth: Authorized<policy::ConfigWrite>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    controllers::delete(&state, &caller, auth.org.id, controller_id(&path)?).await?;
    Ok(HttpResponse::NoContent().finish())
}
