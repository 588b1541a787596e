//! Storage for the loyalty engine: the [`Store`] trait every backend implements, and
//! [`embedded::EmbeddedStore`], the default backend (redb, with group commit).
//!
//! The trait is shaped by what a distributed store can do atomically. One [`Commit`] carries the
//! whole effect of one checkout call on one account:
//! - the account's new state, written only if its version is still the one the call read
//!   (compare-and-set; ScyllaDB: `UPDATE ... IF version = ?`),
//! - the account's new ledger entries (in the account's partition),
//! - the receipt's new state, claimed for this account on first write (claim-once; ScyllaDB:
//!   `INSERT ... IF NOT EXISTS`, then `IF version = ?`),
//! - identifiers claimed once for the account (phone, card, app token),
//! - an enrolment's idempotency record, claimed once,
//! - the events the change produced, appended to the program's outbox,
//! - points the change owes other accounts (referral rewards), kept until applied.
//!
//! Program rule versions are stored apart from checkout data: each version is written once, only
//! if it follows the latest one (compare-and-set on the program's version row), so two admins can
//! never both create version N.
//!
//! Either every condition holds and everything is written durably, or nothing is written and the
//! caller learns which condition failed ([`Conflict`]). An `Ok` is an acknowledgement: the commit
//! survives a crash from then on.

pub mod codec;
pub mod embedded;

use async_trait::async_trait;
use loyalty_core::account::AccountState;
use loyalty_core::events::{Event, PendingCredit};
use loyalty_core::identity::IdentityKey;
use loyalty_core::ledger::LedgerEntry;
use loyalty_core::receipt::{CallRecord, ReceiptState};

/// A stored value with the version a compare-and-set must name. Version 0 means "absent".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    pub version: u64,
    pub value: T,
}

/// The new state of an account, written only if the stored version is `expected_version`.
#[derive(Clone, Debug)]
pub struct AccountWrite {
    /// 0 to create the account (it must not exist).
    pub expected_version: u64,
    pub state: AccountState,
}

/// The new state of a receipt, written only if its stored version is `expected_version`.
#[derive(Clone, Debug)]
pub struct ReceiptWrite {
    /// 0 to claim the receipt ID for the account (it must not exist in the program).
    pub expected_version: u64,
    pub state: ReceiptState,
}

/// An enrolment's first answer, keyed by its request ID.
#[derive(Clone, Debug)]
pub struct RequestWrite {
    pub request_id: String,
    pub record: CallRecord,
}

/// Everything one call changes, applied atomically or not at all.
#[derive(Clone, Debug)]
pub struct Commit {
    pub program_id: String,
    pub account: AccountWrite,
    /// Entries with seq following the stored account's last entry, in order.
    pub ledger: Vec<LedgerEntry>,
    pub receipt: Option<ReceiptWrite>,
    /// Identifiers to bind to the account; each must be unbound (or already bound to it).
    pub identity_claims: Vec<IdentityKey>,
    pub request: Option<RequestWrite>,
    /// Appended to the program's outbox, in order.
    pub events: Vec<Event>,
    /// Points owed to other accounts, kept until they are applied (see [`PendingCredit`]).
    pub credits: Vec<PendingCredit>,
}

/// One version of a program's rules, as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredRules {
    pub version: u64,
    /// The rule set as JSON (the admin API and rule files may use other formats; this one is canonical).
    pub document: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Who made the change (the admin credential or "file:<path>").
    pub author: String,
    pub comment: String,
}

/// An outbox event with its position in the program's outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRecord {
    /// 1, 2, 3... per program, in commit order.
    pub seq: u64,
    pub event: Event,
}

/// Why a commit was not applied. Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// Someone else changed the account since it was read.
    AccountVersion { actual: u64 },
    /// Someone else changed or claimed the receipt since it was read.
    ReceiptVersion { actual: u64 },
    /// The identifier belongs to another account.
    IdentityTaken { key: IdentityKey, account_id: String },
    /// The enrolment request ID was used already.
    RequestTaken,
}

/// The result of a commit that reached the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Durable; the account now has `account_version`.
    Applied {
        account_version: u64,
    },
    Conflict(Conflict),
}

/// A failure of the store itself. The engine answers UNAVAILABLE and acknowledges nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store refuses writes after a failed commit; restart to recover")]
    Poisoned,
    #[error("the store is shut down")]
    Closed,
}

/// The operations the engine needs from a backend. Reads return the latest acknowledged state.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    async fn account(&self, program_id: &str, account_id: &str) -> Result<Option<Versioned<AccountState>>, StoreError>;
    async fn identity(&self, program_id: &str, key: &IdentityKey) -> Result<Option<String>, StoreError>;
    async fn receipt(&self, program_id: &str, receipt_id: &str) -> Result<Option<Versioned<ReceiptState>>, StoreError>;
    async fn request(&self, program_id: &str, request_id: &str) -> Result<Option<CallRecord>, StoreError>;
    /// Up to `limit` entries of the account's ledger with seq below `before_seq`, newest first.
    async fn ledger_page(&self, program_id: &str, account_id: &str, before_seq: u64, limit: usize) -> Result<Vec<LedgerEntry>, StoreError>;
    /// Applies a commit atomically and durably, or reports the conflict.
    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError>;
    /// The latest version of a program's rules, if any was stored.
    async fn latest_rules(&self, program_id: &str) -> Result<Option<StoredRules>, StoreError>;
    /// One version of a program's rules.
    async fn rules_version(&self, program_id: &str, version: u64) -> Result<Option<StoredRules>, StoreError>;
    /// Stores `rules` as the program's next version: only if the latest stored version is
    /// `rules.version - 1` (durably, before answering). False: another writer got there first.
    async fn put_rules(&self, program_id: &str, rules: StoredRules) -> Result<bool, StoreError>;
    /// Up to `limit` account IDs of a program after `after_account_id` (empty: from the first), in
    /// ID order: the daily sweep pages through every account with it.
    async fn account_ids(&self, program_id: &str, after_account_id: &str, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Up to `limit` credits owed to accounts and not yet applied.
    async fn pending_credits(&self, program_id: &str, limit: usize) -> Result<Vec<PendingCredit>, StoreError>;
    /// Forgets an applied credit (durably). Deleting an unknown credit is not an error.
    async fn delete_credit(&self, program_id: &str, credit_id: &str) -> Result<(), StoreError>;
    /// Up to `limit` outbox events with seq above `after_seq`, oldest first.
    async fn outbox_page(&self, program_id: &str, after_seq: u64, limit: usize) -> Result<Vec<OutboxRecord>, StoreError>;
    /// False once the store has stopped accepting writes (health reports NOT_SERVING).
    fn is_writable(&self) -> bool;
    /// Flushes and stops; later calls fail with [`StoreError::Closed`].
    async fn shutdown(&self);
}
