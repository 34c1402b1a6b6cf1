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
//! whether or not its peer reads, a peer that stops reading cannot freeze it: its queue is
//! bounded, and a socket that takes nothing for `stream.client_timeout_secs` is dropped.

use std::cell::Cell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws;
use bytes::{Buf, Bytes, BytesMut};
use deadpool_postgres::Pool;
use futures_util::{Stream, StreamExt as _};
use portcullis_actors::engine::Engine;
use portcullis_actors::events::Envelope;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::codec::{Encoder, FramedRead};
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

/// The read buffer a session starts with: a viewer sends pongs and a close, a few bytes each (it
/// grows for a larger frame, up to the codec's limit).
const READ_BUFFER: usize = 64;

/// The largest frame a viewer may send (a viewer has nothing to say beyond pongs and a close).
const MAX_INCOMING_FRAME: usize = 4096;

/// Lets the events through only while little waits for the socket: shared by the session and
/// the stream of its events (same thread).
#[derive(Default)]
struct Valve {
    shut: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Valve {
    fn shut(&self) {
        self.shut.set(true);
    }

    fn open(&self) {
        if self.shut.replace(false)
            && let Some(waker) = self.waker.take()
        {
            waker.wake();
        }
    }
}

/// A stream that yields nothing while its valve is shut.
struct Paced<S> {
    inner: S,
    valve: Rc<Valve>,
}

impl<S: Stream + Unpin> Stream for Paced<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<S::Item>> {
        if self.valve.shut.get() {
            self.valve.waker.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        self.inner.poll_next_unpin(cx)
    }
}

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

/// Frames waiting for the socket, in order; each a whole WebSocket frame.
struct Outbox {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// When the socket last took bytes (or, with nothing waiting, the first frame was queued).
    progress: Instant,
    /// The writer, parked while the queue is empty.
    waker: Option<Waker>,
}

impl Outbox {
    fn push(&mut self, frame: Bytes) {
        if self.frames.is_empty() {
            self.progress = Instant::now();
        }
        self.bytes += frame.len();
        self.frames.push_back(frame);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Drops everything not yet begun (the frame being written, if any, is finished: the peer
    /// must see whole frames).
    fn discard_waiting(&mut self, front_begun: bool) {
        self.frames.truncate(usize::from(front_begun));
        self.bytes = self.frames.iter().map(Bytes::len).sum();
    }

    /// Something waits and the socket has taken nothing of it for `timeout`.
    fn stalled(&self, timeout: Duration) -> bool {
        !self.frames.is_empty() && self.progress.elapsed() > timeout
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
    /// Shut while more than `max_queued` waits for the socket.
    valve: Rc<Valve>,
    out: Outbox,
    /// The front frame has been partly written.
    front_begun: bool,
    last_heard: Instant,
    closing: Closing,
    /// `portcullis_stream_frames_total`, looked up once rather than per frame.
    frames: metrics::Counter,
    /// The newest seq sent (or filtered out), in the snapshot or as an event: events up to it
    /// are done with.
    live_after: u64,
}

/// Starts the session of `setup` on a connection whose handshake has been answered; `early` is
/// what the peer sent after its handshake, already read.
pub fn start<T>(setup: Setup, io: T, early: &[u8])
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (read, write) = tokio::io::split(io);
    let read = AsyncReadExt::chain(std::io::Cursor::new(Bytes::copy_from_slice(early)), read);
    let codec = ws::Codec::new().max_size(MAX_INCOMING_FRAME);
    SessionActor::create(move |ctx| {
        ctx.add_stream(FramedRead::with_capacity(read, codec, READ_BUFFER));
        ctx.spawn(Writer { io: write });
        SessionActor::new(setup)
    });
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
    fn new(setup: Setup) -> Self {
        let Setup { org_id, engine, pool, auth, filter, since, credential, watching, timing, max_queued } = setup;
        let frames = metrics::counter!("portcullis_stream_frames_total");
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
            valve: Rc::default(),
            out: Outbox { frames: VecDeque::new(), bytes: 0, progress: Instant::now(), waker: None },
            front_begun: false,
            last_heard: Instant::now(),
            closing: Closing::Open,
            frames,
            live_after: 0,
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

    /// Queues a text frame for the viewer, unless it is closing; takes no more events while too
    /// much waits for the socket.
    fn send(&mut self, text: bytestring::ByteString) {
        if self.closing != Closing::Open {
            return;
        }
        if let Some(frame) = encode(ws::Message::Text(text)) {
            self.frames.increment(1);
            self.out.push(frame);
            if self.out.bytes > self.max_queued {
                self.valve.shut();
            }
        }
    }

    /// The socket took bytes: events flow again once half the bound is free.
    fn wrote(&mut self, bytes: usize) {
        self.out.progress = Instant::now();
        self.out.bytes -= bytes;
        if self.out.bytes <= self.max_queued / 2 {
            self.valve.open();
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
            self.out.discard_waiting(self.front_begun);
        }
        match encode(ws::Message::Close(Some(ws::CloseReason { code, description: Some(reason.to_owned()) }))) {
            Some(frame) => self.out.push(frame),
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
            Ok(frame) => act.send(frame.into()),
            Err(err) => {
                tracing::warn!(error = %err, "stream snapshot failed");
                act.close(ctx, ws::CloseCode::Error, "snapshot_failed");
            }
        }));
    }

    fn start_checks(&self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.timing.heartbeat, |act, ctx| {
            if act.out.stalled(act.timing.client_timeout) {
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
                act.out.push(ping);
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
                self.send(json!({"type": "reset", "seq": newest}).to_string().into());
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
        // The replay, then the live events, through one handler and at the socket's pace: a long
        // replay or a burst waits in the hub (or the replay) rather than here.
        // INVARIANT: `rx` was created under the hub's lock together with `newest`, so it carries
        // every event after the replay or snapshot, and perhaps some of those (the hub broadcasts
        // from its own thread): skipped by seq, so none twice, none missing.
        let replay = futures_util::stream::iter(replay.into_iter().map(Ok));
        ctx.add_stream(Paced { inner: replay.chain(BroadcastStream::new(rx)), valve: self.valve.clone() });
        // Access changes made through this node arrive at once, and those made elsewhere once the
        // node's periodic check finds them (`streams::check_watchers`).
        ctx.add_stream(BroadcastStream::new(self.auth.subscribe_changes()));
        self.start_checks(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        metrics::gauge!("portcullis_stream_sessions_open").decrement(1.0);
    }
}

impl StreamHandler<Result<Arc<Envelope>, BroadcastStreamRecvError>> for SessionActor {
    fn handle(&mut self, item: Result<Arc<Envelope>, BroadcastStreamRecvError>, ctx: &mut Self::Context) {
        match item {
            Ok(envelope) if envelope.seq > self.live_after => {
                self.live_after = envelope.seq;
                if self.filter.admits(&envelope.event)
                    && let Some(text) = envelope.frame()
                {
                    self.send(text);
                }
            }
            // Already sent in the replay or the snapshot.
            Ok(_) => {}
            // The viewer fell behind what the hub retains: it would miss events. Tell it to
            // resume with `since` (or take a fresh snapshot) rather than hold anything up.
            Err(BroadcastStreamRecvError::Lagged(_)) => self.close(ctx, ws::CloseCode::Policy, "slow_consumer"),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.close(ctx, ws::CloseCode::Away, "organization_closed");
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
impl StreamHandler<Result<ws::Frame, ws::ProtocolError>> for SessionActor {
    fn handle(&mut self, frame: Result<ws::Frame, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match frame {
            Ok(ws::Frame::Ping(payload)) if self.closing == Closing::Open => {
                if let Some(pong) = encode(ws::Message::Pong(payload)) {
                    self.out.push(pong);
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
                        Some(frame) => self.out.push(frame),
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

    /// The peer is gone.
    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Writes the session's queue to its socket, in the session's context: it runs as long as the
/// session does (and is dropped with it, which closes the connection).
struct Writer<W> {
    io: W,
}

impl<W: AsyncWrite + Unpin> ActorFuture<SessionActor> for Writer<W> {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut SessionActor,
        ctx: &mut Context<SessionActor>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let Some(front) = act.out.frames.front_mut() else {
                match Pin::new(&mut this.io).poll_flush(task) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => {
                        ctx.stop();
                        return Poll::Ready(());
                    }
                    Poll::Ready(Ok(())) => {}
                }
                act.out.waker = Some(task.waker().clone());
                act.drained(ctx);
                return Poll::Pending;
            };
            match Pin::new(&mut this.io).poll_write(task, front) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    // The peer is gone.
                    ctx.stop();
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(written)) => {
                    if written == front.len() {
                        act.out.frames.pop_front();
                        act.front_begun = false;
                    } else {
                        front.advance(written);
                        act.front_begun = true;
                    }
                    act.wrote(written);
                }
            }
        }
    }
}
