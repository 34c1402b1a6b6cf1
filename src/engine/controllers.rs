//! Controllers that decide by themselves (UHPPOTE UT0311, `portcullis_adapters::uhppote`): the
//! engine keeps each one's card table in step with the passes allowed at the gates its doors
//! serve, and hears its swipes, which are journaled and streamed like any decision
//! (`source: "uhppote"`).
//!
//! Each bound controller has a task that owns its table. What the controller must hold is
//! computed from the engine's memory (the pass's state and rule, the gates' zones) and the card
//! numbers, which are kept sealed in the database ([`credentials::open_card`]); what it may hold
//! is `controller_cards`, where a card is written (unconfirmed) before it is sent and removed
//! only once its deletion is confirmed. The difference is what is pending: sent at once when a
//! pass changes (revocations and other deletions first), recomputed in full every
//! `controllers.resync_secs`, and sent whenever the controller is back — after a restart too,
//! since both sides of the difference outlive the process. A deletion needs no database: a
//! revocation reaches a controller while PostgreSQL is away.
//!
//! A controller the engine binds is emptied first (the engine owns its table), and its event
//! listener is set to the engine's (`controllers.listen`) every time it comes online.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use deadpool_postgres::Pool;
use portcullis_actors::domain::{CredentialKind, Direction, PassStatus, Source};
use portcullis_actors::engine::{Engine, Presented};
use portcullis_actors::events::Event;
use portcullis_adapters::uhppote::{self, Card, Message, PACKET_LEN, Reply, Request};
use secrecy::SecretString;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Mutex, Notify};
use uuid::Uuid;

use crate::engine::credentials;

/// How long a controller has to answer one request, and how often it is asked.
const REPLY_TIMEOUT: Duration = Duration::from_millis(300);
const TRIES: usize = 3;
/// How often an online controller is asked its status (its liveness).
const POLL: Duration = Duration::from_secs(2);
/// Reconnect back-off bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A controller bound to gates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub org_id: Uuid,
    pub id: Uuid,
    /// `host:port`.
    pub endpoint: String,
    pub serial: u32,
    /// Door (1–4) → the gate it serves.
    pub doors: BTreeMap<u8, Uuid>,
    /// Whether the engine has emptied its table to own it.
    pub cleared: bool,
}

/// A controller's live state.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ControllerStatus {
    pub online: bool,
    /// When it last came online or went offline.
    pub since: Option<DateTime<Utc>>,
    /// When it last answered.
    pub last_seen: Option<DateTime<Utc>>,
    /// Why it is offline, or what it refused.
    pub reason: Option<String>,
    /// When its table last matched the passes allowed at its doors.
    pub last_sync: Option<DateTime<Utc>>,
    /// Cards to add, change or delete that it has not confirmed yet.
    pub pending: usize,
    /// Cards it holds (as confirmed).
    pub cards: usize,
    /// Cards allowed at its doors that it cannot be given: issued before card numbers were kept
    /// sealed, or numbered beyond what the controller holds (facility × 100000 + number, u32).
    pub unsyncable: usize,
}

/// Which passes a reconciliation looks at.
enum Scope {
    All,
    Passes(HashSet<Uuid>),
}

/// Every bound controller, its task and its status, and the listener its events come to.
pub struct Controllers {
    engine: Engine,
    pepper: SecretString,
    pool: Pool,
    resync: Duration,
    /// Where controllers send their events (the bound socket's address).
    listener: Option<SocketAddr>,
    bindings: DashMap<Uuid, Binding>,
    status: DashMap<Uuid, ControllerStatus>,
    /// The address each controller answers from, once reached (events from elsewhere are dropped).
    peers: DashMap<Uuid, SocketAddr>,
    /// The newest event index seen from each controller.
    last_event: DashMap<Uuid, u32>,
    tasks: Mutex<HashMap<Uuid, Task>>,
}

