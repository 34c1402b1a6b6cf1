//! `/api/v1/orgs/{org}/webhooks…` and `/api/v1/event-types`: the developer console (the use
//! cases are `app::webhooks`).

use actix_web::{HttpResponse, web};

use crate::app::{App, Caller, webhooks};
use crate::auth::principal::policy;
use crate::db::pagination::ListQuery;
use crate::error::AppError;
use crate::http::auth::{Authenticated, Authorized, ClientAddr};
use crate::http::extract::Json;
use crate::http::no_store;

use super::path_id as id;

type Auth = Authorized<policy::WebhooksManage>;

pub async fn create(
    state: web::Data<App>,
    auth: Auth,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<webhooks::CreateWebhook>,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    Ok(no_store(HttpResponse::Created()).json(webhooks::create(&state, &caller, auth.org.id, body).await?))
}

pub async fn list(state: web::Data<App>, auth: Auth) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(webhooks::list(&state, auth.org.id).await?))
}

pub async fn get(
    state: web::Data<App>,
    auth: Auth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(webhooks::get(&state, auth.org.id, id(&path.1, "webhook")?).await?))
}

pub async fn update(
    state: web::Data<App>,
    auth: Auth,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<webhooks::UpdateWebhook>,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    let id = id(&path.1, "webhook")?;
    Ok(HttpResponse::Ok().json(webhooks::update(&state, &caller, auth.org.id, id, body).await?))
}

pub async fn delete(
    state: web::Data<App>,
    auth: Auth,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    webhooks::delete(&state, &caller, auth.org.id, id(&path.1, "webhook")?).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn rotate_secret(
    state: web::Data<App>,
    auth: Auth,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    let rotated = webhooks::rotate_secret(&state, &caller, auth.org.id, id(&path.1, "webhook")?).await?;
    Ok(no_store(HttpResponse::Ok()).json(rotated))
}

pub async fn test(
    state: web::Data<App>,
    auth: Auth,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    Ok(HttpResponse::Accepted().json(webhooks::test(&state, &caller, auth.org.id, id(&path.1, "webhook")?).await?))
}

pub async fn deliveries(
    state: web::Data<App>,
    auth: Auth,
    path: web::Path<(String, String)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let page = webhooks::deliveries(&state, auth.org.id, id(&path.1, "webhook")?, &query).await?;
    Ok(HttpResponse::Ok().json(page))
}

pub async fn redeliver(
    state: web::Data<App>,
    auth: Auth,
    path: web::Path<(String, String, String)>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    let (webhook, event) = (id(&path.1, "webhook")?, id(&path.2, "event")?);
    Ok(HttpResponse::Accepted().json(webhooks::redeliver(&state, &caller, auth.org.id, webhook, event).await?))
}

pub async fn redeliver_since(
    state: web::Data<App>,
    auth: Auth,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<webhooks::RedeliverSince>,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    let webhook = id(&path.1, "webhook")?;
    Ok(HttpResponse::Accepted().json(webhooks::redeliver_since(&state, &caller, auth.org.id, webhook, body).await?))
}

/// Every event type with an example, for any signed-in caller.
pub async fn event_types(Authenticated(_): Authenticated) -> Result<HttpResponse, AppError> {
    let page = crate::db::pagination::Page { items: crate::outbox::catalogue(), next_cursor: None };
    Ok(HttpResponse::Ok().json(page))
}
