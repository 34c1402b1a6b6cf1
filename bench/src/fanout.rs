//! `fanout`: live streams to N dashboard viewers while a turnstile decides at a steady rate
//! (`--rate`, decisions a second, one connection, open loop). For each N: the time from a
//! decision to its frame at the viewers against a bare broadcast floor (actix-web WebSockets
//! handed one pre-serialized frame per event, same rate, same viewers), the frames received
//! against those expected, and the turnstile's answer latency as N grows (beside a third
//! turnstile on the journaled floor at the same moment: the quickest answer the machine gives
//! under that load). Then 10,000 viewers held: the engine's resident memory per viewer (and the
//! bare broadcast floor's, in a process of its own), and what it returns when they leave. Floor
//! and engine alternate `--rounds` times at each N, and each figure pools its rounds.
//!
//! While the turnstile decides, passes are revoked through the API: the time from each revocation
//! to its frame at the viewers, against the same floor.
//!
//! Also `revocation`: a pass revoked while every gate asks for it, many times: allows answered
//! after the revoke call returned (must be none), and each revocation's frame at the viewers (from
//! the event's stamp, and from the revoke call's answer) amid the decisions' frames.
//!
//! The engine runs in a child process (see `scale`), so its memory is its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::floor;
use crate::floor::Scheduled;
use crate::loadgen::{self, histogram};
use crate::report::{Report, Target};
use crate::scale::ChildEngine;
use crate::scenarios::{Site, figures, login, metric, metrics};
use crate::viewers::{Viewers, Window};
use crate::{Bench, Error, Options};

/// Sends `request` every `1/rate` s for `window` (after `warmup`), answering nothing but the
/// latency of each answer sent in the window and the count of decisions the `counted` window
/// holds (opened here when the window starts, unless another turnstile opened it first).
///
/// A turnstile is a machine of its own; here it shares two cores with a thousand viewers'
/// clients, and would wait for a core behind them before it could even read its answer. So it
/// runs on a thread of its own under `SCHED_FIFO` where the system allows it (see
/// [`TURNSTILE_PRIORITY`]), and what it measures is the server's answer.
fn metronome(
    addr: SocketAddr,
    request: Vec<u8>,
    rate: u64,
    warmup: Duration,
    window: Duration,
    counted: Window,
) -> Result<(Histogram<u64>, u64), Error> {
    let beat = async move {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (start, mut latency, mut sent, mut buffer) = (Instant::now(), histogram()?, 0, Vec::new());
        loop {
            ticker.tick().await;
            let elapsed = start.elapsed();
            if elapsed >= warmup + window {
                return Ok::<_, Error>((latency, sent));
            }
            let measuring = elapsed >= warmup;
            if measuring {
                counted.open();
            }
            let t = Instant::now();
            stream.write_all(&request).await?;
            let (status, body) = loadgen::read_response(&mut stream, &mut buffer).await?;
            if status != 200 {
                return Err(format!("a decision answered {status}").into());
            }
            if measuring {
                latency.record(t.elapsed().as_nanos() as u64)?;
            }
            let decided_at = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("decided_at").and_then(Value::as_str).map(str::to_owned))
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok())
                .ok_or("a decision answered without decided_at")?;
            if counted.holds(decided_at.with_timezone(&chrono::Utc)) {
                sent += 1;
            }
        }
    };
    // A thread of its own (one the runtime's blocking pool would reuse would keep the policy),
    // creating none (they would inherit it).
    std::thread::scope(|scope| {
        let turnstile = scope.spawn(move || {
            let _ = portcullis_actors::sched::realtime(TURNSTILE_PRIORITY);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::from);
            runtime.and_then(|runtime| runtime.block_on(beat)).map_err(|e| e.to_string())
        });
        turnstile.join().map_err(|_| "a turnstile thread panicked")?.map_err(Error::from)
    })
}

/// The bench turnstiles' real-time priority: the same as the engine's device workers' by default
/// (threads of equal real-time priority never preempt one another).
const TURNSTILE_PRIORITY: u8 = 1;

/// Whether the bench's turnstiles may run under `SCHED_FIFO` here (reported beside the figures).
fn turnstiles_realtime() -> bool {
    std::thread::spawn(|| portcullis_actors::sched::realtime(TURNSTILE_PRIORITY).is_ok()).join().unwrap_or(false)
}

