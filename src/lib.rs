//! Portcullis: a realtime access-control engine.
//!
//! The layers, and the one direction their imports go:
//!
//! ```text
//! http ──> app ──> auth, audit, db, engine ──> portcullis-actors
//!  (edge)  (use cases)  (mechanisms, storage)   (domain, decision, actors)
//! ```
//!
//! Only `http` (its WebSocket sessions included, in `http::stream`) knows HTTP; `app` holds each use case with
//! its transaction, audit row and event; below it nothing imports `app` or `http`. `cli` and
//! `startup` wire the layers together.
//!
//! - [`http`] — the edge: route table, extractors, middleware, the error mapping, the API document.
//! - [`app`] — [`app::App`], the application's handles, and its use cases (`http` calls these).
//! - [`auth`] — identity mechanisms: tokens, principals and the permission table, caches, limits.
//! - [`audit`] — the audit log of security-relevant actions.
//! - [`cli`] — `serve`, `migrate`, `demo`: what each command sets up and runs.
//! - [`config`] — layered settings (defaults, file, environment, flags) with secrets kept secret.
//! - [`startup`] — [`startup::Application`]: the HTTP server on a bound listener, until stopped.
//! - [`error`] — [`error::AppError`], the one error type of the application (`http::error` maps it to HTTP).
//! - [`db`] — the PostgreSQL pool, migrations from `schema/`, pagination, the managed local cluster.
//! - [`engine`] — the engine's server side: loading actors, the journal writer and its spool,
//!   credentials, the OSDP readers it drives.
//! - [`demo`] — the idempotent demo seed and `demo-credentials.json`.
//! - [`simulate`] — virtual turnstiles and an OSDP reader for `demo --simulate`.
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
pub mod outbox;
pub mod simulate;
pub mod startup;
pub mod telemetry;

/// The memory allocator the engine's binaries install (`#[global_allocator]`): mimalloc, which
/// gives memory freed by viewers that leave, or by the start-up load, back to the system.
pub type Allocator = mimalloc::MiMalloc;
