//! Guarantees 13 and 14: a shut-down store writes nothing more; and on ScyllaDB, events of a commit
//! whose engine died between the batch and the relay still reach the outbox, in order.

use std::sync::Arc;
use std::time::Duration;

use loyalty_store::scylla::ScyllaConfig;
use loyalty_store::{CommitOutcome, Store, StoredRules};

use crate::backend::Backend;
use crate::support::*;

/// After `shutdown()` commits fail and write nothing (seen by a new instance on the same data).
pub async fn shutdown_refuses_commits_and_writes_nothing(backend: &Backend) {
    let store = backend.store();
    let v1 = apply(store.as_ref(), &change().earn(10).new_receipt("r1").build(&fresh("a"))).await;
    assert!(store.is_writable());
    store.shutdown().await;
    assert!(!store.is_writable(), "a shut-down store is not writable");

    let late = change().earn(5).new_receipt("r-late").claim(card("LATE")).request("req-late").build(&v1);
    let result = store.commit(late).await;
    assert!(result.is_err(), "a commit after shutdown: {result:?}");
    let late_create = change().earn(5).new_receipt("r-late-b").build(&fresh("b"));
    let result = store.commit(late_create).await;
    assert!(result.is_err(), "a create after shutdown: {result:?}");
    drop(store);

    let reopened = backend.reopen().await;
    let (stored, entries) = checked_ledger(reopened.as_ref(), "a").await;
    assert_eq!(stored, v1, "the account as before the shutdown");
    assert_eq!(entries.len(), 1);
    assert_eq!(account(reopened.as_ref(), "b").await, None);
    for receipt in ["r-late", "r-late-b"] {
        assert_eq!(reopened.receipt(PROGRAM, receipt).await.expect("read receipt"), None, "receipt {receipt}");
    }
    assert_eq!(reopened.request(PROGRAM, "req-late").await.expect("read request"), None);
    assert_eq!(reopened.identity(PROGRAM, &card("LATE")).await.expect("read identity"), None);
}

/// After `shutdown()` the other writes fail too ("later calls fail with Closed"): a rules version
/// or a credit deletion after shutdown would be a write nobody expects to happen.
pub async fn shutdown_refuses_rules_and_credit_writes(backend: &Backend) {
    let store = backend.store();
    let first = StoredRules { version: 1, document: "{}".into(), created_at: now(), author: "conformance".into(), comment: "1".into() };
    assert!(store.put_rules(PROGRAM, first.clone()).await.expect("put rules"));
    apply(store.as_ref(), &change().earn(10).new_receipt("r1").credit("referral/r1/1", "referrer", 1).build(&fresh("a"))).await;
    eventually(DELIVERY, "the credit", || store.pending_credits(PROGRAM, 10), |credits| credits.as_ref().is_ok_and(|c| c.len() == 1))
        .await
        .expect("read credits");
    store.shutdown().await;

    let second = StoredRules { version: 2, comment: "after shutdown".into(), ..first.clone() };
    let put = store.put_rules(PROGRAM, second).await;
    let deleted = store.delete_credit(PROGRAM, "referral/r1/1").await;
    drop(store);
    let reopened = backend.reopen().await;
    let head = reopened.rules_head(PROGRAM).await.expect("rules head");
    let credits = reopened.pending_credits(PROGRAM, 10).await.expect("read credits");
    assert!(
        put.is_err() && head == 1 && deleted.is_err() && credits.len() == 1,
        "after shutdown, put_rules answered {put:?} (rules head now {head}) and delete_credit answered {deleted:?} (credits now {credits:?})"
    );
}

/// A recovery pass on a store with nothing to recover succeeds and changes nothing.
pub async fn relay_pass_is_harmless(backend: &Backend) {
    let store = backend.store();
    let commit = change().earn(10).new_receipt("r1").credit("referral/r1/1", "referrer", 1).build(&fresh("a"));
    apply(store.as_ref(), &commit).await;
    store.relay(PROGRAM).await.expect("a relay pass");
    store.relay("other").await.expect("a relay pass on an empty program");
    let records = eventually(DELIVERY, "the event", || outbox(store.as_ref(), 100), |records| !records.is_empty()).await;
    // Another pass, once the relay grace is over, and every event it may have relayed made readable.
    backend.settle_relays().await;
    let records = [records, outbox(store.as_ref(), 100).await].concat();
    assert_eq!(events_of(&first_copies(&records), "a"), events_in(&commit));
    assert_eq!(store.pending_credits(PROGRAM, 10).await.expect("read credits"), commit.credits);
}

