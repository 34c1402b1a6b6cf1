//! `spawn_app()`: the real server on port 0, against a fresh database in a managed PostgreSQL
//! cluster that the whole test run shares (created once under target/tmp, stopped when the test
//! process exits).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use figment::providers::Env;
use portcullis::config::{Overrides, Settings};
use portcullis::db::Database;
use portcullis::db::managed::ManagedPostgres;
use portcullis::startup::Application;
use secrecy::SecretString;
use serde_json::Value;
use tokio_postgres::NoTls;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef-0123456789";
pub const PEPPER: &str = "test-api-key-pepper-0123456789abcdef-012345";

/// The shared cluster. Never dropped: its guard process stops it when this process exits.
fn cluster() -> &'static ManagedPostgres {
    static CLUSTER: OnceLock<ManagedPostgres> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let shared = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pg-cluster");
        // Reuse one cluster across runs (initdb once); a second concurrent test process, or a
        // path too long for a unix socket, gets its own throwaway cluster instead.
        let started = ManagedPostgres::start(&shared, None, "postgres").or_else(|_| {
            let dir = std::env::temp_dir().join(format!("pcl-test-{}", std::process::id()));
            ManagedPostgres::start(&dir, None, "postgres")
        });
        match started {
            Ok(pg) => pg,
            Err(err) => {
                // Nothing can run without the database; say why once, plainly.
                eprintln!("cannot start the test PostgreSQL cluster: {err}");
                std::process::exit(1)
            }
        }
    })
}

/// A connection string for `dbname` in the shared cluster.
pub fn connection_string(dbname: &str) -> String {
    let socket = cluster().socket_dir().display().to_string();
    format!(
        "host={socket} user={} dbname={dbname}",
        portcullis::db::managed::SUPERUSER
    )
}

/// A direct connection to `dbname`, for tests that look at what the engine stored.
pub async fn connect(dbname: &str) -> TestResult<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(&connection_string(dbname), NoTls).await?;
    actix_web::rt::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Creates an empty database with a unique name and returns the name.
pub async fn fresh_database() -> TestResult<String> {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    connect("postgres")
        .await?
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    Ok(name)
}

/// Settings as the tests run the engine: defaults, port 0, the given database.
pub fn test_settings(dbname: &str) -> TestResult<Settings> {
    let overrides = Overrides {
        bind: "127.0.0.1:0".parse().ok(),
        data_dir: None,
    };
    // A prefix nobody sets, so the developer's own PORTCULLIS__* variables cannot leak in.
    let mut settings =
        Settings::load_from(None, &overrides, Env::prefixed("PORTCULLIS_TEST_UNSET__"))?;
    settings.database.url = Some(SecretString::from(connection_string(dbname)));
    settings.database.pool_size = 4;
    settings.server.workers = 1;
    settings.auth.jwt_secret = Some(SecretString::from(JWT_SECRET.to_owned()));
    settings.auth.api_key_pepper = Some(SecretString::from(PEPPER.to_owned()));
    Ok(settings)
}

pub struct TestApp {
    pub address: String,
    pub dbname: String,
    pub client: awc::Client,
}

/// Starts the engine on port 0 against a fresh, migrated database.
pub async fn spawn_app() -> TestResult<TestApp> {
    let dbname = fresh_database().await?;
    let settings = test_settings(&dbname)?;
    let db = Database::open(&settings.database, &settings.data_dir).await?;
    let app = Application::build(settings, db)?;
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    Ok(TestApp {
        address,
        dbname,
        client,
    })
}

/// A response, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The stable error code of an error reply.
    pub fn error_code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_owned)
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn send(
        &self,
        request: awc::ClientRequest,
        body: Option<&[u8]>,
    ) -> TestResult<Reply> {
        let mut response = match body {
            Some(bytes) => request.send_body(bytes.to_vec()).await?,
            None => request.send().await?,
        };
        let body = response.body().limit(16 * 1024 * 1024).await?.to_vec();
        Ok(Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body,
        })
    }

    pub async fn get(&self, path: &str) -> TestResult<Reply> {
        self.send(self.client.get(self.url(path)), None).await
    }
}

/// The engine binary built for this test run.
pub fn engine_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_portcullis"))
}
