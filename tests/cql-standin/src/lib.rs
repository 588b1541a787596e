//! # cql-standin: an in-memory CQL server for tests, standing in for ScyllaDB
//!
//! **This crate exists only for tests.** No ScyllaDB can run on the CI machines, so CI tests the
//! engine's ScyllaDB backend against this stand-in, with the real `scylla` driver talking to it
//! over TCP with CQL native protocol v4. It is a single node holding everything in memory; it is
//! not a database and must never be used as one.
//!
//! ## What it implements
//!
//! * **Protocol** (v4 only): OPTIONS → SUPPORTED (`CQL_VERSION` 3.3.1, no compression, no
//!   ScyllaDB extensions, so the driver treats it as a plain Cassandra node); STARTUP → READY, or
//!   AUTHENTICATE (`PasswordAuthenticator`, SASL PLAIN) when started with credentials, where a wrong
//!   user or password gets `AuthenticationError` (0x0100); REGISTER → READY (no event is ever
//!   pushed); QUERY, PREPARE, EXECUTE (an unknown ID gets `Unprepared` 0x2500, so the driver
//!   re-prepares) and BATCH (logged and unlogged, statements as strings or prepared IDs). A frame
//!   of another protocol version (e.g. a v5 STARTUP) is answered with a ProtocolError naming the
//!   supported version (the driver never tries one). Consistency levels are accepted and ignored
//!   (SERIAL/LOCAL_SERIAL reads are ordinary reads; a write at a serial consistency and a read at
//!   ANY are Invalid); replication factors are recorded but not enforced. Client-side (default)
//!   timestamps are ignored: writes apply in arrival order. Named bind values, compression and
//!   tracing are not supported (tracing requests are answered without a trace).
//! * **Atomicity**: one lock covers the whole store, so every statement and every batch is atomic
//!   and every operation is linearisable.
//! * **DDL**: `CREATE KEYSPACE [IF NOT EXISTS]` (SimpleStrategy or NetworkTopologyStrategy naming
//!   only the stand-in's data center; `durable_writes`, ScyllaDB's `tablets` accepted),
//!   `CREATE TABLE [IF NOT EXISTS]` with types text/varchar, ascii, tinyint, smallint, int, bigint,
//!   blob, boolean, timestamp, uuid, timeuuid, double; `PRIMARY KEY ((a, b), c, d)`,
//!   `PRIMARY KEY (a, c)`, `col type PRIMARY KEY`; `WITH CLUSTERING ORDER BY (...)`; table options
//!   such as comment/compaction/caching/gc_grace_seconds are accepted and ignored, but a non-zero
//!   `default_time_to_live` is rejected. `DROP KEYSPACE/TABLE [IF EXISTS]`, `TRUNCATE`, `USE`
//!   (per connection). DDL answers SCHEMA_CHANGE (or Void when `IF [NOT] EXISTS` made it a no-op)
//!   and shows in `system_schema`.
//! * **Rows**: partitions keyed by the full partition key, kept in Murmur3 token order; rows in
//!   clustering order (DESC respected) with each type's CQL order (text/ascii/blob bytewise,
//!   integers and timestamps numerically, doubles as Java's `Double.compare`; uuid/timeuuid
//!   approximately: version, then time for v1, then bytes). INSERT and UPDATE upsert the named
//!   columns; INSERT sets the row marker, so a row exists while it was INSERTed or has a non-null
//!   regular cell. A null value writes a tombstone; an unset value leaves the cell alone.
//! * **SELECT**: `*`, a column list (with `AS` aliases) or `count(*)`; WHERE with equality on the
//!   whole partition key, then equality on a clustering prefix, then optionally one range
//!   (`>`, `>=`, `<`, `<=`, one or both bounds) on the next clustering column; no WHERE at all is
//!   a full scan in token order. `ORDER BY` on a clustering prefix, all natural or all reversed;
//!   `LIMIT` (literal or bind marker); paging with the request's page size and an opaque paging
//!   state. Results and PREPARED responses carry full metadata (keyspace/table of each column,
//!   bind-marker types, `[limit]` for `LIMIT ?`, and the partition-key indexes the driver needs
//!   for token-aware routing).
//! * **DELETE** of a row (full primary key), of some of its cells, or of a whole partition.
//! * **Lightweight transactions**: `INSERT ... IF NOT EXISTS`, `UPDATE/DELETE ... IF EXISTS`,
//!   `UPDATE/DELETE ... IF col op ? [AND ...]` with `=`, `!=`, `<`, `<=`, `>`, `>=` (a missing
//!   row has only null cells: `IF c = null` holds on it, `IF c = 1` does not). Conditional batches
//!   must stay in one partition of one table (`BATCH with conditions cannot span multiple
//!   tables` / `... partitions`, Invalid); all their conditions are evaluated against the state
//!   before the batch and either everything or nothing is applied.
//! * **System tables** (read-only): `system.local`, `system.peers`, `system.peers_v2` (empty),
//!   `system_schema.keyspaces`, `.tables`, `.columns`, `.views` and `.types` (empty), with the
//!   columns and types the driver reads. `WHERE col = ?`, `WHERE col IN ?` and literals filter
//!   them. ScyllaDB-only tables (`system_schema.scylla_tables`, `.scylla_keyspaces`) answer Invalid
//!   "unconfigured table", which the driver takes to mean "not ScyllaDB".
//!
//! Everything else is **rejected with a CQL error, never ignored**: SyntaxError (0x2000) or
//! Invalid (0x2200) naming the unsupported construct, e.g. `USING TTL/TIMESTAMP/TIMEOUT`,
//! `ALLOW FILTERING`, `IN` on user tables, restrictions on non-key columns, `token()`, functions
//! (`writetime`, `now()`...), counters, collection columns, arithmetic updates (`c = c + 1`),
//! secondary indexes, materialized views, user types, `SELECT JSON/DISTINCT`, `GROUP BY`,
//! `PER PARTITION LIMIT`, range deletions, named bind markers, `BEGIN BATCH` strings, `ALTER`.
//!
//! ## Result of a conditional statement or batch
//!
//! [`LwtStyle::Scylla`] (the default) reproduces ScyllaDB; [`LwtStyle::Cassandra`] reproduces
//! Apache Cassandra. Code reading these results should look up `[applied]` and the other columns
//! by name and treat null as "no old value", which works with both.
//!
//! * ScyllaDB, single statement: always one row, whether applied or not:
//!   `[applied]` + the old values of the statement's *CAS columns* (null when there was no old
//!   row). The CAS columns are all columns in table order (partition key, clustering key, then
//!   regular columns by name) for `IF [NOT] EXISTS`, and the condition columns in table order for
//!   `IF col = ...`. The PREPARED result metadata announces these columns.
//! * ScyllaDB, batch: one row per statement of the batch, in batch order (also for the
//!   unconditional ones), each `[applied]` + the primary key columns + the union of the CAS columns
//!   of the conditional statements, in table order; a row carries the old values of the row its
//!   statement targets if that row was read for a condition (i.e. a conditional statement names
//!   it) and existed, and nulls otherwise (key columns included).
//! * Cassandra, single statement: applied → `[applied]` only. Not applied → `[applied]` only if
//!   the row does not exist, else `[applied]` + all columns in table order (`IF [NOT] EXISTS`) or
//!   the condition columns in IF order.
//! * Cassandra, batch: applied → `[applied]` only. Not applied → one row per *existing* row named
//!   by a condition, in clustering order, each `[applied]`=false + all columns (if any statement
//!   uses `IF [NOT] EXISTS`) or the primary key columns followed by the condition columns; if none
//!   of those rows exists, `[applied]` only.
//!
//! ## What the driver reads at connect
//!
//! The `scylla` 1.9 driver sends OPTIONS and STARTUP (then AUTH_RESPONSE) on every connection, and
//! REGISTER on its control connection. Through the control connection it PREPAREs and pages
//! through `SELECT host_id, rpc_address, data_center, rack, tokens FROM system.peers` and
//! `SELECT host_id, rpc_address, data_center, rack, tokens, cluster_name FROM system.local WHERE
//! key='local'`, and, unless schema metadata is disabled (`fetch_schema_metadata(false)`), the
//! keyspaces (`keyspace_name, replication, durable_writes`), tables, views, ScyllaDB's
//! `scylla_tables`/`scylla_keyspaces` (rejected, see above) and, with full schema metadata,
//! `system_schema.columns` and `.types` (with `WHERE keyspace_name IN ?` when the session limits
//! the keyspaces to fetch). The node's address is `rpc_address` with the port the driver connected
//! to. After a SCHEMA_CHANGE result it polls `SELECT schema_version FROM system.local WHERE
//! key='local'` until the versions agree (immediately: there is one node). `USE ks` answers
//! SET_KEYSPACE.
//!
//! ## Behind `scylla-proxy`
//!
//! Put a `scylla_proxy::Node::new(standin.addr(), proxy_addr, ShardAwareness::Unaware, ..)` in front
//! of the stand-in and connect the driver to `proxy_addr`. The driver learns the node's address
//! from `rpc_address` plus the port it connected to, so the proxy must be on the same IP the
//! stand-in advertises: either bind both on 127.0.0.1 (the default), or start the stand-in with
//! [`StandIn::start_advertising`] / [`Builder::advertise`] giving the proxy's IP. Otherwise the
//! driver would open its pool to the stand-in directly and bypass the proxy.
//!
//! scylla-proxy 0.0.8 writes each frame as two segments without `TCP_NODELAY`. The stand-in
//! re-arms `TCP_QUICKACK` on its sockets so that requests do not wait for delayed ACKs, but
//! responses still wait for the driver's (about 20 ms per request through the proxy, against well
//! under 1 ms directly): keep tests behind the proxy short. Check `RunningProxy::sanity_check()`
//! and drop the `RunningProxy` rather than awaiting `finish()`, which in 0.0.8 races with the
//! connections it closes (it returns `NodeDisconnected`/`DriverDisconnected` errors or panics with
//! "Worker await logic bug!").
//!
//! ## Test helpers
//!
//! [`StandIn::stats`] counts requests, LWTs, batches and errors; [`StandIn::statements`] lists the
//! statement texts executed; [`StandIn::forget_prepared`] and [`StandIn::drop_connections`] (or
//! both: [`StandIn::simulate_restart`]) emulate a node restart that keeps its data.

