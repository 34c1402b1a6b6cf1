//! SessionActor: one per WebSocket connection (operator or security dashboard).
//!
//! It subscribes to its organization's events, sends a snapshot (or, after a reconnect with
//! `since`, the events it missed), then one frame per event, filtered by the chosen gates and by
//! the viewer's role. It never slows a publisher: events come from a broadcast channel, taken at
//! the pace of the viewer's socket (while more than `stream.max_queued_kib` waits for it, they
//! wait in the hub's retained window instead), and a viewer that falls behind that window is
//! closed with `slow_consumer` and can resume with `since`. It pings, closes connections that
//! went silent, and closes itself when the token expires or its session or key is revoked.
//!
//! The session owns its socket once the handshake is answered ([`super::upgrade`]): it reads the
//! peer's frames through a small buffer and writes its own frames from a queue of shared bytes,
//! so a viewer costs what it holds and no HTTP connection's buffers. Because the session runs
//! whether or not its peer reads, a peer that stops reading cannot freeze it: what waits for it is
//! bounded (events stop being taken, pongs stop being answered), and a socket that takes nothing
//! for `stream.client_timeout_secs` while frames wait is dropped.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws;
use bytes::{Buf, Bytes, BytesMut};
use deadpool_postgres::Pool;
use futures_util::StreamExt as _;
use portcullis_actors::engine::Engine;
use portcullis_actors::events::{Backlog, Envelope};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::codec::{Decoder, Encoder};
use uuid::Uuid;

use crate::app::streams::{self, Credential, Filter, Watching, lost_access};
use crate::auth::{AccessChange, AuthContext};

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub client_timeout: Duration,
}

/// How long a closed session waits for its peer to answer the close before dropping the
/// connection.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Events a session takes in one turn before letting the other sessions of its thread have
/// theirs.
const EVENTS_A_TURN: usize = 32;

/// Frames written in one system call, at most.
const WRITE_SLICES: usize = 32;

/// The largest frame a viewer may send (a viewer has nothing to say beyond pongs and a close).
const MAX_INCOMING_FRAME: usize = 4096;

/// Everything a session starts from.
pub struct Setup {
    pub org_id: Uuid,
    pub engine: Engine,
    pub pool: Pool,
    pub auth: Arc<AuthContext>,
    pub filter: Filter,
    pub since: Option<u64>,
    pub credential: Credential,
    /// The stream's entry among those the node checks for changes made elsewhere.
    pub watching: Watching,
    pub timing: Timing,
    /// Bytes that may wait for the socket before the session stops taking events for it.
    pub max_queued: usize,
}

/// A connection's byte stream, plain or TLS.
pub trait Socket: AsyncRead + AsyncWrite {}

impl<T: AsyncRead + AsyncWrite> Socket for T {}

/// A session's connection: its socket, the frames waiting for it, in order (each a whole
/// WebSocket frame), and what the peer sent that is not yet a whole frame.
struct Connection {
    io: Pin<Box<dyn Socket>>,
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// The front frame has been partly written.
    front_begun: bool,
    /// The socket took bytes since the last heartbeat.
    progressed: bool,
    /// Heartbeats in a row at which frames waited and the socket had taken nothing.
    stalled: u32,
    /// The session's task, from its last poll of the connection: woken to write a frame queued
    /// from elsewhere (a timer, a check), as the socket and the hub wake it.
    task: Option<Waker>,
    /// The socket failed (the peer is gone).
    broken: bool,
    read_buf: BytesMut,
    codec: ws::Codec,
}

/// Where a write left the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrote {
    /// Everything is written.
    Drained,
    /// The socket takes no more for now (it wakes the task when it does).
    Blocked,
    Broken,
}

impl Connection {
    fn new(io: Pin<Box<dyn Socket>>, early: &[u8]) -> Self {
        Connection {
            io,
            frames: VecDeque::new(),
            bytes: 0,
            front_begun: false,
            progressed: false,
            stalled: 0,
            task: None,
            broken: false,
            read_buf: BytesMut::from(early),
            codec: ws::Codec::new().max_size(MAX_INCOMING_FRAME),
        }
    }

