//! A customer brought from the platform a program moves from (`loyalty-engine import`): one
//! row of the chain's export becomes one account with its identifiers, profile, tier, purchase
//! history and point buckets. Each bucket keeps its own pending period and expiry and is posted as
//! an `Opening` ledger entry, so the account's balance is the file's to the point and its ledger
//! explains it. No event is emitted: nothing new was given to the customer.
//!
//! The file's format is read by the server (`import` there); what a row may hold and how it
//! becomes an account is decided here.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::identity::{IdentityKey, IdentityKind};
use crate::ops::Checkout;
pub use crate::outcome::ImportOutcome;
use crate::profile::Gender;
use crate::program::ProgramPolicy;
use crate::rejection::Rejection;
use crate::txn::Txn;

/// Buckets one imported customer may bring.
pub const BUCKETS_MAX: usize = 120;
/// The largest bucket an import accepts.
pub const BUCKET_POINTS_MAX: u64 = 1_000_000_000;

/// One customer of the export, validated field by field (the server's reader does that).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opening {
    /// The row's ID in the export: the import's idempotency key (`import/<id>`).
    pub id: String,
    /// E.164; a customer with a phone is registered, one with cards alone is anonymous.
    pub phone: Option<String>,
    pub cards: Vec<String>,
    pub app_tokens: Vec<String>,
    pub name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub gender: Option<Gender>,
    pub tags: Vec<String>,
    /// A tier of the program, held until the next review.
    pub tier: Option<String>,
    /// Purchases made on the old platform, and when the last one was.
    pub purchases: u32,
    pub last_purchase_at: Option<DateTime<Utc>>,
    pub buckets: Vec<OpeningBucket>,
}

/// Points with their own terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpeningBucket {
    pub points: Decimal,
    /// When the points become spendable; `None`: at once (they were on the old platform).
    pub available_from: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
}

impl Opening {
    /// Every identifier, phone first.
    pub fn identities(&self) -> Vec<IdentityKey> {
        let phone = self.phone.iter().map(|value| IdentityKey { kind: IdentityKind::Phone, value: value.clone() });
        let cards = self.cards.iter().map(|value| IdentityKey { kind: IdentityKind::Card, value: value.clone() });
        let tokens = self.app_tokens.iter().map(|value| IdentityKey { kind: IdentityKind::AppToken, value: value.clone() });
        phone.chain(cards).chain(tokens).collect()
    }

    /// What a row may hold beyond its fields' formats: something to find the customer by, points
    /// at the program's scale, buckets not expired by `now` and spendable before they expire,
    /// a purchase history not in the future, and no identifier twice.
    pub fn check(&self, program: &ProgramPolicy, now: DateTime<Utc>) -> Result<(), Rejection> {
        if self.phone.is_none() && self.cards.is_empty() {
            return Err(Rejection::invalid("phone", "a customer needs a phone or a card to be found by"));
        }
        let identities = self.identities();
        for (index, key) in identities.iter().enumerate() {
            if identities[..index].contains(key) {
                return Err(Rejection::invalid(field_of(key.kind), format!("{} is given twice", key.value)));
            }
        }
        if self.buckets.len() > BUCKETS_MAX {
            return Err(Rejection::invalid("buckets", format!("at most {BUCKETS_MAX} buckets")));
        }
        for (index, bucket) in self.buckets.iter().enumerate() {
            let field = |name: &str| format!("buckets[{index}].{name}");
            if bucket.points <= Decimal::ZERO || bucket.points > Decimal::from(BUCKET_POINTS_MAX) {
                return Err(Rejection::invalid(field("points"), format!("must be above 0 and at most {BUCKET_POINTS_MAX}")));
            }
            if bucket.points.round_dp(program.points_scale) != bucket.points {
                return Err(Rejection::invalid(
                    field("points"),
                    format!("at most {} decimal places in this program", program.points_scale),
                ));
            }
            if bucket.expires_at <= now {
                return Err(Rejection::invalid(field("expires_at"), "already expired: leave expired points out of the file"));
            }
            if bucket.available_from.is_some_and(|from| from >= bucket.expires_at) {
                return Err(Rejection::invalid(field("available_from"), "must be before expires_at"));
            }
        }
        if self.last_purchase_at.is_some_and(|at| at > now) {
            return Err(Rejection::invalid("last_purchase_at", "in the future"));
        }
        if self.purchases == 0 && self.last_purchase_at.is_some() {
            return Err(Rejection::invalid("purchases", "0 with a last_purchase_at"));
        }
        Ok(())
    }
}

