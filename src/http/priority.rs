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
//! workers answer fewer of them (Session 14 measured 40 % fewer). So each worker watches its own
//! share of a core, on the first request of every [`WINDOW`]: above [`BUSY`] it returns to the
//! default scheduling, where the machine is shared fairly; below [`QUIET`] it is real-time again.
//! Nothing but the worker itself changes its scheduling, and it reads only its own CPU clock.
//!
//! A thread a real-time worker creates would inherit its policy: work sent off a worker to a
//! blocking thread returns that thread to the default scheduling first
//! ([`portcullis_actors::sched::blocking`]).

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// How often a worker looks at its share of a core (on the first request after it).
const WINDOW: Duration = Duration::from_millis(50);
/// A worker busier than this (its CPU time over the window's) leaves real-time scheduling. Under
/// the bench's floods each API worker answers with 0.22–0.40 of a core; a site's turnstiles, a
/// few hundred decisions a second, take about 0.01.
const BUSY: f64 = 0.15;
/// A worker quieter than this is real-time again.
const QUIET: f64 = 0.05;

/// One worker's scheduling, kept on its own thread.
struct Pace {
    priority: u8,
    realtime: bool,
    /// When the current window began, and the thread's CPU time then: none until the first
    /// request (the worker's own start, building its routes, is not answering).
    since: Option<(Instant, Duration)>,
}

thread_local! {
    static PACE: RefCell<Option<Pace>> = const { RefCell::new(None) };
}

/// Puts the calling worker of `listener` under `SCHED_FIFO` at `priority` (nothing for 0), and
/// keeps it paced from then on ([`pace`]). Refused (no `CAP_SYS_NICE`), the worker keeps the
/// default scheduling and the log says so.
pub fn start(listener: &str, priority: u8) {
    if priority == 0 {
        return;
    }
    match portcullis_actors::sched::realtime(priority) {
        Ok(()) => {
            tracing::debug!(listener, priority, "a worker runs under SCHED_FIFO while it answers little");
            PACE.set(Some(Pace { priority, realtime: true, since: None }));
        }
        Err(err) => tracing::warn!(listener, priority, error = %err,
            "a worker runs under the default scheduling: real-time priority refused (needs CAP_SYS_NICE)"),
    }
}

/// Called by every request as it starts on a worker (`now`: its start): once a [`WINDOW`], the
/// worker weighs its share of a core since the last time, and changes its scheduling if the share
/// crossed [`BUSY`] or [`QUIET`]. A load and a comparison otherwise.
pub fn pace(now: Instant) {
    PACE.with_borrow_mut(|pace| {
        let Some(pace) = pace else { return };
        let Some((since, cpu_then)) = pace.since else {
            pace.since = Some((now, thread_cpu()));
            return;
        };
        let wall = now.saturating_duration_since(since);
        if wall < WINDOW {
            return;
        }
        let cpu = thread_cpu();
        let share = cpu.saturating_sub(cpu_then).as_secs_f64() / wall.as_secs_f64();
        pace.since = Some((now, cpu));
        let realtime = match pace.realtime {
            true if share > BUSY => false,
            false if share < QUIET => true,
            _ => return,
        };
        let changed = match realtime {
            true => portcullis_actors::sched::realtime(pace.priority),
            false => portcullis_actors::sched::default_scheduling(),
        };
        match changed {
            Ok(()) => {
                pace.realtime = realtime;
                let to = if realtime { "realtime" } else { "default" };
                metrics::counter!("portcullis_worker_scheduling_changes_total", "to" => to).increment(1);
            }
            Err(err) => tracing::debug!(error = %err, realtime, "a worker's scheduling was not changed"),
        }
    });
}

/// The calling thread's CPU time (zero where the clock cannot be read: the worker then looks idle,
/// and stays or becomes real-time; the kernel still keeps 5 % of each core from real-time threads).
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map(Duration::from).unwrap_or_default()
}
