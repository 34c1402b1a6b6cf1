//! A closed-loop HTTP/1.1 load generator (what `wrk` does, without Lua): C keep-alive
//! connections over loopback, each sending its prepared requests in turn and waiting for each
//! answer, on T threads of their own (one single-threaded runtime each), so the generator never
//! shares a runtime with the server it measures.
//!
//! Every answer is checked: a status other than 200, or a body without the expected text, is an
//! error, counted and reported beside the latency figures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;

/// What to send: per connection, the requests it cycles through.
pub struct Plan {
    pub addr: SocketAddr,
    pub threads: usize,
    pub duration: Duration,
    /// Requests not measured, per connection, before the clock starts.
    pub warmup: Duration,
    /// One list per connection.
    pub requests: Vec<Vec<Vec<u8>>>,
    /// Text every answer's body must contain.
    pub expect: &'static str,
}

/// Latencies of the measured requests, the window they ran in, and the failures.
pub struct Measured {
    pub latency: Histogram<u64>,
    pub elapsed: Duration,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// A row of a report: one configuration's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub requests: u64,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub errors: u64,
}

impl Measured {
    /// Adds another run of the same configuration (its requests and its time).
    pub fn add(&mut self, other: Measured) -> Result<(), Error> {
        self.latency.add(&other.latency)?;
        self.elapsed += other.elapsed;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        Ok(())
    }

    pub fn figures(&self) -> Figures {
        let us = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        Figures {
            requests: self.latency.len(),
            per_second: self.latency.len() as f64 / self.elapsed.as_secs_f64().max(1e-9),
            p50_us: us(0.5),
            p99_us: us(0.99),
            max_us: self.latency.max() as f64 / 1000.0,
            errors: self.errors,
        }
    }
}

pub fn histogram() -> Result<Histogram<u64>, Error> {
    Ok(Histogram::<u64>::new_with_bounds(100, 60_000_000_000, 3)?)
}

/// A POST with a JSON body and a bearer key, as a turnstile sends it.
pub fn post(path: &str, bearer: &str, body: &serde_json::Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST {path} HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {bearer}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Runs the plan on its own threads and returns when every connection has finished.
pub fn run(plan: Plan) -> Result<Measured, Error> {
    let plan = Arc::new(plan);
    let threads = plan.threads.max(1);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let plan = plan.clone();
            std::thread::spawn(move || -> Result<Measured, String> {
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
                runtime.block_on(thread_load(&plan, t, threads))
            })
        })
        .collect();
    let mut total = Measured { latency: histogram()?, elapsed: Duration::ZERO, errors: 0, first_error: None };
    for handle in handles {
        let part = handle.join().map_err(|_| "a load thread panicked")??;
        total.latency.add(&part.latency)?;
        total.elapsed = total.elapsed.max(part.elapsed);
        total.errors += part.errors;
        total.first_error = total.first_error.or(part.first_error);
    }
    Ok(total)
}

async fn thread_load(plan: &Plan, thread: usize, threads: usize) -> Result<Measured, String> {
    let start = Instant::now() + plan.warmup;
    let end = start + plan.duration;
    let mine = plan.requests.iter().enumerate().filter(|(c, _)| c % threads == thread).map(|(_, r)| r);
    let connections = mine.map(|requests| connection(plan.addr, requests, plan.expect, start, end));
    let mut total = Measured {
        latency: histogram().map_err(|e| e.to_string())?,
        elapsed: Duration::ZERO,
        errors: 0,
        first_error: None,
    };
    for part in futures_util::future::join_all(connections).await {
        let part = part?;
        total.latency.add(&part.latency).map_err(|e| e.to_string())?;
        total.errors += part.errors;
        total.first_error = total.first_error.or(part.first_error);
    }
    total.elapsed = Instant::now().saturating_duration_since(start);
    Ok(total)
}

async fn connection(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    expect: &str,
    start: Instant,
    end: Instant,
) -> Result<Measured, String> {
    let mut latency = histogram().map_err(|e| e.to_string())?;
    let (mut errors, mut first_error) = (0u64, None);
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buffer = Vec::with_capacity(4096);
    for request in requests.iter().cycle() {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        stream.write_all(request).await.map_err(|e| format!("write: {e}"))?;
        let answer = read_response(&mut stream, &mut buffer).await;
        let took = sent.elapsed();
        let failure = match answer {
            Ok((200, body)) if contains(body, expect.as_bytes()) => None,
            Ok((status, body)) => Some(format!("{status}: {}", String::from_utf8_lossy(body))),
            Err(err) => return Err(err),
        };
        if sent < start {
            continue;
        }
        match failure {
            None => latency.record(took.as_nanos() as u64).map_err(|e| e.to_string())?,
            Some(failure) => {
                errors += 1;
                first_error.get_or_insert(failure);
            }
        }
    }
    Ok(Measured { latency, elapsed: Duration::ZERO, errors, first_error })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads one response with a `content-length`; returns its status and body.
pub(crate) async fn read_response<'b>(
    stream: &mut TcpStream,
    buffer: &'b mut Vec<u8>,
) -> Result<(u16, &'b [u8]), String> {
    buffer.clear();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        buffer.extend_from_slice(chunk.get(..n).unwrap_or_default());
    };
    let head = std::str::from_utf8(buffer.get(..header_end).unwrap_or_default()).map_err(|e| e.to_string())?;
    let status = head.get(9..12).and_then(|s| s.parse::<u16>().ok()).ok_or("no status line")?;
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok()).flatten()
        })
        .ok_or("an answer without content-length")?;
    while buffer.len() < header_end + length {
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection mid-answer".into());
        }
        buffer.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    Ok((status, buffer.get(header_end..header_end + length).unwrap_or_default()))
}
