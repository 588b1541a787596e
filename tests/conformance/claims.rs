//! Guarantees 3 to 5: what is unique across accounts (a receipt ID, an identifier, an enrolment
//! request ID) is claimed once, for one account, and a refused claim writes nothing.

use loyalty_store::{Conflict, Versioned};

use crate::backend::Backend;
use crate::support::*;

/// A receipt is claimed by its first write (expected version 0), then written only at the version
/// read; a stale receipt version is refused, and another account cannot claim the ID.
pub async fn receipt_is_claimed_once_and_versioned(backend: &Backend) {
    let store = backend.store();
    let first = change().earn(10).new_receipt("r1").build(&fresh("a"));
    let v1 = apply(store.as_ref(), &first).await;
    let r1_v1 = store.receipt(PROGRAM, "r1").await.expect("read receipt").expect("receipt r1 was written");
    assert_eq!(r1_v1, Versioned { version: 1, value: first.receipt.as_ref().expect("receipt").state.clone() });

    // A second call on the receipt: expected version 1.
    let second = change().spend(4).on_receipt(&r1_v1).build(&v1);
    let v2 = apply(store.as_ref(), &second).await;
    let r1_v2 = store.receipt(PROGRAM, "r1").await.expect("read receipt").expect("receipt r1");
    assert_eq!(r1_v2, Versioned { version: 2, value: second.receipt.as_ref().expect("receipt").state.clone() });

    // The right account version, a stale receipt version.
    let stale = change().earn(1).on_receipt(&r1_v1).build(&v2);
    assert_eq!(refused(store.as_ref(), &stale).await, Conflict::ReceiptVersion { actual: 2 });
    // Claiming it again, as if it were new.
    let again = change().earn(1).new_receipt("r1").build(&v2);
    assert_eq!(refused(store.as_ref(), &again).await, Conflict::ReceiptVersion { actual: 2 });

    // Another account claims the same receipt ID.
    let theft = change().earn(3).new_receipt("r1").claim(card("B-CARD")).build(&fresh("b"));
    match refused(store.as_ref(), &theft).await {
        Conflict::ReceiptVersion { actual: 2 } => {}
        Conflict::ReceiptTaken { account_id } if backend.is_scylla() => assert_eq!(account_id, "a", "ReceiptTaken names the owner"),
        other => panic!("another account claiming r1: {other:?}"),
    }

    let (stored, entries) = checked_ledger(store.as_ref(), "a").await;
    assert_eq!(stored, v2, "refused receipt writes leave the account alone");
    assert_eq!(entries, [first.ledger.clone(), second.ledger.clone()].concat());
    assert_eq!(store.receipt(PROGRAM, "r1").await.expect("read receipt"), Some(r1_v2), "r1 is still a's, at version 2");
    assert_eq!(account(store.as_ref(), "b").await, None, "b's refused commit created nothing");
    assert!(whole_ledger(store.as_ref(), "b").await.is_empty(), "b has no ledger");
    assert_eq!(store.identity(PROGRAM, &card("B-CARD")).await.expect("read identity"), None, "b's card was not bound");
}

/// A receipt belongs to the account that claimed it: another account writing it at its current
/// version (not a claim) must not replace it either.
pub async fn receipt_of_another_account_is_never_overwritten(backend: &Backend) {
    let store = backend.store();
    let first = change().earn(10).new_receipt("r1").build(&fresh("a"));
    apply(store.as_ref(), &first).await;
    let owned = store.receipt(PROGRAM, "r1").await.expect("read receipt").expect("receipt r1");

    // b writes r1 naming its current version 1, as if it had read it.
    let mut hijack = change().earn(2).on_receipt(&owned).build(&fresh("b"));
    if let Some(receipt) = hijack.receipt.as_mut() {
        receipt.state.account_id = "b".into();
    }
    match store.commit(hijack).await.expect("commit reaches the store") {
        loyalty_store::CommitOutcome::Conflict(_) => {}
        applied => panic!("b wrote a's receipt r1: {applied:?}"),
    }
    assert_eq!(store.receipt(PROGRAM, "r1").await.expect("read receipt"), Some(owned), "r1 is still a's");
    assert_eq!(account(store.as_ref(), "b").await, None, "b's refused commit created nothing");
}

