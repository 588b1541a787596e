//! IDs the engine mints: transactions, accounts, holds and virtual card numbers. Time-ordered
//! UUIDv7 keeps IDs unique across engine processes without coordination, and sorts them by time
//! for support staff reading a ledger.
//!
//! New accounts and virtual cards are the exception: their IDs derive from what creates them (the
//! enrolment's request ID, the unknown card's number). A retry of a creation whose outcome was
//! lost, on any engine process, then names the same account, so a claim the first attempt made
//! (ScyllaDB claims identifiers before it writes the account) belongs to the retry too, and two
//! racing attempts compete for one account instead of making two.

use loyalty_core::identity::luhn_check_digit;

/// Mints IDs. Injected, so a simulation can make them deterministic.
pub trait IdSource: Send + Sync + std::fmt::Debug + 'static {
    fn transaction_id(&self) -> String;
    /// The account created by `origin` (e.g. `enroll/<program>/<request>`): the same origin always
    /// gives the same ID.
    fn account_id(&self, origin: &str) -> String;
    fn hold_id(&self) -> String;
    /// A 16-digit card number with a Luhn check digit, starting with 9 (not a payment card range),
    /// the same for the same origin.
    fn virtual_card_number(&self, origin: &str) -> String;
}

/// 128 bits of SHA-256 of `origin`.
fn digest(origin: &str) -> u128 {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(origin.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    u128::from_be_bytes(bytes)
}

/// UUIDv7-based IDs.
#[derive(Clone, Copy, Debug, Default)]
pub struct UuidIds;

impl IdSource for UuidIds {
    fn transaction_id(&self) -> String {
        format!("tx-{}", uuid::Uuid::now_v7().simple())
    }

    fn account_id(&self, origin: &str) -> String {
        format!("acc-{:032x}", digest(origin))
    }

    fn hold_id(&self) -> String {
        format!("hold-{}", uuid::Uuid::now_v7().simple())
    }

    fn virtual_card_number(&self, origin: &str) -> String {
        // 14 digits of the origin's digest; uniqueness is still enforced by the store's claim-once
        // on identifiers.
        let digits = digest(origin) % 100_000_000_000_000;
        let body = format!("9{digits:014}");
        let check = luhn_check_digit(&body).unwrap_or(0);
        format!("{body}{check}")
    }
}
