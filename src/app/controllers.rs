//! Controllers that decide by themselves (`/api/v1/orgs/{org}/controllers/{id}`): bind a UHPPOTE
//! controller to gates (its doors), see its sync state, unbind it. In force without a restart;
//! the engine's side is `engine::controllers`.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::app::{App, Caller};
use crate::audit::{self, Event as AuditEvent};
use crate::engine::controllers::{Binding, ControllerStatus};
use crate::error::AppError;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControllerBody {
    /// `uhppote`.
    protocol: String,
    /// `udp://host:port` (the controller listens on 60000).
    endpoint: String,
    /// The controller's serial number (on its label).
    serial: u64,
    /// Which gate each door (1–4) serves.
    gate_doors: Vec<GateDoor>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateDoor {
    pub gate_id: Uuid,
    pub door: u8,
}

/// A controller as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ControllerView {
    pub id: Uuid,
    pub protocol: &'static str,
    pub endpoint: String,
    pub serial: u32,
    pub gate_doors: Vec<GateDoor>,
    /// Online state, last sync, pending changes (`None` until the engine drives it).
    pub status: Option<ControllerStatus>,
}

/// `udp://host:port` → `host:port`.
fn endpoint(text: &str) -> Result<String, AppError> {
    let bad = || AppError::field("endpoint", "must be udp://host:port");
    let rest = text.trim().strip_prefix("udp://").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
    if port == 0 || !host_ok {
        return Err(bad());
    }
    Ok(format!("{host}:{port}"))
}

impl ControllerBody {
    fn check(&self, org_id: Uuid, id: Uuid) -> Result<Binding, AppError> {
        if self.protocol != "uhppote" {
            return Err(AppError::field("protocol", "must be `uhppote`"));
        }
        let endpoint = endpoint(&self.endpoint)?;
        let Some(serial) = u32::try_from(self.serial).ok().filter(|s| *s > 0) else {
            return Err(AppError::field("serial", "must be 1 to 4294967295"));
        };
        if self.gate_doors.is_empty() || self.gate_doors.len() > 4 {
            return Err(AppError::field("gate_doors", "must name 1 to 4 doors"));
        }
        let mut doors = BTreeMap::new();
        for (i, door) in self.gate_doors.iter().enumerate() {
            if !(1..=4).contains(&door.door) {
                return Err(AppError::field(format!("gate_doors[{i}].door"), "must be 1 to 4"));
            }
            if doors.insert(door.door, door.gate_id).is_some() {
                return Err(AppError::field(format!("gate_doors[{i}].door"), "is named twice"));
            }
        }
        Ok(Binding { org_id, id, endpoint, serial, doors, cleared: false })
    }
}

fn view(app: &App, binding: &Binding) -> ControllerView {
    ControllerView {
        id: binding.id,
        protocol: "uhppote",
        endpoint: format!("udp://{}", binding.endpoint),
        serial: binding.serial,
        gate_doors: binding.doors.iter().map(|(door, gate_id)| GateDoor { gate_id: *gate_id, door: *door }).collect(),
        status: app.controllers.status(binding.id),
    }
}

