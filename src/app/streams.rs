//! Live streams, as the application sees them (the WebSocket session is `http::stream`): what a
//! viewer may see ([`Filter`]), how they signed in and whether that still holds
//! ([`Credential`], [`lost_access`]; [`Watchers`] and [`check_watchers`] for changes made
//! elsewhere), and the first frame ([`snapshot`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use deadpool_postgres::Pool;
use portcullis_actors::domain::{AccessMode, GateDirection, GateMode, Role};
use portcullis_actors::engine::Engine;
use portcullis_actors::events::Event;
use portcullis_actors::messages::Outcome;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::permissions::{Permission, role_allows};
use crate::auth::{AccessChange, AuthContext};
use crate::db::query_as;
use crate::error::AppError;

/// What a viewer may see.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these gates (`?gates=`); `None`: all.
    pub gates: Option<HashSet<Uuid>>,
    /// A host sees only these passes (those they issued); `None`: all.
    pub host_passes: Option<HashSet<Uuid>>,
    /// The host, to follow passes they issue while watching.
    pub host_id: Option<Uuid>,
    /// The signed-in user watching (`None`: an API key), who alone sees their notifications.
    pub user_id: Option<Uuid>,
}

impl Filter {
    /// Whether the viewer sees `event` (a host also starts following passes they issue).
    pub fn admits(&mut self, event: &Event) -> bool {
        if let Some(gate) = event.gate_id()
            && !self.shows_gate(gate)
        {
            return false;
        }
        if let (Some(own), Event::PassIssued { pass_id, issued_by, .. }) = (&mut self.host_passes, event)
            && issued_by.is_some()
            && *issued_by == self.host_id
        {
            own.insert(*pass_id);
        }
        match event {
            Event::Notification { user_id, .. } => self.user_id == Some(*user_id),
            // Hosts see their own visitors' visits; everyone else who watches, all.
            Event::Visit { host_id, .. } => self.host_passes.is_none() || self.host_id == Some(*host_id),
            Event::GateMode { .. } | Event::Lockdown { .. } => true,
            _ => self.shows_pass(event.pass_id()),
        }
    }
}

/// How the viewer signed in, to re-check it while the stream is open.
#[derive(Debug, Clone, Copy)]
pub enum Credential {
    /// A member; `role` is what they held when the stream opened (it shaped the filter).
    Session {
        session_id: Uuid,
        user_id: Uuid,
        role: Role,
        expires_in: Duration,
    },
    Key {
        key_id: Uuid,
    },
}

impl Credential {
    /// Whether an access change may concern this viewer of `org_id`.
    pub fn concerned_by(&self, change: AccessChange, org_id: Uuid) -> bool {
        match (change, *self) {
            (AccessChange::Org(org), _) => org == org_id,
            (AccessChange::User(user), Credential::Session { user_id, .. }) => user == user_id,
            (AccessChange::Session(session), Credential::Session { session_id, .. }) => session == session_id,
            (AccessChange::Key(key), Credential::Key { key_id }) => key == key_id,
            _ => false,
        }
    }
}

/// Why the viewer may no longer watch, if so: `token_revoked` when the session or key ended,
/// `access_revoked` when the member was disabled, lost the permission or changed role, or the
/// organization was blocked. `None` also when it cannot be checked right now (the database is
/// away): the stream goes on, bounded by the token's expiry.
pub async fn lost_access(
    pool: &Pool,
    auth: &AuthContext,
    credential: Credential,
    org_id: Uuid,
) -> Option<&'static str> {
    let client = pool.get().await.ok()?;
    let live = match credential {
        Credential::Session { session_id, .. } => client
            .query_opt("SELECT revoked_at IS NULL AND expires_at > now() FROM sessions WHERE id = $1", &[&session_id])
            .await
            .ok()?,
        Credential::Key { key_id } => client
            .query_opt(
                "SELECT revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) FROM api_keys WHERE id = $1",
                &[&key_id],
            )
            .await
            .ok()?,
    };
    if !live.and_then(|r| r.try_get::<_, bool>(0).ok()).unwrap_or(false) {
        return Some("token_revoked");
    }
    if let Credential::Session { user_id, role, .. } = credential {
        let access = auth.cache.get(&client, user_id).await.ok()?;
        let now = access.filter(|a| !a.disabled).and_then(|a| a.role_in(org_id));
        if now.is_none_or(|r| r != role || !role_allows(r, Permission::StreamWatch)) {
            return Some("access_revoked");
        }
    }
    let mode = client.query_opt("SELECT access_mode FROM organizations WHERE id = $1", &[&org_id]).await.ok()?;
    let blocked = mode.is_none_or(|r| r.try_get::<_, &str>(0).is_ok_and(|m| m == AccessMode::Blocked.as_str()));
    blocked.then_some("access_revoked")
}