/// An identifier bound to one account cannot be bound to another; the refused commit writes
/// nothing (not even its other claims); the owner may claim it again.
pub async fn identity_is_bound_to_one_account(backend: &Backend) {
    let store = backend.store();
    let a_created = change().earn(10).new_receipt("ra").claim(card("X")).claim(phone("+77010000001")).build(&fresh("a"));
    let a1 = apply(store.as_ref(), &a_created).await;
    assert_eq!(store.identity(PROGRAM, &card("X")).await.expect("read identity"), Some("a".into()));
    assert_eq!(store.identity(PROGRAM, &phone("+77010000001")).await.expect("read identity"), Some("a".into()));
    assert_eq!(store.identity(PROGRAM, &card("NOBODY")).await.expect("read identity"), None);

    // b claims a fresh card Y and a's card X in one commit.
    let b_steals = change().earn(5).new_receipt("rb").claim(card("Y")).claim(card("X")).request("req-b").build(&fresh("b"));
    assert_eq!(refused(store.as_ref(), &b_steals).await, Conflict::IdentityTaken { key: card("X"), account_id: "a".into() });
    assert_eq!(account(store.as_ref(), "b").await, None, "b was not created");
    assert_eq!(store.receipt(PROGRAM, "rb").await.expect("read receipt"), None, "b's receipt was not written");
    assert_eq!(store.request(PROGRAM, "req-b").await.expect("read request"), None, "b's request was not written");
    assert_eq!(store.identity(PROGRAM, &card("Y")).await.expect("read identity"), None, "b's other claim was not bound");
    assert_eq!(store.identity(PROGRAM, &card("X")).await.expect("read identity"), Some("a".into()), "X stays a's");

    // a claims X again (a retry, or a commit that lists it once more): fine.
    let a_again = change().earn(1).new_receipt("ra2").claim(card("X")).build(&a1);
    apply(store.as_ref(), &a_again).await;
    assert_eq!(store.identity(PROGRAM, &card("X")).await.expect("read identity"), Some("a".into()));

    // b is created later by a commit that does not claim Y: Y must still be unbound, since the
    // only commit that claimed it was refused.
    let b_created = change().earn(2).new_receipt("rb2").claim(card("Z")).build(&fresh("b"));
    apply(store.as_ref(), &b_created).await;
    assert_eq!(store.identity(PROGRAM, &card("Z")).await.expect("read identity"), Some("b".into()));
    assert_eq!(
        store.identity(PROGRAM, &card("Y")).await.expect("read identity"),
        None,
        "card Y was claimed only by b's refused commit, yet it resolves to b once b exists"
    );
}

/// An enrolment's request ID is claimed once: a second commit with it is refused with
/// RequestTaken, whichever account it is for, and `request()` keeps returning the first answer.
pub async fn enrolment_request_is_claimed_once(backend: &Backend) {
    let store = backend.store();
    let enrol = change().earn(50).claim(phone("+77020000001")).request("req-1").build(&fresh("a"));
    let a1 = apply(store.as_ref(), &enrol).await;
    let first_answer = enrol.request.as_ref().expect("request").record.clone();
    assert_eq!(store.request(PROGRAM, "req-1").await.expect("read request"), Some(first_answer.clone()));
    assert_eq!(store.request(PROGRAM, "req-unknown").await.expect("read request"), None);

    // The same request ID for another account.
    let other = change().earn(50).claim(phone("+77020000002")).request("req-1").build(&fresh("b"));
    assert_eq!(refused(store.as_ref(), &other).await, Conflict::RequestTaken);
    assert_eq!(account(store.as_ref(), "b").await, None, "b was not created");
    assert_eq!(store.identity(PROGRAM, &phone("+77020000002")).await.expect("read identity"), None, "b's phone was not bound");
    assert_eq!(store.request(PROGRAM, "req-1").await.expect("read request"), Some(first_answer.clone()));

    // The same request ID again for the same account, at its current version.
    let repeat = change().earn(7).request("req-1").build(&a1);
    assert_eq!(refused(store.as_ref(), &repeat).await, Conflict::RequestTaken, "a request ID is claimed once, also by its own account");
    assert_eq!(store.request(PROGRAM, "req-1").await.expect("read request"), Some(first_answer), "the first answer stays");
    let (stored, _) = checked_ledger(store.as_ref(), "a").await;
    assert_eq!(stored, a1);
}

