//! Settings: `config/default.toml` (compiled in), an optional `--config FILE`, then
//! `PORTCULLIS__SECTION__KEY` environment variables, then CLI flags, in that order of precedence.
//!
//! Unknown keys and ill-typed values are errors that name the key and where it came from. Secrets
//! are [`SecretString`]s: their `Debug` output is redacted and nothing here ever logs them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Re-exported so tools (the bench) can load settings without the process environment.
pub mod figment_env {
    pub use figment::providers::Env;
}

/// The defaults, compiled in so the binary runs from any directory.
const DEFAULTS: &str = include_str!("../config/default.toml");

/// The minimum length of each server secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Configuration that cannot be used; the message names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file `{}` cannot be read: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    #[error("invalid configuration: `{key}` {reason}")]
    Value { key: &'static str, reason: String },
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        ConfigError::Invalid(Box::new(err))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub engine: EngineSettings,
    pub journal: JournalSettings,
    pub stream: StreamSettings,
    pub controllers: ControllerSettings,
    pub webhooks: WebhookSettings,
    pub mail: MailSettings,
    pub visits: VisitSettings,
}

/// The visitor journey.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitSettings {
    /// How often ended visits are closed (auto check-out, no-shows) and visitor data past its
    /// retention purged.
    pub sweep_secs: u64,
    /// The version of the key visitors' personal data is sealed under (derived from the server
    /// secret and this number). Raising it re-keys: new data is sealed under the new version at
    /// once, and housekeeping re-seals older rows, 500 a sweep.
    pub data_key_version: i16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSettings {
    /// A group whose commit has not come back in this long is spooled instead.
    pub commit_timeout_ms: u64,
    /// While spooling, how often the journal tries PostgreSQL again.
    pub retry_ms: u64,
    /// How long a pass row may stay behind the check-ins that change it (the checkpoint's period).
    pub checkpoint_ms: u64,
    /// The spool's largest size on disk; beyond it records are refused (and consuming admits
    /// with them).
    pub spool_max_bytes: u64,
}

/// Controllers that decide by themselves (UHPPOTE), kept in sync by the engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerSettings {
    /// Where controllers' events (swipes) are heard (UDP; port 0: any free port). Each controller
    /// is told this address (the local address its route leaves from, for 0.0.0.0) when it
    /// comes online.
    pub listen: SocketAddr,
    /// How often every controller's whole table is checked against the passes allowed at its
    /// doors (changes to passes are sent at once; this catches rule and gate changes).
    pub resync_secs: u64,
}

/// Notification e-mail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://…:465`, or unset: each message is written
    /// as an `.eml` file under `<data_dir>/mail/` (and its path logged). Never logged itself.
    pub smtp_url: Option<SecretString>,
    /// The sender.
    pub from: String,
    /// The address guests open the engine at (the links in invitations); unset: the API's own
    /// address as bound (`localhost` for an unspecified address).
    pub public_url: Option<String>,
}

impl Settings {
    /// Where a guest's link points: `public_url`, or the API's own address.
    pub fn public_url(&self) -> String {
        match &self.mail.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.server.bind),
        }
    }
}

/// Webhook deliveries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Whether this node delivers (false: it writes events and leaves their delivery to others).
    pub deliver: bool,
    /// Deliver to loopback, link-local and private addresses: a development setting.
    pub allow_private_addresses: bool,
    /// The wait after each failed attempt (the first is at once); ±20 % jitter.
    pub retry_schedule_secs: Vec<u64>,
    /// How long one attempt may take.
    pub attempt_timeout_secs: u64,
    /// An endpoint whose every delivery failed for this long is disabled.
    pub disable_after_hours: u64,
}

/// The longest any configured duration may be (ten years).
const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 3600;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    pub heartbeat_secs: u64,
    pub client_timeout_secs: u64,
    pub session_check_secs: u64,
    /// What may wait for a viewer's socket (KiB) before it is closed as a slow consumer.
    pub max_queued_kib: usize,
    /// Threads the stream sessions run on, apart from the HTTP workers (0: one per core).
    pub threads: usize,
    /// How those threads are scheduled.
    pub scheduling: StreamScheduling,
}

