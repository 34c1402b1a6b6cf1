//! The registry that ties the actors together, and the engine's public face.
//!
//! Readers on the decision path go straight to concurrent maps (gate addresses, the credential
//! index, organization snapshots); none of them waits behind another actor's mailbox except the
//! one gate and the one pass a decision is about.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use uuid::Uuid;

use crate::decision::{Gate, OrgPolicy, PassState, Rule};
use crate::domain::{CredentialKind, Decision, Direction, PassStatus, Reason, Source};
use crate::events::{Event, EventHub};
use crate::gate_actor::{Decide, Drain, GateActor, Outcome, Settled, settle};
use crate::journal::{JournalHandle, JournalRecord};
use crate::org_actor::{Configure, CredentialIndex, IndexCredentials, OrgActor, Remove};
use crate::pass_actor::{Change, PassActor, PassChange, PassError};

/// The alert of a grant a controller made that the engine would have refused.
pub const CONTROLLER_OUT_OF_SYNC: &str = "controller_out_of_sync";

/// What a decision needs of its gate: whom to publish to, and where to queue the outcome.
struct GateHandle {
    org_id: Uuid,
    addr: Addr<GateActor>,
    inbox: Arc<crate::gate_actor::Inbox>,
}

impl GateHandle {
    /// Publishes a decision made without the gate's actor and queues it at the gate.
    fn tell(&self, engine: &Engine, outcome: &Outcome) {
        crate::gate_actor::publish_decision(engine, self.org_id, outcome);
        if self.inbox.push(outcome.clone()) {
            self.addr.do_send(Drain);
        }
    }
}

/// An organization's configuration as the decision needs it. Replaced whole on every change.
#[derive(Debug, Clone)]
pub struct OrgSnapshot {
    pub org_id: Uuid,
    /// Decisions are refused in a blocked organization (they go on in a read-only one).
    pub access_mode: crate::domain::AccessMode,
    pub policy: OrgPolicy,
    pub gates: HashMap<Uuid, Gate>,
    pub rules: HashMap<Uuid, Rule>,
    /// Zone id → capacity.
    pub zones: HashMap<Uuid, Option<i64>>,
}

/// What a credential lookup finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialRef {
    pub pass_id: Uuid,
    pub kind: CredentialKind,
}

/// A credential as the gate saw it, already hashed for lookup by the edge.
#[derive(Debug, Clone)]
pub struct Presented {
    pub kind: Option<CredentialKind>,
    /// Lookup keys to try, in order (a 37-bit Wiegand frame reads two ways).
    pub lookups: Vec<[u8; 32]>,
    /// The QR time step, for QR codes.
    pub qr_step: Option<u64>,
    /// Set when the edge already knows the answer (unreadable frame, stale QR code).
    pub verdict: Option<crate::domain::Reason>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("no such gate")]
    UnknownGate,
    #[error("no such pass")]
    UnknownPass,
    #[error("the engine is not running")]
    Unavailable,
    #[error(transparent)]
    Pass(#[from] PassError),
}

#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// A pass actor idle this long is passivated.
    pub pass_idle: Duration,
    /// How long a consuming admit waits for its commit before the gate's fail mode answers.
    pub admit_bound: Duration,
    /// Entries kept in each gate's live queue.
    pub queue_len: usize,
    /// Threads the actors are spread over (0: one per core).
    pub arbiters: usize,
}

/// A pass due to expire at a time; the heap's `Reverse` makes the soonest come first.
type Due = Reverse<(DateTime<Utc>, Uuid)>;

/// The expiry schedule: a heap under a short lock, and a wake-up for the timer when an earlier
/// expiry arrives.
#[expect(clippy::disallowed_types, reason = "held for a push or a pop in synchronous code, never across an await")]
struct Expiries {
    heap: std::sync::Mutex<BinaryHeap<Due>>,
    changed: tokio::sync::Notify,
}

/// Where a pass's state lives right now.
pub(crate) enum PassSlot {
    Active(Addr<PassActor>),
    /// Being passivated: its state is about to move to the dormant map.
    Draining,
}

/// A gate as the registry holds it.
pub(crate) struct GateEntry {
    pub(crate) org_id: Uuid,
    pub(crate) addr: Addr<GateActor>,
    /// Decisions made for the gate elsewhere, for its actor to record.
    pub(crate) inbox: Arc<crate::gate_actor::Inbox>,
}

