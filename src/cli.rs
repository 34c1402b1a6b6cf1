//! The command line: `serve`, `migrate`, `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, Overrides, Settings};
use crate::db::{Database, DbError};
use crate::demo::{self, DemoError};
use crate::startup::{Application, StartupError};

/// Portcullis: a realtime access-control engine.
///
/// Configuration comes from config/default.toml, then --config FILE, then environment variables
/// named PORTCULLIS__<SECTION>__<KEY>, then the flags below. With no database URL configured, the
/// engine runs its own PostgreSQL cluster under <data-dir>/pg.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version)]
pub struct Cli {
    /// A TOML configuration file layered over the defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (applies pending migrations first).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(DataDirArg),
    /// Seed a demo organization (idempotently), write <data-dir>/demo-credentials.json and serve.
    Demo(DemoArgs),
    /// Manage API keys (for installers setting up devices).
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Play turnstiles, a BAS-IP panel and an OSDP reader against a running demo engine, from its
    /// demo-credentials.json (the engine is reached at the file's api_url).
    Simulate(SimulateArgs),
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The demo's credentials file (default <data-dir>/demo-credentials.json).
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Presentations a second, over all gates.
    #[arg(long, default_value_t = 2.0, value_name = "N")]
    pub rate: f64,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it once (JSON). Works beside a running engine.
    Create(CreateKeyArgs),
}

#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    /// The organization: its id or its slug.
    #[arg(long)]
    pub org: String,
    /// A name to recognise the key by, e.g. "Turnstile 3, lobby".
    #[arg(long)]
    pub name: String,
    /// A scope, repeatable (gate:decide, events:read, passes:read, passes:write, checkins:read,
    /// config:read, config:write, org:read, audit:read).
    #[arg(long = "scope", required = true, value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// A gate the key is bound to, repeatable (required for gate:decide).
    #[arg(long = "gate", value_name = "GATE_ID")]
    pub gates: Vec<uuid::Uuid>,
    /// live or test.
    #[arg(long, default_value = "live")]
    pub env: String,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Bring the dashboard alive: virtual turnstiles present the demo's credentials (and unknown
    /// cards) at its gates, and an OSDP reader on a virtual bus reads cards at the Office door.
    #[arg(long)]
    pub simulate: bool,
    /// Presentations a second, over all gates (with --simulate).
    #[arg(long, default_value_t = 2.0, value_name = "N")]
    pub rate: f64,
}

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Directory for the engine's state (managed PostgreSQL, demo files); default ./var.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error("{0}")]
    Usage(String),
}

impl Cli {
    /// Settings with this command line's flags applied.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let overrides = match &self.command {
            Command::Serve(args) | Command::Demo(DemoArgs { serve: args, .. }) => {
                Overrides { bind: args.bind, data_dir: args.data_dir.data_dir.clone() }
            }
            Command::Migrate(dir)
            | Command::ApiKey(ApiKeyCommand::Create(CreateKeyArgs { data_dir: dir, .. }))
            | Command::Simulate(SimulateArgs { data_dir: dir, .. }) => {
                Overrides { bind: None, data_dir: dir.data_dir.clone() }
            }
        };
        Settings::load(self.config.as_deref(), &overrides)
    }
}

