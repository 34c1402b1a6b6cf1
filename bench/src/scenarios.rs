//! The scenarios: each builds what it needs through the API, measures its floors and the engine
//! in the same run, prints a table and returns its report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use portcullis::engine::credentials::{CredentialInput, present};
use portcullis_actors::domain::Direction;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::floor::{self, FloorData, Machine, Tally};
use crate::loadgen::{self, Measured, Plan, histogram};
use crate::report::{Report, Target};
use crate::{Bench, Error, Options};

/// A zone with gates, a rule opening it always, a device key bound to every gate, and passes
/// with one card each, built through the API as an organization administrator would.
pub(crate) struct Site {
    pub(crate) org_id: Uuid,
    pub(crate) gates: Vec<Uuid>,
    pub(crate) rule: Uuid,
    pub(crate) device_key: String,
    /// Card values (`facility:number`) with their pass.
    pub(crate) cards: Vec<(String, Uuid)>,
}

async fn call(client: &awc::Client, url: String, token: &str, body: Value) -> Result<Value, Error> {
    let mut response =
        client.post(url.clone()).insert_header(("authorization", format!("Bearer {token}"))).send_json(&body).await?;
    let bytes = response.body().limit(1 << 20).await?;
    if !response.status().is_success() {
        return Err(format!("POST {url}: {} {}", response.status(), String::from_utf8_lossy(&bytes)).into());
    }
    Ok(serde_json::from_slice(&bytes)?)
}

fn text<'v>(value: &'v Value, key: &str) -> Result<&'v str, Error> {
    Ok(value.get(key).and_then(Value::as_str).ok_or_else(|| format!("an answer without `{key}`: {value}"))?)
}

fn id(value: &Value) -> Result<Uuid, Error> {
    Ok(Uuid::try_parse(text(value, "id")?)?)
}

/// Signs the demo organization's administrator in; returns the access token.
pub(crate) async fn login(bench: &Bench) -> Result<String, Error> {
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let login = json!({"email": bench.demo.admin.email, "password": bench.demo.admin.password});
    let mut response = client.post(format!("{}/api/v1/auth/login", bench.base)).send_json(&login).await?;
    let session: Value = response.json().await?;
    Ok(text(&session, "access_token")?.to_owned())
}

impl Site {
    pub(crate) async fn build(
        bench: &Bench,
        name: &str,
        gates: usize,
        passes: usize,
        facility: u32,
    ) -> Result<Site, Error> {
        let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        let token = login(bench).await?;
        let org_id = bench.demo.org_id;
        let org = format!("{}/api/v1/orgs/{org_id}", bench.base);
        let zone = id(&call(&client, format!("{org}/zones"), &token, json!({"name": name})).await?)?;
        let mut gate_ids = Vec::with_capacity(gates);
        for g in 0..gates {
            let body = json!({"name": format!("{name} gate {g}"), "zone_id": zone, "direction": "both"});
            gate_ids.push(id(&call(&client, format!("{org}/gates"), &token, body).await?)?);
        }
        let rule = json!({"name": format!("{name} rule"), "zone_ids": [zone]});
        let rule = id(&call(&client, format!("{org}/access-rules"), &token, rule).await?)?;
        let key = json!({"name": format!("{name} turnstiles"), "scopes": ["gate:decide"], "gate_ids": gate_ids});
        let key = call(&client, format!("{org}/api-keys"), &token, key).await?;
        let device_key = text(&key, "key")?.to_owned();
        let now = chrono::Utc::now();
        let mut cards = Vec::with_capacity(passes);
        for p in 0..passes {
            let body = json!({
                "holder_name": format!("Visitor {p}"),
                "access_rule_id": rule,
                "type": "multi",
                "max_uses": 2_000_000_000,
                "valid_from": (now - chrono::Duration::hours(1)).to_rfc3339(),
                "valid_to": (now + chrono::Duration::hours(8)).to_rfc3339(),
                "credential": {"kind": "card", "format": "h10301", "facility_code": facility, "card_number": p + 1},
            });
            let pass = id(&call(&client, format!("{org}/passes"), &token, body).await?)?;
            cards.push((format!("{facility}:{}", p + 1), pass));
        }
        Ok(Site { org_id, gates: gate_ids, rule, device_key, cards })
    }