/// Binds (or re-binds) a controller to gates. A controller that cannot be reached is a status,
/// not an error: the engine keeps trying. A new endpoint or serial is a new device: its table is
/// emptied and filled again.
pub async fn put(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    id: Uuid,
    body: ControllerBody,
) -> Result<ControllerView, AppError> {
    let mut binding = body.check(org_id, id)?;
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let gates: Vec<Uuid> = binding.doors.values().copied().collect();
    let known: i64 = tx
        .query_one("SELECT count(*) FROM gates WHERE org_id = $1 AND id = ANY($2)", &[&org_id, &gates])
        .await?
        .try_get(0)?;
    if usize::try_from(known).ok() != Some(gates.iter().collect::<std::collections::HashSet<_>>().len()) {
        return Err(AppError::field("gate_doors", "names a gate this organization does not have"));
    }
    let previous = tx
        .query_opt(
            "SELECT endpoint, serial, cleared_at IS NOT NULL FROM controllers WHERE org_id = $1 AND id = $2 FOR UPDATE",
            &[&org_id, &id],
        )
        .await?;
    let same_device = match &previous {
        Some(row) => {
            row.try_get::<_, String>(0)? == binding.endpoint && row.try_get::<_, i64>(1)? == i64::from(binding.serial)
        }
        None => false,
    };
    binding.cleared = same_device && previous.as_ref().map(|r| r.try_get::<_, bool>(2)).transpose()?.unwrap_or(false);
    tx.execute(
        "INSERT INTO controllers (org_id, id, protocol, endpoint, serial) VALUES ($1, $2, 'uhppote', $3, $4)
         ON CONFLICT (org_id, id) DO UPDATE SET endpoint = EXCLUDED.endpoint, serial = EXCLUDED.serial,
             cleared_at = CASE WHEN $5 THEN controllers.cleared_at END, updated_at = now()",
        &[&org_id, &id, &binding.endpoint, &i64::from(binding.serial), &same_device],
    )
    .await
    .map_err(|e| AppError::unique(e, "another controller has that serial number"))?;
    if !same_device {
        tx.execute("DELETE FROM controller_cards WHERE org_id = $1 AND controller_id = $2", &[&org_id, &id]).await?;
    }
    tx.execute("DELETE FROM controller_doors WHERE org_id = $1 AND controller_id = $2", &[&org_id, &id]).await?;
    for (door, gate_id) in &binding.doors {
        tx.execute(
            "INSERT INTO controller_doors (org_id, controller_id, door, gate_id) VALUES ($1, $2, $3, $4)",
            &[&org_id, &id, &i16::from(*door), gate_id],
        )
        .await?;
    }
    let details = json!({ "endpoint": binding.endpoint, "serial": binding.serial, "doors": binding.doors.len() });
    let action = if previous.is_some() { "controller.updated" } else { "controller.bound" };
    audit::record(&tx, caller.actor(), AuditEvent::new(Some(org_id), action, "controller", id).details(details))
        .await?;
    tx.commit().await?;
    app.controllers.bind(binding.clone()).await;
    Ok(view(app, &binding))
}

/// The controller's binding and its sync state.
pub async fn get(app: &App, org_id: Uuid, id: Uuid) -> Result<ControllerView, AppError> {
    let client = app.pool.get().await?;
    let binding =
        load(&client, Some((org_id, id))).await?.into_iter().next().ok_or(AppError::NotFound("controller"))?;
    Ok(view(app, &binding))
}

/// Unbinds the controller: the engine stops driving it and empties its table (best effort).
pub async fn delete(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<(), AppError> {
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let removed = tx.execute("DELETE FROM controllers WHERE org_id = $1 AND id = $2", &[&org_id, &id]).await?;
    if removed == 0 {
        return Err(AppError::NotFound("controller"));
    }
    audit::record(&tx, caller.actor(), AuditEvent::new(Some(org_id), "controller.unbound", "controller", id)).await?;
    tx.commit().await?;
    app.controllers.unbind(id).await;
    Ok(())
}

/// Bindings: one controller's, or (`None`) every one, for the engine to drive at start.
pub async fn load(client: &impl GenericClient, only: Option<(Uuid, Uuid)>) -> Result<Vec<Binding>, AppError> {
    let (org, id) = (only.map(|o| o.0), only.map(|o| o.1));
    let rows = client
        .query(
            "SELECT c.org_id, c.id, c.endpoint, c.serial, c.cleared_at IS NOT NULL,
                    coalesce(array_agg(d.door ORDER BY d.door) FILTER (WHERE d.door IS NOT NULL), '{}'),
                    coalesce(array_agg(d.gate_id ORDER BY d.door) FILTER (WHERE d.door IS NOT NULL), '{}')
             FROM controllers c
             LEFT JOIN controller_doors d ON d.org_id = c.org_id AND d.controller_id = c.id
             WHERE ($1::uuid IS NULL OR c.org_id = $1) AND ($2::uuid IS NULL OR c.id = $2)
             GROUP BY c.org_id, c.id",
            &[&org, &id],
        )
        .await?;
    let mut bindings = Vec::with_capacity(rows.len());
    for row in rows {
        let doors: Vec<i16> = row.try_get(5)?;
        let gates: Vec<Uuid> = row.try_get(6)?;
        let serial = u32::try_from(row.try_get::<_, i64>(3)?)
            .map_err(|_| AppError::internal("a stored controller serial out of range"))?;
        bindings.push(Binding {
            org_id: row.try_get(0)?,
            id: row.try_get(1)?,
            endpoint: row.try_get(2)?,
            serial,
            doors: doors.into_iter().filter_map(|d| u8::try_from(d).ok()).zip(gates).collect(),
            cleared: row.try_get(4)?,
        });
    }
    Ok(bindings)
}
