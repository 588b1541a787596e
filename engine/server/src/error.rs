//! The engine's error type. Every failure of a call is one of these; `grpc::status` maps each to a
//! gRPC status in one place.

use loyalty_core::rejection::Rejection;
use loyalty_core::txn::InvariantBroken;
use loyalty_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The domain refused the operation (bad input, not enough points, ...).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The call names a program this engine does not serve.
    #[error("program {0} not found")]
    ProgramNotFound(String),
    /// The store failed; nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug: an operation would have broken an invariant, so nothing was written.
    #[error(transparent)]
    Invariant(#[from] InvariantBroken),
    /// Concurrent writers kept winning the compare-and-set; the caller may retry.
    #[error("the account changed concurrently {attempts} times; retry the call")]
    Contention { attempts: u32 },
    /// Too many calls in flight.
    #[error("the engine is at its limit of {limit} calls in flight; retry shortly")]
    Overloaded { limit: usize },
    /// The CPU is saturated: the engine's tasks run later than the configured bound.
    #[error("the engine is saturated (its work runs {delay_ms} ms late); retry shortly")]
    Saturated { delay_ms: u64 },
    /// A rules change was refused: every problem, with its path.
    #[error(transparent)]
    RulesInvalid(loyalty_core::rules::RuleSetError),
    /// A rules change was made against a version that is no longer current.
    #[error("program {program_id} is at rules version {current}; re-read and apply the change to it")]
    RulesVersionConflict { program_id: String, current: u64 },
    /// A rules change names a rule the program does not have.
    #[error("no rule {0} in this program")]
    RuleNotFound(String),
    /// The call carries no valid API key.
    #[error("{}", .0.message())]
    Unauthenticated(AuthFailure),
    /// The caller's credential does not allow this call.
    #[error("permission denied for credential {credential_id}: {why}")]
    PermissionDenied { credential_id: String, why: &'static str },
    /// The caller's credential is over its rate.
    #[error("credential {credential_id} is over its rate limit; retry in {} ms", .retry_after.as_millis())]
    RateLimited { credential_id: String, retry_after: std::time::Duration },
    /// The caller's deadline passed before the call could be served.
    #[error("the call's deadline passed before it was served")]
    DeadlineExceeded,
    /// A credentials change was made against a version that is no longer current.
    #[error("program {program_id} is at access version {current}; re-read and apply the change to it")]
    AccessVersionConflict { program_id: String, current: u64 },
    /// A credentials change names a credential the program does not have.
    #[error("no credential {0} in this program")]
    CredentialNotFound(String),
    /// The request is larger than the engine accepts; tonic refused it before decoding
    /// (`grpc::size_limit` gives it this status).
    #[error("the request is {bytes} bytes, more than the {limit} bytes this engine accepts")]
    MessageTooLarge { bytes: usize, limit: usize },
    /// The identifier led to an account merged into another since: the call runs again there.
    /// Handled inside the engine; if it ever reaches a caller, it is a retry (CONTENTION).
    #[error("the customer's card was merged into another account while the call ran; retry the call")]
    AccountMoved,
    /// A receipt wants more of a budgeted campaign than this engine holds: the call reserves
    /// more and runs again (`campaign_budgets`). Handled inside the engine; if it ever reaches a
    /// caller, it is a retry (CONTENTION).
    #[error("the campaign's reservation ran short while the call ran; retry the call")]
    CampaignBudgetShort,
    /// No online backup here: none configured (`storage.backup_dir`), or a backend with its own.
    #[error("no backup: {0}")]
    BackupUnavailable(&'static str),
    /// A sandbox-only call (a test clock) made for a production program.
    #[error("program {0} is not a sandbox: its clock is the engine's (set `sandbox = true` on a test program)")]
    NotSandbox(String),
    /// The engine is stopping: it finishes the calls it has, and takes no new one.
    #[error("the engine is shutting down; send the call to another engine, or again after the restart")]
    ShuttingDown,
    /// Stored data of an unexpected shape: a bug or corruption.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type EngineResult<T> = Result<T, EngineError>;

/// Why a call's API key was refused. The answer does not say whether a credential of that name
/// exists unless the caller proved it holds the key (revoked, wrong certificate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `authorization: Bearer` or `x-api-key` metadata.
    Missing,
    /// Not shaped like a key.
    Malformed,
    /// No such credential, or the wrong secret.
    Unknown,
    /// The credential was revoked.
    Revoked,
    /// The key is bound to a client certificate this connection did not present.
    CertificateMismatch,
}

/// Defines [`AuthFailure::code`] and [`AuthFailure::ALL_CODES`] from one list of `variant =>
/// code` arms: a new variant does not compile until it has an arm here, and then its code is in
/// `ALL_CODES` too (as `loyalty_core`'s `Rejection` codes are kept).
macro_rules! auth_failure_codes {
    ($($variant:ident => $code:literal,)*) => {
        impl AuthFailure {
            /// Every code an authentication failure can have, one per variant.
            pub const ALL_CODES: &'static [&'static str] = &[$($code),*];

            /// A stable machine-readable code, sent as `google.rpc.ErrorInfo.reason`.
            pub fn code(self) -> &'static str {
                match self {
                    $(AuthFailure::$variant => $code,)*
                }
            }
        }
    };
}

auth_failure_codes! {
    Missing => "API_KEY_MISSING",
    Malformed => "API_KEY_MALFORMED",
    Unknown => "API_KEY_INVALID",
    Revoked => "API_KEY_REVOKED",
    CertificateMismatch => "CLIENT_CERTIFICATE_MISMATCH",
}

impl AuthFailure {
    fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "an API key is required: metadata 'authorization: Bearer <key>' or 'x-api-key: <key>'",
            AuthFailure::Malformed => "the API key is malformed",
            AuthFailure::Unknown => "the API key is not valid",
            AuthFailure::Revoked => "the API key was revoked",
            AuthFailure::CertificateMismatch => "the API key is bound to a client certificate this connection did not present",
        }
    }
}
