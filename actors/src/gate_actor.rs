//! GateActor: one per gate. Keeps the gate's live entry queue in the order decisions reach it,
//! and, in an organization with escort rules, hands a decision that needs a pass to the pass's own
//! actor with the gate's recent entries. Every decision is published by whoever answers it, before
//! answering ([`publish_decision`]), so viewers see decisions in the order they were answered.
//!
//! What needs no pass (modes, lockdown, direction, unreadable or unknown credentials) is settled
//! by [`settle`] from the organization's snapshot and the credential index, on the caller's
//! thread: a turnstile's deny waits for no mailbox, and the gate is told afterwards (its
//! [`Inbox`]).

use std::collections::VecDeque;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::decision::{ESCORT_WINDOW_SECS, default_direction, gate_verdict};
use crate::domain::{Decision, Direction, Reason, Source};
use crate::engine::{Engine, EngineError, Presented};
use crate::events::Event;
use crate::journal::JournalRecord;
use crate::pass_actor::Admit;

pub use crate::messages::{Decide, Drain, Outcome, Queue};

/// Decisions made elsewhere for a gate, waiting for its actor to record them, in the order they
/// were made. The actor is woken once for however many arrive meanwhile, not once each: under load
/// a gate's thread is woken far less often than it is asked.
#[derive(Default)]
pub struct Inbox {
    #[expect(
        clippy::disallowed_types,
        reason = "held for a push or a swap in synchronous code, never across an await"
    )]
    pending: std::sync::Mutex<Vec<Outcome>>,
    /// Set while a [`Drain`] is on its way.
    scheduled: std::sync::atomic::AtomicBool,
}

/// Decisions an inbox holds before its actor is sent a [`Drain`]. Below it nothing wakes the gate's
/// thread (a cross-thread wake is a system call): whoever reads the queue (a decision the actor
/// makes, a [`Queue`] request) takes the inbox first, so no reader misses a decision, and the bound
/// keeps an unread gate's inbox small.
const INBOX_BOUND: usize = 512;

