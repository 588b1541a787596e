//! Guarantees 6 and 7: the ledger is stored in order, pages newest first, always sums to the
//! balance, never takes a commit that breaks its sequence; and what a commit wrote reads back
//! exactly (the replay of a retried call depends on it).

use loyalty_store::{Commit, CommitOutcome, StoreError, Versioned};

use crate::backend::Backend;
use crate::support::*;

/// 12 commits of 10 entries each (earns and spends): after every commit the ledger agrees with the
/// account; then paging newest-first in pages of 50 returns all 120 entries exactly as written.
pub async fn ledger_pages_newest_first_and_sums_to_the_balance(backend: &Backend) {
    let store = backend.store();
    let mut current = fresh("a");
    let mut written = Vec::new();
    for round in 0..12i64 {
        let mut moves = Vec::new();
        for step in 0..5i64 {
            moves.push(Move::Earn(round * 5 + step + 3));
            moves.push(Move::Spend(step + 1));
        }
        let commit = change().moves(&moves).new_receipt(&format!("r{round}")).build(&current);
        assert_eq!(commit.ledger.len(), 10);
        current = apply(store.as_ref(), &commit).await;
        written.extend(commit.ledger.clone());
        let (stored, entries) = checked_ledger(store.as_ref(), "a").await;
        assert_eq!(stored, current, "after round {round}");
        assert_eq!(entries, written, "after round {round}: the ledger is every entry written, in order");
    }
    assert_eq!(written.len(), 120);

    let seqs = |entries: &[loyalty_core::ledger::LedgerEntry]| entries.iter().map(|entry| entry.seq).collect::<Vec<_>>();
    let newest_first: Vec<_> = written.iter().rev().cloned().collect();
    let mut before = u64::MAX;
    let mut pages = Vec::new();
    loop {
        let page = store.ledger_page(PROGRAM, "a", before, 50).await.expect("ledger page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 50, "a page of {} entries", page.len());
        before = page.last().map_or(0, |entry| entry.seq);
        pages.push(page);
        assert!(pages.len() <= 5, "paging does not end");
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![50, 50, 20]);
    assert_eq!(pages.concat(), newest_first, "pages newest first, each entry once, as written");
    assert_eq!(seqs(&store.ledger_page(PROGRAM, "a", 61, 5).await.expect("page")), vec![60, 59, 58, 57, 56]);
    assert_eq!(seqs(&store.ledger_page(PROGRAM, "a", 500, 3).await.expect("page")), vec![120, 119, 118]);
    assert_eq!(seqs(&store.ledger_page(PROGRAM, "a", 3, 50).await.expect("page")), vec![2, 1]);
    assert!(store.ledger_page(PROGRAM, "a", 1, 50).await.expect("page").is_empty());
    assert!(store.ledger_page(PROGRAM, "a", 100, 0).await.expect("page").is_empty());
    assert!(store.ledger_page(PROGRAM, "nobody", u64::MAX, 50).await.expect("page").is_empty());
}

/// Checks that a commit the store must refuse as corrupt is refused so, and writes nothing.
async fn assert_corrupt_and_unwritten(
    backend: &Backend,
    commit: Commit,
    before: &Versioned<loyalty_core::account::AccountState>,
    what: &str,
) {
    let store = backend.store();
    let entries_before = whole_ledger(store.as_ref(), "a").await;
    match store.commit(commit.clone()).await {
        Err(StoreError::Corrupt(_)) => {}
        other => panic!("{what}: expected StoreError::Corrupt, got {other:?}"),
    }
    let (stored, entries) = checked_ledger(store.as_ref(), "a").await;
    assert_eq!(&stored, before, "{what}: the account is unchanged");
    assert_eq!(entries, entries_before, "{what}: the ledger is unchanged");
    if let Some(receipt) = &commit.receipt {
        assert_eq!(store.receipt(PROGRAM, &receipt.state.receipt_id).await.expect("read receipt"), None, "{what}: no receipt");
    }
    // The store still works.
    let next = change().earn(1).new_receipt(&format!("after-{what}")).build(before);
    apply(store.as_ref(), &next).await;
}

/// A commit whose own entries skip a seq, or whose ledger sum is not its booked balance, is
/// refused as corrupt before anything is written.
pub async fn commit_with_a_gap_inside_is_refused(backend: &Backend) {
    let store = backend.store();
    let v1 = apply(store.as_ref(), &change().earn(10).new_receipt("r1").build(&fresh("a"))).await;

    // Three entries, the middle one dropped: seqs 2 and 4 for an account whose ledger ends at 4.
    let mut gap = change().earn(1).earn(2).earn(3).new_receipt("r-gap").build(&v1);
    gap.ledger.remove(1);
    assert_corrupt_and_unwritten(backend, gap, &v1, "gap").await;

    // The account claims a ledger sum its buckets do not hold.
    let v2 = account(store.as_ref(), "a").await.expect("account a");
    let mut skewed = change().earn(5).new_receipt("r-skew").build(&v2);
    skewed.account.state.ledger_sum += points(1);
    assert_corrupt_and_unwritten(backend, skewed, &v2, "sum").await;
}

/// A commit that is consistent in itself but does not continue the stored ledger (its first entry
/// is not the stored last seq + 1) breaks the ledger's 1, 2, 3... sequence: refused as corrupt.
pub async fn commit_leaving_a_gap_after_the_stored_ledger_is_refused(backend: &Backend) {
    let store = backend.store();
    let v1 = apply(store.as_ref(), &change().earn(10).earn(5).new_receipt("r1").build(&fresh("a"))).await;
    // Built on a copy whose ledger seems one entry longer: the new entry gets seq 4, not 3.
    let mut skewed = v1.clone();
    skewed.value.ledger_seq += 1;
    let commit = change().earn(2).new_receipt("r-gap").build(&skewed);
    assert_eq!(commit.ledger.first().map(|entry| entry.seq), Some(4));
    assert_corrupt_and_unwritten(backend, commit, &v1, "gap after the stored ledger").await;
}

/// A commit whose entries reuse seqs already stored would rewrite the ledger's history: refused.
pub async fn commit_rewriting_a_stored_ledger_entry_is_refused(backend: &Backend) {
    let store = backend.store();
    let v1 = apply(store.as_ref(), &change().earn(10).earn(5).new_receipt("r1").build(&fresh("a"))).await;
    // Built on a copy whose ledger seems one entry shorter: the new entry gets seq 2, which exists.
    let mut skewed = v1.clone();
    skewed.value.ledger_seq -= 1;
    let commit = change().earn(2).new_receipt("r-rewrite").build(&skewed);
    assert_eq!(commit.ledger.first().map(|entry| entry.seq), Some(2));
    assert_corrupt_and_unwritten(backend, commit, &v1, "rewrite of entry 2").await;
}

/// What an applied commit wrote reads back exactly: the receipt with its version and every call
/// record (the first answers a retry must repeat), the account, the request record; and another
/// instance on the same data (another engine) reads the same.
pub async fn replay_reads_back_exactly_what_was_written(backend: &Backend) {
    let store = backend.store();
    let accrue = change().earn(10).earn(4).new_receipt("r1").claim(card("A")).build(&fresh("a"));
    let outcome = store.commit(accrue.clone()).await.expect("commit");
    assert_eq!(outcome, CommitOutcome::Applied { account_version: 1 });
    let v1 = after(&accrue);
    let receipt_v1 = Versioned { version: 1, value: accrue.receipt.as_ref().expect("receipt").state.clone() };
    assert_eq!(store.receipt(PROGRAM, "r1").await.expect("read receipt"), Some(receipt_v1.clone()));
    assert_eq!(account(store.as_ref(), "a").await, Some(v1.clone()));

    let redeem = change().spend(6).on_receipt(&receipt_v1).build(&v1);
    apply(store.as_ref(), &redeem).await;
    let receipt_v2 = Versioned { version: 2, value: redeem.receipt.as_ref().expect("receipt").state.clone() };
    assert_eq!(receipt_v2.value.calls.len(), 2, "the receipt records both calls");
    let enrol = change().earn(25).claim(phone("+77030000001")).request("req-e").build(&fresh("e"));
    apply(store.as_ref(), &enrol).await;
    let request = enrol.request.as_ref().expect("request").record.clone();

    let mut readers = vec![store.clone()];
    readers.extend(backend.another_instance().await);
    for reader in readers {
        let receipt = reader.receipt(PROGRAM, "r1").await.expect("read receipt").expect("receipt r1");
        assert_eq!(receipt, receipt_v2, "the receipt reads back exactly as written");
        let accrue_call = receipt.value.call(loyalty_core::receipt::OpKind::Accrue, "").expect("the accrue call's record");
        assert_eq!(Some(accrue_call), accrue.receipt.as_ref().and_then(|r| r.state.calls.first()), "the first answer is kept");
        assert_eq!(account(reader.as_ref(), "a").await, Some(after(&redeem)));
        assert_eq!(reader.request(PROGRAM, "req-e").await.expect("read request"), Some(request.clone()));
        assert_eq!(account(reader.as_ref(), "e").await, Some(after(&enrol)));
    }
}