fn field_of(kind: IdentityKind) -> &'static str {
    match kind {
        IdentityKind::Phone => "phone",
        IdentityKind::Card => "cards",
        IdentityKind::AppToken => "app_tokens",
    }
}

/// Fills the new account in `txn` (`AccountState::new`, unregistered, with no identity yet) from `opening`:
/// identifiers, profile, tags, tier, purchase history, then one `Opening` entry per bucket.
pub fn open_account(checkout: &Checkout<'_>, txn: &mut Txn<'_>, opening: &Opening) -> Result<ImportOutcome, Rejection> {
    let now = txn.now();
    let tz = checkout.program.time_zone;
    let account = txn.account_mut();
    account.registered = opening.phone.is_some();
    account.identities = opening.identities();
    account.profile.phone = opening.phone.clone();
    account.profile.name = opening.name.clone();
    account.profile.birth_date = opening.birth_date;
    account.profile.gender = opening.gender;
    account.tags = opening.tags.clone();
    account.purchases = opening.purchases;
    account.last_purchase_at = opening.last_purchase_at;
    if let Some(tier) = &opening.tier
        && !crate::rules::tiers::grant_until_review(checkout.rules, account, tier, now, tz)
    {
        return Err(Rejection::invalid("tier", format!("{tier} is not a tier of this program")));
    }
    let mut points = Decimal::ZERO;
    for bucket in &opening.buckets {
        txn.opening(
            bucket.points,
            bucket.available_from.unwrap_or(now),
            bucket.expires_at,
            format!("opening balance, import row {}", opening.id),
        );
        points += bucket.points;
    }
    let actor = txn.origin().actor.clone();
    txn.account_mut().note(now, &actor, format!("imported as row {}", opening.id));
    Ok(ImportOutcome { account_id: txn.account().account_id.clone(), points, buckets: opening.buckets.len() as u32 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;
    use crate::account::AccountState;
    use crate::basket::BasketLimits;
    use crate::ledger::EntryKind;
    use crate::rules::{CompiledRules, RuleSet, compile};
    use chrono::Duration;

    fn rules() -> CompiledRules {
        compile(&RuleSet::default(), 1, 0).expect("an empty rule set compiles")
    }

    fn opening(now: DateTime<Utc>) -> Opening {
        Opening {
            id: "row-1".into(),
            phone: Some("+77001234567".into()),
            cards: vec!["2000000000017".into()],
            app_tokens: Vec::new(),
            name: Some("Anna".into()),
            birth_date: None,
            gender: Some(Gender::Female),
            tags: vec!["pensioner".into()],
            tier: None,
            purchases: 12,
            last_purchase_at: Some(now - Duration::days(3)),
            buckets: vec![
                OpeningBucket {
                    points: Decimal::from(120),
                    available_from: Some(now - Duration::days(40)),
                    expires_at: now + Duration::days(20),
                },
                OpeningBucket {
                    points: Decimal::from(80),
                    available_from: Some(now + Duration::days(1)),
                    expires_at: now + Duration::days(300),
                },
                OpeningBucket { points: Decimal::from(5), available_from: None, expires_at: now + Duration::days(20) },
            ],
        }
    }

    /// Balances equal the file's, each bucket keeps its terms (two of the same terms stay two),
    /// and the ledger explains every point with an Opening entry.
    #[test]
    fn an_opening_keeps_every_bucket_with_its_terms_and_explains_it_in_the_ledger() {
        let program = ProgramPolicy::with_defaults("p");
        let rules = rules();
        let limits = BasketLimits::default();
        let checkout = Checkout { program: &program, rules: &rules, limits: &limits };
        let now = DateTime::UNIX_EPOCH + Duration::days(1000);
        let row = opening(now);
        row.check(&program, now).expect("a good row");
        let account = AccountState::new("acc".into(), false, now);
        let mut txn = Txn::begin(&program, &account, now, "tx".into(), Origin::default());
        let outcome = open_account(&checkout, &mut txn, &row).expect("opened");
        let finished = txn.finish_all().expect("invariants hold");
        assert_eq!((outcome.points, outcome.buckets), (Decimal::from(205), 3));
        let account = finished.account;
        assert!(account.registered);
        assert_eq!(account.buckets.len(), 3);
        let balance = account.balance_at(now);
        assert_eq!((balance.available, balance.pending), (Decimal::from(125), Decimal::from(80)));
        for bucket in &row.buckets {
            assert!(account.buckets.iter().any(|mine| mine.expires_at == bucket.expires_at
                && mine.available_from == bucket.available_from.unwrap_or(now)
                && mine.remaining == bucket.points));
        }
        assert!(finished.entries.iter().all(|entry| entry.kind == EntryKind::Opening));
        assert_eq!(finished.entries.iter().map(|entry| entry.amount).sum::<Decimal>(), Decimal::from(205));
        // An import tells the customer nothing new: its one event is for the program's figures.
        let [figures] = finished.events.as_slice() else { panic!("one event: {:?}", finished.events) };
        assert_eq!(figures.kind, crate::events::EventKind::Figures);
        assert_eq!(figures.figures.as_ref().map(|delta| delta.points.opened), Some(Decimal::from(205)));
        assert_eq!(account.identities.len(), 2);
        assert_eq!(account.purchases, 12);
    }

    #[test]
    fn rows_that_cannot_be_an_account_are_refused_by_field() {
        let program = ProgramPolicy::with_defaults("p");
        let now = DateTime::UNIX_EPOCH + Duration::days(1000);
        let field = |row: Opening| match row.check(&program, now) {
            Err(Rejection::InvalidArgument { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let mut row = opening(now);
        row.phone = None;
        row.cards.clear();
        assert_eq!(field(row), "phone");
        let mut row = opening(now);
        row.buckets[1].expires_at = now;
        assert_eq!(field(row), "buckets[1].expires_at");
        let mut row = opening(now);
        row.buckets[2].points = Decimal::new(15, 1);
        assert_eq!(field(row), "buckets[2].points");
        let mut row = opening(now);
        row.buckets[0].points = Decimal::ZERO;
        assert_eq!(field(row), "buckets[0].points");
        let mut row = opening(now);
        row.buckets[0].available_from = Some(row.buckets[0].expires_at);
        assert_eq!(field(row), "buckets[0].available_from");
        let mut row = opening(now);
        row.cards.push(row.cards[0].clone());
        assert_eq!(field(row), "cards");
        let mut row = opening(now);
        row.last_purchase_at = Some(now + Duration::seconds(1));
        assert_eq!(field(row), "last_purchase_at");
    }

    #[test]
    fn an_unknown_tier_is_refused_and_a_card_alone_opens_an_anonymous_account() {
        let program = ProgramPolicy::with_defaults("p");
        let rules = rules();
        let limits = BasketLimits::default();
        let checkout = Checkout { program: &program, rules: &rules, limits: &limits };
        let now = DateTime::UNIX_EPOCH + Duration::days(1000);
        let mut row = opening(now);
        row.tier = Some("gold".into());
        let account = AccountState::new("acc".into(), false, now);
        let mut txn = Txn::begin(&program, &account, now, "tx".into(), Origin::default());
        assert!(matches!(open_account(&checkout, &mut txn, &row), Err(Rejection::InvalidArgument { field, .. }) if field == "tier"));
        row.tier = None;
        row.phone = None;
        let mut txn = Txn::begin(&program, &account, now, "tx".into(), Origin::default());
        open_account(&checkout, &mut txn, &row).expect("opened");
        assert!(!txn.finish_all().expect("invariants hold").account.registered);
    }
}
