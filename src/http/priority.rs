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
/// site's turnstiles, a few hundred decisions a second, take about 0.01.
const BUSY: f64 = 0.15;
/// A worker under the default scheduling that ran less than this over its hold is real-time again.
/// (Not counting its waits for a core: on a machine kept busy by other work, the dashboards'
/// streams say, a worker answering a few turnstiles waits a few milliseconds for a core at each
/// request, which is what real-time scheduling is there to spare it.)
const QUIET: f64 = 0.05;

/// What a thread has had of the CPU since it started: time on a core, and time waiting for one
/// (`/proc/thread-self/schedstat`).
#[derive(Clone, Copy)]
struct Used {
    ran: Duration,
    waited: Duration,
}

impl Used {
    /// The calling thread's (none where the kernel does not keep it).
    fn now() -> Option<Used> {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        let (ran, waited) = (fields.next()??, fields.next()??);
        Some(Used { ran: Duration::from_nanos(ran), waited: Duration::from_nanos(waited) })
    }
}

/// One worker's scheduling, kept on its own thread.
struct Pace {
    priority: u8,
    realtime: bool,
    /// When the current window began, and what the thread had used then: none until the first
    /// request (the worker's own start, building its routes, is not answering).
    since: Option<(Instant, Used)>,
    /// When it was last made real-time again, and its current hold.
    promoted: Option<Instant>,
    hold: Duration,
}

thread_local! {
    static PACE: RefCell<Option<Pace>> = const { RefCell::new(None) };
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
            PACE.set(Some(Pace { priority, realtime: true, since: None, promoted: None, hold: HOLD }));
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
        let Some(pace) = pace else { return };
        let Some((since, then)) = pace.since else {
            pace.since = Used::now().map(|used| (now, used));
            return;
        };
        let wall = now.saturating_duration_since(since);
        if wall < if pace.realtime { WINDOW } else { pace.hold } {
            return;
        }
        let Some(used) = Used::now() else { return };
        pace.since = Some((now, used));
        let share = |d: Duration| d.as_secs_f64() / wall.as_secs_f64();
        let ran = share(used.ran.saturating_sub(then.ran));
        let realtime = match pace.realtime {
            true if ran > BUSY => false,
            false if ran < QUIET => true,
            _ => return,
        };
        let changed = match realtime {
            true => portcullis_actors::sched::realtime(pace.priority),
            false => portcullis_actors::sched::default_scheduling(),
        };
        match changed {
            Ok(()) => {
                pace.realtime = realtime;
                if realtime {
                    pace.promoted = Some(now);
                } else {
                    let flapping = pace.promoted.is_some_and(|at| now.saturating_duration_since(at) < FLAPPING);
                    pace.hold = if flapping { (pace.hold * 2).min(MAX_HOLD) } else { HOLD };
                }
                let to = if realtime { "realtime" } else { "default" };
                metrics::counter!("portcullis_worker_scheduling_changes_total", "to" => to).increment(1);
                let waited = share(used.waited.saturating_sub(then.waited));
                tracing::debug!(to, ran, waited, hold = ?pace.hold, "a worker's scheduling changed");
            }
            Err(err) => tracing::debug!(error = %err, realtime, "a worker's scheduling was not changed"),
        }
    });
}
