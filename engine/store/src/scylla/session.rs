//! Connecting to ScyllaDB: driver settings chosen for checkout latency, and the driver's own
//! metrics exported to Prometheus.
//!
//! - Token-aware, shard-aware routing that prefers the local data center and never fails over to
//!   another one (a remote round trip would break the till's deadline; LOCAL_QUORUM there would
//!   not be the quorum we meant anyway).
//! - LOCAL_QUORUM for reads and writes; LOCAL_SERIAL for lightweight transactions when one data
//!   center writes, SERIAL when engines write from several (LOCAL_SERIAL would let two data
//!   centers both win the same compare-and-set).
//! - A request timeout below the till's deadline, so that the engine can still answer UNAVAILABLE
//!   in time instead of the till timing out on an unknown outcome.
//! - Retries only for idempotent statements (the driver's default policy; all of ours are, see
//!   `statements`), speculative execution for reads only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::retry::DefaultRetryPolicy;
use scylla::policies::speculative_execution::SimpleSpeculativeExecutionPolicy;
use scylla::statement::{Consistency, SerialConsistency};

use super::statements::Profiles;
use crate::StoreError;

/// Settings of the ScyllaDB backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// The data center this engine runs in; `None` lets the driver use every node alike.
    pub local_dc: Option<String>,
    pub keyspace: String,
    /// Replicas per data center (NetworkTopologyStrategy), used by `migrate` to create the keyspace.
    pub replication: BTreeMap<String, u32>,
    /// With replicas in several data centers, whether engines write from one of them only
    /// (active-passive). LOCAL_SERIAL orders lightweight transactions within one data center only:
    /// two engines in two data centers could both win `IF version = v`. So with several data centers
    /// the Paxos phase runs at SERIAL (a cross-DC round trip per commit) unless this says only one
    /// data center writes.
    pub single_writer_dc: bool,
    /// Whether `migrate` turns tablets off for the keyspace (ScyllaDB 2025+ defaults to tablets;
    /// `None` leaves the server's default, for servers that do not know the option).
    pub tablets: Option<bool>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A PEM CA bundle; set, the connection uses TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// Longest wait for one statement, retries included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// A read not answered after this long is also sent to another replica; `None`: never.
    pub speculative_delay: Option<Duration>,
    /// Outbox events become readable this long after they were relayed: longer than any relay
    /// write can take, so a reader never moves past an event still being written.
    pub relay_settle: Duration,
    /// A relay mark older than this, with its commit's rows still present, is relayed by the
    /// recovery pass (the committing engine normally relays within milliseconds).
    pub relay_grace: Duration,
    /// How far back a freshly started engine's recovery pass looks for relay marks.
    pub relay_lookback_minutes: u64,
}

impl ScyllaConfig {
    pub fn new(nodes: Vec<String>, keyspace: &str) -> Self {
        ScyllaConfig {
            nodes,
            local_dc: None,
            keyspace: keyspace.to_owned(),
            replication: BTreeMap::from([("datacenter1".to_owned(), 3)]),
            single_writer_dc: false,
            tablets: None,
            username: None,
            password: None,
            tls_ca_file: None,
            request_timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_secs(5),
            speculative_delay: Some(Duration::from_millis(20)),
            relay_settle: Duration::from_secs(5),
            relay_grace: Duration::from_secs(30),
            relay_lookback_minutes: 6 * 60,
        }
    }
}

fn io<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |error| StoreError::Io(format!("{what}: {error}"))
}

/// The execution profiles of [`Profiles`].
pub fn profiles(config: &ScyllaConfig) -> Profiles {
    let mut policy = DefaultPolicy::builder().token_aware(true).permit_dc_failover(false);
    if let Some(dc) = &config.local_dc {
        policy = policy.prefer_datacenter(dc.clone());
    }
    let policy = policy.build();
    let serial =
        if config.replication.len() > 1 && !config.single_writer_dc { SerialConsistency::Serial } else { SerialConsistency::LocalSerial };
    let base = ExecutionProfile::builder()
        .consistency(Consistency::LocalQuorum)
        .serial_consistency(Some(serial))
        .request_timeout(Some(config.request_timeout))
        .load_balancing_policy(policy)
        .retry_policy(Arc::new(DefaultRetryPolicy::new()));
    let read = match config.speculative_delay {
        Some(delay) => base
            .clone()
            .speculative_execution_policy(Some(Arc::new(SimpleSpeculativeExecutionPolicy { max_retry_count: 1, retry_interval: delay }))),
        None => base.clone(),
    };
    Profiles { read: read.build().into_handle(), write: base.speculative_execution_policy(None).build().into_handle(), serial }
}

