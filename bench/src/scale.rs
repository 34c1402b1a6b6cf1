//! `scale`: how the engine holds N active passes (one card each) in one organization: the time
//! from process start to serving, its resident memory once loaded, and the latency of decisions
//! over those passes (exits of passes picked at random: each a pass actor activated from the
//! dormant state, decided in memory, journaled).
//!
//! The passes are written straight into the bench's PostgreSQL (as an import would), then an
//! engine is started in a child process (this binary, `__engine-child`) on the same cluster, so
//! its memory is its own. Sizes grow (`--passes 10000,100000,1000000`); each starts a new child.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portcullis::engine::credentials::card_keys;
use portcullis_actors::domain::CardFormat;
use serde_json::json;
use uuid::Uuid;

use crate::floor::Scheduled;
use crate::loadgen::{self, Plan};
use crate::report::{Report, Target};
use crate::scenarios::Site;
use crate::{Bench, Error, Options};

/// Card numbers per facility in the 37-bit format (h10304) the passes use.
const PER_FACILITY: u64 = 500_000;

fn card(i: u64) -> (u64, u64) {
    (1_000 + i / PER_FACILITY, i % PER_FACILITY + 1)
}

/// Writes passes `from..to` with one card each, in batches of one `unnest` insert per table.
async fn seed(bench: &Bench, site: &Site, rule: Uuid, from: u64, to: u64) -> Result<(), Error> {
    let client = bench.pool.get().await?;
    let now = chrono::Utc::now();
    let (valid_from, valid_to) = (now - chrono::Duration::hours(1), now + chrono::Duration::days(30));
    let mut start = from;
    while start < to {
        let end = (start + 20_000).min(to);
        let n = (end - start) as usize;
        let (mut ids, mut names, mut cred_ids, mut lookups, mut numbers) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for i in start..end {
            let (facility, number) = card(i);
            let (full, by_number) =
                card_keys(&bench.secrets.api_key_pepper, CardFormat::H10304, Some(facility), number)?;
            ids.push(Uuid::now_v7());
            names.push(format!("Visitor {i}"));
            cred_ids.push(Uuid::now_v7());
            lookups.push(full.to_vec());
            numbers.push(by_number.to_vec());
        }
        client
            .execute(
                "INSERT INTO passes (id, org_id, access_rule_id, holder_name, type, max_uses, group_size, valid_from, valid_to)
                 SELECT u.id, $2, $3, u.name, 'multi', 1000000000, 1, $4, $5 FROM unnest($1::uuid[], $6::text[]) AS u(id, name)",
                &[&ids, &site.org_id, &rule, &valid_from, &valid_to, &names],
            )
            .await?;
        client
            .execute(
                "INSERT INTO credentials (id, org_id, pass_id, kind, card_format, lookup_hash, number_hash, display_hint)
                 SELECT u.id, $2, u.pass, 'card', 'h10304', u.lookup, u.number, '…00'
                 FROM unnest($1::uuid[], $3::uuid[], $4::bytea[], $5::bytea[]) AS u(id, pass, lookup, number)",
                &[&cred_ids, &site.org_id, &ids, &lookups, &numbers],
            )
            .await?;
        start = end;
    }
    // As after any import: statistics for the planner.
    client.batch_execute("ANALYZE passes; ANALYZE credentials").await?;
    Ok(())
}

/// A child engine, killed when dropped.
pub(crate) struct ChildEngine {
    child: Child,
    pub(crate) port: u16,
    /// Its device listener (turnstiles only, workers of their own).
    pub(crate) device_port: u16,
    /// From spawning the process to serving (the engine loaded).
    startup: Duration,
    /// What the child measured of it: the engine's load alone.
    load: Duration,
}

impl Drop for ChildEngine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildEngine {
    pub(crate) fn start(data_dir: &std::path::Path) -> Result<Self, Error> {
        ChildEngine::spawn("__engine-child", data_dir)
    }

    /// The bare broadcast floor's viewers alone, in a process of their own (see
    /// [`crate::floor::broadcast_child`]), so that its memory can be read as the engine's is.
    pub(crate) fn broadcast_floor() -> Result<Self, Error> {
        ChildEngine::spawn("__broadcast-child", std::path::Path::new("."))
    }

    /// Viewers on a lean WebSocket, in a process of their own (see
    /// [`crate::floor::lean_broadcast_child`]): what a held viewer needs without an HTTP dispatcher.
    pub(crate) fn lean_broadcast_floor() -> Result<Self, Error> {
        ChildEngine::spawn("__lean-broadcast-child", std::path::Path::new("."))
    }

    fn spawn(mode: &str, data_dir: &std::path::Path) -> Result<Self, Error> {
        let started = Instant::now();
        let mut child = Command::new(std::env::current_exe()?)
            .arg(mode)
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout from the child engine")?;
        let mut stdout = BufReader::new(stdout);
        // Its log lines (a warning at start, say) come before `READY` on the same output.
        let mut line = String::new();
        while !line.starts_with("READY ") {
            line.clear();
            if stdout.read_line(&mut line)? == 0 {
                return Err("the child engine ended before it was ready".into());
            }
            if !line.starts_with("READY ") {
                eprint!("  child: {line}");
            }
        }
        let startup = started.elapsed();
        // Whatever it logs afterwards is read (and dropped), so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        // `READY <port> <load ms> <device port>`
        let mut words = line.split_whitespace().skip(1);
        let port = words.next().and_then(|p| p.parse().ok()).ok_or_else(|| format!("the child said `{line}`"))?;
        let load = Duration::from_millis(words.next().and_then(|p| p.parse().ok()).unwrap_or(0));
        let device_port = words.next().and_then(|p| p.parse().ok()).unwrap_or(port);
        Ok(ChildEngine { child, port, device_port, startup, load })
    }

