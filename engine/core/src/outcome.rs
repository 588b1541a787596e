//! The answers of the checkout operations. They are stored whole with the receipt, so that a replay
//! returns exactly the first answer: the same transaction ID, the same amounts, the same balance.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::account::BalanceView;

/// Points one rule gave (on a line, or on the whole receipt). The ID and label are shared with the
/// compiled rule (a receipt names a rule once per line it paid): cloning one is a count, not a copy.
/// Stored as plain strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulePoints {
    pub rule_id: Arc<str>,
    /// The rule's name, or its ID when it has none.
    pub label: Arc<str>,
    pub points: Decimal,
}

/// What one line earns and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineEarn {
    pub line_no: u32,
    /// The money the line earns on: its total less its share of spent points.
    pub base: Decimal,
    pub points: Decimal,
    /// The labels of the rules that gave it points, or "no rule applies".
    pub reason: String,
    /// The rules that gave it points, highest priority first; they add up to `points`.
    #[serde(default)]
    pub applied: Vec<RulePoints>,
}

/// What bounds the points a receipt may spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpendLimit {
    ReceiptCap,
    Balance,
    NotRegistered,
    /// The spendable balance is below the program's minimum for spending.
    MinimumBalance,
}

/// The most a receipt may spend, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendQuote {
    pub max: Decimal,
    pub limit: SpendLimit,
    /// The cap in force (the tier's, the rules', or the program's).
    pub cap_percent: Decimal,
    /// The part of the receipt points may pay for (lines not excluded from spending).
    pub eligible: Decimal,
    pub explanation: String,
    /// Per certificate (bucket ID): the most it may pay on this receipt.
    pub certificate_limits: Vec<(u64, Decimal)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    pub hold_id: String,
    pub amount: Decimal,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeOutcome {
    pub account_id: String,
    pub lines: Vec<LineEarn>,
    pub earn_total: Decimal,
    /// Per rule that would give points.
    pub rules: Vec<RulePoints>,
    pub spend: SpendQuote,
    pub tier: String,
    pub program_version: u64,
    pub balance: BalanceView,
    pub hold: Option<HoldView>,
    pub tx_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemOutcome {
    pub tx_id: String,
    pub account_id: String,
    pub redeemed: Decimal,
    pub released: Decimal,
    pub balance: BalanceView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccrueOutcome {
    pub tx_id: String,
    pub account_id: String,
    pub lines: Vec<LineEarn>,
    pub earned: Decimal,
    /// Per rule that gave points.
    pub rules: Vec<RulePoints>,
    /// The customer's tier after this receipt.
    pub tier: String,
    pub program_version: u64,
    pub paid_amount: Decimal,
    pub points_spent: Decimal,
    pub available_from: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub balance: BalanceView,
    pub hold_released: Decimal,
    /// Change kept as points (credited at once, apart from `earned`).
    pub change_points: Decimal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReverseOutcome {
    pub tx_id: String,
    pub account_id: String,
    pub earn_clawed_back: Decimal,
    pub spent_returned: Decimal,
    pub hold_released: Decimal,
    pub debt_created: Decimal,
    pub balance: BalanceView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundOutcome {
    pub tx_id: String,
    pub account_id: String,
    pub earn_clawed_back: Decimal,
    pub spent_returned: Decimal,
    pub debt_created: Decimal,
    pub refunded_amount: Decimal,
    pub balance: BalanceView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollOutcome {
    pub account_id: String,
    pub card_number: String,
    pub created: bool,
    pub balance: BalanceView,
    /// Welcome bonuses credited by enrolment rules.
    #[serde(default)]
    pub bonuses: Vec<RulePoints>,
    /// Points credited for the card's fee (a card sold at the till).
    #[serde(default)]
    pub fee_points: Decimal,
}

/// What a replacement did; stored as the request's first answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceCardOutcome {
    pub tx_id: String,
    pub account_id: String,
    pub card_number: String,
    /// The cards blocked by this replacement.
    pub blocked: Vec<String>,
    /// Points credited for the card's fee.
    pub fee_points: Decimal,
    pub balance: BalanceView,
}

/// What an import of one customer did; stored as the request's first answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOutcome {
    pub account_id: String,
    /// Every bucket's points.
    pub points: Decimal,
    pub buckets: u32,
}

/// What a merge did; stored as the request's first answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeOutcome {
    pub tx_id: String,
    /// The customer's account, which now holds everything.
    pub account_id: String,
    /// The card's account, now empty.
    pub merged_account_id: String,
    /// Points moved (available and pending, certificates included), less the debt moved.
    pub points: Decimal,
    pub buckets: u32,
}

/// An event bonus or a manual adjustment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BonusOutcome {
    pub tx_id: String,
    pub account_id: String,
    /// Signed: a manual adjustment may take points away.
    pub points: Decimal,
    /// The rules that paid (empty for a manual adjustment).
    pub rules: Vec<RulePoints>,
    pub balance: BalanceView,
}

/// A sale without a customer, recorded (`ops::record_sale`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleOutcome {
    pub tx_id: String,
    pub total: Decimal,
    /// When the engine recorded it: the figures count it on this local day.
    pub recorded_at: DateTime<Utc>,
}

/// A stored first answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredResponse {
    Authorize(AuthorizeOutcome),
    Redeem(RedeemOutcome),
    Accrue(AccrueOutcome),
    Reverse(ReverseOutcome),
    Refund(RefundOutcome),
    Enroll(EnrollOutcome),
    Bonus(BonusOutcome),
    ReplaceCard(ReplaceCardOutcome),
    Merge(MergeOutcome),
    Import(ImportOutcome),
    /// (Last: stored answers keep their variants' positions.)
    Sale(SaleOutcome),
    /// The first answer was removed by retention (`ReceiptState::compact`): the call was applied
    /// once, and a replay is told so instead of answered.
    Compacted(CompactedAnswer),
}

/// What is left of a stored answer after retention: when it was removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactedAnswer {
    pub at: DateTime<Utc>,
}

/// Each outcome comes back out of its stored variant; another variant is handed back unchanged.
macro_rules! from_stored {
    ($($variant:ident => $outcome:ty),* $(,)?) => {
        $(impl TryFrom<StoredResponse> for $outcome {
            type Error = StoredResponse;

            fn try_from(response: StoredResponse) -> Result<Self, StoredResponse> {
                match response {
                    StoredResponse::$variant(outcome) => Ok(outcome),
                    other => Err(other),
                }
            }
        })*
    };
}

from_stored! {
    Authorize => AuthorizeOutcome,
    Redeem => RedeemOutcome,
    Accrue => AccrueOutcome,
    Reverse => ReverseOutcome,
    Refund => RefundOutcome,
    Enroll => EnrollOutcome,
    Bonus => BonusOutcome,
    ReplaceCard => ReplaceCardOutcome,
    Merge => MergeOutcome,
    Import => ImportOutcome,
    Sale => SaleOutcome,
}
