//! The access decision: a pure function of (gate, pass state, rule, organization, time).
//!
//! Synchronous, no I/O, deny by default, and every verdict carries a stable [`Reason`]. The
//! actors gather the inputs and apply the result; nothing here reads a clock or a database.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use crate::domain::{
    AntiPassback, Decision, Direction, FailMode, GateDirection, GateMode, PassStatus, PassType, Reason,
};
use crate::schedule::Schedule;

/// How recently an escort must have passed the same gate.
pub const ESCORT_WINDOW_SECS: i64 = 120;

#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub id: Uuid,
    pub org_id: Uuid,
    pub zone_id: Uuid,
    pub name: Arc<str>,
    pub direction: GateDirection,
    pub mode: GateMode,
    pub open_ms: u32,
    pub fail_mode: FailMode,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: Uuid,
    pub zones: HashSet<Uuid>,
    pub schedule: Schedule,
    pub escort_required: bool,
    pub anti_passback: AntiPassback,
    pub anti_passback_minutes: Option<u32>,
}

/// Organization-wide policy the decision needs.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgPolicy {
    pub timezone: Tz,
    pub lockdown: bool,
    pub revoked_may_exit: bool,
    pub holidays: BTreeSet<NaiveDate>,
}

/// Everything the engine knows about one pass.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PassState {
    pub id: Uuid,
    pub org_id: Uuid,
    pub rule_id: Uuid,
    pub holder_name: Arc<str>,
    pub pass_type: PassType,
    pub max_uses: Option<u32>,
    pub group_size: u32,
    pub uses_count: u32,
    pub status: PassStatus,
    pub valid_from: DateTime<Utc>,
    pub valid_to: DateTime<Utc>,
    pub inside: bool,
    pub last_gate_id: Option<Uuid>,
    pub last_passage_at: Option<DateTime<Utc>>,
    pub escort_pass_id: Option<Uuid>,
    /// The newest QR time step that admitted this pass (a used code cannot be replayed).
    pub last_qr_step: Option<u64>,
}

impl PassState {
    /// Entries the pass still allows (`None`: unlimited is never the case; every type has a cap).
    pub fn uses_allowed(&self) -> u32 {
        match self.pass_type {
            PassType::Single => 1,
            PassType::Multi => self.max_uses.unwrap_or(1),
            PassType::Group => self.group_size,
        }
    }

    pub fn uses_left(&self) -> u32 {
        self.uses_allowed().saturating_sub(self.uses_count)
    }
}

/// The people inside a zone, and how many it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZoneLoad {
    pub inside: i64,
    pub capacity: Option<i64>,
}

/// One question: may this pass go through this gate in this direction now?
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub now: DateTime<Utc>,
    pub direction: Direction,
    pub gate: &'a Gate,
    pub org: &'a OrgPolicy,
    /// `None` when the pass's rule no longer exists: deny.
    pub rule: Option<&'a Rule>,
    pub pass: &'a PassState,
    pub zone: ZoneLoad,
    /// When the pass's escort last passed this gate, if recently.
    pub escort_seen_at: Option<DateTime<Utc>>,
    /// The time step of the QR code presented, if it was a QR code.
    pub qr_step: Option<u64>,
}

/// Something security should look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    /// A revoked pass was still inside (seen leaving, or trying to move about).
    RevokedPassInside,
}

impl Alert {
    pub fn as_str(self) -> &'static str {
        match self {
            Alert::RevokedPassInside => "revoked_pass_inside",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: Reason,
    /// An allow that uses up an entry: it must be durable before the gate opens.
    pub consumes: bool,
    pub alert: Option<Alert>,
}

impl Verdict {
    pub fn deny(reason: Reason) -> Self {
        Verdict { decision: Decision::Deny, reason, consumes: false, alert: None }
    }

    fn allow(reason: Reason, consumes: bool) -> Self {
        Verdict { decision: Decision::Allow, reason, consumes, alert: None }
    }

    pub fn is_allow(&self) -> bool {
        self.decision == Decision::Allow
    }