impl Inbox {
    /// Adds a decision; true if the actor must be sent a [`Drain`] now (the inbox is full and none
    /// is on its way).
    pub fn push(&self, outcome: Outcome) -> bool {
        let held = {
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            pending.push(outcome);
            pending.len()
        };
        held >= INBOX_BOUND && !self.scheduled.swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    fn take(&self) -> Vec<Outcome> {
        // Cleared first: a decision pushed from here on sends a Drain of its own.
        self.scheduled.store(false, std::sync::atomic::Ordering::Release);
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

pub struct GateActor {
    org_id: Uuid,
    engine: Engine,
    queue: VecDeque<Outcome>,
    inbox: std::sync::Arc<Inbox>,
}

impl GateActor {
    pub fn new(org_id: Uuid, engine: Engine, inbox: std::sync::Arc<Inbox>) -> Self {
        GateActor { org_id, engine, queue: VecDeque::new(), inbox }
    }

    fn remember(&mut self, outcome: &Outcome) {
        if self.queue.len() >= self.engine.shared.settings.queue_len.max(1) {
            self.queue.pop_front();
        }
        self.queue.push_back(outcome.clone());
    }

    /// Passes admitted inward here recently: an escort must appear in this list.
    fn recent_entries(&self, now: DateTime<Utc>) -> Vec<(Uuid, DateTime<Utc>)> {
        let since = now - chrono::Duration::seconds(ESCORT_WINDOW_SECS);
        self.queue
            .iter()
            .rev()
            .take_while(|o| o.decided_at >= since)
            .filter(|o| o.decision == Decision::Allow && o.direction == Direction::In)
            .filter_map(|o| Some((o.pass_id?, o.decided_at)))
            .collect()
    }
}

/// Tells the organization's viewers of a decision, before the decision is answered: a viewer sees
/// decisions in the order their answers were given, whichever gates and threads made them.
pub(crate) fn publish_decision(engine: &Engine, org_id: Uuid, outcome: &Outcome) {
    let event = Event::Decision {
        gate_id: outcome.gate_id,
        pass_id: outcome.pass_id,
        holder_name: outcome.holder_name.clone(),
        direction: outcome.direction,
        decision: outcome.decision,
        reason: outcome.reason,
        decided_at: outcome.decided_at,
    };
    engine.publish(org_id, event);
    if let Some(alert) = outcome.alert {
        engine.publish(org_id, Event::Alert { alert, gate_id: outcome.gate_id, pass_id: outcome.pass_id });
    }
    metrics::counter!("portcullis_decisions_total",
        "decision" => outcome.decision.as_str(), "reason" => outcome.reason.as_str())
    .increment(1);
}

/// The part of a decision that needs no pass.
pub(crate) enum Settled {
    /// Decided: the outcome and its check-in.
    Done(Outcome, JournalRecord),
    /// The pass decides; through the gate, which adds its recent entries, when the organization
    /// has a rule that needs them (escorts), else straight, the gate told afterwards.
    AskPass { pass_id: Uuid, admit: Admit, via_gate: bool },
}

/// Settles what a gate can from memory, or says which pass must decide.
pub(crate) fn settle(
    engine: &Engine,
    gate_id: Uuid,
    org_id: Uuid,
    presented: &Presented,
    direction: Option<Direction>,
    source: Source,
    now: DateTime<Utc>,
) -> Result<Settled, EngineError> {
    let snapshot = engine.snapshot(org_id).ok_or(EngineError::UnknownGate)?;
    let gate = snapshot.gates.get(&gate_id).ok_or(EngineError::UnknownGate)?;
    let direction = direction.unwrap_or_else(|| default_direction(gate));
    let settled = |reason: Reason, decision: Decision, pass_id: Option<Uuid>| Outcome {
        gate_id,
        decision,
        reason,
        direction,
        pass_id,
        holder_name: None,
        open_ms: (decision == Decision::Allow).then_some(gate.open_ms),
        decided_at: now,
        alert: None,
    };
    let credential = presented.lookups.iter().find_map(|hash| engine.shared.credentials.get(org_id, hash));
    let outcome = if let Some(verdict) = gate_verdict(gate, &snapshot.policy, direction) {
        settled(verdict.reason, verdict.decision, None)
    } else if let Some(reason) = presented.verdict {
        settled(reason, Decision::Deny, credential.map(|c| c.pass_id))
    } else {
        match credential {
            Some(found) if engine.holds_pass(found.pass_id) => {
                let gate = gate.clone();
                let admit = Admit {
                    snapshot,
                    gate,
                    direction,
                    now,
                    qr_step: presented.qr_step,
                    recent: Vec::new(),
                    source,
                    kind: presented.kind,
                };
                let via_gate = admit.snapshot.rules.values().any(|rule| rule.escort_required);
                return Ok(Settled::AskPass { pass_id: found.pass_id, admit, via_gate });
            }
            Some(found) => {
                // Indexed but not held (a pass past its life): unknown, rather than fail the gate.
                tracing::warn!(pass_id = %found.pass_id, "credential indexed for a pass the engine does not hold");
                settled(Reason::UnknownCredential, Decision::Deny, None)
            }
            None => settled(Reason::UnknownCredential, Decision::Deny, None),
        }
    };
    let record = JournalRecord::Checkin(outcome.checkin(org_id, source, presented.kind));
    Ok(Settled::Done(outcome, record))
}

impl Actor for GateActor {
    type Context = Context<Self>;
}

impl Handler<Drain> for GateActor {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        for outcome in self.inbox.take() {
            self.remember(&outcome);
        }
    }
}

/// The gate's mailbox is not held while the pass decides (the pass's own mailbox serializes its
/// consumption): a pass waiting for its commit never holds up the gate's other decisions.
impl Handler<Decide> for GateActor {
    type Result = ResponseActFuture<Self, Result<Outcome, EngineError>>;

    fn handle(&mut self, Decide { pass_id, mut admit }: Decide, ctx: &mut Context<Self>) -> Self::Result {
        // The decisions settled elsewhere first, so the queue keeps the order they were answered in.
        self.handle(Drain, ctx);
        admit.recent = self.recent_entries(admit.now);
        let engine = self.engine.clone();
        Box::pin(async move { engine.with_pass(pass_id, admit).await }.into_actor(self).map(|result, act, _| {
            if let Ok(outcome) = &result {
                act.remember(outcome);
                publish_decision(&act.engine, act.org_id, outcome);
            }
            result
        }))
    }
}

impl Handler<Queue> for GateActor {
    type Result = MessageResult<Queue>;

    fn handle(&mut self, _: Queue, ctx: &mut Context<Self>) -> Self::Result {
        // Whatever waits in the inbox belongs in the answer (its Drain may still be queued).
        self.handle(Drain, ctx);
        MessageResult(self.queue.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(n: u128) -> Outcome {
        Outcome {
            gate_id: Uuid::from_u128(1),
            decision: Decision::Deny,
            reason: Reason::UnknownCredential,
            direction: Direction::In,
            pass_id: Some(Uuid::from_u128(n)),
            holder_name: None,
            open_ms: None,
            decided_at: Utc::now(),
            alert: None,
        }
    }

    #[test]
    fn an_inbox_wakes_its_gate_only_when_full_and_keeps_the_order() {
        let inbox = Inbox::default();
        let n = u128::try_from(INBOX_BOUND).unwrap_or(u128::MAX);
        for i in 1..n {
            assert!(!inbox.push(outcome(i)), "below the bound its readers drain it");
        }
        assert!(inbox.push(outcome(n)), "the full inbox sends a drain");
        assert!(!inbox.push(outcome(n + 1)), "one is on its way already");
        let taken: Vec<_> = inbox.take().iter().filter_map(|o| o.pass_id).collect();
        assert_eq!(taken, (1..=n + 1).map(Uuid::from_u128).collect::<Vec<_>>());
        assert!(!inbox.push(outcome(n + 2)), "after a drain, the count starts again");
        assert_eq!(inbox.take().len(), 1);
        assert!(inbox.take().is_empty());
    }
}
