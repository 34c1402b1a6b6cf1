//! The connection under a stream, which a [`SessionActor`](super::session::SessionActor) must be
//! able to end even when its peer never reads.
//!
//! A WebSocket actor runs only when the HTTP dispatcher polls its response body, and the
//! dispatcher stops polling once its write buffer is full: with a peer that never reads, the
//! actor freezes (no heartbeat, no timeout) and the connection is held forever. So each stream
//! knows
//! - its socket ([`Socket`], recorded when the connection is accepted) and whether the connection
//!   still exists;
//! - when it last heard from its peer ([`Flow`]).
//!
//! A session whose peer has not finished the close handshake a grace period after the close, or
//! (watched from outside the actor, which stops running while the dispatcher is stuck) whose peer
//! has been silent past the heartbeat timeout, has its socket shut down (`shutdown(2)`): the
//! dispatcher's write fails and the connection is dropped, with everything queued for it.

use std::any::Any;
use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::dev::Extensions;

/// Recorded for every accepted TCP connection (`HttpServer::on_connect`); dropped with the
/// connection, which is when `alive` turns false.
pub struct Socket {
    fd: RawFd,
    alive: Rc<Cell<bool>>,
    /// Set once the connection carries a stream, for the open-connections gauge.
    streaming: Cell<bool>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.alive.set(false);
        if self.streaming.get() {
            metrics::gauge!("portcullis_stream_connections_open").decrement(1.0);
        }
    }
}

/// The verified client certificate of a TLS connection (its SHA-256 fingerprint, hex).
#[derive(Debug, Clone)]
pub struct ClientCert(pub String);

/// `HttpServer::on_connect` hook: remembers the socket of each TCP connection (plain or TLS), and
/// the client certificate a TLS peer presented (verified against `server.tls.client_ca_file`).
pub fn on_connect(connection: &dyn Any, data: &mut Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let tcp = match connection.downcast_ref::<Tls>() {
        Some(tls) => {
            let (tcp, session) = tls.get_ref();
            if let Some(cert) = session.peer_certificates().and_then(|chain| chain.first()) {
                data.insert(ClientCert(crate::http::tls::fingerprint(cert)));
            }
            Some(tcp)
        }
        None => connection.downcast_ref::<actix_web::rt::net::TcpStream>(),
    };
    if let Some(tcp) = tcp {
        // Small writes go out at once: a stream's frames (and a turnstile's answer) must not wait
        // for the peer's delayed acknowledgement of the one before (Nagle: up to 40 ms).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        data.insert(Socket { fd: tcp.as_raw_fd(), alive: Rc::new(Cell::new(true)), streaming: Cell::new(false) });
    }
}

/// What a session holds of its connection: never the connection itself.
#[derive(Clone)]
pub struct Flow {
    socket: Option<(RawFd, Rc<Cell<bool>>)>,
    last_heard: Rc<Cell<Instant>>,
}

impl Flow {
    /// For a connection about to become a stream.
    pub fn of(socket: Option<&Socket>) -> Flow {
        let socket = socket.map(|s| {
            s.streaming.set(true);
            metrics::gauge!("portcullis_stream_connections_open").increment(1.0);
            (s.fd, s.alive.clone())
        });
        Flow { socket, last_heard: Rc::new(Cell::new(Instant::now())) }
    }

    /// The peer sent something (a frame, a pong).
    pub fn heard(&self) {
        self.last_heard.set(Instant::now());
    }

    pub fn last_heard(&self) -> Instant {
        self.last_heard.get()
    }

    fn alive(&self) -> bool {
        self.socket.as_ref().is_some_and(|(_, alive)| alive.get())
    }

    /// Shuts the socket down now if the connection still exists.
    fn shut_down(&self) {
        // INVARIANT: `alive` is cleared when the connection (and so its file descriptor) is
        // dropped, on this same worker thread: while it is set, `fd` is still this socket.
        if let Some((fd, alive)) = &self.socket
            && alive.get()
        {
            metrics::counter!("portcullis_stream_connections_shut_down_total").increment(1);
            let _ = nix::sys::socket::shutdown(*fd, nix::sys::socket::Shutdown::Both);
        }
    }

    /// Ends the connection after `grace` unless it has ended by then.
    pub fn shut_down_after(&self, grace: Duration) {
        let flow = self.clone();
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(grace).await;
            flow.shut_down();
        });
    }

    /// Watches the connection from outside its session: a WebSocket actor runs only while the
    /// HTTP dispatcher polls its response body, and the dispatcher stops doing so once the socket
    /// stops draining. A session whose peer has been silent for `timeout` (plus one `tick`, the
    /// session's own chance to close it politely) is shut down here.
    pub fn watch(&self, tick: Duration, timeout: Duration) {
        let flow = self.clone();
        actix_web::rt::spawn(async move {
            while flow.alive() {
                actix_web::rt::time::sleep(tick).await;
                if flow.last_heard().elapsed() > timeout + tick {
                    tracing::info!("stream connection silent and not draining: shutting it down");
                    metrics::counter!("portcullis_stream_sessions_dropped_total", "reason" => "heartbeat_timeout")
                        .increment(1);
                    flow.shut_down();
                    break;
                }
            }
        });
    }
}
