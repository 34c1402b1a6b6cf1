//! The site: zones, gates and their modes, access rules, holidays, lockdown.
//!
//! Every change is written to PostgreSQL, then the organization's configuration is reloaded into
//! its OrgActor before the use case returns: a gate created, locked down or re-zoned is in force
//! at once.

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::GenericClient;
use portcullis_actors::domain::{AntiPassback, FailMode, GateDirection, GateMode};
use portcullis_actors::messages::Outcome;
use portcullis_actors::schedule::{Schedule, TimeWindow};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::app::input::{self, Fields, done};
use crate::app::{App, Caller};
use crate::audit::{self, Event as AuditEvent};
use crate::db::pagination::Identified;
use crate::db::pagination::{self, ListQuery, Page};
use crate::db::query_one_as;
use crate::engine::load::reload_org;
use crate::error::AppError;

/// A name, when one is given (creating passes `""` for a missing one), must be a valid name.
fn check_name(fields: &mut Fields, name: Option<&str>) {
    if let Some(name) = name {
        input::check_name(fields, "name", name);
    }
}

/// After a change of `changed` rows (none: the object does not exist), puts the configuration in
/// force at the gates and reads the object back.
async fn in_force<T: DeserializeOwned>(
    app: &App,
    client: &impl GenericClient,
    org_id: Uuid,
    changed: u64,
    select: &str,
    id: Uuid,
    what: &'static str,
) -> Result<T, AppError> {
    if changed == 0 {
        return Err(AppError::NotFound(what));
    }
    reload(app, client, org_id).await?;
    one(client, select, org_id, id, what).await
}

async fn reload(app: &App, client: &impl GenericClient, org_id: Uuid) -> Result<(), AppError> {
    reload_org(client, &app.engine, org_id).await.map_err(AppError::internal)
}

async fn exists(client: &impl GenericClient, table: &str, org_id: Uuid, id: Uuid) -> Result<bool, AppError> {
    let sql = format!("SELECT 1 FROM {table} WHERE org_id = $1 AND id = $2");
    Ok(client.query_opt(&sql, &[&org_id, &id]).await?.is_some())
}

async fn list<T: DeserializeOwned + Identified>(
    app: &App,
    table_select: &str,
    org_id: Uuid,
    query: &ListQuery,
) -> Result<Page<T>, AppError> {
    let client = app.pool.get().await?;
    let select = format!("{table_select} WHERE org_id = $1");
    pagination::by_id(&client, &select, "id", &[&org_id], query.cursor.as_deref(), query.limit).await
}

async fn one<T: DeserializeOwned>(
    client: &impl GenericClient,
    table_select: &str,
    org_id: Uuid,
    id: Uuid,
    what: &'static str,
) -> Result<T, AppError> {
    query_one_as(client, &format!("{table_select} WHERE org_id = $1 AND id = $2"), &[&org_id, &id])
        .await?
        .ok_or(AppError::NotFound(what))
}

/// What can be deleted from a site.
#[derive(Debug, Clone, Copy)]
pub enum Resource {
    Zone,
    Gate,
    AccessRule,
    Holiday,
}

impl Resource {
    fn table(self) -> &'static str {
        match self {
            Resource::Zone => "zones",
            Resource::Gate => "gates",
            Resource::AccessRule => "access_rules",
            Resource::Holiday => "holidays",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Resource::Zone => "zone",
            Resource::Gate => "gate",
            Resource::AccessRule => "access rule",
            Resource::Holiday => "holiday",
        }
    }
}

/// Deletes a zone, gate, rule or holiday; `in_use` while something still refers to it.
pub async fn remove(app: &App, org_id: Uuid, what: Resource, id: Uuid) -> Result<(), AppError> {
    let is_gate = matches!(what, Resource::Gate);
    let (table, what) = (what.table(), what.name());
    let client = app.pool.get().await?;
    let deleted = client
        .execute(&format!("DELETE FROM {table} WHERE org_id = $1 AND id = $2"), &[&org_id, &id])
        .await
        .map_err(|e| AppError::in_use(e, &format!("the {what} is still in use")))?;
    if deleted == 0 {
        return Err(AppError::NotFound(what));
    }
    if is_gate {
        // Its reader binding went with it: stop polling the reader.
        app.readers.unbind(id).await;
        // Doors of controllers that served it serve nothing now.
        app.controllers.gate_deleted(id).await;
    }
    reload(app, &client, org_id).await
}

