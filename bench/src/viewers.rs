//! Dashboard viewers for the bench: WebSocket clients over raw TCP (the handshake, unmasked
//! server frames, pongs), many per thread, on threads of their own. Each records, for every
//! decision frame, the time from `decided_at` (stamped where the decision was made, in this same
//! machine's clock) to the frame's arrival, and when each `pass.revoked` frame arrived.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;
use crate::loadgen::histogram;

/// When the measured window opened (microseconds since the epoch; `i64::MAX` until then). A
/// decision counts in the window when it was decided at or after that moment — by its frame's
/// `decided_at` at the viewers, by its answer's at the turnstile — so frames and decisions are
/// counted over exactly the same decisions.
#[derive(Clone)]
pub struct Window(Arc<AtomicI64>);

impl Window {
    /// A window not open yet (a measurement that counts no decisions takes one of its own).
    pub fn new() -> Self {
        Window(Arc::new(AtomicI64::new(i64::MAX)))
    }

    /// Opens the window now, unless it is open already.
    pub fn open(&self) {
        self.0.fetch_min(Utc::now().timestamp_micros(), Ordering::SeqCst);
    }

    /// When the window opened, if it has.
    pub fn opened(&self) -> Option<DateTime<Utc>> {
        let at = self.0.load(Ordering::SeqCst);
        (at != i64::MAX).then(|| DateTime::from_timestamp_micros(at)).flatten()
    }

    /// Whether something decided at `at` falls in the window.
    pub fn holds(&self, at: DateTime<Utc>) -> bool {
        self.opened().is_some_and(|opened| at >= opened)
    }
}

/// What the viewers saw of the decisions in the window.
pub struct Seen {
    pub latency: Histogram<u64>,
    pub frames: u64,
    /// Each `pass.revoked` frame a viewer received (one per viewer and revocation).
    pub revoked: Vec<Revoked>,
}

pub struct Revoked {
    pub pass_id: String,
    pub arrived: Instant,
    /// From the event's `at` (stamped when the hub published it) to its arrival here.
    pub since_published: Duration,
}

pub struct Viewers {
    window: Window,
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Result<Seen, String>>>,
}

impl Viewers {
    /// Connects `count` viewers to `path` (a WebSocket upgrade) and keeps them reading; returns
    /// once all are connected.
    pub fn connect(addr: SocketAddr, path: String, count: usize, threads: usize) -> Result<Viewers, Error> {
        let window = Window::new();
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicU64::new(0));
        // No thread without a viewer: one that ends at once would read as a failure below.
        let threads = threads.min(count).max(1);
        let handles = (0..threads)
            .map(|t| {
                let share = count / threads + usize::from(t < count % threads);
                let (path, window, stop, connected) = (path.clone(), window.clone(), stop.clone(), connected.clone());
                std::thread::spawn(move || -> Result<Seen, String> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    runtime.block_on(async move {
                        let mut streams = Vec::with_capacity(share);
                        for _ in 0..share {
                            streams.push(handshake(addr, &path).await?);
                            connected.fetch_add(1, Ordering::SeqCst);
                        }
                        let views = streams.into_iter().map(|s| view(s, &window, &stop));
                        let mut seen =
                            Seen { latency: histogram().map_err(|e| e.to_string())?, frames: 0, revoked: Vec::new() };
                        for part in futures_util::future::join_all(views).await {
                            let part = part?;
                            seen.latency.add(&part.latency).map_err(|e| e.to_string())?;
                            seen.frames += part.frames;
                            seen.revoked.extend(part.revoked);
                        }
                        Ok(seen)
                    })
                })
            })
            .collect();
        let mut viewers = Viewers { window, stop, connected, threads: handles };
        while viewers.connected.load(Ordering::SeqCst) < count as u64 {
            if let Some(i) = viewers.threads.iter().position(|t| t.is_finished()) {
                let why = match viewers.threads.swap_remove(i).join() {
                    Ok(Err(err)) => err,
                    Ok(Ok(_)) => "it ended".to_owned(),
                    Err(_) => "it panicked".to_owned(),
                };
                return Err(format!("a viewer thread stopped while connecting: {why}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(viewers)
    }

    /// The measured window the viewers count in (opened by whoever starts measuring).
    pub fn window(&self) -> Window {
        self.window.clone()
    }

    /// Stops every viewer and returns what they saw.
    pub fn finish(self) -> Result<Seen, Error> {
        self.stop.store(true, Ordering::SeqCst);
        let mut seen = Seen { latency: histogram()?, frames: 0, revoked: Vec::new() };
        for thread in self.threads {
            let part = thread.join().map_err(|_| "a viewer thread panicked")??;
            seen.latency.add(&part.latency)?;
            seen.frames += part.frames;
            seen.revoked.extend(part.revoked);
        }
        Ok(seen)
    }
}

async fn handshake(addr: SocketAddr, path: &str) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: bench\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed during the WebSocket handshake".into());
        }
        head.extend_from_slice(&byte);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!("no upgrade: {}", String::from_utf8_lossy(&head)));
    }
    Ok(stream)
}

