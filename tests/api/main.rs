//! Integration tests: the real server, real sockets, a real PostgreSQL.

mod helpers;

mod api_keys;
mod authz;
mod engine_process;
mod errors;
mod identity;
mod migrations;
mod orgs;
mod seed;
mod service;
