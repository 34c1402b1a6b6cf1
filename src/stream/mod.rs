//! Live entry streams: one [`session::SessionActor`] per WebSocket connection.

pub mod connection;
pub mod session;
pub mod snapshot;