/// Reads frames until stopped; answers pings.
async fn view(mut stream: TcpStream, window: &Window, stop: &AtomicBool) -> Result<Seen, String> {
    let mut seen = Seen { latency: histogram().map_err(|e| e.to_string())?, frames: 0, revoked: Vec::new() };
    let mut buffer: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let n = match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut chunk)).await {
            Err(_) => continue,
            Ok(Ok(0)) => return Err("the server closed a viewer's connection".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.to_string()),
        };
        buffer.extend_from_slice(chunk.get(..n).unwrap_or_default());
        while let Some((opcode, start, end)) = frame_bounds(&buffer) {
            let (arrived, arrived_instant) = (Utc::now(), Instant::now());
            let payload = buffer.get(start..end).unwrap_or_default();
            if opcode == 0x1
                && let Some((pass_id, at)) = revoked(payload)
            {
                let since_published = (arrived - at).to_std().unwrap_or_default();
                seen.revoked.push(Revoked { pass_id, arrived: arrived_instant, since_published });
            }
            match opcode {
                0x1 => {
                    if let Some(at) = decided_at(payload).filter(|at| window.holds(*at)) {
                        let micros = (arrived - at).num_microseconds().unwrap_or(0).max(0) as u64;
                        seen.latency.record(micros * 1000).map_err(|e| e.to_string())?;
                        seen.frames += 1;
                    }
                }
                0x9 => {
                    // A pong, masked with a zero key (the payload unchanged).
                    let mut pong = vec![0x8A, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(payload);
                    stream.write_all(&pong).await.map_err(|e| e.to_string())?;
                }
                0x8 => return Err("the server closed a viewer's stream".into()),
                _ => {}
            }
            buffer.drain(..end);
        }
    }
    Ok(seen)
}

/// The opcode and payload bounds of the first complete (unmasked, unfragmented) frame.
fn frame_bounds(buffer: &[u8]) -> Option<(u8, usize, usize)> {
    let first = *buffer.first()?;
    let second = *buffer.get(1)? & 0x7F;
    let (length, start) = match second {
        126 => (u16::from_be_bytes([*buffer.get(2)?, *buffer.get(3)?]) as usize, 4),
        127 => {
            let bytes: [u8; 8] = buffer.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(bytes) as usize, 10)
        }
        n => (n as usize, 2),
    };
    (buffer.len() >= start + length).then_some((first & 0x0F, start, start + length))
}

/// The pass of a `pass.revoked` frame, and when the hub published it.
fn revoked(payload: &[u8]) -> Option<(String, DateTime<Utc>)> {
    let text = std::str::from_utf8(payload).ok()?;
    if !text.contains("\"type\":\"pass.revoked\"") {
        return None;
    }
    let field = |name: &str| {
        let (_, rest) = text.split_once(&format!("\"{name}\":\""))?;
        rest.split_once('"').map(|(value, _)| value.to_owned())
    };
    let at = DateTime::parse_from_rfc3339(&field("at")?).ok()?.with_timezone(&Utc);
    Some((field("pass_id")?, at))
}

fn decided_at(payload: &[u8]) -> Option<DateTime<Utc>> {
    let text = std::str::from_utf8(payload).ok()?;
    if !text.contains("\"type\":\"decision\"") {
        return None;
    }
    let (_, rest) = text.split_once("\"decided_at\":\"")?;
    let (stamp, _) = rest.split_once('"')?;
    DateTime::parse_from_rfc3339(stamp).ok().map(|t| t.with_timezone(&Utc))
}
