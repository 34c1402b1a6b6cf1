//! `Application`: builds the HTTP server from settings and a database, exposes the bound port,
//! and runs until stopped (SIGINT/SIGTERM or a [`ServerHandle`]), then releases the database.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
use portcullis_actors::engine::Engine;

use crate::app::App;
use crate::auth::AuthContext;
use crate::config::Settings;
use crate::db::{Database, DbError};
use crate::http::stream::threads::StreamThreads;
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the HTTP server: {0}")]
    Server(#[source] std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::http::tls::TlsError),
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Engine(#[from] crate::engine::load::LoadError),
}

/// How often expired sessions and idle rate-limit and permission entries are swept.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

pub struct Application {
    port: u16,
    server: Server,
    /// The device listener, when configured: its port and server.
    device: Option<(u16, Server)>,
    database: Database,
    engine: Engine,
    /// The threads the API's streams run on.
    streams: Arc<StreamThreads>,
}

impl Application {
    /// Loads the engine, binds the listener (port 0 picks a free port) and builds the server;
    /// nothing is served until [`Application::run_until_stopped`] is awaited.
    pub async fn build(settings: Settings, database: Database) -> Result<Self, StartupError> {
        // The recorder first: whatever the engine reports while it loads must not be lost.
        let metrics = telemetry::metrics_handle()?;
        let engine = crate::engine::start(database.pool(), database.config(), &settings).await?;
        // TLS first: a certificate that cannot be used stops start-up, naming the file.
        let tls = match &settings.server.tls {
            Some(tls) => {
                let (config, store) = crate::http::tls::server_config(tls)?;
                actix_rt::spawn(crate::http::tls::watch(store));
                Some(config)
            }
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let addr = settings.server.bind;
        let listener = TcpListener::bind(addr).map_err(|source| StartupError::Bind { addr, source })?;
        let port = listener.local_addr().map_err(StartupError::Server)?.port();
        let mut settings = settings;
        if settings.mail.public_url.is_none() {
            // Guests' links point at the API as bound (its real port, when the configured one is 0).
            let host = if addr.ip().is_unspecified() { "localhost".to_owned() } else { addr.ip().to_string() };
            let host = if addr.is_ipv6() && !addr.ip().is_unspecified() { format!("[{host}]") } else { host };
            settings.mail.public_url = Some(format!("{scheme}://{host}:{port}"));
        }
        let auth = Arc::new(AuthContext::new(&settings.auth, settings.auth.secrets()?));
        let state_metrics = metrics.clone();
        // The readers bound to gates, polled from now on.
        let readers =
            crate::engine::readers::Readers::new(engine.clone(), auth.pepper.clone(), database.pool().clone());
        let bindings = match database.pool().get().await {
            Ok(client) => crate::app::readers::load_all(&client, &auth.pepper).await,
            Err(err) => Err(err.into()),
        };
        match bindings {
            Ok(bindings) => readers.start_all(bindings).await,
            Err(err) => tracing::error!(error = %err, "reader bindings could not be loaded; no reader is polled"),
        }
        // The controllers bound to gates, kept in sync from now on.
        let controllers = crate::engine::controllers::Controllers::start(
            engine.clone(),
            auth.pepper.clone(),
            database.pool().clone(),
            Some(settings.controllers.listen),
            Duration::from_secs(settings.controllers.resync_secs),
        )
        .await
        .map_err(|source| StartupError::Bind { addr: settings.controllers.listen, source })?;
        let bindings = match database.pool().get().await {
            Ok(client) => crate::app::controllers::load(&client, None).await,
            Err(err) => Err(err.into()),
        };
        match bindings {
            Ok(bindings) => controllers.start_all(bindings).await,
            Err(err) => {
                tracing::error!(error = %err, "controller bindings could not be loaded; no controller is synced")
            }
        }
        let webhooks = &settings.webhooks;
        let outbox = crate::outbox::dispatcher::Dispatcher::start(
            database.pool().clone(),
            auth.pepper.clone(),
            crate::outbox::dispatcher::Settings {
                deliver: webhooks.deliver,
                allow_private: webhooks.allow_private_addresses,
                schedule: webhooks.retry_schedule_secs.iter().map(|s| Duration::from_secs(*s)).collect(),
                attempt_timeout: Duration::from_secs(webhooks.attempt_timeout_secs),
                disable_after: Duration::from_secs(webhooks.disable_after_hours.saturating_mul(3600)),
            },
            engine.clone(),
            crate::outbox::notify::Mailer::new(settings.mail.smtp_url.as_ref(), &settings.data_dir),
            settings.mail.from.parse().map_err(|_| crate::config::ConfigError::Value {
                key: "mail.from",
                reason: "must be an address".to_owned(),
            })?,
        );
        let state = App {
            readers,
            controllers,
            outbox,
            engine: engine.clone(),
            auth: auth.clone(),
            pool: database.pool().clone(),
            metrics,
            watchers: Arc::default(),
            schema_version: database.schema_version(),
            started_at: Instant::now(),
            settings: Arc::new(settings),
        };
        let device = match state.settings.server.device_bind {
            Some(addr) => {
                let listener = TcpListener::bind(addr).map_err(|source| StartupError::Bind { addr, source })?;
                let port = listener.local_addr().map_err(StartupError::Server)?.port();
                let server =
                    crate::http::device_server(state.clone(), listener, tls.clone()).map_err(StartupError::Server)?;
                tracing::info!(addr = %addr.ip(), port, "devices listening on {scheme}://{}:{}", addr.ip(), port);
                Some((port, server))
            }
            None => None,
        };
        actix_rt::spawn(visit_housekeeping(state.clone()));
        actix_rt::spawn(check_streams(state.clone()));
        let stream_pool = database.separate_pool(&state.settings.database)?;
        let streams =
            Arc::new(StreamThreads::start(&state.settings.stream, stream_pool).map_err(StartupError::Server)?);
        let server = crate::http::server(state, listener, tls, streams.clone()).map_err(StartupError::Server)?;
        actix_rt::spawn(refresh_keys(database.pool().clone(), auth.clone()));
        if let Some(supervisor) = database.supervisor() {
            actix_rt::spawn(supervise(supervisor, engine.downgrade()));
        }
        actix_rt::spawn(sweep(database.pool().clone(), auth));
        actix_rt::spawn(metrics_upkeep(state_metrics));
        tracing::info!(addr = %addr.ip(), port, "listening on {scheme}://{}:{}", addr.ip(), port);
        Ok(Application { port, server, device, database, engine, streams })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The device listener's port, when one is configured.
    pub fn device_port(&self) -> Option<u16> {
        self.device.as_ref().map(|(port, _)| *port)
    }

    /// The engine the server decides with.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stops the server gracefully when called (tests; signals do the same in production).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped, lets in-flight requests finish, then closes the database (and stops
    /// the managed cluster).
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        // The device listener serves beside the API and stops with it (a signal stops both).
        let device = self.device.map(|(_, server)| (server.handle(), actix_rt::spawn(server)));
        let served = self.server.await.map_err(StartupError::Server);
        if let Some((handle, task)) = device {
            handle.stop(true).await;
            if let Ok(Err(err)) = task.await {
                tracing::warn!(error = %err, "the device listener stopped with an error");
            }
        }
        // The streams end with their threads.
        self.streams.stop();
        tracing::info!("HTTP server stopped; flushing the journal");
        if let Err(err) = self.engine.flush().await {
            tracing::error!(error = %err, "the journal could not be flushed");
        }
        self.engine.stop();
        tracing::info!("closing the database");
        let closed = self.database.close().await.map_err(StartupError::from);
        served.and(closed)
    }
}

/// Restarts the managed cluster whenever its postmaster dies, and tells the live streams.
async fn supervise(supervisor: crate::db::Supervisor, engine: portcullis_actors::engine::WeakEngine) {
    while let crate::db::Supervision::Restarted { after } = supervisor.next().await {
        tracing::warn!(after_ms = after.as_millis() as u64, "the managed PostgreSQL died and was restarted");
        metrics::counter!("portcullis_db_restarts_total").increment(1);
        if let Some(engine) = engine.upgrade() {
            let detail = format!("the managed PostgreSQL died and was restarted after {} ms", after.as_millis());
            engine
                .publish_everywhere(&portcullis_actors::events::Event::Service { alert: "database_restarted", detail });
        }
    }
}

/// Keeps the device keys held in memory current (changes made through another node), on a timer
/// of its own so that a device's decision never waits on the database for its key.
async fn refresh_keys(pool: deadpool_postgres::Pool, auth: Arc<AuthContext>) {
    let mut ticker = actix_rt::time::interval(auth.keys.refresh_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if pool.is_closed() {
            return;
        }
        let refreshed = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            auth.keys.refresh(&client).await.map_err(|e| crate::error::error_chain(&e))
        };
        // Bounded: a hung database must not stop the next try.
        match tokio::time::timeout(auth.keys.refresh_every, refreshed).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "device keys not refreshed; the last good copy serves"),
            Err(_) => tracing::warn!("device keys not refreshed in time; the last good copy serves"),
        }
    }
}

