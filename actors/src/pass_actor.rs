//! PassActor: one per pass in use. The single place a pass is consumed or changed, so a
//! single-use pass is admitted once even when two gates ask at the same instant: the actor's
//! atomic handlers run one at a time, each to the end of its durable write.
//!
//! Activated on first use from the dormant state; passivated after `pass_idle` without messages
//! (its state goes back to the dormant map, see [`Passivate`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::decision::{PassState, Request, Verdict, ZoneLoad, after_passage, decide};
use crate::domain::{Direction, FailMode, PassEventKind, PassStatus, Reason};
use crate::engine::{Engine, PassSlot};
use crate::events::Event;
use crate::gate_actor::Outcome;
use crate::journal::{CheckinRecord, Durability, JournalError, JournalRecord, PassEventRecord, Revocation};

pub use crate::messages::{Admit, Change, GetState, PassChange, PassError};

/// Hand the state back to the dormant map and stop (sent by the actor to itself).
#[derive(Message)]
#[rtype(result = "()")]
struct Passivate;

pub struct PassActor {
    state: PassState,
    /// What a consuming admit leaves of the pass, while its commit is awaited: what the pass is
    /// taken to be should the actor stop meanwhile (used, rather than usable twice).
    pending: Option<PassState>,
    engine: Engine,
    last_used: Instant,
    // INVARIANT: once set, every handler answers `Moved`: the dormant map owns the state.
    passivated: bool,
    draining: bool,
}

impl PassActor {
    pub fn new(state: PassState, engine: Engine) -> Self {
        PassActor { state, pending: None, engine, last_used: Instant::now(), passivated: false, draining: false }
    }

    fn event_record(
        &self,
        state: &PassState,
        kind: PassEventKind,
        msg: &Change,
        reason: Option<String>,
    ) -> JournalRecord {
        JournalRecord::PassEvent(PassEventRecord {
            org_id: state.org_id,
            pass_id: state.id,
            kind,
            status: state.status,
            uses_count: state.uses_count,
            actor_id: msg.actor,
            reason,
            at: msg.at,
        })
    }

    /// Hands the pass back to the dormant map and frees its slot, as the actor stops: its state
    /// as it stands, a consuming admit still awaiting its commit counted as made (unless its
    /// organization was deleted meanwhile: it then has nowhere to go back to).
    fn hand_back(&mut self, ctx: &mut Context<Self>) {
        self.passivated = true;
        let shared = &self.engine.shared;
        let state = self.pending.take().unwrap_or_else(|| self.state.clone());
        if shared.snapshots.contains_key(&state.org_id) {
            shared.dormant.insert(state.id, Box::new(state));
        }
        metrics::gauge!("portcullis_pass_actors_active").decrement(1.0);
        let (me, draining) = (ctx.address(), self.draining);
        shared.passes.remove_if(&self.state.id, |_, slot| match slot {
            PassSlot::Active(addr) => *addr == me,
            PassSlot::Draining => draining,
        });
    }
}

impl Actor for PassActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let idle = self.engine.shared.settings.pass_idle;
        ctx.run_interval((idle / 2).max(Duration::from_millis(50)), move |act, ctx| {
            if act.draining || act.last_used.elapsed() < idle {
                return;
            }
            // Mark the slot draining so no new sender finds this actor, then queue Passivate
            // behind whatever is already in the mailbox.
            let me = ctx.address();
            if let Some(mut slot) = act.engine.shared.passes.get_mut(&act.state.id)
                && matches!(&*slot, PassSlot::Active(addr) if *addr == me)
            {
                *slot = PassSlot::Draining;
                act.draining = true;
                me.do_send(Passivate);
            }
        });
    }

    /// Stopped without being passivated: its thread is stopping (the listener whose worker it
    /// lived on is shutting down, or the engine is). The state goes back to the dormant map as it
    /// stands, a consuming admit still awaiting its commit counted as made, and the pass's next
    /// decision starts an actor afresh from it rather than finding this one gone.
    fn stopped(&mut self, ctx: &mut Context<Self>) {
        if !self.passivated {
            self.hand_back(ctx);
        }
    }
}