// ---- zones ----

const ZONE_SELECT: &str = "SELECT id, org_id, name, capacity, created_at, updated_at FROM zones";

macro_rules! identified {
    ($($t:ty),+) => { $( impl Identified for $t { fn id(&self) -> Uuid { self.id } } )+ };
}
identified!(Zone, Gate, AccessRule, Holiday);

/// An area behind gates, whose occupancy the engine counts.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Zone {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    /// At most this many inside (none: no limit).
    pub capacity: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How many are inside now (when one zone is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside: Option<i64>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneBody {
    name: Option<String>,
    capacity: Option<i32>,
}

fn check_capacity(fields: &mut Fields, capacity: Option<i32>) {
    if capacity.is_some_and(|c| c < 1) {
        fields.insert("capacity".into(), "must be at least 1".into());
    }
}

pub async fn create_zone(app: &App, org_id: Uuid, body: ZoneBody) -> Result<Zone, AppError> {
    let mut fields = Fields::new();
    let name = body.name.as_deref().unwrap_or_default();
    check_name(&mut fields, Some(name));
    check_capacity(&mut fields, body.capacity);
    done(fields)?;
    let (org_id, zone_id) = (org_id, Uuid::now_v7());
    let client = app.pool.get().await?;
    client
        .execute(
            "INSERT INTO zones (id, org_id, name, capacity) VALUES ($1, $2, $3, $4)",
            &[&zone_id, &org_id, &name.trim(), &body.capacity],
        )
        .await
        .map_err(|e| AppError::unique(e, "a zone with this name exists"))?;
    in_force(app, &client, org_id, 1, ZONE_SELECT, zone_id, "zone").await
}

pub async fn list_zones(app: &App, org_id: Uuid, q: &ListQuery) -> Result<Page<Zone>, AppError> {
    list(app, ZONE_SELECT, org_id, q).await
}

pub async fn get_zone(app: &App, org_id: Uuid, zone_id: Uuid) -> Result<Zone, AppError> {
    let client = app.pool.get().await?;
    let zone: Zone = one(&client, ZONE_SELECT, org_id, zone_id, "zone").await?;
    Ok(Zone { inside: Some(app.engine.occupancy(zone_id)), ..zone })
}

pub async fn update_zone(app: &App, org_id: Uuid, zone_id: Uuid, body: ZoneBody) -> Result<Zone, AppError> {
    let mut fields = Fields::new();
    check_name(&mut fields, body.name.as_deref());
    check_capacity(&mut fields, body.capacity);
    done(fields)?;
    let client = app.pool.get().await?;
    let updated = client
        .execute(
            "UPDATE zones SET name = coalesce($3, name), capacity = coalesce($4, capacity), updated_at = now(),
                    version = version + 1
             WHERE org_id = $1 AND id = $2",
            &[&org_id, &zone_id, &body.name.as_deref().map(str::trim), &body.capacity],
        )
        .await
        .map_err(|e| AppError::unique(e, "a zone with this name exists"))?;
    in_force(app, &client, org_id, updated, ZONE_SELECT, zone_id, "zone").await
}

// ---- gates ----

const GATE_SELECT: &str =
    "SELECT id, org_id, zone_id, name, direction, fail_mode, mode, open_ms, created_at, updated_at FROM gates";

/// A turnstile or door: the zone it leads into, its direction and mode.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Gate {
    pub id: Uuid,
    pub org_id: Uuid,
    pub zone_id: Uuid,
    pub name: String,
    pub direction: GateDirection,
    /// What a consuming entry gets while the journal is away.
    pub fail_mode: FailMode,
    pub mode: GateMode,
    /// How long the gate stays open for one passage.
    pub open_ms: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Its recent decisions, oldest first (when one gate is read).
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub queue: Option<Vec<Outcome>>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateBody {
    name: Option<String>,
    zone_id: Option<Uuid>,
    direction: Option<GateDirection>,
    fail_mode: Option<FailMode>,
    open_ms: Option<i32>,
}

async fn check_gate(
    client: &impl GenericClient,
    org_id: Uuid,
    body: &GateBody,
    creating: bool,
) -> Result<(), AppError> {
    let mut fields = Fields::new();
    check_name(
        &mut fields,
        if creating { Some(body.name.as_deref().unwrap_or_default()) } else { body.name.as_deref() },
    );
    if creating && body.direction.is_none() {
        fields.insert("direction".into(), "is required".into());
    }
    match body.zone_id {
        Some(zone) if !exists(client, "zones", org_id, zone).await? => {
            fields.insert("zone_id".into(), "no such zone in this organization".into());
        }
        None if creating => {
            fields.insert("zone_id".into(), "is required".into());
        }
        _ => {}
    }
    if body.open_ms.is_some_and(|ms| !(100..=60_000).contains(&ms)) {
        fields.insert("open_ms".into(), "must be between 100 and 60000".into());
    }
    done(fields)
}

pub async fn create_gate(app: &App, org_id: Uuid, body: GateBody) -> Result<Gate, AppError> {
    let (org_id, gate_id) = (org_id, Uuid::now_v7());
    let client = app.pool.get().await?;
    check_gate(&client, org_id, &body, true).await?;
    client
        .execute(
            "INSERT INTO gates (id, org_id, zone_id, name, direction, fail_mode, open_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &gate_id,
                &org_id,
                &body.zone_id,
                &body.name.as_deref().map(str::trim),
                &body.direction.map(GateDirection::as_str),
                &body.fail_mode.unwrap_or(FailMode::Closed).as_str(),
                &body.open_ms.unwrap_or(3000),
            ],
        )
        .await
        .map_err(|e| AppError::unique(e, "a gate with this name exists"))?;
    in_force(app, &client, org_id, 1, GATE_SELECT, gate_id, "gate").await
}

