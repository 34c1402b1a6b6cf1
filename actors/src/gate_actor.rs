//! GateActor: one per gate. Serializes the gate's decisions, keeps its live entry queue, and
//! publishes every decision. Pass-level rules are decided by the pass's own actor; the gate
//! settles what needs no pass (modes, lockdown, direction, unknown or unreadable credentials).

use std::collections::VecDeque;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::decision::{ESCORT_WINDOW_SECS, default_direction, gate_verdict};
use crate::domain::{Decision, Direction, Reason};
use crate::engine::{Engine, EngineError};
use crate::events::Event;
use crate::journal::{CheckinRecord, JournalRecord};
use crate::pass_actor::Admit;

pub use crate::messages::{Decide, Outcome, Queue};

pub struct GateActor {
    gate_id: Uuid,
    org_id: Uuid,
    engine: Engine,
    queue: VecDeque<Outcome>,
}

impl GateActor {
    pub fn new(gate_id: Uuid, org_id: Uuid, engine: Engine) -> Self {
        GateActor { gate_id, org_id, engine, queue: VecDeque::new() }
    }

    fn remember(&mut self, outcome: &Outcome) {
        if self.queue.len() >= self.engine.shared.settings.queue_len.max(1) {
            self.queue.pop_front();
        }
        self.queue.push_back(outcome.clone());
        let event = Event::Decision {
            gate_id: outcome.gate_id,
            pass_id: outcome.pass_id,
            holder_name: outcome.holder_name.clone(),
            direction: outcome.direction,
            decision: outcome.decision,
            reason: outcome.reason,
            decided_at: outcome.decided_at,
        };
        self.engine.publish(self.org_id, event);
        if let Some(alert) = outcome.alert {
            self.engine.publish(self.org_id, Event::Alert { alert, gate_id: self.gate_id, pass_id: outcome.pass_id });
        }
        metrics::counter!("portcullis_decisions_total",
            "decision" => outcome.decision.as_str(), "reason" => outcome.reason.as_str())
        .increment(1);
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

    /// What the gate settles without a pass (modes, lockdown, direction, unreadable or unknown
    /// credentials), or the pass to ask.
    fn settle(&self, msg: &Decide, now: DateTime<Utc>) -> Result<Settled, EngineError> {
        let engine = &self.engine;
        let snapshot = engine.snapshot(self.org_id).ok_or(EngineError::UnknownGate)?;
        let gate = snapshot.gates.get(&self.gate_id).ok_or(EngineError::UnknownGate)?.clone();
        let direction = msg.direction.unwrap_or_else(|| default_direction(&gate));
        let settled = |reason: Reason, decision: Decision, pass_id: Option<Uuid>| Outcome {
            gate_id: self.gate_id,
            decision,
            reason,
            direction,
            pass_id,
            holder_name: None,
            open_ms: (decision == Decision::Allow).then_some(gate.open_ms),
            decided_at: now,
            alert: None,
        };
        let credential = msg.presented.lookups.iter().find_map(|hash| engine.shared.credentials.get(self.org_id, hash));
        let outcome = if let Some(verdict) = gate_verdict(&gate, &snapshot.policy, direction) {
            settled(verdict.reason, verdict.decision, None)
        } else if let Some(reason) = msg.presented.verdict {
            settled(reason, Decision::Deny, credential.map(|c| c.pass_id))
        } else {
            match credential {
                Some(found) if engine.holds_pass(found.pass_id) => {
                    let admit = Admit {
                        snapshot,
                        gate,
                        direction,
                        now,
                        qr_step: msg.presented.qr_step,
                        recent: self.recent_entries(now),
                        source: msg.source,
                        kind: msg.presented.kind,
                    };
                    return Ok(Settled::AskPass(found.pass_id, Box::new(admit)));
                }
                Some(found) => {
                    // Indexed but not held (a pass past its life): unknown, rather than fail the gate.
                    tracing::warn!(pass_id = %found.pass_id, "credential indexed for a pass the engine does not hold");
                    settled(Reason::UnknownCredential, Decision::Deny, None)
                }
                None => settled(Reason::UnknownCredential, Decision::Deny, None),
            }
        };
        let record = JournalRecord::Checkin(CheckinRecord {
            id: Uuid::now_v7(),
            org_id: self.org_id,
            gate_id: self.gate_id,
            pass_id: outcome.pass_id,
            direction,
            decision: outcome.decision,
            reason: outcome.reason,
            source: msg.source,
            credential_kind: msg.presented.kind,
            decided_at: now,
        });
        Ok(Settled::Done(outcome, record))
    }
}

/// The gate's part of a decision.
enum Settled {
    /// Decided here; the check-in to journal.
    Done(Outcome, JournalRecord),
    /// The pass decides.
    AskPass(Uuid, Box<Admit>),
}

impl Actor for GateActor {
    type Context = Context<Self>;
}

/// The gate's mailbox is held only while it settles what it can from memory: a decision that
/// needs a pass goes on without it (the pass's own mailbox serializes its consumption), so a
/// pass waiting for its commit never holds up the gate's other decisions.
impl Handler<Decide> for GateActor {
    type Result = ResponseActFuture<Self, Result<Outcome, EngineError>>;

    fn handle(&mut self, msg: Decide, _: &mut Context<Self>) -> Self::Result {
        let now = Utc::now();
        match self.settle(&msg, now) {
            Err(err) => Box::pin(fut::ready(Err(err))),
            Ok(Settled::Done(outcome, record)) => {
                self.remember(&outcome);
                // A verdict that consumes nothing need not wait for the disk, nor (unless the
                // journal is far behind) for the journal's queue.
                match self.engine.shared.journal.try_write(vec![record]) {
                    Ok(()) => Box::pin(fut::ready(Ok(outcome))),
                    Err(records) => {
                        let journal = self.engine.shared.journal.clone();
                        Box::pin(
                            async move {
                                journal.write_or_count(records).await;
                                Ok(outcome)
                            }
                            .into_actor(self),
                        )
                    }
                }
            }
            Ok(Settled::AskPass(pass_id, admit)) => {
                let engine = self.engine.clone();
                Box::pin(async move { engine.with_pass(pass_id, *admit).await }.into_actor(self).map(
                    |result, act, _| {
                        if let Ok(outcome) = &result {
                            act.remember(outcome);
                        }
                        result
                    },
                ))
            }
        }
    }
}

impl Handler<Queue> for GateActor {
    type Result = MessageResult<Queue>;

    fn handle(&mut self, _: Queue, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.queue.iter().cloned().collect())
    }
}
