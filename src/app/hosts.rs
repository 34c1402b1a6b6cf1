//! Hosts and departments: the departments tree of an organization, and the hosts (members with
//! the `host` role) with their department and presence schedule, for reception to choose from.
//! Also the muster list: who is inside now, per zone.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use portcullis_actors::domain::Role;
use portcullis_actors::schedule::{Schedule, TimeWindow};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::app::input::{Checked, Fields, Name, done};
use crate::app::{App, Caller};
use crate::audit::{self, Event as AuditEvent};
use crate::auth::permissions::Permission;
use crate::auth::principal::Standing;
use crate::db::pagination::{self, ListQuery, Page};
use crate::db::query_as;
use crate::error::{AppError, Conflict};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepartmentInput {
    #[schema(value_type = String)]
    pub name: Checked<Name>,
    pub parent_id: Option<Uuid>,
}

/// A department; `parent_id` places it in the tree.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Department {
    pub id: Uuid,
    pub name: String,
    pub parent_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl pagination::Identified for Department {
    fn id(&self) -> Uuid {
        self.id
    }
}

const DEPARTMENT_SELECT: &str = "SELECT id, name, parent_id, created_at FROM departments";

pub async fn create_department(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    body: DepartmentInput,
) -> Result<Department, AppError> {
    let mut fields = Fields::new();
    let name = body.name.take(&mut fields, "name");
    let client = app.pool.get().await?;
    if let Some(parent) = body.parent_id
        && client
            .query_opt("SELECT 1 FROM departments WHERE org_id = $1 AND id = $2", &[&org_id, &parent])
            .await?
            .is_none()
    {
        fields.insert("parent_id".into(), "no such department in this organization".into());
    }
    done(fields)?;
    let Some(name) = name else { return Err(AppError::internal("a checked field was missing")) };
    let id = Uuid::now_v7();
    client
        .execute(
            "INSERT INTO departments (id, org_id, name, parent_id) VALUES ($1, $2, $3, $4)",
            &[&id, &org_id, &name.as_str(), &body.parent_id],
        )
        .await
        .map_err(|e| AppError::unique(e, "a department with this name exists"))?;
    audit::record(&client, caller.actor(), AuditEvent::new(Some(org_id), "department.created", "department", id))
        .await?;
    crate::db::query_one_as(&client, &format!("{DEPARTMENT_SELECT} WHERE org_id = $1 AND id = $2"), &[&org_id, &id])
        .await?
        .ok_or(AppError::NotFound("department"))
}

pub async fn list_departments(app: &App, org_id: Uuid, query: &ListQuery) -> Result<Page<Department>, AppError> {
    let client = app.pool.get().await?;
    let select = format!("{DEPARTMENT_SELECT} WHERE org_id = $1");
    pagination::by_id(&client, &select, "id", &[&org_id], query.cursor.as_deref(), query.limit).await
}

/// Deletes a department that no member belongs to (its sub-departments move up to the root).
pub async fn delete_department(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<(), AppError> {
    let client = app.pool.get().await?;
    let deleted = client
        .execute("DELETE FROM departments WHERE org_id = $1 AND id = $2", &[&org_id, &id])
        .await
        .map_err(|e| match e.code() {
            Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {
                AppError::Conflict { code: Conflict::InUse, message: "members belong to this department".into() }
            }
            _ => AppError::internal(e),
        })?;
    if deleted == 0 {
        return Err(AppError::NotFound("department"));
    }
    audit::record(&client, caller.actor(), AuditEvent::new(Some(org_id), "department.deleted", "department", id))
        .await?;
    Ok(())
}

/// When a host is in: ISO weekdays and local time windows (empty: all day).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    pub weekdays: Vec<i64>,
    #[serde(default)]
    pub time_windows: Vec<TimeWindow>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    pub department_id: Option<Uuid>,
    pub presence: Option<Presence>,
}

/// A host, as reception chooses one.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Host {
    pub user_id: Uuid,
    pub name: String,
    pub email: String,
    pub department_id: Option<Uuid>,
    pub department: Option<String>,
    pub presence: Option<Presence>,
    /// Whether their presence schedule says they are in now (unknown without one).
    pub present_now: Option<bool>,
}

