//! `cargo run --release -p portcullis-bench [-- --seconds N --connections C]`
//!
//! Measures, in one run on one machine, each figure next to its floor:
//! - engine: a decision through the engine (gate actor → pass actor → verdict), no HTTP, versus
//!   the floor of a bare actor round trip on the same runtime;
//! - http: `POST /gates/{gate}/decisions` over loopback with C keep-alive connections, versus the
//!   floor of `GET /health` on the same server, same connections, same duration.
//!
//! The ratios are what to compare across machines; the absolute numbers depend on this one. It
//! starts its own managed PostgreSQL in a temporary directory and seeds the demo organization.

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use portcullis::config::{Overrides, Settings};
use portcullis::db::Database;
use portcullis::demo;
use portcullis::engine::credentials::{CredentialInput, present};
use portcullis::startup::Application;
use portcullis_actors::domain::Direction;

type Error = Box<dyn std::error::Error>;

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

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn summary(label: &str, h: &Histogram<u64>, elapsed: Duration) -> String {
    format!(
        "{label:<28} n={:>8}  {:>9.0}/s  p50={:>7.1}µs  p99={:>7.1}µs  max={:>8.1}µs",
        h.len(),
        h.len() as f64 / elapsed.as_secs_f64(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    )
}

fn histogram() -> Result<Histogram<u64>, Error> {
    Ok(Histogram::<u64>::new_with_bounds(100, 60_000_000_000, 3)?)
}

fn main() -> Result<(), Error> {
    actix_web::rt::System::new().block_on(run())
}

async fn run() -> Result<(), Error> {
    let seconds = arg("--seconds", 5);
    let connections = arg("--connections", 16);
    let dir = tempfile::Builder::new().prefix("pcl-bench-").tempdir_in("/tmp")?;
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let overrides = Overrides { bind: "127.0.0.1:0".parse().ok(), data_dir: Some(dir.path().to_owned()) };
    let mut settings = Settings::load_from(None, &overrides, figment_env())?;
    settings.log.level = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into());
    portcullis::telemetry::init_logging(&settings.log);
    let secrets = demo::demo_secrets(None, dir.path())?;
    settings.auth.jwt_secret = Some(secrets.jwt_secret.clone());
    settings.auth.api_key_pepper = Some(secrets.api_key_pepper.clone());
    // No URL: the engine runs its own PostgreSQL under the temporary data dir, as `demo` does.
    let db = Database::open(&settings.database, dir.path()).await?;
    let creds = demo::seed(db.pool(), &secrets, None).await?;
    // The demo card pass allows 500 entries; the benchmark needs more.
    db.pool().get().await?.execute("UPDATE passes SET max_uses = 1000000000 WHERE type = 'multi'", &[]).await?;
    // The two-way gate, so the engine bench can alternate in and out.
    let gate = creds.gates.iter().find(|g| g.name == "Office door").cloned().ok_or("the demo has no Office door")?;
    let card = creds
        .passes
        .iter()
        .find(|p| p.credential.get("kind").is_some_and(|k| k == "card"))
        .and_then(|p| p.credential.get("value").cloned())
        .unwrap_or_default();
    let card = card.as_str().unwrap_or_default().to_owned();

    let app = Application::build(settings, db).await?;
    let engine = app.engine().clone();

    // ---- engine: decision vs bare actor round trip ----
    let gate_id = uuid::Uuid::try_parse(&gate.id.to_string())?;
    let credential = CredentialInput::Card { value: card.clone() };
    let echo = Echo.start();
    let window = Duration::from_secs(seconds.max(1));
    let (mut floor, mut exits, mut entries) = (histogram()?, histogram()?, histogram()?);
    let started = Instant::now();
    while started.elapsed() < window {
        let t = Instant::now();
        echo.send(Ping).await?;
        floor.record(t.elapsed().as_nanos() as u64)?;
    }
    let floor_elapsed = started.elapsed();
    // Alternate: an exit is decided in memory and journaled in the background; an entry uses up
    // one of the pass's entries, so it returns only once the journal has committed it.
    let started = Instant::now();
    let mut entering = false;
    while started.elapsed() < window {
        entering = !entering;
        let direction = if entering { Direction::In } else { Direction::Out };
        let t = Instant::now();
        let presented = present(&credential, &secrets.api_key_pepper, chrono::Utc::now())?;
        let outcome = engine.decide(gate_id, presented, Some(direction), "bench").await?;
        let elapsed = t.elapsed().as_nanos() as u64;
        if entering {
            entries.record(elapsed)?
        } else {
            exits.record(elapsed)?
        };
        if !outcome.decision.is_allow() {
            return Err(format!("unexpected verdict {:?}", outcome.reason).into());
        }
    }
    let decided_elapsed = started.elapsed();
    println!("engine (in process, one caller: gate actor -> pass actor -> verdict)");
    println!("  {}", summary("floor: actor round trip", &floor, floor_elapsed));
    println!("  {}", summary("exit (in memory)", &exits, decided_elapsed));
    println!("  {}", summary("entry (durable commit)", &entries, decided_elapsed));
    println!(
        "  ratio p50 exit/floor = {:.1}; entry p50 is the commit (fsync) of the journal",
        exits.value_at_quantile(0.5) as f64 / floor.value_at_quantile(0.5).max(1) as f64
    );

    // ---- http: decisions vs /health ----
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let server = actix_web::rt::spawn(app.run_until_stopped());
    let health = load(&base, "/health", None, connections, window).await?;
    let path = format!("/api/v1/gates/{}/decisions", gate.id);
    let body = serde_json::json!({"credential": {"kind": "card", "value": card}, "direction": "out"});
    let decisions = load(&base, &path, Some((&gate.device_key, body)), connections, window).await?;
    println!("http (loopback, {connections} keep-alive connections; exits: not consuming, journaled in groups)");
    println!("  {}", summary("floor: GET /health", &health.0, health.1));
    println!("  {}", summary("POST decisions", &decisions.0, decisions.1));
    println!(
        "  ratio p50 decision/health = {:.2}, throughput decision/health = {:.2}",
        decisions.0.value_at_quantile(0.5) as f64 / health.0.value_at_quantile(0.5).max(1) as f64,
        (decisions.0.len() as f64 / decisions.1.as_secs_f64())
            / (health.0.len() as f64 / health.1.as_secs_f64()).max(1.0)
    );
    handle.stop(true).await;
    server.await??;
    Ok(())
}