pub async fn list_gates(app: &App, org_id: Uuid, q: &ListQuery) -> Result<Page<Gate>, AppError> {
    list(app, GATE_SELECT, org_id, q).await
}

/// A gate, with its live entry queue.
pub async fn get_gate(app: &App, org_id: Uuid, gate_id: Uuid) -> Result<Gate, AppError> {
    let client = app.pool.get().await?;
    let gate: Gate = one(&client, GATE_SELECT, org_id, gate_id, "gate").await?;
    Ok(Gate { queue: Some(app.engine.gate_queue(gate_id).await), ..gate })
}

pub async fn update_gate(app: &App, org_id: Uuid, gate_id: Uuid, body: GateBody) -> Result<Gate, AppError> {
    let client = app.pool.get().await?;
    check_gate(&client, org_id, &body, false).await?;
    let updated = client
        .execute(
            "UPDATE gates SET name = coalesce($3, name), zone_id = coalesce($4, zone_id), direction = coalesce($5, direction),
                    fail_mode = coalesce($6, fail_mode), open_ms = coalesce($7, open_ms), updated_at = now(), version = version + 1
             WHERE org_id = $1 AND id = $2",
            &[
                &org_id,
                &gate_id,
                &body.name.as_deref().map(str::trim),
                &body.zone_id,
                &body.direction.map(GateDirection::as_str),
                &body.fail_mode.map(FailMode::as_str),
                &body.open_ms,
            ],
        )
        .await
        .map_err(|e| AppError::unique(e, "a gate with this name exists"))?;
    in_force(app, &client, org_id, updated, GATE_SELECT, gate_id, "gate").await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    mode: GateMode,
}

