//! Guarantees 1 and 2: an account is created once, and every write names the version it read
//! (compare-and-set); a refused commit writes nothing at all.

use std::sync::Arc;

use loyalty_store::{CommitOutcome, Conflict, Versioned};

use crate::backend::Backend;
use crate::support::*;

/// Two commits creating the same account race: exactly one applies, the other learns the account
/// exists now, and what is stored is the winner's, down to its ledger and receipt.
pub async fn account_is_created_once(backend: &Backend) {
    let store = backend.store();
    for round in 0..5 {
        let account_id = format!("a{round}");
        let new = fresh(&account_id);
        let left = change().earn(10).new_receipt(&format!("left-{round}")).build(&new);
        let right = change().earn(20).spend(3).new_receipt(&format!("right-{round}")).build(&new);
        let (left_outcome, right_outcome) = {
            let (one, two) = (Arc::clone(&store), Arc::clone(&store));
            let (left, right) = (left.clone(), right.clone());
            let (a, b) =
                tokio::join!(tokio::spawn(async move { one.commit(left).await }), tokio::spawn(async move { two.commit(right).await }));
            (a.expect("task").expect("left commit reaches the store"), b.expect("task").expect("right commit reaches the store"))
        };
        let applied = CommitOutcome::Applied { account_version: 1 };
        let lost = CommitOutcome::Conflict(Conflict::AccountVersion { actual: 1 });
        let (winner, loser) = match (&left_outcome, &right_outcome) {
            (l, r) if *l == applied && *r == lost => (&left, &right),
            (l, r) if *l == lost && *r == applied => (&right, &left),
            _ => panic!(
                "round {round}: expected one Applied and one AccountVersion {{ actual: 1 }}, got {left_outcome:?} and {right_outcome:?}"
            ),
        };
        let (stored, entries) = checked_ledger(store.as_ref(), &account_id).await;
        assert_eq!(stored, after(winner), "round {round}: the stored account is the winner's");
        assert_eq!(entries, winner.ledger, "round {round}: the stored ledger is the winner's");
        let winner_receipt = winner.receipt.as_ref().expect("winner has a receipt");
        let loser_receipt = loser.receipt.as_ref().expect("loser has a receipt");
        assert_eq!(
            store.receipt(PROGRAM, &winner_receipt.state.receipt_id).await.expect("read receipt"),
            Some(Versioned { version: 1, value: winner_receipt.state.clone() }),
            "round {round}: the winner's receipt"
        );
        assert_eq!(
            store.receipt(PROGRAM, &loser_receipt.state.receipt_id).await.expect("read receipt"),
            None,
            "round {round}: the loser's receipt was not written"
        );
    }
}

/// A commit naming a version that is no longer the stored one is refused with the actual version,
/// and none of its parts is written: no ledger entry, receipt, request, event, credit or identity.
pub async fn stale_account_version_is_refused_and_writes_nothing(backend: &Backend) {
    let store = backend.store();
    let first = change().earn(10).new_receipt("r1").claim(card("A-CARD")).build(&fresh("a"));
    let v1 = apply(store.as_ref(), &first).await;
    let second = change().earn(5).new_receipt("r2").build(&v1);
    let v2 = apply(store.as_ref(), &second).await;

    // Built on version 1, which is gone.
    let stale = change()
        .earn(7)
        .new_receipt("r-stale")
        .claim(card("STALE-CARD"))
        .claim(phone("+77000000001"))
        .request("req-stale")
        .credit("referral/r-stale/1", "referrer", 3)
        .build(&v1);
    assert_eq!(refused(store.as_ref(), &stale).await, Conflict::AccountVersion { actual: 2 });
    // Also a stale create of an existing account.
    let stale_create = change().earn(1).new_receipt("r-stale-create").claim(card("STALE-CREATE")).build(&fresh("a"));
    assert_eq!(refused(store.as_ref(), &stale_create).await, Conflict::AccountVersion { actual: 2 });

    let (stored, entries) = checked_ledger(store.as_ref(), "a").await;
    assert_eq!(stored, v2, "the account is as the last applied commit left it");
    assert_eq!(entries, [first.ledger.clone(), second.ledger.clone()].concat(), "no ledger entry of a refused commit");
    for receipt in ["r-stale", "r-stale-create"] {
        assert_eq!(store.receipt(PROGRAM, receipt).await.expect("read receipt"), None, "receipt {receipt} of a refused commit");
    }
    assert_eq!(store.request(PROGRAM, "req-stale").await.expect("read request"), None, "request of a refused commit");

    // Events and credits of the applied commits arrive; the refused commit's never do.
    let expected: Vec<_> = [events_in(&first), events_in(&second)].concat();
    let records = eventually(
        DELIVERY,
        "events of the applied commits",
        || outbox(store.as_ref(), 100),
        |records| events_of(&first_copies(records), "a").len() >= expected.len(),
    )
    .await;
    // Finish every relay and make what it wrote readable, so that a stray event would be seen now.
    backend.settle_relays().await;
    let records = [records, outbox(store.as_ref(), 100).await].concat();
    assert_eq!(events_of(&first_copies(&records), "a"), expected, "the outbox holds the applied commits' events only");
    let credits = store.pending_credits(PROGRAM, 100).await.expect("read credits");
    assert!(credits.is_empty(), "credits of a refused commit: {credits:?}");

    assert_eq!(store.identity(PROGRAM, &card("A-CARD")).await.expect("read identity"), Some("a".into()));
    for key in [card("STALE-CARD"), phone("+77000000001"), card("STALE-CREATE")] {
        assert_eq!(
            store.identity(PROGRAM, &key).await.expect("read identity"),
            None,
            "identity {key:?} claimed by a refused commit must stay unbound"
        );
    }
}
