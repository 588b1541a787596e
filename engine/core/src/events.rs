//! Events for the program's messaging integrations (SMS, push, messenger bots live outside the
//! engine): written to an outbox in the same commit as the change they report, so an event exists
//! exactly when its change does, and read from the outbox in order.

use crate::account::{Bucket, MonthSpend, RfmMonth, RuleCounter};
use crate::identity::IdentityKey;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Points earned on a receipt.
    PointsEarned,
    /// A welcome, event or manual bonus credited.
    BonusCredited,
    /// The customer's tier went up or down.
    TierChanged,
    /// A certificate was issued (its value in `points`).
    CertificateIssued,
    /// Points (in `points`) expire soon; the first of them at `expires_at`.
    PointsExpiring,
    /// A one-time spending code for the messaging to send (in `code`), good until `expires_at`.
    CustomerCode,
    /// What the commit adds to the program's figures (in `figures`), for the engine's own
    /// reports (`figures`); messaging integrations skip it.
    Figures,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::PointsEarned => "points_earned",
            EventKind::BonusCredited => "bonus_credited",
            EventKind::TierChanged => "tier_changed",
            EventKind::CertificateIssued => "certificate_issued",
            EventKind::PointsExpiring => "points_expiring",
            EventKind::CustomerCode => "customer_code",
            EventKind::Figures => "figures",
        }
    }
}

/// One event. Carries IDs and amounts only: integrations look up contact details themselves, so
/// personal data never sits in the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub account_id: String,
    pub at: DateTime<Utc>,
    /// Points credited (zero for tier changes).
    pub points: Decimal,
    pub receipt_id: Option<String>,
    pub rule_ids: Vec<String>,
    /// When the credited points become spendable.
    pub available_from: Option<DateTime<Utc>>,
    pub tier_from: Option<String>,
    pub tier_to: Option<String>,
    /// For expiry notices and certificates: when the points expire.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// For customer codes: the code to deliver (worthless after `expires_at` or one use).
    #[serde(default)]
    pub code: Option<String>,
    /// For figures: what the commit adds to the program's figures. (Last, so that events stored
    /// before it existed read with none.)
    #[serde(default)]
    pub figures: Option<Box<crate::figures::Delta>>,
}

impl Event {
    /// The event that carries a commit's addition to the program's figures (`figures`).
    pub fn figures(account_id: String, at: DateTime<Utc>, delta: crate::figures::Delta) -> Event {
        Event {
            kind: EventKind::Figures,
            account_id,
            at,
            points: delta.points.net(),
            receipt_id: None,
            rule_ids: Vec::new(),
            available_from: None,
            tier_from: None,
            tier_to: None,
            expires_at: None,
            code: None,
            figures: Some(Box::new(delta)),
        }
    }
}

/// Everything a merged account held, on its way to the customer's account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTransfer {
    pub from_account: String,
    pub buckets: Vec<Bucket>,
    pub debt: Decimal,
    pub months: Vec<MonthSpend>,
    pub counters: Vec<RuleCounter>,
    pub purchases: u32,
    pub last_purchase_at: Option<DateTime<Utc>>,
    /// The card(s) that led to the merged account, which lead to the customer from now on.
    pub identities: Vec<IdentityKey>,
    /// Purchases and money paid by month, for the customer's RFM scores. (Last, so that transfers
    /// stored before it existed read with none.)
    #[serde(default)]
    pub rfm_months: Vec<RfmMonth>,
}

/// The credit's rule ID: credits of merges are applied by [`crate::merge::merge_in`], or as points moved.
pub const MERGE_RULE_ID: &str = "merge";

/// Points owed to (or owed back by) another account: written in the same commit as the change that
/// owes them, then applied exactly once under the receiving account's own lock, keyed by
/// `credit_id` on that account. This is how a purchase pays the buyer's referrers without ever
/// writing two accounts in one commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCredit {
    /// `referral/<receipt>/<level>`, with `/<refund>` for what a refund takes back.
    pub credit_id: String,
    pub account_id: String,
    /// Signed: negative takes back a reward after a refund or reversal.
    pub points: Decimal,
    pub rule_id: String,
    pub reason: String,
    /// For a merge: everything the merged account held, applied whole instead of `points`. Last,
    /// and left out when `None`: other credits encode as they did before the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Box<AccountTransfer>>,
}
