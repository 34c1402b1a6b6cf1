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
    Demo(ServeArgs),
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
}

impl Cli {
    /// Settings with this command line's flags applied.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let overrides = match &self.command {
            Command::Serve(args) | Command::Demo(args) => Overrides {
                bind: args.bind,
                data_dir: args.data_dir.data_dir.clone(),
            },
            Command::Migrate(dir) => Overrides {
                bind: None,
                data_dir: dir.data_dir.clone(),
            },
        };
        Settings::load(self.config.as_deref(), &overrides)
    }
}

/// Runs a command to completion.
pub async fn run(command: Command, mut settings: Settings) -> Result<(), CliError> {
    match command {
        Command::Migrate(_) => {
            let db = Database::open(&settings.database, &settings.data_dir).await?;
            tracing::info!(
                schema_version = db.schema_version(),
                "database is up to date"
            );
            db.close().await?;
        }
        Command::Serve(_) => {
            // Refuse to start without the secrets every authenticated route needs.
            settings.auth.secrets()?;
            let db = Database::open(&settings.database, &settings.data_dir).await?;
            Application::build(settings, db)?
                .run_until_stopped()
                .await?;
        }
        Command::Demo(_) => {
            std::fs::create_dir_all(&settings.data_dir).map_err(|source| DemoError::Write {
                path: settings.data_dir.clone(),
                source,
            })?;
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
            let app = match Application::build(settings, db) {
                Ok(app) => app,
                Err(err) => return Err(err.into()),
            };
            credentials.api_url = format!("http://{host}:{}", app.port());
            let path = demo::write_credentials(&data_dir, &credentials)?;
            tracing::info!(org_id = %credentials.org_id, file = %path.display(), "demo organization ready");
            app.run_until_stopped().await?;
        }
    }
    Ok(())
}
