//! Storage: the PostgreSQL pool, migrations, and the managed local cluster.
//!
//! With `database.url` set the engine uses that server; without it, it runs its own cluster under
//! `<data_dir>/pg` ([`managed`]). Either way migrations from `schema/` are applied at start, under
//! a PostgreSQL advisory lock so that engines starting together do not race.

pub mod managed;
pub mod pagination;

use std::path::Path;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::ExposeSecret;
use tokio_postgres::NoTls;

use crate::config::DatabaseSettings;
use managed::{ManagedPgError, ManagedPostgres};

mod embedded {
    refinery::embed_migrations!("schema");
}

/// Arbitrary but fixed: the advisory lock key that serializes migrations ("PCLMIGR1").
const MIGRATION_LOCK: i64 = 0x50434c4d_49475231;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Managed(#[from] ManagedPgError),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("cannot prepare the database: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] refinery::Error),
    #[error("cannot build the connection pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
    #[error("the managed PostgreSQL task stopped unexpectedly: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The engine's database: a connection pool, the schema version it runs, and the managed
/// cluster when there is one (stopped by [`Database::close`]).
#[derive(Debug)]
pub struct Database {
    pool: Pool,
    config: tokio_postgres::Config,
    schema_version: i32,
    managed: Option<Managed>,
}

/// The managed cluster, shared with its supervisor (the lock is held for a check or a
/// `pg_ctl` call, on a blocking thread, never across an await).
#[expect(clippy::disallowed_types, reason = "locked only inside spawn_blocking, never across an await")]
type Managed = std::sync::Arc<std::sync::Mutex<ManagedPostgres>>;

#[expect(clippy::disallowed_types, reason = "locked only inside spawn_blocking, never across an await")]
fn shared(pg: ManagedPostgres) -> Managed {
    std::sync::Arc::new(std::sync::Mutex::new(pg))
}

/// What the supervisor of the managed cluster saw.
#[derive(Debug)]
pub enum Supervision {
    /// The postmaster had died and is running again.
    Restarted { after: Duration },
    /// The engine stopped the cluster (or dropped it): supervision is over.
    Over,
}

impl Database {
    /// Connects (starting the managed cluster when no URL is set) and applies pending migrations.
    pub async fn open(settings: &DatabaseSettings, data_dir: &Path) -> Result<Self, DbError> {
        let (mut config, managed) = match &settings.url {
            Some(url) => (url.expose_secret().parse::<tokio_postgres::Config>().map_err(DbError::Connect)?, None),
            None => {
                let (dir, bin, user) = (data_dir.to_owned(), settings.pg_bin_dir.clone(), settings.os_user.clone());
                let pg =
                    tokio::task::spawn_blocking(move || ManagedPostgres::start(&dir, bin.as_deref(), &user)).await??;
                (pg.connection_config(managed::DATABASE), Some(pg))
            }
        };
        config.connect_timeout(Duration::from_secs(settings.connect_timeout_secs));
        if config.get_application_name().is_none() {
            config.application_name("portcullis");
        }
        let prepared = async {
            if let Some(pg) = &managed {
                create_database_if_missing(pg).await?;
            }
            let schema_version = migrate(&config).await?;
            let pool = build_pool(config.clone(), settings)?;
            Ok::<_, DbError>((pool, schema_version))
        };
        match prepared.await {
            Ok((pool, schema_version)) => Ok(Database { pool, config, schema_version, managed: managed.map(shared) }),
            Err(err) => {
                // Do not leave a cluster running behind a failed start.
                if let Some(mut pg) = managed {
                    let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
                }
                Err(err)
            }
        }
    }

    /// Like [`Database::open`], but when another engine already runs the managed cluster of this
    /// data dir, connects to that cluster instead of failing (for admin commands such as
    /// `portcullis api-key create`). Its schema must be current; nothing is migrated.
    pub async fn open_or_attach(settings: &DatabaseSettings, data_dir: &Path) -> Result<Self, DbError> {
        match Self::open(settings, data_dir).await {
            Err(DbError::Managed(ManagedPgError::DataDirInUse { .. })) => {
                let mut config = managed::running_cluster_config(
                    &std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned()),
                );
                config.connect_timeout(Duration::from_secs(settings.connect_timeout_secs));
                let client = connect(&config).await?;
                let schema_version = client
                    .query_one("SELECT coalesce(max(version), 0) FROM refinery_schema_history", &[])
                    .await?
                    .try_get::<_, i32>(0)?;
                Ok(Database { pool: build_pool(config.clone(), settings)?, config, schema_version, managed: None })
            }
            other => other,
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Another pool to the same database, under the same settings (it opens connections as they
    /// are asked for): for work whose connections must not be shared, such as the streams'.
    pub fn separate_pool(&self, settings: &DatabaseSettings) -> Result<Pool, DbError> {
        build_pool(self.config.clone(), settings)
    }

    /// Connection settings, for components that hold a dedicated connection (the journal).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The newest migration applied to this database.
    pub fn schema_version(&self) -> i32 {
        self.schema_version
    }

    /// Closes the pool and stops the managed cluster, if any.
    pub async fn close(self) -> Result<(), DbError> {
        self.pool.close();
        if let Some(pg) = self.managed {
            tokio::task::spawn_blocking(move || match pg.lock() {
                Ok(mut pg) => pg.stop(),
                Err(poisoned) => poisoned.into_inner().stop(),
            })
            .await??;
        }
        Ok(())
    }

    /// Watches the managed cluster (if there is one): when its postmaster dies, starts it again,
    /// with back-off (1 s doubling to 30 s) while it cannot. Resolves with each restart, or
    /// `Over` once the cluster is stopped; call it again to go on watching.
    pub fn supervisor(&self) -> Option<Supervisor> {
        self.managed.as_ref().map(|pg| Supervisor { pg: std::sync::Arc::downgrade(pg) })
    }
}

/// Watches the managed cluster; holds it weakly, so it never keeps it from stopping.
#[expect(clippy::disallowed_types, reason = "locked only inside spawn_blocking, never across an await")]
pub struct Supervisor {
    pg: std::sync::Weak<std::sync::Mutex<ManagedPostgres>>,
}

const SUPERVISE_EVERY: Duration = Duration::from_secs(1);
const LONGEST_BACKOFF: Duration = Duration::from_secs(30);

impl Supervisor {
    /// Waits for the postmaster to die, restarts it, and says so.
    pub async fn next(&self) -> Supervision {
        let mut died: Option<std::time::Instant> = None;
        let mut backoff = SUPERVISE_EVERY;
        loop {
            tokio::time::sleep(if died.is_some() { backoff } else { SUPERVISE_EVERY }).await;
            let Some(pg) = self.pg.upgrade() else { return Supervision::Over };
            let restart = died.is_some();
            let checked = tokio::task::spawn_blocking(move || {
                let mut pg = pg.lock().map_err(|_| "the cluster's lock is poisoned".to_owned())?;
                if pg.is_stopped() {
                    return Ok(None);
                }
                if !restart && pg.postmaster_alive() {
                    return Ok(Some(true));
                }
                if !restart {
                    return Ok(Some(false));
                }
                pg.restart().map(|()| Some(true)).map_err(|e| e.to_string())
            })
            .await;
            match checked {
                Ok(Ok(None)) => return Supervision::Over,
                Ok(Ok(Some(true))) => {
                    if let Some(at) = died {
                        return Supervision::Restarted { after: at.elapsed() };
                    }
                }
                Ok(Ok(Some(false))) => {
                    tracing::error!("the managed PostgreSQL died; restarting it");
                    metrics::counter!("portcullis_db_postmaster_deaths_total").increment(1);
                    died = Some(std::time::Instant::now());
                    backoff = SUPERVISE_EVERY;
                }
                Ok(Err(err)) => {
                    backoff = (backoff * 2).min(LONGEST_BACKOFF);
                    tracing::error!(error = %err, retry_in_s = backoff.as_secs(), "the managed PostgreSQL could not be restarted yet");
                }
                Err(err) => tracing::error!(error = %err, "the managed PostgreSQL's supervisor check failed"),
            }
        }
    }
}

fn build_pool(mut config: tokio_postgres::Config, settings: &DatabaseSettings) -> Result<Pool, DbError> {
    let timeout = Duration::from_secs(settings.connect_timeout_secs);
    // The server cancels a statement that runs too long (a request's own bound is
    // `server.request_timeout_secs`, which also covers a server that does not answer at all).
    let options =
        format!("{} -c statement_timeout={}", config.get_options().unwrap_or_default(), settings.statement_timeout_ms);
    config.options(options.trim());
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()?)
}

/// One dedicated connection, driven on the current runtime until the client is dropped.
async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, DbError> {
    let (client, connection) = config.connect(NoTls).await.map_err(DbError::Connect)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "migration connection closed with an error");
        }
    });
    Ok(client)
}