    fn with_alert(mut self, alert: Alert) -> Self {
        self.alert = Some(alert);
        self
    }
}

/// The direction to use when the request names none: the gate's own, or "in" for two-way gates.
pub fn default_direction(gate: &Gate) -> Direction {
    match gate.direction {
        GateDirection::Out => Direction::Out,
        GateDirection::In | GateDirection::Both => Direction::In,
    }
}

/// What the gate decides before any credential is looked at (modes, lockdown, direction).
pub fn gate_verdict(gate: &Gate, org: &OrgPolicy, direction: Direction) -> Option<Verdict> {
    let serves = match gate.direction {
        GateDirection::Both => true,
        GateDirection::In => direction == Direction::In,
        GateDirection::Out => direction == Direction::Out,
    };
    if !serves {
        return Some(Verdict::deny(Reason::WrongDirection));
    }
    if org.lockdown || gate.mode == GateMode::LockedDown {
        return Some(Verdict::deny(Reason::GateLockedDown));
    }
    if gate.mode == GateMode::FreePassage {
        return Some(Verdict::allow(Reason::FreePassage, false));
    }
    None
}

/// The decision for one pass. Rules are checked in a fixed order and the first that fails is
/// the reason; only a request that passes all of them is allowed.
pub fn decide(req: &Request<'_>) -> Verdict {
    if let Some(verdict) = gate_verdict(req.gate, req.org, req.direction) {
        return verdict;
    }
    let pass = req.pass;
    let entering = req.direction == Direction::In;

    match pass.status {
        PassStatus::Active => {}
        PassStatus::Revoked if !entering && req.org.revoked_may_exit => {
            let verdict = Verdict::allow(Reason::RevokedExit, false);
            return if pass.inside { verdict.with_alert(Alert::RevokedPassInside) } else { verdict };
        }
        PassStatus::Revoked => {
            let verdict = Verdict::deny(Reason::PassRevoked);
            return if pass.inside { verdict.with_alert(Alert::RevokedPassInside) } else { verdict };
        }
        PassStatus::Suspended => return Verdict::deny(Reason::PassSuspended),
        PassStatus::Expired => return Verdict::deny(Reason::PassExpired),
        PassStatus::Draft => return Verdict::deny(Reason::PassNotActive),
    }
    if req.now < pass.valid_from {
        return Verdict::deny(Reason::NotYetValid);
    }
    if req.now >= pass.valid_to {
        return Verdict::deny(Reason::PassExpired);
    }
    let Some(rule) = req.rule else { return Verdict::deny(Reason::ZoneNotAllowed) };
    if !rule.zones.contains(&req.gate.zone_id) {
        return Verdict::deny(Reason::ZoneNotAllowed);
    }

    if !entering {
        // Leaving is always possible within the pass's life, except against hard anti-passback
        // (an exit without an entry means the entry was tailgated).
        if rule.anti_passback == AntiPassback::Hard && !pass.inside {
            return Verdict::deny(Reason::AntiPassback);
        }
        return Verdict::allow(Reason::Allowed, false);
    }

    if let (Some(step), Some(last)) = (req.qr_step, pass.last_qr_step)
        && step <= last
    {
        return Verdict::deny(Reason::QrReplayed);
    }
    if !rule.schedule.is_open(req.now, req.org.timezone, &req.org.holidays) {
        return Verdict::deny(Reason::OutsideSchedule);
    }
    if pass.uses_left() == 0 {
        return Verdict::deny(Reason::UsesExhausted);
    }
    // A group pass lets N people through one after another: no anti-passback between them.
    if pass.pass_type != PassType::Group && pass.inside {
        let blocked = match rule.anti_passback {
            AntiPassback::Off => false,
            AntiPassback::Hard => true,
            AntiPassback::Timed => {
                let minutes = i64::from(rule.anti_passback_minutes.unwrap_or(0));
                pass.last_passage_at.is_some_and(|t| req.now < t + Duration::minutes(minutes))
            }
        };
        if blocked {
            return Verdict::deny(Reason::AntiPassback);
        }
    }
    if rule.escort_required {
        let escorted =
            req.escort_seen_at.is_some_and(|t| t <= req.now && req.now - t <= Duration::seconds(ESCORT_WINDOW_SECS));
        if !escorted {
            return Verdict::deny(Reason::EscortRequired);
        }
    }
    if req.zone.capacity.is_some_and(|cap| req.zone.inside >= cap) {
        return Verdict::deny(Reason::OccupancyFull);
    }
    Verdict::allow(Reason::Allowed, true)
}

/// The pass's state after an allowed passage.
pub fn after_passage(pass: &PassState, req: &Request<'_>, verdict: &Verdict) -> PassState {
    let mut next = pass.clone();
    if !verdict.is_allow() || verdict.reason == Reason::FreePassage {
        return next;
    }
    if verdict.consumes {
        next.uses_count = next.uses_count.saturating_add(1);
    }
    next.inside = req.direction == Direction::In;
    next.last_gate_id = Some(req.gate.id);
    next.last_passage_at = Some(req.now);
    if req.direction == Direction::In
        && let Some(step) = req.qr_step
    {
        next.last_qr_step = Some(step);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::TimeWindow;
    use chrono::TimeZone;

    struct World {
        gate: Gate,
        org: OrgPolicy,
        rule: Rule,
        pass: PassState,
        now: DateTime<Utc>,
    }

    /// Monday 2026-03-02 10:00 in Berlin (09:00 UTC); an active multi-use pass; office hours.
    fn world() -> World {
        let zone = Uuid::from_u128(1);
        let now = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).single().unwrap_or_default();
        let window = TimeWindow::new("08:00", "19:00").ok().into_iter().collect();
        World {
            gate: Gate {
                id: Uuid::from_u128(10),
                org_id: Uuid::from_u128(100),
                zone_id: zone,
                name: "Lobby".into(),
                direction: GateDirection::Both,
                mode: GateMode::Normal,
                open_ms: 3000,
                fail_mode: FailMode::Closed,
            },
            org: OrgPolicy {
                timezone: chrono_tz::Europe::Berlin,
                lockdown: false,
                revoked_may_exit: true,
                holidays: BTreeSet::new(),
            },
            rule: Rule {
                id: Uuid::from_u128(20),
                zones: HashSet::from([zone]),
                schedule: Schedule::new([1, 2, 3, 4, 5], window).unwrap_or_else(|_| Schedule::always()),
                escort_required: false,
                anti_passback: AntiPassback::Off,
                anti_passback_minutes: None,
            },
            pass: PassState {
                id: Uuid::from_u128(30),
                org_id: Uuid::from_u128(100),
                rule_id: Uuid::from_u128(20),
                holder_name: "Ada".into(),
                pass_type: PassType::Multi,
                max_uses: Some(10),
                group_size: 1,
                uses_count: 0,
                status: PassStatus::Active,
                valid_from: now - Duration::hours(1),
                valid_to: now + Duration::days(2),
                inside: false,
                last_gate_id: None,
                last_passage_at: None,
                escort_pass_id: None,
                last_qr_step: None,
            },
            now,
        }
    }

    impl World {
        fn ask(&self, direction: Direction) -> Verdict {
            self.ask_with(direction, ZoneLoad::default(), None, None)
        }

        fn ask_with(
            &self,
            direction: Direction,
            zone: ZoneLoad,
            escort: Option<DateTime<Utc>>,
            qr: Option<u64>,
        ) -> Verdict {
            decide(&Request {
                now: self.now,
                direction,
                gate: &self.gate,
                org: &self.org,
                rule: Some(&self.rule),
                pass: &self.pass,
                zone,
                escort_seen_at: escort,
                qr_step: qr,
            })
        }

        /// Lets the pass through and keeps the resulting state.
        fn pass_through(&mut self, direction: Direction) -> Verdict {
            let verdict = self.ask(direction);
            let req = Request {
                now: self.now,
                direction,
                gate: &self.gate,
                org: &self.org,
                rule: Some(&self.rule),
                pass: &self.pass,
                zone: ZoneLoad::default(),
                escort_seen_at: None,
                qr_step: None,
            };
            self.pass = after_passage(&self.pass, &req, &verdict);
            verdict
        }
    }

    use Direction::{In, Out};

    #[test]
    fn an_active_pass_in_schedule_is_allowed_and_consumes_an_entry() {
        let v = world().ask(In);
        assert_eq!((v.decision, v.reason, v.consumes), (Decision::Allow, Reason::Allowed, true));
    }

    #[test]
    fn pass_status_is_checked_first() {
        for (status, reason) in [
            (PassStatus::Revoked, Reason::PassRevoked),
            (PassStatus::Suspended, Reason::PassSuspended),
            (PassStatus::Expired, Reason::PassExpired),
            (PassStatus::Draft, Reason::PassNotActive),
        ] {
            let mut w = world();
            w.pass.status = status;
            assert_eq!(w.ask(In), Verdict::deny(reason), "{status}");
        }
    }

    #[test]
    fn the_validity_window_is_half_open() {
        let mut w = world();
        w.now = w.pass.valid_from - Duration::seconds(1);
        assert_eq!(w.ask(In).reason, Reason::NotYetValid);
        w.now = w.pass.valid_from;
        assert_eq!(w.ask(In).reason, Reason::Allowed);
        w.now = w.pass.valid_to;
        assert_eq!(w.ask(In).reason, Reason::PassExpired);
    }

    #[test]
    fn a_gate_outside_the_rules_zones_is_refused() {
        let mut w = world();
        w.gate.zone_id = Uuid::from_u128(2);
        assert_eq!(w.ask(In).reason, Reason::ZoneNotAllowed);
        let mut w = world();
        w.rule.zones.clear();
        assert_eq!(w.ask(Out).reason, Reason::ZoneNotAllowed);
    }

    #[test]
    fn schedule_and_holidays_gate_entries_but_never_exits() {
        let mut w = world();
        w.now = Utc.with_ymd_and_hms(2026, 3, 2, 18, 30, 0).single().unwrap_or_default(); // 19:30 Berlin
        assert_eq!(w.ask(In).reason, Reason::OutsideSchedule);
        assert_eq!(w.ask(Out).reason, Reason::Allowed, "nobody is locked in after hours");
        let mut w = world();
        w.org.holidays.insert(NaiveDate::from_ymd_opt(2026, 3, 2).unwrap_or_default());
        assert_eq!(w.ask(In).reason, Reason::OutsideSchedule);
    }

    #[test]
    fn single_multi_and_group_passes_run_out() {
        let mut w = world();
        w.pass.pass_type = PassType::Single;
        assert_eq!(w.pass_through(In).reason, Reason::Allowed);
        assert_eq!(w.pass_through(Out).reason, Reason::Allowed);
        assert_eq!(w.ask(In).reason, Reason::UsesExhausted);

        let mut w = world();
        w.pass.max_uses = Some(2);
        for _ in 0..2 {
            assert!(w.pass_through(In).is_allow());
            assert!(w.pass_through(Out).is_allow());
        }
        assert_eq!(w.ask(In).reason, Reason::UsesExhausted);

        let mut w = world();
        w.pass.pass_type = PassType::Group;
        w.pass.group_size = 3;
        w.rule.anti_passback = AntiPassback::Hard;
        for person in 0..3 {
            assert_eq!(w.pass_through(In).reason, Reason::Allowed, "person {person} of the group");
        }
        assert_eq!(w.ask(In).reason, Reason::UsesExhausted);
        assert_eq!(w.pass.uses_left(), 0);
    }

    #[test]
    fn hard_anti_passback_needs_alternating_directions() {
        let mut w = world();
        w.rule.anti_passback = AntiPassback::Hard;
        assert_eq!(w.ask(Out).reason, Reason::AntiPassback, "no exit without an entry");
        assert!(w.pass_through(In).is_allow());
        assert_eq!(w.ask(In).reason, Reason::AntiPassback, "no second entry");
        assert!(w.pass_through(Out).is_allow());
        assert!(w.ask(In).is_allow());
    }

    #[test]
    fn timed_anti_passback_lifts_after_its_minutes() {
        let mut w = world();
        w.rule.anti_passback = AntiPassback::Timed;
        w.rule.anti_passback_minutes = Some(15);
        assert!(w.pass_through(In).is_allow());
        w.now += Duration::minutes(14);
        assert_eq!(w.ask(In).reason, Reason::AntiPassback);
        w.now += Duration::minutes(1);
        assert!(w.ask(In).is_allow());
    }

    #[test]
    fn an_escort_must_have_passed_the_same_gate_just_before() {
        let mut w = world();
        w.rule.escort_required = true;
        assert_eq!(w.ask(In).reason, Reason::EscortRequired);
        let recent = Some(w.now - Duration::seconds(30));
        assert!(w.ask_with(In, ZoneLoad::default(), recent, None).is_allow());
        let stale = Some(w.now - Duration::seconds(ESCORT_WINDOW_SECS + 1));
        assert_eq!(w.ask_with(In, ZoneLoad::default(), stale, None).reason, Reason::EscortRequired);
    }

    #[test]
    fn a_full_zone_refuses_entries_but_not_exits() {
        let w = world();
        let full = ZoneLoad { inside: 5, capacity: Some(5) };
        assert_eq!(w.ask_with(In, full, None, None).reason, Reason::OccupancyFull);
        assert!(w.ask_with(Out, full, None, None).is_allow());
        assert!(w.ask_with(In, ZoneLoad { inside: 4, capacity: Some(5) }, None, None).is_allow());
    }

    #[test]
    fn gate_modes_and_lockdown_come_before_everything() {
        let mut w = world();
        w.gate.mode = GateMode::LockedDown;
        assert_eq!(w.ask(In).reason, Reason::GateLockedDown);
        let mut w = world();
        w.org.lockdown = true;
        assert_eq!(w.ask(Out).reason, Reason::GateLockedDown);
        let mut w = world();
        w.gate.mode = GateMode::FreePassage;
        w.pass.status = PassStatus::Revoked;
        let v = w.ask(In);
        assert_eq!((v.decision, v.reason, v.consumes), (Decision::Allow, Reason::FreePassage, false));
        let mut w = world();
        w.gate.direction = GateDirection::In;
        assert_eq!(w.ask(Out).reason, Reason::WrongDirection);
    }

    #[test]
    fn a_revoked_pass_may_leave_and_raises_an_alert_when_it_was_inside() {
        let mut w = world();
        assert!(w.pass_through(In).is_allow());
        w.pass.status = PassStatus::Revoked;
        let v = w.ask(Out);
        assert_eq!(
            (v.decision, v.reason, v.alert),
            (Decision::Allow, Reason::RevokedExit, Some(Alert::RevokedPassInside))
        );
        let v = w.ask(In);
        assert_eq!((v.reason, v.alert), (Reason::PassRevoked, Some(Alert::RevokedPassInside)));
        w.org.revoked_may_exit = false;
        assert_eq!(w.ask(Out).reason, Reason::PassRevoked);
    }

    #[test]
    fn a_used_qr_code_cannot_be_replayed() {
        let mut w = world();
        w.pass.last_qr_step = Some(1000);
        assert_eq!(w.ask_with(In, ZoneLoad::default(), None, Some(1000)).reason, Reason::QrReplayed);
        assert_eq!(w.ask_with(In, ZoneLoad::default(), None, Some(999)).reason, Reason::QrReplayed);
        assert!(w.ask_with(In, ZoneLoad::default(), None, Some(1001)).is_allow());
    }

    #[test]
    fn a_pass_without_its_rule_is_denied() {
        let w = world();
        let req = Request {
            now: w.now,
            direction: In,
            gate: &w.gate,
            org: &w.org,
            rule: None,
            pass: &w.pass,
            zone: ZoneLoad::default(),
            escort_seen_at: None,
            qr_step: None,
        };
        assert!(!decide(&req).is_allow());
    }
}
