//! A registered customer's lost card, replaced at the till.
//!
//! The new card is bound to the same account, so points, tier, certificates and history follow it
//! with nothing to move. The old card stays bound but blocked: scanned at a till it answers
//! `CARD_BLOCKED` with when it was replaced, rather than "not found" (which a till would take for a
//! new anonymous card, and start another account on). An unregistered card cannot be replaced: its
//! holder has no proof it is theirs. A card sold for a fee credits the fee as points at once.

use rust_decimal::Decimal;
use serde::Serialize;

pub use crate::account::BlockedCard;
use crate::identity::{IdentityKey, IdentityKind};
use crate::ledger::EntryKind;
pub use crate::outcome::ReplaceCardOutcome;
use crate::rejection::Rejection;
use crate::txn::{Posting, Txn};

/// A replacement, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplaceCardCmd {
    /// Its idempotency key.
    pub request_id: String,
    pub new_card: String,
    /// The card to block; `None` blocks every other card of the customer.
    pub old_card: Option<String>,
    /// What the customer paid for the new card; credited as points (rounded down).
    pub card_fee: Decimal,
    /// How the customer was identified, and their one-time code: a customer named by phone proves
    /// it is them as for spending (program policy), or anyone who knows the number could bind
    /// their own card to the account. Not part of the call's fingerprint (codes are one-use).
    #[serde(skip)]
    pub presence: crate::presence::PresenceProof,
}

/// Binds `cmd.new_card` to the account in `txn` and blocks the old card (or every other card),
/// crediting the card's fee. The caller claims the new card for the account in the same commit.
pub fn replace_card(
    txn: &mut Txn<'_>,
    policy: &crate::presence::PresencePolicy,
    cmd: &ReplaceCardCmd,
    points_of_fee: Decimal,
) -> Result<ReplaceCardOutcome, Rejection> {
    let now = txn.now();
    if !txn.account().registered {
        return Err(Rejection::CardNotRegistered);
    }
    // A counted failed attempt changes the account: the caller stores it although the call is
    // refused (`Rejection::records_attempt`).
    txn.account_mut().presence.verify(policy, &cmd.presence, now)?;
    let account = txn.account();
    let is_card = |key: &IdentityKey, number: &str| key.kind == IdentityKind::Card && key.value == number;
    if let Some(blocked) = account.blocked_card(&cmd.new_card) {
        return Err(Rejection::CardBlocked { replaced_at: blocked.blocked_at });
    }
    if account.identities.iter().any(|key| is_card(key, &cmd.new_card)) {
        return Err(Rejection::invalid("new_card_number", "is already this customer's card"));
    }
    let to_block: Vec<String> = match &cmd.old_card {
        Some(old) => {
            if let Some(blocked) = account.blocked_card(old) {
                return Err(Rejection::CardBlocked { replaced_at: blocked.blocked_at });
            }
            if !account.identities.iter().any(|key| is_card(key, old)) {
                return Err(Rejection::invalid("old_card_number", "is not a card of this customer"));
            }
            vec![old.clone()]
        }
        None => account
            .identities
            .iter()
            .filter(|key| key.kind == IdentityKind::Card && account.blocked_card(&key.value).is_none())
            .map(|key| key.value.clone())
            .collect(),
    };
    let account = txn.account_mut();
    account.identities.push(IdentityKey { kind: IdentityKind::Card, value: cmd.new_card.clone() });
    for number in &to_block {
        account.blocked_cards.push(BlockedCard { number: number.clone(), blocked_at: now, replaced_by: cmd.new_card.clone() });
    }
    let what = format!("card {} replaced by {}", masked(&to_block), masked(std::slice::from_ref(&cmd.new_card)));
    let actor = txn.origin().actor.clone();
    txn.account_mut().note(now, &actor, what);
    credit_card_fee(txn, points_of_fee);
    Ok(ReplaceCardOutcome {
        tx_id: txn.tx_id().to_owned(),
        account_id: txn.account().account_id.clone(),
        card_number: cmd.new_card.clone(),
        blocked: to_block,
        fee_points: points_of_fee,
        balance: txn.account().balance_at(now),
    })
}

/// Credits what the customer paid for a card (at enrolment or on a replacement) as points,
/// spendable at once; nothing for a free card.
pub fn credit_card_fee(txn: &mut Txn<'_>, points: Decimal) {
    let posting = Posting { receipt_id: None, refund_id: None };
    txn.bonus(EntryKind::Bonus, points, posting, "card fee credited as points".into(), Vec::new());
}

