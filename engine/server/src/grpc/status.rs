//! The one place where engine errors become gRPC statuses. Every status carries
//! `google.rpc.ErrorInfo` with a stable reason code, and bad input also `google.rpc.BadRequest`
//! naming the field, so tills can react without parsing messages. (A body that does not decode
//! never reaches the engine: `loyalty_proto::codec` answers it, INVALID_ARGUMENT
//! `MALFORMED_MESSAGE` in the same domain.)

use std::collections::HashMap;

use loyalty_core::rejection::Rejection;
use loyalty_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::EngineError;

/// The `ErrorInfo.domain` of every error (shared with the codec's).
pub use loyalty_proto::codec::ERROR_DOMAIN;

/// Defines `code_and_reason`, the gRPC code and `ErrorInfo.reason` of every engine error, and (for
/// the tests) `FIXED_REASONS`, the reasons of the `fixed` arms. The match has no wildcard: a new
/// `EngineError` variant does not compile until it has an arm here, and a fixed arm's reason is in
/// `FIXED_REASONS` as soon as it is written. The `delegated` arms take the reason from their
/// error's own list ([`Rejection::ALL_CODES`], [`crate::error::AuthFailure::ALL_CODES`]).
macro_rules! wire_reasons {
    (
        delegated: { $($delegated:pat => $value:expr,)* }
        fixed: { $($fixed:pat => ($code:expr, $reason:literal),)* }
    ) => {
        /// The gRPC code and the `ErrorInfo.reason` of an engine error.
        fn code_and_reason(error: &EngineError) -> (Code, &'static str) {
            match error {
                $($delegated => $value,)*
                $($fixed => ($code, $reason),)*
            }
        }

        /// The reasons of the errors that are neither a rejection nor an authentication failure.
        #[cfg(test)]
        const FIXED_REASONS: &[&str] = &[$($reason),*];
    };
}

wire_reasons! {
    delegated: {
        EngineError::Rejected(rejection) => (rejection_code(rejection), rejection.code()),
        EngineError::Unauthenticated(failure) => (Code::Unauthenticated, failure.code()),
    }
    fixed: {
        EngineError::ProgramNotFound(_) => (Code::NotFound, "PROGRAM_NOT_FOUND"),
        EngineError::Store(StoreError::Corrupt(_)) => (Code::Internal, "STORE_CORRUPT"),
        EngineError::Store(_) => (Code::Unavailable, "STORE_UNAVAILABLE"),
        EngineError::Invariant(_) => (Code::Internal, "INVARIANT_BROKEN"),
        EngineError::Contention { .. } | EngineError::AccountMoved | EngineError::CampaignBudgetShort => (Code::Aborted, "CONTENTION"),
        EngineError::Overloaded { .. } | EngineError::Saturated { .. } => (Code::ResourceExhausted, "OVERLOADED"),
        EngineError::RulesInvalid(_) => (Code::InvalidArgument, "RULES_INVALID"),
        EngineError::RulesVersionConflict { .. } => (Code::Aborted, "RULES_VERSION_CONFLICT"),
        EngineError::RuleNotFound(_) => (Code::NotFound, "RULE_NOT_FOUND"),
        EngineError::PermissionDenied { .. } => (Code::PermissionDenied, "PERMISSION_DENIED"),
        EngineError::RateLimited { .. } => (Code::ResourceExhausted, "RATE_LIMITED"),
        EngineError::DeadlineExceeded => (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
        EngineError::AccessVersionConflict { .. } => (Code::Aborted, "ACCESS_VERSION_CONFLICT"),
        EngineError::CredentialNotFound(_) => (Code::NotFound, "CREDENTIAL_NOT_FOUND"),
        EngineError::MessageTooLarge { .. } => (Code::ResourceExhausted, "MESSAGE_TOO_LARGE"),
        EngineError::ShuttingDown => (Code::Unavailable, "SHUTTING_DOWN"),
        EngineError::NotSandbox(_) => (Code::FailedPrecondition, "NOT_A_SANDBOX"),
        EngineError::BackupUnavailable(_) => (Code::FailedPrecondition, "BACKUP_UNAVAILABLE"),
        EngineError::Internal(_) => (Code::Internal, "INTERNAL"),
    }
}

/// Maps an engine error to its status.
pub fn to_status(error: &EngineError) -> Status {
    let message = error.to_string();
    let (code, reason) = code_and_reason(error);
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata(error));
    if let EngineError::Rejected(Rejection::InvalidArgument { field, reason }) = error {
        details.add_bad_request_violation(field.clone(), reason.clone());
    }
    if let EngineError::RulesInvalid(invalid) = error {
        for problem in &invalid.problems {
            details.add_bad_request_violation(problem.at.clone(), problem.reason.clone());
        }
    }
    Status::with_error_details(code, message, details)
}

