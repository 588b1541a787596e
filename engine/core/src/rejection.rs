//! Every reason the domain refuses an operation. Rejections are data, not failures: each has a
//! stable code (mirrored in the gRPC error details) so that tills can act on it without parsing text.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// Why an operation was refused. The server maps each variant to one gRPC status in one place.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A request field is malformed or out of range.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// No customer with this identifier in the program.
    #[error("customer not found")]
    CustomerNotFound,
    /// The receipt is unknown in the program.
    #[error("receipt {receipt_id} not found")]
    ReceiptNotFound { receipt_id: String },
    /// The named hold does not exist on this receipt.
    #[error("hold {hold_id} not found on this receipt")]
    HoldNotFound { hold_id: String },
    /// Not enough spendable points.
    #[error("insufficient points: requested {requested}, spendable {spendable}")]
    InsufficientPoints { requested: Decimal, spendable: Decimal },
    /// The program caps the share of a receipt points may pay.
    #[error("requested {requested} points exceed this receipt's cap of {cap}")]
    ExceedsReceiptCap { requested: Decimal, cap: Decimal },
    /// The spendable balance is below the program's minimum for spending.
    #[error("spending starts at {minimum} points; {spendable} are spendable")]
    BelowMinimumBalance { minimum: Decimal, spendable: Decimal },
    /// No active rule pays for this event.
    #[error("the program pays no bonus for the event '{event}'")]
    UnknownEvent { event: String },
    /// Only a registered card may spend.
    #[error("the card is not registered: only registered cards may spend points")]
    CardNotRegistered,
    /// The hold's time ran out; its points are spendable again.
    #[error("hold {hold_id} expired")]
    HoldExpired { hold_id: String },
    /// The hold was already captured or released.
    #[error("hold {hold_id} is already {state}")]
    HoldClosed { hold_id: String, state: &'static str },
    /// A capture asked for more than the hold reserved.
    #[error("capture of {requested} exceeds the hold of {held}")]
    CaptureExceedsHold { requested: Decimal, held: Decimal },
    /// The receipt was already accrued (closed): it takes no more holds or spends.
    #[error("receipt {receipt_id} is already closed")]
    ReceiptClosed { receipt_id: String },
    /// The receipt was cancelled.
    #[error("receipt {receipt_id} was reversed")]
    ReceiptReversed { receipt_id: String },
    /// A refund needs the receipt's accrual (its final lines).
    #[error("receipt {receipt_id} has no accrual yet: refunds follow a paid receipt")]
    ReceiptNotClosed { receipt_id: String },
    /// Refunds together may never return more of a line than the receipt had.
    #[error("line {line_no}: returning {requested} exceeds the {remaining} not yet returned")]
    RefundExceedsReceipt { line_no: u32, requested: Decimal, remaining: Decimal },
    /// The program's policy forbids a negative balance and the points to claw back were spent.
    #[error("cannot claw back {needed} points: only {coverable} are left and the program forbids debt")]
    ClawbackExceedsBalance { needed: Decimal, coverable: Decimal },
    /// The idempotency key was used before with a different payload.
    #[error("{kind} {key} was already used with a different request")]
    IdempotencyConflict { kind: &'static str, key: String },
    /// The phone number is already registered in the program.
    #[error("this phone number is already registered")]
    PhoneAlreadyRegistered,
    /// The card or app token is already bound to a registered customer.
    #[error("this {kind} is already bound to another customer")]
    IdentifierTaken { kind: &'static str },
    /// Spending by this customer needs a code from the app or a message (program policy).
    #[error("spending needs the customer's one-time code (from the app, or sent by message)")]
    CustomerCodeRequired,
    /// The code is wrong, expired or already used; the attempt was counted.
    #[error("the customer's code is wrong or expired; {attempts_left} attempts left before spending is locked")]
    CustomerCodeInvalid { attempts_left: u32 },
    /// Too many wrong codes: spending is locked for a while (earning goes on).
    #[error("spending is locked after too many wrong codes, until {until}")]
    CustomerLocked { until: DateTime<Utc> },
    /// The card was replaced (lost): the till asks for the new card.
    #[error("this card was replaced on {replaced_at}: present the customer's new card")]
    CardBlocked { replaced_at: DateTime<Utc> },
    /// A replay of a call whose stored first answer retention removed: the call was applied once
    /// (its effect is in the ledger); only the answer is gone.
    #[error("receipt {receipt_id}: this call was applied once; its stored answer was removed by retention on {at}")]
    ReceiptCompacted { receipt_id: String, at: DateTime<Utc> },
    /// The account had its codes for this hour.
    #[error("too many codes issued for this customer; the next one may be issued at {next}")]
    CodeIssueLimit { next: DateTime<Utc> },
}

/// Defines [`Rejection::code`] and [`Rejection::ALL_CODES`] from one list of `variant => code`
/// arms. `code` matches without a wildcard, so a new variant does not compile until it has an arm
/// here, and then its code is in `ALL_CODES` too: the list of codes cannot fall behind the type.
macro_rules! rejection_codes {
    ($($variant:ident $({ $rest:tt })? => $code:literal,)*) => {
        impl Rejection {
            /// Every code a rejection can have, one per variant (what the proto must list).
            pub const ALL_CODES: &'static [&'static str] = &[$($code),*];

            /// A stable machine-readable code, sent as `google.rpc.ErrorInfo.reason`.
            pub fn code(&self) -> &'static str {
                match self {
                    $(Rejection::$variant $({ $rest })? => $code,)*
                }
            }
        }
    };
}