/// Passes revoked per viewer count and round, while the turnstiles decide (enough that the
/// revocation frames' p99 is not one revocation's moment: each is a single moment for every viewer).
const REVOKED_PER_RUN: usize = 30;

/// Revokes `passes` through the engine's API, spread evenly over the measured window.
async fn revoke_spread(
    port: u16,
    org_id: Uuid,
    token: &str,
    passes: &[Uuid],
    warmup: Duration,
    window: Duration,
) -> Result<(), Error> {
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let every = window / (passes.len() as u32 + 1);
    actix_web::rt::time::sleep(warmup).await;
    for pass in passes {
        actix_web::rt::time::sleep(every).await;
        revoke(&client, &format!("http://127.0.0.1:{port}"), org_id, *pass, token).await?;
    }
    Ok(())
}

/// Revokes `pass` through the API at `base`; an answer other than success is an error.
async fn revoke(client: &awc::Client, base: &str, org_id: Uuid, pass: Uuid, token: &str) -> Result<(), Error> {
    let mut response = client
        .post(format!("{base}/api/v1/orgs/{org_id}/passes/{pass}/revoke"))
        .insert_header(("authorization", format!("Bearer {token}")))
        .send_json(&json!({"reason": "bench"}))
        .await?;
    let _ = response.body().await?;
    if !response.status().is_success() {
        return Err(format!("a revocation answered {}", response.status()).into());
    }
    Ok(())
}

/// The floor's metronome: a decision frame published every `1/rate` s, stamped as it is made.
async fn floor_metronome(
    broadcast: &tokio::sync::broadcast::Sender<bytestring::ByteString>,
    rate: u64,
    warmup: Duration,
    window: Duration,
    counted: &Window,
) -> u64 {
    let mut ticker = actix_web::rt::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let (start, mut sent) = (Instant::now(), 0);
    let mut seq = 0u64;
    loop {
        ticker.tick().await;
        let elapsed = start.elapsed();
        if elapsed >= warmup + window {
            return sent;
        }
        if elapsed >= warmup {
            counted.open();
        }
        seq += 1;
        let now = chrono::Utc::now();
        if counted.holds(now) {
            sent += 1;
        }
        let frame = json!({"seq": seq, "org_id": uuid::Uuid::nil(), "at": now, "type": "decision",
            "gate_id": uuid::Uuid::nil(), "pass_id": null, "holder_name": null, "direction": "in",
            "decision": "deny", "reason": "unknown_credential", "decided_at": now});
        let _ = broadcast.send(frame.to_string().into());
    }
}

/// Connects viewers off the runtime (it may drive connections the engine under test needs).
async fn connect_viewers(addr: SocketAddr, path: String, count: usize, threads: usize) -> Result<Viewers, Error> {
    Ok(tokio::task::spawn_blocking(move || Viewers::connect(addr, path, count, threads).map_err(|e| e.to_string()))
        .await??)
}

async fn finish(viewers: Viewers) -> Result<crate::viewers::Seen, Error> {
    Ok(tokio::task::spawn_blocking(move || viewers.finish().map_err(|e| e.to_string())).await??)
}

/// What the rounds at one viewer count measured, pooled.
struct Pooled {
    floor_frames: Histogram<u64>,
    floor_answers: Histogram<u64>,
    frames: Histogram<u64>,
    revoked: Histogram<u64>,
    api_answers: Histogram<u64>,
    device_answers: Histogram<u64>,
    floor_expected: u64,
    floor_received: u64,
    expected: u64,
    received: u64,
    revoked_expected: u64,
    /// What the engine's threads had of the cores over its rounds, by name (see [`THREADS`]), and
    /// how many of each there are.
    waits: [(Scheduled, usize); THREADS.len()],
}

/// The engine's threads whose waits for a core `fanout` reports: where a turnstile's answer is
/// read and written, and where it is decided.
const THREADS: [&str; 3] = ["api-worker", "device-worker", "engine-actors"];

impl Pooled {
    fn new() -> Result<Self, Error> {
        Ok(Pooled {
            floor_frames: histogram()?,
            floor_answers: histogram()?,
            frames: histogram()?,
            revoked: histogram()?,
            api_answers: histogram()?,
            device_answers: histogram()?,
            floor_expected: 0,
            floor_received: 0,
            expected: 0,
            received: 0,
            revoked_expected: 0,
            waits: [(Scheduled::default(), 0); THREADS.len()],
        })
    }
}

