//! Integration tests: the real server, real sockets, a real PostgreSQL.

// Tests read JSON answers by indexing (`body["error"]["code"]`), which never panics on a
// `serde_json::Value` (a missing key is `Null`).
#![allow(clippy::indexing_slicing)]

mod helpers;
mod hostile_input;

mod adapters;
mod api_keys;
mod authz;
mod controllers;
mod dashboard;
mod decisions;
pub mod engine_process;
mod errors;
mod faults;
mod identity;
mod libosdp;
mod migrations;
mod notifications;
mod orgs;
mod rules;
mod schemathesis;
mod security;
mod seed;
mod service;
mod site;
mod streams;
mod tls;
mod visits;
pub mod webhooks;
