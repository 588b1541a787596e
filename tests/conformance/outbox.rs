//! Guarantees 10 and 11: events and credits exist exactly when their commit does. Events are read
//! from the program's outbox in commit order per account, each once after dropping repeats by
//! event ID (ScyllaDB relays at least once, and shows an event only `relay_settle` after its relay);
//! credits wait in `pending_credits` until deleted.

use std::collections::HashMap;

use loyalty_core::events::PendingCredit;
use loyalty_store::{Conflict, OutboxRecord};

use crate::backend::Backend;
use crate::support::*;

/// Commits on two accounts, interleaved, one with several events and one refused: every applied
/// commit's events arrive, in commit order per account, none of the refused one's; and paging with
/// small pages returns every stored record exactly once.
pub async fn outbox_carries_events_of_applied_commits_once_in_commit_order(backend: &Backend) {
    let store = backend.store();
    let mut expected: HashMap<&str, Vec<_>> = HashMap::new();
    let a1 = change().earn(10).new_receipt("a-r1").build(&fresh("a"));
    let b1 = change().earn(20).new_receipt("b-r1").build(&fresh("b"));
    let mut a = apply(store.as_ref(), &a1).await;
    let mut b = apply(store.as_ref(), &b1).await;
    expected.entry("a").or_default().extend(events_in(&a1));
    expected.entry("b").or_default().extend(events_in(&b1));
    // Several events in one commit keep their order.
    let a2 = change().earn(1).earn(2).earn(3).new_receipt("a-r2").build(&a);
    let stale = change().earn(99).new_receipt("bad").build(&a);
    a = apply(store.as_ref(), &a2).await;
    expected.entry("a").or_default().extend(events_in(&a2));
    assert_eq!(refused(store.as_ref(), &stale).await, Conflict::AccountVersion { actual: 2 });
    for round in 3..=12 {
        let next_a = change().earn(round).new_receipt(&format!("a-r{round}")).build(&a);
        a = apply(store.as_ref(), &next_a).await;
        expected.entry("a").or_default().extend(events_in(&next_a));
        if round % 3 == 0 {
            let next_b = change().earn(100 + round).new_receipt(&format!("b-r{round}")).build(&b);
            b = apply(store.as_ref(), &next_b).await;
            expected.entry("b").or_default().extend(events_in(&next_b));
        }
    }
    let total: usize = expected.values().map(Vec::len).sum();

    eventually(DELIVERY, "every applied commit's events", || outbox(store.as_ref(), 1_000), |records| first_copies(records).len() >= total)
        .await;
    // Finish every relay and make what it wrote readable, so that a late (duplicate or stray) event
    // would be seen now.
    backend.settle_relays().await;
    let records = outbox(store.as_ref(), 1_000).await;
    let firsts = first_copies(&records);
    for account_id in ["a", "b"] {
        assert_eq!(events_of(&firsts, account_id), expected[account_id], "account {account_id}: its events, in commit order, once each");
    }
    assert_eq!(firsts.len(), total, "no event of the refused commit or of anything else: {firsts:#?}");
    assert!(firsts.iter().all(|record| record.event.receipt_id.as_deref() != Some("bad")), "the refused commit's event");
    if !backend.is_scylla() {
        assert_eq!(records.len(), firsts.len(), "the embedded outbox has no repeats");
        assert!(records.windows(2).all(|pair| pair[0].seq < pair[1].seq), "embedded seqs increase");
    }

    // Paging: small pages, each after the last seq of the previous, return the same records.
    let horizon = records.last().map_or(0, |record| record.seq);
    let keys =
        |records: &[OutboxRecord]| records.iter().filter(|r| r.seq <= horizon).map(|r| (r.seq, r.event_id.clone())).collect::<Vec<_>>();
    for limit in [1, 2, 3, 7] {
        let paged = outbox(store.as_ref(), limit).await;
        assert_eq!(keys(&paged), keys(&records), "pages of {limit}: every record exactly once, in order");
        let page = store.outbox_page(PROGRAM, 0, limit).await.expect("outbox page");
        assert!(!page.is_empty(), "a first page of {limit}");
        if page.len() > limit {
            let last = page.last().map(|record| record.seq);
            assert!(page[limit - 1..].iter().all(|record| Some(record.seq) == last), "a page runs past its limit only to end a seq");
        }
    }
    assert!(store.outbox_page(PROGRAM, horizon, 10).await.expect("outbox page").is_empty(), "nothing after the last record");
    assert!(store.outbox_page("other", 0, 10).await.expect("outbox page").is_empty(), "programs are apart");
}

/// Credits of an applied commit wait in `pending_credits` until deleted; a refused commit's never
/// appear; deleting an unknown credit is fine.
pub async fn credits_are_kept_until_deleted(backend: &Backend) {
    let store = backend.store();
    let owed = change()
        .earn(100)
        .new_receipt("r1")
        .credit("referral/r1/1", "referrer-1", 5)
        .credit("referral/r1/2", "referrer-2", 2)
        .build(&fresh("a"));
    let v1 = apply(store.as_ref(), &owed).await;
    let stale = change().earn(7).new_receipt("r-stale").credit("referral/r-stale/1", "referrer-1", 9).build(&fresh("a"));
    assert_eq!(refused(store.as_ref(), &stale).await, Conflict::AccountVersion { actual: 1 });
    let more = change().earn(30).new_receipt("r2").credit("referral/r2/1", "referrer-1", 1).build(&v1);
    apply(store.as_ref(), &more).await;

    let sorted = |mut credits: Vec<PendingCredit>| {
        credits.sort_by(|x, y| x.credit_id.cmp(&y.credit_id));
        credits
    };
    let mut expected = sorted([owed.credits.clone(), more.credits.clone()].concat());
    let credits = eventually(
        DELIVERY,
        "the applied commits' credits",
        || store.pending_credits(PROGRAM, 100),
        |credits| credits.as_ref().is_ok_and(|credits| credits.len() >= expected.len()),
    )
    .await
    .expect("read credits");
    // Finish every relay, so that a late credit would be there now.
    backend.settle_relays().await;
    assert_eq!(sorted(credits), expected, "exactly the applied commits' credits, as written");
    assert_eq!(sorted(store.pending_credits(PROGRAM, 100).await.expect("read credits")), expected, "and no late ones");
    assert_eq!(store.pending_credits(PROGRAM, 1).await.expect("read credits").len(), 1, "limit");
    assert!(store.pending_credits("other", 100).await.expect("read credits").is_empty(), "programs are apart");

    store.delete_credit(PROGRAM, "referral/r1/1").await.expect("delete a credit");
    expected.retain(|credit| credit.credit_id != "referral/r1/1");
    assert_eq!(sorted(store.pending_credits(PROGRAM, 100).await.expect("read credits")), expected, "a deleted credit is gone");
    store.delete_credit(PROGRAM, "referral/r1/1").await.expect("delete it again");
    store.delete_credit(PROGRAM, "referral/unknown/1").await.expect("delete an unknown credit");
    assert_eq!(sorted(store.pending_credits(PROGRAM, 100).await.expect("read credits")), expected, "the others stay");
    for credit in expected.clone() {
        store.delete_credit(PROGRAM, &credit.credit_id).await.expect("delete a credit");
    }
    assert!(store.pending_credits(PROGRAM, 100).await.expect("read credits").is_empty(), "all deleted");
}
