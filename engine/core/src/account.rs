//! An account's points: earn buckets with their pending period and expiry, holds, and debt.
//!
//! Points are kept as buckets rather than one number because points earned at different times
//! become spendable and expire at different times; spending takes the buckets that expire first.
//! Expiry needs no batch job: a bucket past its expiry is simply not counted, and the next change to
//! the account records the expiry in the ledger (see [`crate::txn::Txn::begin`]).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::identity::IdentityKey;

/// Points earned by one credit, spendable from `available_from` until (not including) `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Unique within the account; a returned spend restores points into the bucket it took them from.
    pub id: u64,
    /// The receipt that earned it, so that a refund claws back from its own bucket first.
    pub receipt_id: Option<String>,
    #[serde(with = "crate::timecode")]
    pub available_from: DateTime<Utc>,
    #[serde(with = "crate::timecode")]
    pub expires_at: DateTime<Utc>,
    /// Always above zero: empty buckets are removed.
    pub remaining: Decimal,
    /// Set when the bucket is a certificate: its points pay only a capped share of a receipt.
    #[serde(default)]
    pub certificate: Option<Certificate>,
}

/// The terms of a certificate (birthday, win-back): points with their own expiry and receipt cap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The rule that issued it.
    pub rule_id: String,
    pub label: String,
    /// Share of a receipt (its part points may pay for) the certificate may pay, in percent.
    pub cap_percent: Decimal,
}

impl Bucket {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    pub fn is_available(&self, now: DateTime<Utc>) -> bool {
        self.available_from <= now && now < self.expires_at
    }

    pub fn is_pending(&self, now: DateTime<Utc>) -> bool {
        now < self.available_from && now < self.expires_at
    }
}

/// Points reserved for one receipt until it is redeemed, released, or the hold expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub hold_id: String,
    pub receipt_id: String,
    pub amount: Decimal,
    #[serde(with = "crate::timecode")]
    pub expires_at: DateTime<Utc>,
}

impl Hold {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }
}

/// Personal data; never logged, never a metric label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub phone: Option<String>,
    pub name: Option<String>,
    pub birth_date: Option<chrono::NaiveDate>,
    #[serde(default)]
    pub gender: Option<Gender>,
}

/// The state of one account. Persisted whole, replaced by compare-and-set on its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub account_id: String,
    /// Only registered accounts may spend; a card earns before registration.
    pub registered: bool,
    #[serde(with = "crate::timecode")]
    pub created_at: DateTime<Utc>,
    pub tier: String,
    pub profile: Profile,
    /// Every identifier bound to the account (phone, cards, app tokens).
    pub identities: Vec<IdentityKey>,
    /// Sorted by (expires_at, id): the spending order.
    pub buckets: Vec<Bucket>,
    pub holds: Vec<Hold>,
    /// Points owed after a claw-back under the allow-negative policy; credits pay it off first.
    pub debt: Decimal,
    pub next_bucket_id: u64,
    /// Seq of the last ledger entry (0 before the first).
    pub ledger_seq: u64,
    /// Running sum of every ledger entry: equals the sum of buckets minus debt.
    pub ledger_sum: Decimal,
    /// Segment tags set by the program ("pensioner", "large_family"); rules may target them.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Paid receipts so far (first-purchase rules) and when the last one was.
    #[serde(default)]
    pub purchases: u32,
    #[serde(default, with = "crate::timecode::option")]
    pub last_purchase_at: Option<DateTime<Utc>>,
    /// Spend by month and the tier floor, from which the tier is computed.
    #[serde(default)]
    pub tier_progress: TierProgress,
    /// What rules with a per-customer budget gave in their current period.
    #[serde(default)]
    pub counters: Vec<RuleCounter>,
    /// Who referred this customer: the referrer's account first, then theirs, up to
    /// `REFERRAL_LEVELS_MAX`. Fixed at enrolment.
    #[serde(default)]
    pub referral_chain: Vec<String>,
    /// The customer's one-time spending code and its attempt counters.
    #[serde(default)]
    pub presence: crate::presence::PresenceState,
    /// Set when the customer's personal data was erased: the account and its ledger stay, under
    /// the account ID alone.
    #[serde(default, with = "crate::timecode::option")]
    pub erased_at: Option<DateTime<Utc>>,
    /// Admin actions on the account that change no balance (erasure, say), newest last, at most
    /// [`AUDIT_NOTES_MAX`]; balance changes are audited by the ledger itself.
    #[serde(default)]
    pub audit: Vec<AuditNote>,
    /// The customer's consent per messaging channel (`profile`); personal data, erased with it.
    #[serde(default)]
    pub consents: Vec<Consent>,
    /// Cards replaced by a new one (`cards`): still bound, refused at the till.
    #[serde(default)]
    pub blocked_cards: Vec<BlockedCard>,
    /// Set when this (anonymous) account was merged into a registered customer's (`merge`): it
    /// holds nothing since, and its card leads to that account.
    #[serde(default)]
    pub merged_into: Option<String>,
    /// Purchases in the customer's latest month of purchases (for the program's figures: active
    /// and repeat buyers by month).
    #[serde(default)]
    pub month_purchases: MonthPurchases,
    /// Retention: the ledger entries up to this seq have had their receipts' stored answers
    /// compacted (`ReceiptState::compact`); the next pass starts after it.
    #[serde(default)]
    pub compacted_through: u64,
    /// Purchases and money paid by local month of the sale, for the customer's RFM scores
    /// (`rfm`): the months of the longest window only ([`crate::rfm::RFM_MONTHS_KEPT`]), oldest
    /// first, so recency, frequency and monetary value at any instant need no ledger scan. (Last:
    /// records are read by position.)
    #[serde(default)]
    pub rfm_months: Vec<RfmMonth>,
}

