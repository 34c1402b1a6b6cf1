//! An OSDP bus driven as Control Panel: one TCP connection to a serial-device server, the readers
//! (PDs) at their addresses on it, each polled in turn.
//!
//! The caller hands in the addresses and gets [`BusEvent`]s (a reader online or offline, a card
//! read, keys pressed); it sends commands (relay, LED, buzzer) to a reader through [`Bus`]. The
//! driver identifies each reader (ID) when it first answers, polls it every cycle, resends a
//! command whose reply did not come within 200 ms (same sequence number, so the reader replays
//! its answer rather than acting twice), and marks a reader offline after three silent tries;
//! a lost connection is reopened with back-off (0.5 s doubling to 10 s) and every reader on it
//! goes offline meanwhile. Plain packets only: a reader that answers on a secure channel is
//! reported, never read as plain text.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::osdp::{Command, DecodeError, Reply, decode, next_seq};

/// How long a reader has to answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(200);
/// Tries of one command before the reader is offline.
const TRIES: u32 = 3;
/// The pause between two polling rounds of the bus.
const ROUND_PAUSE: Duration = Duration::from_millis(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const LONGEST_BACKOFF: Duration = Duration::from_secs(10);

/// What happened on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// The reader answers (again); its identification when it gave one.
    Online { address: u8, vendor: Option<[u8; 3]>, serial: Option<u32> },
    /// The reader stopped answering, or the bus is gone; why.
    Offline { address: u8, reason: String },
    /// A card was read: its bits, first on the wire first.
    Card { address: u8, bits: Vec<bool> },
    /// Keys were pressed (ASCII).
    Keys { address: u8, keys: Vec<u8> },
    /// The reader's local status, asked every [`STATUS_EVERY`] rounds: it is there and says so.
    Status { address: u8, tamper: bool, power_failure: bool },
}

/// How many polling rounds between two local-status questions (about every 2 s).
pub const STATUS_EVERY: u32 = 50;

/// Commands for the readers of a running bus.
#[derive(Debug, Clone)]
pub struct Bus {
    commands: mpsc::Sender<(u8, Vec<Command>)>,
}

impl Bus {
    /// Queues commands for the reader at `address` (sent before its next poll, in order).
    pub fn send(&self, address: u8, commands: Vec<Command>) -> bool {
        self.commands.try_send((address, commands)).is_ok()
    }
}

struct Pd {
    address: u8,
    seq: u8,
    online: bool,
    identified: bool,
    pending: VecDeque<Command>,
    /// Rounds since its local status was last asked.
    rounds: u32,
}

/// Starts driving the bus at `endpoint` (`host:port`); runs until `Bus` and the event receiver
/// are both dropped.
pub fn start(endpoint: String, addresses: Vec<u8>, events: mpsc::Sender<BusEvent>) -> (Bus, impl Future<Output = ()>) {
    let (tx, rx) = mpsc::channel(256);
    (Bus { commands: tx }, run(endpoint, addresses, events, rx))
}

async fn run(
    endpoint: String,
    addresses: Vec<u8>,
    events: mpsc::Sender<BusEvent>,
    mut commands: mpsc::Receiver<(u8, Vec<Command>)>,
) {
    let mut pds: Vec<Pd> = addresses
        .into_iter()
        .map(|address| Pd { address, seq: 0, online: false, identified: false, pending: VecDeque::new(), rounds: 0 })
        .collect();
    let mut backoff = FIRST_BACKOFF;
    loop {
        if events.is_closed() {
            return;
        }
        let reason = match TcpStream::connect(&endpoint).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                backoff = FIRST_BACKOFF;
                match drive(stream, &mut pds, &events, &mut commands).await {
                    Ok(()) => return,
                    Err(reason) => reason,
                }
            }
            Err(err) => format!("cannot connect to {endpoint}: {err}"),
        };
        for pd in &mut pds {
            pd.seq = 0;
            pd.identified = false;
            if std::mem::replace(&mut pd.online, false) {
                let _ = events.send(BusEvent::Offline { address: pd.address, reason: reason.clone() }).await;
            }
        }
        tracing::debug!(%endpoint, %reason, retry_ms = backoff.as_millis() as u64, "OSDP bus down");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LONGEST_BACKOFF);
    }
}

/// Moves the commands waiting in the channel to their readers' queues.
fn route(commands: &mut mpsc::Receiver<(u8, Vec<Command>)>, pds: &mut [Pd]) {
    while let Ok((address, queued)) = commands.try_recv() {
        match pds.iter_mut().find(|pd| pd.address == address) {
            Some(pd) => pd.pending.extend(queued),
            None => tracing::warn!(address, "commands for a reader not on this bus dropped"),
        }
    }
}

