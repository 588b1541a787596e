//! A customer's registration by phone, and the erasure of their personal data.
//!
//! An enrolment registers either a new account or the anonymous account of a card the customer
//! already carries (its points stay theirs): the phone, the card (a virtual one when none is given)
//! and the app token become the account's identifiers, the profile and tags are set, the referral
//! chain is kept, and the welcome bonuses of the program's enrolment rules and the card's fee (as
//! points) are credited in the same transaction. Finding the account, claiming the identifiers and
//! committing are the engine's; what registering means is here.
//!
//! An erasure removes the customer's personal data (profile, consents, identifiers, blocked cards)
//! and keeps the account, its balance and its ledger under the account ID.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::Origin;
use crate::account::{AccountState, Profile, REFERRAL_LEVELS_MAX};
use crate::identity::{IdentityKey, IdentityKind};
use crate::ops::{Checkout, enrollment_bonuses};
use crate::outcome::RulePoints;
use crate::rejection::Rejection;
use crate::txn::Txn;

/// An enrolment, validated. (Its serialised form is the call's fingerprint: stored with the first
/// answer, so its fields keep their names and order.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnrollCmd {
    pub request_id: String,
    /// E.164.
    pub phone: String,
    pub card_number: Option<String>,
    pub app_token: Option<String>,
    pub name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    /// Segment tags ("pensioner", "large_family") that rules may target.
    pub tags: Vec<String>,
    /// The customer who referred this one, if any.
    pub referrer: Option<IdentityKey>,
    /// What the customer paid for the card; credited as points (rounded down).
    pub card_fee: Decimal,
}

impl EnrollCmd {
    /// The phone as an identifier.
    pub fn phone_key(&self) -> IdentityKey {
        IdentityKey { kind: IdentityKind::Phone, value: self.phone.clone() }
    }

    /// The app token as an identifier, if one was given.
    pub fn app_token_key(&self) -> Option<IdentityKey> {
        self.app_token.clone().map(|value| IdentityKey { kind: IdentityKind::AppToken, value })
    }
}

/// A registration, ready to commit: the transaction holding the registered account and its
/// credits, the identifiers it claims, and what was credited.
#[derive(Debug)]
pub struct Enrolled<'p> {
    pub txn: Txn<'p>,
    /// Phone, card and app token: claimed for the account in the commit.
    pub claims: Vec<IdentityKey>,
    /// Welcome bonuses credited by enrolment rules.
    pub bonuses: Vec<RulePoints>,
    /// Points credited for the card's fee.
    pub fee_points: Decimal,
}

/// The referral chain of a customer referred by `referrer` (an account and its own chain): the
/// referrer first, then the referrer's chain, up to the most levels any chain keeps. Only a
/// registered customer may refer another.
pub fn referral_chain(referrer: &AccountState) -> Result<Vec<String>, Rejection> {
    if !referrer.registered {
        return Err(Rejection::invalid("referrer", "only a registered customer can refer another"));
    }
    let mut chain = vec![referrer.account_id.clone()];
    chain.extend(referrer.referral_chain.iter().take(REFERRAL_LEVELS_MAX - 1).cloned());
    Ok(chain)
}

/// Registers `state` (a new account, or the anonymous account `card` already leads to) with the
/// command's phone, card, app token, profile and tags, and credits the welcome bonuses and the
/// card's fee in one transaction. A card already registered to a customer is `IDENTIFIER_TAKEN`.
#[allow(clippy::too_many_arguments)]
pub fn enroll<'p>(
    ck: &Checkout<'p>,
    mut state: AccountState,
    cmd: &EnrollCmd,
    card: IdentityKey,
    referral_chain: Vec<String>,
    now: DateTime<Utc>,
    tx_id: String,
    origin: Origin,
) -> Result<Enrolled<'p>, Rejection> {
    if state.registered {
        return Err(Rejection::IdentifierTaken { kind: "card" });
    }
    state.registered = true;
    state.profile.phone = Some(cmd.phone.clone());
    state.profile.name = cmd.name.clone();
    state.profile.birth_date = cmd.birth_date;
    // A chain that leads back to this account would pay it for its own purchases.
    if state.referral_chain.is_empty() && !referral_chain.contains(&state.account_id) {
        state.referral_chain = referral_chain;
    }
    for tag in &cmd.tags {
        if !state.tags.contains(tag) {
            state.tags.push(tag.clone());
        }
    }
    if !state.identities.contains(&card) {
        state.identities.push(card.clone());
    }
    let phone = cmd.phone_key();
    let mut claims = vec![phone.clone(), card];
    state.identities.push(phone);
    if let Some(token) = cmd.app_token_key() {
        state.identities.push(token.clone());
        claims.push(token);
    }
    let mut txn = Txn::begin(ck.program, &state, now, tx_id, origin);
    txn.record_enrolment();
    let bonuses = enrollment_bonuses(ck, &mut txn);
    let fee_points = ck.program.floor_points(cmd.card_fee);
    crate::cards::credit_card_fee(&mut txn, fee_points);
    Ok(Enrolled { txn, claims, bonuses, fee_points })
}

