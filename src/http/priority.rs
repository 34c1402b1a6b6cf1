//! The listeners' workers: real-time while they answer little, the default scheduling while busy.
//!
//! On this kernel an ordinary thread woken by a request can wait several milliseconds for a core
//! while the machine is busy (dashboards' streams, PostgreSQL, other processes): the scheduler
//! lets the thread on the core finish its slice, or holds back a thread that has had more than its
//! share. A thread under `SCHED_FIFO` takes a core the moment it is woken. So each listener's
//! workers run under `SCHED_FIFO` at the listener's priority (`server.api_priority`,
//! `server.device_priority`) while their answering takes little of a core: a turnstile's answer
//! does not wait behind a thousand viewers' streams.
//!
//! A real-time thread that is kept busy, though, takes its core from the journal, the actors and
//! PostgreSQL that finish the requests it has already read: under a flood of decisions, real-time
//! workers answer fewer of them (Session 14 measured 30–40 % fewer). So each worker weighs its own
//! share of a core at the first request of every [`WINDOW`]: above [`BUSY`] it returns to the
//! default scheduling, where the machine is shared fairly. It stays there for a hold ([`HOLD`],
//! longer while it flaps), and is real-time again at its first request after a hold over which it
//! ran less than [`QUIET`] of a core. Nothing but the worker itself changes its scheduling, and it
//! reads only its own `/proc/thread-self/schedstat`.
//!
//! A thread a real-time worker creates would inherit its policy: work sent off a worker to a
//! blocking thread returns that thread to the default scheduling first
//! ([`portcullis_actors::sched::blocking`]).

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// How often a real-time worker looks at its share of a core (on the first request after it):
/// short, so that a flood holds the core from the others for no longer than this.
const WINDOW: Duration = Duration::from_millis(10);
/// How long a worker returned to the default scheduling stays there at least, and must have been
/// quiet over before it is real-time again. Doubled each time it is returned again soon after
/// ([`FLAPPING`]), up to [`MAX_HOLD`]: a load that real-time scheduling itself makes heavy (a
/// worker that, real-time, takes more of the machine and so gets more to do) does not flap.
const HOLD: Duration = Duration::from_millis(200);
const MAX_HOLD: Duration = Duration::from_secs(32);
/// A worker returned to the default scheduling within this long of being made real-time again is
/// flapping: its next hold is twice the last.
const FLAPPING: Duration = Duration::from_secs(10);
/// A real-time worker busier than this (its CPU time over the window's) returns to the default
/// scheduling. Under the bench's floods each API worker answers with 0.22–0.40 of a core; a
/// decision takes about 0.2 ms of its worker's (0.01 at the `fanout` bench's 50 a second), so a
/// worker answering up to about 700 decisions a second stays real-time.
const BUSY: f64 = 0.15;
/// A worker under the default scheduling that ran less than this over its hold is real-time again.
/// (Not counting its waits for a core: on a machine kept busy by other work, the dashboards'
/// streams say, a worker answering a few turnstiles waits a few milliseconds for a core at each
/// request, which is what real-time scheduling is there to spare it.)
const QUIET: f64 = 0.05;

/// What a thread has had of the CPU since it started: its time on a core
/// (`/proc/thread-self/schedstat`, the first field).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Used {
    ran: Duration,
}

impl Used {
    /// The calling thread's (none where the kernel does not keep it).
    fn now() -> Option<Used> {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let ran = text.split_whitespace().next()?.parse::<u64>().ok()?;
        Some(Used { ran: Duration::from_nanos(ran) })
    }
}

/// One worker's scheduling, kept on its own thread.
#[derive(Debug)]
struct Pace {
    realtime: bool,
    /// When the current window began, and what the thread had used then: none until the first
    /// request (the worker's own start, building its routes, is not answering).
    since: Option<(Instant, Used)>,
    /// When it was last made real-time again, and its current hold.
    promoted: Option<Instant>,
    hold: Duration,
}

impl Pace {
    /// A worker just made real-time.
    fn new() -> Pace {
        Pace { realtime: true, since: None, promoted: None, hold: HOLD }
    }

    /// At a request starting at `now`: the scheduling the worker should change to (real-time or
    /// not), with the share of a core it ran over the window, if its window is over and that
    /// share crossed [`BUSY`] or [`QUIET`]. `used` is asked only when a window is over.
    fn weigh(&mut self, now: Instant, used: impl FnOnce() -> Option<Used>) -> Option<(bool, f64)> {
        let Some((since, then)) = self.since else {
            self.since = used().map(|used| (now, used));
            return None;
        };
        let wall = now.saturating_duration_since(since);
        if wall < if self.realtime { WINDOW } else { self.hold } {
            return None;
        }
        let used = used()?;
        self.since = Some((now, used));
        let ran = used.ran.saturating_sub(then.ran).as_secs_f64() / wall.as_secs_f64();
        match self.realtime {
            true if ran > BUSY => Some((false, ran)),
            false if ran < QUIET => Some((true, ran)),
            _ => None,
        }
    }

    /// Notes that the worker runs real-time (or not) from `now`: returned to the default
    /// scheduling within [`FLAPPING`] of being made real-time, its hold doubles.
    fn changed(&mut self, now: Instant, realtime: bool) {
        self.realtime = realtime;
        if realtime {
            self.promoted = Some(now);
        } else {
            let flapping = self.promoted.is_some_and(|at| now.saturating_duration_since(at) < FLAPPING);
            self.hold = if flapping { (self.hold * 2).min(MAX_HOLD) } else { HOLD };
        }
    }
}

