//! What one receipt did to one account, and the first responses of the calls made on it.
//!
//! A receipt belongs to exactly one account: the first call that writes it claims its ID for that
//! account. Keeping the idempotency records inside the receipt means one read answers both "what
//! has this receipt done" and "have I answered this call before", and they live exactly as long as
//! the receipt's ledger does.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Origin;
use crate::fingerprint::Fingerprint;
pub use crate::fingerprint::OpKind;
use crate::outcome::StoredResponse;

/// Most refunds one receipt may take, so that a receipt's record stays bounded.
pub const REFUNDS_PER_RECEIPT_MAX: usize = 64;

/// The first answer to one idempotent call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub op: OpKind,
    /// The refund ID for refunds; empty for calls keyed by the receipt alone.
    pub key: String,
    /// Hash of the canonical request: a replay must match it exactly.
    pub fingerprint: Fingerprint,
    pub response: StoredResponse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldStatus {
    Active,
    Captured,
    Released,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Active => "active",
            HoldStatus::Captured => "captured",
            HoldStatus::Released => "released",
        }
    }
}

/// The hold placed by this receipt's authorization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptHold {
    pub hold_id: String,
    pub amount: Decimal,
    pub expires_at: DateTime<Utc>,
    pub status: HoldStatus,
    /// How much of each certificate the capture may use (the caps of the authorized basket).
    #[serde(default)]
    pub certificate_limits: Vec<(u64, Decimal)>,
}

/// Points taken from one bucket by a spend, so that a return restores them where they came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    pub bucket_id: u64,
    pub bucket_receipt_id: Option<String>,
    pub available_from: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub amount: Decimal,
    /// The certificate the bucket was, so that a return restores it as one.
    #[serde(default)]
    pub certificate: Option<crate::account::Certificate>,
}

/// One line of the paid receipt, as accrued, with how much of it came back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedLine {
    pub line_no: u32,
    pub quantity: Decimal,
    pub line_total: Decimal,
    /// Points the line earned.
    pub points: Decimal,
    /// Quantity returned by refunds so far.
    pub returned: Decimal,
    /// The rules that gave `points`; they add up to it.
    #[serde(default)]
    pub applied: Vec<crate::outcome::RulePoints>,
}

/// The accrual that closed the receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accrual {
    pub tx_id: String,
    pub lines: Vec<ClosedLine>,
    pub total: Decimal,
    pub earned: Decimal,
    /// The bucket the earn went into (shared with the day's other earnings), if anything was earned.
    pub bucket_id: Option<u64>,
    /// The program version the receipt was evaluated against.
    #[serde(default)]
    pub program_version: u64,
    /// Per-customer budgets the receipt charged; refunds give back their share.
    #[serde(default)]
    pub budget_charges: Vec<crate::account::RuleCounter>,
    /// The month the receipt's spend counted toward tiers in (see `rules::tiers`).
    #[serde(default)]
    pub tier_month: Option<i32>,
    /// What the buyer's referrers were owed for this receipt.
    #[serde(default)]
    pub referrals: Vec<crate::rules::evaluate::ReferralReward>,
    /// Change kept as points on this receipt (credited apart from `earned`).
    #[serde(default)]
    pub change_points: Decimal,
    /// Whether the accrual was counted in the customer's RFM months (`rfm`): receipts accrued
    /// before they were kept were not, so their refunds and reversal take nothing off.
    #[serde(default)]
    pub rfm_counted: bool,
    /// What the receipt drew on each budgeted campaign (`rules::campaigns`). Refunds give none of
    /// it back. (Last: records are read by position.)
    #[serde(default)]
    pub campaigns: Vec<crate::rules::campaigns::CampaignUse>,
}

/// Everything one receipt did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptState {
    pub receipt_id: String,
    pub account_id: String,
    pub created_at: DateTime<Utc>,
    pub origin: Origin,
    pub hold: Option<ReceiptHold>,
    /// Points spent on the receipt.
    pub spent: Decimal,
    /// The buckets the spend took from, in spending order.
    pub spent_slices: Vec<Slice>,
    /// Spent points given back by refunds and reversal; never above `spent`.
    pub spent_returned: Decimal,
    pub accrual: Option<Accrual>,
    /// Earned points clawed back by refunds and reversal; never above the accrual's `earned`.
    pub earn_clawed: Decimal,
    /// Money value of the lines returned so far; never above the accrual's total.
    pub money_returned: Decimal,
    pub refunds: usize,
    pub reversed: bool,
    /// First responses, one per (op, key).
    pub calls: Vec<CallRecord>,
    /// The program version the receipt's first call used; later calls evaluate against it too.
    #[serde(default)]
    pub program_version: Option<u64>,
    /// When the last call was recorded (absent on receipts written before it was kept: their
    /// `created_at` stands for it). Retention compacts a receipt only once this is past its
    /// horizon. (Last: records are read by position.)
    #[serde(default, with = "crate::timecode::option")]
    pub last_call_at: Option<DateTime<Utc>>,
    /// What the accrual evaluated beyond the closed lines (the sale's instant, channel, coupons
    /// and each line's product), kept so that a candidate rule set can be evaluated on the
    /// receipt again (`whatif`). Absent on receipts accrued before it was kept. (Last: records are
    /// read by position.)
    #[serde(default)]
    pub basket: Option<KeptBasket>,
}

