//! The floors: the least work a decision can be, served by actix-web on the same machine, with
//! the same workers, the same requests and the same PostgreSQL as the engine.
//!
//! - `http`: the same JSON parsed by actix-web into the same request type, the credential hashed
//!   under the same pepper, the gate and the credential looked up in DashMaps, the same verdict
//!   serialized back. No journal.
//! - `journaled`: `http`, plus one check-in row per request handed to a group-commit writer (one
//!   `unnest` insert into the real `checkins` table per group, one transaction); not waited for.
//! - `durable`: `journaled`, but each request waits until its group has committed (what a
//!   consuming admit must do).
//! - `database`: what a database-backed system does: per request, one SELECT of the pass by its
//!   credential and one INSERT of the check-in, over a connection pool.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::AsyncContext;
use actix_web::{HttpResponse, web};
use actix_web_actors::ws;
use bytestring::ByteString;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use deadpool_postgres::Pool;
use portcullis::engine::credentials::{CredentialInput, present};
use portcullis_actors::domain::{Decision, Direction, Reason};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use uuid::Uuid;

use crate::Error;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionRequest {
    credential: CredentialInput,
    direction: Option<Direction>,
}

#[derive(Serialize)]
struct Verdict {
    decision: Decision,
    reason: Reason,
    gate_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    holder_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    open_ms: Option<u32>,
    direction: Direction,
    decided_at: DateTime<Utc>,
}

/// One check-in row (none: a flush), and whom to tell when it is committed.
type Row =
    (Option<(Uuid, Uuid, Option<Uuid>, Direction, Decision, Reason, DateTime<Utc>)>, Option<oneshot::Sender<()>>);

/// As many rows as the engine's journal holds before its writers wait.
const CAPACITY: usize = 16_384;

pub struct FloorData {
    pub pepper: SecretString,
    pub org_id: Uuid,
    /// Device key → allowed (the floor checks the bearer as the engine does, from memory).
    pub keys: DashMap<String, ()>,
    pub gates: DashMap<Uuid, Uuid>,
    /// Lookup hash → (pass, holder).
    pub credentials: DashMap<[u8; 32], (Uuid, String)>,
}

struct Floor {
    data: Arc<FloorData>,
    journal: mpsc::Sender<Row>,
    pool: Pool,
    broadcast: tokio::sync::broadcast::Sender<ByteString>,
}

/// A viewer of the broadcast floor: every frame published, sent as it is (serialized once by the
/// publisher), pings answered. The least a live stream can do per viewer.
struct FloorViewer {
    frames: Option<tokio::sync::broadcast::Receiver<ByteString>>,
}

impl actix::Actor for FloorViewer {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(frames) = self.frames.take() {
            ctx.add_stream(tokio_stream::wrappers::BroadcastStream::new(frames));
        }
    }
}

impl actix::StreamHandler<Result<ByteString, BroadcastStreamRecvError>> for FloorViewer {
    fn handle(&mut self, frame: Result<ByteString, BroadcastStreamRecvError>, ctx: &mut Self::Context) {
        if let Ok(frame) = frame {
            ctx.text(frame);
        }
    }
}

impl actix::StreamHandler<Result<ws::Message, ws::ProtocolError>> for FloorViewer {
    fn handle(&mut self, message: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        if let Ok(ws::Message::Ping(payload)) = message {
            ctx.pong(&payload);
        }
    }
}

async fn viewer(
    floor: web::Data<Floor>,
    request: actix_web::HttpRequest,
    stream: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    ws::start(FloorViewer { frames: Some(floor.broadcast.subscribe()) }, &request, stream)
}

/// A process serving the bare broadcast floor's viewers alone (the bench's `__broadcast-child`):
/// what a viewer held on an actix-web WebSocket costs at the least. Says `READY <port>`, then
/// serves until killed.
pub async fn broadcast_child() -> Result<(), Error> {
    let (broadcast, _) = tokio::sync::broadcast::channel::<ByteString>(10_000);
    let broadcast = web::Data::new(broadcast);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().app_data(broadcast.clone()).route("/ws", web::get().to(bare_viewer))
    })
    .listen(listener)?
    .run();
    println!("READY {port}");
    Ok(server.await?)
}

