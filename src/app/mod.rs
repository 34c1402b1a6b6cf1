//! The application layer: one module per family of use cases. A command takes the application's
//! handles ([`App`]) and a typed input, runs its one transaction with its audit row inside, updates
//! the engine (which publishes the event) and returns a typed result or an [`AppError`].
//!
//! Direction: `http -> app -> (auth, store, engine) -> actors`. Nothing here knows HTTP.
//!
//! [`AppError`]: crate::error::AppError

pub mod controllers;
pub mod decisions;
pub mod guest;
pub mod hosts;
pub mod input;
pub mod keys;
pub mod notifications;
pub mod orgs;
pub mod panels;
pub mod passes;
pub mod readers;
pub mod records;
pub mod rrule;
pub mod service;
pub mod sessions;
pub mod site;
pub mod streams;
pub mod users;
pub mod visitors;
pub mod visits;
pub mod webhooks;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::Pool;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::audit::Actor;
use crate::auth::AuthContext;
use crate::auth::principal::Principal;
use crate::config::Settings;

/// The application's handles, shared read-only by every worker.
#[derive(Clone)]
pub struct App {
    pub pool: Pool,
    pub settings: Arc<Settings>,
    pub auth: Arc<AuthContext>,
    pub engine: portcullis_actors::engine::Engine,
    /// The OSDP readers the engine drives.
    pub readers: Arc<crate::engine::readers::Readers>,
    /// The controllers whose card tables the engine keeps.
    pub controllers: Arc<crate::engine::controllers::Controllers>,
    /// Delivers the outbox (woken when a use case commits an event).
    pub outbox: Arc<crate::outbox::dispatcher::Dispatcher>,
    pub metrics: PrometheusHandle,
    /// What open streams watch with (one check for all of them: `streams::check_watchers`).
    pub watchers: Arc<streams::Watchers>,
    pub schema_version: i32,
    pub started_at: Instant,
}

/// The one rule of what a host sees: only their own (the passes they issued, their visitors,
/// appointments and visits). `Some(user)` narrows a query to that host; `None`, everyone else with
/// the permission, sees all.
pub fn host_scope(principal: &Principal, org_id: uuid::Uuid) -> Option<uuid::Uuid> {
    (principal.role_in(org_id) == Some(portcullis_actors::domain::Role::Host)).then(|| principal.user_id()).flatten()
}

/// Who asks, and from where: what a use case needs of the caller for its checks and audit row.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub principal: &'a Principal,
    pub addr: Option<IpAddr>,
}

impl Caller<'_> {
    pub fn actor(&self) -> Actor {
        Actor::of(self.principal, self.addr)
    }
}