/// Sets a gate's mode (normal, locked down, free passage); the dashboards are told.
pub async fn set_gate_mode(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    gate_id: Uuid,
    body: ModeBody,
) -> Result<Gate, AppError> {
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let updated = tx
        .execute(
            "UPDATE gates SET mode = $3, updated_at = now() WHERE org_id = $1 AND id = $2",
            &[&org_id, &gate_id, &body.mode.as_str()],
        )
        .await?;
    if updated == 0 {
        return Err(AppError::NotFound("gate"));
    }
    let event =
        AuditEvent::new(Some(org_id), "gate.mode_changed", "gate", gate_id).details(json!({ "mode": body.mode }));
    audit::record(&tx, caller.actor(), event).await?;
    tx.commit().await?;
    // The OrgActor tells the dashboards, as the new mode takes effect.
    in_force(app, &client, org_id, 1, GATE_SELECT, gate_id, "gate").await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockdownBody {
    lockdown: bool,
}

/// The organization's lockdown, as set.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Lockdown {
    pub org_id: Uuid,
    pub lockdown: bool,
}

/// Organization-wide lockdown: every gate refuses every credential until lifted.
pub async fn set_lockdown(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    body: LockdownBody,
) -> Result<Lockdown, AppError> {
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("UPDATE organizations SET lockdown = $2, updated_at = now() WHERE id = $1", &[&org_id, &body.lockdown])
        .await?;
    let event = AuditEvent::new(Some(org_id), "org.lockdown_changed", "organization", org_id)
        .details(json!({ "lockdown": body.lockdown }));
    audit::record(&tx, caller.actor(), event).await?;
    let alert = json!({ "alert": if body.lockdown { "lockdown" } else { "lockdown_lifted" }, "actor_id": caller.principal.user_id() });
    crate::outbox::record(&tx, org_id, "alert.raised", alert).await?;
    tx.commit().await?;
    app.outbox.wake();
    reload(app, &client, org_id).await?;
    Ok(Lockdown { org_id, lockdown: body.lockdown })
}

// ---- access rules ----

const RULE_SELECT: &str =
    "SELECT r.id, r.org_id, r.name, r.weekdays, r.time_windows, r.escort_required, r.anti_passback,
        r.anti_passback_minutes, r.created_at, r.updated_at,
        (SELECT coalesce(array_agg(z.zone_id ORDER BY z.zone_id), '{}') FROM access_rule_zones z
         WHERE z.org_id = r.org_id AND z.rule_id = r.id) AS zone_ids
     FROM access_rules r";

/// When and where a pass opens gates.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessRule {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    /// ISO weekdays, 1 = Monday .. 7 = Sunday.
    pub weekdays: Vec<i16>,
    /// Local times of day (empty: all day).
    pub time_windows: Vec<TimeWindow>,
    pub escort_required: bool,
    pub anti_passback: AntiPassback,
    pub anti_passback_minutes: Option<i32>,
    /// The zones it opens.
    pub zone_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    name: Option<String>,
    zone_ids: Option<Vec<Uuid>>,
    weekdays: Option<Vec<i64>>,
    time_windows: Option<Vec<TimeWindow>>,
    escort_required: Option<bool>,
    anti_passback: Option<AntiPassback>,
    anti_passback_minutes: Option<i32>,
}

async fn check_rule(
    client: &impl GenericClient,
    org_id: Uuid,
    body: &RuleBody,
    creating: bool,
) -> Result<(), AppError> {
    let mut fields = Fields::new();
    check_name(
        &mut fields,
        if creating { Some(body.name.as_deref().unwrap_or_default()) } else { body.name.as_deref() },
    );
    if let Some(zones) = &body.zone_ids {
        let known: i64 = client
            .query_one("SELECT count(*) FROM zones WHERE org_id = $1 AND id = ANY($2)", &[&org_id, zones])
            .await?
            .try_get(0)?;
        let mut unique = zones.clone();
        unique.sort();
        unique.dedup();
        if usize::try_from(known).ok() != Some(unique.len()) {
            fields.insert("zone_ids".into(), "every zone must belong to this organization".into());
        }
    } else if creating {
        fields.insert("zone_ids".into(), "is required".into());
    }
    if let Some(days) = &body.weekdays
        && let Err(err) = Schedule::new(days.iter().copied(), Vec::new())
    {
        fields.insert("weekdays".into(), err.to_string());
    }
    if body.anti_passback_minutes.is_some_and(|m| !(1..=MAX_ANTI_PASSBACK_MINUTES).contains(&m)) {
        fields.insert("anti_passback_minutes".into(), format!("must be 1 to {MAX_ANTI_PASSBACK_MINUTES}"));
    } else if body.anti_passback == Some(AntiPassback::Timed) && body.anti_passback_minutes.is_none() {
        fields.insert(
            "anti_passback_minutes".into(),
            "timed anti-passback needs a number of minutes (at least 1)".into(),
        );
    }
    done(fields)
}

