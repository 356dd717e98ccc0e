//! Logging and metrics set-up shared by every Gatehouse binary.
//!
//! Logs are `tracing` events rendered as one JSON object per line with stable
//! field names (`timestamp`, `level`, `target`, `message`, plus the event's fields
//! and the enclosing spans' fields such as `request_id`), ready for an ELK-style
//! pipeline. Metrics go through the `metrics` facade into a Prometheus recorder
//! whose text the gateway serves at `/metrics`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Failures while installing the global logger or metrics recorder.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter directive could not be parsed.
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter {
        /// The directive as given.
        filter: String,
        /// Why it was refused.
        reason: String,
    },
    /// A global logger or recorder was already installed.
    #[error("telemetry already initialised: {0}")]
    AlreadyInstalled(String),
}

/// How log lines are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (production).
    #[default]
    Json,
    /// Human-readable lines (local development).
    Pretty,
}

/// Where the gateway writes its access lines: the same bounded, non-blocking
/// queue to stdout as every other log line, without going through a span
/// list and the JSON event formatter (a request's access line is the one
/// line every request writes, so its cost counts). Set by [`init_logging`].
static ACCESS_LOG: std::sync::OnceLock<AccessLog> = std::sync::OnceLock::new();

/// The access-log writer (see [`access_log`]).
pub struct AccessLog {
    writer: tracing_appender::non_blocking::NonBlocking,
    json: bool,
}

impl AccessLog {
    /// Whether lines should be JSON (else one human-readable line).
    #[must_use]
    pub fn json(&self) -> bool {
        self.json
    }

    /// Queues one complete line (with its newline); drops it, counted, when
    /// the queue is full.
    pub fn write(&self, line: &[u8]) {
        use std::io::Write as _;
        let mut writer = self.writer.clone();
        let _ = writer.write_all(line);
    }
}

/// The access-log writer, once logging is initialised (`None` in tests that
/// install no logger: no line is written).
#[must_use]
pub fn access_log() -> Option<&'static AccessLog> {
    ACCESS_LOG.get()
}

/// Log lines queued for stdout at most. Past this, lines are dropped (and
/// counted) rather than making a request wait for a slow reader of stdout.
pub const LOG_QUEUE_LINES: usize = 65_536;

/// Keeps the log writer thread alive (dropping it flushes what is queued)
/// and counts the lines dropped because the queue was full.
pub struct LogGuard {
    _worker: tracing_appender::non_blocking::WorkerGuard,
    dropped: tracing_appender::non_blocking::ErrorCounter,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard")
            .field("dropped", &self.dropped.dropped_lines())
            .finish_non_exhaustive()
    }
}

impl LogGuard {
    /// Lines dropped so far because the queue to stdout was full.
    #[must_use]
    pub fn dropped_lines(&self) -> usize {
        self.dropped.dropped_lines()
    }
}

/// Installs the global `tracing` subscriber writing to stdout through a
/// bounded queue and a writer thread: a request formats its line and never
/// waits on stdout; when the queue is full the line is dropped and counted.
///
/// `filter` uses `EnvFilter` syntax (`info,gatehouse=debug`).
pub fn init_logging(format: LogFormat, filter: &str) -> Result<LogGuard, TelemetryError> {
    let filter_layer = EnvFilter::try_new(filter).map_err(|e| TelemetryError::Filter {
        filter: filter.to_owned(),
        reason: e.to_string(),
    })?;
    let (writer, worker) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("gatehouse-log")
        .finish(std::io::stdout());
    let guard = LogGuard {
        dropped: writer.error_counter(),
        _worker: worker,
    };
    let _ = ACCESS_LOG.set(AccessLog {
        writer: writer.clone(),
        json: format == LogFormat::Json,
    });
    let registry = tracing_subscriber::registry().with(filter_layer);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer.clone())
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true)
                    .with_target(true),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .compact()
                    .with_target(false),
            )
            .try_init(),
    };
    result.map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    Ok(guard)
}

/// Histogram buckets (seconds) for request and dependency latency: fine-grained
/// below a millisecond, where a gateway's own overhead lives.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Installs the global Prometheus recorder and returns the handle that renders
/// the exposition text.
pub fn init_metrics() -> Result<PrometheusHandle, TelemetryError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?
        .install_recorder()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))
}