async fn bare_viewer(
    broadcast: web::Data<tokio::sync::broadcast::Sender<ByteString>>,
    request: actix_web::HttpRequest,
    stream: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    ws::start(FloorViewer { frames: Some(broadcast.subscribe()) }, &request, stream)
}

/// A process holding viewers on a lean WebSocket (the bench's `__lean-broadcast-child`): the
/// handshake read and answered by hand on a tokio socket, then each frame written straight to
/// it, with no HTTP dispatcher and no actor. What a held viewer costs without actix-http's
/// per-connection buffers and actix-web-actors' context: a floor for the memory a viewer needs,
/// not a server (no pings, no close handshake). Says `READY <port>`, then serves until killed.
pub async fn lean_broadcast_child() -> Result<(), Error> {
    let (broadcast, _) = tokio::sync::broadcast::channel::<ByteString>(10_000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("READY {}", listener.local_addr()?.port());
    loop {
        let (stream, _) = listener.accept().await?;
        let frames = broadcast.subscribe();
        actix_web::rt::spawn(async move {
            let _ = lean_viewer(stream, frames).await;
        });
    }
}

async fn lean_viewer(
    mut stream: tokio::net::TcpStream,
    mut frames: tokio::sync::broadcast::Receiver<ByteString>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 256];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let key = String::from_utf8_lossy(&head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim().to_owned())
    });
    drop(head);
    let Some(key) = key else {
        return stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
    };
    let mut response =
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: "
            .to_vec();
    response.extend_from_slice(&actix_http::ws::hash_key(key.as_bytes()));
    response.extend_from_slice(b"\r\n\r\n");
    stream.write_all(&response).await?;
    drop(response);
    loop {
        match frames.recv().await {
            Ok(frame) => {
                // A text frame, unmasked (server to client), its length in 7, 16 or 64 bits.
                let length = frame.len();
                let mut header = [0x81u8, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                let used = match u16::try_from(length) {
                    Ok(short) if short < 126 => {
                        header[1] = short as u8;
                        2
                    }
                    Ok(short) => {
                        header[1] = 126;
                        header[2..4].copy_from_slice(&short.to_be_bytes());
                        4
                    }
                    Err(_) => {
                        header[1] = 127;
                        header[2..10].copy_from_slice(&(length as u64).to_be_bytes());
                        10
                    }
                };
                stream.write_all(header.get(..used).unwrap_or_default()).await?;
                stream.write_all(frame.as_bytes()).await?;
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

/// The running floor server.
pub struct FloorServer {
    pub port: u16,
    pub handle: actix_web::dev::ServerHandle,
    journal: mpsc::Sender<Row>,
    commits: Arc<Commits>,
    /// The bare broadcast floor: frames handed to every `/ws` viewer as they are.
    pub broadcast: tokio::sync::broadcast::Sender<ByteString>,
}

impl FloorServer {
    /// Waits until every row handed to the group-commit writer is committed, so that no backlog
    /// of one measurement runs into the next.
    pub async fn flush(&self) -> Result<(), Error> {
        let (ack, done) = oneshot::channel();
        self.journal.send((None, Some(ack))).await.map_err(|_| "the floor journal stopped")?;
        Ok(done.await?)
    }

    /// What the floor's group-commit writer has committed so far.
    pub fn commits(&self) -> Tally {
        self.commits.tally()
    }
}

/// What a group-commit writer has committed so far: its groups, the records in them, the time
/// spent committing them (from handing a group to PostgreSQL to its `COMMIT`'s answer), and its
/// PostgreSQL server process's time on a core and waiting for one (`/proc/<pid>/schedstat`; zeros
/// where that cannot be read). Two tallies taken around a run tell how big its groups were, how
/// much of the run the one connection spent committing, and what a commit waited on (see
/// `decisions`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub groups: f64,
    pub records: f64,
    pub seconds: f64,
    /// Its PostgreSQL server process's.
    pub backend: Scheduled,
}

impl std::ops::Add for Tally {
    type Output = Tally;

    fn add(self, other: Tally) -> Tally {
        Tally {
            groups: self.groups + other.groups,
            records: self.records + other.records,
            seconds: self.seconds + other.seconds,
            backend: self.backend + other.backend,
        }
    }
}

impl Tally {
    /// What was committed between `earlier` and this tally.
    pub fn since(self, earlier: Tally) -> Tally {
        Tally {
            groups: self.groups - earlier.groups,
            records: self.records - earlier.records,
            seconds: self.seconds - earlier.seconds,
            backend: self.backend.since(earlier.backend),
        }
    }

    /// A group's share of `total`, on average.
    pub fn a_group(&self, total: f64) -> f64 {
        total / self.groups.max(1.0)
    }
}

/// What a process or thread has had of the cores (`schedstat` under `/proc`: time on a core, time
/// waiting for one, and the times it ran). Zeros where it cannot be read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scheduled {
    /// Seconds on a core.
    pub ran: f64,
    /// Seconds waiting for one.
    pub waited: f64,
    /// The times it was given one.
    pub runs: f64,
}

impl Scheduled {
    /// From the `schedstat` file at `path` (`/proc/<pid>/schedstat`, `/proc/<pid>/task/<tid>/schedstat`).
    pub fn read(path: &std::path::Path) -> Scheduled {
        let stat = std::fs::read_to_string(path).unwrap_or_default();
        let mut fields = stat.split_whitespace().map(|f| f.parse::<f64>().unwrap_or(0.0));
        let mut next = || fields.next().unwrap_or(0.0);
        Scheduled { ran: next() / 1e9, waited: next() / 1e9, runs: next() }
    }

    /// Of the process `pid`.
    pub fn of(pid: u32) -> Scheduled {
        Scheduled::read(std::path::Path::new(&format!("/proc/{pid}/schedstat")))
    }

    /// What it had between `earlier` and this reading.
    pub fn since(self, earlier: Scheduled) -> Scheduled {
        Scheduled { ran: self.ran - earlier.ran, waited: self.waited - earlier.waited, runs: self.runs - earlier.runs }
    }

    /// Its average wait for a core each time it was given one, in microseconds.
    pub fn waited_a_run_us(&self) -> f64 {
        self.waited * 1e6 / self.runs.max(1.0)
    }
}

/// The whole machine's CPU time so far, from the first line of `/proc/stat` (all cores together,
/// in the kernel's ticks): busy (everything but idle and iowait) and in all. Zeros where it cannot
/// be read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Machine {
    busy: f64,
    total: f64,
    cores: f64,
}

impl Machine {
    pub fn read() -> Machine {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|t| t.parse().unwrap_or(0.0))
            .collect();
        let total: f64 = ticks.iter().sum();
        let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
        let cores = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count() as f64;
        Machine { busy: total - idle, total, cores }
    }

    /// How many cores were busy on average between `earlier` and this reading (the ticks' share
    /// busy, times the cores: no tick length needed).
    pub fn busy_cores_since(self, earlier: Machine) -> f64 {
        (self.busy - earlier.busy) / (self.total - earlier.total).max(1.0) * self.cores
    }
}

