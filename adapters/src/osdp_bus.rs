//! An OSDP bus driven as Control Panel: one TCP connection to a serial-device server, the readers
//! (PDs) at their addresses on it, each polled in turn.
//!
//! The caller hands in the addresses and gets [`BusEvent`]s (a reader online or offline, a card
//! read, keys pressed); it sends commands (relay, LED, buzzer) to a reader through [`Bus`]. The
//! driver identifies each reader (ID) when it first answers, polls it every cycle, resends a
//! command whose reply did not come within 200 ms (same sequence number, so the reader replays
//! its answer rather than acting twice), and marks a reader offline after three silent tries;
//! a lost connection is reopened with back-off (0.5 s doubling to 10 s) and every reader on it
//! goes offline meanwhile.
//!
//! A reader given a key talks only over the secure channel: the handshake (CHLNG, CCRYPT,
//! SCRYPT, RMAC_I) before anything else, then every command sealed and every reply opened
//! (`osdp_sc`). A failed handshake, a wrong MAC or a plain answer on a secure channel ends the
//! session, takes the reader offline with the reason, and the handshake is tried again later with
//! the same key: never a plain-text fallback, never a silent re-key.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::osdp::{Command, DecodeError, Packet, Reply, decode, frame, next_seq};
use crate::osdp_sc::{self, CCRYPT, CHLNG, RMAC_I, SCBK_D, SCRYPT, SCS_11, SCS_12, SCS_13, SCS_14, Session};

/// How long a reader has to answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(200);
/// Tries of one command before the reader is offline.
const TRIES: u32 = 3;
/// The pause between two polling rounds of the bus.
const ROUND_PAUSE: Duration = Duration::from_millis(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const LONGEST_BACKOFF: Duration = Duration::from_secs(10);

/// How a reader's secure channel is keyed.
#[derive(Clone, PartialEq, Eq)]
pub enum Key {
    /// The reader's own SCBK.
    Scbk([u8; 16]),
    /// Install mode: the default SCBK-D every reader knows (only when the binding asks for it).
    Install,
    /// Install mode once, to give the reader this key (osdp_KEYSET over the SCBK-D channel); then
    /// this key, as `Scbk`.
    InstallThen([u8; 16]),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Key::Scbk(_) => "Key::Scbk([REDACTED])",
            Key::Install => "Key::Install",
            Key::InstallThen(_) => "Key::InstallThen([REDACTED])",
        })
    }
}

/// A reader on the bus: its address, and its secure channel's key if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    pub address: u8,
    pub key: Option<Key>,
}

/// How long after a failed handshake the next is tried.
const HANDSHAKE_RETRY: Duration = Duration::from_secs(5);

/// What happened on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// The reader answers (again); its identification when it gave one; whether over the secure
    /// channel.
    Online { address: u8, vendor: Option<[u8; 3]>, serial: Option<u32>, secure: bool },
    /// The reader stopped answering, or the bus is gone; why.
    Offline { address: u8, reason: String },
    /// A card was read: its bits, first on the wire first.
    Card { address: u8, bits: Vec<bool> },
    /// Keys were pressed (ASCII).
    Keys { address: u8, keys: Vec<u8> },
    /// The reader's local status, asked every [`STATUS_EVERY`] rounds: it is there and says so.
    Status { address: u8, tamper: bool, power_failure: bool },
    /// The reader took the new key it was given (install mode is over); the binding should now
    /// say `Scbk` with that key.
    Rekeyed { address: u8 },
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
    key: Option<Key>,
    /// The established secure channel.
    session: Option<Session>,
    /// No handshake before then (one just failed).
    handshake_after: Option<tokio::time::Instant>,
    /// Why it was last reported offline (reported again only when it changes).
    reason: Option<String>,
    /// Commands in a row it has not answered.
    silent: u32,
}

impl Pd {
    /// The event that reports the reader offline for `reason`: when it was online, or when the
    /// reason is new (a reader that never came online still says why).
    fn offline(&mut self, reason: String) -> Option<BusEvent> {
        let was_online = std::mem::replace(&mut self.online, false);
        if !was_online && self.reason.as_deref() == Some(reason.as_str()) {
            return None;
        }
        self.reason = Some(reason.clone());
        Some(BusEvent::Offline { address: self.address, reason })
    }

    /// Ends its secure session (a failed handshake, a broken chain, a refused key): the handshake
    /// is tried again, with the same key, after [`HANDSHAKE_RETRY`]; the reader is offline meanwhile.
    fn end_session(&mut self, reason: String) -> Option<BusEvent> {
        self.session = None;
        self.handshake_after = Some(tokio::time::Instant::now() + HANDSHAKE_RETRY);
        self.offline(reason)
    }
}

/// Starts driving the bus at `endpoint` (`host:port`); runs until `Bus` and the event receiver
/// are both dropped.
pub fn start(
    endpoint: String,
    readers: Vec<Reader>,
    events: mpsc::Sender<BusEvent>,
) -> (Bus, impl Future<Output = ()>) {
    let (tx, rx) = mpsc::channel(256);
    (Bus { commands: tx }, run(endpoint, readers, events, rx))
}

