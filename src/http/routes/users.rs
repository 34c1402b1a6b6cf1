//! `/api/v1/orgs/{org}/users`: the users of an organization and their roles (the use cases are
//! in `app::users`).

use actix_web::{HttpResponse, web};
use uuid::Uuid;

use crate::app::users::{self, CreateUser, UpdateUser};
use crate::app::{App, Caller};
use crate::auth::principal::policy;
use crate::db::pagination::ListQuery;
use crate::error::AppError;
use crate::http::auth::{Authorized, ClientAddr};
use crate::http::extract::Json;

fn user_id(path: &(String, String)) -> Result<Uuid, AppError> {
    Uuid::try_parse(&path.1).map_err(|_| AppError::NotFound("user"))
}

pub async fn create(
    state: web::Data<App>,
    auth: Authorized<policy::UsersManage>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<CreateUser>,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    Ok(HttpResponse::Created().json(users::create(&state, &caller, auth.org.id, body).await?))
}

pub async fn list(
    state: web::Data<App>,
    auth: Authorized<policy::UsersRead>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(users::list(&state, auth.org.id, &query).await?))
}

pub async fn get(
    state: web::Data<App>,
    auth: Authorized<policy::UsersRead>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(users::get(&state, auth.org.id, user_id(&path)?).await?))
}

pub async fn update(
    state: web::Data<App>,
    auth: Authorized<policy::UsersManage>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<UpdateUser>,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    Ok(HttpResponse::Ok().json(users::update(&state, &caller, auth.org.id, user_id(&path)?, body).await?))
}