/// Erases the customer's personal data: profile, consents, phone, cards and app tokens (returned:
/// the engine releases them, so they find no account and may be registered anew) and the blocked
/// cards. The account, its balance and its ledger stay; the erasure is noted in its audit trail
/// with who asked and why.
pub fn erase(state: &mut AccountState, now: DateTime<Utc>, actor: &str, reason: &str) -> Vec<IdentityKey> {
    let released = std::mem::take(&mut state.identities);
    state.profile = Profile::default();
    state.consents.clear();
    state.blocked_cards.clear();
    state.erased_at = Some(now);
    state.note(now, actor, format!("personal data erased: {reason}"));
    released
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::basket::BasketLimits;
    use crate::program::ProgramPolicy;
    use crate::rules::compile::compile;
    use crate::rules::{CompiledRules, RuleSet};

    fn rules() -> CompiledRules {
        compile(&RuleSet::default(), 1, 0).expect("an empty rule set compiles")
    }

    fn command(card_fee: i64) -> EnrollCmd {
        EnrollCmd {
            request_id: "enrol-1".into(),
            phone: "+15550001".into(),
            card_number: Some("4000".into()),
            app_token: Some("tok".into()),
            name: Some("Ann".into()),
            birth_date: None,
            tags: vec!["pensioner".into(), "pensioner".into()],
            referrer: None,
            card_fee: Decimal::from(card_fee),
        }
    }

    #[test]
    fn an_anonymous_card_is_registered_with_its_points_and_every_identifier_claimed() {
        let (program, rules, limits) = (ProgramPolicy::with_defaults("p"), rules(), BasketLimits::default());
        let checkout = Checkout { program: &program, rules: &rules, limits: &limits };
        let card = IdentityKey { kind: IdentityKind::Card, value: "4000".into() };
        let mut anonymous = AccountState::new("a".into(), false, at(1));
        anonymous.identities.push(card.clone());
        let cmd = command(100);
        let chain = vec!["r".to_owned()];
        let enrolled = enroll(&checkout, anonymous, &cmd, card.clone(), chain, at(2), "tx".into(), Origin::default()).expect("enrolled");
        assert_eq!(enrolled.claims, vec![cmd.phone_key(), card.clone(), cmd.app_token_key().expect("token")]);
        assert_eq!(enrolled.fee_points, program.floor_points(Decimal::from(100)));
        let finished = enrolled.txn.finish_all().expect("invariants hold");
        let state = finished.account;
        assert!(state.registered);
        assert_eq!(state.identities.iter().filter(|key| **key == card).count(), 1, "the card is not claimed twice");
        assert_eq!(state.identities.len(), 3);
        assert_eq!((state.profile.phone.as_deref(), state.profile.name.as_deref()), (Some("+15550001"), Some("Ann")));
        assert_eq!(state.tags, ["pensioner"]);
        assert_eq!(state.referral_chain, ["r"]);
        assert_eq!(finished.entries.iter().map(|entry| entry.amount).sum::<Decimal>(), enrolled.fee_points);
    }

    #[test]
    fn a_registered_card_is_taken_and_a_chain_through_the_account_itself_is_dropped() {
        let (program, rules, limits) = (ProgramPolicy::with_defaults("p"), rules(), BasketLimits::default());
        let checkout = Checkout { program: &program, rules: &rules, limits: &limits };
        let card = IdentityKey { kind: IdentityKind::Card, value: "4000".into() };
        let registered = AccountState::new("a".into(), true, at(1));
        let taken = enroll(&checkout, registered, &command(0), card.clone(), Vec::new(), at(2), "tx".into(), Origin::default());
        assert!(matches!(taken, Err(Rejection::IdentifierTaken { kind: "card" })));
        let fresh = AccountState::new("a".into(), false, at(1));
        let chain = vec!["r".to_owned(), "a".to_owned()];
        let enrolled = enroll(&checkout, fresh, &command(0), card, chain, at(2), "tx".into(), Origin::default()).expect("enrolled");
        assert!(enrolled.txn.finish_all().expect("invariants hold").account.referral_chain.is_empty());
    }

    fn at(day: u32) -> DateTime<Utc> {
        chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, day, 12, 0, 0).single().expect("date")
    }

    #[test]
    fn only_a_registered_customer_refers_and_the_chain_is_bounded() {
        let mut referrer = AccountState::new("r".into(), false, at(1));
        assert!(referral_chain(&referrer).is_err(), "an anonymous card refers no one");
        referrer.registered = true;
        referrer.referral_chain = (0..10).map(|level| format!("up{level}")).collect();
        let chain = referral_chain(&referrer).expect("registered");
        assert_eq!(chain[0], "r");
        assert_eq!(chain.len(), REFERRAL_LEVELS_MAX);
        assert_eq!(chain[1..], referrer.referral_chain[..REFERRAL_LEVELS_MAX - 1]);
    }

    #[test]
    fn an_erasure_releases_every_identifier_and_keeps_the_account() {
        let mut state = AccountState::new("a".into(), true, at(1));
        state.identities.push(IdentityKey { kind: IdentityKind::Phone, value: "+15550001".into() });
        state.identities.push(IdentityKey { kind: IdentityKind::Card, value: "4000".into() });
        state.profile.name = Some("Ann".into());
        let released = erase(&mut state, at(2), "admin", "asked by letter");
        assert_eq!(released.len(), 2);
        assert!(state.identities.is_empty() && state.profile == Profile::default());
        assert_eq!((state.erased_at, state.account_id.as_str()), (Some(at(2)), "a"));
        assert!(state.audit.last().is_some_and(|note| note.actor == "admin" && note.what.contains("asked by letter")));
    }
}
