//! Loading the engine from the system of record: at start for every organization, and again
//! for one organization after each configuration change made through the API.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::GenericClient;
use portcullis_actors::decision::{Gate, OrgPolicy, PassState, Rule};
use portcullis_actors::domain::{AntiPassback, CredentialKind, GateDirection, GateMode, PassStatus, PassType};
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
        .query("SELECT id, zone_id, name, direction, mode, open_ms FROM gates WHERE org_id = $1", &[&org_id])
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

pub fn pass_from_row(row: &Row) -> Result<PassState, LoadError> {
    let count = |i| -> Result<u32, LoadError> { Ok(u32::try_from(row.try_get::<_, i32>(i)?).unwrap_or(0)) };
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
        last_passage_at: row.try_get(13)?,
        escort_pass_id: row.try_get(14)?,
        last_qr_step: None,
    })
}

/// The lookup keys of a pass's live credentials.
pub async fn pass_credentials(
    client: &impl GenericClient,
    org_id: Uuid,
    pass_ids: &[Uuid],
) -> Result<Vec<([u8; 32], CredentialRef)>, LoadError> {
    let rows = client
        .query(
            "SELECT id, pass_id, kind, lookup_hash, number_hash FROM credentials
             WHERE org_id = $1 AND pass_id = ANY($2) AND revoked_at IS NULL",
            &[&org_id, &pass_ids],
        )
        .await?;
    let mut entries = Vec::new();
    for row in rows {
        let credential = CredentialRef {
            credential_id: row.try_get(0)?,
            pass_id: row.try_get(1)?,
            kind: parsed::<CredentialKind>("credential kind", row.try_get(2)?)?,
        };
        for hash in [Some(row.try_get::<_, Vec<u8>>(3)?), row.try_get::<_, Option<Vec<u8>>>(4)?].into_iter().flatten() {
            if let Ok(key) = <[u8; 32]>::try_from(hash.as_slice()) {
                entries.push((key, credential));
            }
        }
    }
    Ok(entries)
}

/// Installs one organization's configuration in the engine (after a change through the API).
pub async fn reload_org(client: &impl GenericClient, engine: &Engine, org_id: Uuid) -> Result<(), LoadError> {
    match org_snapshot(client, org_id).await? {
        Some(snapshot) => engine.configure(snapshot).await?,
        None => engine.remove_org(org_id).await,
    }
    Ok(())
}

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
    // Revoked passes stay loaded while valid: they may still need to leave.
    let rows = client
        .query(
            &format!(
                "SELECT {PASS_COLUMNS} FROM passes
                 WHERE status IN ('active', 'suspended', 'revoked') AND valid_to > now()"
            ),
            &[],
        )
        .await?;
    let mut by_org: HashMap<Uuid, Vec<PassState>> = HashMap::new();
    for row in &rows {
        let pass = pass_from_row(row)?;
        by_org.entry(pass.org_id).or_default().push(pass);
    }
    let mut loaded = 0;
    for (org_id, passes) in by_org {
        let ids: Vec<Uuid> = passes.iter().map(|p| p.id).collect();
        let credentials = pass_credentials(client, org_id, &ids).await?;
        loaded += passes.len();
        for pass in passes {
            engine.add_pass(pass, Vec::new()).await?;
        }
        engine.index(org_id, credentials).await?;
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
