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
    format!("host={socket} user={} dbname={dbname}", portcullis::db::managed::SUPERUSER)
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
    // The cluster outlives runs: the first test of a run drops what earlier runs left (this
    // process alone uses the shared cluster), so it does not grow without end.
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_try_init(|| async {
            let db = connect("postgres").await?;
            let stale = db.query("SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'", &[]).await?;
            for row in stale {
                let name: String = row.get(0);
                db.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await?;
            }
            Ok::<(), Box<dyn std::error::Error>>(())
        })
        .await?;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    connect("postgres").await?.batch_execute(&format!("CREATE DATABASE {name}")).await?;
    Ok(name)
}

/// Settings as the tests run the engine: defaults, port 0, the given database.
pub fn test_settings(dbname: &str) -> TestResult<Settings> {
    // A data dir of its own (the journal's spool lives there), beside the shared cluster.
    let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("apps").join(dbname);
    let overrides = Overrides { bind: "127.0.0.1:0".parse().ok(), data_dir: Some(data_dir) };
    // A prefix nobody sets, so the developer's own PORTCULLIS__* variables cannot leak in.
    let mut settings = Settings::load_from(None, &overrides, Env::prefixed("PORTCULLIS_TEST_UNSET__"))?;
    settings.database.url = Some(SecretString::from(connection_string(dbname)));
    settings.database.pool_size = 4;
    settings.server.workers = 1;
    settings.auth.jwt_secret = Some(SecretString::from(JWT_SECRET.to_owned()));
    settings.auth.api_key_pepper = Some(SecretString::from(PEPPER.to_owned()));
    // Webhook receivers in the tests listen on 127.0.0.1.
    settings.webhooks.allow_private_addresses = true;
    Ok(settings)
}

pub struct TestApp {
    pub address: String,
    /// The device listener's address, when the settings configured one.
    pub device_address: Option<String>,
    pub dbname: String,
    pub client: awc::Client,
    /// The running engine, for tests that publish events directly.
    pub engine: portcullis_actors::engine::Engine,
}

/// Starts the engine on port 0 against a fresh, migrated database.
pub async fn spawn_app() -> TestResult<TestApp> {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with settings adjusted first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestResult<TestApp> {
    spawn_app_on(fresh_database().await?, adjust).await
}

/// Another engine on an existing database (it loads what is there), with settings adjusted
/// first (give it a `data_dir` of its own).
pub async fn spawn_app_on(dbname: String, adjust: impl FnOnce(&mut Settings)) -> TestResult<TestApp> {
    let mut settings = test_settings(&dbname)?;
    adjust(&mut settings);
    // `TEST_LOG=1 cargo test …` shows the engine's log (a failing request's cause is there).
    if std::env::var_os("TEST_LOG").is_some() {
        portcullis::telemetry::init_logging(&settings.log);
    }
    let db = Database::open(&settings.database, &settings.data_dir).await?;
    let app = Application::build(settings, db).await?;
    let address = format!("http://127.0.0.1:{}", app.port());
    let device_address = app.device_port().map(|port| format!("http://127.0.0.1:{port}"));
    let engine = app.engine().clone();
    actix_web::rt::spawn(app.run_until_stopped());
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    Ok(TestApp { address, device_address, dbname, client, engine })
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
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// The stable error code of an error reply.
    pub fn error_code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_owned)
    }
}

/// A signed-in operator.
#[derive(Debug, Clone)]
pub struct Login {
    pub user_id: String,
    pub email: String,
    pub access: String,
    pub refresh: String,
}

