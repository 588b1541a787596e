//! Merging an anonymous card's account into a registered customer's. A customer who enrolled by
//! phone turns up with an old card that earned points before: everything the card's account holds
//! moves to the customer's, once.
//!
//! A commit writes one account, so a merge is two: [`merge_out`] empties the card's account (a
//! `Merge` entry per bucket, each with its terms; its debt; its holds must be closed) and records
//! the whole as a pending credit owed to the customer's account, in the same commit; [`merge_in`]
//! applies that credit there once (keyed by the merge), each bucket keeping its own pending period,
//! expiry and certificate terms, with tier progress, budget counters, purchase counts and RFM months added.
//! Until then the points are in the pending credit, durably: nothing is lost or counted twice.
//!
//! Afterwards the card's account is a forwarding shell (`merged_into`): its card leads to the
//! customer, and what a later refund or reversal of one of its old receipts gives back or takes
//! back is owed to the customer's account ([`crate::txn::Txn`] redirects it).

use rust_decimal::Decimal;

use crate::events::PendingCredit;
pub use crate::events::{AccountTransfer, MERGE_RULE_ID};
pub use crate::outcome::MergeOutcome;
use crate::rejection::Rejection;
use crate::txn::Txn;

/// Empties the card's account in `txn` into a transfer owed to `target` (the customer's account),
/// keyed `transfer_id`. The card's account must be anonymous, not merged before, with no active
/// hold (a checkout in progress on the card finishes first).
pub fn merge_out(txn: &mut Txn<'_>, target: &str, transfer_id: &str) -> Result<MergeOutcome, Rejection> {
    let now = txn.now();
    let account = txn.account();
    if account.registered {
        return Err(Rejection::IdentifierTaken { kind: "card" });
    }
    if account.merged_into.is_some() {
        return Err(Rejection::invalid("card_number", "this card was already merged into a customer's account"));
    }
    // Anonymous cards cannot spend, so cannot hold; a guard all the same, as a hold's receipt
    // belongs to this account and could not be captured from another.
    if account.holds.iter().any(|hold| hold.is_active(now)) {
        return Err(Rejection::invalid("card_number", "a checkout on this card holds points: finish or cancel it first"));
    }
    let source = account.account_id.clone();
    let reason = format!("merged into account {target}");
    let (buckets, debt) = txn.transfer_out(&reason);
    let account = txn.account_mut();
    account.holds.clear();
    account.merged_into = Some(target.to_owned());
    let transfer = AccountTransfer {
        from_account: source.clone(),
        debt,
        months: std::mem::take(&mut account.tier_progress.months),
        counters: std::mem::take(&mut account.counters),
        purchases: std::mem::take(&mut account.purchases),
        last_purchase_at: account.last_purchase_at,
        identities: account.identities.clone(),
        buckets,
        rfm_months: std::mem::take(&mut account.rfm_months),
    };
    let points = transfer.buckets.iter().map(|bucket| bucket.remaining).sum::<Decimal>() - debt;
    let actor = txn.origin().actor.clone();
    txn.account_mut().note(now, &actor, format!("merged into account {target} ({points} points)"));
    let outcome = MergeOutcome {
        tx_id: txn.tx_id().to_owned(),
        account_id: target.to_owned(),
        merged_account_id: source.clone(),
        points,
        buckets: u32::try_from(transfer.buckets.len()).unwrap_or(u32::MAX),
    };
    txn.owe(PendingCredit {
        credit_id: transfer_id.to_owned(),
        account_id: target.to_owned(),
        points,
        rule_id: MERGE_RULE_ID.to_owned(),
        reason: format!("merged from account {source}"),
        transfer: Some(Box::new(transfer)),
    });
    Ok(outcome)
}

