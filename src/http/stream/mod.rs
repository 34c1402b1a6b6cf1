//! Live entry streams over WebSocket: one [`session::SessionActor`] per connection, and the
//! [`connection`] underneath it. What a viewer may see and the first frame are `app::streams`.

pub mod connection;
pub mod pieces;
pub mod session;
