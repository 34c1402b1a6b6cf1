//! The users of an organization and their roles: create, list, read, re-role, disable.

use chrono::{DateTime, Utc};
use portcullis_actors::domain::Role;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::app::input::{Checked, Email, Fields, Name, done};
use crate::app::sessions::{check_password_policy, hash_password};
use crate::app::{App, Caller};
use crate::audit::{self, Event};
use crate::auth::AccessChange;
use crate::db::pagination::{self, ListQuery, Page};
use crate::db::query_one_as;
use crate::error::AppError;

/// A member of an organization: the account and its role there.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

impl pagination::Identified for Member {
    fn id(&self) -> Uuid {
        self.id
    }
}

const MEMBER_SELECT: &str = "SELECT u.id, u.email, u.name, m.role, m.disabled_at IS NOT NULL AS disabled, m.created_at
     FROM memberships m JOIN users u ON u.id = m.user_id";

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(value_type = String)]
    email: Checked<Email>,
    #[schema(value_type = String)]
    name: Checked<Name>,
    password: String,
    role: Role,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    role: Option<Role>,
    disabled: Option<bool>,
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
) -> Result<Member, AppError> {
    query_one_as(client, &format!("{MEMBER_SELECT} WHERE m.org_id = $1 AND m.user_id = $2"), &[&org_id, &user_id])
        .await?
        .ok_or(AppError::NotFound("user"))
}

/// Creates an account and its membership in `org_id`.
pub async fn create(app: &App, caller: &Caller<'_>, org_id: Uuid, body: CreateUser) -> Result<Member, AppError> {
    let mut fields = Fields::new();
    let email = body.email.take(&mut fields, "email");
    let name = body.name.take(&mut fields, "name");
    if let Err(AppError::Validation { fields: f }) = check_password_policy("password", &body.password) {
        fields.extend(f);
    }
    if let Err(AppError::Validation { fields: f }) = org_role("role", body.role) {
        fields.extend(f);
    }
    done(fields)?;
    let (Some(email), Some(name)) = (email, name) else {
        return Err(AppError::internal("a checked field was missing without a reason"));
    };
    let hash = hash_password(body.password).await?;
    let id = Uuid::now_v7();
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4)",
        &[&id, &email.as_str(), &name.as_str(), &hash],
    )
    .await
    .map_err(|e| AppError::unique(e, "a user with this email exists"))?;
    tx.execute(
        "INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, $3)",
        &[&org_id, &id, &body.role.as_str()],
    )
    .await?;
    let event = Event::new(Some(org_id), "user.created", "user", id).details(json!({ "role": body.role }));
    audit::record(&tx, caller.actor(), event).await?;
    tx.commit().await?;
    member(&app.pool.get().await?, org_id, id).await
}

pub async fn list(app: &App, org_id: Uuid, query: &ListQuery) -> Result<Page<Member>, AppError> {
    let client = app.pool.get().await?;
    let select = format!("{MEMBER_SELECT} WHERE m.org_id = $1");
    pagination::by_id(&client, &select, "u.id", &[&org_id], query.cursor.as_deref(), query.limit).await
}

pub async fn get(app: &App, org_id: Uuid, user_id: Uuid) -> Result<Member, AppError> {
    member(&app.pool.get().await?, org_id, user_id).await
}

/// Changes a member's role or status; their open streams re-check their access at once.
pub async fn update(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    user_id: Uuid,
    body: UpdateUser,
) -> Result<Member, AppError> {
    if body.role.is_none() && body.disabled.is_none() {
        return Err(AppError::field("body", "names nothing to change (role, disabled)"));
    }
    let role = body.role.map(|r| org_role("role", r)).transpose()?;
    let mut client = app.pool.get().await?;
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
    let actor = caller.actor();
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
    app.auth.changed(AccessChange::User(user_id));
    member(&app.pool.get().await?, org_id, user_id).await
}
