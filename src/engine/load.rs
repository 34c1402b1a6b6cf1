//! Loading the engine from the system of record: at start for every organization, and again
//! for one organization after each configuration change made through the API.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::GenericClient;
use portcullis_actors::decision::{Gate, OrgPolicy, PassState, Rule};
use portcullis_actors::domain::{
    AntiPassback, CredentialKind, FailMode, GateDirection, GateMode, PassStatus, PassType,
};
use portcullis_actors::engine::{CredentialRef, Engine, EngineError, OrgSnapshot};
use portcullis_actors::schedule::{Schedule, TimeWindow};
use tokio_postgres::Row;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load the engine: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("cannot load the engine: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("cannot load the engine: stored {what} `{value}` is invalid")]
    Data { what: &'static str, value: String },
    #[error("cannot load the engine: {0}")]
    Engine(#[from] EngineError),
    #[error("cannot start the journal: {0}")]
    Spool(#[from] crate::engine::spool::SpoolError),
}

fn parsed<T: std::str::FromStr>(what: &'static str, value: &str) -> Result<T, LoadError> {
    value.parse().map_err(|_| LoadError::Data { what, value: value.to_owned() })
}

/// Reads one organization's configuration.
pub async fn org_snapshot(client: &impl GenericClient, org_id: Uuid) -> Result<Option<OrgSnapshot>, LoadError> {
    let Some(org) = client
        .query_opt(
            "SELECT timezone, lockdown, revoked_may_exit, access_mode FROM organizations WHERE id = $1",
            &[&org_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let timezone: String = org.try_get(0)?;
    let holidays: BTreeSet<NaiveDate> = client
        .query("SELECT date FROM holidays WHERE org_id = $1", &[&org_id])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let policy = OrgPolicy {
        timezone: parsed("time zone", &timezone)?,
        lockdown: org.try_get(1)?,
        revoked_may_exit: org.try_get(2)?,
        holidays,
    };
    let zones = client
        .query("SELECT id, capacity FROM zones WHERE org_id = $1", &[&org_id])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get::<_, Option<i32>>(1)?.map(i64::from))))
        .collect::<Result<HashMap<_, _>, tokio_postgres::Error>>()?;
    let mut gates = HashMap::new();
    for row in client
        .query("SELECT id, zone_id, name, direction, mode, open_ms, fail_mode FROM gates WHERE org_id = $1", &[&org_id])
        .await?
    {
        let gate = Gate {
            id: row.try_get(0)?,
            org_id,
            zone_id: row.try_get(1)?,
            name: row.try_get::<_, &str>(2)?.into(),
            direction: parsed::<GateDirection>("gate direction", row.try_get(3)?)?,
            mode: parsed::<GateMode>("gate mode", row.try_get(4)?)?,
            open_ms: u32::try_from(row.try_get::<_, i32>(5)?).unwrap_or(3000),
            fail_mode: parsed::<FailMode>("gate fail mode", row.try_get(6)?)?,
        };
        gates.insert(gate.id, gate);
    }
    let mut rules = HashMap::new();
    for row in client
        .query(
            "SELECT r.id, r.weekdays, r.time_windows, r.escort_required, r.anti_passback, r.anti_passback_minutes,
                    coalesce((SELECT array_agg(z.zone_id) FROM access_rule_zones z WHERE z.org_id = r.org_id AND z.rule_id = r.id), '{}')
             FROM access_rules r WHERE r.org_id = $1",
            &[&org_id],
        )
        .await?
    {
        let rule = rule_from_row(&row)?;
        rules.insert(rule.id, rule);
    }
    let access_mode = parsed("access mode", org.try_get(3)?)?;
    Ok(Some(OrgSnapshot { org_id, access_mode, policy, gates, rules, zones }))
}

fn rule_from_row(row: &Row) -> Result<Rule, LoadError> {
    let weekdays: Vec<i16> = row.try_get(1)?;
    let windows: serde_json::Value = row.try_get(2)?;
    let windows: Vec<TimeWindow> = serde_json::from_value(windows.clone())
        .map_err(|_| LoadError::Data { what: "time windows", value: windows.to_string() })?;
    let schedule = Schedule::new(weekdays.iter().map(|d| i64::from(*d)), windows)
        .map_err(|e| LoadError::Data { what: "weekdays", value: e.to_string() })?;
    let zones: Vec<Uuid> = row.try_get(6)?;
    Ok(Rule {
        id: row.try_get(0)?,
        zones: zones.into_iter().collect::<HashSet<_>>(),
        schedule,
        escort_required: row.try_get(3)?,
        anti_passback: parsed::<AntiPassback>("anti-passback mode", row.try_get(4)?)?,
        anti_passback_minutes: row.try_get::<_, Option<i32>>(5)?.and_then(|m| u32::try_from(m).ok()),
    })
}

/// The columns `pass_from_row` reads, in order.
pub const PASS_COLUMNS: &str =
    "id, org_id, access_rule_id, holder_name, type, max_uses, group_size, uses_count, status,
     valid_from, valid_to, inside, last_gate_id, last_passage_at, escort_pass_id";

/// A pass as its row holds it. The step of the last QR code it entered with is not stored: any
/// code that could have been the one used at its last passage (a code is good in its step and the
/// next) is taken as used, so a code shown once opens no gate again after a restart (the holder's
/// next code comes at most one step later than it would have).
pub fn pass_from_row(row: &Row) -> Result<PassState, LoadError> {
    let count = |i| -> Result<u32, LoadError> { Ok(u32::try_from(row.try_get::<_, i32>(i)?).unwrap_or(0)) };
    let last_passage_at: Option<DateTime<Utc>> = row.try_get(13)?;
    Ok(PassState {
        id: row.try_get(0)?,
        org_id: row.try_get(1)?,
        rule_id: row.try_get(2)?,
        holder_name: row.try_get::<_, &str>(3)?.into(),
        pass_type: parsed::<PassType>("pass type", row.try_get(4)?)?,
        max_uses: row.try_get::<_, Option<i32>>(5)?.and_then(|m| u32::try_from(m).ok()),
        group_size: count(6)?,
        uses_count: count(7)?,
        status: parsed::<PassStatus>("pass status", row.try_get(8)?)?,
        valid_from: row.try_get::<_, DateTime<Utc>>(9)?,
        valid_to: row.try_get::<_, DateTime<Utc>>(10)?,
        inside: row.try_get(11)?,
        last_gate_id: row.try_get(12)?,
        last_passage_at,
        escort_pass_id: row.try_get(14)?,
        last_qr_step: last_passage_at
            .map(|at| portcullis_adapters::credential::qr_step(at.timestamp()).saturating_add(1)),
    })
}

/// Installs one organization's configuration in the engine (after a change through the API).
pub async fn reload_org(client: &impl GenericClient, engine: &Engine, org_id: Uuid) -> Result<(), LoadError> {
    match org_snapshot(client, org_id).await? {
        Some(snapshot) => engine.configure(snapshot).await?,
        None => engine.remove_org(org_id).await,
    }
    Ok(())
}

/// Brings pass rows left behind their check-ins up to date (see [`catch_up_passes`]).
///
/// A passage (an allowed entry or exit, not in free passage) is a check-in `allow` with reason
/// `allowed` or `revoked_exit`; it used the pass when it was an entry with reason `allowed`. A pass
/// row's `last_passage_at` is the time of the last passage it counts, and a pass's passages have
/// distinct, growing times (the pass actor sees to it), so the passages after it are exactly the
/// ones it misses. Only a row that still holds the marker it was read with is updated.
const CATCH_UP: &str = "WITH behind AS (
        SELECT p.org_id, p.id, p.last_passage_at AS marker, d.uses, d.inside, d.gate_id, d.at
        FROM passes p
        CROSS JOIN LATERAL (
            SELECT count(*) FILTER (WHERE c.direction = 'in' AND c.reason = 'allowed')::int AS uses,
                   (array_agg(c.direction ORDER BY c.decided_at DESC))[1] = 'in' AS inside,
                   (array_agg(c.gate_id ORDER BY c.decided_at DESC))[1] AS gate_id,
                   max(c.decided_at) AS at
            FROM checkins c
            WHERE c.org_id = p.org_id AND c.pass_id = p.id
              AND c.decision = 'allow' AND c.reason IN ('allowed', 'revoked_exit')
              AND (p.last_passage_at IS NULL OR c.decided_at > p.last_passage_at)
        ) d
        WHERE p.status IN ('active', 'suspended', 'revoked') AND d.at IS NOT NULL
          -- The same test, cheaper, first: counting every pass costs seconds at a million.
          AND EXISTS (SELECT 1 FROM checkins e WHERE e.org_id = p.org_id AND e.pass_id = p.id
                        AND (p.last_passage_at IS NULL OR e.decided_at > p.last_passage_at))
    )
    UPDATE passes p SET uses_count = p.uses_count + b.uses, inside = b.inside,
           last_gate_id = (SELECT g.id FROM gates g WHERE g.org_id = b.org_id AND g.id = b.gate_id),
           last_passage_at = b.at, updated_at = now(), version = p.version + 1
    FROM behind b
    WHERE p.org_id = b.org_id AND p.id = b.id AND p.last_passage_at IS NOT DISTINCT FROM b.marker";

/// Pass rows are checkpoints of the passes' state, written by the journal behind the check-ins
/// that change it (uses, inside, last gate and passage). An engine that stopped without writing
/// its last checkpoint (killed, or the machine lost) leaves rows behind: this counts the
/// check-ins after each live pass's row into it. Returns how many rows it brought up to date.
pub async fn catch_up_passes(client: &impl GenericClient) -> Result<u64, LoadError> {
    Ok(client.execute(CATCH_UP, &[]).await?)
}

/// Rows read per query while loading.
const LOAD_BATCH: i64 = 20_000;

/// Loads everything at start: configurations, passes that can still be presented, the
/// credential index, and zone occupancy from the journal.
pub async fn load_all(client: &impl GenericClient, engine: &Engine) -> Result<(usize, usize), LoadError> {
    let orgs: Vec<Uuid> = client
        .query("SELECT id FROM organizations", &[])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    for org_id in &orgs {
        reload_org(client, engine, *org_id).await?;
    }
    let caught_up = catch_up_passes(client).await?;
    if caught_up > 0 {
        tracing::warn!(
            passes = caught_up,
            "pass rows behind their check-ins (the engine stopped before its checkpoint) brought up to date"
        );
    }
    // Revoked passes stay loaded while valid: they may still need to leave. In batches, by id, so
    // that a million passes never sit in memory twice (rows and states) at once.
    let mut loaded = 0;
    let mut after = Uuid::nil();
    loop {
        let rows = client
            .query(
                &format!(
                    "SELECT {PASS_COLUMNS} FROM passes
                     WHERE status IN ('active', 'suspended', 'revoked') AND valid_to > now() AND id > $1
                     ORDER BY id LIMIT $2"
                ),
                &[&after, &LOAD_BATCH],
            )
            .await?;
        let passes = rows.iter().map(pass_from_row).collect::<Result<Vec<_>, _>>()?;
        let Some(last) = passes.last() else { break };
        after = last.id;
        loaded += passes.len();
        let full = rows.len() as i64 == LOAD_BATCH;
        drop(rows);
        engine.load_passes(passes);
        if !full {
            break;
        }
    }
    // Their credentials, in batches too (by id alone: a plan that cannot go quadratic whatever the
    // statistics say), those of passes not loaded skipped, indexed through each organization's actor.
    let mut after = Uuid::nil();
    loop {
        let rows = client
            .query(
                "SELECT id, org_id, pass_id, kind, lookup_hash, number_hash FROM credentials
                 WHERE revoked_at IS NULL AND id > $1 ORDER BY id LIMIT $2",
                &[&after, &LOAD_BATCH],
            )
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get(0)?;
        let full = rows.len() as i64 == LOAD_BATCH;
        let mut by_org: HashMap<Uuid, Vec<([u8; 32], CredentialRef)>> = HashMap::new();
        for row in &rows {
            let credential = CredentialRef {
                pass_id: row.try_get(2)?,
                kind: parsed::<CredentialKind>("credential kind", row.try_get(3)?)?,
            };
            if !engine.holds_pass(credential.pass_id) {
                continue;
            }
            let keys = by_org.entry(row.try_get(1)?).or_default();
            for hash in [Some(row.try_get::<_, &[u8]>(4)?), row.try_get::<_, Option<&[u8]>>(5)?].into_iter().flatten() {
                if let Ok(key) = <[u8; 32]>::try_from(hash) {
                    keys.push((key, credential));
                }
            }
        }
        drop(rows);
        for (org_id, credentials) in by_org {
            engine.index(org_id, credentials).await?;
        }
        if !full {
            break;
        }
    }
    for row in client
        .query(
            "SELECT g.zone_id, count(*) FROM passes p JOIN gates g ON g.org_id = p.org_id AND g.id = p.last_gate_id
             WHERE p.inside AND p.status IN ('active', 'suspended', 'revoked') GROUP BY g.zone_id",
            &[],
        )
        .await?
    {
        engine.set_occupancy(row.try_get(0)?, row.try_get(1)?);
    }
    Ok((orgs.len(), loaded))
}
