//! Logs (tracing) and metrics (Prometheus).

use std::io::IsTerminal;
#[expect(clippy::disallowed_types, reason = "start-up only, synchronous, never held across an await")]
use std::sync::Mutex;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogFormat, LogSettings};

/// Installs the global log subscriber. A second call (tests) keeps the first subscriber.
pub fn init_logging(settings: &LogSettings) {
    let filter = EnvFilter::builder().parse_lossy(&settings.level);
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_span_events(FmtSpan::NONE);
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    } else {
        builder.compact().with_ansi(std::io::stdout().is_terminal()).try_init()
    };
}

/// Names the calling thread for what it does (at most 15 bytes: what `top -H`, `ps -L` and
/// `/proc/<pid>/task/*/comm` show). Where that is refused the thread keeps its name, which costs
/// only clarity.
pub fn name_thread(name: &std::ffi::CStr) {
    #[cfg(target_os = "linux")]
    if let Err(err) = nix::sys::prctl::set_name(name) {
        tracing::debug!(error = %err, ?name, "a thread keeps the name it was given");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

/// Buckets for latency histograms, in seconds: 50 µs to 5 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();
// INVARIANT: held while installing, so two applications starting at once (tests) cannot both try
// to install the process-wide recorder.
#[expect(clippy::disallowed_types, reason = "start-up only, synchronous, never held across an await")]
static INSTALLING: Mutex<()> = Mutex::new(());

/// The process-wide Prometheus recorder, installed on first use. Every metric is named
/// `portcullis_*`; several applications in one process (tests) share it.
pub fn metrics_handle() -> Result<PrometheusHandle, BuildError> {
    if let Some(handle) = RECORDER.get() {
        return Ok(handle.clone());
    }
    let _installing = INSTALLING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(handle) = RECORDER.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)?
        .install_recorder()?;
    metrics::describe_counter!("portcullis_http_requests_total", "HTTP requests by method, route and status.");
    metrics::describe_histogram!(
        "portcullis_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by method and route."
    );
    metrics::describe_gauge!("portcullis_db_pool_connections", "Database pool connections by state.");
    metrics::describe_gauge!("portcullis_build_info", "Always 1; labels carry the build's version.");
    metrics::gauge!("portcullis_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(RECORDER.get_or_init(|| handle).clone())
}