    /// What the child's threads named `name` have had of the cores so far, added up, and how many
    /// they are (threads are named for what they do).
    pub(crate) fn scheduled(&self, name: &str) -> (Scheduled, usize) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return (Scheduled::default(), 0);
        };
        tasks
            .flatten()
            .filter(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == name))
            .fold((Scheduled::default(), 0), |(sum, threads), task| {
                (sum + Scheduled::read(&task.path().join("schedstat")), threads + 1)
            })
    }

    pub(crate) fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

/// The child: serve the bench's database (attached, not managed) until killed; say when ready.
pub async fn child(data_dir: std::path::PathBuf) -> Result<(), Error> {
    let started = Instant::now();
    let mut settings = crate::settings(&data_dir)?;
    settings.server.device_bind = "127.0.0.1:0".parse().ok();
    portcullis::telemetry::init_logging(&settings.log);
    let db = portcullis::db::Database::open_or_attach(&settings.database, &data_dir).await?;
    let secrets = portcullis::demo::demo_secrets(None, &data_dir)?;
    settings.auth.jwt_secret = Some(secrets.jwt_secret);
    settings.auth.api_key_pepper = Some(secrets.api_key_pepper);
    // A spool of its own: the parent's engine holds the data dir's.
    settings.data_dir = data_dir.join("child");
    let app = portcullis::startup::Application::build(settings, db).await?;
    println!("READY {} {} {}", app.port(), started.elapsed().as_millis(), app.device_port().unwrap_or(app.port()));
    app.run_until_stopped().await?;
    Ok(())
}

pub async fn scale(bench: &Bench, options: &Options) -> Result<Report, Error> {
    let site = Site::build(bench, "Scale bench", 1, 0, 0).await?;
    let gate = *site.gates.first().ok_or("no gate")?;
    let rule = site.rule;
    let mut report = Report::new("scale", json!({"seconds": options.seconds, "passes": options.passes}));
    println!("scale (one organization, N active passes with one card each; exits of random passes, 8 connections)");
    let mut seeded = 0;
    let mut first_p50: Option<f64> = None;
    for &size in &options.passes {
        let started = Instant::now();
        seed(bench, &site, rule, seeded, size).await?;
        seeded = seeded.max(size);
        let seeding = started.elapsed();
        let engine = ChildEngine::start(&bench.data_dir)?;
        let loaded_rss = engine.rss_bytes();
        let requests = (0..8)
            .map(|c| {
                (0..64)
                    .map(|i| {
                        let n = (c as u64 * 7_919 + i * 104_729) % size;
                        let (facility, number) = card(n);
                        let body = json!({"credential": {"kind": "card", "value": format!("{facility}:{number}")}, "direction": "out"});
                        loadgen::post(&format!("/api/v1/gates/{gate}/decisions"), &site.device_key, &body)
                    })
                    .collect()
            })
            .collect();
        let plan = Plan {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], engine.port)),
            threads: 1,
            duration: Duration::from_secs(options.seconds.max(1)),
            warmup: Duration::from_millis(500),
            requests,
            expect: "\"decision\":\"allow\"",
        };
        let measured = tokio::task::spawn_blocking(move || loadgen::run(plan).map_err(|e| e.to_string())).await??;
        if let Some(error) = &measured.first_error {
            println!("  ({} errors; first: {error})", measured.errors);
        }
        let after_rss = engine.rss_bytes();
        let label: &'static str = match size {
            10_000 => "10k passes",
            100_000 => "100k passes",
            1_000_000 => "1M passes",
            _ => "passes",
        };
        let figures = report.row(label, "exits of random passes", measured.figures());
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!(
            "  {label:<10} seeded in {:.1} s; start-up {:.1} s (load {:.1} s); resident {:.0} MiB after start ({:.0} bytes a pass), {:.0} MiB after the decisions",
            seeding.as_secs_f64(),
            engine.startup.as_secs_f64(),
            engine.load.as_secs_f64(),
            mib(loaded_rss),
            loaded_rss as f64 / size as f64,
            mib(after_rss)
        );
        report.rows_extra.push(json!({
            "passes": size, "startup_s": engine.startup.as_secs_f64(), "load_s": engine.load.as_secs_f64(),
            "rss_after_start_bytes": loaded_rss, "rss_after_decisions_bytes": after_rss,
        }));
        let p50 = *first_p50.get_or_insert(figures.p50_us);
        if size >= 1_000_000 {
            report.target(Target::at_most("1M passes: resident MiB after start", mib(loaded_rss), 1024.0));
            report.target(Target::at_most("1M passes: start-up seconds", engine.startup.as_secs_f64(), 15.0));
            report.target(Target::at_most("1M passes: decision p50 / smallest size's p50", figures.p50_us / p50, 1.1));
        }
        drop(engine);
    }
    Ok(report)
}