mod cql;
mod error;
mod exec;
mod murmur3;
mod server;
mod store;
mod system;
mod types;
mod wire;

pub use error::CqlError;
pub use exec::LwtStyle;

use exec::ExecConfig;
use server::{Shared, State};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use system::NodeInfo;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// Counters of what the stand-in has done, for assertions in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted so far.
    pub connections_accepted: u64,
    /// Connections currently open.
    pub open_connections: u64,
    /// Requests received after the frame header (all opcodes).
    pub requests: u64,
    /// PREPARE requests that succeeded.
    pub prepares: u64,
    /// EXECUTE/BATCH requests answered with `Unprepared`.
    pub unprepared: u64,
    /// Requests answered with an ERROR frame (including `Unprepared`).
    pub errors: u64,
    /// SELECTs executed (user and system tables).
    pub selects: u64,
    /// INSERT/UPDATE/DELETE statements executed, conditional or not (each statement of a batch
    /// counts).
    pub writes: u64,
    /// Protocol BATCH requests executed.
    pub batches: u64,
    /// Conditional statements and conditional batches executed (a batch counts once).
    pub lwt: u64,
    pub lwt_applied: u64,
    pub lwt_not_applied: u64,
    /// DDL statements that changed the schema.
    pub schema_changes: u64,
}

