//! Guarantee 8, the key one: writers racing on one account, each doing what the engine does (read,
//! decide, commit naming the version read, re-read and retry on a conflict), never lose or invent
//! a point, never spend what is not there, and every acknowledged call is in the ledger once.

use std::collections::HashMap;
use std::sync::Arc;

use loyalty_core::Decimal;
use loyalty_store::{CommitOutcome, Conflict, Store};

use crate::backend::Backend;
use crate::support::*;

const WRITERS: usize = 16;
const CALLS_PER_WRITER: usize = 12;
/// Small, and half the calls spend: the balance keeps touching zero, where a lost update would show.
const SEED_POINTS: i64 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Earn,
    Spend,
}

/// What became of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Applied and answered (or, after an unknown outcome, found applied by its retry).
    Acknowledged,
    /// A spend with nothing to spend: never committed.
    Declined,
}

/// One writer: `CALLS_PER_WRITER` calls, each with its own receipt ID, retried until decided.
async fn writer(store: Arc<dyn Store>, index: usize) -> Vec<(String, Call, Fate, usize)> {
    let mut results = Vec::new();
    for call_index in 0..CALLS_PER_WRITER {
        let call = if (index + call_index).is_multiple_of(2) { Call::Spend } else { Call::Earn };
        let receipt_id = format!("w{index}-c{call_index}");
        let mut attempts = 0;
        let mut unknown_outcome = false;
        let fate = loop {
            attempts += 1;
            assert!(attempts <= 2_000, "{receipt_id}: no decision after {attempts} attempts");
            // After a failure whose outcome is unknown, the retry first looks for the receipt, as
            // the engine does: if it is there, the call was applied and is answered from it.
            // A read that fails (a timeout on a loaded cluster) is a failed attempt like any other.
            if unknown_outcome {
                match store.receipt(PROGRAM, &receipt_id).await {
                    Ok(Some(_)) => break Fate::Acknowledged,
                    Ok(None) => {}
                    Err(error) => {
                        eprintln!("{receipt_id}: attempt {attempts}: reading the receipt failed: {error}");
                        assert!(attempts <= 50, "{receipt_id}: the store keeps failing: {error}");
                        continue;
                    }
                }
            }
            let stored = match store.account(PROGRAM, "hot").await {
                Ok(Some(stored)) => stored,
                Ok(None) => panic!("account hot is gone"),
                Err(error) => {
                    eprintln!("{receipt_id}: attempt {attempts}: reading the account failed: {error}");
                    assert!(attempts <= 50, "{receipt_id}: the store keeps failing: {error}");
                    continue;
                }
            };
            let spendable = stored.value.balance_at(now()).spendable;
            assert!(spendable >= Decimal::ZERO, "negative spendable balance read: {stored:?}");
            let commit = match call {
                Call::Earn => change().earn(1).new_receipt(&receipt_id).build(&stored),
                Call::Spend if spendable >= points(1) => change().spend(1).new_receipt(&receipt_id).build(&stored),
                Call::Spend => break Fate::Declined,
            };
            match store.commit(commit).await {
                Ok(CommitOutcome::Applied { account_version }) => {
                    assert_eq!(account_version, stored.version + 1);
                    break Fate::Acknowledged;
                }
                Ok(CommitOutcome::Conflict(Conflict::AccountVersion { .. })) => {}
                Ok(CommitOutcome::Conflict(other)) => panic!("{receipt_id}: unexpected conflict {other:?}"),
                Err(error) => {
                    // Not acknowledged: the engine would answer UNAVAILABLE and the till retry.
                    unknown_outcome = true;
                    eprintln!("{receipt_id}: attempt {attempts} failed: {error}");
                    assert!(attempts <= 50, "{receipt_id}: the store keeps failing: {error}");
                }
            }
        };
        results.push((receipt_id, call, fate, attempts));
    }
    results
}

