//! Ledger entries: the append-only record of every change to an account's balance. The balance is
//! always the sum of its ledger; nothing changes points without an entry saying why.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Why the balance changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// Points earned on a receipt.
    Earn,
    /// Points spent on a receipt.
    Spend,
    /// Points that reached their expiry unspent.
    Expire,
    /// Spent points given back by a reversal or a refund.
    ReturnSpent,
    /// Earned points taken back by a reversal or a refund.
    Clawback,
    /// Points given by an enrolment or event rule (welcome bonus, review bonus).
    Bonus,
    /// A manual change by the program's staff, always with a reason; either sign.
    Adjustment,
    /// Points moved by a merge of two accounts: out of the merged card's account (negative), into
    /// the customer's (positive, one entry per bucket with its own expiry); debt moves the same way.
    Merge,
    /// A balance brought from the platform a program moved from (`import`): one entry per bucket,
    /// with the bucket's own pending period and expiry.
    Opening,
}

/// One change to an account's balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Position in the account's ledger: 1, 2, 3... with no gaps.
    pub seq: u64,
    /// The operation that wrote it; one operation may write several entries.
    pub tx_id: String,
    pub kind: EntryKind,
    /// Signed: credits positive, debits negative.
    pub amount: Decimal,
    /// The balance right after this entry (the running sum of the ledger).
    pub balance_after: Decimal,
    pub at: DateTime<Utc>,
    pub receipt_id: Option<String>,
    pub refund_id: Option<String>,
    pub store_id: String,
    pub till_id: String,
    /// Human-readable cause, for support ("1% cashback on 3 of 4 lines").
    pub reason: String,
    /// For earn entries: the bucket's pending end and expiry.
    pub available_from: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The rules that gave the points (earn and bonus entries), so support can say why.
    #[serde(default)]
    pub rule_ids: Vec<String>,
    /// The program version that was evaluated (earn and bonus entries).
    #[serde(default)]
    pub program_version: Option<u64>,
    /// Who made the change: the credential (API key ID) of the call, `system:<job>` for the
    /// engine's own jobs; empty on entries written before credentials existed. The audit trail of
    /// balance changes, kept with the ledger.
    #[serde(default)]
    pub actor: String,
}
