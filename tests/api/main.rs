//! Integration tests: the real server, real sockets, a real PostgreSQL.

mod helpers;

mod engine_process;
mod errors;
mod migrations;
mod seed;
mod service;
