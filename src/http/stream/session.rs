//! SessionActor: one per WebSocket connection (operator or security dashboard).
//!
//! It subscribes to its organization's events, sends a snapshot (or, after a reconnect with
//! `since`, the events it missed), then one frame per event, filtered by the chosen gates and by
//! the viewer's role. It never slows a publisher: events come from a broadcast channel, and a
//! viewer that falls behind the retained window is disconnected with `slow_consumer` and can
//! resume with `since`. It pings, closes connections that went silent, and closes itself when the
//! token expires or its session or key is revoked.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web_actors::ws;
use deadpool_postgres::Pool;
use portcullis_actors::engine::Engine;
use portcullis_actors::events::Envelope;
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use uuid::Uuid;

use crate::app::streams::{self, Credential, Filter, Watching, lost_access};
use crate::auth::{AccessChange, AuthContext};
use crate::http::stream::connection::Flow;

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub client_timeout: Duration,
}

/// How long a closed session waits for its peer to finish the close handshake before the
/// connection is shut down under it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

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
    /// The connection underneath, and when the peer was last heard from.
    pub flow: Flow,
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
    flow: Flow,
    closing: bool,
    /// `portcullis_stream_frames_total`, looked up once rather than per frame.
    frames: metrics::Counter,
    /// The newest seq sent in the replay or snapshot: live events up to it are already sent.
    live_after: u64,
}

impl SessionActor {
    pub fn new(setup: Setup) -> Self {
        let Setup { org_id, engine, pool, auth, filter, since, credential, watching, timing, flow } = setup;
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
            flow,
            closing: false,
            frames,
            live_after: 0,
        }
    }

    /// Re-checks the viewer's access now; closes the stream if it is gone.
    fn recheck(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let (pool, auth, credential, org_id) = (self.pool.clone(), self.auth.clone(), self.credential, self.org_id);
        ctx.spawn(async move { lost_access(&pool, &auth, credential, org_id).await }.into_actor(self).map(
            |lost, act, ctx| {
                if let Some(reason) = lost {
                    act.close(ctx, ws::CloseCode::Policy, reason);
                }
            },
        ));
    }

    fn send(&mut self, ctx: &mut ws::WebsocketContext<Self>, frame: impl Into<bytestring::ByteString>) {
        if self.closing {
            return;
        }
        self.frames.increment(1);
        ctx.text(frame);
    }

    /// Closes with a reason the client can act on (`slow_consumer`: resume with `since`).
    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: ws::CloseCode, reason: &'static str) {
        if std::mem::replace(&mut self.closing, true) {
            return;
        }
        metrics::counter!("portcullis_stream_sessions_dropped_total", "reason" => reason).increment(1);
        tracing::info!(org_id = %self.org_id, reason, "closing stream");
        ctx.close(Some(ws::CloseReason { code, description: Some(reason.to_owned()) }));
        ctx.stop();
        // A peer that reads gets the close frame and answers within the grace.
        self.flow.shut_down_after(CLOSE_GRACE);
    }

    fn send_snapshot(&self, ctx: &mut ws::WebsocketContext<Self>, seq: u64) {
        let (engine, pool, org_id, filter) = (self.engine.clone(), self.pool.clone(), self.org_id, self.filter.clone());
        // `wait`: nothing else is sent until the snapshot is, so events follow it in order.
        let built = async move {
            let snapshot = streams::snapshot(&engine, &pool, org_id, seq, &filter).await?;
            serde_json::to_string(&snapshot).map_err(crate::error::AppError::internal)
        };
        ctx.wait(built.into_actor(self).map(|built, act, ctx| match built {
            Ok(frame) => act.send(ctx, frame),
            Err(err) => {
                tracing::warn!(error = %err, "stream snapshot failed");
                act.close(ctx, ws::CloseCode::Error, "snapshot_failed");
            }
        }));
    }

    fn start_checks(&self, ctx: &mut ws::WebsocketContext<Self>) {
        ctx.run_interval(self.timing.heartbeat, |act, ctx| {
            if act.flow.last_heard().elapsed() > act.timing.client_timeout {
                act.close(ctx, ws::CloseCode::Away, "heartbeat_timeout");
                return;
            }
            ctx.ping(b"");
        });
        if let Credential::Session { expires_in, .. } = self.credential {
            ctx.run_later(expires_in, |act, ctx| act.close(ctx, ws::CloseCode::Policy, "token_expired"));
        }
    }
}

impl Actor for SessionActor {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::gauge!("portcullis_stream_sessions_open").increment(1.0);
        // Subscribe first, so nothing published while the snapshot is built is lost.
        let (rx, missed, newest) = self.engine.events().subscribe(self.org_id, self.since);
        match (self.since, missed) {
            (Some(_), Some(missed)) => {
                for envelope in missed {
                    if self.filter.admits(&envelope.event)
                        && let Some(text) = envelope.frame()
                    {
                        self.send(ctx, text);
                    }
                }
            }
            (Some(_), None) => {
                self.send(ctx, json!({"type": "reset", "seq": newest}).to_string());
                self.send_snapshot(ctx, newest);
            }
            (None, _) => self.send_snapshot(ctx, newest),
        }
        // INVARIANT: `rx` was created under the hub's lock together with `newest`, so it carries
        // every event after the replay or snapshot, and perhaps some of those (the hub broadcasts
        // from its own thread): skipped by seq, so none twice, none missing.
        self.live_after = newest;
        ctx.add_stream(BroadcastStream::new(rx));
        // Access changes made through this node arrive at once, and those made elsewhere once the
        // node's periodic check finds them (`streams::check_watchers`).
        ctx.add_stream(BroadcastStream::new(self.auth.subscribe_changes()));
        self.start_checks(ctx);
        // The checks above stop with the actor, and the actor stops running when its connection
        // stops draining: this one watches from outside.
        self.flow.watch(self.timing.heartbeat, self.timing.client_timeout);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        metrics::gauge!("portcullis_stream_sessions_open").decrement(1.0);
    }
}

impl StreamHandler<Result<Arc<Envelope>, BroadcastStreamRecvError>> for SessionActor {
    fn handle(&mut self, item: Result<Arc<Envelope>, BroadcastStreamRecvError>, ctx: &mut Self::Context) {
        match item {
            Ok(envelope) => {
                if envelope.seq > self.live_after
                    && self.filter.admits(&envelope.event)
                    && let Some(text) = envelope.frame()
                {
                    self.send(ctx, text);
                }
            }
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

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for SessionActor {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.flow.heard();
        match msg {
            Ok(ws::Message::Ping(bytes)) => ctx.pong(&bytes),
            Ok(ws::Message::Close(_)) => ctx.stop(),
            Ok(_) => {}
            Err(err) => {
                tracing::info!(error = %err, "stream protocol error");
                ctx.stop();
            }
        }
    }
}