/// The credentials that open streams watch with, so that one check covers them all: no stream
/// polls the database on its own (see [`check_watchers`]).
#[derive(Default)]
pub struct Watchers {
    next: AtomicU64,
    open: DashMap<u64, (Credential, Uuid)>,
}

/// A stream's entry among the [`Watchers`], removed when the stream ends (dropped with it).
pub struct Watching {
    watchers: Arc<Watchers>,
    id: u64,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.watchers.open.remove(&self.id);
    }
}

impl Watchers {
    /// Registers a stream of `org_id` watching with `credential`.
    pub fn watch(self: &Arc<Self>, credential: Credential, org_id: Uuid) -> Watching {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.insert(id, (credential, org_id));
        Watching { watchers: self.clone(), id }
    }
}

/// Finds what the open streams watch with that no longer holds because of a change made
/// elsewhere (another node, or the database itself: changes made through this node are announced
/// as they are made) and announces each as an [`AccessChange`], as such a change would be: the
/// streams concerned look again ([`lost_access`]) and close. Four queries, however many streams
/// are open; each may name what still holds (a false alarm costs a stream one look, never a
/// missed loss). Returns how many changes it announced.
pub async fn check_watchers(pool: &Pool, auth: &AuthContext, watchers: &Watchers) -> Result<usize, AppError> {
    let (mut sessions, mut keys, mut orgs) = (HashSet::new(), HashSet::new(), HashSet::new());
    let mut members = HashSet::new();
    for entry in &watchers.open {
        let (credential, org_id) = *entry.value();
        orgs.insert(org_id);
        match credential {
            Credential::Session { session_id, user_id, role, .. } => {
                sessions.insert(session_id);
                members.insert((user_id, org_id, role));
            }
            Credential::Key { key_id } => {
                keys.insert(key_id);
            }
        }
    }
    if orgs.is_empty() {
        return Ok(0);
    }
    let client = pool.get().await?;
    let ids = |set: HashSet<Uuid>| set.into_iter().collect::<Vec<_>>();
    let lost = |sql: &'static str, set: HashSet<Uuid>| {
        let client = &client;
        async move {
            let rows = client.query(sql, &[&ids(set)]).await?;
            rows.iter().map(|r| r.try_get::<_, Uuid>(0)).collect::<Result<Vec<_>, _>>()
        }
    };
    let mut changes = Vec::new();
    changes.extend(lost(LOST_SESSIONS, sessions).await?.into_iter().map(AccessChange::Session));
    changes.extend(lost(LOST_KEYS, keys).await?.into_iter().map(AccessChange::Key));
    changes.extend(lost(LOST_ORGS, orgs).await?.into_iter().map(AccessChange::Org));
    let (users, member_orgs, roles): (Vec<Uuid>, Vec<Uuid>, Vec<&str>) =
        members.iter().map(|(user, org, role)| (*user, *org, role.as_str())).collect();
    let rows = client.query(CHANGED_MEMBERS, &[&users, &member_orgs, &roles]).await?;
    let changed: HashSet<Uuid> = rows.iter().filter_map(|r| r.try_get::<_, Uuid>(0).ok()).collect();
    changes.extend(changed.into_iter().map(AccessChange::User));
    let announced = changes.len();
    for change in changes {
        auth.changed(change);
    }
    Ok(announced)
}

const LOST_SESSIONS: &str = "SELECT w.id FROM unnest($1::uuid[]) AS w(id) WHERE NOT EXISTS \
     (SELECT 1 FROM sessions s WHERE s.id = w.id AND s.revoked_at IS NULL AND s.expires_at > now())";
const LOST_KEYS: &str = "SELECT w.id FROM unnest($1::uuid[]) AS w(id) WHERE NOT EXISTS \
     (SELECT 1 FROM api_keys k WHERE k.id = w.id AND k.revoked_at IS NULL \
      AND (k.expires_at IS NULL OR k.expires_at > now()))";
const LOST_ORGS: &str = "SELECT w.id FROM unnest($1::uuid[]) AS w(id) WHERE NOT EXISTS \
     (SELECT 1 FROM organizations o WHERE o.id = w.id AND o.access_mode <> 'blocked')";