/// A controller's task, and how to wake it.
type Task = (tokio::task::JoinHandle<()>, Arc<Notify>);

impl Controllers {
    /// Binds the event listener (`listen`: `None` hears no events) and returns the registry.
    pub async fn start(
        engine: Engine,
        pepper: SecretString,
        pool: Pool,
        listen: Option<SocketAddr>,
        resync: Duration,
    ) -> std::io::Result<Arc<Controllers>> {
        let socket = match listen {
            Some(addr) => Some(UdpSocket::bind(addr).await?),
            None => None,
        };
        let listener = socket.as_ref().map(UdpSocket::local_addr).transpose()?;
        let controllers = Arc::new(Controllers {
            engine,
            pepper,
            pool,
            resync: resync.max(Duration::from_secs(1)),
            listener,
            bindings: DashMap::new(),
            status: DashMap::new(),
            peers: DashMap::new(),
            last_event: DashMap::new(),
            tasks: Mutex::new(HashMap::new()),
        });
        if let Some(socket) = socket {
            tracing::info!(addr = ?listener, "controller events heard here");
            actix_rt::spawn(controllers.clone().hear(socket));
        }
        Ok(controllers)
    }

    /// Drives the controllers bound at start.
    pub async fn start_all(self: &Arc<Self>, bindings: Vec<Binding>) {
        for binding in bindings {
            self.bind(binding).await;
        }
    }

    /// Binds (or re-binds) a controller; driven when this returns, without a restart.
    pub async fn bind(self: &Arc<Self>, binding: Binding) {
        let id = binding.id;
        self.bindings.insert(id, binding);
        self.status.entry(id).or_insert_with(|| ControllerStatus {
            reason: Some("not yet reached".to_owned()),
            ..ControllerStatus::default()
        });
        let mut tasks = self.tasks.lock().await;
        if let Some((old, _)) = tasks.remove(&id) {
            old.abort();
        }
        let wake = Arc::new(Notify::new());
        let task = actix_rt::spawn(self.clone().drive(id, wake.clone()));
        tasks.insert(id, (task, wake));
    }

    /// Unbinds a controller: its task stops, and its table is emptied (best effort) so that it
    /// grants none of the engine's passes any more.
    pub async fn unbind(self: &Arc<Self>, id: Uuid) {
        if let Some((task, _)) = self.tasks.lock().await.remove(&id) {
            task.abort();
        }
        self.status.remove(&id);
        self.peers.remove(&id);
        let Some((_, binding)) = self.bindings.remove(&id) else { return };
        let emptied = match connect(&binding.endpoint).await {
            Ok(socket) => exchange(&socket, binding.serial, Request::DeleteAllCards).await,
            Err(err) => Err(err),
        };
        match emptied {
            Ok(Reply::Done { ok: true, .. }) => tracing::info!(controller = %id, "unbound controller emptied"),
            other => tracing::warn!(controller = %id, result = ?other, "unbound controller could not be emptied"),
        }
    }

    /// Unbinds every controller of an organization (it was deleted).
    pub async fn unbind_org(self: &Arc<Self>, org_id: Uuid) {
        let ids: Vec<Uuid> = self.bindings.iter().filter(|b| b.org_id == org_id).map(|b| b.id).collect();
        for id in ids {
            self.unbind(id).await;
        }
    }

    /// A gate was deleted: doors that served it serve nothing now.
    pub async fn gate_deleted(self: &Arc<Self>, gate_id: Uuid) {
        let changed: Vec<Binding> = self
            .bindings
            .iter()
            .filter(|b| b.doors.values().any(|g| *g == gate_id))
            .map(|b| {
                let mut binding = b.clone();
                binding.doors.retain(|_, g| *g != gate_id);
                binding
            })
            .collect();
        for binding in changed {
            self.bind(binding).await;
        }
    }

    pub fn status(&self, id: Uuid) -> Option<ControllerStatus> {
        self.status.get(&id).map(|s| s.clone())
    }

