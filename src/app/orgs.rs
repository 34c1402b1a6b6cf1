//! Organizations: create (platform admin), list, read, update, access mode, export, delete.

use chrono::{DateTime, Utc};
use portcullis_actors::domain::AccessMode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::app::input::{Checked, Fields, Name, Slug, TimeZone, done};
use crate::app::{App, Caller};
use crate::audit::{self, Event};
use crate::auth::AccessChange;
use crate::auth::permissions::Permission;
use crate::auth::principal::{Principal, authorize};
use crate::db::pagination::{self, ListQuery, Page};
use crate::db::{query_as, query_one_as};
use crate::error::{AppError, Conflict};

const ORG_COLUMNS: &str = "id, name, slug, timezone, locale, access_mode, lockdown, version, created_at, updated_at,
     visitor_rule_id, address, guest_instructions, visit_margin_minutes, auto_checkout_minutes, visitor_retention_days,
     to_char(day_ends_at, 'HH24:MI') AS day_ends_at";

/// An organization, as its members see it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    /// IANA time zone: rule hours and days are in it.
    pub timezone: String,
    /// The language of its notifications: `en` or `ru`.
    pub locale: String,
    pub access_mode: AccessMode,
    /// Every gate is locked down.
    pub lockdown: bool,
    /// Optimistic concurrency: pass it back in an update.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The access rule of visitors' passes when an appointment names none.
    pub visitor_rule_id: Option<Uuid>,
    /// What the guest page shows: where to come, and what to do there.
    pub address: Option<String>,
    pub guest_instructions: Option<String>,
    /// A visitor's pass opens this long before the meeting and closes this long after it.
    pub visit_margin_minutes: i32,
    /// Visitors still checked in this long after their meeting are checked out.
    pub auto_checkout_minutes: i32,
    /// Visitors still checked in at this local time of their visit's day are checked out too.
    pub day_ends_at: Option<String>,
    /// Visitors' personal data is purged this long after their last visit.
    pub visitor_retention_days: i32,
}