/// What a refused commit claimed (ScyllaDB claims before the batch) can be claimed by another
/// account; the refused account can then never use it, even at the right version.
pub async fn claims_of_a_refused_commit_go_to_the_next_claimant_for_good(backend: &Backend) {
    let store = backend.store();
    let a1 = apply(store.as_ref(), &change().earn(10).new_receipt("ra").build(&fresh("a"))).await;
    let a2 = apply(store.as_ref(), &change().earn(1).build(&a1)).await;
    let b1 = apply(store.as_ref(), &change().earn(10).new_receipt("rb").build(&fresh("b"))).await;
    // a's commit names a stale version: refused after (on ScyllaDB) claiming card Z and receipt rz.
    let refused_commit = change().earn(1).new_receipt("rz").claim(card("Z")).build(&a1);
    assert!(matches!(refused(store.as_ref(), &refused_commit).await, Conflict::AccountVersion { .. }));
    assert_eq!(store.identity(PROGRAM, &card("Z")).await.expect("read identity"), None, "a refused claim binds nothing");

    // b claims both: granted.
    let b_takes = change().earn(2).new_receipt("rz").claim(card("Z")).build(&b1);
    let b2 = apply(store.as_ref(), &b_takes).await;
    assert_eq!(store.identity(PROGRAM, &card("Z")).await.expect("read identity"), Some("b".into()));
    assert_eq!(store.receipt(PROGRAM, "rz").await.expect("read receipt").map(|receipt| receipt.value.account_id), Some("b".into()));

    // a, at its right version now, cannot use them any more.
    let too_late = change().earn(1).claim(card("Z")).build(&a2);
    assert_eq!(refused(store.as_ref(), &too_late).await, Conflict::IdentityTaken { key: card("Z"), account_id: "b".into() });
    let receipt_too_late = change().earn(1).new_receipt("rz").build(&a2);
    match refused(store.as_ref(), &receipt_too_late).await {
        Conflict::ReceiptVersion { actual: 1 } => {}
        Conflict::ReceiptTaken { account_id } if backend.is_scylla() => assert_eq!(account_id, "b"),
        other => panic!("a claiming rz after b: {other:?}"),
    }
    assert_eq!(checked_ledger(store.as_ref(), "a").await.0, a2, "a unchanged");
    assert_eq!(checked_ledger(store.as_ref(), "b").await.0, b2, "b as committed");
}

/// An identifier released by its owner (erasure) resolves to nothing and may be claimed by another
/// account; a release named by an account that does not own the identifier changes nothing.
pub async fn released_identity_resolves_to_nothing_and_may_be_claimed_anew(backend: &Backend) {
    let store = backend.store();
    let owner = |key| {
        let store = backend.store();
        async move { store.identity(PROGRAM, &key).await.expect("read identity") }
    };
    let a1 =
        apply(store.as_ref(), &change().earn(10).new_receipt("ra").claim(phone("+77010000009")).claim(card("A")).build(&fresh("a"))).await;
    assert_eq!(owner(phone("+77010000009")).await, Some("a".into()));

    // b names a's phone as released: not b's to give up.
    apply(store.as_ref(), &change().earn(1).new_receipt("rb").release(phone("+77010000009")).build(&fresh("b"))).await;
    assert_eq!(owner(phone("+77010000009")).await, Some("a".into()), "a release by a non-owner changes nothing");

    // a releases its phone (erasure); its card stays bound.
    let a2 = apply(store.as_ref(), &change().earn(1).new_receipt("ra2").release(phone("+77010000009")).build(&a1)).await;
    assert_eq!(owner(phone("+77010000009")).await, None, "a released phone resolves to nothing");
    assert_eq!(owner(card("A")).await, Some("a".into()), "identifiers not released stay bound");
    assert!(!a2.value.identities.contains(&phone("+77010000009")));

    // The number registers again, for a new customer.
    apply(store.as_ref(), &change().earn(1).new_receipt("rc").claim(phone("+77010000009")).build(&fresh("c"))).await;
    assert_eq!(owner(phone("+77010000009")).await, Some("c".into()), "the released number belongs to its new owner");
    let (stored_a, _) = checked_ledger(store.as_ref(), "a").await;
    assert_eq!(stored_a, a2, "a keeps its account and ledger");
}