rejection_codes! {
    InvalidArgument { .. } => "INVALID_ARGUMENT",
    CustomerNotFound => "CUSTOMER_NOT_FOUND",
    ReceiptNotFound { .. } => "RECEIPT_NOT_FOUND",
    HoldNotFound { .. } => "HOLD_NOT_FOUND",
    InsufficientPoints { .. } => "INSUFFICIENT_POINTS",
    ExceedsReceiptCap { .. } => "EXCEEDS_RECEIPT_CAP",
    CardNotRegistered => "CARD_NOT_REGISTERED",
    BelowMinimumBalance { .. } => "BELOW_MINIMUM_BALANCE",
    UnknownEvent { .. } => "UNKNOWN_EVENT",
    HoldExpired { .. } => "HOLD_EXPIRED",
    HoldClosed { .. } => "HOLD_CLOSED",
    CaptureExceedsHold { .. } => "CAPTURE_EXCEEDS_HOLD",
    ReceiptClosed { .. } => "RECEIPT_CLOSED",
    ReceiptReversed { .. } => "RECEIPT_REVERSED",
    ReceiptNotClosed { .. } => "RECEIPT_NOT_CLOSED",
    RefundExceedsReceipt { .. } => "REFUND_EXCEEDS_RECEIPT",
    ClawbackExceedsBalance { .. } => "CLAWBACK_EXCEEDS_BALANCE",
    IdempotencyConflict { .. } => "IDEMPOTENCY_CONFLICT",
    PhoneAlreadyRegistered => "PHONE_ALREADY_REGISTERED",
    IdentifierTaken { .. } => "IDENTIFIER_TAKEN",
    CustomerCodeRequired => "CUSTOMER_CODE_REQUIRED",
    CustomerCodeInvalid { .. } => "CUSTOMER_CODE_INVALID",
    CustomerLocked { .. } => "CUSTOMER_LOCKED",
    CodeIssueLimit { .. } => "CODE_ISSUE_LIMIT",
    CardBlocked { .. } => "CARD_BLOCKED",
    ReceiptCompacted { .. } => "RECEIPT_COMPACTED",
}

impl Rejection {
    /// A refusal that changed the account (a counted failed code attempt, a lock-out): the engine
    /// stores the account even though the call is refused, or the attempt limit would mean nothing.
    pub fn records_attempt(&self) -> bool {
        matches!(self, Rejection::CustomerCodeInvalid { .. } | Rejection::CustomerLocked { .. })
    }

    /// Shorthand for a bad field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Rejection::InvalidArgument { field: field.into(), reason: reason.into() }
    }
}