pub const PASSWORD: &str = "correct horse battery staple";

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn db(&self) -> TestResult<tokio_postgres::Client> {
        connect(&self.dbname).await
    }

    /// A request with a bearer token and, optionally, a JSON body.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> TestResult<Reply> {
        let method = awc::http::Method::from_bytes(method.as_bytes())?;
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.insert_header(("authorization", format!("Bearer {token}")));
        }
        match body {
            Some(body) => {
                let bytes = serde_json::to_vec(&body)?;
                self.send(request.insert_header(("content-type", "application/json")), Some(&bytes)).await
            }
            None => self.send(request, None).await,
        }
    }

    /// Creates a platform administrator directly in the database (as `demo` does: the first
    /// administrator cannot be created through the API) and signs in.
    pub async fn platform_admin(&self) -> TestResult<Login> {
        let email = format!("root-{}@example.test", uuid::Uuid::new_v4().simple());
        let hash = portcullis::crypto::hash_password(PASSWORD)?;
        self.db()
            .await?
            .execute(
                "INSERT INTO users (id, email, name, password_hash, is_platform_admin) VALUES ($1, $2, 'Root', $3, true)",
                &[&uuid::Uuid::now_v7(), &email, &hash],
            )
            .await?;
        self.login(&email, PASSWORD).await
    }

    pub async fn login(&self, email: &str, password: &str) -> TestResult<Login> {
        let reply = self
            .call("POST", "/api/v1/auth/login", None, Some(serde_json::json!({"email": email, "password": password})))
            .await?;
        if reply.status != 200 {
            return Err(format!("login failed: {} {}", reply.status, reply.text()).into());
        }
        let body = reply.json();
        Ok(Login {
            user_id: body["user"]["id"].as_str().unwrap_or_default().to_owned(),
            email: email.to_owned(),
            access: body["access_token"].as_str().unwrap_or_default().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Creates an organization through the API and returns its id.
    pub async fn create_org(&self, admin: &Login, slug: &str) -> TestResult<String> {
        let body = serde_json::json!({"name": format!("Org {slug}"), "slug": slug, "timezone": "Europe/Berlin"});
        let reply = self.call("POST", "/api/v1/orgs", Some(&admin.access), Some(body)).await?;
        if reply.status != 201 {
            return Err(format!("create org failed: {} {}", reply.status, reply.text()).into());
        }
        Ok(reply.json()["id"].as_str().unwrap_or_default().to_owned())
    }

    /// Creates a user with `role` in `org` through the API and signs them in.
    pub async fn create_user(&self, admin: &Login, org: &str, role: &str) -> TestResult<Login> {
        let email = format!("{role}-{}@example.test", uuid::Uuid::new_v4().simple());
        let body = serde_json::json!({"email": email, "name": format!("A {role}"), "password": PASSWORD, "role": role});
        let reply = self.call("POST", &format!("/api/v1/orgs/{org}/users"), Some(&admin.access), Some(body)).await?;
        if reply.status != 201 {
            return Err(format!("create user failed: {} {}", reply.status, reply.text()).into());
        }
        self.login(&email, PASSWORD).await
    }

    /// Creates an API key through the API; returns (id, key).
    pub async fn create_key(
        &self,
        admin: &Login,
        org: &str,
        scopes: &[&str],
        gates: &[&str],
    ) -> TestResult<(String, String)> {
        let body = serde_json::json!({"name": "test key", "scopes": scopes, "gate_ids": gates});
        let reply = self.call("POST", &format!("/api/v1/orgs/{org}/api-keys"), Some(&admin.access), Some(body)).await?;
        if reply.status != 201 {
            return Err(format!("create key failed: {} {}", reply.status, reply.text()).into());
        }
        let body = reply.json();
        Ok((body["id"].as_str().unwrap_or_default().to_owned(), body["key"].as_str().unwrap_or_default().to_owned()))
    }

    pub async fn send(&self, request: awc::ClientRequest, body: Option<&[u8]>) -> TestResult<Reply> {
        let mut response = match body {
            Some(bytes) => request.send_body(bytes.to_vec()).await?,
            None => request.send().await?,
        };
        let body = response.body().limit(16 * 1024 * 1024).await?.to_vec();
        Ok(Reply { status: response.status().as_u16(), headers: response.headers().clone(), body })
    }

    pub async fn get(&self, path: &str) -> TestResult<Reply> {
        self.send(self.client.get(self.url(path)), None).await
    }
}

/// The engine binary built for this test run.
pub fn engine_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_portcullis"))
}

/// Every row of every table of a database, as text: what someone with a copy of it could read.
pub async fn dump_database(db: &tokio_postgres::Client) -> TestResult<String> {
    let tables: Vec<String> = db
        .query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut everything = String::new();
    for table in tables {
        let row = db.query_one(&format!("SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t"), &[]).await?;
        everything.push_str(row.get::<_, &str>(0));
    }
    Ok(everything)
}