/// Eight new accounts race for one receipt ID and one card at once, on two store instances where
/// the backend has them (two engines): at most one commit applies, and while no commit holds the
/// claims the racers are refused (never two winners); retried as the engine retries a refused
/// call, exactly one account ends up with both, and every lookup names it.
pub async fn racing_claimants_leave_the_claim_to_exactly_one(backend: &Backend) {
    let second = backend.another_instance().await.unwrap_or_else(|| backend.store());
    let stores = [backend.store(), second];
    let race = |round: usize| {
        let stores = stores.clone();
        async move {
            let racers = (0..8).map(|index| {
                let store = std::sync::Arc::clone(&stores[index % 2]);
                tokio::spawn(async move {
                    let commit = change().earn(1).new_receipt("contested").claim(card("CONTESTED")).build(&fresh(&format!("racer{index}")));
                    (index, store.commit(commit).await.map_err(|error| format!("round {round}, racer {index}: {error}")))
                })
            });
            let mut winners = Vec::new();
            for racer in racers {
                let (index, outcome) = racer.await.expect("racer task");
                match outcome {
                    Ok(loyalty_store::CommitOutcome::Applied { .. }) => winners.push(format!("racer{index}")),
                    Ok(loyalty_store::CommitOutcome::Conflict(_)) => {}
                    // Unknown outcome (the engine would answer UNAVAILABLE): the lookups below tell.
                    Err(error) => eprintln!("{error}"),
                }
            }
            winners
        }
    };
    let mut winners = Vec::new();
    for round in 0..5 {
        winners.extend(race(round).await);
        assert!(winners.len() <= 1, "two accounts won one receipt ID: {winners:?}");
        if stores[0].identity(PROGRAM, &card("CONTESTED")).await.expect("read identity").is_some() {
            break;
        }
    }
    let owner = stores[0].identity(PROGRAM, &card("CONTESTED")).await.expect("read identity");
    let winner = &owner.expect("somebody won the card in five rounds");
    assert!(winners.iter().all(|acknowledged| acknowledged == winner), "acknowledged {winners:?}, the card is {winner}'s");
    for store in &stores {
        assert_eq!(store.identity(PROGRAM, &card("CONTESTED")).await.expect("read identity"), Some(winner.clone()));
        let receipt = store.receipt(PROGRAM, "contested").await.expect("read receipt").expect("the winner's receipt");
        assert_eq!(&receipt.value.account_id, winner);
    }
    for index in 0..8 {
        let racer = format!("racer{index}");
        if &racer != winner {
            assert_eq!(account(stores[0].as_ref(), &racer).await, None, "{racer} lost and was not created");
        }
    }
    // A latecomer finds the claims held.
    let late = change().earn(1).new_receipt("contested").claim(card("CONTESTED")).build(&fresh("late"));
    match refused(stores[1].as_ref(), &late).await {
        Conflict::IdentityTaken { key, account_id } => assert_eq!((key, &account_id), (card("CONTESTED"), winner)),
        Conflict::ReceiptVersion { actual: 1 } if !backend.is_scylla() => {}
        other => panic!("a latecomer claiming held claims: {other:?}"),
    }
}

/// Two new accounts race for the same phone and card at once, twenty times over (a double-submitted
/// enrolment under two request IDs is this race), each retrying a refused commit as the engine
/// does: every time exactly one of them ends up with both identifiers, and the other is refused.
/// Never neither: two commits must not fence each other off, one on each identifier, which would
/// leave both identifiers to nobody for good.
pub async fn two_accounts_racing_for_two_identifiers_leave_both_to_one(backend: &Backend) {
    let second = backend.another_instance().await.unwrap_or_else(|| backend.store());
    let stores = [backend.store(), second];
    for round in 0..20 {
        let phone_key = phone(&format!("+7702{round:07}"));
        let card_key = card(&format!("RACE-{round}"));
        let racers = ["a", "b"].into_iter().enumerate().map(|(index, name)| {
            let store = std::sync::Arc::clone(&stores[index]);
            let (first, then) = if index == 0 { (phone_key.clone(), card_key.clone()) } else { (card_key.clone(), phone_key.clone()) };
            let account = format!("{name}{round}");
            tokio::spawn(async move {
                for _attempt in 0..8 {
                    let commit = change()
                        .earn(1)
                        .new_receipt(&format!("r-{account}"))
                        .claim(first.clone())
                        .claim(then.clone())
                        .build(&fresh(&account));
                    match store.commit(commit).await {
                        Ok(loyalty_store::CommitOutcome::Applied { .. }) => return Some(account),
                        Ok(loyalty_store::CommitOutcome::Conflict(Conflict::IdentityTaken { account_id, .. })) if account_id != account => {
                            // Refused in favour of another account: final once that account owns it.
                            if store.identity(PROGRAM, &first).await.expect("read").is_some_and(|owner| owner != account) {
                                return None;
                            }
                        }
                        Ok(loyalty_store::CommitOutcome::Conflict(_)) => {}
                        // The engine answers a store error UNAVAILABLE, and the till sends the call again
                        // (on a real cluster, rival Paxos rounds on one partition can time each other out).
                        Err(error) => eprintln!("{account}: {error}; sent again"),
                    }
                    // A till's pause before it sends the call again.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                None
            })
        });
        let mut winners = Vec::new();
        for racer in racers.collect::<Vec<_>>() {
            winners.extend(racer.await.expect("racer task"));
        }
        let [winner] = winners.as_slice() else { panic!("round {round}: winners {winners:?} (none means both identifiers are lost)") };
        assert_eq!(stores[0].identity(PROGRAM, &phone_key).await.expect("read"), Some(winner.clone()), "round {round}: the phone");
        assert_eq!(stores[1].identity(PROGRAM, &card_key).await.expect("read"), Some(winner.clone()), "round {round}: the card");
    }
}
