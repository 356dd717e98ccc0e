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

/// Installs the global `tracing` subscriber writing to stdout.
///
/// `filter` uses `EnvFilter` syntax (`info,gatehouse=debug`).
pub fn init_logging(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    let filter_layer = EnvFilter::try_new(filter).map_err(|e| TelemetryError::Filter {
        filter: filter.to_owned(),
        reason: e.to_string(),
    })?;
    let registry = tracing_subscriber::registry().with(filter_layer);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
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
                    .compact()
                    .with_target(false),
            )
            .try_init(),
    };
    result.map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))
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