thread_local! {
    /// The calling worker's pacing, and its real-time priority.
    static PACE: RefCell<Option<(Pace, u8)>> = const { RefCell::new(None) };
}

/// Puts the calling worker of `listener` under `SCHED_FIFO` at `priority` (nothing for 0), and
/// keeps it paced from then on ([`pace`]). Refused (no `CAP_SYS_NICE`), or where the kernel does
/// not say what the thread uses (nothing could then take it back from a flood), the worker keeps
/// the default scheduling and the log says so.
pub fn start(listener: &str, priority: u8) {
    if priority == 0 {
        return;
    }
    if Used::now().is_none() {
        tracing::warn!(
            listener,
            "a worker runs under the default scheduling: /proc/thread-self/schedstat cannot be read"
        );
        return;
    }
    match portcullis_actors::sched::realtime(priority) {
        Ok(()) => {
            tracing::debug!(listener, priority, "a worker runs under SCHED_FIFO while it answers little");
            PACE.set(Some((Pace::new(), priority)));
        }
        Err(err) => tracing::warn!(listener, priority, error = %err,
            "a worker runs under the default scheduling: real-time priority refused (needs CAP_SYS_NICE)"),
    }
}

/// Called by every request as it starts on a worker (`now`: its start): once a [`WINDOW`], the
/// worker weighs what it used of a core since the last time, and changes its scheduling if that
/// crossed [`BUSY`] or [`QUIET`]. A comparison of instants otherwise.
pub fn pace(now: Instant) {
    PACE.with_borrow_mut(|pace| {
        let Some((pace, priority)) = pace else { return };
        let Some((realtime, ran)) = pace.weigh(now, Used::now) else { return };
        let changed = match realtime {
            true => portcullis_actors::sched::realtime(*priority),
            false => portcullis_actors::sched::default_scheduling(),
        };
        match changed {
            Ok(()) => {
                pace.changed(now, realtime);
                let to = if realtime { "realtime" } else { "default" };
                metrics::counter!("portcullis_worker_scheduling_changes_total", "to" => to).increment(1);
                tracing::debug!(to, ran, hold = ?pace.hold, "a worker's scheduling changed");
            }
            Err(err) => tracing::debug!(error = %err, realtime, "a worker's scheduling was not changed"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// What a thread has used: `n` ms on a core.
    fn ran(n: u64) -> impl FnOnce() -> Option<Used> {
        move || Some(Used { ran: ms(n) })
    }

    #[test]
    fn a_worker_answering_a_few_turnstiles_stays_real_time() {
        let (t0, mut pace) = (Instant::now(), Pace::new());
        // A request every 20 ms, each 0.2 ms of a core (1 %).
        for i in 0..100u64 {
            let used = move || Some(Used { ran: Duration::from_micros(200 * i) });
            assert_eq!(pace.weigh(t0 + ms(20 * i), used), None, "request {i}");
        }
        assert!(pace.realtime);
    }

    #[test]
    fn a_busy_worker_leaves_real_time_and_returns_after_a_quiet_hold() -> Result<(), String> {
        let (t0, mut pace) = (Instant::now(), Pace::new());
        assert_eq!(pace.weigh(t0, ran(40)), None, "the first request only opens a window");
        assert_eq!(pace.weigh(t0 + ms(5), ran(43)), None, "the window is not over");
        // 10 ms after the first request, 5 ms of a core: a flood.
        let (leave, share) = pace.weigh(t0 + ms(10), ran(45)).ok_or("no change")?;
        assert!(!leave && (share - 0.5).abs() < 1e-9, "{share}");
        pace.changed(t0 + ms(10), false);
        assert_eq!(pace.hold, HOLD);
        // Quiet at once, but within its hold: it stays.
        assert_eq!(pace.weigh(t0 + ms(100), ran(45)), None);
        // Its hold over, still busy (50 ms of the 200): it stays.
        assert_eq!(pace.weigh(t0 + ms(10) + HOLD, ran(95)), None);
        // Another hold, quiet (1 ms of the 200): real-time again.
        assert_eq!(pace.weigh(t0 + ms(10) + HOLD * 2, ran(96)).map(|(realtime, _)| realtime), Some(true));
        pace.changed(t0 + ms(10) + HOLD * 2, true);
        assert!(pace.realtime);
        Ok(())
    }

    #[test]
    fn a_worker_that_flaps_is_held_twice_as_long_each_time_up_to_the_limit() {
        let (mut now, mut pace) = (Instant::now(), Pace::new());
        let mut holds = Vec::new();
        for _ in 0..10 {
            pace.changed(now, false);
            holds.push(pace.hold);
            now += pace.hold;
            pace.changed(now, true);
            now += ms(10);
        }
        // The first return (never made real-time again before) holds HOLD; each return within
        // FLAPPING of being made real-time again doubles it, up to MAX_HOLD.
        let expected: Vec<Duration> =
            [200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 32_000, 32_000].into_iter().map(ms).collect();
        assert_eq!(holds, expected);
        // Real-time for longer than FLAPPING, then returned: back to HOLD.
        now += FLAPPING;
        pace.changed(now, false);
        assert_eq!(pace.hold, HOLD);
    }
}
