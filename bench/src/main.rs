//! `cargo run --release -p portcullis-bench [-- SCENARIO… --seconds N --connections C --threads T --rounds R]`
//! (`decisions` also takes `--shapes deny-32,deny-hot,allow-32`, to run only some)
//!
//! Each figure is measured next to its floor, in the same run, on the same machine; the ratios
//! are what compare across machines. Scenarios (all of them when none is named):
//!
//! - `engine`: one caller, in process: an exit decided in memory and an entry durable before its
//!   answer, against a bare actor round trip and one commit of the same PostgreSQL.
//! - `decisions`: `POST /api/v1/gates/{gate}/decisions` over loopback from C keep-alive
//!   connections (a load generator on threads of its own), on three shapes: unknown cards spread
//!   over 32 gates (deny), the same on one hot gate, and consuming entries of C passes over 32
//!   gates (allow, durable before the answer). Floors (see `floor`): the bare HTTP floor, the
//!   journaled floor, the durable-admit floor, and the database way.
//!
//! Every scenario prints its table and writes a JSON report to `bench/reports/<scenario>.json`
//! (`--reports DIR` to change). The bench starts its own managed PostgreSQL in a temporary
//! directory and seeds the demo organization, then builds what a scenario needs through the API.

mod fanout;
mod floor;
mod loadgen;
mod report;
mod scale;
mod scenarios;
mod viewers;

use std::path::PathBuf;

use portcullis::config::{Overrides, Settings};
use portcullis::db::Database;
use portcullis::demo;
use portcullis::startup::Application;

type Error = Box<dyn std::error::Error>;

// The engine's allocator, for the engine this bench runs in process and in its child.
#[global_allocator]
static ALLOCATOR: portcullis::Allocator = mimalloc::MiMalloc;

/// What the command line asked for.
pub struct Options {
    pub scenarios: Vec<String>,
    pub seconds: u64,
    pub connections: usize,
    pub threads: usize,
    /// Times each shape's runs alternate.
    pub rounds: usize,
    /// `decisions`: the shapes run (all three unless `--shapes` names some).
    pub shapes: Vec<String>,
    /// The sizes `scale` grows through.
    pub passes: Vec<u64>,
    /// `fanout`: decisions a second, viewer counts measured, viewers held.
    pub rate: u64,
    pub viewers: Vec<usize>,
    pub held: usize,
    /// `revocation`: viewers watching meanwhile.
    pub revocation_viewers: usize,
    pub reports: PathBuf,
}

impl Options {
    fn parse() -> Result<Self, Error> {
        let mut options = Options {
            scenarios: Vec::new(),
            seconds: 5,
            connections: 64,
            threads: 2,
            rounds: 2,
            shapes: scenarios::SHAPES.map(String::from).to_vec(),
            passes: vec![10_000, 100_000, 1_000_000],
            rate: 200,
            viewers: vec![1, 100, 1000],
            held: 10_000,
            revocation_viewers: 100,
            reports: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/reports")),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("`{name}` needs a value"));
            match arg.as_str() {
                "--seconds" => options.seconds = value("--seconds")?.parse()?,
                "--connections" => options.connections = value("--connections")?.parse()?,
                "--threads" => options.threads = value("--threads")?.parse()?,
                "--rounds" => options.rounds = value("--rounds")?.parse()?,
                "--rate" => options.rate = value("--rate")?.parse()?,
                "--held" => options.held = value("--held")?.parse()?,
                "--shapes" => {
                    options.shapes = value("--shapes")?.split(',').map(|s| s.trim().to_owned()).collect();
                    if let Some(unknown) = options.shapes.iter().find(|s| !scenarios::SHAPES.contains(&s.as_str())) {
                        return Err(
                            format!("unknown shape `{unknown}` (shapes: {})", scenarios::SHAPES.join(", ")).into()
                        );
                    }
                }
                "--viewers" => {
                    options.viewers =
                        value("--viewers")?.split(',').map(|n| n.trim().parse()).collect::<Result<_, _>>()?;
                }
                "--passes" => {
                    options.passes =
                        value("--passes")?.split(',').map(|n| n.trim().parse()).collect::<Result<_, _>>()?;
                }
                "--reports" => options.reports = value("--reports")?.into(),
                "engine" | "decisions" | "scale" | "fanout" | "revocation" => options.scenarios.push(arg),
                other => {
                    return Err(format!(
                        "unknown argument `{other}` (scenarios: engine, decisions, revocation, fanout, scale)"
                    )
                    .into());
                }
            }
        }
        if options.scenarios.is_empty() {
            options.scenarios = ["engine", "decisions", "revocation", "fanout", "scale"].map(String::from).to_vec();
        }
        Ok(options)
    }
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("__engine-child") {
        let dir = args.next().ok_or("__engine-child needs the data dir")?;
        return actix_web::rt::System::new().block_on(scale::child(dir.into()));
    }
    if std::env::args().nth(1).as_deref() == Some("__broadcast-child") {
        return actix_web::rt::System::new().block_on(floor::broadcast_child());
    }
    if std::env::args().nth(1).as_deref() == Some("__lean-broadcast-child") {
        return actix_web::rt::System::new().block_on(floor::lean_broadcast_child());
    }
    let options = Options::parse()?;
    actix_web::rt::System::new().block_on(run(options))
}

