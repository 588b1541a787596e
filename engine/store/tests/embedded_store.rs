//! The embedded store's guarantees, through the `Store` trait: conditional commits apply all or
//! nothing, concurrent commits share fsyncs yet each sees the others, and what was acknowledged is
//! there after the store is reopened.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use loyalty_core::Origin;
use loyalty_core::account::AccountState;
use loyalty_core::identity::{IdentityKey, IdentityKind};
use loyalty_core::program::ProgramPolicy;
use loyalty_core::receipt::ReceiptState;
use loyalty_core::txn::{Posting, Txn};
use loyalty_store::embedded::{EmbeddedConfig, EmbeddedStore};
use loyalty_store::{AccountWrite, Commit, CommitOutcome, Conflict, ReceiptWrite, Store};
use rust_decimal::Decimal;

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).single().expect("time")
}

fn open(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::in_dir(dir)).expect("open store")
}

/// A commit that earns `points` on `receipt_id` for an account last stored at `version`.
fn earn_commit(account: &AccountState, version: u64, receipt_id: &str, points: i64) -> Commit {
    let program = ProgramPolicy::with_defaults("p");
    let mut txn = Txn::begin(&program, account, now(), format!("tx-{receipt_id}"), Origin::default());
    txn.earn(Decimal::from(points), Posting { receipt_id: Some(receipt_id), refund_id: None }, "test".into());
    let (state, ledger) = txn.finish().expect("invariants");
    let receipt = ReceiptState::new(receipt_id.into(), account.account_id.clone(), now(), Origin::default());
    Commit {
        program_id: "p".into(),
        account: AccountWrite { expected_version: version, state },
        ledger,
        receipt: Some(ReceiptWrite { expected_version: 0, state: receipt }),
        identity_claims: vec![IdentityKey { kind: IdentityKind::Card, value: format!("CARD{}", account.account_id) }],
        request: None,
    }
}

#[tokio::test]
async fn conditions_are_checked_and_a_failed_one_writes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    let fresh = AccountState::new("a1".into(), true, now());
    let first = earn_commit(&fresh, 0, "r1", 10);
    let applied = store.commit(first.clone()).await.expect("commit");
    assert_eq!(applied, CommitOutcome::Applied { account_version: 1 });

    // The same commit again: the account is at version 1 now.
    assert_eq!(store.commit(first).await.expect("commit"), CommitOutcome::Conflict(Conflict::AccountVersion { actual: 1 }));
    // Right version, but the receipt was claimed already.
    let stored = store.account("p", "a1").await.expect("read").expect("exists");
    let reclaim = earn_commit(&stored.value, stored.version, "r1", 5);
    assert_eq!(store.commit(reclaim).await.expect("commit"), CommitOutcome::Conflict(Conflict::ReceiptVersion { actual: 1 }));
    // Another account may not claim a1's card.
    let other = AccountState::new("a2".into(), true, now());
    let mut steal = earn_commit(&other, 0, "r2", 5);
    steal.identity_claims = vec![IdentityKey { kind: IdentityKind::Card, value: "CARDa1".into() }];
    assert!(matches!(store.commit(steal).await.expect("commit"), CommitOutcome::Conflict(Conflict::IdentityTaken { .. })));
    // Nothing of the refused commits was written.
    assert!(store.account("p", "a2").await.expect("read").is_none());
    assert!(store.receipt("p", "r2").await.expect("read").is_none());
    let stored = store.account("p", "a1").await.expect("read").expect("exists");
    assert_eq!((stored.version, stored.value.ledger_sum), (1, Decimal::from(10)));
    assert_eq!(store.ledger_page("p", "a1", u64::MAX, 10).await.expect("ledger").len(), 1);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_fsyncs_and_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(open(dir.path()));
    let mut tasks = Vec::new();
    for index in 0..200 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let account = AccountState::new(format!("acc{index}"), true, now());
            store.commit(earn_commit(&account, 0, &format!("r{index}"), index + 1)).await
        }));
    }
    for task in tasks {
        assert!(matches!(task.await.expect("task").expect("commit"), CommitOutcome::Applied { .. }));
    }
    // Two commits racing for the same new account: exactly one wins.
    let account = AccountState::new("contested".into(), true, now());
    let (left, right) = tokio::join!(store.commit(earn_commit(&account, 0, "c1", 1)), store.commit(earn_commit(&account, 0, "c2", 1)));
    let outcomes = [left.expect("left"), right.expect("right")];
    assert_eq!(outcomes.iter().filter(|outcome| matches!(outcome, CommitOutcome::Applied { .. })).count(), 1);
    store.shutdown().await;
    drop(store);

    let reopened = open(dir.path());
    let (accounts, entries) = reopened.verify_ledgers().expect("ledgers agree");
    assert_eq!((accounts, entries), (201, 201));
    let stored = reopened.account("p", "acc199").await.expect("read").expect("exists");
    assert_eq!(stored.value.ledger_sum, Decimal::from(200));
    let identity = reopened.identity("p", &IdentityKey { kind: IdentityKind::Card, value: "CARDacc7".into() }).await.expect("read");
    assert_eq!(identity.as_deref(), Some("acc7"));
    reopened.shutdown().await;
}

#[tokio::test]
async fn after_shutdown_commits_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    store.shutdown().await;
    let account = AccountState::new("late".into(), true, now());
    assert!(store.commit(earn_commit(&account, 0, "r", 1)).await.is_err());
    assert!(!store.is_writable());
}
