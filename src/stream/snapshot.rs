//! The first frame of a stream: every gate with its mode and recent queue, zone occupancy, and who
//! is inside with a revoked pass.

use std::collections::HashSet;

use portcullis_actors::engine::Engine;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db::query_json;
use crate::error::AppError;
use crate::stream::session::Filter;

pub async fn build(
    engine: &Engine,
    pool: &deadpool_postgres::Pool,
    org_id: Uuid,
    seq: u64,
    filter: &Filter,
) -> Result<Value, AppError> {
    let snapshot = engine.snapshot(org_id).ok_or(AppError::NotFound("organization"))?;
    let mut gates: Vec<_> = snapshot.gates.values().filter(|g| filter.shows_gate(g.id)).cloned().collect();
    gates.sort_by(|a, b| a.name.cmp(&b.name));
    let mut gate_frames = Vec::new();
    for gate in gates {
        let all = engine.gate_queue(gate.id).await;
        // Health as far as the engine knows it: when the gate's device last asked for a decision.
        let last_seen_at = all.last().map(|o| o.decided_at);
        let queue: Vec<_> = all.into_iter().filter(|o| filter.shows_pass(o.pass_id)).collect();
        gate_frames.push(json!({
            "id": gate.id, "name": &*gate.name, "zone_id": gate.zone_id, "direction": gate.direction,
            "mode": gate.mode, "health": {"last_seen_at": last_seen_at}, "queue": queue,
        }));
    }
    let client = pool.get().await?;
    let zones =
        query_json(&client, "SELECT id, name, capacity FROM zones WHERE org_id = $1 ORDER BY name", &[&org_id]).await?;
    let occupancy: Vec<Value> = zones
        .iter()
        .filter_map(|z| {
            let id = Uuid::try_parse(z["id"].as_str()?).ok()?;
            Some(json!({"zone_id": id, "name": z["name"], "inside": engine.occupancy(id), "capacity": z["capacity"]}))
        })
        .collect();
    let mut revoked_inside = query_json(
        &client,
        "SELECT id AS pass_id, holder_name, last_gate_id, revoked_at FROM passes
         WHERE org_id = $1 AND status = 'revoked' AND inside ORDER BY revoked_at DESC LIMIT 200",
        &[&org_id],
    )
    .await?;
    revoked_inside.retain(|p| filter.shows_pass(p["pass_id"].as_str().and_then(|id| Uuid::try_parse(id).ok())));
    Ok(json!({
        "type": "snapshot", "seq": seq, "org_id": org_id, "gates": gate_frames, "occupancy": occupancy,
        "revoked_inside": revoked_inside,
    }))
}

impl Filter {
    pub fn shows_gate(&self, gate_id: Uuid) -> bool {
        self.gates.as_ref().is_none_or(|g| g.contains(&gate_id))
    }

    pub fn shows_pass(&self, pass_id: Option<Uuid>) -> bool {
        match &self.host_passes {
            None => true,
            Some(own) => pass_id.is_some_and(|p| own.contains(&p)),
        }
    }
}

/// The passes a host issued (the visitors they may follow).
pub async fn host_passes(
    pool: &deadpool_postgres::Pool,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<HashSet<Uuid>, AppError> {
    let client = pool.get().await?;
    let rows = client.query("SELECT id FROM passes WHERE org_id = $1 AND issued_by = $2", &[&org_id, &user_id]).await?;
    Ok(rows.iter().filter_map(|r| r.try_get(0).ok()).collect())
}