/// How often histogram samples are folded into their summaries.
const METRICS_UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into their summaries on a timer, whether or not anything
/// scrapes `/metrics`: unscraped, every sample would otherwise be kept, and memory would grow
/// with every request.
async fn metrics_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    let mut ticker = actix_rt::time::interval(METRICS_UPKEEP_INTERVAL);
    loop {
        ticker.tick().await;
        handle.run_upkeep();
    }
}

/// Closes visits whose time has ended (auto check-out, no-shows), purges visitor data past
/// retention, every `visits.sweep_secs`.
async fn visit_housekeeping(app: crate::app::App) {
    let mut ticker = actix_rt::time::interval(std::time::Duration::from_secs(app.settings.visits.sweep_secs));
    loop {
        ticker.tick().await;
        if app.pool.is_closed() {
            return;
        }
        if let Err(err) = crate::app::visits::housekeeping(&app).await {
            tracing::warn!(error = %err, "visit housekeeping failed");
        }
    }
}

/// Ends the streams whose access a change made elsewhere took away, every
/// `stream.session_check_secs`: one check for all open streams (changes made through this node
/// end them at once).
async fn check_streams(app: App) {
    let every = Duration::from_secs(app.settings.stream.session_check_secs.max(1));
    let mut ticker = actix_rt::time::interval(every);
    // A check held up by a hung database gives up at the next one's time, and is not made up for
    // in a burst afterwards.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        if app.pool.is_closed() {
            return;
        }
        let checked = crate::app::streams::check_watchers(&app.pool, &app.auth, &app.watchers);
        match tokio::time::timeout(every, checked).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(changes = n, "access changed elsewhere: the streams concerned look again"),
            Ok(Err(err)) => tracing::warn!(error = %err, "open streams' access not checked"),
            Err(_) => tracing::warn!("open streams' access not checked: the database did not answer in time"),
        }
    }
}

/// Background housekeeping: expired sessions, old journal batch ids, recovered rate-limit keys,
/// stale permission entries.
async fn sweep(pool: deadpool_postgres::Pool, auth: Arc<AuthContext>) {
    let mut ticker = actix_rt::time::interval(SWEEP_INTERVAL);
    loop {
        ticker.tick().await;
        if pool.is_closed() {
            return;
        }
        match crate::app::sessions::sweep_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "removed expired sessions"),
            Err(err) => tracing::warn!(error = %err, "session sweep failed"),
        }
        match pool.get().await {
            Ok(client) => {
                if let Err(err) = client.execute(crate::engine::journal::PRUNE_BATCHES, &[]).await {
                    tracing::warn!(error = %err, "journal batch ids not pruned");
                }
            }
            Err(err) => tracing::warn!(error = %err, "journal batch ids not pruned"),
        }
        match crate::outbox::prune(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned delivered events, attempts and mail past their retention"),
            Err(err) => tracing::warn!(error = %err, "events out not pruned"),
        }
        auth.limiter.retain_recent();
        auth.cache.purge_expired();
    }
}
