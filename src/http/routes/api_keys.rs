//! `/api/v1/orgs/{org}/api-keys`: keys for devices and integrations.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::app::App;
use crate::audit::Actor;
use crate::auth::AccessChange;
use crate::auth::keys::{self, Grantor, KEY_COLUMNS, KeySpec};
use crate::auth::permissions::Scope;
use crate::auth::principal::policy;
use crate::crypto::KeyEnv;
use crate::db::pagination;
use crate::error::AppError;
use crate::http::auth::{Authorized, ClientAddr};
use crate::http::extract::Json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    gate_ids: Vec<Uuid>,
    env: Option<String>,
    #[serde(default, deserialize_with = "crate::app::input::opt_timestamp")]
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

/// The caller as a grantor of key scopes (keys never manage keys: `KeysManage` is user-only).
fn grantor(auth: &Authorized<policy::KeysManage>) -> Result<Grantor, AppError> {
    auth.principal.role_in(auth.org.id).map(Grantor::Member).ok_or(AppError::Forbidden)
}

fn key_id(path: &(String, String)) -> Result<Uuid, AppError> {
    Uuid::try_parse(&path.1).map_err(|_| AppError::NotFound("api key"))
}

pub async fn create(
    state: web::Data<App>,
    auth: Authorized<policy::KeysManage>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<CreateKey>,
) -> Result<HttpResponse, AppError> {
    let mut scopes = Vec::new();
    for (i, scope) in body.scopes.iter().enumerate() {
        scopes.push(scope.parse::<Scope>().map_err(|e| AppError::field(format!("scopes[{i}]"), e.to_string()))?);
    }
    let env = match body.env.as_deref() {
        None | Some("live") => KeyEnv::Live,
        Some("test") => KeyEnv::Test,
        Some(_) => return Err(AppError::field("env", "must be `live` or `test`")),
    };
    let spec = KeySpec { name: body.name, env, scopes, gate_ids: body.gate_ids, expires_at: body.expires_at };
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let key =
        keys::create(&tx, &state.auth.pepper, auth.org.id, &spec, grantor(&auth)?, Actor::of(&auth.principal, addr))
            .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().insert_header(("cache-control", "no-store")).json(key))
}

pub async fn list(
    state: web::Data<App>,
    auth: Authorized<policy::KeysManage>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let client = state.pool.get().await?;
    let select = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1");
    let page = pagination::by_id(&client, &select, "id", &[&auth.org.id], query.cursor.as_deref(), query.limit).await?;
    Ok(HttpResponse::Ok().json(page))
}

pub async fn get(
    state: web::Data<App>,
    auth: Authorized<policy::KeysManage>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let client = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(keys::describe(&client, auth.org.id, key_id(&path)?).await?))
}

pub async fn rotate(
    state: web::Data<App>,
    auth: Authorized<policy::KeysManage>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    let id = key_id(&path)?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let key = keys::rotate(&tx, &state.auth.pepper, auth.org.id, id, grantor(&auth)?, Actor::of(&auth.principal, addr))
        .await?;
    tx.commit().await?;
    state.auth.changed(AccessChange::Key(id));
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(key))
}

pub async fn revoke(
    state: web::Data<App>,
    auth: Authorized<policy::KeysManage>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
) -> Result<HttpResponse, AppError> {
    let id = key_id(&path)?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let key = keys::revoke(&tx, auth.org.id, id, grantor(&auth)?, Actor::of(&auth.principal, addr)).await?;
    tx.commit().await?;
    state.auth.changed(AccessChange::Key(id));
    Ok(HttpResponse::Ok().json(key))
}