pub async fn fanout(bench: &Bench, options: &Options) -> Result<Report, Error> {
    // Passes to revoke while the viewers watch: a few per viewer count.
    let revoked = REVOKED_PER_RUN * options.viewers.len() * options.rounds.max(1);
    let site = Site::build(bench, "Fanout bench", 1, revoked, 71).await?;
    let mut to_revoke = site.cards.iter().map(|(_, pass)| *pass);
    let gate = *site.gates.first().ok_or("no gate")?;
    let token = login(bench).await?;
    let engine = ChildEngine::start(&bench.data_dir)?;
    let floor = floor::start(site.floor_data(bench)?, bench.pool.clone())?;
    let (engine_addr, floor_addr) =
        (SocketAddr::from(([127, 0, 0, 1], engine.port)), SocketAddr::from(([127, 0, 0, 1], floor.port)));
    let stream_path = format!("/api/v1/orgs/{}/stream?access_token={token}", site.org_id);
    let body = json!({"credential": {"kind": "card", "value": "77:1"}, "direction": "in"});
    let decision = loadgen::post(&format!("/api/v1/gates/{gate}/decisions"), &site.device_key, &body);
    let floor_decision = loadgen::post(&format!("/journaled/gates/{gate}/decisions"), &site.device_key, &body);
    let (rate, window, warmup) =
        (options.rate, Duration::from_secs(options.seconds.max(1)), Duration::from_millis(500));
    let realtime = turnstiles_realtime();
    let mut report = Report::new(
        "fanout",
        json!({"seconds": options.seconds, "rate": rate, "viewers": options.viewers,
            "rounds": options.rounds.max(1), "turnstiles_under_sched_fifo": realtime}),
    );
    println!("fanout (a turnstile deciding {rate}/s on one connection; N viewers of the organization's stream)");
    if !realtime {
        println!(
            "  the bench's turnstiles run under the default scheduling (SCHED_FIFO refused): their answers include their own wait for a core"
        );
    }
    let mut answer_p99_one: Option<(f64, f64)> = None;
    // Floor and engine alternate, `--rounds` times at each viewer count; each figure pools its
    // rounds (on a saturated machine one round's p99 moves a lot).
    let rounds = options.rounds.max(1);
    let pooled = window * u32::try_from(rounds).unwrap_or(1);
    for &n in &options.viewers {
        let label: &'static str = Box::leak(format!("{n} viewers").into_boxed_str());
        let mut m = Pooled::new()?;
        for _ in 0..rounds {
            // The floor: the same viewers on a bare broadcast.
            let viewers = connect_viewers(floor_addr, "/ws".into(), n, 2).await?;
            let counted = viewers.window();
            let published = floor_metronome(&floor.broadcast, rate, warmup, window, &counted).await;
            actix_web::rt::time::sleep(Duration::from_millis(300)).await;
            let seen = finish(viewers).await?;
            m.floor_frames.add(&seen.latency)?;
            m.floor_expected += published * n as u64;
            m.floor_received += seen.frames;

            // The engine.
            let viewers = connect_viewers(engine_addr, stream_path.clone(), n, 2).await?;
            let counted = viewers.window();
            // Two turnstiles at half the rate each: one on the API port (beside the viewers'
            // streams), one on the device listener (workers of its own).
            let device_addr = SocketAddr::from(([127, 0, 0, 1], engine.device_port));
            let turnstile = |addr: SocketAddr, request: Vec<u8>, counted: Window| {
                tokio::task::spawn_blocking(move || {
                    metronome(addr, request, rate / 2, warmup, window, counted).map_err(|e| e.to_string())
                })
            };
            let waited_before = THREADS.map(|name| engine.scheduled(name).0);
            let on_api = turnstile(engine_addr, decision.clone(), counted.clone());
            let on_device = turnstile(device_addr, decision.clone(), counted.clone());
            // And a third on the journaled floor, at the same moment: the quickest answer this
            // machine gives while the engine streams to the viewers (its window counts nothing).
            let on_floor = turnstile(floor_addr, floor_decision.clone(), Window::new());
            // Meanwhile, an operator revokes passes through the API, one every so often.
            let passes: Vec<Uuid> = to_revoke.by_ref().take(REVOKED_PER_RUN).collect();
            let revocations = revoke_spread(engine.port, site.org_id, &token, &passes, warmup, window);
            let (revocations, turnstiles) =
                futures_util::future::join(revocations, async { Ok::<_, Error>((on_api.await??, on_device.await??)) })
                    .await;
            let ((api_answers, decided_api), (device_answers, decided_device)) = turnstiles?;
            for (((pooled, threads), name), before) in m.waits.iter_mut().zip(THREADS).zip(waited_before) {
                let (now, count) = engine.scheduled(name);
                (*pooled, *threads) = (*pooled + now.since(before), count);
            }
            m.floor_answers.add(&on_floor.await??.0)?;
            m.api_answers.add(&api_answers)?;
            m.device_answers.add(&device_answers)?;
            revocations?;
            actix_web::rt::time::sleep(Duration::from_millis(300)).await;
            let seen = finish(viewers).await?;
            m.frames.add(&seen.latency)?;
            m.expected += (decided_api + decided_device) * n as u64;
            m.received += seen.frames;
            for r in seen.revoked.iter().filter(|r| passes.iter().any(|p| p.to_string() == r.pass_id)) {
                m.revoked.record(r.since_published.as_nanos() as u64)?;
            }
            m.revoked_expected += (passes.len() * n) as u64;
        }
        let floor_frames =
            report.row(label, "floor: bare broadcast, decision to frame", figures(&m.floor_frames, pooled));
        println!("  {label:<10} floor frames received {} of {}", m.floor_received, m.floor_expected);
        let floor_answer = report.row(label, "floor: journaled answer, same moment", figures(&m.floor_answers, pooled));
        let frames = report.row(label, "portcullis: decision to frame", figures(&m.frames, pooled));
        let revoke_frames = report.row(label, "portcullis: revocation to frame", figures(&m.revoked, pooled));
        let api_answer = report.row(label, "portcullis: answer on the API port", figures(&m.api_answers, pooled));
        let answer = report.row(label, "portcullis: answer on the device port", figures(&m.device_answers, pooled));
        println!("  {label:<10} frames received {} of {}", m.received, m.expected);
        let waits: Vec<String> = THREADS
            .iter()
            .zip(&m.waits)
            .map(|(name, (w, threads))| format!("{name} ({threads}) {:.0} µs", w.waited_a_run_us()))
            .collect();
        println!("  {label:<10} engine threads' wait for a core each time they ran: {}", waits.join(", "));
        report.rows_extra.push(json!({"viewers": n, "rounds": rounds, "frames_expected": m.expected,
            "frames_received": m.received, "floor_frames_expected": m.floor_expected,
            "floor_frames_received": m.floor_received, "revocation_frames_expected": m.revoked_expected,
            "revocation_frames_received": m.revoked.len(),
            "device_answer_p99_over_floor_answer_p99": answer.p99_us / floor_answer.p99_us.max(1e-9),
            "waits_for_a_core_us_a_run": THREADS.iter().zip(&m.waits)
                .map(|(name, (w, _))| (name.to_string(), json!(w.waited_a_run_us()))).collect::<serde_json::Map<_, _>>()}));
        let (one_api, one) = *answer_p99_one.get_or_insert((api_answer.p99_us, answer.p99_us));
        println!(
            "  {label:<10} device-port answer p99 {:.2}x the journaled floor's at the same moment",
            answer.p99_us / floor_answer.p99_us.max(1e-9)
        );
        if n >= 1000 {
            report.target(Target::at_most(
                format!("{n} viewers: device-port answer p99 / its p99 with one viewer"),
                answer.p99_us / one.max(1e-9),
                1.5,
            ));
            report.target(Target::at_most(
                format!("{n} viewers: API-port answer p99 / its p99 with one viewer"),
                api_answer.p99_us / one_api.max(1e-9),
                1.5,
            ));
            report.target(Target::at_most(
                format!("{n} viewers: decision-to-frame p99 / floor p99"),
                frames.p99_us / floor_frames.p99_us.max(1e-9),
                1.2,
            ));
            report.target(Target::at_most(
                format!("{n} viewers: revocation-to-frame p99 / floor p99"),
                revoke_frames.p99_us / floor_frames.p99_us.max(1e-9),
                1.0,
            ));
            report.target(Target::at_least(
                format!("{n} viewers: revocation frames received / expected"),
                m.revoked.len() as f64 / m.revoked_expected.max(1) as f64,
                1.0,
            ));
            report.target(Target::at_least(
                format!("{n} viewers: frames received / expected"),
                m.received as f64 / m.expected.max(1) as f64,
                1.0,
            ));
        }
    }

    // 10,000 viewers held: memory each, and returned when they leave; first on the bare
    // broadcast floor in a process of its own (the least a viewer held by actix-web costs).
    let held = options.held;
    let floor_per_viewer = held_on(ChildEngine::broadcast_floor()?, held).await?;
    println!("  {held} viewers held on the bare broadcast floor: {:.1} KB a viewer", floor_per_viewer / 1000.0);
    // And on a lean WebSocket (no HTTP dispatcher, no actor): what the 10 KB target asks of the
    // transport.
    let lean_per_viewer = held_on(ChildEngine::lean_broadcast_floor()?, held).await?;
    println!(
        "  {held} viewers held on a lean WebSocket (no HTTP dispatcher): {:.1} KB a viewer",
        lean_per_viewer / 1000.0
    );
    let before = engine.rss_bytes();
    let during = resident_holding(&engine, &stream_path, held).await?;
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    let after = engine.rss_bytes();
    // Every session has ended with its connection (its memory is the allocator's to give back).
    let sessions_left = sessions_open(engine.port).await?;
    // The allocator gives pages back lazily (on the threads' next allocations): what it kept is
    // used again by the next viewers rather than added to.
    let during_again = resident_holding(&engine, &stream_path, held).await?;
    let per_viewer = during.saturating_sub(before) as f64 / held.max(1) as f64;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "  {held} viewers held: resident {:.0} MiB before, {:.0} MiB with them ({:.1} KB a viewer), {:.0} MiB after they left ({sessions_left} sessions still open), {:.0} MiB with {held} others",
        mib(before),
        mib(during),
        per_viewer / 1000.0,
        mib(after),
        mib(during_again)
    );
    report.rows_extra.push(
        json!({"held_viewers": held, "rss_before_bytes": before, "rss_with_bytes": during, "rss_after_bytes": after,
            "sessions_open_after": sessions_left, "rss_with_others_bytes": during_again,
            "floor_bytes_a_viewer": floor_per_viewer,
            "lean_websocket_bytes_a_viewer": lean_per_viewer}),
    );
    report.target(Target::at_most(format!("{held} viewers: KB a viewer"), per_viewer / 1000.0, 10.0));
    floor.handle.stop(true).await;
    drop(engine);
    Ok(report)
}