impl pagination::Identified for Organization {
    fn id(&self) -> Uuid {
        self.id
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    #[schema(value_type = String)]
    name: Checked<Name>,
    #[schema(value_type = String)]
    slug: Checked<Slug>,
    #[schema(value_type = String)]
    timezone: Checked<TimeZone>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrg {
    #[schema(value_type = Option<String>)]
    name: Option<Checked<Name>>,
    #[schema(value_type = Option<String>)]
    timezone: Option<Checked<TimeZone>>,
    access_mode: Option<AccessMode>,
    /// The language of its notifications: `en` or `ru`.
    locale: Option<String>,
    /// Optimistic concurrency: when given, the update applies only to this version.
    version: Option<i32>,
    visitor_rule_id: Option<Uuid>,
    address: Option<String>,
    guest_instructions: Option<String>,
    /// 0 to 1440.
    visit_margin_minutes: Option<i32>,
    /// 0 to 10080.
    auto_checkout_minutes: Option<i32>,
    /// `HH:MM`, the organization's local end of day (visitors still in are checked out then).
    day_ends_at: Option<String>,
    /// 1 to 3650.
    visitor_retention_days: Option<i32>,
}

impl UpdateOrg {
    fn visitor_settings_given(&self) -> bool {
        self.visitor_rule_id.is_some()
            || self.address.is_some()
            || self.guest_instructions.is_some()
            || self.visit_margin_minutes.is_some()
            || self.auto_checkout_minutes.is_some()
            || self.day_ends_at.is_some()
            || self.visitor_retention_days.is_some()
    }

    /// The visitor settings' bounds; each bad one named.
    fn check_visitor_settings(&self, fields: &mut Fields) {
        let ranges = [
            ("visit_margin_minutes", self.visit_margin_minutes, 0, 1440),
            ("auto_checkout_minutes", self.auto_checkout_minutes, 0, 10080),
            ("visitor_retention_days", self.visitor_retention_days, 1, 3650),
        ];
        for (name, value, low, high) in ranges {
            if value.is_some_and(|v| !(low..=high).contains(&v)) {
                fields.insert(name.into(), format!("must be {low} to {high}"));
            }
        }
        if self.day_ends_at.as_deref().is_some_and(|t| chrono::NaiveTime::parse_from_str(t, "%H:%M").is_err()) {
            fields.insert("day_ends_at".into(), "must be a local time HH:MM".into());
        }
        for (name, value) in [("address", &self.address), ("guest_instructions", &self.guest_instructions)] {
            if value.as_ref().is_some_and(|v| v.chars().count() > 2000) {
                fields.insert(name.into(), "must be at most 2000 characters".into());
            }
        }
    }
}

/// The organization as stored.
pub async fn load(app: &App, org_id: Uuid) -> Result<Organization, AppError> {
    let client = app.pool.get().await?;
    query_one_as(&client, &format!("SELECT {ORG_COLUMNS} FROM organizations WHERE id = $1"), &[&org_id])
        .await?
        .ok_or(AppError::NotFound("organization"))
}

/// Creates an organization (the caller is a platform admin).
pub async fn create(app: &App, caller: &Caller<'_>, body: CreateOrg) -> Result<Organization, AppError> {
    let mut fields = Fields::new();
    let name = body.name.take(&mut fields, "name");
    let slug = body.slug.take(&mut fields, "slug");
    let timezone = body.timezone.take(&mut fields, "timezone");
    done(fields)?;
    let (Some(name), Some(slug), Some(timezone)) = (name, slug, timezone) else {
        return Err(AppError::internal("a checked field was missing without a reason"));
    };
    let id = Uuid::now_v7();
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO organizations (id, name, slug, timezone) VALUES ($1, $2, $3, $4)",
        &[&id, &name.as_str(), &slug.as_str(), &timezone.name()],
    )
    .await
    .map_err(|e| AppError::unique(e, "an organization with this slug exists"))?;
    audit::record(&tx, caller.actor(), Event::new(Some(id), "org.created", "organization", id)).await?;
    tx.commit().await?;
    let client = app.pool.get().await?;
    crate::engine::load::reload_org(&client, &app.engine, id).await.map_err(AppError::internal)?;
    load(app, id).await
}

/// The organizations the caller can see.
pub async fn list(app: &App, principal: &Principal, query: &ListQuery) -> Result<Page<Organization>, AppError> {
    let client = app.pool.get().await?;
    let (all, member_of, key_org): (bool, Option<Uuid>, Option<Uuid>) = match principal {
        Principal::User(u) if u.access.is_platform_admin => (true, None, None),
        Principal::User(u) => (false, Some(u.access.user_id), None),
        Principal::Key(k) => (false, None, Some(k.org_id)),
    };
    let select = format!(
        "SELECT {ORG_COLUMNS} FROM organizations o
         WHERE ($1 OR o.id = $3 OR EXISTS (
             SELECT 1 FROM memberships m WHERE m.org_id = o.id AND m.user_id = $2 AND m.disabled_at IS NULL))"
    );
    pagination::by_id(&client, &select, "o.id", &[&all, &member_of, &key_org], query.cursor.as_deref(), query.limit)
        .await
}

/// Name and time zone need `OrgUpdate`; the access mode needs `OrgAdminister`, which (alone)
/// still works in a read-only or blocked organization, so the mode can always be switched back.
pub async fn update(app: &App, caller: &Caller<'_>, org_id: Uuid, body: UpdateOrg) -> Result<Organization, AppError> {
    let principal = caller.principal;
    let changes_details =
        body.name.is_some() || body.timezone.is_some() || body.locale.is_some() || body.visitor_settings_given();
    if !changes_details && body.access_mode.is_none() {
        return Err(AppError::field("body", "names nothing to change (name, timezone, locale, access_mode)"));
    }
    if body.locale.as_deref().is_some_and(|l| !["en", "ru"].contains(&l)) {
        return Err(AppError::field("locale", "must be `en` or `ru`"));
    }
    if body.access_mode.is_some() {
        authorize(&app.pool, principal, org_id, Permission::OrgAdminister).await?;
    }
    if changes_details {
        authorize(&app.pool, principal, org_id, Permission::OrgUpdate).await?;
    }
    let mut fields = Fields::new();
    body.check_visitor_settings(&mut fields);
    if let Some(rule) = body.visitor_rule_id
        && app
            .pool
            .get()
            .await?
            .query_opt("SELECT 1 FROM access_rules WHERE org_id = $1 AND id = $2", &[&org_id, &rule])
            .await?
            .is_none()
    {
        fields.insert("visitor_rule_id".into(), "no such access rule in this organization".into());
    }
    let visitor_settings = body.visitor_settings_given();
    let name = body.name.and_then(|n| n.take(&mut fields, "name"));
    let timezone = body.timezone.and_then(|t| t.take(&mut fields, "timezone"));
    done(fields)?;

    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let before = tx
        .query_opt("SELECT access_mode, version FROM organizations WHERE id = $1 FOR UPDATE", &[&org_id])
        .await?
        .ok_or(AppError::NotFound("organization"))?;
    let (old_mode, version): (String, i32) = (before.try_get(0)?, before.try_get(1)?);
    if body.version.is_some_and(|v| v != version) {
        return Err(AppError::Conflict {
            code: Conflict::VersionConflict,
            message: format!("the organization changed meanwhile (now version {version})"),
        });
    }
    let new_mode = body.access_mode.map(AccessMode::as_str);
    tx.execute(
        "UPDATE organizations SET name = coalesce($2, name), timezone = coalesce($3, timezone),
                access_mode = coalesce($4, access_mode), locale = coalesce($5, locale), version = version + 1,
                updated_at = now()
         WHERE id = $1",
        &[&org_id, &name.as_ref().map(Name::as_str), &timezone.map(|t| t.name()), &new_mode, &body.locale],
    )
    .await?;
    if visitor_settings {
        tx.execute(
            "UPDATE organizations SET visitor_rule_id = coalesce($2, visitor_rule_id), address = coalesce($3, address),
                    guest_instructions = coalesce($4, guest_instructions),
                    visit_margin_minutes = coalesce($5, visit_margin_minutes),
                    auto_checkout_minutes = coalesce($6, auto_checkout_minutes),
                    visitor_retention_days = coalesce($7, visitor_retention_days),
                    day_ends_at = coalesce($8::text::time, day_ends_at)
             WHERE id = $1",
            &[
                &org_id,
                &body.visitor_rule_id,
                &body.address.as_deref().map(str::trim),
                &body.guest_instructions.as_deref().map(str::trim),
                &body.visit_margin_minutes,
                &body.auto_checkout_minutes,
                &body.visitor_retention_days,
                &body.day_ends_at,
            ],
        )
        .await?;
    }
    let actor = caller.actor();
    if changes_details {
        let changed: Vec<&str> = [
            ("name", name.is_some()),
            ("timezone", timezone.is_some()),
            ("locale", body.locale.is_some()),
            ("visitor_settings", visitor_settings),
        ]
        .iter()
        .filter(|c| c.1)
        .map(|c| c.0)
        .collect();
        let event =
            Event::new(Some(org_id), "org.updated", "organization", org_id).details(json!({ "fields": changed }));
        audit::record(&tx, actor, event).await?;
    }
    if let Some(mode) = new_mode.filter(|m| *m != old_mode) {
        let event = Event::new(Some(org_id), "org.access_mode_changed", "organization", org_id)
            .details(json!({ "from": old_mode, "to": mode }));
        audit::record(&tx, actor, event).await?;
    }
    tx.commit().await?;
    let client = app.pool.get().await?;
    crate::engine::load::reload_org(&client, &app.engine, org_id).await.map_err(AppError::internal)?;
    if new_mode.is_some_and(|m| m != old_mode) {
        app.auth.changed(AccessChange::Org(org_id));
    }
    load(app, org_id).await
}

/// Deletes the organization and everything it owns, including accounts that belonged to it alone.
pub async fn delete(app: &App, caller: &Caller<'_>, org_id: Uuid) -> Result<(), AppError> {
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let members: Vec<Uuid> = tx
        .query("SELECT user_id FROM memberships WHERE org_id = $1", &[&org_id])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    tx.execute("DELETE FROM organizations WHERE id = $1", &[&org_id]).await?;
    // Its events (they name its visitors) go too; the outbox keeps no reference that would cascade.
    tx.execute("DELETE FROM outbox WHERE org_id = $1", &[&org_id]).await?;
    let accounts = tx
        .execute(
            "DELETE FROM users u WHERE u.id = ANY($1) AND NOT u.is_platform_admin
               AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = u.id)",
            &[&members],
        )
        .await?;
    // The audit row outlives the organization (org_id is left empty, the target keeps its id).
    let event =
        Event::new(None, "org.deleted", "organization", org_id).details(json!({ "accounts_deleted": accounts }));
    audit::record(&tx, caller.actor(), event).await?;
    tx.commit().await?;
    app.auth.cache.clear();
    app.engine.remove_org(org_id).await;
    app.readers.unbind_org(org_id).await;
    app.controllers.unbind_org(org_id).await;
    Ok(())
}

