//! `/api/v1/orgs/{org}/users`: the users of an organization and their roles.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use portcullis_actors::domain::Role;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::app::App;
use crate::app::sessions::{check_password_policy, hash_password};
use crate::audit::{self, Actor, Event};
use crate::auth::AccessChange;
use crate::auth::principal::policy;
use crate::db::pagination;
use crate::db::query_json_opt;
use crate::error::AppError;
use crate::http::auth::{Authorized, ClientAddr};
use crate::http::extract::Json;

const MEMBER_SELECT: &str = "SELECT u.id, u.email, u.name, m.role, m.disabled_at IS NOT NULL AS disabled, m.created_at
     FROM memberships m JOIN users u ON u.id = m.user_id";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    email: String,
    name: String,
    password: String,
    role: Role,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    role: Option<Role>,
    disabled: Option<bool>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

/// Roles that can be held in an organization (platform_admin is global, not granted here).
fn org_role(field: &str, role: Role) -> Result<Role, AppError> {
    if role == Role::PlatformAdmin {
        return Err(AppError::field(field, "platform_admin is not an organization role"));
    }
    Ok(role)
}

async fn member(
    client: &impl deadpool_postgres::GenericClient,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<Value, AppError> {
    query_json_opt(client, &format!("{MEMBER_SELECT} WHERE m.org_id = $1 AND m.user_id = $2"), &[&org_id, &user_id])
        .await?
        .ok_or(AppError::NotFound("user"))
}

pub async fn create(
    state: web::Data<App>,
    auth: Authorized<policy::UsersManage>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<CreateUser>,
) -> Result<HttpResponse, AppError> {
    let email = body.email.trim().to_lowercase();
    let mut fields = BTreeMap::new();
    let valid_email = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.contains(char::is_whitespace);
    if !valid_email {
        fields.insert("email".to_owned(), "is not an email address".to_owned());
    }
    let name_chars = body.name.trim().chars().count();
    if name_chars == 0 || name_chars > 200 {
        fields.insert("name".to_owned(), "must be 1 to 200 characters".to_owned());
    }
    if let Err(AppError::Validation { fields: f }) = check_password_policy("password", &body.password) {
        fields.extend(f);
    }
    if let Err(AppError::Validation { fields: f }) = org_role("role", body.role) {
        fields.extend(f);
    }
    if !fields.is_empty() {
        return Err(AppError::Validation { fields });
    }
    let hash = hash_password(body.password).await?;
    let id = Uuid::now_v7();
    let org_id = auth.org.id;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4)",
        &[&id, &email, &body.name.trim(), &hash],
    )
    .await
    .map_err(|e| AppError::unique(e, "a user with this email exists"))?;
    tx.execute(
        "INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, $3)",
        &[&org_id, &id, &body.role.as_str()],
    )
    .await?;
    let event = Event::new(Some(org_id), "user.created", "user", id).details(json!({ "role": body.role }));
    audit::record(&tx, Actor::of(&auth.principal, addr), event).await?;
    tx.commit().await?;
    let client = state.pool.get().await?;
    Ok(HttpResponse::Created().json(member(&client, org_id, id).await?))
}

pub async fn list(
    state: web::Data<App>,
    auth: Authorized<policy::UsersRead>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let client = state.pool.get().await?;
    let select = format!("{MEMBER_SELECT} WHERE m.org_id = $1");
    let page =
        pagination::by_id(&client, &select, "u.id", &[&auth.org.id], query.cursor.as_deref(), query.limit).await?;
    Ok(HttpResponse::Ok().json(page))
}

pub async fn get(
    state: web::Data<App>,
    auth: Authorized<policy::UsersRead>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let user_id = Uuid::try_parse(&path.1).map_err(|_| AppError::NotFound("user"))?;
    let client = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(member(&client, auth.org.id, user_id).await?))
}

pub async fn update(
    state: web::Data<App>,
    auth: Authorized<policy::UsersManage>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<UpdateUser>,
) -> Result<HttpResponse, AppError> {
    let user_id = Uuid::try_parse(&path.1).map_err(|_| AppError::NotFound("user"))?;
    if body.role.is_none() && body.disabled.is_none() {
        return Err(AppError::field("body", "names nothing to change (role, disabled)"));
    }
    let role = body.role.map(|r| org_role("role", r)).transpose()?;
    let org_id = auth.org.id;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let before = tx
        .query_opt(
            "SELECT role, disabled_at IS NOT NULL FROM memberships WHERE org_id = $1 AND user_id = $2 FOR UPDATE",
            &[&org_id, &user_id],
        )
        .await?
        .ok_or(AppError::NotFound("user"))?;
    let (old_role, was_disabled): (String, bool) = (before.try_get(0)?, before.try_get(1)?);
    tx.execute(
        "UPDATE memberships SET role = coalesce($3, role),
                disabled_at = CASE WHEN $4::bool IS NULL THEN disabled_at
                                   WHEN $4 THEN coalesce(disabled_at, now()) ELSE NULL END,
                updated_at = now()
         WHERE org_id = $1 AND user_id = $2",
        &[&org_id, &user_id, &role.map(Role::as_str), &body.disabled],
    )
    .await?;
    let actor = Actor::of(&auth.principal, addr);
    if let Some(role) = role.filter(|r| r.as_str() != old_role) {
        let event = Event::new(Some(org_id), "user.role_changed", "user", user_id)
            .details(json!({ "from": old_role, "to": role }));
        audit::record(&tx, actor, event).await?;
    }
    if let Some(disabled) = body.disabled.filter(|d| *d != was_disabled) {
        let action = if disabled { "user.disabled" } else { "user.enabled" };
        audit::record(&tx, actor, Event::new(Some(org_id), action, "user", user_id)).await?;
    }
    tx.commit().await?;
    state.auth.changed(AccessChange::User(user_id));
    let client = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(member(&client, org_id, user_id).await?))
}