async fn run(
    endpoint: String,
    readers: Vec<Reader>,
    events: mpsc::Sender<BusEvent>,
    mut commands: mpsc::Receiver<(u8, Vec<Command>)>,
) {
    let mut pds: Vec<Pd> = readers
        .into_iter()
        .map(|reader| Pd {
            address: reader.address,
            seq: 0,
            online: false,
            identified: false,
            pending: VecDeque::new(),
            rounds: 0,
            key: reader.key,
            session: None,
            handshake_after: None,
            reason: None,
            silent: 0,
        })
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
            pd.session = None;
            if let Some(event) = pd.offline(reason.clone()) {
                let _ = events.send(event).await;
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
    loop {
        for i in 0..pds.len() {
            // Before every exchange, so a verdict's relay goes out at the next turn on the bus.
            route(commands, pds);
            let Some(pd) = pds.get_mut(i) else { continue };
            if pd.key.is_some() && pd.session.is_none() {
                if pd.handshake_after.is_some_and(|at| tokio::time::Instant::now() < at) {
                    continue;
                }
                match handshake(&mut stream, &mut buf, pd).await? {
                    Ok(session) => {
                        pd.session = Some(session);
                        pd.identified = false;
                        tracing::info!(address = pd.address, "OSDP secure channel established");
                        if let Some(Key::InstallThen(scbk)) = pd.key {
                            pd.pending.push_front(Command::KeySet { scbk });
                        }
                    }
                    Err(reason) => {
                        tracing::warn!(address = pd.address, %reason, "OSDP secure channel not established");
                        if let Some(event) = pd.end_session(reason)
                            && events.send(event).await.is_err()
                        {
                            return Ok(());
                        }
                        continue;
                    }
                }
            }
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
            let reply = match exchange(&mut stream, &mut buf, pd, &command).await? {
                Ok(reply) => reply,
                // The channel broke: it is set up again (same key) after a pause.
                Err(reason) => {
                    tracing::warn!(address = pd.address, %reason, "OSDP secure channel ended");
                    if let Some(event) = pd.end_session(reason)
                        && events.send(event).await.is_err()
                    {
                        return Ok(());
                    }
                    continue;
                }
            };
            let Some(reply) = reply else {
                pd.silent += 1;
                if pd.silent >= TRIES {
                    pd.silent = 0;
                    pd.seq = 0;
                    pd.identified = false;
                    pd.session = None;
                    let reason = format!("no reply within {} ms, {TRIES} times", REPLY_TIMEOUT.as_millis());
                    if let Some(event) = pd.offline(reason)
                        && events.send(event).await.is_err()
                    {
                        return Ok(());
                    }
                }
                continue;
            };
            pd.silent = 0;
            pd.seq = next_seq(pd.seq);
            if let Command::KeySet { scbk } = command {
                pd.pending.pop_front();
                if reply == Reply::Ack {
                    // The reader holds its own key now: a new session with it, at once.
                    tracing::info!(address = pd.address, "OSDP reader re-keyed; install mode is over");
                    pd.key = Some(Key::Scbk(scbk));
                    pd.session = None;
                    pd.handshake_after = None;
                    if events.send(BusEvent::Rekeyed { address: pd.address }).await.is_err() {
                        return Ok(());
                    }
                } else {
                    let reason = format!("secure channel: the reader refused its new key ({reply:?})");
                    if let Some(event) = pd.end_session(reason)
                        && events.send(event).await.is_err()
                    {
                        return Ok(());
                    }
                }
                continue;
            }
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
                pd.reason = None;
                let (vendor, serial) = identity.map_or((None, None), |(v, s)| (Some(v), Some(s)));
                let secure = pd.session.is_some();
                if events.send(BusEvent::Online { address: pd.address, vendor, serial, secure }).await.is_err() {
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

/// Sends one command and reads the reader's reply: `Ok(None)` if none came in time (or it was
/// not understood); `Err` (inner) if the secure channel broke; `Err` (outer) if the connection did.
async fn exchange(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    pd: &mut Pd,
    command: &Command,
) -> Result<Result<Option<Reply>, String>, String> {
    let packet = command.packet(pd.address, pd.seq);
    let wire = match pd.session.as_mut() {
        Some(session) => osdp_sc::seal(session, true, &packet, true),
        None => packet.encode(true),
    };
    let Some(bytes) = transact(stream, buf, pd.address, &wire).await? else { return Ok(Ok(None)) };
    let (code, data) = match pd.session.as_mut() {
        Some(session) => match osdp_sc::open(Some(session), false, &bytes) {
            Ok((opened, _)) => (opened.packet.code, opened.packet.data),
            Err(err) => return Ok(Err(format!("secure channel: {err}"))),
        },
        None => match decode(&bytes) {
            Ok((packet, _)) => (packet.code, packet.data),
            Err(DecodeError::Secure { .. }) => {
                tracing::warn!(address = pd.address, "reader answers on a secure channel it was not given a key for");
                return Ok(Ok(None));
            }
            Err(_) => return Ok(Ok(None)),
        },
    };
    Ok(Ok(match Reply::parse(code, &data) {
        Ok(parsed) => Some(parsed),
        Err(why) => {
            tracing::warn!(address = pd.address, why, "reader's reply not understood");
            None
        }
    }))
}

/// The secure channel's handshake with one reader: `Ok(Err(why))` when the reader refuses it or
/// proves to hold another key.
async fn handshake(stream: &mut TcpStream, buf: &mut Vec<u8>, pd: &mut Pd) -> Result<Result<Session, String>, String> {
    let (scbk, key_type) = match &pd.key {
        Some(Key::Scbk(scbk)) => (*scbk, 1),
        Some(Key::Install | Key::InstallThen(_)) => (SCBK_D, 0),
        None => return Ok(Err("no key".to_owned())),
    };
    let address = pd.address;
    let rnd_a: [u8; 8] = rand::random();
    let chlng = Packet { addr: address, reply: false, seq: pd.seq, crc: true, code: CHLNG, data: rnd_a.to_vec() };
    let Some(bytes) = transact(stream, buf, address, &osdp_sc::handshake(&chlng, SCS_11, key_type, true)).await? else {
        return Ok(Err("secure channel: no answer to the challenge".to_owned()));
    };
    pd.seq = next_seq(pd.seq);
    let ccrypt = match osdp_sc::open(None, false, &bytes) {
        Ok((opened, _)) if opened.kind == SCS_12 && opened.packet.code == CCRYPT => opened.packet.data,
        _ => {
            let why = match decode(&bytes) {
                Ok((packet, _)) if packet.code == 0x41 => {
                    format!("the reader refuses the secure channel (NAK {})", packet.data.first().copied().unwrap_or(0))
                }
                _ => "the reader did not answer the challenge with its cryptogram".to_owned(),
            };
            return Ok(Err(format!("secure channel: {why}")));
        }
    };
    let (Some(rnd_b), Some(cryptogram)) = (ccrypt.get(8..16), ccrypt.get(16..32)) else {
        return Ok(Err("secure channel: the reader's cryptogram is cut short".to_owned()));
    };
    let rnd_b: [u8; 8] = rnd_b.try_into().unwrap_or_default();
    let mut session = Session::new(&scbk, rnd_a, rnd_b);
    if !session.client_cryptogram_matches(cryptogram) {
        let which = if key_type == 0 { "the install-mode key (SCBK-D)" } else { "the key it was bound with" };
        return Ok(Err(format!("secure channel: the reader does not hold {which}")));
    }
    let scrypt = Packet {
        addr: address,
        reply: false,
        seq: pd.seq,
        crc: true,
        code: SCRYPT,
        data: session.host_cryptogram().to_vec(),
    };
    let Some(bytes) = transact(stream, buf, address, &osdp_sc::handshake(&scrypt, SCS_13, key_type, true)).await?
    else {
        return Ok(Err("secure channel: no answer to the host cryptogram".to_owned()));
    };
    pd.seq = next_seq(pd.seq);
    let expected = session.start_chain();
    match osdp_sc::open(None, false, &bytes) {
        Ok((opened, _)) if opened.kind == SCS_14 && opened.packet.code == RMAC_I && opened.packet.data == expected => {
            Ok(Ok(session))
        }
        _ => Ok(Err("secure channel: the reader refused the host cryptogram".to_owned())),
    }
}

/// Writes a packet and waits up to [`REPLY_TIMEOUT`] for one whole packet from the reader at
/// `address` (`None`: none came). `Err` when the connection itself fails.
async fn transact(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    address: u8,
    wire: &[u8],
) -> Result<Option<Vec<u8>>, String> {
    // Whatever is left over belongs to an exchange that is over.
    buf.clear();
    stream.write_all(wire).await.map_err(|e| format!("cannot write to the bus: {e}"))?;
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    let mut chunk = [0u8; 256];
    loop {
        match frame(buf) {
            Ok((found, used)) if found.reply && found.addr == address => {
                let start = used - found.body.len() - if found.crc { 2 } else { 1 };
                return Ok(buf.get(start..used).map(<[u8]>::to_vec));
            }
            Ok((_, used)) => {
                buf.drain(..used.min(buf.len()));
                continue;
            }
            Err(DecodeError::Bad { skip, reason }) => {
                tracing::debug!(address, reason, "damaged bytes on the bus skipped");
                buf.drain(..skip.clamp(1, buf.len().max(1)).min(buf.len()));
                continue;
            }
            Err(DecodeError::Incomplete | DecodeError::Secure { .. }) => {}
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Ok(None),
            Ok(Ok(0)) => return Err("the serial-device server closed the connection".to_owned()),
            Ok(Ok(n)) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Ok(Err(e)) => return Err(format!("cannot read from the bus: {e}")),
        }
    }
}
