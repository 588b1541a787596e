//! Storage for the loyalty engine: the [`Store`] trait every backend implements, and its backends.
//!
//! - [`embedded::EmbeddedStore`], the default: one redb file written by one thread with group
//!   commit, optionally behind a write-ahead journal; online backups of a consistent copy.
//! - [`scylla::ScyllaStore`]: any number of engine processes over one ScyllaDB (or Apache
//!   Cassandra) cluster, one Paxos round per call, events and credits relayed out of the account's
//!   partition; [`scylla::migrate`] applies the versioned CQL schema.
//! - [`memory::MemoryStore`]: the embedded store's behaviour in memory, behind one lock, with no
//!   thread, clock or randomness: the same calls give the same answers every run, for the
//!   deterministic simulation and fast tests.
//! - [`codec`]: the byte format of stored records, with a format byte for later releases.
//! - [`clock::Clock`]: the time a backend is given; no backend reads the wall clock itself.
//!
//! The trait is shaped by what a distributed store can do atomically. One [`Commit`] carries the
//! whole effect of one checkout call on one account:
//! - the account's new state, written only if its version is still the one the call read
//!   (compare-and-set; ScyllaDB: `UPDATE ... IF version = ?`),
//! - the account's new ledger entries (in the account's partition),
//! - the receipt's new state, claimed for this account on first write (claim-once; ScyllaDB:
//!   the claim's fence `IF NOT EXISTS`, then `IF version = ?`),
//! - identifiers claimed once for the account (phone, card, app token), and identifiers it gives
//!   up (a customer's personal data erased),
//! - an enrolment's idempotency record, claimed once,
//! - the events the change produced, appended to the program's outbox,
//! - points the change owes other accounts (referral rewards), kept until applied.
//!
//! Program rule versions are stored apart from checkout data: each version is written once, only
//! if it follows the latest one (compare-and-set on the program's version row), so two admins can
//! never both create version N.
//!
//! A program's running figures ([`StoredFigures`]) are kept the same way, one row per program with
//! no history: a write names the outbox seq the stored figures include, so that of several engine
//! processes folding the same outbox at once exactly one moves them on.
//!
//! Either every condition holds and everything is written durably, or nothing is written and the
//! caller learns which condition failed ([`Conflict`]). An `Ok` is an acknowledgement: the commit
//! survives a crash from then on.
//!
//! Besides commits, a backend pages through a program's accounts (the schedule sweep), keeps the
//! credits owed until they are applied, and serves the outbox in order.

pub mod clock;
pub mod codec;
pub mod embedded;
pub mod memory;
pub mod scylla;

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
    /// Identifiers the account gives up (a customer's personal data erased): afterwards they find
    /// no account and may be claimed anew. Each must be bound to this account.
    pub identity_releases: Vec<IdentityKey>,
    pub request: Option<RequestWrite>,
    /// Appended to the program's outbox, in order.
    pub events: Vec<Event>,
    /// Points owed to other accounts, kept until they are applied (see [`PendingCredit`]).
    pub credits: Vec<PendingCredit>,
}

impl Commit {
    /// A commit of the account's new state alone; a call adds what else it writes by field.
    pub fn new(program_id: &str, account: AccountWrite) -> Commit {
        Commit {
            program_id: program_id.to_owned(),
            account,
            ledger: Vec::new(),
            receipt: None,
            identity_claims: Vec::new(),
            identity_releases: Vec::new(),
            request: None,
            events: Vec::new(),
            credits: Vec::new(),
        }
    }

