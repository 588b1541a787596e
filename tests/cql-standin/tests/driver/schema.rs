//! DDL, the production schema file, and what the driver sees in system_schema.

use crate::common::*;
use scylla::client::session_builder::SessionBuilder;
use scylla::cluster::metadata::{ColumnKind, Strategy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_schema_file_applies() {
    let standin = standin().await;
    let session = session_for(standin.addr()).await;
    let statements = production_schema();
    apply(&session, &statements).await;
    // Re-running the migration is a no-op (IF NOT EXISTS).
    apply(&session, &statements).await;
    session.refresh_metadata().await.expect("refresh metadata");
    let state = session.get_cluster_state();
    let ks = state.get_keyspace("loyalty").expect("keyspace loyalty in driver metadata");
    for stmt in &statements {
        let words: Vec<&str> = stmt.split_whitespace().collect();
        if let ["CREATE", "TABLE", "IF", "NOT", "EXISTS", name, ..] = words.as_slice() {
            let table = ks.tables.get(*name).unwrap_or_else(|| panic!("table {name} missing from driver metadata"));
            assert!(!table.partition_key.is_empty());
            for col in table.partition_key.iter().chain(&table.clustering_key) {
                assert!(table.columns.contains_key(col), "{name}.{col}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_is_visible_to_the_driver() {
    let (standin, session) = with_schema().await;
    session.refresh_metadata().await.expect("refresh metadata");
    let state = session.get_cluster_state();
    let ks = state.get_keyspace("loyalty").expect("keyspace loyalty in driver metadata");
    match &ks.strategy {
        Strategy::NetworkTopologyStrategy { datacenter_repfactors } => {
            assert_eq!(datacenter_repfactors.get("datacenter1"), Some(&3));
        }
        other => panic!("unexpected strategy {other:?}"),
    }
    let mut tables: Vec<&String> = ks.tables.keys().collect();
    tables.sort();
    assert_eq!(tables, ["account_index", "accounts", "claims", "credits", "outbox", "relay_marks", "rules", "schema_migrations"]);
    let accounts = &ks.tables["accounts"];
    assert_eq!(accounts.partition_key, ["program_id", "account_id"]);
    assert_eq!(accounts.clustering_key, ["kind", "seq", "key"]);
    assert_eq!(accounts.columns["value"].kind, ColumnKind::Regular);
    let claims = &ks.tables["claims"];
    assert_eq!(claims.partition_key, ["program_id", "kind", "id"]);
    assert!(claims.clustering_key.is_empty());
    let sm = &ks.tables["schema_migrations"];
    assert_eq!(sm.partition_key, ["version"]);
    assert!(standin.stats().schema_changes >= 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_forms_and_errors() {
    let standin = standin().await;
    let session = session_for(standin.addr()).await;
    session
        .query_unpaged(
            "CREATE KEYSPACE ks1 WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1} AND durable_writes = true AND tablets = {'enabled': false}",
            (),
        )
        .await
        .expect("SimpleStrategy keyspace");
    // Creating it again without IF NOT EXISTS is AlreadyExists.
    let e = session
        .query_unpaged("CREATE KEYSPACE ks1 WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}", ())
        .await
        .expect_err("duplicate keyspace");
    assert!(e.to_string().contains("already exists"), "{e}");
    // A data center the stand-in does not have.
    let e = session
        .query_unpaged("CREATE KEYSPACE ks2 WITH replication = {'class': 'NetworkTopologyStrategy', 'dc9': 3}", ())
        .await
        .expect_err("unknown dc");
    assert!(e.to_string().contains("dc9"), "{e}");
    // Qualified names, the three primary key forms, clustering order and ignored options.
    for q in [
        "CREATE TABLE ks1.t1 (a text PRIMARY KEY, b int)",
        "CREATE TABLE ks1.t2 (a text, c bigint, v blob, PRIMARY KEY (a, c)) WITH CLUSTERING ORDER BY (c DESC) AND comment = 'x' AND gc_grace_seconds = 10 AND compaction = {'class': 'SizeTieredCompactionStrategy'} AND default_time_to_live = 0",
        "CREATE TABLE IF NOT EXISTS ks1.t3 (a text, b int, c timestamp, d uuid, e timeuuid, f double, g boolean, h smallint, i tinyint, j ascii, k varchar, PRIMARY KEY ((a, b), c, d))",
    ] {
        session.query_unpaged(q, ()).await.unwrap_or_else(|e| panic!("{q}: {e}"));
    }
    let e = session.query_unpaged("CREATE TABLE ks1.t4 (a text PRIMARY KEY, b int) WITH default_time_to_live = 60", ()).await;
    assert!(e.is_err(), "non-zero default TTL must be rejected");
    let e = session.query_unpaged("CREATE TABLE ks1.t4 (a text PRIMARY KEY, b list<int>)", ()).await;
    assert!(e.is_err(), "collections must be rejected");
    let e = session.query_unpaged("CREATE TABLE ks1.t1 (a text PRIMARY KEY)", ()).await.expect_err("exists");
    assert!(e.to_string().contains("already exists"), "{e}");
    // Unqualified name without USE.
    let e = session.query_unpaged("CREATE TABLE t5 (a text PRIMARY KEY)", ()).await.expect_err("no keyspace");
    assert!(e.to_string().contains("No keyspace"), "{e}");

    session.query_unpaged("DROP TABLE ks1.t1", ()).await.expect("drop table");
    session.query_unpaged("DROP TABLE IF EXISTS ks1.t1", ()).await.expect("drop table if exists");
    assert!(session.query_unpaged("DROP TABLE ks1.t1", ()).await.is_err());
    session.query_unpaged("DROP KEYSPACE ks1", ()).await.expect("drop keyspace");
    session.query_unpaged("DROP KEYSPACE IF EXISTS ks1", ()).await.expect("drop keyspace if exists");
    assert!(session.query_unpaged("DROP KEYSPACE ks1", ()).await.is_err());
    let e = session.query_unpaged("SELECT * FROM ks1.t2", ()).await.expect_err("dropped");
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_without_schema_metadata_and_with_keyspace_filter() {
    let standin = standin().await;
    let setup = session_for(standin.addr()).await;
    apply_schema(&setup).await;
    // The backend's settings: no schema metadata; USE at connect.
    let session = SessionBuilder::new()
        .known_node_addr(standin.addr())
        .fetch_schema_metadata(false)
        .use_keyspace("loyalty", false)
        .build()
        .await
        .expect("session without schema metadata");
    let p = prepare(&session, "SELECT version FROM schema_migrations").await;
    assert!(exec(&session, &p, ()).await.into_rows_result().expect("rows").rows_num() == 0);
    // keyspaces_to_fetch makes the driver filter system_schema with `WHERE keyspace_name IN ?`.
    let filtered = SessionBuilder::new()
        .known_node_addr(standin.addr())
        .keyspaces_to_fetch(["loyalty"])
        .build()
        .await
        .expect("session with keyspaces_to_fetch");
    let state = filtered.get_cluster_state();
    let ks = state.get_keyspace("loyalty").expect("loyalty fetched");
    assert_eq!(ks.tables.len(), 8);
    assert!(state.get_keyspace("system_schema").is_none());
}