/// Configures and starts a [`StandIn`].
#[derive(Debug, Clone)]
pub struct Builder {
    credentials: Option<(String, String)>,
    advertise: Option<IpAddr>,
    datacenter: String,
    rack: String,
    cluster_name: String,
    lwt_style: LwtStyle,
    host_id: Option<[u8; 16]>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            credentials: None,
            advertise: None,
            datacenter: "datacenter1".into(),
            rack: "rack1".into(),
            cluster_name: "cql-standin".into(),
            lwt_style: LwtStyle::Scylla,
            host_id: None,
        }
    }
}

impl Builder {
    /// Require `PasswordAuthenticator` login with these credentials.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// The address reported as `rpc_address` in `system.local` (default: the bound IP, or
    /// 127.0.0.1 when bound to an unspecified address). Set it to a proxy's IP to keep the driver
    /// behind the proxy.
    pub fn advertise(mut self, ip: IpAddr) -> Self {
        self.advertise = Some(ip);
        self
    }

    /// The data center name (default `datacenter1`).
    pub fn datacenter(mut self, dc: impl Into<String>) -> Self {
        self.datacenter = dc.into();
        self
    }

    /// The rack name (default `rack1`).
    pub fn rack(mut self, rack: impl Into<String>) -> Self {
        self.rack = rack.into();
        self
    }

