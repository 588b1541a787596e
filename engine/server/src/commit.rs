//! The one path every call's write takes. A call reads what it needs under the account's slot,
//! decides, and builds one [`Commit`] (the account's new state and everything that goes with it:
//! ledger entries, the receipt, claims, the enrolment's answer, events, credits); `Accounts::commit`
//! commits it and keeps the slot's cache in step; `until_committed` runs the whole call again
//! when another writer got there first (a lost compare-and-set), a bounded number of times. Every
//! retry re-reads and decides again: it may now be a replay, a conflict or a newer balance.

use loyalty_core::rejection::Rejection;
use loyalty_core::txn::Finished;
use loyalty_store::{AccountWrite, Commit, CommitOutcome, Conflict, Versioned};
use tokio::sync::MutexGuard;

use crate::accounts::{Accounts, Slot};
use crate::error::{EngineError, EngineResult};

/// Attempts of one call before it gives up with ABORTED under contention.
const ATTEMPTS_MAX: u32 = 8;
/// Merges an identifier may lead through (a merged account is never merged again: one is enough).
const MERGE_HOPS_MAX: usize = 3;

/// How one attempt of a call ended.
pub(crate) enum Attempt<T> {
    /// Answered (committed, replayed or refused for good).
    Done(T),
    /// Lost a race: read again and decide again.
    Again,
}

/// The commit of what a transaction finished: the account at `expected_version` with its new
/// ledger entries, events and credits. The caller adds the receipt, claims or answer it writes.
pub(crate) fn commit_of(program_id: &str, expected_version: u64, finished: Finished) -> Commit {
    Commit {
        ledger: finished.entries,
        events: finished.events,
        credits: finished.credits,
        ..Commit::new(program_id, AccountWrite { expected_version, state: finished.account })
    }
}

/// Runs `attempt` until it is done, at most `ATTEMPTS_MAX` times; then ABORTED (contention).
/// (A closure returning a future, not an async closure: tokio needs the future `Send` for every
/// lifetime, which async closures cannot promise yet.)
pub(crate) async fn until_committed<T, F, Fut>(mut attempt: F) -> EngineResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = EngineResult<Attempt<T>>>,
{
    for _ in 0..ATTEMPTS_MAX {
        match attempt().await {
            Ok(Attempt::Done(value)) => return Ok(value),
            // The identifier's account was merged into another: resolve again and run there.
            Ok(Attempt::Again) | Err(EngineError::AccountMoved) => {}
            Err(error) => return Err(error),
        }
    }
    Err(EngineError::Contention { attempts: ATTEMPTS_MAX })
}

/// Runs a read again when the identifier's account turned out to be merged into another
/// (`EngineError::AccountMoved`); calls that write go through `until_committed`, which does too.
pub(crate) async fn following_merges<T, F, Fut>(mut read: F) -> EngineResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = EngineResult<T>>,
{
    for _ in 0..MERGE_HOPS_MAX {
        match read().await {
            Err(EngineError::AccountMoved) => continue,
            other => return other,
        }
    }
    Err(EngineError::Contention { attempts: MERGE_HOPS_MAX as u32 })
}

impl Accounts {
    /// Commits under the account's slot and keeps the cache in step with what was acknowledged:
    /// `Some(new account version)` when applied, `None` when another writer got there first. A
    /// receipt claimed by another account is a conflict of the call's receipt ID.
    pub(crate) async fn commit(&self, slot: &mut MutexGuard<'_, Slot>, commit: Commit) -> EngineResult<Option<u64>> {
        let state = self.caches_accounts().then(|| commit.account.state.clone());
        let receipt_id = commit.receipt.as_ref().map(|receipt| receipt.state.receipt_id.clone());
        // Cleared first: if this call is cancelled mid-commit, the next call reloads from the store.
        slot.cached = None;
        match self.store.commit(commit).await? {
            CommitOutcome::Applied { account_version } => {
                metrics::counter!("loyalty_ledger_commits_total").increment(1);
                slot.cached = state.map(|value| Versioned { version: account_version, value });
                Ok(Some(account_version))
            }
            CommitOutcome::Conflict(conflict) => {
                metrics::counter!("loyalty_commit_conflicts_total", "kind" => conflict_kind(&conflict)).increment(1);
                match (conflict, receipt_id) {
                    (Conflict::ReceiptTaken { .. }, Some(receipt_id)) => {
                        Err(Rejection::IdempotencyConflict { kind: "receipt_id", key: receipt_id }.into())
                    }
                    _ => Ok(None),
                }
            }
        }
    }
}

fn conflict_kind(conflict: &Conflict) -> &'static str {
    match conflict {
        Conflict::AccountVersion { .. } => "account_version",
        Conflict::ReceiptVersion { .. } => "receipt_version",
        Conflict::IdentityTaken { .. } => "identity_taken",
        Conflict::RequestTaken => "request_taken",
        Conflict::ReceiptTaken { .. } => "receipt_taken",
    }
}