/// The engine's `portcullis_stream_sessions_open` gauge.
async fn sessions_open(port: u16) -> Result<f64, Error> {
    let text = metrics(&format!("http://127.0.0.1:{port}")).await?;
    metric(&text, "portcullis_stream_sessions_open")
        .ok_or_else(|| "no portcullis_stream_sessions_open in /metrics".into())
}

/// The resident memory each of `held` viewers adds to a floor's process (stopped afterwards).
async fn held_on(floor: ChildEngine, held: usize) -> Result<f64, Error> {
    let before = floor.rss_bytes();
    let during = resident_holding(&floor, "/ws", held).await?;
    Ok(during.saturating_sub(before) as f64 / held.max(1) as f64)
}

/// A child process's resident memory while `held` viewers of `path` are connected to it (they
/// leave afterwards).
async fn resident_holding(child: &ChildEngine, path: &str, held: usize) -> Result<u64, Error> {
    let viewers = connect_viewers(SocketAddr::from(([127, 0, 0, 1], child.port)), path.to_owned(), held, 2).await?;
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    let during = child.rss_bytes();
    finish(viewers).await?;
    Ok(during)
}

/// `revocation`: passes revoked while gates ask for them, one after another.
pub async fn revocation(bench: &Bench, options: &Options) -> Result<Report, Error> {
    let passes = 20;
    let site = Site::build(bench, "Revocation bench", 8, passes, 61).await?;
    let token = login(bench).await?;
    let viewer_count = options.revocation_viewers;
    let mut report = Report::new("revocation", json!({"passes": passes, "gates": 8, "viewers": viewer_count}));
    println!(
        "revocation ({passes} passes revoked one by one, each asked for at 8 gates by 8 connections meanwhile; {viewer_count} viewers)"
    );
    let viewers = connect_viewers(
        SocketAddr::from(([127, 0, 0, 1], bench.port)),
        format!("/api/v1/orgs/{}/stream?access_token={token}", site.org_id),
        options.revocation_viewers,
        2,
    )
    .await?;
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let (mut revoke_latency, mut late_allows, mut asked) = (histogram()?, 0u64, 0u64);
    let mut answered = std::collections::HashMap::new();
    let asking = Instant::now();
    for (card, pass) in &site.cards {
        let stop = Arc::new(AtomicBool::new(false));
        let revoked_at = Arc::new(std::sync::OnceLock::<Instant>::new());
        // Eight gates ask for the pass, over and over, until the revocation is well in force.
        let askers: Vec<_> = site
            .gates
            .iter()
            .map(|gate| {
                let request = loadgen::post(
                    &format!("/api/v1/gates/{gate}/decisions"),
                    &site.device_key,
                    &json!({"credential": {"kind": "card", "value": card}, "direction": "in"}),
                );
                let (stop, revoked_at, port) = (stop.clone(), revoked_at.clone(), bench.port);
                std::thread::spawn(move || ask_until(port, request, &stop, &revoked_at))
            })
            .collect();
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        revoke(&client, &bench.base, site.org_id, *pass, &token).await?;
        let returned = Instant::now();
        let _ = revoked_at.set(returned);
        revoke_latency.record(returned.duration_since(t).as_nanos() as u64)?;
        answered.insert(pass.to_string(), returned);
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        stop.store(true, Ordering::SeqCst);
        // Joined off the runtime: an asker may be waiting for a commit the runtime drives.
        let results = tokio::task::spawn_blocking(move || {
            askers
                .into_iter()
                .map(|a| a.join().map_err(|_| "an asking thread panicked".to_owned())?)
                .collect::<Result<Vec<_>, String>>()
        })
        .await??;
        for (late, total) in results {
            late_allows += late;
            asked += total;
        }
    }
    let asking = asking.elapsed();
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let seen = finish(viewers).await?;
    let decisions_per_second = asked as f64 / asking.as_secs_f64().max(1e-3);
    // Each revocation's frame at each viewer: from the event's stamp (as the floor measures), and
    // from the revoke call's answer (zero when the frame came first).
    let (mut since_published, mut since_answer) = (histogram()?, histogram()?);
    for revoked in &seen.revoked {
        since_published.record(revoked.since_published.as_nanos() as u64)?;
        if let Some(returned) = answered.get(&revoked.pass_id) {
            since_answer.record(revoked.arrived.saturating_duration_since(*returned).as_nanos() as u64)?;
        }
    }
    let second = Duration::from_secs(1);
    let label: &'static str = Box::leak(format!("{viewer_count} viewers").into_boxed_str());
    report.row("revoke", "revoke call (durable, in force)", figures(&revoke_latency, second));
    report.row(label, "portcullis: revocation event to frame", figures(&since_published, second));
    report.row(label, "portcullis: revoke answer to frame", figures(&since_answer, second));
    let expected = site.cards.len() * viewer_count;
    println!(
        "  {asked} decisions asked during the revocations; allows answered after a revoke returned: {late_allows}; revocation frames received {} of {expected}",
        seen.revoked.len()
    );
    report.rows_extra.push(json!({"decisions_asked": asked, "allows_after_revoke_returned": late_allows,
        "revocation_frames_expected": expected, "decisions_per_second": decisions_per_second, "revocation_frames_received": seen.revoked.len(),
        "decision_frames_received": seen.frames}));
    report.target(Target::at_most("allows answered after the revoke call returned", late_allows as f64, 0.0));
    report.target(Target::at_least(
        format!("{viewer_count} viewers: revocation frames received / expected"),
        seen.revoked.len() as f64 / expected.max(1) as f64,
        1.0,
    ));
    Ok(report)
}

/// Asks for a pass until told to stop; counts the allows whose request was sent after the revoke
/// call had returned.
fn ask_until(
    port: u16,
    request: Vec<u8>,
    stop: &AtomicBool,
    revoked_at: &std::sync::OnceLock<Instant>,
) -> Result<(u64, u64), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut stream =
            TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await.map_err(|e| e.to_string())?;
        let (mut late, mut total, mut buffer) = (0, 0, Vec::new());
        while !stop.load(Ordering::SeqCst) {
            let sent = Instant::now();
            stream.write_all(&request).await.map_err(|e| e.to_string())?;
            let (_, body) = loadgen::read_response(&mut stream, &mut buffer).await?;
            total += 1;
            let allowed =
                serde_json::from_slice::<Value>(body).ok().is_some_and(|v| v.get("decision") == Some(&json!("allow")));
            let after_revoke = revoked_at.get().is_some_and(|at| sent > *at);
            if allowed && after_revoke {
                late += 1;
            }
        }
        Ok((late, total))
    })
}