/// Commits through `store`, then shuts it down before anything else runs on this worker: the
/// engine "dies" right after the batch, before its background relay of the events starts (tokio
/// runs a task spawned on a worker in that worker's LIFO slot, after the current task yields; that
/// relay then finds the store shut down at its first read, and writes nothing).
/// Returns the minute (Unix time / 60) right after the commit if the events were indeed left behind.
async fn commit_then_crash(backend: &Backend, store: Arc<dyn Store>, reader: &dyn Store, commit: &loyalty_store::Commit) -> Option<i64> {
    let task_commit = commit.clone();
    let outcome = tokio::spawn(async move {
        let outcome = store.commit(task_commit).await;
        store.shutdown().await;
        outcome
    })
    .await
    .expect("commit task");
    let minute = backend.now().timestamp() / 60;
    assert_eq!(outcome.expect("commit"), CommitOutcome::Applied { account_version: commit.account.expected_version + 1 });
    // Anything the crashed instance did relay would be readable now.
    backend.reveal_relayed_events();
    let receipt = commit.receipt.as_ref().map(|receipt| receipt.state.receipt_id.clone());
    let delivered = outbox(reader, 1_000).await.iter().any(|record| record.event.receipt_id == receipt);
    if delivered {
        eprintln!("the crashed instance relayed its events before the shutdown; the crash could not be staged");
        return None;
    }
    Some(minute)
}

/// An engine dies after its batch applied and before it relayed the events; the next commit on the
/// account (by another engine) relays the left-behind events with its own, in commit order. The
/// crash is staged at version 9, so that versions 9 and 10 are relayed together.
pub async fn events_stranded_by_a_crash_are_relayed_by_the_next_commit_in_order(backend: &Backend) {
    let store = backend.store();
    let crashing = backend.another_instance().await.expect("a second instance");
    let mut expected = Vec::new();
    let mut a = fresh("a");
    for version in 1..=8 {
        let commit = change().earn(version).new_receipt(&format!("a-r{version}")).build(&a);
        a = apply(store.as_ref(), &commit).await;
        expected.extend(events_in(&commit));
    }
    // Counted from the commits, not assumed one per commit: an earn may carry several events.
    let first_eight_events = expected.len();
    eventually(
        DELIVERY,
        "the first 8 commits' events",
        || outbox(store.as_ref(), 1_000),
        |records| first_copies(records).len() == first_eight_events,
    )
    .await;

    let ninth = change().earn(9).new_receipt("a-r9").build(&a);
    let stranded = commit_then_crash(backend, crashing, store.as_ref(), &ninth).await.is_some();
    a = after(&ninth);
    expected.extend(events_in(&ninth));
    let tenth = change().earn(10).new_receipt("a-r10").build(&a);
    apply(store.as_ref(), &tenth).await;
    expected.extend(events_in(&tenth));

    let records = eventually(
        DELIVERY,
        "all 10 commits' events",
        || outbox(store.as_ref(), 1_000),
        |records| events_of(&first_copies(records), "a").len() >= expected.len(),
    )
    .await;
    let seen = events_of(&first_copies(&records), "a");
    assert_eq!(seen, expected, "events in commit order, each once (crash staged: {stranded})");
}

/// An engine dies after its batch applied and before it relayed the events, and nothing else
/// touches the account: the recovery pass of another engine (grace 0, so it reads the current
/// minute's marks too) relays them.
pub async fn relay_pass_recovers_events_of_a_crashed_commit(backend: &Backend) {
    let store = backend.store();
    let crashing = backend.another_instance().await.expect("a second instance");
    let commit = change().earn(5).new_receipt("c-r1").build(&fresh("c"));
    let Some(_committed_minute) = commit_then_crash(backend, crashing, store.as_ref(), &commit).await else { return };
    let recovering = backend.instance_with(|config| config.relay_grace = Duration::ZERO).await.expect("a recovering instance");
    let relayed = recovering.relay(PROGRAM).await.expect("the recovery pass");
    assert!(relayed >= 1, "the recovery pass relayed {relayed} rows");
    let records = eventually(DELIVERY, "the recovered event", || outbox(store.as_ref(), 1_000), |records| !records.is_empty()).await;
    assert_eq!(events_of(&first_copies(&records), "c"), events_in(&commit));
    assert_eq!(recovering.relay(PROGRAM).await.expect("another pass"), 0, "nothing left to relay");
}

