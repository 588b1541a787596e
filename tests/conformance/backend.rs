//! The backends under test, each behind `Arc<dyn Store>`, with fresh data for every test.
//!
//! - Embedded: `EmbeddedStore` in a temporary directory, fsync on (the production default).
//! - Memory: `MemoryStore`, the deterministic in-memory store; a reopen is a new handle on the
//!   same data (what a restarted engine finds), as close to reopening a file as memory gets.
//! - ScyllaDB: a fresh keyspace `conf_<random>`, migrated with `deploy/cql`, on the CQL stand-in
//!   (started per test, on 127.0.0.1:0) or, when `LOYALTY_TEST_CQL_NODES` (or its older name
//!   `SCYLLA_NODES`) is set (`host:port,host:port`), on that cluster: ScyllaDB, or the three
//!   Apache Cassandra nodes of `tests/cassandra/cluster.sh` as CI runs it; `SCYLLA_DC` (default datacenter1) and `SCYLLA_RF` (default 3) give the keyspace's
//!   replication, `SCYLLA_TABLETS` (`false` by default, `true`, or `default` for the server's
//!   choice) whether it uses tablets. Keyspaces on a real cluster are dropped after a passing test
//!   and kept after a failing one, for a look. Every ScyllaDB instance of a test tells the time by
//!   one [`AheadClock`]: the wall clock, which the test puts ahead instead of waiting for relayed
//!   events to settle (see [`Backend::settle_relays`]).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cql_standin::StandIn;
use loyalty_engine::clock::{Clock, SystemClock};
use loyalty_store::Store;
use loyalty_store::embedded::{EmbeddedConfig, EmbeddedStore};
use loyalty_store::memory::MemoryStore;
use loyalty_store::scylla::{ScyllaConfig, ScyllaStore, migrate};
use loyalty_tests::AheadClock;
use tempfile::TempDir;

use crate::support::PROGRAM;

/// How long outbox events stay hidden after their relay on ScyllaDB (production: 5 s).
pub const RELAY_SETTLE: Duration = Duration::from_millis(200);

enum Kind {
    /// `journal`: with the write-ahead journal (and a checkpoint every 4 KiB of it).
    Embedded { dir: TempDir, journal: bool },
    /// `data`: a handle kept only to open new handles on the test's data ([`Backend::reopen`]).
    Memory { data: MemoryStore },
    Scylla {
        config: Box<ScyllaConfig>,
        real_cluster: bool,
        _standin: Option<StandIn>,
        /// The clock of every instance on this keyspace.
        clock: Arc<AheadClock>,
    },
}