/// Runs a command to completion.
pub async fn run(command: Command, mut settings: Settings) -> Result<(), CliError> {
    match command {
        Command::Migrate(_) => {
            let db = Database::open(&settings.database, &settings.data_dir).await?;
            tracing::info!(schema_version = db.schema_version(), "database is up to date");
            db.close().await?;
        }
        Command::Serve(_) => {
            // Refuse to start without the secrets every authenticated route needs.
            settings.auth.secrets()?;
            let db = Database::open(&settings.database, &settings.data_dir).await?;
            Application::build(settings, db).await?.run_until_stopped().await?;
        }
        Command::Demo(args) => {
            std::fs::create_dir_all(&settings.data_dir)
                .map_err(|source| DemoError::Write { path: settings.data_dir.clone(), source })?;
            let secrets = demo::demo_secrets(settings.auth.secrets().ok(), &settings.data_dir)?;
            settings.auth.jwt_secret = Some(secrets.jwt_secret.clone());
            settings.auth.api_key_pepper = Some(secrets.api_key_pepper.clone());
            let db = Database::open(&settings.database, &settings.data_dir).await?;
            let previous = demo::read_credentials(&settings.data_dir);
            let mut credentials = match demo::seed(db.pool(), &secrets, previous).await {
                Ok(credentials) => credentials,
                Err(err) => {
                    db.close().await?;
                    return Err(err.into());
                }
            };
            let data_dir = settings.data_dir.clone();
            let host = settings.server.bind.ip();
            let app = Application::build(settings, db).await?;
            credentials.api_url = format!("http://{host}:{}", app.port());
            let path = demo::write_credentials(&data_dir, &credentials)?;
            tracing::info!(org_id = %credentials.org_id, file = %path.display(), "demo organization ready");
            if args.simulate {
                let api = SocketAddr::from(([127, 0, 0, 1], app.port()));
                actix_rt::spawn(crate::simulate::run(crate::simulate::Plan { api, credentials, rate: args.rate }));
            }
            app.run_until_stopped().await?;
        }
        Command::Simulate(args) => {
            let path = args.credentials.unwrap_or_else(|| settings.data_dir.join(demo::CREDENTIALS_FILE));
            let credentials = demo::read_credentials_file(&path)?;
            let api =
                credentials.api_url.strip_prefix("http://").and_then(|a| a.parse::<SocketAddr>().ok()).ok_or_else(
                    || {
                        CliError::Usage(format!(
                            "`{}`: api_url `{}` is not http://IP:PORT",
                            path.display(),
                            credentials.api_url
                        ))
                    },
                )?;
            crate::simulate::run(crate::simulate::Plan { api, credentials, rate: args.rate }).await;
        }
        Command::ApiKey(ApiKeyCommand::Create(args)) => {
            let secrets = match settings.auth.secrets() {
                Ok(secrets) => secrets,
                // Keys for a demo engine are hashed under the demo's generated pepper.
                Err(err) => demo::stored_demo_secrets(&settings.data_dir).ok_or(err)?,
            };
            let db = Database::open_or_attach(&settings.database, &settings.data_dir).await?;
            let created = create_key(&db, &secrets, args).await;
            db.close().await?;
            println!("{}", serde_json::to_string_pretty(&created?).unwrap_or_default());
        }
    }
    Ok(())
}

async fn create_key(
    db: &Database,
    secrets: &crate::config::Secrets,
    args: CreateKeyArgs,
) -> Result<crate::app::keys::NewApiKey, CliError> {
    use crate::app::keys::{self, Grantor, KeySpec};
    use crate::crypto::KeyEnv;
    let usage = |e: crate::error::AppError| match e {
        crate::error::AppError::Validation { fields } => {
            CliError::Usage(fields.iter().map(|(k, v)| format!("`{k}` {v}")).collect::<Vec<_>>().join("; "))
        }
        other => CliError::Usage(crate::error::error_chain(&other)),
    };
    let scopes = args
        .scopes
        .iter()
        .map(|s| s.parse().map_err(|e: portcullis_actors::domain::UnknownVariantError| CliError::Usage(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let env = match args.env.as_str() {
        "live" => KeyEnv::Live,
        "test" => KeyEnv::Test,
        other => return Err(CliError::Usage(format!("`--env {other}` must be live or test"))),
    };
    let mut client = db.pool().get().await.map_err(|e| CliError::Usage(e.to_string()))?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let org_id: uuid::Uuid = tx
        .query_opt("SELECT id FROM organizations WHERE id::text = $1 OR slug = $1", &[&args.org])
        .await
        .map_err(DbError::from)?
        .ok_or_else(|| CliError::Usage(format!("no organization `{}`", args.org)))?
        .try_get(0)
        .map_err(DbError::from)?;
    let spec =
        KeySpec { name: args.name, env, scopes, gate_ids: args.gates, expires_at: None, client_cert_sha256: None };
    let actor = crate::audit::Actor::default();
    let key =
        keys::create(&tx, &secrets.api_key_pepper, org_id, &spec, Grantor::Console, actor).await.map_err(usage)?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(key)
}