async fn hammer(stores: Vec<Arc<dyn Store>>) {
    let first = stores.first().expect("a store").clone();
    let seed = change().earn(SEED_POINTS).new_receipt("seed").build(&fresh("hot"));
    apply(first.as_ref(), &seed).await;

    let mut tasks = Vec::new();
    for index in 0..WRITERS {
        let store = Arc::clone(&stores[index % stores.len()]);
        tasks.push(tokio::spawn(writer(store, index)));
    }
    let mut calls = Vec::new();
    for task in tasks {
        calls.extend(task.await.expect("writer task"));
    }

    for reader in &stores {
        let (stored, entries) = checked_ledger(reader.as_ref(), "hot").await;
        // Never negative: not at the end, not after any stored entry.
        for entry in &entries {
            assert!(entry.balance_after >= Decimal::ZERO, "entry {} leaves the balance at {}", entry.seq, entry.balance_after);
        }
        // Every acknowledged call is in the ledger exactly once, with its amount; nothing else is.
        let mut by_receipt: HashMap<String, Vec<Decimal>> = HashMap::new();
        for entry in &entries {
            let receipt = entry.receipt_id.clone().expect("every entry here has a receipt");
            by_receipt.entry(receipt).or_default().push(entry.amount);
        }
        assert_eq!(by_receipt.remove("seed"), Some(vec![points(SEED_POINTS)]), "the seed entry");
        let (mut earns, mut spends) = (0i64, 0i64);
        for (receipt_id, call, fate, _) in &calls {
            let found = by_receipt.remove(receipt_id);
            match (fate, call) {
                (Fate::Acknowledged, Call::Earn) => {
                    earns += 1;
                    assert_eq!(found, Some(vec![points(1)]), "acknowledged earn {receipt_id}");
                }
                (Fate::Acknowledged, Call::Spend) => {
                    spends += 1;
                    assert_eq!(found, Some(vec![points(-1)]), "acknowledged spend {receipt_id}");
                }
                (Fate::Declined, _) => assert_eq!(found, None, "declined spend {receipt_id} is not in the ledger"),
            }
            let receipt = reader.receipt(PROGRAM, receipt_id).await.expect("read receipt");
            match fate {
                Fate::Acknowledged => {
                    let receipt = receipt.unwrap_or_else(|| panic!("acknowledged {receipt_id} has its receipt"));
                    assert_eq!((receipt.version, receipt.value.account_id.as_str()), (1, "hot"), "receipt {receipt_id}");
                }
                Fate::Declined => assert_eq!(receipt, None, "declined {receipt_id} has no receipt"),
            }
        }
        assert!(by_receipt.is_empty(), "ledger entries of calls never acknowledged: {by_receipt:?}");
        let expected = SEED_POINTS + earns - spends;
        assert_eq!(stored.value.ledger_sum, points(expected), "balance = seed + acknowledged earns - acknowledged spends");
        assert_eq!(stored.value.balance_at(now()).balance, points(expected));
        assert_eq!(entries.len() as u64, 1 + earns as u64 + spends as u64, "one entry per acknowledged call");
        assert_eq!(stored.version, 1 + earns as u64 + spends as u64, "one account version per acknowledged call");
    }
    let attempts: usize = calls.iter().map(|(_, _, _, attempts)| attempts).sum();
    let declined = calls.iter().filter(|(_, _, fate, _)| *fate == Fate::Declined).count();
    eprintln!("{} calls, {declined} declined spends, {attempts} attempts", calls.len());
}

/// All writers on one shared store.
pub async fn concurrent_writers_on_one_store_never_lose_or_invent_points(backend: &Backend) {
    hammer(vec![backend.store()]).await;
}

/// Writers split over two instances on the same data: two engine processes.
pub async fn concurrent_writers_on_two_instances_never_lose_or_invent_points(backend: &Backend) {
    let second = backend.another_instance().await.expect("a backend with several instances");
    hammer(vec![backend.store(), second]).await;
}