/// The migration runs once: run again on a migrated keyspace it applies nothing. A keyspace whose
/// schema is newer than this build (another build migrated it) is refused at connect, never read.
pub async fn migrating_twice_applies_nothing_and_an_unknown_schema_is_refused(backend: &Backend) {
    let config = backend.scylla_config().expect("a ScyllaDB backend");
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cql");
    let applied = loyalty_tests::migrate_scylla(&config, &schema).await.expect("migrate again");
    assert_eq!(applied, Vec::<String>::new(), "nothing is applied twice");
    assert!(loyalty_tests::connect_scylla(config.clone()).await.is_ok(), "the migrated keyspace is served");

    let newer = loyalty_store::scylla::SCHEMA_VERSION + 1;
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&config.nodes)
        .use_keyspace(&config.keyspace, false)
        .build()
        .await
        .expect("connect");
    session
        .query_unpaged(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (newer, "from_a_newer_build", scylla::value::CqlTimestamp(0)),
        )
        .await
        .expect("record a newer migration");
    let refused = loyalty_tests::connect_scylla(config).await.expect_err("a newer schema is refused");
    assert!(refused.to_string().contains(&format!("schema version {newer}")), "{refused}");
}

/// A keyspace written by schema 1 (claims won in `claims` alone) is migrated to schema 2 with its
/// claim owners: `migrate` copies them into `claimants`, so an identifier bound under schema 1
/// still resolves to its owner and is refused to anyone else; then it drops `claims`, so an engine
/// of schema 1 still running cannot claim anything. Until migrated, the keyspace is not served.
pub async fn a_schema_1_keyspace_is_migrated_with_its_claim_owners(backend: &Backend) {
    let mut config = backend.scylla_config().expect("a ScyllaDB backend");
    config.keyspace = format!("{}_v1", config.keyspace);
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cql");
    // The keyspace as a build of schema 1 left it: its one file applied and recorded.
    let session = scylla::client::session_builder::SessionBuilder::new().known_nodes(&config.nodes).build().await.expect("connect");
    session
        .query_unpaged(loyalty_store::scylla::create_keyspace(&ScyllaConfig { tablets: None, ..config.clone() }), ())
        .await
        .expect("keyspace");
    session.use_keyspace(&config.keyspace, false).await.expect("use the keyspace");
    let schema_1 = std::fs::read_to_string(shipped.join("0001_initial.cql")).expect("read schema 1");
    for statement in loyalty_store::scylla::migration_statements(&schema_1) {
        session.query_unpaged(statement, ()).await.expect("schema 1");
    }
    session
        .query_unpaged("INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, 'initial', 0)", ())
        .await
        .expect("record schema 1");
    // What schema 1 wrote for an identifier of account "old": its claim and its held fence.
    let key = card("OLD-CARD").storage_key();
    session
        .query_unpaged("INSERT INTO claims (program_id, kind, id, account_id) VALUES (?, 'identity', ?, 'old')", (PROGRAM, key.as_str()))
        .await
        .expect("a schema 1 claim");
    session
        .query_unpaged(
            "INSERT INTO accounts (program_id, account_id, kind, seq, key, version, value) VALUES (?, 'old', 6, 0, ?, 1, ?)",
            (PROGRAM, format!("identity/{key}"), b"held".to_vec()),
        )
        .await
        .expect("its fence");
    let unserved = loyalty_tests::connect_scylla(config.clone()).await.expect_err("schema 1 is not served");
    assert!(unserved.to_string().contains("run `loyalty-engine migrate`"), "{unserved}");

    let applied = loyalty_tests::migrate_scylla(&config, &shipped).await.expect("migrate to the current schema");
    assert_eq!(applied, ["0002_claimants", "0003_figures"]);
    // An engine of schema 1 still running fails closed: the table it claims in is gone.
    let stale = session
        .query_unpaged("INSERT INTO claims (program_id, kind, id, account_id) VALUES (?, 'receipt', 'r-old', 'old')", (PROGRAM,))
        .await;
    assert!(stale.is_err(), "schema 1's claims table is dropped once copied");
    let store = loyalty_tests::connect_scylla(config.clone()).await.expect("the migrated keyspace is served");
    assert_eq!(store.identity(PROGRAM, &card("OLD-CARD")).await.expect("read identity"), Some("old".into()));
    let steal = change().earn(1).new_receipt("r-new").claim(card("OLD-CARD")).build(&fresh("new"));
    assert_eq!(
        refused(store.as_ref(), &steal).await,
        loyalty_store::Conflict::IdentityTaken { key: card("OLD-CARD"), account_id: "old".into() }
    );
    store.shutdown().await;
    session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", config.keyspace), ()).await.expect("drop the keyspace");
}