fn rejection_code(rejection: &Rejection) -> Code {
    match rejection {
        Rejection::InvalidArgument { .. } => Code::InvalidArgument,
        Rejection::CustomerNotFound | Rejection::ReceiptNotFound { .. } | Rejection::HoldNotFound { .. } => Code::NotFound,
        Rejection::InsufficientPoints { .. }
        | Rejection::ExceedsReceiptCap { .. }
        | Rejection::CardNotRegistered
        | Rejection::HoldExpired { .. }
        | Rejection::HoldClosed { .. }
        | Rejection::CaptureExceedsHold { .. }
        | Rejection::ReceiptClosed { .. }
        | Rejection::ReceiptReversed { .. }
        | Rejection::ReceiptNotClosed { .. }
        | Rejection::RefundExceedsReceipt { .. }
        | Rejection::ClawbackExceedsBalance { .. }
        | Rejection::BelowMinimumBalance { .. } => Code::FailedPrecondition,
        Rejection::UnknownEvent { .. } => Code::NotFound,
        Rejection::IdempotencyConflict { .. } | Rejection::PhoneAlreadyRegistered | Rejection::IdentifierTaken { .. } => {
            Code::AlreadyExists
        }
        Rejection::CustomerCodeRequired | Rejection::CardBlocked { .. } | Rejection::ReceiptCompacted { .. } => Code::FailedPrecondition,
        Rejection::CustomerCodeInvalid { .. } | Rejection::CustomerLocked { .. } => Code::PermissionDenied,
        Rejection::CodeIssueLimit { .. } => Code::ResourceExhausted,
    }
}