impl std::ops::Add for Scheduled {
    type Output = Scheduled;

    fn add(self, other: Scheduled) -> Scheduled {
        Scheduled { ran: self.ran + other.ran, waited: self.waited + other.waited, runs: self.runs + other.runs }
    }
}

/// The floor writer's running tally (see [`Tally`]).
#[derive(Default)]
struct Commits {
    groups: AtomicU64,
    records: AtomicU64,
    nanos: AtomicU64,
    /// The writer's PostgreSQL server process (0 until known).
    backend: AtomicU32,
}

impl Commits {
    fn add(&self, records: usize, took: Duration) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.nanos.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn tally(&self) -> Tally {
        let pid = self.backend.load(Ordering::Relaxed);
        let backend = if pid == 0 { Scheduled::default() } else { Scheduled::of(pid) };
        Tally {
            groups: self.groups.load(Ordering::Relaxed) as f64,
            records: self.records.load(Ordering::Relaxed) as f64,
            seconds: self.nanos.load(Ordering::Relaxed) as f64 / 1e9,
            backend,
        }
    }
}

/// Starts the floor server on a free port.
pub fn start(data: Arc<FloorData>, pool: Pool) -> Result<FloorServer, Error> {
    let (tx, rx) = mpsc::channel(CAPACITY);
    let commits = Arc::new(Commits::default());
    actix_web::rt::spawn(group_commit(pool.clone(), data.org_id, rx, commits.clone()));
    let (broadcast, _) = tokio::sync::broadcast::channel(10_000);
    let floor = web::Data::new(Floor { data, journal: tx.clone(), pool, broadcast: broadcast.clone() });
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(floor.clone())
            .route("/{mode}/gates/{gate}/decisions", web::post().to(decide))
            .route("/ws", web::get().to(viewer))
    })
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(FloorServer { port, handle, journal: tx, commits, broadcast })
}