/// Applies a merge's transfer to the customer's account in `txn`.
pub fn merge_in(txn: &mut Txn<'_>, transfer: &AccountTransfer) {
    let now = txn.now();
    txn.transfer_in(&transfer.buckets, transfer.debt, &format!("merged from account {}", transfer.from_account));
    let account = txn.account_mut();
    for month in &transfer.months {
        match account.tier_progress.months.iter_mut().find(|mine| mine.month == month.month) {
            Some(mine) => mine.amount += month.amount,
            None => account.tier_progress.months.push(month.clone()),
        }
    }
    account.tier_progress.months.sort_by_key(|month| month.month);
    for counter in &transfer.counters {
        match account.counters.iter_mut().find(|mine| mine.rule_id == counter.rule_id && mine.period == counter.period) {
            Some(mine) => {
                mine.points += counter.points;
                mine.uses = mine.uses.saturating_add(counter.uses);
            }
            None => account.counters.push(counter.clone()),
        }
    }
    account.purchases = account.purchases.saturating_add(transfer.purchases);
    account.last_purchase_at = account.last_purchase_at.max(transfer.last_purchase_at);
    crate::rfm::merge_months(account, &transfer.rfm_months);
    for key in &transfer.identities {
        if !account.identities.contains(key) {
            account.identities.push(key.clone());
        }
    }
    let actor = txn.origin().actor.clone();
    txn.account_mut().note(now, &actor, format!("account {} merged in", transfer.from_account));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;
    use crate::account::AccountState;
    use crate::program::ProgramPolicy;
    use chrono::DateTime;

    /// Debt that moves with a merge is paid from the customer's points first: debt never stands
    /// beside points that could pay it.
    #[test]
    fn debt_moved_by_a_merge_comes_off_the_customers_points_first() {
        let program = ProgramPolicy::with_defaults("p");
        let now = DateTime::UNIX_EPOCH + chrono::Duration::days(10);
        let mut card = AccountState::new("card".into(), false, DateTime::UNIX_EPOCH);
        card.debt = Decimal::from(300);
        card.ledger_sum = Decimal::from(-300);
        let mut txn = Txn::begin(&program, &card, now, "tx1".into(), Origin::default());
        let outcome = merge_out(&mut txn, "customer", "merge/m1").expect("merged out");
        assert_eq!(outcome.points, Decimal::from(-300));
        let finished = txn.finish_all().expect("invariants hold on the card's account");
        assert_eq!((finished.account.debt, finished.account.ledger_sum), (Decimal::ZERO, Decimal::ZERO));
        let transfer = finished.credits[0].transfer.clone().expect("the transfer");

        let mut customer = AccountState::new("customer".into(), true, DateTime::UNIX_EPOCH);
        let mut credit = Txn::begin(&program, &customer, now, "tx0".into(), Origin::default());
        credit.bonus(
            crate::ledger::EntryKind::Bonus,
            Decimal::from(500),
            crate::txn::Posting { receipt_id: None, refund_id: None },
            "gift".into(),
            Vec::new(),
        );
        customer = credit.finish().expect("credited").0;
        let mut txn = Txn::begin(&program, &customer, now, "tx2".into(), Origin::default());
        merge_in(&mut txn, &transfer);
        let (customer, entries) = txn.finish().expect("invariants hold on the customer's account");
        let balance = customer.balance_at(now);
        assert_eq!((balance.available, customer.debt, customer.ledger_sum), (Decimal::from(200), Decimal::ZERO, Decimal::from(200)));
        assert_eq!(
            entries.iter().map(|entry| (entry.kind, entry.amount)).collect::<Vec<_>>(),
            [(crate::ledger::EntryKind::Merge, Decimal::from(-300))]
        );
    }

    /// The card's purchases count toward the customer's RFM scores once merged, month by month.
    #[test]
    fn a_merge_adds_the_cards_rfm_months_to_the_customers() {
        use crate::account::RfmMonth;
        let program = ProgramPolicy::with_defaults("p");
        let now = DateTime::UNIX_EPOCH + chrono::Duration::days(10);
        let month = |month, purchases, paid: i64| RfmMonth { month, purchases, paid: Decimal::from(paid) };
        let mut card = AccountState::new("card".into(), false, DateTime::UNIX_EPOCH);
        card.rfm_months = vec![month(24_300, 2, 900), month(24_301, 1, 100)];
        let mut txn = Txn::begin(&program, &card, now, "tx1".into(), Origin::default());
        merge_out(&mut txn, "customer", "merge/m1").expect("merged out");
        let finished = txn.finish_all().expect("invariants");
        assert!(finished.account.rfm_months.is_empty(), "the emptied account keeps no purchases");
        let transfer = finished.credits[0].transfer.clone().expect("the transfer");

        let mut customer = AccountState::new("customer".into(), true, DateTime::UNIX_EPOCH);
        customer.rfm_months = vec![month(24_301, 3, 600), month(24_302, 1, 50)];
        let mut txn = Txn::begin(&program, &customer, now, "tx2".into(), Origin::default());
        merge_in(&mut txn, &transfer);
        let (customer, _) = txn.finish().expect("invariants");
        assert_eq!(customer.rfm_months, [month(24_300, 2, 900), month(24_301, 4, 700), month(24_302, 1, 50)]);
    }
}