/// An environment prefix nobody sets: the bench runs on defaults whatever the shell holds.
fn figment_env() -> portcullis::config::figment_env::Env {
    portcullis::config::figment_env::Env::prefixed("PORTCULLIS_BENCH_UNSET__")
}

async fn load(
    base: &str,
    path: &str,
    post: Option<(&str, serde_json::Value)>,
    connections: u64,
    window: Duration,
) -> Result<(Histogram<u64>, Duration), Error> {
    let started = Instant::now();
    let workers = (0..connections).map(|_| {
        let url = format!("{base}{path}");
        let post = post.clone().map(|(k, b)| (k.to_owned(), b));
        async move {
            let client = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
            let mut h = histogram()?;
            while started.elapsed() < window {
                let t = Instant::now();
                let mut response = match &post {
                    Some((key, body)) => {
                        client
                            .post(&url)
                            .insert_header(("authorization", format!("Bearer {key}")))
                            .send_json(body)
                            .await?
                    }
                    None => client.get(&url).send().await?,
                };
                let _ = response.body().await?;
                if !response.status().is_success() {
                    return Err::<_, Error>(format!("{} answered {}", url, response.status()).into());
                }
                h.record(t.elapsed().as_nanos() as u64)?;
            }
            Ok(h)
        }
    });
    let mut total = histogram()?;
    for h in join_all(workers).await {
        total.add(h?)?;
    }
    Ok((total, started.elapsed()))
}