/// Polls the readers until the connection fails (`Err` with why) or the caller is gone (`Ok`).
async fn drive(
    mut stream: TcpStream,
    pds: &mut [Pd],
    events: &mpsc::Sender<BusEvent>,
    commands: &mut mpsc::Receiver<(u8, Vec<Command>)>,
) -> Result<(), String> {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut silent: HashMap<u8, u32> = HashMap::new();
    loop {
        for i in 0..pds.len() {
            // Before every exchange, so a verdict's relay goes out at the next turn on the bus.
            route(commands, pds);
            let Some(pd) = pds.get_mut(i) else { continue };
            pd.rounds += 1;
            let command = match pd.pending.front() {
                Some(command) => command.clone(),
                None if !pd.identified => Command::Id,
                None if pd.rounds >= STATUS_EVERY => {
                    pd.rounds = 0;
                    Command::LocalStatus
                }
                None => Command::Poll,
            };
            let Some(reply) = exchange(&mut stream, &mut buf, pd.address, pd.seq, &command).await? else {
                let count = silent.entry(pd.address).or_insert(0);
                *count += 1;
                if *count >= TRIES {
                    *count = 0;
                    pd.seq = 0;
                    pd.identified = false;
                    if std::mem::replace(&mut pd.online, false) {
                        let reason = format!("no reply within {} ms, {TRIES} times", REPLY_TIMEOUT.as_millis());
                        if events.send(BusEvent::Offline { address: pd.address, reason }).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                continue;
            };
            silent.insert(pd.address, 0);
            pd.seq = next_seq(pd.seq);
            if !matches!(command, Command::Poll | Command::Id | Command::Cap | Command::LocalStatus) {
                pd.pending.pop_front();
            }
            let mut identity = None;
            let event = match reply {
                Reply::PdId { vendor, serial, .. } => {
                    pd.identified = true;
                    identity = Some((vendor, serial));
                    None
                }
                Reply::Raw { bits, .. } => Some(BusEvent::Card { address: pd.address, bits }),
                Reply::Keypad { keys, .. } => Some(BusEvent::Keys { address: pd.address, keys }),
                Reply::LocalStatus { tamper, power_failure } => {
                    Some(BusEvent::Status { address: pd.address, tamper, power_failure })
                }
                Reply::Nak(code) => {
                    tracing::debug!(address = pd.address, code, command = command.code(), "reader answered NAK");
                    // A reader that will not identify itself is still a reader.
                    pd.identified |= command == Command::Id;
                    None
                }
                _ => None,
            };
            if !pd.online {
                pd.online = true;
                let (vendor, serial) = identity.map_or((None, None), |(v, s)| (Some(v), Some(s)));
                if events.send(BusEvent::Online { address: pd.address, vendor, serial }).await.is_err() {
                    return Ok(());
                }
            }
            if let Some(event) = event
                && events.send(event).await.is_err()
            {
                return Ok(());
            }
        }
        if events.is_closed() {
            return Ok(());
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
}

/// Sends one command and waits up to [`REPLY_TIMEOUT`] for the reader's reply (`None`: none came,
/// or one that was damaged or not from this reader). `Err` when the connection itself fails.
async fn exchange(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    address: u8,
    seq: u8,
    command: &Command,
) -> Result<Option<Reply>, String> {
    let packet = command.packet(address, seq);
    // Whatever is left over belongs to an exchange that is over.
    buf.clear();
    stream.write_all(&packet.encode(true)).await.map_err(|e| format!("cannot write to the bus: {e}"))?;
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    let mut chunk = [0u8; 256];
    loop {
        match decode(buf) {
            Ok((reply, _)) if reply.reply && reply.addr == address => {
                return Ok(match Reply::parse(reply.code, &reply.data) {
                    Ok(parsed) => Some(parsed),
                    Err(why) => {
                        tracing::warn!(address, why, "reader's reply not understood");
                        None
                    }
                });
            }
            Ok((_, used)) => {
                buf.drain(..used.min(buf.len()));
                continue;
            }
            Err(DecodeError::Secure { .. }) => {
                tracing::warn!(address, "reader answers on a secure channel, which this bus does not run");
                return Ok(None);
            }
            Err(DecodeError::Bad { skip, reason }) => {
                tracing::debug!(address, reason, "damaged bytes on the bus skipped");
                buf.drain(..skip.min(buf.len()));
                continue;
            }
            Err(DecodeError::Incomplete) => {}
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Ok(None),
            Ok(Ok(0)) => return Err("the serial-device server closed the connection".to_owned()),
            Ok(Ok(n)) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Ok(Err(e)) => return Err(format!("cannot read from the bus: {e}")),
        }
    }
}