async fn decide(
    floor: web::Data<Floor>,
    path: web::Path<(String, Uuid)>,
    request: actix_web::HttpRequest,
    body: web::Json<DecisionRequest>,
) -> HttpResponse {
    let (mode, gate_id) = path.into_inner();
    let bearer =
        request.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|k| floor.data.keys.contains_key(k)) || !floor.data.gates.contains_key(&gate_id) {
        return HttpResponse::Forbidden().finish();
    }
    let now = Utc::now();
    let Ok(presented) = present(&body.credential, &floor.data.pepper, now) else {
        return HttpResponse::UnprocessableEntity().finish();
    };
    let direction = body.direction.unwrap_or(Direction::In);
    let found = match mode.as_str() {
        "database" => match lookup_in_database(&floor.pool, floor.data.org_id, &presented.lookups).await {
            Ok(found) => found,
            Err(err) => return HttpResponse::InternalServerError().body(err.to_string()),
        },
        _ => presented.lookups.iter().find_map(|h| floor.data.credentials.get(h).map(|c| c.clone())),
    };
    let (decision, reason) =
        if found.is_some() { (Decision::Allow, Reason::Allowed) } else { (Decision::Deny, Reason::UnknownCredential) };
    let pass_id = found.as_ref().map(|f| f.0);
    match mode.as_str() {
        "http" => {}
        "journaled" | "durable" => {
            let (ack, committed) = if mode == "durable" {
                let (a, c) = oneshot::channel();
                (Some(a), Some(c))
            } else {
                (None, None)
            };
            let row = (Uuid::now_v7(), gate_id, pass_id, direction, decision, reason, now);
            if floor.journal.send((Some(row), ack)).await.is_err() {
                return HttpResponse::ServiceUnavailable().finish();
            }
            if let Some(committed) = committed
                && committed.await.is_err()
            {
                return HttpResponse::ServiceUnavailable().finish();
            }
        }
        "database" => {
            if let Err(err) =
                insert_checkin(&floor.pool, floor.data.org_id, gate_id, pass_id, direction, decision, reason, now).await
            {
                return HttpResponse::InternalServerError().body(err.to_string());
            }
        }
        _ => return HttpResponse::NotFound().finish(),
    }
    HttpResponse::Ok().json(Verdict {
        decision,
        reason,
        gate_id,
        pass_id,
        holder_name: found.map(|f| f.1),
        open_ms: (decision == Decision::Allow).then_some(3000),
        direction,
        decided_at: now,
    })
}

