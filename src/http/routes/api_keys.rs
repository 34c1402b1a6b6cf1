//! `/api/v1/orgs/{org}/api-keys`: keys for devices and integrations (the use cases are in
//! `app::keys`). Answers that carry a secret are `no-store`.

use actix_web::{HttpResponse, web};
use uuid::Uuid;

use crate::app::keys::{self, CreateKey};
use crate::app::{App, Caller};
use crate::auth::principal::policy;
use crate::db::pagination::ListQuery;
use crate::error::AppError;
use crate::http::auth::{Authorized, ClientAddr};
use crate::http::extract::Json;
use crate::http::no_store;

fn key_id(path: &(String, String)) -> Result<Uuid, AppError> {
    Uuid::try_parse(&path.1).map_err(|_| AppError::NotFound("api key"))
}

pub async fn create(
    state: web::Data<App>,
    auth: Authorized<policy::KeysManage>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<CreateKey>,
) -> Result<HttpResponse, AppError> {
    let key = keys::create_for(&state, &Caller { principal: &auth.principal, addr }, auth.org.id, body).await?;
    Ok(no_store(HttpResponse::Created()).json(key))
}

pub async fn list(
    state: web::Data<App>,
    auth: Authorized<policy::KeysManage>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(keys::list(&state, auth.org.id, &query).await?))
}

pub async fn get(
    state: web::Data<App>,
    auth: Authorized<policy::KeysManage>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(keys::get(&state, auth.org.id, key_id(&path)?).await?))
}

pub async fn rotate(
    state: web::Data<App>,
    auth: Authorized<policy::KeysManage>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    let key = keys::rotate_for(&state, &caller, auth.org.id, key_id(&path)?).await?;
    Ok(no_store(HttpResponse::Ok()).json(key))
}

pub async fn revoke(
    state: web::Data<App>,
    auth: Authorized<policy::KeysManage>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    Ok(HttpResponse::Ok().json(keys::revoke_for(&state, &caller, auth.org.id, key_id(&path)?).await?))
}
