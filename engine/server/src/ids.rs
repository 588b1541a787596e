//! IDs the engine mints: transactions, accounts, holds and virtual card numbers. Time-ordered
//! UUIDv7 keeps IDs unique across engine processes without coordination, and sorts them by time
//! for support staff reading a ledger.

use loyalty_core::identity::luhn_check_digit;

/// Mints IDs. Injected, so a simulation can make them deterministic.
pub trait IdSource: Send + Sync + std::fmt::Debug + 'static {
    fn transaction_id(&self) -> String;
    fn account_id(&self) -> String;
    fn hold_id(&self) -> String;
    /// A 16-digit card number with a Luhn check digit, starting with 9 (not a payment card range).
    fn virtual_card_number(&self) -> String;
}

/// UUIDv7-based IDs.
#[derive(Clone, Copy, Debug, Default)]
pub struct UuidIds;

impl IdSource for UuidIds {
    fn transaction_id(&self) -> String {
        format!("tx-{}", uuid::Uuid::now_v7().simple())
    }

    fn account_id(&self) -> String {
        format!("acc-{}", uuid::Uuid::now_v7().simple())
    }

    fn hold_id(&self) -> String {
        format!("hold-{}", uuid::Uuid::now_v7().simple())
    }

    fn virtual_card_number(&self) -> String {
        // The random half of a v4 UUID gives 14 digits of entropy; uniqueness is still enforced by
        // the store's claim-once on identifiers.
        let random = uuid::Uuid::new_v4().as_u128() % 100_000_000_000_000;
        let body = format!("9{random:014}");
        let check = luhn_check_digit(&body).unwrap_or(0);
        format!("{body}{check}")
    }
}
