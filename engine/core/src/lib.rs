//! The domain core of the loyalty engine: what a point is, how it is earned, held, spent, returned
//! and expired, and the invariants that make points as safe as money.
//!
//! This crate does no I/O and reads no clock: every operation takes the current time and the IDs it
//! mints as inputs, so a test (or a simulation) replays it exactly. It knows nothing of gRPC or of
//! any storage engine; the server maps its types to the wire and the store persists them.
//!
//! Principal types:
//! - [`account::AccountState`]: an account's earn buckets, holds and debt, and the running ledger sum.
//! - [`txn::Txn`]: a working copy of one account during one operation; it appends
//!   [`ledger::LedgerEntry`]s and asserts the invariants before it hands the new state back.
//! - [`receipt::ReceiptState`]: what one receipt did (hold, spend, accrual, refunds) and the first
//!   responses of the calls made on it, for idempotent replays.
//! - [`ops`]: the checkout operations (quote, authorize, redeem, accrue, refund, reverse), the
//!   enrolment bonuses, and bonuses outside a purchase (events, manual adjustments, schedule
//!   awards, credits owed by other accounts, expiry notices).
//! - [`enrolment`]: a customer registered by phone (welcome bonuses, card fee, referral chain), and
//!   the erasure of their personal data.
//! - [`program::ProgramPolicy`]: a program's policy (currency, rounding, pending period, expiry,
//!   holds, spending cap, refund policy); [`basket`]: the till's basket and its checks.
//! - [`identity`]: how a till names a customer (phone, card, app token) and their normal forms;
//!   [`presence`]: the one-time codes that prove the customer is at the till before spending.
//! - [`outcome`]: the answers of the operations, stored whole for replays; [`fingerprint`]: the
//!   request fingerprints a replay must match.
//! - [`events`]: the outbox events a change writes, and the credits it owes other accounts (a
//!   merge's transfer among them).
//! - [`figures`]: what each commit adds to its program's figures, folded by day and store into
//!   the reports the business judges the program by.
//! - [`rfm`]: each customer's recency, frequency and monetary scores and their named segment
//!   ("at_risk"), from counters the account keeps, usable by rules and counted by the sweep.
//! - [`cards`]: a registered customer's lost card replaced, the old one blocked.
//! - [`profile`]: changes to the customer's profile and consents after enrolment, audited by name.
//! - [`merge`]: an anonymous card's account merged into a registered customer's, exactly once.
//! - [`import`]: a customer brought from another platform, with balances exact to the bucket.
//! - [`offline`]: receipts a till sends late, evaluated as of the sale, within the program's bound.
//! - [`rules`]: the rules engine: a program's earning and spending rules, compiled and indexed,
//!   evaluated in memory with an explanation per line.
//! - [`whatif`]: a candidate rule set evaluated again on accrued receipts, beside what the rules in
//!   force gave, per rule and in total, with the change in liability.
//! - [`rejection::Rejection`]: every reason an operation refuses, with a stable code.
//! - Helpers: [`allocate`] (exact proportional splits of an amount across lines) and [`timecode`]
//!   (how instants are encoded in stored state).

pub mod account;
pub mod allocate;
pub mod basket;
pub mod cards;
pub mod enrolment;
pub mod events;
pub mod figures;
pub mod fingerprint;
pub mod identity;
pub mod import;
pub mod ledger;
pub mod merge;
pub mod offline;
pub mod ops;
pub mod outcome;
pub mod presence;
pub mod profile;
pub mod program;
pub mod receipt;
pub mod rejection;
pub mod rfm;
pub mod rules;
pub mod timecode;
pub mod txn;
pub mod whatif;

pub use rust_decimal::Decimal;

/// Where a call came from: the store and till, and the credential that made it, recorded in every
/// ledger entry for support and audit.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    pub store_id: String,
    pub till_id: String,
    /// The credential (API key ID) that made the call, or `system:<job>` for the engine's own
    /// jobs. Not part of a call's fingerprint (see [`Origin::place`]): the same call retried
    /// through another key of the same till is still the same call.
    #[serde(default)]
    pub actor: String,
}

impl Origin {
    /// Where the call came from, without who made it: what a call's fingerprint covers. Encodes
    /// exactly as origins did before they had an actor, so stored fingerprints still match.
    pub fn place(&self) -> (&str, &str) {
        (&self.store_id, &self.till_id)
    }

    /// An origin of the engine's own work (the sweep, referral credits): `system:<job>`.
    pub fn system(job: &str) -> Origin {
        Origin { store_id: job.to_owned(), till_id: job.to_owned(), actor: format!("system:{job}") }
    }
}