/// Opens a session; with `keyspace`, every connection uses it.
pub async fn connect(config: &ScyllaConfig, profiles: &Profiles, keyspace: Option<&str>) -> Result<Session, StoreError> {
    if config.nodes.is_empty() {
        return Err(StoreError::Io("no ScyllaDB contact points configured".into()));
    }
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .connection_timeout(config.connect_timeout)
        .default_execution_profile_handle(profiles.write.clone())
        // Token-aware routing needs the keyspace's replication and its tables' partitioners, not
        // the columns and types of every table: fetch that much, for our keyspace only.
        .fetch_schema_metadata(true)
        .fetch_full_schema_metadata(false);
    if let Some(keyspace) = keyspace {
        builder = builder.use_keyspace(keyspace, false).keyspaces_to_fetch([keyspace]);
    }
    if let Some(user) = &config.username {
        builder = builder.user(user.clone(), config.password.clone().unwrap_or_default());
    }
    if let Some(path) = &config.tls_ca_file {
        builder = with_tls(builder, path)?;
    }
    // Bounded as a whole: a node that accepts TCP but never completes a handshake (TLS against a
    // plaintext port, say) would otherwise hold the engine's start forever.
    let limit = config.connect_timeout * 3;
    match tokio::time::timeout(limit, builder.build()).await {
        Ok(session) => session.map_err(io("connect to ScyllaDB")),
        Err(_) => Err(StoreError::Io(format!("connect to ScyllaDB: no session within {} ms", limit.as_millis()))),
    }
}

/// TLS to every node, verifying its certificate against the CA bundle at `ca_file` (OpenSSL: the
/// driver's TLS backend that needs no C build beyond linking the system library).
#[cfg(feature = "tls")]
fn with_tls(builder: SessionBuilder, ca_file: &std::path::Path) -> Result<SessionBuilder, StoreError> {
    use openssl::ssl::{SslConnector, SslMethod};
    let tls = |error: openssl::error::ErrorStack| StoreError::Io(format!("TLS with CA file {}: {error}", ca_file.display()));
    if !ca_file.is_file() {
        return Err(StoreError::Io(format!("TLS CA file {} does not exist", ca_file.display())));
    }
    let mut connector = SslConnector::builder(SslMethod::tls_client()).map_err(tls)?;
    connector.set_ca_file(ca_file).map_err(tls)?;
    Ok(builder.tls_context(Some(scylla::client::session::OpenSsl010Config::new(connector))))
}

#[cfg(not(feature = "tls"))]
fn with_tls(_builder: SessionBuilder, ca_file: &std::path::Path) -> Result<SessionBuilder, StoreError> {
    Err(StoreError::Io(format!("TLS to ScyllaDB (CA file {}) needs an engine built with `--features scylla-tls`", ca_file.display())))
}

/// Copies the driver's metrics into the process's Prometheus registry every `every`, until the
/// session is dropped.
pub fn spawn_metrics_export(session: &Arc<Session>, every: Duration) {
    let session = Arc::downgrade(session);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(session) = session.upgrade() else { break };
            let metrics = session.get_metrics();
            let requests = metrics.get_requests_unpaged_num()
                + metrics.get_requests_manually_paged_num()
                + metrics.get_requests_automatically_paged_num();
            let errors =
                metrics.get_errors_unpaged_num() + metrics.get_errors_manually_paged_num() + metrics.get_errors_automatically_paged_num();
            metrics::counter!("loyalty_scylla_requests_total").absolute(requests);
            metrics::counter!("loyalty_scylla_errors_total").absolute(errors);
            metrics::counter!("loyalty_scylla_retries_total").absolute(metrics.get_retries_num());
            metrics::counter!("loyalty_scylla_request_timeouts_total").absolute(metrics.get_request_timeouts());
            metrics::counter!("loyalty_scylla_connection_timeouts_total").absolute(metrics.get_connection_timeouts());
            metrics::gauge!("loyalty_scylla_connections").set(metrics.get_total_connections() as f64);
            for (quantile, label) in [(50.0, "0.5"), (99.0, "0.99"), (99.9, "0.999")] {
                if let Ok(ms) = metrics.get_latency_percentile_ms(quantile) {
                    metrics::gauge!("loyalty_scylla_latency_ms", "quantile" => label).set(ms as f64);
                }
            }
        }
    });
}
