//! Logs and metrics. Logs go to stderr as text or JSON, filtered by the configured level. Metrics
//! are exported for Prometheus on their own HTTP listener, with histogram buckets chosen for
//! checkout latencies (tens of microseconds to seconds).

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] = &[0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// Group-commit batch size buckets.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Installs the global tracing subscriber.
pub fn init_tracing(log: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&log.filter).map_err(|error| anyhow::anyhow!("log filter '{}': {error}", log.filter))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|error| anyhow::anyhow!("tracing: {error}"))
}

/// Starts the Prometheus endpoint (GET /metrics on `listen`). Must run inside the tokio runtime.
pub fn init_metrics(listen: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("loyalty_store_batch_size".into()), BATCH_BUCKETS)?
        .install()
        .map_err(|error| anyhow::anyhow!("metrics listener on {listen}: {error}"))
}
