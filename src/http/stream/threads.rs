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
//! decisions do not wait behind the fan-out; on a machine kept busy by other work the streams fall
//! behind instead, but do not stop ([`Guard`]).
//!
//! The sessions' own queries (a snapshot, an access check) go through a pool of their own: a
//! connection is driven by the thread that opened it, and no request should wait on one driven by
//! a thread that runs only when nothing else does.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::Arbiter;
use actix_web::rt::net::TcpStream;
use deadpool_postgres::Pool;
use tokio::io::{AsyncRead, AsyncWrite};

use super::session::{self, Setup};
use crate::config::{StreamScheduling, StreamSettings};

/// The stream threads, and the database pool their sessions use.
pub struct StreamThreads {
    /// Joined when dropped (a joinable thread's handle stays valid for the guard until then).
    threads: Vec<Arbiter>,
    next: AtomicUsize,
    pool: Pool,
    /// Under `SCHED_IDLE`, what keeps a starved stream thread from waiting for ever.
    guard: Option<Guard>,
}

impl StreamThreads {
    /// Starts `stream.threads` threads (one per core for 0), under `stream.scheduling`. Must be
    /// called within the actix system.
    pub fn start(settings: &StreamSettings, pool: Pool) -> std::io::Result<StreamThreads> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let count = if settings.threads == 0 { cores } else { settings.threads };
        let threads = (0..count).map(|_| Arbiter::try_new()).collect::<std::io::Result<Vec<_>>>()?;
        let guard = (settings.scheduling == StreamScheduling::Idle).then(|| Guard::start(&threads));
        Ok(StreamThreads { threads, next: AtomicUsize::new(0), pool, guard })
    }

    /// The pool the sessions' queries use.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs the session of `setup` on the next stream thread (on this thread if none is left);
    /// `early` is what the peer sent after its handshake, already read.
    pub fn run<T: Movable>(&self, setup: Setup, mut io: T, early: &[u8]) {
        let at = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(arbiter) = self.threads.get(at % self.threads.len().max(1)) else {
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
        if let Some(guard) = &self.guard {
            guard.stop.store(true, Ordering::SeqCst);
        }
        for arbiter in &self.threads {
            arbiter.stop();
        }
    }
}

impl Drop for StreamThreads {
    fn drop(&mut self) {
        self.stop();
        // The guard first: until the stream threads are joined, the handles it uses stay valid.
        if let Some(thread) = self.guard.as_mut().and_then(|guard| guard.thread.take()) {
            let _ = thread.join();
        }
        for thread in std::mem::take(&mut self.threads) {
            let _ = thread.join();
        }
    }
}

/// How long a stream thread under `SCHED_IDLE` may go without running before it is given the
/// default scheduling.
const STARVED: Duration = Duration::from_millis(100);
/// How long it keeps the default scheduling once given it (then it yields again; starved again,
/// it is raised again). Long beside [`STARVED`]: a machine kept busy tends to stay busy, and each
/// return to `SCHED_IDLE` on it costs the viewers another [`STARVED`].
const RAISED_FOR: Duration = Duration::from_secs(5);
/// How often each stream thread notes that it runs, and the guard looks.
const TICK: Duration = Duration::from_millis(20);

