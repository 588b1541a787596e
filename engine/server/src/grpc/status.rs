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

/// Maps an engine error to its status.
pub fn to_status(error: &EngineError) -> Status {
    let message = error.to_string();
    let (code, reason) = match error {
        EngineError::Rejected(rejection) => (rejection_code(rejection), rejection.code()),
        EngineError::ProgramNotFound(_) => (Code::NotFound, "PROGRAM_NOT_FOUND"),
        EngineError::Store(StoreError::Corrupt(_)) => (Code::Internal, "STORE_CORRUPT"),
        EngineError::Store(_) => (Code::Unavailable, "STORE_UNAVAILABLE"),
        EngineError::Invariant(_) => (Code::Internal, "INVARIANT_BROKEN"),
        EngineError::Contention { .. } | EngineError::AccountMoved => (Code::Aborted, "CONTENTION"),
        EngineError::Overloaded { .. } | EngineError::Saturated { .. } => (Code::ResourceExhausted, "OVERLOADED"),
        EngineError::RulesInvalid(_) => (Code::InvalidArgument, "RULES_INVALID"),
        EngineError::RulesVersionConflict { .. } => (Code::Aborted, "RULES_VERSION_CONFLICT"),
        EngineError::RuleNotFound(_) => (Code::NotFound, "RULE_NOT_FOUND"),
        EngineError::Unauthenticated(failure) => (Code::Unauthenticated, failure.code()),
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
    };
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
        Rejection::CustomerCodeRequired | Rejection::CardBlocked { .. } => Code::FailedPrecondition,
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
    use std::collections::BTreeSet;
    use std::time::Duration;

    use chrono::DateTime;
    use loyalty_core::rules::{RuleProblem, RuleSetError};
    use loyalty_core::txn::InvariantBroken;
    use loyalty_proto::v1::ErrorReason;
    use rust_decimal::Decimal;

    use super::*;
    use crate::error::AuthFailure;

    /// One error of every kind the engine can answer. Each match below has no wildcard, so a new
    /// variant does not compile until it is listed here, and so checked against the proto.
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
        ];
        for rejection in &rejections {
            match rejection {
                Rejection::InvalidArgument { .. }
                | Rejection::CustomerNotFound
                | Rejection::ReceiptNotFound { .. }
                | Rejection::HoldNotFound { .. }
                | Rejection::InsufficientPoints { .. }
                | Rejection::ExceedsReceiptCap { .. }
                | Rejection::BelowMinimumBalance { .. }
                | Rejection::UnknownEvent { .. }
                | Rejection::CardNotRegistered
                | Rejection::HoldExpired { .. }
                | Rejection::HoldClosed { .. }
                | Rejection::CaptureExceedsHold { .. }
                | Rejection::ReceiptClosed { .. }
                | Rejection::ReceiptReversed { .. }
                | Rejection::ReceiptNotClosed { .. }
                | Rejection::RefundExceedsReceipt { .. }
                | Rejection::ClawbackExceedsBalance { .. }
                | Rejection::IdempotencyConflict { .. }
                | Rejection::PhoneAlreadyRegistered
                | Rejection::IdentifierTaken { .. }
                | Rejection::CustomerCodeRequired
                | Rejection::CustomerCodeInvalid { .. }
                | Rejection::CustomerLocked { .. }
                | Rejection::CodeIssueLimit { .. }
                | Rejection::CardBlocked { .. } => {}
            }
        }
        let failures =
            [AuthFailure::Missing, AuthFailure::Malformed, AuthFailure::Unknown, AuthFailure::Revoked, AuthFailure::CertificateMismatch];
        for failure in failures {
            match failure {
                AuthFailure::Missing
                | AuthFailure::Malformed
                | AuthFailure::Unknown
                | AuthFailure::Revoked
                | AuthFailure::CertificateMismatch => {}
            }
        }
        let store_errors = [StoreError::Io(id()), StoreError::Corrupt(id()), StoreError::Poisoned, StoreError::Closed];
        for error in &store_errors {
            match error {
                StoreError::Io(_) | StoreError::Corrupt(_) | StoreError::Poisoned | StoreError::Closed => {}
            }
        }
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
            EngineError::BackupUnavailable("off"),
            EngineError::Internal(id()),
        ]);
        for error in &errors {
            match error {
                EngineError::Rejected(_)
                | EngineError::ProgramNotFound(_)
                | EngineError::Store(_)
                | EngineError::Invariant(_)
                | EngineError::Contention { .. }
                | EngineError::Overloaded { .. }
                | EngineError::Saturated { .. }
                | EngineError::RulesInvalid(_)
                | EngineError::RulesVersionConflict { .. }
                | EngineError::RuleNotFound(_)
                | EngineError::Unauthenticated(_)
                | EngineError::PermissionDenied { .. }
                | EngineError::RateLimited { .. }
                | EngineError::DeadlineExceeded
                | EngineError::AccessVersionConflict { .. }
                | EngineError::CredentialNotFound(_)
                | EngineError::MessageTooLarge { .. }
                | EngineError::ShuttingDown
                | EngineError::NotSandbox(_)
                | EngineError::AccountMoved
                | EngineError::BackupUnavailable(_)
                | EngineError::Internal(_) => {}
            }
        }
        errors
    }

    fn reason(status: &Status) -> String {
        let info = status.get_details_error_info().expect("every status carries ErrorInfo");
        assert_eq!(info.domain, ERROR_DOMAIN);
        info.reason
    }

    #[test]
    fn every_reason_the_engine_answers_is_in_the_proto_and_every_proto_reason_is_answered() {
        let mut answered = BTreeSet::new();
        for error in every_error() {
            let reason = reason(&to_status(&error));
            assert!(
                ErrorReason::from_str_name(&reason).is_some_and(|value| value != ErrorReason::Unspecified),
                "{error:?} answers reason {reason}, which loyalty.v1.ErrorReason (proto/loyalty/v1/errors.proto) lacks"
            );
            answered.insert(reason);
        }
        // The codec answers the one reason that never reaches the engine.
        let undecodable = loyalty_proto::codec::malformed_message_status("truncated");
        answered.insert(reason(&undecodable));

        let listed: BTreeSet<String> =
            (1..1000).filter_map(|n| ErrorReason::try_from(n).ok()).map(|value| value.as_str_name().to_owned()).collect();
        assert_eq!(answered, listed, "the proto lists exactly the reasons the engine answers");
    }
}