    fn push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Writes what waits until the socket would block.
    fn write(&mut self, cx: &mut TaskContext<'_>) -> Wrote {
        if self.broken {
            return Wrote::Broken;
        }
        while !self.frames.is_empty() {
            // Everything waiting, in one system call (up to `WRITE_SLICES` frames).
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let count = self.frames.len().min(WRITE_SLICES);
            for (slice, frame) in slices.iter_mut().zip(&self.frames) {
                *slice = IoSlice::new(frame);
            }
            match self.io.as_mut().poll_write_vectored(cx, slices.get(..count).unwrap_or(&slices)) {
                Poll::Pending => return Wrote::Blocked,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    self.broken = true;
                    return Wrote::Broken;
                }
                Poll::Ready(Ok(written)) => {
                    self.progressed = true;
                    self.bytes -= written;
                    let mut left = written;
                    while left > 0
                        && let Some(front) = self.frames.front_mut()
                    {
                        if left < front.len() {
                            front.advance(left);
                            self.front_begun = true;
                            left = 0;
                        } else {
                            left -= front.len();
                            self.frames.pop_front();
                            self.front_begun = false;
                        }
                    }
                }
            }
        }
        // TLS: the records made of what was written go out now.
        match self.io.as_mut().poll_flush(cx) {
            Poll::Pending => Wrote::Blocked,
            Poll::Ready(Ok(())) => Wrote::Drained,
            Poll::Ready(Err(_)) => {
                self.broken = true;
                Wrote::Broken
            }
        }
    }

    /// The peer's next frame; `None` once it is gone.
    fn poll_frame(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<ws::Frame, ws::ProtocolError>>> {
        loop {
            match self.codec.decode(&mut self.read_buf) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Err(err) => return Poll::Ready(Some(Err(err))),
                Ok(None) => {}
            }
            match tokio_util::io::poll_read_buf(self.io.as_mut(), cx, &mut self.read_buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// Drops everything not yet begun (the frame being written, if any, is finished: the peer
    /// must see whole frames).
    fn discard_waiting(&mut self) {
        self.frames.truncate(usize::from(self.front_begun));
        self.bytes = self.frames.iter().map(Bytes::len).sum();
    }

    /// At a heartbeat: whether frames have waited, and the socket taken nothing, for longer
    /// than `timeout`.
    fn stalled(&mut self, heartbeat: Duration, timeout: Duration) -> bool {
        if self.frames.is_empty() || std::mem::take(&mut self.progressed) {
            self.stalled = 0;
        } else {
            self.stalled = self.stalled.saturating_add(1);
        }
        heartbeat.checked_mul(self.stalled).is_none_or(|waited| waited > timeout)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    /// Our close frame is queued; the connection ends once the peer answers (or the grace ends).
    Sent,
    /// Our close frame is written; the grace runs.
    Lingering,
    /// The peer closed: the connection ends once our answer is written.
    Answered,
}

pub struct SessionActor {
    org_id: Uuid,
    engine: Engine,
    pool: Pool,
    auth: Arc<AuthContext>,
    filter: Filter,
    since: Option<u64>,
    credential: Credential,
    _watching: Watching,
    timing: Timing,
    max_queued: usize,
    conn: Connection,
    last_heard: Instant,
    closing: Closing,
    /// `portcullis_stream_frames_total`, looked up once rather than per frame.
    frames: metrics::Counter,
    /// The newest seq sent (or filtered out), in the snapshot or as an event: events up to it
    /// are done with.
    live_after: u64,
    /// How far behind the organization's events the viewer is.
    backlog: Backlog,
}

/// Starts the session of `setup` on a connection whose handshake has been answered; `early` is
/// what the peer sent after its handshake, already read.
pub fn start<T>(setup: Setup, io: T, early: &[u8])
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let connection = Connection::new(Box::pin(io), early);
    SessionActor::create(move |_| SessionActor::new(setup, connection));
}

/// A text frame.
fn text_frame(text: bytestring::ByteString) -> Option<Bytes> {
    encode(ws::Message::Text(text))
}

/// One server frame (unmasked), or `None` if it cannot be encoded (logged).
fn encode(message: ws::Message) -> Option<Bytes> {
    let mut frame = BytesMut::new();
    match ws::Codec::new().encode(message, &mut frame) {
        Ok(()) => Some(frame.freeze()),
        Err(err) => {
            tracing::warn!(error = %err, "stream frame not encoded");
            None
        }
    }
}

impl SessionActor {
    fn new(setup: Setup, conn: Connection) -> Self {
        let Setup { org_id, engine, pool, auth, filter, since, credential, watching, timing, max_queued } = setup;
        let frames = metrics::counter!("portcullis_stream_frames_total");
        let backlog = engine.events().backlog(org_id);
        SessionActor {
            org_id,
            engine,
            pool,
            auth,
            filter,
            since,
            credential,
            _watching: watching,
            timing,
            max_queued,
            conn,
            last_heard: Instant::now(),
            closing: Closing::Open,
            frames,
            live_after: 0,
            backlog,
        }
    }

    /// Re-checks the viewer's access now; closes the stream if it is gone.
    fn recheck(&self, ctx: &mut Context<Self>) {
        let (pool, auth, credential, org_id) = (self.pool.clone(), self.auth.clone(), self.credential, self.org_id);
        ctx.spawn(async move { lost_access(&pool, &auth, credential, org_id).await }.into_actor(self).map(
            |lost, act, ctx| {
                if let Some(reason) = lost {
                    act.close(ctx, ws::CloseCode::Policy, reason);
                }
            },
        ));
    }

    /// Queues a text frame for the viewer, unless it is closing. From the connection's own poll
    /// (events), before its first poll (the reset) or from the snapshot's `wait`, which the
    /// context finishes before it polls the connection: the connection writes them as it finishes.
    fn send(&mut self, frame: Option<Bytes>) {
        if self.closing != Closing::Open {
            return;
        }
        if let Some(frame) = frame {
            self.frames.increment(1);
            self.conn.push(frame);
        }
    }

    /// Queues any frame, from elsewhere (a timer, a check): the connection is polled to write it.
    fn queue(&mut self, frame: Bytes) {
        self.conn.push(frame);
        if let Some(task) = &self.conn.task {
            task.wake_by_ref();
        }
    }

    /// An event from the hub (or the replay).
    fn on_event(&mut self, item: Result<Arc<Envelope>, BroadcastStreamRecvError>, ctx: &mut Context<Self>) {
        match item {
            Ok(envelope) if envelope.seq > self.live_after => {
                self.live_after = envelope.seq;
                if self.backlog.falling_behind(envelope.seq) {
                    super::threads::falling_behind();
                }
                if self.filter.admits(&envelope.event) {
                    self.send(envelope.wire(text_frame));
                }
            }
            // Already sent in the replay or the snapshot.
            Ok(_) => {}
            // The viewer fell behind what the hub retains: it would miss events. Tell it to
            // resume with `since` (or take a fresh snapshot) rather than hold anything up.
            Err(BroadcastStreamRecvError::Lagged(_)) => self.close(ctx, ws::CloseCode::Policy, "slow_consumer"),
        }
    }

    /// Closes with a reason the client can act on (`slow_consumer`: resume with `since`).
    fn close(&mut self, ctx: &mut Context<Self>, code: ws::CloseCode, reason: &'static str) {
        if self.closing != Closing::Open {
            return;
        }
        self.closing = Closing::Sent;
        metrics::counter!("portcullis_stream_sessions_dropped_total", "reason" => reason).increment(1);
        tracing::info!(org_id = %self.org_id, reason, "closing stream");
        if reason == "slow_consumer" {
            // It resumes with `since`: what waits here would only delay the close frame.
            self.conn.discard_waiting();
        }
        match encode(ws::Message::Close(Some(ws::CloseReason { code, description: Some(reason.to_owned()) }))) {
            Some(frame) => self.queue(frame),
            None => ctx.stop(),
        }
    }

    /// Everything queued has been written.
    fn drained(&mut self, ctx: &mut Context<Self>) {
        match self.closing {
            Closing::Open | Closing::Lingering => {}
            Closing::Answered => ctx.stop(),
            // A peer that reads answers within the grace.
            Closing::Sent => {
                self.closing = Closing::Lingering;
                ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
            }
        }
    }

    fn send_snapshot(&self, ctx: &mut Context<Self>, seq: u64) {
        let (engine, pool, org_id, filter) = (self.engine.clone(), self.pool.clone(), self.org_id, self.filter.clone());
        // `wait`: nothing else is sent until the snapshot is, so events follow it in order.
        let built = async move {
            let snapshot = streams::snapshot(&engine, &pool, org_id, seq, &filter).await?;
            serde_json::to_string(&snapshot).map_err(crate::error::AppError::internal)
        };
        ctx.wait(built.into_actor(self).map(|built, act, ctx| match built {
            Ok(text) => act.send(text_frame(text.into())),
            Err(err) => {
                tracing::warn!(error = %err, "stream snapshot failed");
                act.close(ctx, ws::CloseCode::Error, "snapshot_failed");
            }
        }));
    }

    fn start_checks(&self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.timing.heartbeat, |act, ctx| {
            if act.conn.stalled(act.timing.heartbeat, act.timing.client_timeout) {
                // Its socket has taken nothing for that long (a peer that stopped reading): even a
                // close frame would not reach it.
                tracing::info!(org_id = %act.org_id, "stream connection not draining: dropping it");
                metrics::counter!("portcullis_stream_connections_shut_down_total").increment(1);
                if act.closing == Closing::Open {
                    metrics::counter!("portcullis_stream_sessions_dropped_total", "reason" => "not_draining")
                        .increment(1);
                }
                ctx.stop();
                return;
            }
            if act.last_heard.elapsed() > act.timing.client_timeout {
                act.close(ctx, ws::CloseCode::Away, "heartbeat_timeout");
                return;
            }
            if act.closing == Closing::Open
                && let Some(ping) = encode(ws::Message::Ping(Bytes::new()))
            {
                act.queue(ping);
            }
        });
        if let Credential::Session { expires_in, .. } = self.credential {
            ctx.run_later(expires_in, |act, ctx| act.close(ctx, ws::CloseCode::Policy, "token_expired"));
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::gauge!("portcullis_stream_sessions_open").increment(1.0);
        // Subscribe first, so nothing published while the snapshot is built is lost.
        let (rx, missed, newest) = self.engine.events().subscribe(self.org_id, self.since);
        let replay = match (self.since, missed) {
            (Some(since), Some(missed)) => {
                self.live_after = since;
                missed
            }
            (Some(_), None) => {
                self.send(text_frame(json!({"type": "reset", "seq": newest}).to_string().into()));
                self.send_snapshot(ctx, newest);
                self.live_after = newest;
                Vec::new()
            }
            (None, _) => {
                self.send_snapshot(ctx, newest);
                self.live_after = newest;
                Vec::new()
            }
        };
        // The replay, then the live events, taken by the connection at its socket's pace: a long
        // replay or a burst waits in the hub (or the replay) rather than here.
        // INVARIANT: `rx` was created under the hub's lock together with `newest`, so it carries
        // every event after the replay or snapshot, and perhaps some of those (the hub broadcasts
        // from its own thread): skipped by seq, so none twice, none missing.
        let replay: Vec<_> = replay.into_iter().map(Ok).collect();
        ctx.spawn(Io { events: futures_util::stream::iter(replay).chain(BroadcastStream::new(rx)) });
        // Access changes made through this node arrive at once, and those made elsewhere once the
        // node's periodic check finds them (`streams::check_watchers`).
        ctx.add_stream(BroadcastStream::new(self.auth.subscribe_changes()));
        self.start_checks(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        metrics::gauge!("portcullis_stream_sessions_open").decrement(1.0);
    }
}

impl StreamHandler<Result<AccessChange, BroadcastStreamRecvError>> for SessionActor {
    fn handle(&mut self, item: Result<AccessChange, BroadcastStreamRecvError>, ctx: &mut Self::Context) {
        match item {
            Ok(change) if !self.credential.concerned_by(change, self.org_id) => {}
            // Ours, or missed some (any could have been ours): look again.
            Ok(_) | Err(BroadcastStreamRecvError::Lagged(_)) => self.recheck(ctx),
        }
    }

    /// The server is shutting down; the event stream's end closes the session.
    fn finished(&mut self, _: &mut Self::Context) {}
}

/// What the peer sends.
impl SessionActor {
    /// What the peer sends.
    fn heard(&mut self, frame: Result<ws::Frame, ws::ProtocolError>, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        match frame {
            // Not while too much waits: a peer that pings without reading would fill the queue.
            Ok(ws::Frame::Ping(payload)) if self.closing == Closing::Open && self.conn.bytes <= self.max_queued => {
                if let Some(pong) = encode(ws::Message::Pong(payload)) {
                    self.queue(pong);
                }
            }
            Ok(ws::Frame::Close(reason)) => match self.closing {
                // It answered ours.
                Closing::Sent | Closing::Lingering => ctx.stop(),
                Closing::Answered => {}
                Closing::Open => {
                    self.closing = Closing::Answered;
                    let code = reason.map_or(ws::CloseCode::Normal, |r| r.code);
                    match encode(ws::Message::Close(Some(code.into()))) {
                        Some(frame) => self.queue(frame),
                        None => ctx.stop(),
                    }
                }
            },
            Ok(_) => {}
            Err(err) => {
                tracing::info!(error = %err, "stream protocol error");
                ctx.stop();
            }
        }
    }
}

/// The events a session sends: the replay, then the live ones.
type Events = futures_util::stream::Chain<
    futures_util::stream::Iter<std::vec::IntoIter<Result<Arc<Envelope>, BroadcastStreamRecvError>>>,
    BroadcastStream<Arc<Envelope>>,
>;

/// Why the connection stopped taking events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Took {
    /// None are ready (the hub wakes the task when one is), or the session is closing.
    All,
    /// More than `stream.max_queued_kib` waits for the socket.
    Bound,
    /// Its share for one turn (it comes back after the others had theirs).
    Turn,
}

/// The session's connection at work: reads the peer's frames, takes events at the socket's pace,
/// writes what waits (several frames a system call), and ends the session when the peer is gone
/// or, closing, everything is written. It runs in the session's context, so what the socket and
/// the hub wake is the session's task.
struct Io {
    events: Events,
}

impl Io {
    fn take_events(
        &mut self,
        act: &mut SessionActor,
        ctx: &mut Context<SessionActor>,
        task: &mut TaskContext<'_>,
    ) -> Took {
        for _ in 0..EVENTS_A_TURN {
            if act.closing != Closing::Open {
                return Took::All;
            }
            if act.conn.bytes > act.max_queued {
                return Took::Bound;
            }
            match self.events.poll_next_unpin(task) {
                Poll::Pending => return Took::All,
                Poll::Ready(Some(item)) => act.on_event(item, ctx),
                Poll::Ready(None) => act.close(ctx, ws::CloseCode::Away, "organization_closed"),
            }
        }
        task.waker().wake_by_ref();
        Took::Turn
    }
}

impl ActorFuture<SessionActor> for Io {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut SessionActor,
        ctx: &mut Context<SessionActor>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        if !act.conn.task.as_ref().is_some_and(|known| known.will_wake(task.waker())) {
            act.conn.task = Some(task.waker().clone());
        }
        loop {
            match act.conn.poll_frame(task) {
                Poll::Pending => break,
                Poll::Ready(Some(frame)) => act.heard(frame, ctx),
                Poll::Ready(None) => {
                    // The peer is gone.
                    ctx.stop();
                    return Poll::Ready(());
                }
            }
            if ctx.state().stopping() {
                return Poll::Ready(());
            }
        }
        loop {
            let took = this.take_events(act, ctx, task);
            match act.conn.write(task) {
                Wrote::Blocked => return Poll::Pending,
                Wrote::Broken => {
                    ctx.stop();
                    return Poll::Ready(());
                }
                // Room again for the events that wait.
                Wrote::Drained if took == Took::Bound => {}
                Wrote::Drained => {
                    act.drained(ctx);
                    return Poll::Pending;
                }
            }
        }
    }
}