/// The longest timed anti-passback: a week.
const MAX_ANTI_PASSBACK_MINUTES: i32 = 7 * 24 * 60;

async fn set_rule_zones(
    client: &impl GenericClient,
    org_id: Uuid,
    rule_id: Uuid,
    zones: &[Uuid],
) -> Result<(), AppError> {
    client.execute("DELETE FROM access_rule_zones WHERE org_id = $1 AND rule_id = $2", &[&org_id, &rule_id]).await?;
    client
        .execute(
            "INSERT INTO access_rule_zones (org_id, rule_id, zone_id) SELECT $1, $2, unnest($3::uuid[]) ON CONFLICT DO NOTHING",
            &[&org_id, &rule_id, &zones],
        )
        .await?;
    Ok(())
}

fn weekdays_sql(days: &Option<Vec<i64>>) -> Option<Vec<i16>> {
    days.as_ref().map(|d| d.iter().filter_map(|x| i16::try_from(*x).ok()).collect())
}

pub async fn create_rule(app: &App, org_id: Uuid, body: RuleBody) -> Result<AccessRule, AppError> {
    let (org_id, rule_id) = (org_id, Uuid::now_v7());
    let mut client = app.pool.get().await?;
    check_rule(&client, org_id, &body, true).await?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO access_rules (id, org_id, name, weekdays, time_windows, escort_required, anti_passback, anti_passback_minutes)
         VALUES ($1, $2, $3, coalesce($4::smallint[], '{1,2,3,4,5,6,7}'::smallint[]), $5, $6, $7, $8)",
        &[
            &rule_id,
            &org_id,
            &body.name.as_deref().map(str::trim),
            &weekdays_sql(&body.weekdays),
            &json!(body.time_windows.clone().unwrap_or_default()),
            &body.escort_required.unwrap_or(false),
            &body.anti_passback.unwrap_or(AntiPassback::Off).as_str(),
            &body.anti_passback_minutes,
        ],
    )
    .await
    .map_err(|e| AppError::unique(e, "an access rule with this name exists"))?;
    set_rule_zones(&tx, org_id, rule_id, body.zone_ids.as_deref().unwrap_or_default()).await?;
    tx.commit().await?;
    in_force(app, &client, org_id, 1, RULE_SELECT, rule_id, "access rule").await
}

pub async fn list_rules(app: &App, org_id: Uuid, q: &ListQuery) -> Result<Page<AccessRule>, AppError> {
    let client = app.pool.get().await?;
    let select = format!("{RULE_SELECT} WHERE r.org_id = $1");
    pagination::by_id(&client, &select, "r.id", &[&org_id], q.cursor.as_deref(), q.limit).await
}

pub async fn get_rule(app: &App, org_id: Uuid, rule_id: Uuid) -> Result<AccessRule, AppError> {
    let client = app.pool.get().await?;
    let rule = query_one_as(&client, &format!("{RULE_SELECT} WHERE r.org_id = $1 AND r.id = $2"), &[&org_id, &rule_id])
        .await?
        .ok_or(AppError::NotFound("access rule"))?;
    Ok(rule)
}

