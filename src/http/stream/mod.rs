//! Live entry streams over WebSocket: the handshake is answered by the route like any request,
//! then [`upgrade`] hands the socket to one [`session::SessionActor`] per connection, on a thread
//! of [`threads`] apart from the HTTP workers. What a viewer may see and the first frame are
//! `app::streams`.

pub mod connection;
pub mod session;
pub mod threads;
pub mod upgrade;