/// Members whose role in the organization is no longer the one their stream opened with
/// (disabled, removed, changed; a platform admin's spans every organization).
const CHANGED_MEMBERS: &str = "SELECT w.user_id FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS w(user_id, org_id, role) \
     WHERE NOT EXISTS (SELECT 1 FROM users u \
       LEFT JOIN memberships m ON m.user_id = u.id AND m.org_id = w.org_id AND m.disabled_at IS NULL \
       WHERE u.id = w.user_id AND u.disabled_at IS NULL \
       AND (CASE WHEN u.is_platform_admin THEN 'platform_admin' ELSE m.role END) = w.role)";

/// The first frame of a stream: every gate with its mode and recent queue, zone occupancy, and
/// who is inside with a revoked pass.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// Always `snapshot`.
    #[serde(rename = "type")]
    pub frame: &'static str,
    /// The newest event sequence number the snapshot covers.
    pub seq: u64,
    pub org_id: Uuid,
    pub gates: Vec<GateFrame>,
    pub occupancy: Vec<ZoneOccupancy>,
    pub revoked_inside: Vec<RevokedInside>,
}

#[derive(Debug, Serialize)]
pub struct GateFrame {
    pub id: Uuid,
    pub name: String,
    pub zone_id: Uuid,
    pub direction: GateDirection,
    pub mode: GateMode,
    pub health: GateHealth,
    pub queue: Vec<Outcome>,
}

/// Health as far as the engine knows it: when the gate's device last asked for a decision.
#[derive(Debug, Serialize)]
pub struct GateHealth {
    pub last_seen_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct ZoneOccupancy {
    pub zone_id: Uuid,
    pub name: String,
    pub inside: i64,
    pub capacity: Option<i32>,
}

/// Someone inside on a pass revoked since they entered.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokedInside {
    pub pass_id: Uuid,
    pub holder_name: String,
    pub last_gate_id: Option<Uuid>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct ZoneRow {
    id: Uuid,
    name: String,
    capacity: Option<i32>,
}

pub async fn snapshot(
    engine: &Engine,
    pool: &deadpool_postgres::Pool,
    org_id: Uuid,
    seq: u64,
    filter: &Filter,
) -> Result<Snapshot, AppError> {
    let snapshot = engine.snapshot(org_id).ok_or(AppError::NotFound("organization"))?;
    let mut gates: Vec<_> = snapshot.gates.values().filter(|g| filter.shows_gate(g.id)).cloned().collect();
    gates.sort_by(|a, b| a.name.cmp(&b.name));
    let mut gate_frames = Vec::new();
    for gate in gates {
        let all = engine.gate_queue(gate.id).await;
        let last_seen_at = all.last().map(|o| o.decided_at);
        let queue: Vec<_> = all.into_iter().filter(|o| filter.shows_pass(o.pass_id)).collect();
        gate_frames.push(GateFrame {
            id: gate.id,
            name: gate.name.to_string(),
            zone_id: gate.zone_id,
            direction: gate.direction,
            mode: gate.mode,
            health: GateHealth { last_seen_at },
            queue,
        });
    }
    let client = pool.get().await?;
    let zones: Vec<ZoneRow> =
        query_as(&client, "SELECT id, name, capacity FROM zones WHERE org_id = $1 ORDER BY name", &[&org_id]).await?;
    let occupancy = zones
        .into_iter()
        .map(|z| ZoneOccupancy { zone_id: z.id, inside: engine.occupancy(z.id), name: z.name, capacity: z.capacity })
        .collect();
    let revoked_inside: Vec<RevokedInside> = query_as(
        &client,
        "SELECT id AS pass_id, holder_name, last_gate_id, revoked_at FROM passes
         WHERE org_id = $1 AND status = 'revoked' AND inside ORDER BY revoked_at DESC LIMIT 200",
        &[&org_id],
    )
    .await?;
    // Rows are written behind the passages: one that left since is inside only in its row.
    let mut still_inside = Vec::with_capacity(revoked_inside.len());
    for p in revoked_inside.into_iter().filter(|p| filter.shows_pass(Some(p.pass_id))) {
        let left = engine.holds_pass(p.pass_id) && engine.pass_state(p.pass_id).await.is_some_and(|s| !s.inside);
        if !left {
            still_inside.push(p);
        }
    }
    Ok(Snapshot { frame: "snapshot", seq, org_id, gates: gate_frames, occupancy, revoked_inside: still_inside })
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