/// What an accrual evaluated that [`ClosedLine`] does not keep: enough, with the closed lines and
/// the points spent, to evaluate the same receipt under other rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptBasket {
    /// The sale's instant (a late receipt's `occurred_at`), which the rules were evaluated at.
    #[serde(with = "crate::timecode")]
    pub sold_at: DateTime<Utc>,
    /// Where the accrual was made (the rules' `when.stores` and `when.tills` looked at it).
    pub store_id: String,
    pub till_id: String,
    pub channel: String,
    pub coupons: Vec<String>,
    /// One per closed line, in the same order.
    pub items: Vec<KeptItem>,
}

/// One line's product, as the till sent it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptItem {
    pub sku: String,
    pub category: String,
    pub brand: String,
    pub unit_price: Decimal,
    pub excise: bool,
    pub promo_price: bool,
}

impl ReceiptState {
    /// Retention: replaces the stored first answers of the receipt's calls by a note of when they
    /// were removed. What refunds and reversals read (the accrual's lines, what was spent, returned
    /// and clawed back, the hold) stays, so they stay exact; a replay of a compacted call is told
    /// that its answer is gone (`RECEIPT_COMPACTED`). Returns whether anything was removed.
    pub fn compact(&mut self, at: DateTime<Utc>) -> bool {
        // The basket is purchase history the what-if reads; past the horizon it goes too.
        let mut removed = self.basket.take().is_some();
        for call in &mut self.calls {
            if !matches!(call.response, StoredResponse::Compacted(_)) {
                call.response = StoredResponse::Compacted(crate::outcome::CompactedAnswer { at });
                removed = true;
            }
        }
        removed
    }

    pub fn new(receipt_id: String, account_id: String, created_at: DateTime<Utc>, origin: Origin) -> Self {
        ReceiptState {
            receipt_id,
            account_id,
            created_at,
            origin,
            hold: None,
            spent: Decimal::ZERO,
            spent_slices: Vec::new(),
            spent_returned: Decimal::ZERO,
            accrual: None,
            earn_clawed: Decimal::ZERO,
            money_returned: Decimal::ZERO,
            refunds: 0,
            reversed: false,
            calls: Vec::new(),
            program_version: None,
            last_call_at: None,
            basket: None,
        }
    }

    /// The recorded first answer to `op` with `key`, if any.
    pub fn call(&self, op: OpKind, key: &str) -> Option<&CallRecord> {
        self.calls.iter().find(|call| call.op == op && call.key == key)
    }

    /// A receipt never returns more than it took; a failure is a bug, never a user error.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.spent_returned > self.spent || self.spent_returned < Decimal::ZERO {
            return Err(format!("receipt {}: returned {} of {} spent", self.receipt_id, self.spent_returned, self.spent));
        }
        let sliced: Decimal = self.spent_slices.iter().map(|slice| slice.amount).sum();
        if sliced != self.spent {
            return Err(format!("receipt {}: slices {} != spent {}", self.receipt_id, sliced, self.spent));
        }
        match &self.accrual {
            Some(accrual) => {
                if self.earn_clawed > accrual.earned + accrual.change_points || self.earn_clawed < Decimal::ZERO {
                    return Err(format!("receipt {}: clawed {} of {} earned", self.receipt_id, self.earn_clawed, accrual.earned));
                }
                if self.money_returned > accrual.total {
                    return Err(format!("receipt {}: returned {} of {}", self.receipt_id, self.money_returned, accrual.total));
                }
                if let Some(line) = accrual.lines.iter().find(|line| line.returned > line.quantity) {
                    return Err(format!(
                        "receipt {}: line {} returned {} of {}",
                        self.receipt_id, line.line_no, line.returned, line.quantity
                    ));
                }
            }
            None => {
                if !self.earn_clawed.is_zero() || !self.money_returned.is_zero() {
                    return Err(format!("receipt {}: returns without an accrual", self.receipt_id));
                }
            }
        }
        Ok(())
    }
}