pub async fn update_rule(app: &App, org_id: Uuid, rule_id: Uuid, body: RuleBody) -> Result<AccessRule, AppError> {
    let mut client = app.pool.get().await?;
    check_rule(&client, org_id, &body, false).await?;
    let tx = client.transaction().await?;
    let updated = tx
        .execute(
            "UPDATE access_rules SET name = coalesce($3, name), weekdays = coalesce($4, weekdays),
                    time_windows = coalesce($5, time_windows), escort_required = coalesce($6, escort_required),
                    anti_passback = coalesce($7, anti_passback),
                    anti_passback_minutes = CASE WHEN $7::text IS NULL AND $8::int IS NULL THEN anti_passback_minutes ELSE $8 END,
                    updated_at = now(), version = version + 1
             WHERE org_id = $1 AND id = $2",
            &[
                &org_id,
                &rule_id,
                &body.name.as_deref().map(str::trim),
                &weekdays_sql(&body.weekdays),
                &body.time_windows.as_ref().map(|w| json!(w)),
                &body.escort_required,
                &body.anti_passback.map(AntiPassback::as_str),
                &body.anti_passback_minutes,
            ],
        )
        .await
        .map_err(|e| if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) {
            AppError::field("anti_passback_minutes", "timed anti-passback needs a number of minutes")
        } else {
            AppError::unique(e, "an access rule with this name exists")
        })?;
    if updated == 0 {
        return Err(AppError::NotFound("access rule"));
    }
    if let Some(zones) = &body.zone_ids {
        set_rule_zones(&tx, org_id, rule_id, zones).await?;
    }
    tx.commit().await?;
    reload(app, &client, org_id).await?;
    let rule = query_one_as(&client, &format!("{RULE_SELECT} WHERE r.org_id = $1 AND r.id = $2"), &[&org_id, &rule_id])
        .await?
        .ok_or(AppError::NotFound("access rule"))?;
    Ok(rule)
}

// ---- holidays ----

const HOLIDAY_SELECT: &str = "SELECT id, org_id, date, name FROM holidays";

/// A day on which rules that skip holidays open nothing.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Holiday {
    pub id: Uuid,
    pub org_id: Uuid,
    pub date: NaiveDate,
    pub name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HolidayBody {
    #[serde(default, deserialize_with = "crate::app::input::opt_date")]
    date: Option<NaiveDate>,
    name: Option<String>,
}

pub async fn create_holiday(app: &App, org_id: Uuid, body: HolidayBody) -> Result<Holiday, AppError> {
    let mut fields = Fields::new();
    check_name(&mut fields, Some(body.name.as_deref().unwrap_or_default()));
    if body.date.is_none() {
        fields.insert("date".into(), "is required (YYYY-MM-DD)".into());
    }
    done(fields)?;
    let (org_id, holiday_id) = (org_id, Uuid::now_v7());
    let client = app.pool.get().await?;
    client
        .execute(
            "INSERT INTO holidays (id, org_id, date, name) VALUES ($1, $2, $3, $4)",
            &[&holiday_id, &org_id, &body.date, &body.name.as_deref().map(str::trim)],
        )
        .await
        .map_err(|e| AppError::unique(e, "there is already a holiday on this date"))?;
    in_force(app, &client, org_id, 1, HOLIDAY_SELECT, holiday_id, "holiday").await
}

pub async fn list_holidays(app: &App, org_id: Uuid, q: &ListQuery) -> Result<Page<Holiday>, AppError> {
    list(app, HOLIDAY_SELECT, org_id, q).await
}

pub async fn get_holiday(app: &App, org_id: Uuid, holiday_id: Uuid) -> Result<Holiday, AppError> {
    let client = app.pool.get().await?;
    one(&client, HOLIDAY_SELECT, org_id, holiday_id, "holiday").await
}

pub async fn update_holiday(app: &App, org_id: Uuid, holiday_id: Uuid, body: HolidayBody) -> Result<Holiday, AppError> {
    let mut fields = Fields::new();
    check_name(&mut fields, body.name.as_deref());
    done(fields)?;
    let client = app.pool.get().await?;
    let updated = client
        .execute(
            "UPDATE holidays SET date = coalesce($3, date), name = coalesce($4, name) WHERE org_id = $1 AND id = $2",
            &[&org_id, &holiday_id, &body.date, &body.name.as_deref().map(str::trim)],
        )
        .await
        .map_err(|e| AppError::unique(e, "there is already a holiday on this date"))?;
    in_force(app, &client, org_id, updated, HOLIDAY_SELECT, holiday_id, "holiday").await
}