pub(crate) struct Shared {
    pub(crate) snapshots: DashMap<Uuid, Arc<OrgSnapshot>>,
    pub(crate) orgs: DashMap<Uuid, Addr<OrgActor>>,
    pub(crate) gates: DashMap<Uuid, GateEntry>,
    /// Written only by OrgActor handlers (the type allows nothing else).
    pub(crate) credentials: CredentialIndex,
    pub(crate) passes: DashMap<Uuid, PassSlot>,
    /// State of passes without an actor; the actor owns the state while active. Boxed: a map's
    /// table is up to half empty, and an empty slot then costs a pointer, not a whole state.
    pub(crate) dormant: DashMap<Uuid, Box<PassState>>,
    pub(crate) occupancy: DashMap<Uuid, AtomicI64>,
    /// Live passes by `valid_to`, soonest first. Entries may be stale (a pass extended or revoked
    /// since): the pass's actor decides, when asked to expire, whether it is due.
    expiries: Expiries,
    pub(crate) journal: JournalHandle,
    pub(crate) events: EventHub,
    pub(crate) settings: EngineSettings,
    /// The threads actors run on; an actor's id chooses its thread, so one gate's or one pass's
    /// messages are always handled on the same one.
    arbiters: Vec<ArbiterHandle>,
}