    /// The floor's copy of the site: the same key, gates and credentials in DashMaps.
    pub(crate) fn floor_data(&self, bench: &Bench) -> Result<Arc<FloorData>, Error> {
        let data = FloorData {
            pepper: bench.secrets.api_key_pepper.clone(),
            org_id: self.org_id,
            keys: DashMap::from_iter([(self.device_key.clone(), ())]),
            gates: self.gates.iter().map(|g| (*g, self.org_id)).collect(),
            credentials: DashMap::new(),
        };
        for (card, pass) in &self.cards {
            let presented = present(&CredentialInput::Card { value: card.clone() }, &data.pepper, chrono::Utc::now())?;
            for lookup in presented.lookups {
                data.credentials.insert(lookup, (*pass, format!("Visitor of {card}")));
            }
        }
        Ok(Arc::new(data))
    }
}

// ---------------------------------------------------------------------------------------------
// engine

struct Ping;
impl Message for Ping {
    type Result = u64;
}
struct Echo;
impl Actor for Echo {
    type Context = Context<Self>;
}
impl Handler<Ping> for Echo {
    type Result = u64;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> u64 {
        1
    }
}

pub(crate) fn figures(h: &hdrhistogram::Histogram<u64>, elapsed: Duration) -> loadgen::Figures {
    Measured { latency: h.clone(), elapsed, errors: 0, first_error: None }.figures()
}

