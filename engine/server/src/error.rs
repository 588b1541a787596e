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
    /// A rules change was refused: every problem, with its path.
    #[error(transparent)]
    RulesInvalid(loyalty_core::rules::RuleSetError),
    /// A rules change was made against a version that is no longer current.
    #[error("program {program_id} is at rules version {current}; re-read and apply the change to it")]
    RulesVersionConflict { program_id: String, current: u64 },
    /// A rules change names a rule the program does not have.
    #[error("no rule {0} in this program")]
    RuleNotFound(String),
    /// Stored data of an unexpected shape: a bug or corruption.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type EngineResult<T> = Result<T, EngineError>;