/// `SCHED_IDLE` without starvation. A stream thread under it runs only while no other thread wants
/// its core: on a machine kept busy (a flood of decisions), it could wait for seconds, and its
/// viewers with it. Each stream thread notes every [`TICK`] that it ran, and each of its sessions
/// notes when its viewer falls more than a quarter of the hub's retained window behind
/// ([`falling_behind`]); a thread of the default scheduling looks at those notes, and gives the
/// default scheduling for [`RAISED_FOR`] to a stream thread that has not run for [`STARVED`] or
/// whose viewers are falling behind. The second catches a thread let run now and then, too little
/// to keep up with a flood: its viewers would drift out of the window and be closed
/// (`slow_consumer`). A stream thread is then kept off the CPU for about [`STARVED`] at most before
/// it gets an ordinary thread's share; on a machine flooded with decisions its viewers still fall
/// behind (by up to a few hundred milliseconds in the bench's `revocation`), but they do not stop
/// and lose nothing. A thread merely busy (a thousand viewers keeping up) stays under `SCHED_IDLE`:
/// wherever the machine has room, a request still takes the core from a stream thread at once.
struct Guard {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The stream threads, by name (see [`crate::telemetry::name_thread`]).
pub const STREAM_THREAD: &std::ffi::CStr = c"stream";

/// What the guard knows of one stream thread.
#[derive(Default)]
struct Lane {
    /// The thread's handle, once it has put itself under `SCHED_IDLE` (0 until then, or if refused).
    handle: AtomicU64,
    /// When it last ran (milliseconds since the guard started).
    ran_at: AtomicU64,
    /// Set by its sessions when a viewer falls behind; taken by the guard.
    behind: AtomicBool,
}

thread_local! {
    /// The calling stream thread's lane (none on other threads).
    static LANE: std::cell::RefCell<Option<Arc<Lane>>> = const { std::cell::RefCell::new(None) };
}

/// Notes that a viewer of the calling stream thread is falling behind the events (see [`Guard`]);
/// nothing on another thread, or without a guard.
pub fn falling_behind() {
    LANE.with_borrow(|lane| {
        if let Some(lane) = lane
            && !lane.behind.load(Ordering::Relaxed)
        {
            lane.behind.store(true, Ordering::Relaxed);
        }
    });
}

impl Guard {
    fn start(arbiters: &[Arbiter]) -> Guard {
        let epoch = Instant::now();
        let lanes: Vec<Arc<Lane>> = arbiters.iter().map(|_| Arc::new(Lane::default())).collect();
        for (arbiter, lane) in arbiters.iter().zip(&lanes) {
            let lane = lane.clone();
            arbiter.spawn_fn(move || {
                crate::telemetry::name_thread(STREAM_THREAD);
                LANE.set(Some(lane.clone()));
                match portcullis_actors::sched::idle() {
                    Ok(()) => lane.handle.store(portcullis_actors::sched::current_handle(), Ordering::SeqCst),
                    Err(err) => {
                        tracing::warn!(error = %err, "a stream thread runs under the default scheduling: SCHED_IDLE refused");
                    }
                }
                actix_rt::spawn(async move {
                    let mut ticks = actix_rt::time::interval(TICK);
                    loop {
                        ticks.tick().await;
                        lane.ran_at.store(epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
                    }
                });
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new().name("stream-guard".to_owned()).spawn(move || {
            // When each lane was raised (on the guard's clock, like `ran_at`).
            let mut raised: Vec<Option<Duration>> = vec![None; lanes.len()];
            while !stopped.load(Ordering::SeqCst) {
                std::thread::sleep(TICK);
                let now = epoch.elapsed();
                for (lane, raised) in lanes.iter().zip(raised.iter_mut()) {
                    let handle = lane.handle.load(Ordering::SeqCst);
                    if handle == 0 {
                        continue;
                    }
                    let ran_at = Duration::from_millis(lane.ran_at.load(Ordering::SeqCst));
                    let behind = lane.behind.swap(false, Ordering::Relaxed);
                    match raised {
                        None if (now.saturating_sub(ran_at) > STARVED || behind) && set_idle(handle, false) => {
                            metrics::counter!("portcullis_stream_threads_raised_total").increment(1);
                            *raised = Some(now);
                        }
                        Some(since) if now.saturating_sub(*since) > RAISED_FOR && set_idle(handle, true) => {
                            *raised = None;
                        }
                        _ => {}
                    }
                }
            }
        });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(err) => {
                tracing::warn!(error = %err, "no guard for the stream threads: under SCHED_IDLE they may starve on a busy machine");
                None
            }
        };
        Guard { stop, thread }
    }
}

/// Puts the stream thread of `handle` under `SCHED_IDLE` or the default scheduling; whether it took.
fn set_idle(handle: u64, idle: bool) -> bool {
    match portcullis_actors::sched::set_idle_of(handle, idle) {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(error = %err, idle, "a stream thread's scheduling was not changed");
            false
        }
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
