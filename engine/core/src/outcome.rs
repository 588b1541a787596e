//! The answers of the checkout operations. They are stored whole with the receipt, so that a replay
//! returns exactly the first answer: the same transaction ID, the same amounts, the same balance.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::account::BalanceView;

/// What one line earns and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineEarn {
    pub line_no: u32,
    /// The money the line earns on: its total less its share of spent points; zero when excluded.
    pub base: Decimal,
    pub points: Decimal,
    pub reason: String,
}

/// What bounds the points a receipt may spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpendLimit {
    ReceiptCap,
    Balance,
    NotRegistered,
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
    pub max_spend: Decimal,
    pub max_spend_limit: SpendLimit,
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
    pub paid_amount: Decimal,
    pub points_spent: Decimal,
    pub available_from: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub balance: BalanceView,
    pub hold_released: Decimal,
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
}