/// Machine-readable facts of an error (amounts, IDs), never personal data.
fn metadata(error: &EngineError) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let rejection = match error {
        EngineError::Rejected(rejection) => rejection,
        EngineError::RulesVersionConflict { current, .. } | EngineError::AccessVersionConflict { current, .. } => {
            map.insert("current_version".to_owned(), current.to_string());
            return map;
        }
        EngineError::RateLimited { retry_after, .. } => {
            map.insert("retry_after_ms".to_owned(), retry_after.as_millis().max(1).to_string());
            return map;
        }
        EngineError::PermissionDenied { credential_id, .. } => {
            map.insert("credential_id".to_owned(), credential_id.clone());
            return map;
        }
        EngineError::MessageTooLarge { bytes, limit } => {
            map.insert("bytes".to_owned(), bytes.to_string());
            map.insert("limit".to_owned(), limit.to_string());
            return map;
        }
        _ => return map,
    };
    let mut put = |key: &str, value: String| {
        map.insert(key.to_owned(), value);
    };
    match rejection {
        Rejection::InsufficientPoints { requested, spendable } => {
            put("requested", requested.to_string());
            put("spendable", spendable.to_string());
        }
        Rejection::ExceedsReceiptCap { requested, cap } => {
            put("requested", requested.to_string());
            put("cap", cap.to_string());
        }
        Rejection::CaptureExceedsHold { requested, held } => {
            put("requested", requested.to_string());
            put("held", held.to_string());
        }
        Rejection::RefundExceedsReceipt { line_no, requested, remaining } => {
            put("line_no", line_no.to_string());
            put("requested", requested.to_string());
            put("remaining", remaining.to_string());
        }
        Rejection::ClawbackExceedsBalance { needed, coverable } => {
            put("needed", needed.to_string());
            put("coverable", coverable.to_string());
        }
        Rejection::IdempotencyConflict { kind, key } => {
            put("key_kind", (*kind).to_owned());
            put("key", key.clone());
        }
        Rejection::ReceiptNotFound { receipt_id }
        | Rejection::ReceiptClosed { receipt_id }
        | Rejection::ReceiptReversed { receipt_id }
        | Rejection::ReceiptNotClosed { receipt_id } => put("receipt_id", receipt_id.clone()),
        Rejection::HoldNotFound { hold_id } | Rejection::HoldExpired { hold_id } | Rejection::HoldClosed { hold_id, .. } => {
            put("hold_id", hold_id.clone())
        }
        Rejection::InvalidArgument { field, .. } => put("field", field.clone()),
        Rejection::BelowMinimumBalance { minimum, spendable } => {
            put("minimum", minimum.to_string());
            put("spendable", spendable.to_string());
        }
        Rejection::UnknownEvent { event } => put("event", event.clone()),
        Rejection::CustomerCodeInvalid { attempts_left } => put("attempts_left", attempts_left.to_string()),
        Rejection::CustomerLocked { until } => put("locked_until", until.to_rfc3339()),
        Rejection::CodeIssueLimit { next } => put("next_at", next.to_rfc3339()),
        Rejection::CardBlocked { replaced_at } => put("replaced_at", replaced_at.to_rfc3339()),
        Rejection::ReceiptCompacted { receipt_id, at } => {
            put("receipt_id", receipt_id.clone());
            put("compacted_at", at.to_rfc3339());
        }
        Rejection::CustomerNotFound
        | Rejection::CustomerCodeRequired
        | Rejection::CardNotRegistered
        | Rejection::PhoneAlreadyRegistered
        | Rejection::IdentifierTaken { .. } => {}
    }
    map
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use chrono::DateTime;
    use loyalty_core::rules::{RuleProblem, RuleSetError};
    use loyalty_core::txn::InvariantBroken;
    use rust_decimal::Decimal;

    use super::*;
    use crate::error::AuthFailure;

    /// The proto file that lists every reason a client can see, read from the repository.
    const ERRORS_PROTO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto/loyalty/v1/errors.proto");

    /// Every reason the engine can put on the wire, from the lists the error types keep exhaustive
    /// (see `wire_reasons!`), and the codec's one reason for a body that never reaches the engine.
    fn wire_reasons() -> BTreeSet<&'static str> {
        let mut reasons: BTreeSet<&'static str> = Rejection::ALL_CODES.iter().copied().collect();
        reasons.extend(AuthFailure::ALL_CODES);
        reasons.extend(FIXED_REASONS);
        reasons.insert(loyalty_proto::codec::MALFORMED_MESSAGE);
        reasons
    }

    /// The values of `enum ErrorReason` in the proto text, each with its comment (the lines of
    /// `//` right above it, joined).
    fn proto_reasons() -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(ERRORS_PROTO).unwrap_or_else(|error| panic!("read {ERRORS_PROTO}: {error}"));
        let body = text.split_once("enum ErrorReason {").map(|(_, rest)| rest).expect("errors.proto declares enum ErrorReason");
        let body = body.split_once('}').map_or(body, |(body, _)| body);
        let mut reasons = BTreeMap::new();
        let mut comment = Vec::new();
        for line in body.lines().map(str::trim) {
            if let Some(words) = line.strip_prefix("//") {
                comment.push(words.trim());
            } else if let Some((name, _number)) = line.strip_suffix(';').and_then(|value| value.split_once('=')) {
                reasons.insert(name.trim().to_owned(), comment.join(" "));
                comment.clear();
            } else {
                comment.clear();
            }
        }
        reasons
    }

    /// A gRPC code as the proto comments spell it: `FAILED_PRECONDITION`.
    fn code_name(code: Code) -> String {
        let mut name = String::new();
        for (index, letter) in format!("{code:?}").chars().enumerate() {
            if letter.is_ascii_uppercase() && index > 0 {
                name.push('_');
            }
            name.push(letter.to_ascii_uppercase());
        }
        name
    }

    /// One error of every kind the engine can answer; `every_reason_has_an_example` checks that
    /// the list falls behind no reason.
    fn every_error() -> Vec<EngineError> {
        let d = Decimal::ONE;
        let at = DateTime::UNIX_EPOCH;
        let id = || "x".to_owned();
        let rejections = vec![
            Rejection::InvalidArgument { field: id(), reason: id() },
            Rejection::CustomerNotFound,
            Rejection::ReceiptNotFound { receipt_id: id() },
            Rejection::HoldNotFound { hold_id: id() },
            Rejection::InsufficientPoints { requested: d, spendable: d },
            Rejection::ExceedsReceiptCap { requested: d, cap: d },
            Rejection::BelowMinimumBalance { minimum: d, spendable: d },
            Rejection::UnknownEvent { event: id() },
            Rejection::CardNotRegistered,
            Rejection::HoldExpired { hold_id: id() },
            Rejection::HoldClosed { hold_id: id(), state: "captured" },
            Rejection::CaptureExceedsHold { requested: d, held: d },
            Rejection::ReceiptClosed { receipt_id: id() },
            Rejection::ReceiptReversed { receipt_id: id() },
            Rejection::ReceiptNotClosed { receipt_id: id() },
            Rejection::RefundExceedsReceipt { line_no: 1, requested: d, remaining: d },
            Rejection::ClawbackExceedsBalance { needed: d, coverable: d },
            Rejection::IdempotencyConflict { kind: "receipt_id", key: id() },
            Rejection::PhoneAlreadyRegistered,
            Rejection::IdentifierTaken { kind: "card" },
            Rejection::CustomerCodeRequired,
            Rejection::CustomerCodeInvalid { attempts_left: 1 },
            Rejection::CustomerLocked { until: at },
            Rejection::CodeIssueLimit { next: at },
            Rejection::CardBlocked { replaced_at: at },
            Rejection::ReceiptCompacted { receipt_id: id(), at },
        ];
        let failures =
            [AuthFailure::Missing, AuthFailure::Malformed, AuthFailure::Unknown, AuthFailure::Revoked, AuthFailure::CertificateMismatch];
        let store_errors = [StoreError::Io(id()), StoreError::Corrupt(id()), StoreError::Poisoned, StoreError::Closed];
        let mut errors: Vec<EngineError> = rejections.into_iter().map(EngineError::Rejected).collect();
        errors.extend(failures.map(EngineError::Unauthenticated));
        errors.extend(store_errors.map(EngineError::Store));
        errors.extend([
            EngineError::ProgramNotFound(id()),
            EngineError::Invariant(InvariantBroken { account_id: id(), detail: id() }),
            EngineError::Contention { attempts: 8 },
            EngineError::Overloaded { limit: 1 },
            EngineError::Saturated { delay_ms: 1 },
            EngineError::RulesInvalid(RuleSetError { problems: vec![RuleProblem { at: id(), reason: id() }] }),
            EngineError::RulesVersionConflict { program_id: id(), current: 2 },
            EngineError::RuleNotFound(id()),
            EngineError::PermissionDenied { credential_id: id(), why: "scope" },
            EngineError::RateLimited { credential_id: id(), retry_after: Duration::from_millis(5) },
            EngineError::DeadlineExceeded,
            EngineError::AccessVersionConflict { program_id: id(), current: 2 },
            EngineError::CredentialNotFound(id()),
            EngineError::MessageTooLarge { bytes: 2, limit: 1 },
            EngineError::ShuttingDown,
            EngineError::NotSandbox(id()),
            EngineError::AccountMoved,
            EngineError::CampaignBudgetShort,
            EngineError::BackupUnavailable("off"),
            EngineError::Internal(id()),
        ]);
        errors
    }

    /// Each example's status, and the codec's for a body that does not decode.
    fn every_status() -> Vec<(String, Status)> {
        let mut statuses: Vec<(String, Status)> = every_error().iter().map(|error| (format!("{error:?}"), to_status(error))).collect();
        statuses.push(("an undecodable body".to_owned(), loyalty_proto::codec::malformed_message_status("truncated")));
        statuses
    }

    fn reason(status: &Status) -> String {
        let info = status.get_details_error_info().expect("every status carries ErrorInfo");
        assert_eq!(info.domain, ERROR_DOMAIN);
        info.reason
    }

    #[test]
    fn every_reason_the_engine_answers_is_in_the_proto_and_every_proto_reason_is_answered() {
        let proto: BTreeSet<String> = proto_reasons().into_keys().filter(|name| name != "ERROR_REASON_UNSPECIFIED").collect();
        let answered: BTreeSet<String> = wire_reasons().into_iter().map(str::to_owned).collect();
        let missing: Vec<&String> = answered.difference(&proto).collect();
        assert!(missing.is_empty(), "the engine answers reasons that {ERRORS_PROTO} does not list in ErrorReason: {missing:?}");
        let unused: Vec<&String> = proto.difference(&answered).collect();
        assert!(unused.is_empty(), "{ERRORS_PROTO} lists reasons that the engine never answers: {unused:?}");
    }

    #[test]
    fn every_reason_has_an_example_that_answers_it() {
        let answered: BTreeSet<String> = every_status().iter().map(|(_, status)| reason(status)).collect();
        let expected: BTreeSet<String> = wire_reasons().into_iter().map(str::to_owned).collect();
        assert_eq!(answered, expected, "every_error() has one error of every reason");
    }

    #[test]
    fn every_reason_comes_with_the_grpc_code_its_proto_comment_names() {
        let proto = proto_reasons();
        for (what, status) in every_status() {
            let reason = reason(&status);
            let comment = proto.get(&reason).unwrap_or_else(|| panic!("{what}: reason {reason} is not in {ERRORS_PROTO}"));
            let code = code_name(status.code());
            assert!(
                comment.starts_with(&code),
                "{what} answers {code} with reason {reason}, whose comment in {ERRORS_PROTO} says otherwise: {comment:?}"
            );
        }
    }
}