    /// The ledger invariants a commit can check by itself, right before any backend writes: the
    /// new entries are numbered without a gap up to the account's last seq (from 1 for a new
    /// account), and the account's ledger sum is its booked balance. Backends check against the
    /// stored ledger too: the entries must continue it.
    pub fn check_invariants(&self) -> Result<(), StoreError> {
        let state = &self.account.state;
        let first_seq = (state.ledger_seq + 1).checked_sub(self.ledger.len() as u64).filter(|first| *first >= 1);
        let in_sequence = first_seq.is_some_and(|first| self.ledger.iter().enumerate().all(|(i, entry)| entry.seq == first + i as u64));
        // A new account's ledger starts at 1.
        let starts_right = self.account.expected_version > 0 || state.ledger_seq == self.ledger.len() as u64;
        if !in_sequence || !starts_right || state.ledger_sum != state.booked_balance() {
            return Err(StoreError::Corrupt(format!("commit for account {} breaks the ledger invariants", state.account_id)));
        }
        Ok(())
    }
}

/// An account as read from a backend, checked right after the read: a stored account always
/// agrees with its ledger sum.
pub fn checked_account(account_id: &str, version: u64, value: AccountState) -> Result<Versioned<AccountState>, StoreError> {
    if value.ledger_sum != value.booked_balance() {
        return Err(StoreError::Corrupt(format!(
            "account {account_id}: ledger sum {} != booked {}",
            value.ledger_sum,
            value.booked_balance()
        )));
    }
    Ok(Versioned { version, value })
}

/// One version of a program's rules, as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredRules {
    pub version: u64,
    /// The rule set as JSON (the admin API and rule files may use other formats; this one is canonical).
    pub document: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Who made the change (the admin credential or `file:<path>`).
    pub author: String,
    pub comment: String,
}

/// A program's running figures (key performance figures folded from its outbox), with the outbox
/// seq they include: every event up to and including `through_seq` is in `document`.
///
/// To the store they are an opaque document and a cursor: the engine computes them, and the store
/// only guarantees that they move forward one compare-and-set at a time ([`Store::put_figures`]),
/// so that figures folded by two engine processes never count an event twice or drop one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFigures {
    /// The last outbox seq the figures include (never 0 once stored: 0 means "none stored").
    pub through_seq: u64,
    /// JSON, the engine's own format.
    pub document: String,
}

impl StoredFigures {
    /// Figures that would not move the stored cursor forward (`through_seq` not above
    /// `expected_through`) are a caller's bug, not a lost race: refused with
    /// [`StoreError::Corrupt`] before anything is written, as [`Commit::check_invariants`] refuses
    /// a commit that would break the ledger. Not `Ok(false)`, which tells the caller to re-read
    /// and fold again, and would have it retry the same bug forever; not [`StoreError::Io`], which
    /// the engine answers as UNAVAILABLE, inviting the same retries.
    pub fn check_advances(&self, program_id: &str, expected_through: u64) -> Result<(), StoreError> {
        if self.through_seq <= expected_through {
            return Err(StoreError::Corrupt(format!(
                "program {program_id}: figures through seq {} do not move on from seq {expected_through}",
                self.through_seq
            )));
        }
        Ok(())
    }
}

/// An outbox event with its position in the program's outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRecord {
    /// The reading position: increasing within a program, with gaps. Embedded: 1, 2, 3... in
    /// commit order. ScyllaDB: the relay time in microseconds, shared by the events relayed
    /// together.
    pub seq: u64,
    /// Unique per program and stable: a reader that may see an event twice (ScyllaDB's relay is
    /// at-least-once) drops the second by this ID.
    pub event_id: String,
    pub event: Event,
}