impl Handler<Passivate> for PassActor {
    type Result = ();

    /// The slot is `Draining` (this actor marked it so): freed with the state handed back.
    fn handle(&mut self, _: Passivate, ctx: &mut Context<Self>) {
        self.hand_back(ctx);
        ctx.stop();
    }
}

fn moved<A: Actor, T: 'static>(act: &A) -> AtomicResponse<A, Result<T, PassError>> {
    AtomicResponse::new(Box::pin(async { Err(PassError::Moved) }.into_actor(act)))
}

impl Handler<Admit> for PassActor {
    type Result = AtomicResponse<Self, Result<Outcome, PassError>>;

    fn handle(&mut self, mut msg: Admit, _: &mut Context<Self>) -> Self::Result {
        if self.passivated {
            return moved(self);
        }
        self.last_used = Instant::now();
        msg.now = after_last_passage(msg.now, self.state.last_passage_at);
        let shared = self.engine.shared.clone();
        let zone_id = msg.gate.zone_id;
        let capacity = msg.snapshot.zones.get(&zone_id).copied().flatten();
        let counter = shared.occupancy.entry(zone_id).or_insert_with(|| AtomicI64::new(0));
        let req = Request {
            now: msg.now,
            direction: msg.direction,
            gate: &msg.gate,
            org: &msg.snapshot.policy,
            rule: msg.snapshot.rules.get(&self.state.rule_id),
            pass: &self.state,
            zone: ZoneLoad { inside: counter.load(Ordering::SeqCst), capacity },
            escort_seen_at: self
                .state
                .escort_pass_id
                .and_then(|escort| msg.recent.iter().find(|(p, _)| *p == escort).map(|(_, t)| *t)),
            qr_step: msg.qr_step,
        };
        let mut verdict = decide(&req);
        // The capacity check above read a counter other passes share: reserve the place
        // atomically, or refuse.
        let mut reserved = false;
        if verdict.is_allow() && verdict.reason == Reason::Allowed && msg.direction == Direction::In {
            let reservation = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match capacity {
                Some(cap) if n >= cap => None,
                _ => Some(n + 1),
            });
            match reservation {
                Ok(_) => reserved = true,
                Err(_) => verdict = Verdict::deny(Reason::OccupancyFull),
            }
        }
        let next = after_passage(&self.state, &req, &verdict);
        if verdict.is_allow() && msg.direction == Direction::Out && self.state.inside {
            let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some((n - 1).max(0)));
        }
        drop(counter);

        let (gate_id, open_ms, direction, now) = (msg.gate.id, msg.gate.open_ms, msg.direction, msg.now);
        let outcome = move |verdict: &Verdict, state: &PassState| Outcome {
            gate_id,
            decision: verdict.decision,
            reason: verdict.reason,
            direction,
            pass_id: Some(state.id),
            holder_name: Some(state.holder_name.to_string()),
            open_ms: verdict.is_allow().then_some(open_ms),
            decided_at: now,
            alert: verdict.alert.map(|a| a.as_str()),
        };
        let checkin_id = Uuid::now_v7();
        let checkin = |verdict: &Verdict| CheckinRecord {
            id: checkin_id,
            org_id: msg.snapshot.org_id,
            gate_id: msg.gate.id,
            pass_id: Some(next.id),
            direction: msg.direction,
            decision: verdict.decision,
            reason: verdict.reason,
            source: msg.source,
            credential_kind: msg.kind,
            decided_at: msg.now,
            alert: verdict.alert.map(|a| std::borrow::Cow::Borrowed(a.as_str())),
        };
        let mut records = vec![JournalRecord::Checkin(checkin(&verdict))];
        if next != self.state {
            records.push(JournalRecord::Passage(Box::new(next.clone())));
        }
        let journal = shared.journal.clone();
        if !verdict.consumes {
            // Nothing used up: apply now, let the journal catch up within milliseconds.
            self.state = next;
            let done = outcome(&verdict, &self.state);
            return match journal.try_write(records) {
                Ok(()) => AtomicResponse::new(Box::pin(fut::ready(Ok(done)))),
                // The journal is far behind: wait for room (backpressure), losing nothing.
                Err(records) => AtomicResponse::new(Box::pin(
                    async move {
                        journal.write_or_count(records).await;
                        Ok(done)
                    }
                    .into_actor(self),
                )),
            };
        }
        // A consuming admit opens the gate only once the journal holds it, or, when that does
        // not come within the bound, as the gate's fail mode says.
        let refused = Verdict::deny(Reason::JournalUnavailable);
        let refusal = checkin(&refused);
        let (bound, fail_mode, pass_id) = (shared.settings.admit_bound, msg.gate.fail_mode, self.state.id);
        let unchanged = self.state.clone();
        self.pending = Some(next.clone());
        let write = async move {
            let result = tokio::time::timeout(bound, journal.write_durable(records)).await;
            let admitted = admits(result, fail_mode, pass_id);
            if !admitted {
                // What was queued may still be written: the refusal replaces its check-in and the
                // pass's unchanged state follows its consumed one, so the log ends as the gate
                // acted. Written before this handler ends, so nothing of this pass comes between.
                let compensation = vec![
                    JournalRecord::Refusal(refusal),
                    JournalRecord::Pass { state: Box::new(unchanged), revocation: None },
                ];
                journal.write_or_count(compensation).await;
            }
            admitted
        };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(move |admitted, act, _| {
            act.pending = None;
            if admitted {
                act.state = next;
                return Ok(outcome(&verdict, &act.state));
            }
            if reserved && let Some(counter) = shared.occupancy.get(&zone_id) {
                counter.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(outcome(&refused, &act.state))
        })))
    }
}