/// Card numbers as the audit trail shows them: the last four characters.
fn masked(numbers: &[String]) -> String {
    let shown: Vec<String> = numbers
        .iter()
        .map(|number| {
            let tail: String = number.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            format!("*{tail}")
        })
        .collect();
    if shown.is_empty() { "(none)".to_owned() } else { shown.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;
    use crate::account::AccountState;
    use crate::program::ProgramPolicy;
    use chrono::DateTime;

    fn card(number: &str) -> IdentityKey {
        IdentityKey { kind: IdentityKind::Card, value: number.into() }
    }

    fn registered() -> AccountState {
        let mut account = AccountState::new("acc".into(), true, DateTime::UNIX_EPOCH);
        account.identities = vec![card("OLD00001"), IdentityKey { kind: IdentityKind::Phone, value: "+77010000001".into() }];
        account
    }

    fn cmd(old: Option<&str>, fee: &str) -> ReplaceCardCmd {
        ReplaceCardCmd {
            request_id: "r1".into(),
            new_card: "NEW00009".into(),
            old_card: old.map(str::to_owned),
            card_fee: fee.parse().expect("fee"),
            presence: Default::default(),
        }
    }

    #[test]
    fn the_new_card_is_bound_the_old_one_blocked_and_the_fee_credited() {
        let program = ProgramPolicy::with_defaults("p");
        let now = DateTime::UNIX_EPOCH + chrono::Duration::days(3);
        let mut txn = Txn::begin(&program, &registered(), now, "tx".into(), Origin { actor: "till-key".into(), ..Origin::default() });
        let outcome = replace_card(&mut txn, &program.presence, &cmd(Some("OLD00001"), "2.00"), "2".parse().expect("2")).expect("replaced");
        assert_eq!(
            (outcome.blocked.clone(), outcome.fee_points, outcome.balance.available),
            (vec!["OLD00001".to_owned()], 2.into(), 2.into())
        );
        let (account, entries) = txn.finish().expect("invariants hold");
        assert!(account.identities.contains(&card("NEW00009")) && account.identities.contains(&card("OLD00001")), "both stay bound");
        assert_eq!(
            account.blocked_card("OLD00001").map(|blocked| (blocked.blocked_at, blocked.replaced_by.as_str())),
            Some((now, "NEW00009"))
        );
        assert_eq!(entries.iter().map(|entry| (entry.kind, entry.amount)).collect::<Vec<_>>(), vec![(EntryKind::Bonus, Decimal::from(2))]);
        let note = account.audit.last().expect("noted");
        assert_eq!((note.what.as_str(), note.actor.as_str()), ("card *0001 replaced by *0009", "till-key"));
    }

    #[test]
    fn without_an_old_card_every_other_card_is_blocked_and_without_a_fee_nothing_is_posted() {
        let program = ProgramPolicy::with_defaults("p");
        let mut account = registered();
        account.identities.push(card("OLD00002"));
        let mut txn = Txn::begin(&program, &account, DateTime::UNIX_EPOCH, "tx".into(), Origin::default());
        let outcome = replace_card(&mut txn, &program.presence, &cmd(None, "0"), Decimal::ZERO).expect("replaced");
        assert_eq!(outcome.blocked, ["OLD00001", "OLD00002"]);
        let (_, entries) = txn.finish().expect("invariants hold");
        assert!(entries.is_empty());
    }

    #[test]
    fn refusals() {
        let program = ProgramPolicy::with_defaults("p");
        let now = DateTime::UNIX_EPOCH;
        let refuse = |account: &AccountState, cmd: &ReplaceCardCmd| {
            let mut txn = Txn::begin(&program, account, now, "tx".into(), Origin::default());
            replace_card(&mut txn, &program.presence, cmd, Decimal::ZERO).expect_err("refused")
        };
        let mut anonymous = registered();
        anonymous.registered = false;
        assert_eq!(refuse(&anonymous, &cmd(None, "0")), Rejection::CardNotRegistered);
        let field = |rejection: Rejection| match rejection {
            Rejection::InvalidArgument { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(refuse(&registered(), &cmd(Some("SOMEONE1"), "0"))), "old_card_number");
        let mut has_new = registered();
        has_new.identities.push(card("NEW00009"));
        assert_eq!(field(refuse(&has_new, &cmd(None, "0"))), "new_card_number");
        let mut replaced = registered();
        replaced.blocked_cards.push(BlockedCard { number: "OLD00001".into(), blocked_at: now, replaced_by: "X".into() });
        assert_eq!(refuse(&replaced, &cmd(Some("OLD00001"), "0")), Rejection::CardBlocked { replaced_at: now });
    }
}