    fn update(&self, id: Uuid, change: impl FnOnce(&mut ControllerStatus)) {
        let Some(mut status) = self.status.get_mut(&id) else { return };
        let was_online = status.online;
        change(&mut status);
        let (online, reason) = (status.online, status.reason.clone());
        drop(status);
        if was_online != online {
            let count = self.status.iter().filter(|s| s.online).count();
            metrics::gauge!("portcullis_controllers_online").set(count as f64);
            if let Some(binding) = self.bindings.get(&id).map(|b| b.clone()) {
                if online {
                    tracing::info!(controller = %id, "controller online");
                } else {
                    tracing::warn!(controller = %id, reason = reason.as_deref().unwrap_or(""), "controller offline");
                }
                for gate_id in binding.doors.values() {
                    self.engine.publish(
                        binding.org_id,
                        Event::GateReader { gate_id: *gate_id, online, reason: reason.clone() },
                    );
                }
            }
        }
    }

    fn offline(&self, id: Uuid, reason: String) {
        self.update(id, |s| {
            if s.online || s.since.is_none() {
                s.since = Some(Utc::now());
            }
            s.online = false;
            s.reason = Some(reason);
        });
    }

    /// The controller's task: reach it, own its table, keep it in step, until unbound.
    async fn drive(self: Arc<Self>, id: Uuid, wake: Arc<Notify>) {
        let Some(mut binding) = self.bindings.get(&id).map(|b| b.clone()) else { return };
        let mut events = self.engine.events().subscribe(binding.org_id, None).0;
        // What it may hold: needed before anything is sent, so wait for the database if need be.
        let mut held = loop {
            match self.load_held(&binding).await {
                Ok(held) => break held,
                Err(err) => {
                    self.offline(id, format!("its card table cannot be read from the database: {err}"));
                    tokio::time::sleep(BACKOFF_MAX).await;
                }
            }
        };
        let mut cards: HashMap<Uuid, Vec<u32>> = HashMap::new();
        let mut unsyncable = 0;
        let mut backoff = BACKOFF_MIN;
        loop {
            // Offline: still count what is pending, for the status.
            let online = match connect(&binding.endpoint).await {
                Ok(socket) => match exchange(&socket, binding.serial, Request::GetStatus).await {
                    Ok(Reply::Status(status)) => Some((socket, status)),
                    Ok(other) => {
                        self.offline(id, format!("answered status with {other:?}"));
                        None
                    }
                    Err(err) => {
                        self.offline(id, err);
                        None
                    }
                },
                Err(err) => {
                    self.offline(id, err);
                    None
                }
            };
            let Some((socket, status)) = online else {
                self.load_cards(&binding, &Scope::All, &mut cards, &mut unsyncable).await;
                let pending = self.reconcile(None, &binding, &mut held, &cards, &Scope::All).await.unwrap_or(0);
                self.update(id, |s| s.pending = pending);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = wake.notified() => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            };
            backoff = BACKOFF_MIN;
            if let Ok(peer) = socket.peer_addr() {
                self.peers.insert(id, peer);
            }
            // Events up to now are old news.
            let newest = status.event.map_or(0, |e| e.index);
            self.last_event.entry(id).or_insert(newest);
            self.update(id, |s| {
                if !s.online {
                    s.since = Some(Utc::now());
                }
                s.online = true;
                s.reason = None;
                s.last_seen = Some(Utc::now());
            });
            if let Some(listener) = self.listener_for(&socket) {
                match exchange(&socket, binding.serial, Request::SetListener { listener }).await {
                    Ok(Reply::Done { ok: true, .. }) => {}
                    other => {
                        let reason = format!("refused the event listener {listener}: {other:?}");
                        self.update(id, |s| s.reason = Some(reason));
                    }
                }
            }
            if !binding.cleared {
                match self.clear(&socket, &binding).await {
                    Ok(()) => {
                        held.clear();
                        binding.cleared = true;
                        self.bindings.insert(id, binding.clone());
                    }
                    Err(err) => {
                        self.offline(id, format!("its card table could not be emptied: {err}"));
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                }
            }
            // Online: keep it in step until it stops answering.
            let mut scope = Scope::All;
            let mut next_poll = tokio::time::Instant::now() + POLL;
            let mut next_full = tokio::time::Instant::now() + self.resync;
            loop {
                self.load_cards(&binding, &scope, &mut cards, &mut unsyncable).await;
                let full = matches!(scope, Scope::All);
                match self.reconcile(Some(&socket), &binding, &mut held, &cards, &scope).await {
                    // In step as far as the engine knows: does the controller agree? A table
                    // changed behind the engine's back (the vendor's own software, a reset) is
                    // emptied and filled again.
                    Ok(0) if full && !self.table_agrees(&socket, &binding, &held).await => {
                        metrics::counter!("portcullis_controller_tables_reowned_total").increment(1);
                        match self.clear(&socket, &binding).await {
                            Ok(()) => held.clear(),
                            Err(err) => {
                                self.offline(id, format!("its card table could not be emptied: {err}"));
                                break;
                            }
                        }
                        continue;
                    }
                    Ok(pending) => {
                        let count = held.len();
                        self.update(id, |s| {
                            s.pending = pending;
                            s.cards = count;
                            s.unsyncable = unsyncable;
                            s.last_seen = Some(Utc::now());
                            if pending == 0 && matches!(scope, Scope::All) {
                                s.last_sync = Some(Utc::now());
                            }
                        });
                    }
                    Err(err) => {
                        self.offline(id, err);
                        break;
                    }
                }
                scope = Scope::Passes(HashSet::new());
                tokio::select! {
                    received = events.recv() => {
                        // The organization's channel is gone (it is being deleted, and this task
                        // with it): listen afresh rather than spin.
                        if matches!(received, Err(RecvError::Closed)) {
                            tokio::time::sleep(POLL).await;
                            events = self.engine.events().subscribe(binding.org_id, None).0;
                            scope = Scope::All;
                            continue;
                        }
                        let mut note = |event: Result<Arc<portcullis_actors::events::Envelope>, RecvError>| match event {
                            Ok(envelope) => {
                                if let (Some(pass_id), Scope::Passes(passes)) = (concerns(&envelope.event), &mut scope) {
                                    passes.insert(pass_id);
                                }
                            }
                            Err(RecvError::Lagged(_)) => scope = Scope::All,
                            Err(RecvError::Closed) => {}
                        };
                        note(received);
                        while let Ok(more) = events.try_recv() {
                            note(Ok(more));
                        }
                    }
                    () = wake.notified() => scope = Scope::All,
                    () = tokio::time::sleep_until(next_full) => {
                        scope = Scope::All;
                        next_full = tokio::time::Instant::now() + self.resync;
                    }
                    () = tokio::time::sleep_until(next_poll) => {
                        next_poll = tokio::time::Instant::now() + POLL;
                        match exchange(&socket, binding.serial, Request::GetStatus).await {
                            Ok(_) => self.update(id, |s| s.last_seen = Some(Utc::now())),
                            Err(err) => {
                                self.offline(id, err);
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether the controller holds as many cards as the engine gave it (a controller that does
    /// not answer is taken to agree: its liveness is the poll's business).
    async fn table_agrees(&self, socket: &UdpSocket, binding: &Binding, held: &HashMap<u32, Card>) -> bool {
        match exchange(socket, binding.serial, Request::CountCards).await {
            Ok(Reply::CardCount(count)) if usize::try_from(count).ok() != Some(held.len()) => {
                tracing::warn!(controller = %binding.id, holds = count, expected = held.len(),
                    "controller's card table was changed outside the engine: emptying and refilling it");
                false
            }
            _ => true,
        }
    }

    /// The listener address to give a controller reached over `socket`: the listener's own, or,
    /// when it listens on every address, the one the controller's route leaves from.
    fn listener_for(&self, socket: &UdpSocket) -> Option<SocketAddrV4> {
        let listener = self.listener?;
        let ip = match listener.ip() {
            IpAddr::V4(ip) if !ip.is_unspecified() => ip,
            _ => match socket.local_addr().ok()?.ip() {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(_) => return None,
            },
        };
        Some(SocketAddrV4::new(ip, listener.port()))
    }

    /// Empties the controller's table and records that the engine owns it.
    async fn clear(&self, socket: &UdpSocket, binding: &Binding) -> Result<(), String> {
        match exchange(socket, binding.serial, Request::DeleteAllCards).await? {
            Reply::Done { ok: true, .. } => {}
            other => return Err(format!("refused: {other:?}")),
        }
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        client
            .execute(
                "UPDATE controllers SET cleared_at = now() WHERE org_id = $1 AND id = $2",
                &[&binding.org_id, &binding.id],
            )
            .await
            .map_err(|e| e.to_string())?;
        client
            .execute(
                "DELETE FROM controller_cards WHERE org_id = $1 AND controller_id = $2",
                &[&binding.org_id, &binding.id],
            )
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(controller = %binding.id, "controller emptied: its table is the engine's now");
        Ok(())
    }

    /// What the controller may hold. An unconfirmed card is held as a card opening no door: it
    /// differs from anything wanted, so it is sent again or deleted.
    async fn load_held(&self, binding: &Binding) -> Result<HashMap<u32, Card>, String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let rows = client
            .query(
                "SELECT card_number, valid_from, valid_to, doors, confirmed FROM controller_cards
                 WHERE org_id = $1 AND controller_id = $2",
                &[&binding.org_id, &binding.id],
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut held = HashMap::new();
        for row in rows {
            let (Ok(number), Ok(from), Ok(to), Ok(doors), Ok(confirmed)) =
                (row.try_get::<_, i64>(0), row.try_get(1), row.try_get(2), row.try_get::<_, i16>(3), row.try_get(4))
            else {
                continue;
            };
            let Ok(number) = u32::try_from(number) else { continue };
            let doors = if confirmed { [0, 1, 2, 3].map(|bit| doors >> bit & 1 == 1) } else { [false; 4] };
            held.insert(number, Card { number, from, to, doors });
        }
        Ok(held)
    }

    /// Reads the card numbers of the passes in `scope` (all live passes of the organization, or
    /// the ones named), keeping what was known when the database cannot be read.
    async fn load_cards(
        &self,
        binding: &Binding,
        scope: &Scope,
        cards: &mut HashMap<Uuid, Vec<u32>>,
        unsyncable: &mut usize,
    ) {
        let passes: Option<Vec<Uuid>> = match scope {
            Scope::All => None,
            Scope::Passes(passes) if passes.is_empty() => return,
            Scope::Passes(passes) => Some(passes.iter().copied().collect()),
        };
        let rows = match self.pool.get().await {
            Ok(client) => client
                .query(
                    "SELECT c.pass_id, c.card_sealed FROM credentials c
                     JOIN passes p ON p.org_id = c.org_id AND p.id = c.pass_id
                     WHERE c.org_id = $1 AND c.kind = 'card' AND c.revoked_at IS NULL
                       AND p.status IN ('active', 'suspended') AND ($2::uuid[] IS NULL OR c.pass_id = ANY($2))",
                    &[&binding.org_id, &passes],
                )
                .await
                .map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(err) => {
                tracing::debug!(controller = %binding.id, error = %err, "card numbers not refreshed; using those known");
                return;
            }
        };
        let mut found: HashMap<Uuid, Vec<u32>> = HashMap::new();
        let mut missing = 0;
        for row in rows {
            let Ok(pass_id) = row.try_get::<_, Uuid>(0) else { continue };
            let number = row
                .try_get::<_, Option<Vec<u8>>>(1)
                .ok()
                .flatten()
                .and_then(|sealed| credentials::open_card(&self.pepper, &sealed))
                .and_then(|(facility, number)| uhppote::card_number(facility, number));
            match number {
                Some(number) => found.entry(pass_id).or_default().push(number),
                None => missing += 1,
            }
        }
        match passes {
            None => {
                *cards = found;
                *unsyncable = missing;
            }
            Some(passes) => {
                // A pass that has no live card any more keeps the numbers it had: they are what
                // must be deleted (the next full load forgets them).
                for pass_id in passes {
                    if let Some(numbers) = found.remove(&pass_id) {
                        cards.insert(pass_id, numbers);
                    }
                }
            }
        }
    }

    /// What the controller must hold for the passes in `scope`, from the engine's memory.
    async fn wanted(&self, binding: &Binding, cards: &HashMap<Uuid, Vec<u32>>, scope: &Scope) -> HashMap<u32, Card> {
        let mut wanted = HashMap::new();
        // No snapshot: the organization is gone, and nothing is wanted.
        let Some(snapshot) = self.engine.snapshot(binding.org_id) else { return wanted };
        let now = Utc::now();
        for (pass_id, numbers) in cards {
            if let Scope::Passes(passes) = scope
                && !passes.contains(pass_id)
            {
                continue;
            }
            let Some(state) = self.engine.pass_state(*pass_id).await else { continue };
            if state.status != PassStatus::Active || state.valid_to <= now || state.uses_left() == 0 {
                continue;
            }
            let Some(rule) = snapshot.rules.get(&state.rule_id) else { continue };
            let opens = |door: u8| {
                binding
                    .doors
                    .get(&door)
                    .and_then(|gate_id| snapshot.gates.get(gate_id))
                    .is_some_and(|gate| rule.zones.contains(&gate.zone_id))
            };
            let doors = [opens(1), opens(2), opens(3), opens(4)];
            if !doors.contains(&true) {
                continue;
            }
            let tz = snapshot.policy.timezone;
            let from = state.valid_from.with_timezone(&tz).date_naive();
            let to = state.valid_to.with_timezone(&tz).date_naive();
            for number in numbers {
                wanted.insert(*number, Card { number: *number, from, to, doors });
            }
        }
        wanted
    }

    /// Brings the controller's table to what is wanted (with `socket`), or only counts what
    /// differs (without); returns what is still pending. Deletions go first; a card is recorded
    /// as possibly held before it is sent, and forgotten only once its deletion is confirmed.
    async fn reconcile(
        &self,
        socket: Option<&UdpSocket>,
        binding: &Binding,
        held: &mut HashMap<u32, Card>,
        cards: &HashMap<Uuid, Vec<u32>>,
        scope: &Scope,
    ) -> Result<usize, String> {
        let wanted = self.wanted(binding, cards, scope).await;
        let in_scope: Option<HashSet<u32>> = match scope {
            Scope::All => None,
            Scope::Passes(passes) => Some(passes.iter().filter_map(|p| cards.get(p)).flatten().copied().collect()),
        };
        let deletes: Vec<u32> = held
            .keys()
            .filter(|n| in_scope.as_ref().is_none_or(|s| s.contains(n)) && !wanted.contains_key(n))
            .copied()
            .collect();
        let puts: Vec<Card> = wanted.values().filter(|card| held.get(&card.number) != Some(card)).copied().collect();
        let mut pending = deletes.len() + puts.len();
        let Some(socket) = socket else { return Ok(pending) };
        for number in deletes {
            match exchange(socket, binding.serial, Request::DeleteCard { number }).await? {
                Reply::Done { ok: true, .. } => {}
                other => return Err(format!("refused to delete a card: {other:?}")),
            }
            metrics::counter!("portcullis_controller_changes_total", "change" => "delete").increment(1);
            held.remove(&number);
            pending -= 1;
            // Not recorded yet is harmless: it is deleted again later.
            if let Err(err) = self.forget(binding, number).await {
                tracing::debug!(controller = %binding.id, error = %err, "a confirmed deletion is not recorded yet");
            }
        }
        for card in puts {
            // Recorded first, or not sent: what it may hold is never less than what it holds.
            if let Err(err) = self.remember(binding, &card, false).await {
                tracing::debug!(controller = %binding.id, error = %err, "a card waits for the database before it is sent");
                continue;
            }
            held.insert(card.number, Card { doors: [false; 4], ..card });
            match exchange(socket, binding.serial, Request::PutCard(card)).await? {
                Reply::Done { ok: true, .. } => {}
                other => return Err(format!("refused a card: {other:?}")),
            }
            metrics::counter!("portcullis_controller_changes_total", "change" => "put").increment(1);
            held.insert(card.number, card);
            pending -= 1;
            if let Err(err) = self.remember(binding, &card, true).await {
                tracing::debug!(controller = %binding.id, error = %err, "a confirmed card is not recorded as confirmed yet");
            }
        }
        Ok(pending)
    }

    async fn remember(&self, binding: &Binding, card: &Card, confirmed: bool) -> Result<(), String> {
        let doors: i16 = card.doors.iter().enumerate().filter(|(_, on)| **on).map(|(bit, _)| 1 << bit).sum();
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        client
            .execute(
                "INSERT INTO controller_cards (org_id, controller_id, card_number, valid_from, valid_to, doors, confirmed)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (org_id, controller_id, card_number) DO UPDATE SET valid_from = EXCLUDED.valid_from,
                     valid_to = EXCLUDED.valid_to, doors = EXCLUDED.doors, confirmed = EXCLUDED.confirmed",
                &[&binding.org_id, &binding.id, &i64::from(card.number), &card.from, &card.to, &doors, &confirmed],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn forget(&self, binding: &Binding, number: u32) -> Result<(), String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        client
            .execute(
                "DELETE FROM controller_cards WHERE org_id = $1 AND controller_id = $2 AND card_number = $3",
                &[&binding.org_id, &binding.id, &i64::from(number)],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Hears what controllers report: each swipe at a bound door is journaled and streamed.
    async fn hear(self: Arc<Self>, socket: UdpSocket) {
        let mut buf = [0u8; 2 * PACKET_LEN];
        loop {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else { continue };
            let Ok(Message { serial, body: Reply::Status(status) }) = Reply::decode(buf.get(..len).unwrap_or_default())
            else {
                metrics::counter!("portcullis_controller_events_total", "outcome" => "malformed").increment(1);
                continue;
            };
            let Some(binding) = self.bindings.iter().find(|b| b.serial == serial).map(|b| b.clone()) else {
                metrics::counter!("portcullis_controller_events_total", "outcome" => "unknown_controller").increment(1);
                continue;
            };
            // Only from where the controller answers: anyone can send a datagram.
            if self.peers.get(&binding.id).is_none_or(|peer| peer.ip() != from.ip()) {
                metrics::counter!("portcullis_controller_events_total", "outcome" => "wrong_source").increment(1);
                tracing::warn!(controller = %binding.id, %from, "controller event from an address it does not answer from: dropped");
                continue;
            }
            let Some(event) = status.event else { continue };
            let fresh = {
                let mut last = self.last_event.entry(binding.id).or_insert(0);
                // A controller that was reset numbers from 1 again.
                let fresh = event.index > *last || event.index < last.saturating_sub(1000);
                if fresh {
                    *last = event.index;
                }
                fresh
            };
            if !fresh || event.kind != uhppote::Event::SWIPE {
                continue;
            }
            let Some(&gate_id) = binding.doors.get(&event.door) else {
                tracing::info!(controller = %binding.id, door = event.door, "swipe at a door that serves no gate");
                continue;
            };
            let number = u64::from(event.card);
            let lookups = vec![
                credentials::lookup_key(
                    &self.pepper,
                    credentials::CARD,
                    &credentials::card_value(number / 100_000, number % 100_000),
                ),
                credentials::lookup_key(&self.pepper, credentials::CARD, &credentials::card_value(0, number)),
                credentials::lookup_key(&self.pepper, credentials::CARD_NUMBER, &number.to_string()),
            ];
            let presented = Presented { kind: Some(CredentialKind::Card), lookups, qr_step: None, verdict: None };
            let direction = if event.direction == 2 { Direction::Out } else { Direction::In };
            let recorded = self
                .engine
                .record_verdict(gate_id, &presented, event.granted, direction, Source::Uhppote, Utc::now())
                .await;
            match recorded {
                Ok(outcome) => {
                    metrics::counter!("portcullis_controller_events_total", "outcome" => outcome.decision.as_str())
                        .increment(1);
                    tracing::debug!(controller = %binding.id, %gate_id, reason = uhppote::reason_text(event.reason), "controller swipe recorded");
                }
                Err(err) => {
                    tracing::warn!(controller = %binding.id, %gate_id, error = %err, "controller swipe not recorded")
                }
            }
        }
    }
}

/// The pass an event may change the card tables for.
fn concerns(event: &Event) -> Option<Uuid> {
    match event {
        Event::PassIssued { pass_id, .. }
        | Event::PassRevoked { pass_id, .. }
        | Event::PassSuspended { pass_id }
        | Event::PassResumed { pass_id }
        | Event::PassExpired { pass_id } => Some(*pass_id),
        // An entry may use up a pass.
        Event::Decision { pass_id, decision, .. } if decision.is_allow() => *pass_id,
        _ => None,
    }
}

/// A UDP socket connected to the controller.
async fn connect(endpoint: &str) -> Result<UdpSocket, String> {
    let addr = tokio::net::lookup_host(endpoint)
        .await
        .map_err(|e| format!("cannot resolve {endpoint}: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("{endpoint} has no IPv4 address"))?;
    let socket = UdpSocket::bind("0.0.0.0:0").await.map_err(|e| format!("no local UDP socket: {e}"))?;
    socket.connect(addr).await.map_err(|e| format!("cannot reach {endpoint}: {e}"))?;
    Ok(socket)
}

/// One request and its answer: retried, and an error saying why when none comes.
async fn exchange(socket: &UdpSocket, serial: u32, request: Request) -> Result<Reply, String> {
    let packet = request.encode(serial);
    let mut buf = [0u8; 2 * PACKET_LEN];
    for _ in 0..TRIES {
        socket.send(&packet).await.map_err(|e| format!("cannot send: {e}"))?;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => break,
                // A refused port (ICMP): nothing listens there.
                Ok(Err(err)) => return Err(format!("no controller there: {err}")),
                Ok(Ok(len)) => match Reply::decode(buf.get(..len).unwrap_or_default()) {
                    Ok(Message { serial: from, body }) if from == serial && answers(&request, &body) => {
                        return Ok(body);
                    }
                    // Another serial, a late answer to an earlier request, or noise.
                    _ => {}
                },
            }
        }
    }
    Err(format!("no answer from controller {serial} within {} ms, {TRIES} tries", REPLY_TIMEOUT.as_millis()))
}

fn answers(request: &Request, reply: &Reply) -> bool {
    match reply {
        Reply::Status(_) => matches!(request, Request::GetStatus),
        Reply::CardCount(_) => matches!(request, Request::CountCards),
        Reply::Card(_) => matches!(request, Request::GetCard { .. }),
        Reply::Done { function, .. } => *function == request.function(),
    }
}
