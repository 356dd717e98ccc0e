//! Logging and metrics set-up shared by every Gatehouse binary.
//!
//! Logs are `tracing` events rendered as one JSON object per line with stable
//! field names (`timestamp`, `level`, `target`, `message`, the event's fields,
//! the enclosing spans, and `request_id` within a request: see
//! [`request_id`]), ready for an ELK-style
//! pipeline. Metrics go through the `metrics` facade into a Prometheus recorder
//! whose text the gateway serves at `/metrics`.

pub mod lines;
pub mod request_id;

use request_id::WithRequestId;
pub use request_id::{current_request_id, with_request_id};

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
    queue: lines::LineQueue,
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
        self.queue.push(line);
    }
}

/// The access-log writer, once logging is initialised (`None` in tests that
/// install no logger: no line is written).
#[must_use]
pub fn access_log() -> Option<&'static AccessLog> {
    ACCESS_LOG.get()
}

/// Bytes of log lines queued for stdout at most (about 16 000 access lines).
/// Past this, lines are dropped (and counted) rather than making a request
/// wait for a slow reader of stdout.
pub const LOG_QUEUE_BYTES: usize = 4 << 20;

/// Keeps the log writer thread alive (dropping it flushes what is queued)
/// and counts the lines dropped because the queue was full.
pub struct LogGuard {
    queue: lines::LineQueue,
    _writer: lines::WriterThread,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard")
            .field("dropped", &self.queue.dropped())
            .finish_non_exhaustive()
    }
}

impl LogGuard {
    /// Lines dropped so far because the queue to stdout was full.
    #[must_use]
    pub fn dropped_lines(&self) -> u64 {
        self.queue.dropped()
    }
}

/// Installs JSON logging into `writer` through the same bounded queue (the
/// layer benchmark logs into `io::sink()`, so it prices formatting and the
/// queue without a terminal).
pub fn init_logging_into<W>(filter: &str, writer: W) -> Result<LogGuard, TelemetryError>
where
    W: std::io::Write + Send + 'static,
{
    init_logging_with(LogFormat::Json, filter, writer)
}

/// Installs the global `tracing` subscriber writing to stdout through a
/// bounded queue and a writer thread: a request formats its line and never
/// waits on stdout; when the queue is full the line is dropped and counted.
///
/// `filter` uses `EnvFilter` syntax (`info,gatehouse=debug`).
pub fn init_logging(format: LogFormat, filter: &str) -> Result<LogGuard, TelemetryError> {
    init_logging_with(format, filter, std::io::stdout())
}

fn init_logging_with<W>(
    format: LogFormat,
    filter: &str,
    sink: W,
) -> Result<LogGuard, TelemetryError>
where
    W: std::io::Write + Send + 'static,
{
    let filter_layer = EnvFilter::try_new(filter).map_err(|e| TelemetryError::Filter {
        filter: filter.to_owned(),
        reason: e.to_string(),
    })?;
    let (writer, thread) = lines::LineQueue::start(LOG_QUEUE_BYTES, sink);
    let guard = LogGuard {
        queue: writer.clone(),
        _writer: thread,
    };
    let _ = ACCESS_LOG.set(AccessLog {
        queue: writer.clone(),
        json: format == LogFormat::Json,
    });
    let registry = tracing_subscriber::registry().with(filter_layer);
    let result = match format {
        LogFormat::Json => {
            let format = tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .with_target(true);
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(writer.clone())
                        .json()
                        .event_format(WithRequestId::new(format, true)),
                )
                .try_init()
        }
        LogFormat::Pretty => {
            let format = tracing_subscriber::fmt::format()
                .compact()
                .with_target(false);
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(writer)
                        .event_format(WithRequestId::new(format, false)),
                )
                .try_init()
        }
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