/// One backend with fresh data: the store the test uses, and more instances on the same data
/// where the backend can have them.
pub struct Backend {
    kind: Kind,
    current: Mutex<Option<Arc<dyn Store>>>,
    /// Further instances handed out (other "engine processes"), shut down at the end.
    others: Mutex<Vec<Arc<dyn Store>>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Backend {
    pub async fn embedded() -> Backend {
        Self::embedded_with(false).await
    }

    pub async fn journaled() -> Backend {
        Self::embedded_with(true).await
    }

    async fn embedded_with(journal: bool) -> Backend {
        let dir = tempfile::tempdir().expect("temporary directory for the embedded store");
        let store = open_embedded(dir.path(), journal).await;
        Backend { kind: Kind::Embedded { dir, journal }, current: Mutex::new(Some(store)), others: Mutex::new(Vec::new()) }
    }

    pub async fn memory() -> Backend {
        let data = MemoryStore::new();
        let store: Arc<dyn Store> = Arc::new(data.reopen());
        Backend { kind: Kind::Memory { data }, current: Mutex::new(Some(store)), others: Mutex::new(Vec::new()) }
    }

    pub async fn scylla() -> Backend {
        let keyspace = format!("conf_{:016x}", std::collections::hash_map::RandomState::new().build_hasher().finish());
        let nodes = std::env::var("LOYALTY_TEST_CQL_NODES").or_else(|_| std::env::var("SCYLLA_NODES"));
        let (config, real_cluster, standin) = match nodes {
            Ok(nodes) if !nodes.trim().is_empty() => {
                let nodes: Vec<String> = nodes.split(',').map(|node| node.trim().to_owned()).filter(|node| !node.is_empty()).collect();
                let dc = std::env::var("SCYLLA_DC").unwrap_or_else(|_| "datacenter1".into());
                let rf = std::env::var("SCYLLA_RF").ok().map_or(3, |rf| rf.parse::<u32>().expect("SCYLLA_RF is a number"));
                let mut config = ScyllaConfig::new(nodes, &keyspace);
                config.replication = BTreeMap::from([(dc.clone(), rf)]);
                config.local_dc = Some(dc);
                config.tablets = match std::env::var("SCYLLA_TABLETS").as_deref() {
                    Ok("true") => Some(true),
                    Ok("default") => None,
                    _ => Some(false),
                };
                (config, true, None)
            }
            _ => {
                let standin = StandIn::start("127.0.0.1:0".parse().expect("address")).await.expect("start the CQL stand-in");
                let mut config = ScyllaConfig::new(vec![standin.addr().to_string()], &keyspace);
                config.replication = BTreeMap::from([("datacenter1".to_owned(), 1)]);
                (config, false, Some(standin))
            }
        };
        let mut config = config;
        config.relay_settle = RELAY_SETTLE;
        // A recovery pass reads 16 partitions per minute looked back: a day (the default) is 23,040
        // reads, which a test that runs a pass does not need (its data is minutes old).
        config.relay_lookback_minutes = 5;
        // The machine running the suite is small and shared: a slow answer is not what is tested.
        config.request_timeout = Duration::from_secs(5);
        let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cql");
        // A statement that times out on a loaded cluster fails the run; running it again is what an
        // operator does (every step is idempotent).
        let mut tries = 0;
        let clock = Arc::new(AheadClock::new());
        while let Err(error) = migrate(&config, &schema, clock.as_ref()).await {
            tries += 1;
            assert!(tries < 3, "migrate a fresh keyspace: {error:?}");
            eprintln!("migrate failed, running it again: {error}");
        }
        let store: Arc<dyn Store> = ScyllaStore::connect(config.clone(), clock.clone()).await.expect("connect to the migrated keyspace");
        Backend {
            kind: Kind::Scylla { config: Box::new(config), real_cluster, _standin: standin, clock },
            current: Mutex::new(Some(store)),
            others: Mutex::new(Vec::new()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Embedded { .. } => "embedded",
            Kind::Memory { .. } => "memory",
            Kind::Scylla { .. } => "scylla",
        }
    }

    pub fn is_scylla(&self) -> bool {
        matches!(self.kind, Kind::Scylla { .. })
    }

    /// The store under test.
    pub fn store(&self) -> Arc<dyn Store> {
        self.current.lock().expect("backend lock").clone().expect("a store is open")
    }

    /// Another instance on the same data, like a second engine process; `None` for a backend that
    /// allows one process only.
    pub async fn another_instance(&self) -> Option<Arc<dyn Store>> {
        self.instance_with(|_| {}).await
    }

    /// The configuration of a ScyllaDB backend's keyspace (`None` for the embedded and memory stores).
    pub fn scylla_config(&self) -> Option<ScyllaConfig> {
        match &self.kind {
            Kind::Scylla { config, .. } => Some(ScyllaConfig::clone(config)),
            Kind::Embedded { .. } | Kind::Memory { .. } => None,
        }
    }

    /// Another instance on the same data with changed settings (ScyllaDB only).
    pub async fn instance_with(&self, change: impl FnOnce(&mut ScyllaConfig)) -> Option<Arc<dyn Store>> {
        let Kind::Scylla { config, clock, .. } = &self.kind else { return None };
        let mut config = ScyllaConfig::clone(config);
        change(&mut config);
        let store: Arc<dyn Store> = ScyllaStore::connect(config, clock.clone()).await.expect("connect another instance");
        self.others.lock().expect("backend lock").push(Arc::clone(&store));
        Some(store)
    }

    /// A new instance on the same data after the current one was shut down, to see what reached
    /// the storage. Every `Arc` of the old store the test took must be dropped first (the embedded
    /// file can be open once only). The memory store's data outlives its handles: the new one is a
    /// handle on the same data, which holds exactly what was acknowledged.
    pub async fn reopen(&self) -> Arc<dyn Store> {
        let old = self.current.lock().expect("backend lock").take().expect("a store is open");
        old.shutdown().await;
        let store: Arc<dyn Store> = match &self.kind {
            Kind::Embedded { dir, journal } => {
                assert_eq!(Arc::strong_count(&old), 1, "the test still holds the old embedded store");
                drop(old);
                open_embedded(dir.path(), *journal).await
            }
            Kind::Memory { data } => {
                drop(old);
                Arc::new(data.reopen())
            }
            Kind::Scylla { config, clock, .. } => {
                drop(old);
                ScyllaStore::connect(ScyllaConfig::clone(config), clock.clone()).await.expect("reconnect")
            }
        };
        *self.current.lock().expect("backend lock") = Some(Arc::clone(&store));
        store
    }

    /// The time by the stores' clock (ScyllaDB: the wall clock, or ahead of it once a test moved it).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        match &self.kind {
            Kind::Scylla { clock, .. } => clock.now(),
            Kind::Embedded { .. } | Kind::Memory { .. } => SystemClock.now(),
        }
    }