/// Sets a host's department and presence: the host themselves, or whoever manages users.
pub async fn set_host(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    user_id: Uuid,
    body: HostSettings,
) -> Result<Host, AppError> {
    let own = caller.principal.user_id() == Some(user_id);
    if !own && caller.principal.standing(org_id, Permission::UsersManage) != Standing::Allowed {
        return Err(AppError::Forbidden);
    }
    let mut fields = Fields::new();
    if let Some(presence) = &body.presence
        && let Err(err) = Schedule::new(presence.weekdays.iter().copied(), presence.time_windows.clone())
    {
        fields.insert("presence".into(), err.to_string());
    }
    let client = app.pool.get().await?;
    if let Some(department) = body.department_id
        && client
            .query_opt("SELECT 1 FROM departments WHERE org_id = $1 AND id = $2", &[&org_id, &department])
            .await?
            .is_none()
    {
        fields.insert("department_id".into(), "no such department in this organization".into());
    }
    done(fields)?;
    let presence = body.presence.as_ref().map(|p| json!(p));
    let updated = client
        .execute(
            "UPDATE memberships SET department_id = coalesce($3, department_id), presence = coalesce($4, presence),
                    updated_at = now()
             WHERE org_id = $1 AND user_id = $2 AND role = 'host'",
            &[&org_id, &user_id, &body.department_id, &presence],
        )
        .await?;
    if updated == 0 {
        return Err(AppError::NotFound("host"));
    }
    audit::record(&client, caller.actor(), AuditEvent::new(Some(org_id), "host.updated", "user", user_id)).await?;
    let hosts = hosts(app, org_id, Some(user_id), None, None, 1).await?;
    hosts.into_iter().next().ok_or(AppError::NotFound("host"))
}

#[derive(Deserialize)]
pub struct HostQuery {
    /// Part of the name (any case).
    pub q: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// Hosts of `org_id` in id order after `after` (at most `limit`).
async fn hosts(
    app: &App,
    org_id: Uuid,
    only: Option<Uuid>,
    q: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Host>, AppError> {
    #[derive(Deserialize)]
    struct Row {
        user_id: Uuid,
        name: String,
        email: String,
        department_id: Option<Uuid>,
        department: Option<String>,
        presence: Option<Presence>,
        timezone: String,
    }
    let client = app.pool.get().await?;
    let rows: Vec<Row> = query_as(
        &client,
        "SELECT u.id AS user_id, u.name, u.email, m.department_id, d.name AS department, m.presence, o.timezone
         FROM memberships m JOIN users u ON u.id = m.user_id JOIN organizations o ON o.id = m.org_id
         LEFT JOIN departments d ON d.org_id = m.org_id AND d.id = m.department_id
         WHERE m.org_id = $1 AND m.role = $2 AND m.disabled_at IS NULL AND u.disabled_at IS NULL
           AND ($3::uuid IS NULL OR u.id = $3)
           AND ($4::text IS NULL OR u.name ILIKE '%' || replace(replace(replace($4, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%')
           AND ($5::uuid IS NULL OR u.id > $5)
         ORDER BY u.id LIMIT $6",
        &[&org_id, &Role::Host.as_str(), &only, &q, &after, &limit],
    )
    .await?;
    let now = Utc::now();
    Ok(rows
        .into_iter()
        .map(|r| {
            let tz: Tz = r.timezone.parse().unwrap_or(Tz::UTC);
            let present_now = r.presence.as_ref().and_then(|p| {
                let schedule = Schedule::new(p.weekdays.iter().copied(), p.time_windows.clone()).ok()?;
                Some(schedule.is_open(now, tz, &Default::default()))
            });
            Host {
                user_id: r.user_id,
                name: r.name,
                email: r.email,
                department_id: r.department_id,
                department: r.department,
                presence: r.presence,
                present_now,
            }
        })
        .collect())
}

/// The organization's hosts, for reception to choose from.
pub async fn list_hosts(app: &App, org_id: Uuid, query: &HostQuery) -> Result<Page<Host>, AppError> {
    let limit = pagination::limit(query.limit)?;
    let after: Option<Uuid> = pagination::decode(query.cursor.as_deref())?;
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let items = hosts(app, org_id, None, q, after, limit + 1).await?;
    Ok(pagination::page(items, limit, |h: &Host| Some(h.user_id.to_string())))
}

/// Someone inside now.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Inside {
    pub pass_id: Uuid,
    pub holder_name: String,
    pub zone_id: Uuid,
    pub last_gate_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    /// `revoked`: inside on a pass revoked since.
    pub status: String,
    pub visitor_id: Option<Uuid>,
}

/// The muster list: who is inside now (an evacuation's roll call), in pass order; each names
/// their zone.
pub async fn muster(app: &App, org_id: Uuid, query: &ListQuery) -> Result<Page<Inside>, AppError> {
    let limit = pagination::limit(query.limit)?;
    let after: Option<Uuid> = pagination::decode(query.cursor.as_deref())?;
    crate::app::passes::rows_current(app).await;
    let client = app.pool.get().await?;
    let items = query_as(
        &client,
        "SELECT p.id AS pass_id, p.holder_name, g.zone_id, p.last_gate_id, p.last_passage_at AS since, p.status, p.visitor_id
         FROM passes p JOIN gates g ON g.org_id = p.org_id AND g.id = p.last_gate_id
         WHERE p.org_id = $1 AND p.inside AND p.status IN ('active', 'suspended', 'revoked')
           AND ($2::uuid IS NULL OR p.id > $2)
         ORDER BY p.id LIMIT $3",
        &[&org_id, &after, &(limit + 1)],
    )
    .await?;
    Ok(pagination::page(items, limit, |p: &Inside| Some(p.pass_id.to_string())))
}