/// Everything the organization owns, as JSON; no password, key or credential hashes.
pub async fn export(app: &App, caller: &Caller<'_>, org_id: Uuid) -> Result<Value, AppError> {
    crate::app::passes::rows_current(app).await;
    let sections: [(&str, String); 17] = [
        ("organization", format!("SELECT {ORG_COLUMNS} FROM organizations WHERE id = $1")),
        ("departments", "SELECT id, name, created_at FROM departments WHERE org_id = $1 ORDER BY id".into()),
        (
            "users",
            "SELECT u.id, u.email, u.name, m.role, m.department_id, m.disabled_at, m.created_at
             FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 ORDER BY u.id"
                .into(),
        ),
        // Visitors' personal fields stay sealed here: one visitor's are read by their own export.
        (
            "visitors",
            "SELECT id, last_visit_at, created_at, updated_at FROM visitors WHERE org_id = $1 ORDER BY id".into(),
        ),
        (
            "appointments",
            "SELECT id, host_id, title, room, starts_at, ends_at, rrule, access_rule_id, status, created_at
             FROM appointments WHERE org_id = $1 ORDER BY id"
                .into(),
        ),
        (
            "visits",
            "SELECT id, appointment_id, visitor_id, host_id, starts_at, ends_at, status, pass_id, denied_reason,
                    arrived_at, checked_in_at, checked_out_at
             FROM visits WHERE org_id = $1 ORDER BY id"
                .into(),
        ),
        ("deny_list", "SELECT id, kind, reason, added_by, created_at FROM deny_list WHERE org_id = $1 ORDER BY id".into()),
        ("zones", "SELECT id, name, capacity, created_at FROM zones WHERE org_id = $1 ORDER BY id".into()),
        ("gates", "SELECT id, zone_id, name, direction, fail_mode, mode, open_ms, created_at FROM gates WHERE org_id = $1 ORDER BY id".into()),
        (
            "access_rules",
            "SELECT r.id, r.name, r.weekdays, r.time_windows, r.escort_required, r.anti_passback, r.anti_passback_minutes,
                    (SELECT coalesce(array_agg(z.zone_id ORDER BY z.zone_id), '{}') FROM access_rule_zones z WHERE z.rule_id = r.id) AS zone_ids
             FROM access_rules r WHERE r.org_id = $1 ORDER BY r.id".into(),
        ),
        ("holidays", "SELECT id, date, name FROM holidays WHERE org_id = $1 ORDER BY date".into()),
        (
            "passes",
            "SELECT id, access_rule_id, appointment_id, visitor_id, holder_name, type, max_uses, group_size, uses_count,
                    status, valid_from, valid_to, inside, last_gate_id, revoked_at, revoke_reason, created_at
             FROM passes WHERE org_id = $1 ORDER BY id".into(),
        ),
        ("credentials", "SELECT id, pass_id, kind, card_format, display_hint, created_at, revoked_at FROM credentials WHERE org_id = $1 ORDER BY id".into()),
        (
            "checkins",
            "SELECT id, gate_id, pass_id, direction, decision, reason, source, credential_kind, decided_at FROM checkins WHERE org_id = $1 ORDER BY decided_at, id".into(),
        ),
        ("pass_events", "SELECT id, pass_id, kind, status, uses_count, actor_id, reason, at FROM pass_events WHERE org_id = $1 ORDER BY id".into()),
        ("api_keys", format!("SELECT {} FROM api_keys WHERE org_id = $1 ORDER BY id", crate::app::keys::KEY_COLUMNS)),
        (
            "audit_log",
            "SELECT id, actor_user_id, actor_key_id, action, target_type, target_id, client_addr, details, at FROM audit_log WHERE org_id = $1 ORDER BY id".into(),
        ),
    ];
    let mut client = app.pool.get().await?;
    // One snapshot, so the sections agree with each other.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut export = serde_json::Map::new();
    export.insert("format".into(), json!("portcullis-export/1"));
    for (name, sql) in sections {
        let rows: Vec<Value> = query_as(&tx, &sql, &[&org_id]).await?;
        let value =
            if name == "organization" { rows.into_iter().next().unwrap_or(Value::Null) } else { Value::Array(rows) };
        export.insert(name.into(), value);
    }
    tx.commit().await?;
    let client = app.pool.get().await?;
    audit::record(&client, caller.actor(), Event::new(Some(org_id), "org.exported", "organization", org_id)).await?;
    Ok(Value::Object(export))
}
