//! Integration tests: the real server, real sockets, a real PostgreSQL.

mod helpers;
mod hostile_input;

mod api_keys;
mod authz;
mod dashboard;
mod decisions;
pub mod engine_process;
mod errors;
mod identity;
mod migrations;
mod orgs;
mod rules;
mod security;
mod seed;
mod service;
mod site;
mod streams;