/// A decision's time, at least a microsecond (what PostgreSQL keeps) after the pass's last
/// passage: a pass's passages are then ordered by their times alone, which is how a pass row left
/// behind is brought up to date from its check-ins (those after its `last_passage_at`).
fn after_last_passage(now: DateTime<Utc>, last: Option<DateTime<Utc>>) -> DateTime<Utc> {
    match last {
        Some(last) if now.timestamp_micros() <= last.timestamp_micros() => {
            DateTime::from_timestamp_micros(last.timestamp_micros().saturating_add(1)).unwrap_or(now)
        }
        _ => now,
    }
}

/// Whether a consuming admit opens the gate, given what became of its durable write within the
/// bound (`Err`: no answer in time; its records are still queued) and the gate's fail mode.
fn admits(
    result: Result<Result<Durability, JournalError>, tokio::time::error::Elapsed>,
    fail_mode: FailMode,
    pass_id: Uuid,
) -> bool {
    match (result, fail_mode) {
        (Ok(Ok(Durability::Committed)), _) => true,
        (Ok(Ok(Durability::Spooled)), FailMode::Open) => {
            metrics::counter!("portcullis_admits_fail_open_total").increment(1);
            true
        }
        (Err(_), FailMode::Open) => {
            metrics::counter!("portcullis_admits_fail_open_total").increment(1);
            tracing::warn!(%pass_id, "consuming admit not committed in time; admitted (fail mode open)");
            true
        }
        (Ok(Err(err)), _) => {
            tracing::error!(%pass_id, error = %err, "consuming admit refused: journal unavailable");
            false
        }
        (Ok(Ok(Durability::Spooled)) | Err(_), FailMode::Closed) => {
            tracing::warn!(%pass_id, "consuming admit not committed in time; refused (fail mode closed)");
            false
        }
    }
}

impl Handler<Change> for PassActor {
    type Result = AtomicResponse<Self, Result<PassState, PassError>>;