/// One page of a program's account IDs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountPage {
    pub ids: Vec<String>,
    /// Where the next page starts; `None` when this was the last one.
    pub next: Option<String>,
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
    /// The receipt ID belongs to another account (ScyllaDB: also while another account's claim of
    /// it is in flight).
    ReceiptTaken { account_id: String },
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
    /// The latest rules version of a program (0: none), without the rules: what engines poll.
    async fn rules_head(&self, program_id: &str) -> Result<u64, StoreError>;
    /// One version of a program's rules.
    async fn rules_version(&self, program_id: &str, version: u64) -> Result<Option<StoredRules>, StoreError>;
    /// Stores `rules` as the program's next version: only if the latest stored version is
    /// `rules.version - 1` (durably, before answering). False: another writer got there first.
    async fn put_rules(&self, program_id: &str, rules: StoredRules) -> Result<bool, StoreError>;
    /// The program's stored figures, if any were stored.
    async fn figures(&self, program_id: &str) -> Result<Option<StoredFigures>, StoreError>;
    /// Stores `figures` for the program if the stored ones include exactly `expected_through`
    /// (0: none stored yet), durably before answering; false when another writer moved them first
    /// (nothing written): the caller re-reads them and folds on from there. Compare-and-set on one
    /// row per program, keeping only the latest, so that of several engines folding different
    /// figures from one cursor exactly one moves them on. `figures.through_seq` must be greater
    /// than `expected_through`: otherwise [`StoreError::Corrupt`] and nothing is written (see
    /// [`StoredFigures::check_advances`]).
    ///
    /// Idempotent: true also when the stored figures are exactly `figures` already (nothing more
    /// is written). A retry after an outcome the caller never learned (ScyllaDB: a timeout) is
    /// thus answered as applied if the first attempt applied, which ScyllaDB could not tell
    /// apart from another writer's identical figures anyway; two writers that folded the same
    /// events into the same figures may both be told true, and the figures stored are what each
    /// of them computed.
    async fn put_figures(&self, program_id: &str, expected_through: u64, figures: StoredFigures) -> Result<bool, StoreError>;
    /// Up to `limit` account IDs of a program, from `cursor` (empty: from the start; otherwise a
    /// previous page's `next`): the schedule sweep pages through every account with it. The order
    /// is the backend's own.
    async fn account_ids(&self, program_id: &str, cursor: &str, limit: usize) -> Result<AccountPage, StoreError>;
    /// Up to `limit` credits owed to accounts and not yet applied.
    async fn pending_credits(&self, program_id: &str, limit: usize) -> Result<Vec<PendingCredit>, StoreError>;
    /// Forgets an applied credit (durably). Deleting an unknown credit is not an error.
    async fn delete_credit(&self, program_id: &str, credit_id: &str) -> Result<(), StoreError>;
    /// Up to `limit` outbox events with seq above `after_seq`, oldest first (a page may run past
    /// `limit` to end on a whole seq).
    async fn outbox_page(&self, program_id: &str, after_seq: u64, limit: usize) -> Result<Vec<OutboxRecord>, StoreError>;
    /// False once the store has stopped accepting writes (health reports NOT_SERVING).
    fn is_writable(&self) -> bool;
    /// True when other engine processes write to the same data, so that nothing read earlier may
    /// be served from memory.
    fn shared(&self) -> bool {
        false
    }
    /// True when the outbox may show one event twice, under its `event_id` and another seq
    /// (ScyllaDB's relay delivers at least once): readers that count events skip a copy.
    fn outbox_repeats_events(&self) -> bool {
        false
    }
    /// Moves side effects of acknowledged commits that the backend keeps with the account first
    /// (ScyllaDB: outbox events and credits) to the program-wide tables, for commits whose own
    /// relay did not finish (a crash). Returns how many were moved; others have nothing to do.
    async fn relay(&self, _program_id: &str) -> Result<usize, StoreError> {
        Ok(0)
    }
    /// Writes a consistent copy of everything, as of one committed state, to the new file `path`
    /// while commits go on, and returns what it holds; `None` where the backend has no such copy
    /// (ScyllaDB: its own snapshots, `nodetool snapshot`, per node).
    async fn backup(&self, _path: &std::path::Path) -> Result<Option<BackupReport>, StoreError> {
        Ok(None)
    }
    /// Flushes and stops; later calls fail with [`StoreError::Closed`].
    async fn shutdown(&self);
}

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    pub path: std::path::PathBuf,
    pub bytes: u64,
    /// Rows copied, all tables together.
    pub rows: u64,
    pub accounts: u64,
    pub ledger_entries: u64,
}
