//! The threads the live streams run on, apart from the HTTP workers that answer requests.
//!
//! An event for a thousand viewers is a thousand sessions to run and a thousand sockets to write.
//! Run on the HTTP workers, that work sits in the same queue as the requests those workers answer,
//! and a turnstile asking on the API port waits behind it. Once its handshake is answered, a
//! session therefore moves to a stream thread (chosen in turn), and its socket is registered with
//! that thread's reactor, so the workers do nothing more for it.
//!
//! Stream threads run under `SCHED_IDLE` by default (`stream.scheduling`): a core goes to them
//! only while no other thread wants it, and is taken back the moment one does. Requests and
//! decisions never wait behind the fan-out; on a machine kept busy by other work the streams fall
//! behind instead, and a viewer left behind the hub's retained window is closed with
//! `slow_consumer` and resumes with `since`.
//!
//! The sessions' own queries (a snapshot, an access check) go through a pool of their own: a
//! connection is driven by the thread that opened it, and no request should wait on one driven by
//! a thread that runs only when nothing else does.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::dev::ArbiterHandle;
use actix_web::rt::net::TcpStream;
use deadpool_postgres::Pool;
use tokio::io::{AsyncRead, AsyncWrite};

use super::session::{self, Setup};
use crate::config::{StreamScheduling, StreamSettings};

/// The stream threads, and the database pool their sessions use.
pub struct StreamThreads {
    arbiters: Vec<ArbiterHandle>,
    next: AtomicUsize,
    pool: Pool,
}

impl StreamThreads {
    /// Starts `stream.threads` threads (one per core for 0), under `stream.scheduling`. Must be
    /// called within the actix system.
    pub fn start(settings: &StreamSettings, pool: Pool) -> StreamThreads {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let count = if settings.threads == 0 { cores } else { settings.threads };
        let idle = settings.scheduling == StreamScheduling::Idle;
        let arbiters = (0..count)
            .map(|_| {
                let arbiter = actix::Arbiter::new().handle();
                if idle {
                    arbiter.spawn_fn(|| {
                        if let Err(err) = portcullis_actors::sched::idle() {
                            tracing::warn!(error = %err, "a stream thread runs under the default scheduling: SCHED_IDLE refused");
                        }
                    });
                }
                arbiter
            })
            .collect();
        StreamThreads { arbiters, next: AtomicUsize::new(0), pool }
    }

    /// The pool the sessions' queries use.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs the session of `setup` on the next stream thread (on this thread if none is left);
    /// `early` is what the peer sent after its handshake, already read.
    pub fn run<T: Movable>(&self, setup: Setup, mut io: T, early: &[u8]) {
        let at = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(arbiter) = self.arbiters.get(at % self.arbiters.len().max(1)) else {
            session::start(setup, io, early);
            return;
        };
        let early = early.to_vec();
        let moved = arbiter.spawn_fn(move || {
            if let Err(err) = io.rehome() {
                // Still usable where it is: its reactor is a worker's, which wakes this thread.
                tracing::debug!(error = %err, "stream socket left with its worker's reactor");
            }
            session::start(setup, io, &early);
        });
        if !moved {
            // The thread has stopped (the server is shutting down): the connection ends here.
            tracing::debug!("stream thread gone; connection dropped");
        }
    }

    /// Stops the threads; their sessions end with them (at shutdown).
    pub fn stop(&self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Drop for StreamThreads {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A connection a stream thread can take over.
pub trait Movable: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Registers the socket with the calling thread's reactor (the old registration is dropped).
    fn rehome(&mut self) -> std::io::Result<()>;
}

impl Movable for TcpStream {
    fn rehome(&mut self) -> std::io::Result<()> {
        *self = registered_here(self)?;
        Ok(())
    }
}

impl Movable for actix_tls::accept::rustls_0_23::TlsStream<TcpStream> {
    fn rehome(&mut self) -> std::io::Result<()> {
        let (tcp, _) = self.get_mut();
        *tcp = registered_here(tcp)?;
        Ok(())
    }
}

/// The same socket (a duplicate of its descriptor: non-blocking, `TCP_NODELAY` and all), registered
/// with the calling thread's reactor.
fn registered_here(tcp: &TcpStream) -> std::io::Result<TcpStream> {
    let socket = std::net::TcpStream::from(tcp.as_fd().try_clone_to_owned()?);
    socket.set_nonblocking(true)?;
    TcpStream::from_std(socket)
}
