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
        self.queue
            .iter()
            .rev()
            .take_while(|o| (now - o.decided_at).num_seconds() <= ESCORT_WINDOW_SECS)
            .filter(|o| o.decision == Decision::Allow && o.direction == Direction::In)
            .filter_map(|o| Some((o.pass_id?, o.decided_at)))
            .collect()
    }
}

impl Actor for GateActor {
    type Context = Context<Self>;
}

impl Handler<Decide> for GateActor {
    type Result = AtomicResponse<Self, Result<Outcome, EngineError>>;

    fn handle(&mut self, msg: Decide, _: &mut Context<Self>) -> Self::Result {
        let engine = self.engine.clone();
        let (gate_id, org_id) = (self.gate_id, self.org_id);
        let now = Utc::now();
        let recent = self.recent_entries(now);
        let work = async move {
            let snapshot = engine.snapshot(org_id).ok_or(EngineError::UnknownGate)?;
            let gate = snapshot.gates.get(&gate_id).ok_or(EngineError::UnknownGate)?.clone();
            let direction = msg.direction.unwrap_or_else(|| default_direction(&gate));
            let open_ms = gate.open_ms;
            let settled = move |reason: Reason, decision: Decision, pass_id: Option<Uuid>| Outcome {
                gate_id,
                decision,
                reason,
                direction,
                pass_id,
                holder_name: None,
                open_ms: (decision == Decision::Allow).then_some(open_ms),
                decided_at: now,
                alert: None,
            };
            let credential = msg.presented.lookups.iter().find_map(|hash| engine.shared.credentials.get(org_id, hash));
            let early = if let Some(verdict) = gate_verdict(&gate, &snapshot.policy, direction) {
                Some(settled(verdict.reason, verdict.decision, None))
            } else if let Some(reason) = msg.presented.verdict {
                Some(settled(reason, Decision::Deny, credential.map(|c| c.pass_id)))
            } else if let Some(found) = credential.filter(|c| !engine.holds_pass(c.pass_id)) {
                // Indexed but not held (a pass past its life): unknown, rather than fail the gate.
                tracing::warn!(pass_id = %found.pass_id, "credential indexed for a pass the engine does not hold");
                Some(settled(Reason::UnknownCredential, Decision::Deny, None))
            } else if credential.is_none() {
                Some(settled(Reason::UnknownCredential, Decision::Deny, None))
            } else {
                None
            };
            if let Some(outcome) = early {
                let record = CheckinRecord {
                    id: Uuid::now_v7(),
                    org_id,
                    gate_id,
                    pass_id: outcome.pass_id,
                    direction,
                    decision: outcome.decision,
                    reason: outcome.reason,
                    source: msg.source,
                    credential_kind: msg.presented.kind,
                    decided_at: now,
                };
                // A verdict that consumes nothing need not wait for the disk.
                engine.shared.journal.write_or_count(vec![JournalRecord::Checkin(record)]).await;
                return Ok(outcome);
            }
            let Some(credential) = credential else { return Err(EngineError::UnknownPass) };
            let admit = Admit {
                snapshot,
                gate,
                direction,
                now,
                qr_step: msg.presented.qr_step,
                recent,
                source: msg.source,
                kind: msg.presented.kind,
            };
            engine.with_pass(credential.pass_id, admit).await
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|result, act, _| {
            if let Ok(outcome) = &result {
                act.remember(outcome);
            }
            result
        })))
    }
}

impl Handler<Queue> for GateActor {
    type Result = MessageResult<Queue>;

    fn handle(&mut self, _: Queue, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.queue.iter().cloned().collect())
    }
}