/// The engine under test, serving, with what the scenarios need to reach it.
pub struct Bench {
    pub base: String,
    pub port: u16,
    pub engine: portcullis_actors::engine::Engine,
    pub pool: deadpool_postgres::Pool,
    pub secrets: portcullis::config::Secrets,
    pub demo: demo::DemoCredentials,
    pub data_dir: PathBuf,
}

/// The engine's settings for a bench run on `data_dir` (any free port, logs at `warn` unless
/// `BENCH_LOG` says otherwise, the stream threads under `SCHED_IDLE` unless
/// `BENCH_STREAM_SCHEDULING=normal`), whatever else the shell's environment holds.
pub fn settings(data_dir: &std::path::Path) -> Result<Settings, Error> {
    let overrides = Overrides { bind: "127.0.0.1:0".parse().ok(), data_dir: Some(data_dir.to_owned()) };
    let mut settings = Settings::load_from(None, &overrides, figment_env())?;
    // deadpool warns of connections closed with the floor server's workers that drove them: expected.
    settings.log.level = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn,deadpool=error".into());
    // The engine's stream threads under the default scheduling instead of `SCHED_IDLE`, to compare.
    if std::env::var("BENCH_STREAM_SCHEDULING").as_deref() == Ok("normal") {
        settings.stream.scheduling = portcullis::config::StreamScheduling::Normal;
    }
    if std::env::var_os("BENCH_NO_DISPATCH").is_some() {
        settings.webhooks.deliver = false;
    }
    Ok(settings)
}

async fn run(options: Options) -> Result<(), Error> {
    let dir = tempfile::Builder::new().prefix("pcl-bench-").tempdir_in("/tmp")?;
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut settings = settings(dir.path())?;
    portcullis::telemetry::init_logging(&settings.log);
    let secrets = demo::demo_secrets(None, dir.path())?;
    settings.auth.jwt_secret = Some(secrets.jwt_secret.clone());
    settings.auth.api_key_pepper = Some(secrets.api_key_pepper.clone());
    // No URL: the engine runs its own PostgreSQL under the temporary data dir, as `demo` does.
    let db = Database::open(&settings.database, dir.path()).await?;
    let demo = demo::seed(db.pool(), &secrets, None).await?;
    let pool = db.pool().clone();
    let app = Application::build(settings, db).await?;
    let bench = Bench {
        base: format!("http://127.0.0.1:{}", app.port()),
        port: app.port(),
        engine: app.engine().clone(),
        pool,
        secrets,
        demo,
        data_dir: dir.path().to_owned(),
    };
    let handle = app.handle();
    let server = actix_web::rt::spawn(app.run_until_stopped());
    for scenario in &options.scenarios {
        let report = match scenario.as_str() {
            "engine" => scenarios::engine(&bench, &options).await?,
            "scale" => scale::scale(&bench, &options).await?,
            "fanout" => fanout::fanout(&bench, &options).await?,
            "revocation" => fanout::revocation(&bench, &options).await?,
            _ => scenarios::decisions(&bench, &options).await?,
        };
        let path = report.write(&options.reports, scenario)?;
        println!("  report: {}\n", path.display());
    }
    handle.stop(true).await;
    server.await??;
    Ok(())
}

/// An environment prefix nobody sets: the bench runs on defaults whatever the shell holds.
fn figment_env() -> portcullis::config::figment_env::Env {
    portcullis::config::figment_env::Env::prefixed("PORTCULLIS_BENCH_UNSET__")
}