/// One caller in process: exits from memory and entries durable before their answer, against a
/// bare actor round trip and one commit of the same PostgreSQL.
pub async fn engine(bench: &Bench, options: &Options) -> Result<Report, Error> {
    let site = Site::build(bench, "Engine bench", 1, 1, 31).await?;
    let (gate_id, (card, _)) = (*site.gates.first().ok_or("no gate")?, site.cards.first().cloned().ok_or("no card")?);
    let window = Duration::from_secs(options.seconds.max(1));
    let mut report = Report::new("engine", json!({"seconds": options.seconds}));
    println!("engine (in process, one caller)");

    let echo = Echo.start();
    let mut floor = histogram()?;
    let started = Instant::now();
    while started.elapsed() < window {
        let t = Instant::now();
        echo.send(Ping).await?;
        floor.record(t.elapsed().as_nanos() as u64)?;
    }
    let round_trip = report.row("one", "floor: bare actor round trip", figures(&floor, started.elapsed()));

    // One commit: one check-in row inserted and committed, one after another.
    let mut commits = histogram()?;
    let mut client = bench.pool.get().await?;
    let insert = client
        .prepare(
            "INSERT INTO checkins (id, org_id, gate_id, direction, decision, reason, source, decided_at)
             VALUES ($1, $2, $3, 'in', 'deny', 'unknown_credential', 'floor', now())",
        )
        .await?;
    let started = Instant::now();
    while started.elapsed() < window {
        let t = Instant::now();
        let tx = client.transaction().await?;
        tx.execute(&insert, &[&Uuid::now_v7(), &site.org_id, &gate_id]).await?;
        tx.commit().await?;
        commits.record(t.elapsed().as_nanos() as u64)?;
    }
    drop(client);
    let commit = report.row("one", "floor: one PostgreSQL commit", figures(&commits, started.elapsed()));

    // Alternate: an exit is decided in memory and journaled in the background; an entry uses up
    // one of the pass's entries, so it returns only once the journal has committed it.
    let credential = CredentialInput::Card { value: card };
    let (mut exits, mut entries) = (histogram()?, histogram()?);
    let started = Instant::now();
    let mut entering = false;
    while started.elapsed() < window {
        entering = !entering;
        let direction = if entering { Direction::In } else { Direction::Out };
        let t = Instant::now();
        let presented = present(&credential, &bench.secrets.api_key_pepper, chrono::Utc::now())?;
        let outcome =
            bench.engine.decide(gate_id, presented, Some(direction), portcullis_actors::domain::Source::Api).await?;
        let elapsed = t.elapsed().as_nanos() as u64;
        if !outcome.decision.is_allow() {
            return Err(format!("unexpected verdict {:?}", outcome.reason).into());
        }
        if entering {
            entries.record(elapsed)?
        } else {
            exits.record(elapsed)?
        };
    }
    let elapsed = started.elapsed();
    let exit = report.row("one", "exit (in memory)", figures(&exits, elapsed));
    let entry = report.row("one", "entry (durable commit)", figures(&entries, elapsed));
    report.target(Target::at_most("entry p50 / one commit p50", entry.p50_us / commit.p50_us.max(1e-9), 2.0));
    println!("  exit p50 is {:.1}× a bare actor round trip", exit.p50_us / round_trip.p50_us.max(1e-9));
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// decisions

/// One load shape: which gate and which card each request of each connection presents.
struct Shape {
    name: &'static str,
    expect: &'static str,
    /// (gate, card value, direction) for request `i` of connection `c`.
    request: Box<dyn Fn(usize, usize) -> (Uuid, String, &'static str)>,
}

/// The shapes of `decisions`, in the order they run.
pub const SHAPES: [&str; 3] = ["deny-32", "deny-hot", "allow-32"];

pub async fn decisions(bench: &Bench, options: &Options) -> Result<Report, Error> {
    let connections = options.connections.max(1);
    let site = Site::build(bench, "Decision bench", 32, connections, 41).await?;
    let floor_data = site.floor_data(bench)?;
    let floor = floor::start(floor_data, bench.pool.clone())?;
    let floor_port = floor.port;
    let mut report = Report::new(
        "decisions",
        json!({"seconds": options.seconds, "rounds": options.rounds, "connections": connections, "load_threads": options.threads, "gates": 32, "shapes": options.shapes}),
    );
    println!(
        "decisions (loopback HTTP, {connections} keep-alive connections, {} load threads, {} s each)",
        options.threads, options.seconds
    );
    let gates = site.gates.clone();
    let cards = site.cards.clone();
    let spread = {
        let gates = gates.clone();
        move |c: usize, i: usize| gates.get((c + i) % gates.len()).copied().unwrap_or_default()
    };
    let hot = gates.first().copied().unwrap_or_default();
    let unknown = |c: usize, i: usize| format!("42:{}", (c * 131 + i) % 60_000 + 1);
    let deny32 = Shape {
        name: "deny-32",
        expect: "\"decision\":\"deny\"",
        request: Box::new({
            let spread = spread.clone();
            move |c, i| (spread(c, i), unknown(c, i), "in")
        }),
    };
    let deny1 = Shape {
        name: "deny-hot",
        expect: "\"decision\":\"deny\"",
        request: Box::new(move |c, i| (hot, unknown(c, i), "in")),
    };
    let allow32 = Shape {
        name: "allow-32",
        expect: "\"decision\":\"allow\"",
        request: Box::new(move |c, i| {
            (spread(c, i), cards.get(c % cards.len().max(1)).map(|c| c.0.clone()).unwrap_or_default(), "in")
        }),
    };

    let plan = |shape: &Shape, port: u16, prefix: &str| Plan {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        threads: options.threads,
        duration: Duration::from_secs(options.seconds.max(1)),
        warmup: Duration::from_secs(1),
        requests: (0..connections)
            .map(|c| {
                (0..32)
                    .map(|i| {
                        let (gate, card, direction) = (shape.request)(c, i);
                        let body = json!({"credential": {"kind": "card", "value": card}, "direction": direction});
                        loadgen::post(&format!("{prefix}/gates/{gate}/decisions"), &site.device_key, &body)
                    })
                    .collect()
            })
            .collect(),
        expect: shape.expect,
    };
    // The generator blocks the thread it runs on: never the one driving the engine and floors.
    // Whatever a run left queued is committed before the next one starts.
    let settle = async || -> Result<(), Error> {
        floor.flush().await?;
        bench.engine.flush().await?;
        Ok(())
    };
    async fn measure(plan: Plan) -> Result<Measured, Error> {
        let measured = tokio::task::spawn_blocking(move || loadgen::run(plan).map_err(|e| e.to_string())).await??;
        if let Some(error) = &measured.first_error {
            println!("  ({} errors; first: {error})", measured.errors);
        }
        Ok(measured)
    }
    // Each shape's runs alternate, round after round, and each figure is the sum of its rounds:
    // a floor and the engine see the same moments of the machine.
    let runs = |shape: &'static str| -> Vec<(&'static str, u16, &'static str)> {
        let mut runs = match shape {
            "deny-32" => vec![
                ("floor: HTTP (JSON + DashMap)", floor_port, "/http"),
                ("floor: journaled (group commit)", floor_port, "/journaled"),
                ("database way (SELECT + INSERT)", floor_port, "/database"),
            ],
            "deny-hot" => vec![("floor: journaled (group commit)", floor_port, "/journaled")],
            _ => vec![
                ("floor: durable admit (group commit)", floor_port, "/durable"),
                ("database way (SELECT + INSERT)", floor_port, "/database"),
            ],
        };
        runs.push(("portcullis", bench.port, "/api/v1"));
        runs
    };
    // What each run's group-commit writer did (the engine's journal, or the floor's writer):
    // how big its groups were and how much of the run it spent committing.
    let tally = async |prefix: &str| -> Result<Option<Tally>, Error> {
        Ok(match prefix {
            "/api/v1" => Some(engine_commits(bench).await?),
            "/journaled" | "/durable" => Some(floor.commits()),
            _ => None,
        })
    };
    let mut figures = std::collections::HashMap::new();
    for shape in [&deny32, &deny1, &allow32].into_iter().filter(|s| options.shapes.iter().any(|n| n == s.name)) {
        let runs = runs(shape.name);
        let mut totals: Vec<Option<Measured>> = runs.iter().map(|_| None).collect();
        let mut commits: Vec<(Tally, Duration)> = runs.iter().map(|_| (Tally::default(), Duration::ZERO)).collect();
        // Each run's busy cores, summed over its rounds (warm-up included: the load is the same).
        let mut busy: Vec<f64> = runs.iter().map(|_| 0.0).collect();
        for round in 0..options.rounds.max(1) {
            for at in order(runs.len(), round) {
                let (Some((_, port, prefix)), Some(total)) = (runs.get(at), totals.get_mut(at)) else { continue };
                settle().await?;
                let (before, started, machine) = (tally(prefix).await?, Instant::now(), Machine::read());
                let measured = measure(plan(shape, *port, prefix)).await?;
                if let Some(sum) = busy.get_mut(at) {
                    *sum += Machine::read().busy_cores_since(machine);
                }
                if let (Some(before), Some(after), Some((sum, took))) =
                    (before, tally(prefix).await?, commits.get_mut(at))
                {
                    *sum = *sum + after.since(before);
                    *took += started.elapsed();
                }
                match total {
                    Some(total) => total.add(measured)?,
                    None => *total = Some(measured),
                }
            }
        }
        let rounds = options.rounds.max(1) as f64;
        for (((what, _, _), total), busy) in runs.iter().zip(totals).zip(busy) {
            let total = total.ok_or("no measurement")?;
            let row = report.row(shape.name, what, total.figures());
            // The whole machine's CPU a request: the load generator's, the server's and PostgreSQL's.
            let (cores, us) = (busy / rounds, busy / rounds * 1e6 / row.per_second.max(1e-9));
            println!(
                "  {:<10} {what:<34} machine: {cores:.2} of its cores busy, {us:.1} µs of CPU a request",
                shape.name
            );
            report.rows_extra.push(
                json!({"shape": shape.name, "what": what, "machine": {"busy_cores": cores, "cpu_us_a_request": us}}),
            );
            figures.insert((shape.name, *what), row);
        }
        for ((what, _, prefix), (tally, took)) in runs.iter().zip(commits) {
            if took.is_zero() {
                continue;
            }
            // Every run through a group-commit writer commits: none seen means the tally is wrong.
            if tally.groups < 1.0 {
                return Err(format!("{} {what}: no commit of its journal was seen", shape.name).into());
            }
            let busy = tally.seconds / took.as_secs_f64().max(1e-9);
            let records = if *prefix == "/api/v1" && shape.name == "allow-32" {
                "records a group (an admit's check-in and its pass's passage)"
            } else {
                "records a group"
            };
            let (records_a_group, a_commit) = (tally.a_group(tally.records), tally.a_group(tally.seconds));
            let (ran, waited) = (tally.a_group(tally.backend.ran), tally.a_group(tally.backend.waited));
            println!(
                "  {:<10} {what:<34} journal: {records_a_group:.1} {records}, committing {:.0} % of its runs; a commit {:.2} ms: its PostgreSQL process on a core {:.2}, waiting for one {:.2}, the rest (WAL flush, round trip) {:.2}",
                shape.name,
                busy * 100.0,
                a_commit * 1e3,
                ran * 1e3,
                waited * 1e3,
                (a_commit - ran - waited).max(0.0) * 1e3,
            );
            report.rows_extra.push(json!({"shape": shape.name, "what": what, "journal": {
                "groups": tally.groups, "records_a_group": records_a_group, "ms_a_group": a_commit * 1e3,
                "backend_ran_ms_a_group": ran * 1e3, "backend_waited_ms_a_group": waited * 1e3,
                "committing_share": busy}}));
        }
    }
    let get = |shape: &str, what: &str| {
        figures.get(&(shape, what)).cloned().ok_or_else(|| format!("no figures for {shape} {what}"))
    };
    let ratio = |a: &loadgen::Figures, b: &loadgen::Figures| a.per_second / b.per_second.max(1e-9);
    // A shape that ran has all its figures: one missing is an error, not a target left out.
    let ran = |shape: &str| options.shapes.iter().any(|n| n == shape);
    let mut errors = 0;
    if ran("deny-32") {
        let (deny, floor_journaled) =
            (get("deny-32", "portcullis")?, get("deny-32", "floor: journaled (group commit)")?);
        report.target(Target::at_least("deny-32 throughput / journaled floor", ratio(&deny, &floor_journaled), 0.85));
        let floor_http = get("deny-32", "floor: HTTP (JSON + DashMap)")?;
        let database_deny = get("deny-32", "database way (SELECT + INSERT)")?;
        println!(
            "  deny-32 is {:.2}× the bare HTTP floor and {:.1}× the database way",
            ratio(&deny, &floor_http),
            ratio(&deny, &database_deny)
        );
        errors += deny.errors;
    }
    if ran("deny-hot") {
        let (hot_deny, hot_floor) =
            (get("deny-hot", "portcullis")?, get("deny-hot", "floor: journaled (group commit)")?);
        report.target(Target::at_least("deny-hot throughput / journaled floor", ratio(&hot_deny, &hot_floor), 0.5));
        errors += hot_deny.errors;
    }
    if ran("allow-32") {
        let (allow, durable_floor) =
            (get("allow-32", "portcullis")?, get("allow-32", "floor: durable admit (group commit)")?);
        report.target(Target::at_least(
            "allow-32 throughput / durable-admit floor",
            ratio(&allow, &durable_floor),
            0.85,
        ));
        let database_allow = get("allow-32", "database way (SELECT + INSERT)")?;
        println!("  allow-32 is {:.1}× the database way", ratio(&allow, &database_allow));
        errors += allow.errors;
    }
    report.target(Target::at_most("errors", errors as f64, 0.0));
    floor.handle.stop(true).await;
    Ok(report)
}

/// The engine's `/metrics` at `base`, as text.
pub(crate) async fn metrics(base: &str) -> Result<String, Error> {
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let mut response = client.get(format!("{base}/metrics")).send().await?;
    Ok(String::from_utf8(response.body().limit(16 << 20).await?.to_vec())?)
}

/// The value of the unlabelled series `name` in a `/metrics` text.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The engine journal's [`Tally`] so far, from its `/metrics` (nothing committed yet: zeros) and
/// its connection's server process (found by its `application_name`).
async fn engine_commits(bench: &Bench) -> Result<Tally, Error> {
    let text = metrics(&bench.base).await?;
    let value = |name: &str| metric(&text, name).unwrap_or(0.0);
    // One journal connection (a second, while one is replaced: neither is counted).
    let rows = bench
        .pool
        .get()
        .await?
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
            &[&portcullis::engine::journal::APPLICATION_NAME],
        )
        .await?;
    let backend: Option<i32> = match rows.as_slice() {
        [row] => Some(row.try_get(0)?),
        _ => None,
    };
    let backend = backend.and_then(|pid| u32::try_from(pid).ok()).map(floor::Scheduled::of).unwrap_or_default();
    Ok(Tally {
        groups: value("portcullis_journal_commit_seconds_count"),
        records: value("portcullis_journal_batch_records_sum"),
        seconds: value("portcullis_journal_commit_seconds_sum"),
        backend,
    })
}

/// The order of a shape's `runs` in a `round`: as listed, then backwards, so that no run always
/// comes first, or always after the same other one.
fn order(runs: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..runs).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}