/// How the threads that write the live streams are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamScheduling {
    /// `SCHED_IDLE`: a stream thread gives up its core the moment any other thread wants it, so
    /// requests and decisions do not wait behind the fan-out to the dashboards (which, on a
    /// machine kept busy by them, fall behind; one kept off the CPU for 100 ms is given the
    /// default scheduling for a while).
    Idle,
    /// The default scheduling, beside the HTTP workers.
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    pub pass_idle_secs: u64,
    pub gate_queue_len: usize,
    /// Threads the actors run on (0: one per core).
    pub arbiters: usize,
    pub retained_events: usize,
    pub expiry_sweep_secs: u64,
    /// How long a consuming admit waits for its commit before the gate's `fail_mode` answers.
    pub admit_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub workers: usize,
    /// `SCHED_FIFO` priority of the API listener's workers while they answer little (1–99; 0: the
    /// default scheduling always); see `http::priority`.
    pub api_priority: u8,
    /// A listener of its own for turnstiles and readers (decisions and health only), served by
    /// workers of its own: a decision never waits behind the live streams' fan-out.
    pub device_bind: Option<SocketAddr>,
    pub device_workers: usize,
    /// `SCHED_FIFO` priority of the device listener's workers while they answer little (1–99; 0:
    /// the default scheduling always), so that a turnstile's answer takes a core at once.
    pub device_priority: u8,
    pub body_limit_bytes: usize,
    pub shutdown_timeout_secs: u64,
    /// A request not answered in this long gets 503 `timeout` (the database hangs, say).
    pub request_timeout_secs: u64,
    /// HTTPS and WSS on every listener (unset: plain HTTP).
    pub tls: Option<TlsSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM: the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: CAs whose client certificates devices may present instead of a key.
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Unset: the engine manages its own cluster under `<data_dir>/pg`.
    pub url: Option<SecretString>,
    pub pool_size: usize,
    pub connect_timeout_secs: u64,
    /// The server cancels a statement running longer than this.
    pub statement_timeout_ms: u64,
    pub pg_bin_dir: Option<PathBuf>,
    pub os_user: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub jwt_secret: Option<SecretString>,
    pub api_key_pepper: Option<SecretString>,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub permission_cache_ttl_secs: u64,
    pub login_attempts_per_account: std::num::NonZeroU32,
    pub login_attempts_per_address: std::num::NonZeroU32,
}

/// Values given as CLI flags; they take precedence over everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