    fn handle(&mut self, msg: Change, _: &mut Context<Self>) -> Self::Result {
        if self.passivated {
            return moved(self);
        }
        self.last_used = Instant::now();
        if msg.org_id.is_some_and(|org| org != self.state.org_id) {
            return err(self, PassError::OtherOrganization);
        }
        let mut next = self.state.clone();
        let live = matches!(self.state.status, PassStatus::Active | PassStatus::Suspended);
        let (kind, reason, revocation, event) = match &msg.change {
            PassChange::Revoke { reason } if live => {
                next.status = PassStatus::Revoked;
                let revocation = Revocation { at: msg.at, by: msg.actor, reason: reason.clone() };
                let event = Event::PassRevoked { pass_id: next.id, revoked_by: msg.actor, reason: reason.clone() };
                (PassEventKind::Revoked, Some(reason.clone()), Some(revocation), Some(event))
            }
            PassChange::Suspend if self.state.status == PassStatus::Active => {
                next.status = PassStatus::Suspended;
                (PassEventKind::Suspended, None, None, Some(Event::PassSuspended { pass_id: next.id }))
            }
            PassChange::Resume if self.state.status == PassStatus::Suspended => {
                next.status = PassStatus::Active;
                (PassEventKind::Resumed, None, None, Some(Event::PassResumed { pass_id: next.id }))
            }
            PassChange::Resume => return err(self, PassError::NotSuspended),
            PassChange::Extend { valid_to } if live => {
                if *valid_to <= next.valid_from {
                    return err(self, PassError::BadValidity);
                }
                next.valid_to = *valid_to;
                (PassEventKind::Extended, None, None, None)
            }
            PassChange::Expire if live && self.state.valid_to > msg.at => return err(self, PassError::NotDue),
            PassChange::Expire if live => {
                next.status = PassStatus::Expired;
                (PassEventKind::Expired, None, None, Some(Event::PassExpired { pass_id: next.id }))
            }
            _ => return err(self, PassError::NotActive),
        };
        let mut records = vec![
            JournalRecord::Pass { state: Box::new(next.clone()), revocation },
            self.event_record(&next, kind, &msg, reason),
        ];
        if let Some(audit) = msg.audit {
            records.push(JournalRecord::Audit(Box::new(audit)));
        }
        let journal = self.engine.shared.journal.clone();
        AtomicResponse::new(Box::pin(async move { journal.write_durable(records).await }.into_actor(self).map(
            move |result, act, _| {
                result.map_err(|e| PassError::Journal(e.to_string()))?;
                // In force from here on: every later decision reaches this actor and sees it.
                if next.valid_to != act.state.valid_to {
                    act.engine.schedule_expiry(next.id, next.valid_to);
                }
                act.state = next;
                if let Some(event) = event {
                    act.engine.publish(act.state.org_id, event);
                }
                Ok(act.state.clone())
            },
        )))
    }
}

fn err<T: 'static>(act: &PassActor, error: PassError) -> AtomicResponse<PassActor, Result<T, PassError>> {
    AtomicResponse::new(Box::pin(async move { Err(error) }.into_actor(act)))
}

impl Handler<GetState> for PassActor {
    type Result = AtomicResponse<Self, Result<PassState, PassError>>;

    fn handle(&mut self, _: GetState, _: &mut Context<Self>) -> Self::Result {
        if self.passivated {
            return moved(self);
        }
        let state = self.state.clone();
        AtomicResponse::new(Box::pin(async move { Ok(state) }.into_actor(self)))
    }
}

#[cfg(test)]
mod tests {
    use super::after_last_passage;
    use chrono::{DateTime, Duration};

    #[test]
    fn a_passage_in_the_same_microsecond_as_the_last_is_stamped_one_microsecond_after_it() {
        let last = DateTime::from_timestamp_micros(1_800_000_000_000_000).unwrap_or_default();
        let same_micro = last + Duration::nanoseconds(400);
        assert_eq!(after_last_passage(same_micro, Some(last)), last + Duration::microseconds(1));
        // A clock that stepped back does not reorder the pass's passages either.
        assert_eq!(after_last_passage(last - Duration::seconds(3), Some(last)), last + Duration::microseconds(1));
        // Later, or the first passage: the time as it is.
        let later = last + Duration::microseconds(7);
        assert_eq!(after_last_passage(later, Some(last)), later);
        assert_eq!(after_last_passage(later, None), later);
    }
}