async fn lookup_in_database(pool: &Pool, org_id: Uuid, lookups: &[[u8; 32]]) -> Result<Option<(Uuid, String)>, Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT p.id, p.holder_name FROM credentials c JOIN passes p ON p.org_id = c.org_id AND p.id = c.pass_id
             WHERE c.org_id = $1 AND c.lookup_hash = ANY($2) AND c.revoked_at IS NULL AND p.status = 'active'",
        )
        .await?;
    let hashes: Vec<&[u8]> = lookups.iter().map(|h| h.as_slice()).collect();
    let row = client.query_opt(&statement, &[&org_id, &hashes]).await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

#[expect(clippy::too_many_arguments, reason = "one check-in row, column by column")]
async fn insert_checkin(
    pool: &Pool,
    org_id: Uuid,
    gate_id: Uuid,
    pass_id: Option<Uuid>,
    direction: Direction,
    decision: Decision,
    reason: Reason,
    at: DateTime<Utc>,
) -> Result<(), Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO checkins (id, org_id, gate_id, pass_id, direction, decision, reason, source, credential_kind, decided_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'floor', 'card', $8)",
        )
        .await?;
    client
        .execute(
            &statement,
            &[
                &Uuid::now_v7(),
                &org_id,
                &gate_id,
                &pass_id,
                &direction.as_str(),
                &decision.as_str(),
                &reason.as_str(),
                &at,
            ],
        )
        .await?;
    Ok(())
}

/// A group's rows, column by column.
#[derive(Default)]
struct Columns(
    Vec<Uuid>,
    Vec<Uuid>,
    Vec<Uuid>,
    Vec<Option<Uuid>>,
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<DateTime<Utc>>,
);

/// Group commit: whatever is queued goes in one transaction with one `unnest` insert.
async fn group_commit(pool: Pool, org_id: Uuid, mut rx: mpsc::Receiver<Row>, commits: Arc<Commits>) {
    let Ok(client) = pool.get().await else { return };
    if let Ok(row) = client.query_one("SELECT pg_backend_pid()", &[]).await
        && let Ok(pid) = row.try_get::<_, i32>(0)
    {
        commits.backend.store(u32::try_from(pid).unwrap_or(0), Ordering::Relaxed);
    }
    let Ok(statement) = client
        .prepare(
            "INSERT INTO checkins (id, org_id, gate_id, pass_id, direction, decision, reason, source, credential_kind, decided_at)
             SELECT u.id, u.org, u.gate, u.pass, u.dir, u.dec, u.reason, 'floor', 'card', u.at
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::timestamptz[])
                  AS u(id, org, gate, pass, dir, dec, reason, at)",
        )
        .await
    else {
        return;
    };
    let mut group = Vec::with_capacity(512);
    while rx.recv_many(&mut group, 512).await > 0 {
        let mut columns = Columns::default();
        let mut acks = Vec::new();
        for (row, ack) in group.drain(..) {
            acks.extend(ack);
            let Some((id, gate, pass, direction, decision, reason, at)) = row else { continue };
            columns.0.push(id);
            columns.1.push(org_id);
            columns.2.push(gate);
            columns.3.push(pass);
            columns.4.push(direction.as_str());
            columns.5.push(decision.as_str());
            columns.6.push(reason.as_str());
            columns.7.push(at);
        }
        // One round trip, as the engine's journal does: BEGIN, the insert and COMMIT pipelined.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
            [&columns.0, &columns.1, &columns.2, &columns.3, &columns.4, &columns.5, &columns.6, &columns.7];
        let (records, started) = (columns.0.len(), Instant::now());
        let result = futures_util::future::try_join3(
            client.batch_execute("BEGIN"),
            client.execute(&statement, &params),
            client.batch_execute("COMMIT"),
        )
        .await;
        if let Err(err) = result {
            eprintln!("floor journal: {err}");
            return;
        }
        // A flush alone commits nothing: only groups with rows are counted, as the engine counts.
        if records > 0 {
            commits.add(records, started.elapsed());
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}