impl Settings {
    /// Loads the layered configuration from the process environment.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_from(file, overrides, Env::prefixed("PORTCULLIS__").split("__"))
    }

    /// Loads the layered configuration with an explicit environment provider (tests).
    pub fn load_from(file: Option<&Path>, overrides: &Overrides, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = file {
            // Figment treats a missing file as empty; a file the user named must exist.
            std::fs::File::open(path).map_err(|source| ConfigError::File { path: path.to_owned(), source })?;
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(env);
        if let Some(bind) = overrides.bind {
            figment = figment.merge(Serialized::default("server.bind", bind.to_string()));
        }
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("data_dir", dir));
        }
        let settings: Settings = figment.extract()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let value = |key, reason: &str| ConfigError::Value { key, reason: reason.to_owned() };
        if self.server.body_limit_bytes < 1024 {
            return Err(value("server.body_limit_bytes", "must be at least 1024"));
        }
        if self.database.pool_size == 0 {
            return Err(value("database.pool_size", "must be at least 1"));
        }
        for (key, priority) in
            [("server.api_priority", self.server.api_priority), ("server.device_priority", self.server.device_priority)]
        {
            if priority > 99 {
                return Err(value(key, "must be 0 (default scheduling) or a real-time priority 1–99"));
            }
        }
        let positive = [
            ("database.connect_timeout_secs", self.database.connect_timeout_secs),
            ("database.statement_timeout_ms", self.database.statement_timeout_ms),
            ("server.request_timeout_secs", self.server.request_timeout_secs),
            ("engine.admit_timeout_ms", self.engine.admit_timeout_ms),
            ("journal.commit_timeout_ms", self.journal.commit_timeout_ms),
            ("journal.retry_ms", self.journal.retry_ms),
            ("journal.checkpoint_ms", self.journal.checkpoint_ms),
            ("journal.spool_max_bytes", self.journal.spool_max_bytes),
            ("controllers.resync_secs", self.controllers.resync_secs),
            ("webhooks.attempt_timeout_secs", self.webhooks.attempt_timeout_secs),
            ("webhooks.disable_after_hours", self.webhooks.disable_after_hours),
        ];
        for (key, n) in positive {
            if n == 0 {
                return Err(value(key, "must be at least 1"));
            }
        }
        if let Some(url) = &self.database.url
            && let Err(err) = url.expose_secret().parse::<tokio_postgres::Config>()
        {
            // The parser's message does not echo the URL (which may hold a password).
            return Err(ConfigError::Value {
                key: "database.url",
                reason: format!("is not a PostgreSQL connection string: {err}"),
            });
        }
        if self.mail.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(value("mail.from", "must be an address, like `Portcullis <noreply@example.com>`"));
        }
        if !(1..=i16::MAX).contains(&self.visits.data_key_version) {
            return Err(value("visits.data_key_version", "must be 1 to 32767"));
        }
        if !(1..=3600).contains(&self.visits.sweep_secs) {
            return Err(value("visits.sweep_secs", "must be 1 to 3600"));
        }
        if let Some(url) = &self.mail.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(value("mail.public_url", "must be an http:// or https:// address"));
        }
        if let Some(url) = &self.mail.smtp_url {
            let url = url.expose_secret();
            if !url.is_empty() && lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url).is_err() {
                // The parser's message could echo the URL (and its password): say only what is wrong.
                return Err(value("mail.smtp_url", "must be smtp://[user:pass@]host[:port] or smtps://…"));
            }
        }
        if let Err(err) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            return Err(ConfigError::Value { key: "log.level", reason: format!("is not a valid filter: {err}") });
        }
        check_secret("auth.jwt_secret", self.auth.jwt_secret.as_ref())?;
        check_secret("auth.api_key_pepper", self.auth.api_key_pepper.as_ref())?;
        // Every duration is used as a time span at run time: bound them here, once, rather than
        // let an absurd value overflow at the first login.
        let durations = [
            ("auth.access_token_ttl_secs", self.auth.access_token_ttl_secs),
            ("auth.refresh_token_ttl_secs", self.auth.refresh_token_ttl_secs),
            ("auth.permission_cache_ttl_secs", self.auth.permission_cache_ttl_secs),
            ("stream.heartbeat_secs", self.stream.heartbeat_secs),
            ("stream.client_timeout_secs", self.stream.client_timeout_secs),
            ("stream.session_check_secs", self.stream.session_check_secs),
            ("server.request_timeout_secs", self.server.request_timeout_secs),
            ("database.statement_timeout_ms", self.database.statement_timeout_ms / 1000),
            ("engine.admit_timeout_ms", self.engine.admit_timeout_ms / 1000),
            ("journal.commit_timeout_ms", self.journal.commit_timeout_ms / 1000),
            ("journal.retry_ms", self.journal.retry_ms / 1000),
            ("journal.checkpoint_ms", self.journal.checkpoint_ms / 1000),
            ("controllers.resync_secs", self.controllers.resync_secs),
            ("webhooks.attempt_timeout_secs", self.webhooks.attempt_timeout_secs),
            ("webhooks.disable_after_hours", self.webhooks.disable_after_hours.saturating_mul(3600)),
        ];
        if self.webhooks.retry_schedule_secs.len() > 20
            || self.webhooks.retry_schedule_secs.iter().any(|s| *s > MAX_DURATION_SECS)
        {
            return Err(value("webhooks.retry_schedule_secs", "must be at most 20 waits of at most ten years each"));
        }
        for (key, secs) in durations {
            if secs > MAX_DURATION_SECS {
                return Err(value(key, "must be at most 315360000 (ten years)"));
            }
        }
        if self.stream.threads > 256 {
            return Err(value("stream.threads", "must be at most 256 (0: one per core)"));
        }
        if !(16..=65_536).contains(&self.stream.max_queued_kib) {
            return Err(value("stream.max_queued_kib", "must be between 16 and 65536"));
        }
        if self.auth.access_token_ttl_secs == 0 || self.auth.refresh_token_ttl_secs == 0 {
            return Err(value("auth.access_token_ttl_secs", "and refresh_token_ttl_secs must be positive"));
        }
        Ok(())
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_timeout_secs)
    }
}