thread_local! {
    /// Set on the threads that answer gates: see [`place_passes_here`].
    static DECIDES_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread, an arbiter that answers gates (a listener's worker), as the home of
/// the pass actors it activates. A pass is mostly asked about through one connection, so its
/// decisions are then handled where they arrive: handing an admit to an actor on another thread
/// costs a wake of that thread (a system call) and a sleep after it, for a few microseconds of
/// work (a seventh of the machine's CPU per consuming admit: the bench's `decisions` prints that
/// CPU beside each run, and the README's Session 16 has the figures). Passes first asked about
/// elsewhere (an operator's change, the expiry timer) go to the engine's own threads.
pub fn place_passes_here() {
    DECIDES_HERE.set(true);
}

/// A cheap handle to the engine.
#[derive(Clone)]
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
}

/// A handle that does not keep the engine (and so its journal's channel) alive: for the
/// journal's writer, which must end once the engine is gone.
#[derive(Clone, Default)]
pub struct WeakEngine(std::sync::Weak<Shared>);

impl WeakEngine {
    pub fn upgrade(&self) -> Option<Engine> {
        self.0.upgrade().map(|shared| Engine { shared })
    }
}

impl Engine {
    pub fn downgrade(&self) -> WeakEngine {
        WeakEngine(Arc::downgrade(&self.shared))
    }

    pub fn new(journal: JournalHandle, settings: EngineSettings, retained_events: usize) -> Self {
        // Present from the start (at 0), not only once a pass is first used.
        metrics::gauge!("portcullis_pass_actors_active").increment(0.0);
        let threads = match settings.arbiters {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        };
        let arbiters = (0..threads).map(|_| Arbiter::new().handle()).collect();
        Engine {
            shared: Arc::new(Shared {
                snapshots: DashMap::new(),
                orgs: DashMap::new(),
                gates: DashMap::new(),
                credentials: CredentialIndex::default(),
                passes: DashMap::new(),
                dormant: DashMap::new(),
                occupancy: DashMap::new(),
                expiries: Expiries { heap: Default::default(), changed: tokio::sync::Notify::new() },
                journal,
                events: EventHub::new(retained_events),
                settings,
                arbiters,
            }),
        }
    }

    /// Starts a pass's actor: on the calling thread if it answers gates ([`place_passes_here`]),
    /// on the thread its id chooses otherwise.
    fn start_pass(&self, pass_id: Uuid, actor: PassActor) -> Addr<PassActor> {
        match DECIDES_HERE.get().then(Arbiter::try_current).flatten() {
            Some(here) => PassActor::start_in_arbiter(&here, move |_| actor),
            None => self.start(pass_id, actor),
        }
    }

    /// Starts an actor on the thread its id chooses.
    pub(crate) fn start<A>(&self, id: Uuid, actor: A) -> Addr<A>
    where
        A: Actor<Context = Context<A>> + Send,
    {
        let count = self.shared.arbiters.len().max(1) as u128;
        match self.shared.arbiters.get((id.as_u128() % count) as usize) {
            Some(arbiter) => A::start_in_arbiter(arbiter, move |_| actor),
            None => actor.start(),
        }
    }

    pub fn events(&self) -> &EventHub {
        &self.shared.events
    }

    /// Installs or replaces an organization's configuration; in force when this returns.
    pub async fn configure(&self, snapshot: OrgSnapshot) -> Result<(), EngineError> {
        let org_id = snapshot.org_id;
        let addr = self
            .shared
            .orgs
            .entry(org_id)
            .or_insert_with(|| self.start(org_id, OrgActor::new(org_id, self.clone())))
            .clone();
        addr.send(Configure(Arc::new(snapshot))).await.map_err(|_| EngineError::Unavailable)
    }

    /// Removes an organization and everything the engine holds for it, through its OrgActor;
    /// gone when this returns.
    pub async fn remove_org(&self, org_id: Uuid) {
        if let Some((_, org)) = self.shared.orgs.remove(&org_id) {
            // A stopped actor has nothing left to remove.
            let _ = org.send(Remove).await;
        }
        self.shared.events.remove(org_id);
    }

    pub fn snapshot(&self, org_id: Uuid) -> Option<Arc<OrgSnapshot>> {
        self.shared.snapshots.get(&org_id).map(|s| s.clone())
    }

    /// The organization a gate belongs to.
    pub fn gate_org(&self, gate_id: Uuid) -> Option<Uuid> {
        self.shared.gates.get(&gate_id).map(|g| g.org_id)
    }

    /// Adds a pass (issued, or loaded at start) and indexes its credentials; usable when this
    /// returns.
    pub async fn add_pass(
        &self,
        state: PassState,
        credentials: Vec<([u8; 32], CredentialRef)>,
    ) -> Result<(), EngineError> {
        let org_id = state.org_id;
        self.load_passes([state]);
        if credentials.is_empty() {
            return Ok(());
        }
        self.index(org_id, credentials).await
    }

    /// Adds passes without indexing their credentials (at start they are indexed afterwards, in
    /// batches, see [`Engine::index`]); each is scheduled to expire while it is live.
    pub fn load_passes(&self, states: impl IntoIterator<Item = PassState>) {
        for state in states {
            if matches!(state.status, PassStatus::Active | PassStatus::Suspended) {
                self.schedule_expiry(state.id, state.valid_to);
            }
            self.shared.dormant.insert(state.id, Box::new(state));
        }
    }

    /// Adds a newly issued pass (see [`Engine::add_pass`]) and tells the dashboards.
    pub async fn issue_pass(
        &self,
        state: PassState,
        credentials: Vec<([u8; 32], CredentialRef)>,
        issued_by: Option<Uuid>,
    ) -> Result<(), EngineError> {
        let (org_id, pass_id, holder_name) = (state.org_id, state.id, state.holder_name.to_string());
        self.add_pass(state, credentials).await?;
        self.publish(org_id, Event::PassIssued { pass_id, holder_name, issued_by });
        Ok(())
    }

    /// Asks for the pass to be expired at `at` (again, if it was extended).
    pub fn schedule_expiry(&self, pass_id: Uuid, at: DateTime<Utc>) {
        let expiries = &self.shared.expiries;
        let earliest = {
            let mut heap = expiries.heap.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let earliest = heap.peek().is_none_or(|Reverse((next, _))| at < *next);
            heap.push(Reverse((at, pass_id)));
            earliest
        };
        if earliest {
            expiries.changed.notify_one();
        }
    }

    /// The passes whose expiry is due at `now` (each once; stale ones included).
    pub fn due_expiries(&self, now: DateTime<Utc>) -> Vec<Uuid> {
        let mut heap = self.shared.expiries.heap.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut due = Vec::new();
        while let Some(Reverse((at, pass_id))) = heap.peek().copied() {
            if at > now {
                break;
            }
            heap.pop();
            due.push(pass_id);
        }
        due
    }

    /// When the next expiry is due, if any.
    pub fn next_expiry(&self) -> Option<DateTime<Utc>> {
        let heap = self.shared.expiries.heap.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Resolves when an expiry earlier than any before was scheduled.
    pub async fn expiry_scheduled(&self) {
        self.shared.expiries.changed.notified().await;
    }

    /// Indexes credentials through the organization's actor (the index's only writer).
    pub async fn index(&self, org_id: Uuid, credentials: Vec<([u8; 32], CredentialRef)>) -> Result<(), EngineError> {
        let addr = self.shared.orgs.get(&org_id).map(|a| a.clone()).ok_or(EngineError::Unavailable)?;
        addr.send(IndexCredentials(credentials)).await.map_err(|_| EngineError::Unavailable)
    }

    /// Sets the people inside a zone (at start, from the journal).
    pub fn set_occupancy(&self, zone_id: Uuid, inside: i64) {
        self.shared.occupancy.entry(zone_id).or_insert_with(|| AtomicI64::new(0)).store(inside, Ordering::SeqCst);
    }

    pub fn occupancy(&self, zone_id: Uuid) -> i64 {
        self.shared.occupancy.get(&zone_id).map_or(0, |n| n.load(Ordering::SeqCst))
    }

    /// Decides at a gate: what needs no pass is settled here, from memory, and the gate is told;
    /// a pass's decision goes to the pass's actor (through the gate when the organization has
    /// escort rules, which need the gate's recent entries).
    pub async fn decide(
        &self,
        gate_id: Uuid,
        presented: Presented,
        direction: Option<Direction>,
        source: Source,
    ) -> Result<Outcome, EngineError> {
        let gate = self.gate_handle(gate_id)?;
        let org_id = gate.org_id;
        let tell_gate = |outcome: &Outcome| gate.tell(self, outcome);
        match settle(self, gate_id, org_id, &presented, direction, source, Utc::now())? {
            Settled::Done(outcome, record) => {
                // Nothing consumed: the check-in is queued, not waited for (unless the journal is
                // far behind: then this waits for room, losing nothing).
                self.shared.journal.write_or_count(vec![record]).await;
                tell_gate(&outcome);
                Ok(outcome)
            }
            Settled::AskPass { pass_id, admit, via_gate: true } => {
                gate.addr.send(Decide { pass_id, admit }).await.map_err(|_| EngineError::Unavailable)?
            }
            Settled::AskPass { pass_id, admit, via_gate: false } => {
                let outcome = self.with_pass(pass_id, admit).await?;
                tell_gate(&outcome);
                Ok(outcome)
            }
        }
    }

    /// Records a verdict a controller made by itself (it decides from its own card table): looked
    /// up, journaled, published and queued at the gate like a decision of the engine's, with the
    /// engine's reason for a denial when it knows the pass. A grant the engine would not give
    /// (the controller's table is behind) raises an alert: `controller_out_of_sync`.
    pub async fn record_verdict(
        &self,
        gate_id: Uuid,
        presented: &Presented,
        granted: bool,
        direction: Direction,
        source: Source,
        decided_at: DateTime<Utc>,
    ) -> Result<Outcome, EngineError> {
        let gate = self.gate_handle(gate_id)?;
        let org_id = gate.org_id;
        let found = presented.lookups.iter().find_map(|hash| self.shared.credentials.get(org_id, hash));
        let state = match found {
            Some(found) => self.pass_state(found.pass_id).await,
            None => None,
        };
        let engine_refuses = match &state {
            Some(state) => match state.status {
                PassStatus::Active => (decided_at > state.valid_to).then_some(Reason::PassExpired),
                PassStatus::Revoked => Some(Reason::PassRevoked),
                PassStatus::Suspended => Some(Reason::PassSuspended),
                PassStatus::Expired => Some(Reason::PassExpired),
                _ => Some(Reason::PassNotActive),
            },
            None => Some(Reason::UnknownCredential),
        };
        let (decision, reason) = if granted {
            // The door opened; the reason says whether the engine would have opened it.
            (Decision::Allow, engine_refuses.unwrap_or(Reason::Allowed))
        } else {
            // The controller's own reason is in its event; ours says what the pass is.
            (Decision::Deny, engine_refuses.unwrap_or(Reason::ZoneNotAllowed))
        };
        let open_ms = self.snapshot(org_id).and_then(|s| s.gates.get(&gate_id).map(|g| g.open_ms));
        let outcome = Outcome {
            gate_id,
            decision,
            reason,
            direction,
            pass_id: found.map(|f| f.pass_id),
            holder_name: state.as_ref().map(|s| s.holder_name.to_string()),
            open_ms: open_ms.filter(|_| granted),
            decided_at,
            // Published with the decision, and journaled with its check-in.
            alert: (granted && engine_refuses.is_some()).then_some(CONTROLLER_OUT_OF_SYNC),
        };
        let record = JournalRecord::Checkin(outcome.checkin(org_id, source, presented.kind));
        self.shared.journal.write_or_count(vec![record]).await;
        gate.tell(self, &outcome);
        Ok(outcome)
    }

    /// A gate's organization, actor and inbox.
    fn gate_handle(&self, gate_id: Uuid) -> Result<GateHandle, EngineError> {
        self.shared
            .gates
            .get(&gate_id)
            .map(|g| GateHandle { org_id: g.org_id, addr: g.addr.clone(), inbox: g.inbox.clone() })
            .ok_or(EngineError::UnknownGate)
    }

    /// The pass's actor, activating it from the dormant state if needed; `None` if the engine
    /// does not hold the pass.
    pub(crate) async fn pass_actor(&self, pass_id: Uuid) -> Option<Addr<PassActor>> {
        loop {
            match self.shared.passes.entry(pass_id) {
                Entry::Occupied(slot) => match slot.get() {
                    PassSlot::Active(addr) => return Some(addr.clone()),
                    PassSlot::Draining => {}
                },
                Entry::Vacant(slot) => {
                    let state = PassState::clone(self.shared.dormant.get(&pass_id)?.value());
                    let addr = self.start_pass(pass_id, PassActor::new(state, self.clone()));
                    slot.insert(PassSlot::Active(addr.clone()));
                    metrics::gauge!("portcullis_pass_actors_active").increment(1.0);
                    return Some(addr);
                }
            }
            // Passivation finishes within one mailbox turn; wait for it, then activate afresh.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Sends a message to a pass's actor, re-activating it if it was passivated meanwhile.
    pub(crate) async fn with_pass<M, R>(&self, pass_id: Uuid, message: M) -> Result<R, EngineError>
    where
        M: Message<Result = Result<R, PassError>> + Clone + Send + 'static,
        R: Send + 'static,
        PassActor: Handler<M>,
    {
        for _ in 0..8 {
            let addr = self.pass_actor(pass_id).await.ok_or(EngineError::UnknownPass)?;
            match addr.send(message.clone()).await {
                Ok(Err(PassError::Moved)) => continue,
                // The actor is gone with its thread: it hands its state back as it stops.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                Ok(result) => return Ok(result?),
            }
        }
        Err(EngineError::Unavailable)
    }

    /// Changes a pass (revoke, suspend, resume, extend, expire); in force at every gate, and
    /// durable, when this returns.
    pub async fn change_pass(
        &self,
        pass_id: Uuid,
        change: PassChange,
        actor: Option<Uuid>,
    ) -> Result<PassState, EngineError> {
        self.apply(pass_id, Change { org_id: None, change, actor, at: Utc::now(), audit: None }).await
    }

    /// Applies a change as described (organization check, time, audit row committed with it).
    pub async fn apply(&self, pass_id: Uuid, change: Change) -> Result<PassState, EngineError> {
        self.with_pass(pass_id, change).await
    }

    /// The pass's current state: from its actor if it has one, from the dormant map otherwise
    /// (a read starts no actor; an actor hands its state back before its slot is freed).
    pub async fn pass_state(&self, pass_id: Uuid) -> Option<PassState> {
        if !self.shared.passes.contains_key(&pass_id)
            && let Some(state) = self.shared.dormant.get(&pass_id)
        {
            return Some(PassState::clone(&state));
        }
        self.with_pass(pass_id, crate::pass_actor::GetState).await.ok()
    }

    /// Waits until everything handed to the journal so far is committed or spooled, and pass
    /// rows hold the passages committed so far (the journal writes them behind the check-ins):
    /// before shutdown, and before reading pass rows as the engine has them.
    pub async fn flush(&self) -> Result<crate::journal::Durability, crate::journal::JournalError> {
        self.shared.journal.write_durable(Vec::new()).await
    }

    /// The journal's handle (its health: whether it spools, and how much).
    pub fn journal(&self) -> &crate::journal::JournalHandle {
        &self.shared.journal
    }

    /// Runs `work` once on each of the actors' threads, at its next turn (to name them, say).
    pub fn on_each_thread(&self, work: impl Fn() + Clone + Send + 'static) {
        for arbiter in &self.shared.arbiters {
            arbiter.spawn_fn(work.clone());
        }
    }

    /// Stops the actors' threads (after the last decision and the journal's flush).
    pub fn stop(&self) {
        for arbiter in &self.shared.arbiters {
            arbiter.stop();
        }
    }

    /// Whether the engine holds this pass (loaded or active).
    pub fn holds_pass(&self, pass_id: Uuid) -> bool {
        self.shared.dormant.contains_key(&pass_id) || self.shared.passes.contains_key(&pass_id)
    }

    pub fn publish(&self, org_id: Uuid, event: Event) {
        self.shared.events.publish(org_id, event);
    }

    /// Tells every organization's viewers (the engine's own health: the journal, the database).
    pub fn publish_everywhere(&self, event: &Event) {
        let orgs: Vec<Uuid> = self.shared.snapshots.iter().map(|s| *s.key()).collect();
        for org_id in orgs {
            self.shared.events.publish(org_id, event.clone());
        }
    }

    /// Pass actors currently active.
    pub fn active_pass_actors(&self) -> usize {
        self.shared.passes.len()
    }

    /// Recent entries of a gate, newest last.
    pub async fn gate_queue(&self, gate_id: Uuid) -> Vec<Outcome> {
        let Some(addr) = self.shared.gates.get(&gate_id).map(|g| g.addr.clone()) else { return Vec::new() };
        addr.send(crate::gate_actor::Queue).await.unwrap_or_default()
    }
}