    /// The cluster name in `system.local` (default `cql-standin`).
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = name.into();
        self
    }

    /// Shape of LWT results (default [`LwtStyle::Scylla`]).
    pub fn lwt_style(mut self, style: LwtStyle) -> Self {
        self.lwt_style = style;
        self
    }

    /// The node's host ID (default: derived from the advertised address, so it is the same for a
    /// stand-in restarted on the same address).
    pub fn host_id(mut self, id: [u8; 16]) -> Self {
        self.host_id = Some(id);
        self
    }

    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves on the current tokio runtime.
    pub async fn start(self, addr: SocketAddr) -> io::Result<StandIn> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let rpc_address = self.advertise.unwrap_or(if local.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { local.ip() });
        let host_id = self.host_id.unwrap_or_else(|| derive_host_id(rpc_address, local.port()));
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            exec: ExecConfig {
                node: NodeInfo {
                    rpc_address,
                    datacenter: self.datacenter,
                    rack: self.rack,
                    host_id,
                    cluster_name: self.cluster_name,
                    tokens: vec![0],
                },
                lwt_style: self.lwt_style,
            },
            credentials: self.credentials,
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        });
        let accept = tokio::spawn(server::accept_loop(listener, Arc::clone(&shared))).abort_handle();
        Ok(StandIn { shared, addr: local, rpc_address, accept })
    }
}

fn derive_host_id(ip: IpAddr, port: u16) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, salt) in [0x11u8, 0x22].into_iter().enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, ip, port).hash(&mut h);
        out[i * 8..i * 8 + 8].copy_from_slice(&h.finish().to_be_bytes());
    }
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

/// A running stand-in. Dropping it (or [`StandIn::stop`]) stops listening and closes every
/// connection.
#[derive(Debug)]
pub struct StandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    rpc_address: IpAddr,
    accept: AbortHandle,
}

impl StandIn {
    /// A builder for non-default settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves on the current tokio runtime, without
    /// authentication.
    pub async fn start(addr: SocketAddr) -> io::Result<StandIn> {
        Builder::default().start(addr).await
    }

    /// Like [`StandIn::start`], requiring `PasswordAuthenticator` login with these credentials.
    pub async fn start_with_credentials(addr: SocketAddr, user: &str, password: &str) -> io::Result<StandIn> {
        Builder::default().credentials(user, password).start(addr).await
    }

    /// Like [`StandIn::start`], reporting `advertised` as the node's `rpc_address` (use a proxy's
    /// IP so that the driver keeps going through the proxy).
    pub async fn start_advertising(bind: SocketAddr, advertised: IpAddr) -> io::Result<StandIn> {
        Builder::default().advertise(advertised).start(bind).await
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address reported in `system.local.rpc_address`.
    pub fn advertised_ip(&self) -> IpAddr {
        self.rpc_address
    }

    /// Stops listening and closes every connection. Data is dropped with the last handle.
    pub fn stop(&self) {
        self.accept.abort();
        self.drop_connections();
    }

    /// Closes every open connection (the listener keeps accepting): clients see the node go away
    /// and reconnect.
    pub fn drop_connections(&self) {
        let conns: Vec<AbortHandle> = self.shared.lock_conns().drain().map(|(_, h)| h).collect();
        for c in conns {
            c.abort();
        }
    }

    /// Forgets every prepared statement, as a restarted node does: the next EXECUTE of each gets
    /// `Unprepared` and the driver re-prepares it.
    pub fn forget_prepared(&self) {
        self.shared.lock().prepared.clear();
    }

    /// A restart that keeps the data: forgets prepared statements and closes all connections.
    pub fn simulate_restart(&self) {
        self.forget_prepared();
        self.drop_connections();
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        let open = self.shared.lock_conns().len() as u64;
        let st = self.shared.lock();
        Stats {
            connections_accepted: st.connections,
            open_connections: open,
            requests: st.requests,
            prepares: st.prepares,
            unprepared: st.unprepared,
            errors: st.errors,
            selects: st.counters.selects,
            writes: st.counters.writes,
            batches: st.counters.batches,
            lwt: st.counters.lwt,
            lwt_applied: st.counters.lwt_applied,
            lwt_not_applied: st.counters.lwt_not_applied,
            schema_changes: st.counters.schema_changes,
        }
    }

    /// Texts of the statements executed (QUERY, EXECUTE and each statement of a BATCH), oldest
    /// first; the last 10,000 are kept.
    pub fn statements(&self) -> Vec<String> {
        self.shared.lock().log.iter().cloned().collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
    }
}
