//! Threads handed work that wakes many others, and threads that must never wait behind them.
//!
//! Waking a sleeping thread tends to run it at once in place of the waker. A thread that wakes
//! many (every durable waiter of a journal group; every viewer of an event) is therefore held for
//! as long as the threads it wakes take to run, and so is whatever waits on it (the journal's next
//! commit; a turnstile's answer). Such work goes to a thread of its own under `SCHED_BATCH`: the
//! same share of the CPU, but never run in place of the thread that hands it work.
//!
//! Threads that only feed the dashboards' streams may run under `SCHED_IDLE` ([`idle`]): they take
//! a core only while no other thread wants it.
//!
//! The other way round, a thread that answers turnstiles (the device listener's workers) may run
//! under `SCHED_FIFO` ([`realtime`]): a real-time thread takes a core from any ordinary thread as
//! soon as it is woken, where an ordinary one can wait a scheduler tick or more behind the threads
//! that stream to a thousand dashboards.

/// Spawns a named thread under `SCHED_BATCH` running `work` (with the default scheduling where
/// that is refused, which is only slower).
pub fn spawn_batch<F>(name: &str, work: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        batch_scheduling();
        work();
    })
}

/// Puts the calling thread under `SCHED_BATCH` (allowed to any thread: it only gives up waking
/// preemption).
fn batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
        let same_niceness = ThreadPriority::Os(ThreadPriorityOsValue::default());
        if let Err(err) = set_thread_priority_and_policy(thread_native_id(), same_niceness, batch) {
            let name = std::thread::current().name().unwrap_or_default().to_owned();
            tracing::info!(thread = %name, error = ?err, "runs under the default scheduling");
        }
    }
}

/// Puts the calling thread under `SCHED_IDLE`: it runs only when no other thread of the machine
/// wants its core, and gives the core up the moment one does (a thread woken under any other
/// policy preempts it at once, where between ordinary threads the scheduler may let the running
/// one finish its slice). Allowed to any thread; the error says why it was refused.
pub fn idle() -> Result<(), String> {
    set_idle_of(current_handle(), true)
}

/// The calling thread's handle, for [`set_idle_of`] (0 where that is not supported).
pub fn current_handle() -> u64 {
    #[cfg(target_os = "linux")]
    {
        thread_priority::thread_native_id()
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Puts the calling thread under the default scheduling (from real-time or `SCHED_IDLE`; always
/// allowed).
pub fn default_scheduling() -> Result<(), String> {
    set_idle_of(current_handle(), false)
}

/// Runs `work` on a blocking thread (tokio's pool) under the default scheduling. A blocking thread
/// takes the policy of the thread that created it: one created by a real-time listener worker must
/// not keep it for slow work (a password's hash would hold a core from every ordinary thread).
pub async fn blocking<F, T>(work: F) -> Result<T, tokio::task::JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        if let Err(err) = default_scheduling() {
            tracing::debug!(error = %err, "a blocking thread keeps its scheduling");
        }
        work()
    })
    .await
}

/// Puts the thread of `handle` ([`current_handle`] of a thread of this process that is running,
/// or has ended but not been joined) under `SCHED_IDLE`, or back under the default scheduling.
pub fn set_idle_of(handle: u64, idle: bool) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue, ThreadSchedulePolicy,
            set_thread_priority_and_policy,
        };
        let policy = if idle { NormalThreadSchedulePolicy::Idle } else { NormalThreadSchedulePolicy::Other };
        // The niceness is set on the calling thread (the crate's `setpriority(…, 0, …)`): the same.
        let same_niceness = ThreadPriority::Os(ThreadPriorityOsValue::default());
        set_thread_priority_and_policy(handle, same_niceness, ThreadSchedulePolicy::Normal(policy))
            .map_err(|err| format!("{err:?}"))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (handle, idle);
        Err("SCHED_IDLE is only used on Linux".to_owned())
    }
}

/// Puts the calling thread under `SCHED_FIFO` at `priority` (1–99; 1 is the lowest real-time
/// priority: above every ordinary thread, below the kernel's interrupt threads). Refused without
/// `CAP_SYS_NICE` (or an `RLIMIT_RTPRIO` that allows it): the error says why, and the thread keeps
/// the default scheduling. A thread this one creates inherits the policy, so only threads that
/// create none are given it.
pub fn realtime(priority: u8) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            RealtimeThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        let fifo = ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo);
        let priority = ThreadPriorityValue::try_from(priority).map_err(|e| e.to_string())?;
        set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Crossplatform(priority), fifo)
            .map_err(|err| format!("{err:?}"))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = priority;
        Err("real-time scheduling is only used on Linux".to_owned())
    }
}