async fn create_database_if_missing(pg: &ManagedPostgres) -> Result<(), DbError> {
    let client = connect(&pg.connection_config("postgres")).await?;
    let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&managed::DATABASE]).await?;
    if exists.is_none() {
        client.batch_execute(&format!("CREATE DATABASE {}", managed::DATABASE)).await?;
        tracing::info!(database = managed::DATABASE, "created the engine's database");
    }
    Ok(())
}

/// Applies pending migrations and returns the newest applied version.
pub async fn migrate(config: &tokio_postgres::Config) -> Result<i32, DbError> {
    let mut client = connect(config).await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let result = embedded::migrations::runner().run_async(&mut client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    let report = result?;
    for migration in report.applied_migrations() {
        tracing::info!(version = migration.version(), name = migration.name(), "applied migration");
    }
    let version = client
        .query_one("SELECT coalesce(max(version), 0) FROM refinery_schema_history", &[])
        .await?
        .try_get::<_, i32>(0)?;
    Ok(version)
}

/// Runs `select` (a query with an explicit column list) and reads each row into `T` (a typed
/// answer, through the row's JSON form, so a column and its field share one name). Column lists
/// are spelled out at every call site, so a hash or secret column is never selected by accident.
pub async fn query_as<T: serde::de::DeserializeOwned>(
    client: &impl deadpool_postgres::GenericClient,
    select: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<T>, crate::error::AppError> {
    let rows = client.query(&format!("SELECT to_jsonb(t) FROM ({select}) t"), params).await?;
    rows.iter()
        .map(|row| {
            row.try_get::<_, tokio_postgres::types::Json<T>>(0)
                .map(|json| json.0)
                .map_err(crate::error::AppError::internal)
        })
        .collect()
}

/// Like [`query_as`], for at most one row.
pub async fn query_one_as<T: serde::de::DeserializeOwned>(
    client: &impl deadpool_postgres::GenericClient,
    select: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<T>, crate::error::AppError> {
    Ok(query_as(client, select, params).await?.into_iter().next())
}