    /// Makes every event relayed so far readable at once: puts the ScyllaDB stores' clock past
    /// `relay_settle` (the embedded and memory outboxes show events as soon as they are committed).
    pub fn reveal_relayed_events(&self) {
        if let Kind::Scylla { clock, .. } = &self.kind {
            clock.advance(RELAY_SETTLE);
        }
    }

    /// Brings the relay to an end instead of waiting for it, before a test checks that nothing more
    /// arrives: puts the clock past the relay grace and runs a recovery pass, which relays every
    /// commit marked so far whose relay has not finished (its events or credits again, if the
    /// commit's own relay is still under way: readers drop repeats by ID), then reveals every event
    /// relayed. Whatever a commit applied so far has then reached the outbox and the credits, and
    /// is readable; the embedded and memory stores have nothing to relay.
    pub async fn settle_relays(&self) {
        if let Kind::Scylla { config, clock, .. } = &self.kind {
            // Past the grace, and past the end of the minute of the last mark (the pass reads
            // whole minutes).
            clock.advance(config.relay_grace + Duration::from_secs(120));
        }
        self.store().relay(PROGRAM).await.expect("a recovery pass");
        self.reveal_relayed_events();
    }

    /// Shuts every instance down; drops the keyspace of a real cluster.
    pub async fn finish(self) {
        let current = self.current.lock().expect("backend lock").take();
        let others: Vec<Arc<dyn Store>> = self.others.lock().expect("backend lock").drain(..).collect();
        for store in current.into_iter().chain(others) {
            store.shutdown().await;
        }
        if let Kind::Scylla { config, real_cluster: true, .. } = &self.kind {
            drop_keyspace(config).await;
        }
    }
}

async fn open_embedded(dir: &Path, journal: bool) -> Arc<dyn Store> {
    // The writer thread of a store just dropped may still hold the file for a moment.
    let path: PathBuf = dir.to_owned();
    let mut last = None;
    for _ in 0..100 {
        let config = EmbeddedConfig { journal, checkpoint_bytes: if journal { 4096 } else { 16 << 20 }, ..EmbeddedConfig::in_dir(&path) };
        match EmbeddedStore::open(config) {
            Ok(store) => return Arc::new(store),
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("open the embedded store in {}: {last:?}", path.display());
}

async fn drop_keyspace(config: &ScyllaConfig) {
    let session = scylla::client::session_builder::SessionBuilder::new().known_nodes(&config.nodes).build().await;
    match session {
        Ok(session) => {
            if let Err(error) = session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", config.keyspace), ()).await {
                eprintln!("could not drop keyspace {}: {error}", config.keyspace);
            }
        }
        Err(error) => eprintln!("could not connect to drop keyspace {}: {error}", config.keyspace),
    }
}
