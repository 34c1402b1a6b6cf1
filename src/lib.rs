//! Portcullis: a realtime access-control engine.
//!
//! - [`app`] — [`app::App`], the application's handles, and its use cases (http calls these).
//! - [`auth`] — identity (sessions, tokens, API keys), the permission table, the org guard.
//! - [`audit`] — the audit log of security-relevant actions.
//! - [`cli`] — `serve`, `migrate`, `demo`: what each command sets up and runs.
//! - [`config`] — layered settings (defaults, file, environment, flags) with secrets kept secret.
//! - [`startup`] — [`startup::Application`]: the HTTP server on a bound listener, until stopped.
//! - [`http`] — extractors, the request-context middleware, and the routes.
//! - [`stream`] — live entry streams: the WebSocket SessionActor and its snapshot.
//! - [`error`] — [`error::AppError`], the one error type of the application (`http::error` maps it to HTTP).
//! - [`db`] — the PostgreSQL pool, migrations from `schema/`, the managed local cluster.
//! - [`engine`] — the engine's server side: loading actors, the journal writer, credentials.
//! - [`demo`] — the idempotent demo seed and `demo-credentials.json`.
//! - [`crypto`] — password hashing and peppered HMAC for secrets looked up by value.
//! - [`telemetry`] — tracing logs and the Prometheus recorder.
//!
//! Domain types and the actors that decide live in the `portcullis-actors` crate.

pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod engine;
pub mod error;
pub mod http;
pub mod startup;
pub mod stream;
pub mod telemetry;