/// A customer's purchases in one local month of sale, net of what they returned (`rfm`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RfmMonth {
    /// year * 12 + month index (0 = January), in the program's time zone: the sale's month
    /// (`rules::tiers::month_index`, as a receipt's `tier_month`).
    pub month: i32,
    /// Receipts accrued in the month, less those cancelled (reversed) since.
    pub purchases: u32,
    /// Money paid on them (total less points spent), less money refunded net of the points
    /// refunds gave back.
    pub paid: Decimal,
}

/// A customer's purchases in one local month (`figures::month_index`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthPurchases {
    pub month: u32,
    pub count: u32,
}

/// A card that was replaced: still bound to its account, refused at the till.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedCard {
    pub number: String,
    #[serde(with = "crate::timecode")]
    pub blocked_at: DateTime<Utc>,
    /// The card that replaced it.
    pub replaced_by: String,
}

/// The customer's gender as they state it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gender {
    Female,
    Male,
    /// Another answer, or the customer would rather not say.
    Other,
}

/// A channel the program may send marketing through, with the customer's consent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConsentChannel {
    Sms,
    Email,
    Push,
    Messenger,
}

impl ConsentChannel {
    /// The name in audit notes and error fields.
    pub fn name(self) -> &'static str {
        match self {
            ConsentChannel::Sms => "sms",
            ConsentChannel::Email => "email",
            ConsentChannel::Push => "push",
            ConsentChannel::Messenger => "messenger",
        }
    }
}

/// The customer's answer for one channel, and when it was given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub channel: ConsentChannel,
    pub granted: bool,
    #[serde(with = "crate::timecode")]
    pub changed_at: DateTime<Utc>,
}

/// An admin action on an account: who, when, what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditNote {
    #[serde(with = "crate::timecode")]
    pub at: DateTime<Utc>,
    pub actor: String,
    pub what: String,
}

/// Most audit notes an account keeps.
pub const AUDIT_NOTES_MAX: usize = 100;

/// Most levels of a referral chain.
pub const REFERRAL_LEVELS_MAX: usize = 5;

/// Spend per local calendar month, for tier thresholds over a sliding window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthSpend {
    /// year * 12 + month index (0 = January), in the program's time zone.
    pub month: i32,
    pub amount: Decimal,
}

/// The state tiers are computed from: a tier never falls below `floor` before `review_due`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierProgress {
    /// Months inside the window, oldest first.
    pub months: Vec<MonthSpend>,
    /// The tier fixed at the last review.
    pub floor: Option<String>,
    /// The end of the current review period.
    #[serde(default, with = "crate::timecode::option")]
    pub review_due: Option<DateTime<Utc>>,
}

/// How much of a rule's per-customer budget the current period has used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounter {
    pub rule_id: String,
    /// The period's key ("2026-11", "2026-W48", "ever").
    pub period: String,
    pub points: Decimal,
    pub uses: u32,
}

/// An account's balances at one instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceView {
    /// Spendable now, held points included.
    pub available: Decimal,
    pub held: Decimal,
    /// available - held, never below zero.
    pub spendable: Decimal,
    pub pending: Decimal,
    pub debt: Decimal,
    /// available + pending - debt.
    pub balance: Decimal,
}

impl AccountState {
    pub fn new(account_id: String, registered: bool, created_at: DateTime<Utc>) -> Self {
        AccountState {
            account_id,
            registered,
            created_at,
            tier: "base".to_owned(),
            profile: Profile::default(),
            identities: Vec::new(),
            buckets: Vec::new(),
            holds: Vec::new(),
            debt: Decimal::ZERO,
            next_bucket_id: 1,
            ledger_seq: 0,
            ledger_sum: Decimal::ZERO,
            tags: Vec::new(),
            purchases: 0,
            last_purchase_at: None,
            tier_progress: TierProgress::default(),
            counters: Vec::new(),
            referral_chain: Vec::new(),
            presence: crate::presence::PresenceState::default(),
            erased_at: None,
            audit: Vec::new(),
            consents: Vec::new(),
            blocked_cards: Vec::new(),
            merged_into: None,
            month_purchases: MonthPurchases::default(),
            compacted_through: 0,
            rfm_months: Vec::new(),
        }
    }