fn check_secret(key: &'static str, secret: Option<&SecretString>) -> Result<(), ConfigError> {
    match secret {
        Some(s) if s.expose_secret().len() < MIN_SECRET_BYTES => Err(ConfigError::Value {
            key,
            reason: format!("is too short: it must be at least {MIN_SECRET_BYTES} bytes"),
        }),
        _ => Ok(()),
    }
}

/// The server secrets, once it is known they are present.
#[derive(Clone)]
pub struct Secrets {
    pub jwt_secret: SecretString,
    pub api_key_pepper: SecretString,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets([REDACTED])")
    }
}

impl AuthSettings {
    /// The configured secrets, or an error naming the first one missing.
    pub fn secrets(&self) -> Result<Secrets, ConfigError> {
        let missing = |key: &'static str, var: &str| ConfigError::Value {
            key,
            reason: format!("is required: set {var} (at least {MIN_SECRET_BYTES} bytes) or run `portcullis demo`"),
        };
        Ok(Secrets {
            jwt_secret: self
                .jwt_secret
                .clone()
                .ok_or_else(|| missing("auth.jwt_secret", "PORTCULLIS__AUTH__JWT_SECRET"))?,
            api_key_pepper: self
                .api_key_pepper
                .clone()
                .ok_or_else(|| missing("auth.api_key_pepper", "PORTCULLIS__AUTH__API_KEY_PEPPER"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[expect(clippy::result_large_err, reason = "figment::Jail fixes the closure's signature")]
    fn load(file_text: Option<&str>, env: &[(&str, &str)], overrides: Overrides) -> Result<Settings, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("portcullis.toml");
        if let Some(text) = file_text {
            std::fs::write(&path, text).map_err(|e| e.to_string())?;
        }
        // Figment's Env reads the process environment; jail it so tests do not race each other.
        let mut result = Err(String::new());
        figment::Jail::expect_with(|jail: &mut figment::Jail| -> figment::error::Result<()> {
            jail.clear_env();
            for (k, v) in env {
                jail.set_env(k, v);
            }
            let env = Env::prefixed("PORTCULLIS__").split("__");
            // Figment reports environment keys in their original (upper) case.
            result = Settings::load_from(file_text.map(|_| path.as_path()), &overrides, env)
                .map_err(|e| e.to_string().to_lowercase());
            Ok(())
        });
        result
    }

    #[test]
    fn defaults_load_and_leave_database_managed() {
        let settings = load(None, &[], Overrides::default());
        let settings = settings.as_ref().map_err(String::as_str);
        assert!(matches!(settings, Ok(s) if s.database.url.is_none() && s.server.bind.port() == 8080));
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() -> Result<(), String> {
        let file = "[server]\nbind = \"127.0.0.1:9000\"\nworkers = 3\n[database]\npool_size = 4\n";
        let env = [("PORTCULLIS__DATABASE__POOL_SIZE", "7"), ("PORTCULLIS__SERVER__BIND", "127.0.0.1:9100")];
        let flags = Overrides { bind: "127.0.0.1:9200".parse().ok(), data_dir: Some("/srv/pcl".into()) };
        let s = load(Some(file), &env, flags)?;
        assert_eq!(s.server.workers, 3);
        assert_eq!(s.database.pool_size, 7);
        assert_eq!(s.server.bind.port(), 9200);
        assert_eq!(s.data_dir, PathBuf::from("/srv/pcl"));
        Ok(())
    }

    #[test]
    fn a_duration_too_long_to_use_is_refused_at_start() {
        let err =
            load(None, &[("PORTCULLIS__AUTH__REFRESH_TOKEN_TTL_SECS", "18446744073709551615")], Overrides::default());
        let err = err.err().unwrap_or_default();
        assert!(err.contains("auth.refresh_token_ttl_secs"), "{err}");
    }

    #[test]
    fn a_listener_priority_beyond_real_time_is_refused_at_start() {
        for (var, key) in [
            ("PORTCULLIS__SERVER__DEVICE_PRIORITY", "server.device_priority"),
            ("PORTCULLIS__SERVER__API_PRIORITY", "server.api_priority"),
        ] {
            let err = load(None, &[(var, "100")], Overrides::default());
            let err = err.err().unwrap_or_default();
            assert!(err.contains(key), "{err}");
            let settings = load(None, &[(var, "99")], Overrides::default());
            assert!(matches!(settings, Ok(s) if s.server.device_priority.max(s.server.api_priority) == 99), "{key}");
        }
    }

    #[test]
    fn a_stream_queue_outside_its_bounds_is_refused_at_start() {
        for kib in ["0", "15", "65537"] {
            let err = load(None, &[("PORTCULLIS__STREAM__MAX_QUEUED_KIB", kib)], Overrides::default());
            let err = err.err().unwrap_or_default();
            assert!(err.contains("stream.max_queued_kib"), "{kib}: {err}");
        }
        let settings = load(None, &[("PORTCULLIS__STREAM__MAX_QUEUED_KIB", "16")], Overrides::default());
        assert!(matches!(settings, Ok(s) if s.stream.max_queued_kib == 16));
    }

    #[test]
    fn stream_threads_and_their_scheduling_are_checked_at_start() {
        let err = load(None, &[("PORTCULLIS__STREAM__SCHEDULING", "realtime")], Overrides::default());
        let err = err.err().unwrap_or_default();
        assert!(err.contains("stream") && err.contains("scheduling"), "{err}");
        let err = load(None, &[("PORTCULLIS__STREAM__THREADS", "257")], Overrides::default());
        assert!(err.err().unwrap_or_default().contains("stream.threads"));
        let settings = load(None, &[], Overrides::default());
        assert!(matches!(&settings, Ok(s) if s.stream.scheduling == StreamScheduling::Idle && s.stream.threads == 0));
        let env = [("PORTCULLIS__STREAM__SCHEDULING", "normal"), ("PORTCULLIS__STREAM__THREADS", "3")];
        let settings = load(None, &env, Overrides::default());
        assert!(matches!(&settings, Ok(s) if s.stream.scheduling == StreamScheduling::Normal && s.stream.threads == 3));
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let err = load(Some("[server]\nbnd = \"127.0.0.1:1\"\n"), &[], Overrides::default()).err();
        let err = err.unwrap_or_default();
        assert!(err.contains("bnd"), "{err}");
        assert!(err.contains("server"), "{err}");
    }

    #[test]
    fn unknown_key_in_environment_is_named() {
        let err = load(None, &[("PORTCULLIS__DATABASE__POOLSIZE", "3")], Overrides::default()).err();
        let err = err.unwrap_or_default();
        assert!(err.contains("poolsize"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = load(None, &[("PORTCULLIS__SERVER__WORKERS", "many")], Overrides::default()).err();
        assert!(err.unwrap_or_default().contains("workers"));
        let err = load(Some("[log]\nformat = \"xml\"\n"), &[], Overrides::default()).err();
        assert!(err.unwrap_or_default().contains("format"));
        let err = load(None, &[("PORTCULLIS__LOG__LEVEL", "loud=[")], Overrides::default()).err();
        assert!(err.unwrap_or_default().contains("log.level"));
    }

    #[test]
    fn short_secret_is_refused_without_echoing_it() {
        let err = load(None, &[("PORTCULLIS__AUTH__API_KEY_PEPPER", "hunter2-hunter2")], Overrides::default()).err();
        let err = err.unwrap_or_default();
        assert!(err.contains("auth.api_key_pepper") && err.contains("32 bytes"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() -> Result<(), String> {
        let secret = "s3cr3t-value-that-is-long-enough-for-the-check";
        let url = "postgres://portcullis:pa55word@db.internal/portcullis";
        let env = [("PORTCULLIS__AUTH__JWT_SECRET", secret), ("PORTCULLIS__DATABASE__URL", url)];
        let s = load(None, &env, Overrides::default())?;
        let debug = format!("{s:?}");
        assert!(!debug.contains("s3cr3t") && !debug.contains("pa55word"), "{debug}");
        Ok(())
    }

    #[test]
    fn missing_secret_is_named_when_required() {
        let s = load(None, &[], Overrides::default());
        let err = s.ok().and_then(|s| s.auth.secrets().err()).map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("auth.jwt_secret"));
    }
}
