//! End-to-end tests: a real tonic client over a real loopback socket against the real server on
//! the real embedded store (fsync on), and on the ScyllaDB backend over the CQL stand-in (`scylla`).
//! One binary, one module per concern.

mod checkout_flow;
mod concurrency;
mod crash_recovery;
mod errors;
mod faults;
mod idempotency;
mod rules;
mod scylla;
mod time;

use tonic::Code;
use tonic_types::StatusExt;

/// Asserts a call failed with `code` and the ErrorInfo `reason`; returns the status.
pub fn expect_error<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>, code: Code, reason: &str) -> tonic::Status {
    let status = match result {
        Ok(response) => panic!("expected {code:?}/{reason}, got {:?}", response.into_inner()),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "status {status:?}");
    let info = status.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "status {status:?}");
    assert_eq!(info.domain, "loyalty.v1");
    status
}

/// The field named by a BadRequest detail.
pub fn bad_field(status: &tonic::Status) -> String {
    let bad = status.get_details_bad_request().unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    bad.field_violations.first().map(|violation| violation.field.clone()).unwrap_or_default()
}