    /// The card's block, if `number` was replaced.
    pub fn blocked_card(&self, number: &str) -> Option<&BlockedCard> {
        self.blocked_cards.iter().find(|blocked| blocked.number == number)
    }

    /// Notes an admin action in the account's audit trail, dropping the oldest past
    /// [`AUDIT_NOTES_MAX`].
    pub fn note(&mut self, at: DateTime<Utc>, actor: &str, what: String) {
        self.audit.push(AuditNote { at, actor: actor.to_owned(), what });
        if self.audit.len() > AUDIT_NOTES_MAX {
            self.audit.remove(0);
        }
    }

    /// Balances as the clock reads `now`: expired buckets and holds do not count.
    pub fn balance_at(&self, now: DateTime<Utc>) -> BalanceView {
        let mut available = Decimal::ZERO;
        let mut pending = Decimal::ZERO;
        for bucket in &self.buckets {
            if bucket.is_available(now) {
                available += bucket.remaining;
            } else if bucket.is_pending(now) {
                pending += bucket.remaining;
            }
        }
        let held = self.held_at(now);
        BalanceView {
            available,
            held,
            spendable: (available - held).max(Decimal::ZERO),
            pending,
            debt: self.debt,
            balance: available + pending - self.debt,
        }
    }

    /// Points reserved by holds still active at `now`.
    pub fn held_at(&self, now: DateTime<Utc>) -> Decimal {
        self.holds.iter().filter(|hold| hold.is_active(now)).map(|hold| hold.amount).sum()
    }

    /// Points that a new hold expiring at `hold_expires_at` may reserve: only buckets still valid
    /// after every hold (this one included) expires count, so held points can never be lost to
    /// expiry while they are held.
    pub fn holdable_at(&self, now: DateTime<Utc>, hold_expires_at: DateTime<Utc>) -> Decimal {
        let last_hold_expiry =
            self.holds.iter().filter(|hold| hold.is_active(now)).map(|hold| hold.expires_at).fold(hold_expires_at, DateTime::max);
        let lasting: Decimal = self
            .buckets
            .iter()
            .filter(|bucket| bucket.is_available(now) && bucket.expires_at > last_hold_expiry)
            .map(|bucket| bucket.remaining)
            .sum();
        (lasting - self.held_at(now)).max(Decimal::ZERO)
    }

    /// Available or pending points that expire within `window` after `now`, and the next expiry.
    pub fn expiring_within(&self, now: DateTime<Utc>, window: chrono::Duration) -> (Decimal, Option<DateTime<Utc>>) {
        let horizon = now + window;
        let mut amount = Decimal::ZERO;
        let mut next = None;
        for bucket in self.buckets.iter().filter(|bucket| !bucket.is_expired(now)) {
            if bucket.expires_at <= horizon {
                amount += bucket.remaining;
            }
            next = Some(next.map_or(bucket.expires_at, |at: DateTime<Utc>| at.min(bucket.expires_at)));
        }
        (amount, next)
    }

    /// The total of every bucket (expired ones included) less debt: what the ledger must sum to.
    pub fn booked_balance(&self) -> Decimal {
        self.buckets.iter().map(|bucket| bucket.remaining).sum::<Decimal>() - self.debt
    }

    /// Checks the account's invariants at `now`; a failure is a bug, never a user error.
    pub fn check_invariants(&self, now: DateTime<Utc>) -> Result<(), String> {
        if self.ledger_sum != self.booked_balance() {
            return Err(format!("ledger sum {} != buckets - debt {}", self.ledger_sum, self.booked_balance()));
        }
        if self.debt < Decimal::ZERO {
            return Err(format!("negative debt {}", self.debt));
        }
        if let Some(bucket) = self.buckets.iter().find(|bucket| bucket.remaining <= Decimal::ZERO) {
            return Err(format!("bucket {} holds {}", bucket.id, bucket.remaining));
        }
        if self.buckets.windows(2).any(|pair| (pair[0].expires_at, pair[0].id) >= (pair[1].expires_at, pair[1].id)) {
            return Err("buckets out of spending order".to_owned());
        }
        if let Some(hold) = self.holds.iter().find(|hold| hold.amount <= Decimal::ZERO) {
            return Err(format!("hold {} of {}", hold.hold_id, hold.amount));
        }
        let view = self.balance_at(now);
        if view.held > view.available {
            return Err(format!("held {} > available {}", view.held, view.available));
        }
        Ok(())
    }
}
