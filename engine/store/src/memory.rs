//! The in-memory backend: the embedded store's tables as `BTreeMap`s behind one lock, for the
//! deterministic simulation and for fast tests.
//!
//! Why: a simulation that runs the engine from one random seed must replay exactly, so the store
//! under it may make no choice of its own. This one has no thread, reads no clock, draws no random
//! number, and iterates only ordered maps: the same calls in the same order give the same answers
//! and the same outbox seqs, every run. The embedded store cannot promise that (its writer thread
//! batches whatever has arrived, and its files outlive the run), and it is slow to set up for a
//! unit test.
//!
//! What it guarantees is what [`EmbeddedStore`](crate::embedded::EmbeddedStore) guarantees, as the
//! storage conformance suite (`tests/conformance`) checks on both: the same commit conditions,
//! checked in the same order (so a commit breaking several is refused for the same one), the same
//! ledger checks ([`Commit::check_invariants`], then the entries must continue the stored ledger),
//! outbox seqs 1, 2, 3... per program in commit order, the same paging. Events and credits are
//! written with their commit, so [`Store::relay`] has nothing to do. What it cannot have is
//! durability: the data lives as long as a handle on it ([`MemoryStore::reopen`] makes another,
//! as a restarted process opens the same file), and there is no backup file ([`Store::backup`]
//! answers `None`).
//!
//! A commit holds the lock from its first condition to its last write, so commits are atomic and
//! apply one at a time, each seeing all earlier ones. Values are moved in and cloned out: a caller
//! never holds a reference into the stored state, and changing what it read changes nothing stored.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use loyalty_core::account::AccountState;
use loyalty_core::events::{Event, PendingCredit};
use loyalty_core::identity::IdentityKey;
use loyalty_core::ledger::LedgerEntry;
use loyalty_core::receipt::{CallRecord, ReceiptState};

use crate::{
    AccountPage, Commit, CommitOutcome, Conflict, OutboxRecord, ReceiptWrite, Store, StoreError, StoredFigures, StoredRules, Versioned,
};

/// One program's data: the embedded store's tables, keyed the same way less the program ID, so
/// that every page comes out in the embedded store's order.
#[derive(Debug, Default)]
struct Program {
    /// Account ID -> version and state.
    accounts: BTreeMap<String, Versioned<AccountState>>,
    /// Account ID -> seq -> entry.
    ledgers: BTreeMap<String, BTreeMap<u64, LedgerEntry>>,
    /// Receipt ID -> version and state.
    receipts: BTreeMap<String, Versioned<ReceiptState>>,
    /// Identity storage key ([`IdentityKey::storage_key`]) -> account ID.
    identities: BTreeMap<String, String>,
    /// Enrolment request ID -> its first answer.
    requests: BTreeMap<String, CallRecord>,
    /// Version -> rules. Written only in sequence from 1, so the last key is the head.
    rules: BTreeMap<u64, StoredRules>,
    /// Seq -> event. Never deleted, so the last key is the last seq given.
    outbox: BTreeMap<u64, Event>,
    /// Credit ID -> credit owed and not yet applied.
    credits: BTreeMap<String, PendingCredit>,
    /// The program's running figures, the latest only (the embedded store's `figures` row).
    figures: Option<StoredFigures>,
}

impl Program {
    /// The latest rules version, 0 when there is none.
    fn rules_head(&self) -> u64 {
        self.rules.last_key_value().map_or(0, |(version, _)| *version)
    }

    /// Writes `commit` if every condition holds; otherwise writes nothing and says why.
    fn apply(&mut self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        if let Some(conflict) = self.refusal(&commit)? {
            return Ok(CommitOutcome::Conflict(conflict));
        }
        Ok(CommitOutcome::Applied { account_version: self.write(commit) })
    }

    /// Why `commit` may not be applied, if it may not: the embedded writer's conditions in its
    /// order (account version, receipt version, receipt owner, ledger continuation, identities,
    /// request), so that a commit breaking several is refused for the same one on both backends.
    /// A commit that does not continue the stored ledger is an error (corrupt), not a conflict.
    fn refusal(&self, commit: &Commit) -> Result<Option<Conflict>, StoreError> {
        let account_id = commit.account.state.account_id.as_str();
        let actual = self.accounts.get(account_id).map_or(0, |stored| stored.version);
        if actual != commit.account.expected_version {
            return Ok(Some(Conflict::AccountVersion { actual }));
        }
        if let Some(conflict) = commit.receipt.as_ref().and_then(|receipt| self.receipt_refusal(account_id, receipt)) {
            return Ok(Some(conflict));
        }
        self.check_continues_ledger(account_id, &commit.ledger)?;
        if let Some(conflict) = self.identity_refusal(account_id, &commit.identity_claims) {
            return Ok(Some(conflict));
        }
        if commit.request.as_ref().is_some_and(|request| self.requests.contains_key(&request.request_id)) {
            return Ok(Some(Conflict::RequestTaken));
        }
        Ok(None)
    }

    /// The receipt must be at the version the write names (0: not stored yet), and belong to the
    /// writing account: a receipt is its claimant's, whatever version another account names.
    fn receipt_refusal(&self, account_id: &str, write: &ReceiptWrite) -> Option<Conflict> {
        let stored = self.receipts.get(&write.state.receipt_id);
        let actual = stored.map_or(0, |stored| stored.version);
        if actual != write.expected_version {
            return Some(Conflict::ReceiptVersion { actual });
        }
        stored
            .filter(|stored| stored.value.account_id != account_id)
            .map(|stored| Conflict::ReceiptTaken { account_id: stored.value.account_id.clone() })
    }

    /// The new entries must continue the stored ledger: no gap before the first, nothing stored
    /// under it. [`Commit::check_invariants`] has checked the entries among themselves already.
    fn check_continues_ledger(&self, account_id: &str, entries: &[LedgerEntry]) -> Result<(), StoreError> {
        let Some(first) = entries.first().map(|entry| entry.seq) else { return Ok(()) };
        let stored = |seq: u64| self.ledgers.get(account_id).is_some_and(|ledger| ledger.contains_key(&seq));
        let follows = first == 1 || first.checked_sub(1).is_some_and(stored);
        if !follows || stored(first) {
            return Err(StoreError::Corrupt(format!(
                "commit for account {account_id} does not continue its stored ledger at entry {first}"
            )));
        }
        Ok(())
    }

    /// The first identifier claimed that another account holds, if any.
    fn identity_refusal(&self, account_id: &str, claims: &[IdentityKey]) -> Option<Conflict> {
        claims.iter().find_map(|key| {
            let owner = self.identities.get(&key.storage_key())?;
            (owner != account_id).then(|| Conflict::IdentityTaken { key: key.clone(), account_id: owner.clone() })
        })
    }

    /// Writes everything `commit` carries (its conditions hold) and returns the account's new
    /// version. Claims are written before releases, as the embedded store does.
    fn write(&mut self, commit: Commit) -> u64 {
        let Commit { account, ledger, receipt, identity_claims, identity_releases, request, events, credits, .. } = commit;
        let account_id = account.state.account_id.clone();
        let version = account.expected_version + 1;
        if !ledger.is_empty() {
            self.ledgers.entry(account_id.clone()).or_default().extend(ledger.into_iter().map(|entry| (entry.seq, entry)));
        }
        if let Some(receipt) = receipt {
            let stored = Versioned { version: receipt.expected_version + 1, value: receipt.state };
            self.receipts.insert(stored.value.receipt_id.clone(), stored);
        }
        for key in identity_claims {
            self.identities.insert(key.storage_key(), account_id.clone());
        }
        for key in identity_releases {
            let storage_key = key.storage_key();
            if self.identities.get(&storage_key).is_some_and(|owner| *owner == account_id) {
                self.identities.remove(&storage_key);
            }
        }
        if let Some(request) = request {
            self.requests.insert(request.request_id, request.record);
        }
        let mut seq = self.outbox.last_key_value().map_or(0, |(seq, _)| *seq);
        for event in events {
            seq += 1;
            self.outbox.insert(seq, event);
        }
        for credit in credits {
            self.credits.insert(credit.credit_id.clone(), credit);
        }
        self.accounts.insert(account_id, Versioned { version, value: account.state });
        version
    }

    /// Stores `rules` if it is the version after the latest; false otherwise.
    fn put_rules(&mut self, rules: StoredRules) -> bool {
        if self.rules_head().checked_add(1) != Some(rules.version) {
            return false;
        }
        self.rules.insert(rules.version, rules);
        true
    }

    /// Stores `figures` if the stored ones include exactly `expected_through` (0: none stored);
    /// otherwise writes nothing and answers whether they are exactly `figures` already (a repeated
    /// put). Figures that do not move the cursor on are refused before anything else.
    fn put_figures(&mut self, program_id: &str, expected_through: u64, figures: StoredFigures) -> Result<bool, StoreError> {
        figures.check_advances(program_id, expected_through)?;
        let stored_through = self.figures.as_ref().map_or(0, |stored| stored.through_seq);
        if stored_through != expected_through {
            return Ok(self.figures.as_ref() == Some(&figures));
        }
        self.figures = Some(figures);
        Ok(true)
    }

    /// Up to `limit` entries below `before_seq`, newest first. Seqs start at 1: nothing is below 1.
    fn ledger_page(&self, account_id: &str, before_seq: u64, limit: usize) -> Vec<LedgerEntry> {
        if before_seq <= 1 || limit == 0 {
            return Vec::new();
        }
        let Some(ledger) = self.ledgers.get(account_id) else { return Vec::new() };
        ledger.range(1..before_seq).rev().take(limit).map(|(_, entry)| entry.clone()).collect()
    }

    /// Up to `limit` account IDs after `cursor` in ID order (the cursor itself left out), with the
    /// last one as the next cursor when the page is full: the embedded store's paging exactly.
    fn account_page(&self, cursor: &str, limit: usize) -> AccountPage {
        let from = (Bound::Included(cursor), Bound::Unbounded);
        let ids: Vec<String> =
            self.accounts.range::<str, _>(from).map(|(id, _)| id).filter(|id| *id != cursor).take(limit).cloned().collect();
        let next = if ids.len() < limit { None } else { ids.last().cloned() };
        AccountPage { ids, next }
    }

    /// Up to `limit` events with seq above `after_seq`, oldest first; an event's ID is its seq.
    fn outbox_page(&self, after_seq: u64, limit: usize) -> Vec<OutboxRecord> {
        self.outbox
            .range(after_seq.saturating_add(1)..)
            .take(limit)
            .map(|(seq, event)| OutboxRecord { seq: *seq, event_id: seq.to_string(), event: event.clone() })
            .collect()
    }
}

/// Every program's data: what a lock guards and the handles of [`MemoryStore::reopen`] share.
#[derive(Debug, Default)]
struct Data {
    programs: BTreeMap<String, Program>,
}

/// A [`Store`] in memory, deterministic: the embedded store's behaviour without threads, files,
/// clock or randomness (see the [module documentation](self)).
///
/// Every handle has its own open or shut-down state over shared data: after
/// [`shutdown`](Store::shutdown) every call on the handle fails with [`StoreError::Closed`] (reads
/// too, as the trait says of later calls), while a handle made by [`MemoryStore::reopen`] serves
/// the same data, as a restarted engine serves what its predecessor acknowledged.
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
    /// Set by `shutdown`: every later call on this handle is refused.
    closed: AtomicBool,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("closed", &self.closed.load(Ordering::Acquire)).finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    /// An empty store, open: the same as [`MemoryStore::new`].
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store, open for writes. Nothing is shared with any other store: each test or
    /// simulation run starts from nothing.
    pub fn new() -> Self {
        MemoryStore { data: Arc::new(Mutex::new(Data::default())), closed: AtomicBool::new(false) }
    }

    /// A new, open handle on this store's data, whether this handle was shut down or not: what a
    /// restarted process finds after a shutdown or a crash (everything acknowledged, since a
    /// commit is acknowledged only once it is in the data). Tests and the simulation use it to
    /// restart an engine without losing the store; the old handle should be shut down or dropped
    /// first, as only one process opens the embedded store's file (two open handles still apply
    /// commits one at a time, under the one lock).
    pub fn reopen(&self) -> MemoryStore {
        MemoryStore { data: Arc::clone(&self.data), closed: AtomicBool::new(false) }
    }

    /// The data, locked, if this handle is still open. A lock poisoned by a panic in the middle of
    /// a write guards data that may be half-written: refused, as the embedded store refuses
    /// writes after a failed commit.
    fn data(&self) -> Result<MutexGuard<'_, Data>, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.data.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Reads from one program's data; a program never written reads as empty (`T::default()`).
    fn read<T: Default>(&self, program_id: &str, read: impl FnOnce(&Program) -> T) -> Result<T, StoreError> {
        Ok(self.data()?.programs.get(program_id).map(read).unwrap_or_default())
    }

    /// Writes to one program's data, under one lock from the first check to the last write.
    fn write<T>(&self, program_id: &str, write: impl FnOnce(&mut Program) -> T) -> Result<T, StoreError> {
        Ok(write(self.data()?.programs.entry(program_id.to_owned()).or_default()))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn account(&self, program_id: &str, account_id: &str) -> Result<Option<Versioned<AccountState>>, StoreError> {
        let stored = self.read(program_id, |program| program.accounts.get(account_id).cloned())?;
        // Checked as every backend checks a read account, although a commit's own check makes a
        // disagreeing one impossible here.
        stored.map(|stored| crate::checked_account(account_id, stored.version, stored.value)).transpose()
    }

    async fn identity(&self, program_id: &str, key: &IdentityKey) -> Result<Option<String>, StoreError> {
        self.read(program_id, |program| program.identities.get(&key.storage_key()).cloned())
    }

    async fn receipt(&self, program_id: &str, receipt_id: &str) -> Result<Option<Versioned<ReceiptState>>, StoreError> {
        self.read(program_id, |program| program.receipts.get(receipt_id).cloned())
    }

    async fn request(&self, program_id: &str, request_id: &str) -> Result<Option<CallRecord>, StoreError> {
        self.read(program_id, |program| program.requests.get(request_id).cloned())
    }

    async fn ledger_page(&self, program_id: &str, account_id: &str, before_seq: u64, limit: usize) -> Result<Vec<LedgerEntry>, StoreError> {
        self.read(program_id, |program| program.ledger_page(account_id, before_seq, limit))
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        let mut data = self.data()?;
        // The checks the embedded store runs on the calling task, before its writer sees the commit.
        commit.check_invariants()?;
        data.programs.entry(commit.program_id.clone()).or_default().apply(commit)
    }

    async fn latest_rules(&self, program_id: &str) -> Result<Option<StoredRules>, StoreError> {
        self.read(program_id, |program| program.rules.last_key_value().map(|(_, rules)| rules.clone()))
    }

    async fn rules_head(&self, program_id: &str) -> Result<u64, StoreError> {
        self.read(program_id, Program::rules_head)
    }

    async fn rules_version(&self, program_id: &str, version: u64) -> Result<Option<StoredRules>, StoreError> {
        self.read(program_id, |program| program.rules.get(&version).cloned())
    }

    async fn put_rules(&self, program_id: &str, rules: StoredRules) -> Result<bool, StoreError> {
        self.write(program_id, |program| program.put_rules(rules))
    }

    async fn figures(&self, program_id: &str) -> Result<Option<StoredFigures>, StoreError> {
        self.read(program_id, |program| program.figures.clone())
    }

    async fn put_figures(&self, program_id: &str, expected_through: u64, figures: StoredFigures) -> Result<bool, StoreError> {
        self.write(program_id, |program| program.put_figures(program_id, expected_through, figures))?
    }

    async fn account_ids(&self, program_id: &str, cursor: &str, limit: usize) -> Result<AccountPage, StoreError> {
        self.read(program_id, |program| program.account_page(cursor, limit))
    }

    async fn pending_credits(&self, program_id: &str, limit: usize) -> Result<Vec<PendingCredit>, StoreError> {
        self.read(program_id, |program| program.credits.values().take(limit).cloned().collect())
    }

    async fn delete_credit(&self, program_id: &str, credit_id: &str) -> Result<(), StoreError> {
        self.write(program_id, |program| {
            program.credits.remove(credit_id);
        })
    }

    async fn outbox_page(&self, program_id: &str, after_seq: u64, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.read(program_id, |program| program.outbox_page(after_seq, limit))
    }

    /// Open until shut down, unless a panic mid-write poisoned the data.
    fn is_writable(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && !self.data.is_poisoned()
    }

    /// One process: the engine may serve what it read earlier from its caches.
    fn shared(&self) -> bool {
        false
    }

    /// Nothing to relay: events and credits are written with their commit.
    async fn relay(&self, _program_id: &str) -> Result<usize, StoreError> {
        self.data().map(|_| 0)
    }

    /// No backup file of memory: `None`, as from a backend with no such copy.
    async fn backup(&self, _path: &std::path::Path) -> Result<Option<crate::BackupReport>, StoreError> {
        self.data().map(|_| None)
    }

    /// Nothing to flush: every acknowledged commit is in the data already.
    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use loyalty_core::program::ProgramPolicy;
    use loyalty_core::txn::{Posting, Txn};
    use loyalty_core::{Decimal, Origin};

    use super::*;
    use crate::AccountWrite;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).single().expect("time")
    }

    fn fresh(account_id: &str) -> Versioned<AccountState> {
        Versioned { version: 0, value: AccountState::new(account_id.into(), true, now()) }
    }

    /// A commit earning `points` on the new receipt `receipt_id` for `stored`, owing one point to
    /// `<account>-referrer`.
    fn earn(program_id: &str, stored: &Versioned<AccountState>, receipt_id: &str, points: i64) -> Commit {
        let policy = ProgramPolicy::with_defaults(program_id);
        let mut txn = Txn::begin(&policy, &stored.value, now(), format!("tx-{receipt_id}"), Origin::default());
        txn.earn(Decimal::from(points), Posting { receipt_id: Some(receipt_id), refund_id: None }, "test".into(), vec!["base".into()]);
        let finished = txn.finish_all().expect("invariants");
        let account_id = stored.value.account_id.clone();
        let credit = PendingCredit {
            credit_id: format!("credit/{receipt_id}"),
            account_id: format!("{account_id}-referrer"),
            points: Decimal::ONE,
            rule_id: "referral".into(),
            reason: "test".into(),
            transfer: None,
        };
        let receipt = ReceiptState::new(receipt_id.into(), account_id, now(), Origin::default());
        Commit {
            ledger: finished.entries,
            receipt: Some(ReceiptWrite { expected_version: 0, state: receipt }),
            events: finished.events,
            credits: vec![credit],
            ..Commit::new(program_id, AccountWrite { expected_version: stored.version, state: finished.account })
        }
    }

    /// Runs one fixed sequence of calls over two programs (accounts created out of ID order, a
    /// stale commit among them) and returns everything the store answered, in order.
    async fn transcript(store: &MemoryStore) -> Vec<String> {
        let mut answers = Vec::new();
        let mut accounts: BTreeMap<(&str, &str), Versioned<AccountState>> = BTreeMap::new();
        let calls = [("p", "m", 5), ("q", "z", 7), ("p", "b", 3), ("p", "m", 2), ("q", "a", 1), ("p", "x", 4), ("q", "z", 6)];
        for (round, (program_id, account_id, points)) in calls.into_iter().enumerate() {
            let stored = accounts.get(&(program_id, account_id)).cloned().unwrap_or_else(|| fresh(account_id));
            let commit = earn(program_id, &stored, &format!("r{round}"), points);
            assert!(!commit.events.is_empty(), "an earn writes events");
            let outcome = store.commit(commit.clone()).await.expect("commit");
            answers.push(format!("{outcome:?}"));
            // The same commit again is stale now.
            answers.push(format!("{:?}", store.commit(commit.clone()).await.expect("commit")));
            accounts.insert((program_id, account_id), Versioned { version: stored.version + 1, value: commit.account.state });
        }
        for program_id in ["p", "q"] {
            answers.push(format!("{:?}", store.outbox_page(program_id, 0, 100).await.expect("outbox")));
            answers.push(format!("{:?}", store.pending_credits(program_id, 100).await.expect("credits")));
            let mut cursor = String::new();
            loop {
                let page = store.account_ids(program_id, &cursor, 2).await.expect("account page");
                answers.push(format!("{page:?}"));
                let Some(next) = page.next else { break };
                cursor = next;
            }
        }
        answers
    }

    /// Two stores fed the same calls answer the same, to the outbox seqs and the page order: what
    /// lets a simulation replay a run from its seed.
    #[tokio::test]
    async fn the_same_calls_give_the_same_answers() {
        let (first, second) = (MemoryStore::new(), MemoryStore::new());
        let answers = transcript(&first).await;
        assert_eq!(answers, transcript(&second).await);
        assert_eq!(answers, transcript(&MemoryStore::new()).await, "and again on a third");
    }

    /// Outbox seqs count per program from 1, in commit order; account pages and credits hold the
    /// program's own, in ID order.
    #[tokio::test]
    async fn programs_are_numbered_and_paged_apart() {
        let store = MemoryStore::new();
        transcript(&store).await;
        for (program_id, ids) in [("p", vec!["b", "m", "x"]), ("q", vec!["a", "z"])] {
            let records = store.outbox_page(program_id, 0, 100).await.expect("outbox");
            let seqs: Vec<u64> = records.iter().map(|record| record.seq).collect();
            assert_eq!(seqs, (1..=records.len() as u64).collect::<Vec<_>>(), "program {program_id}");
            assert!(records.iter().all(|record| record.event_id == record.seq.to_string()));
            let page = store.account_ids(program_id, "", 10).await.expect("account page");
            assert_eq!(page, AccountPage { ids: ids.iter().map(|id| id.to_string()).collect(), next: None }, "program {program_id}");
            let credits = store.pending_credits(program_id, 10).await.expect("credits");
            assert!(credits.iter().all(|credit| ids.iter().any(|id| credit.account_id == format!("{id}-referrer"))));
            assert!(credits.windows(2).all(|pair| pair[0].credit_id < pair[1].credit_id), "credits in ID order");
        }
        let first_of_q = store.outbox_page("q", 0, 1).await.expect("outbox");
        assert_eq!(first_of_q.first().map(|record| record.event.account_id.as_str()), Some("z"), "q's first event is z's");
    }

    /// A shut-down handle refuses every call, reads included; a reopened handle serves the same data
    /// and takes commits on it.
    #[tokio::test]
    async fn a_shut_down_handle_refuses_everything_and_a_reopened_one_carries_on() {
        let store = MemoryStore::new();
        let first = earn("p", &fresh("a"), "r1", 10);
        assert_eq!(store.commit(first.clone()).await, Ok(CommitOutcome::Applied { account_version: 1 }));
        store.shutdown().await;
        assert!(!store.is_writable());
        assert_eq!(store.account("p", "a").await, Err(StoreError::Closed));
        assert_eq!(store.outbox_page("p", 0, 10).await, Err(StoreError::Closed));
        assert_eq!(store.relay("p").await, Err(StoreError::Closed));
        let v1 = Versioned { version: 1, value: first.account.state.clone() };
        assert_eq!(store.commit(earn("p", &v1, "r2", 1)).await, Err(StoreError::Closed));

        let reopened = store.reopen();
        assert!(reopened.is_writable() && !store.is_writable(), "the reopened handle is open, the old one stays shut");
        assert_eq!(reopened.account("p", "a").await, Ok(Some(v1.clone())));
        let second = earn("p", &v1, "r2", 1);
        assert_eq!(reopened.commit(second.clone()).await, Ok(CommitOutcome::Applied { account_version: 2 }));
        let seqs: Vec<u64> = reopened.outbox_page("p", 0, 10).await.expect("outbox").iter().map(|record| record.seq).collect();
        let written = (first.events.len() + second.events.len()) as u64;
        assert_eq!(seqs, (1..=written).collect::<Vec<_>>(), "the outbox goes on where it was");
        assert_eq!(reopened.backup(std::path::Path::new("unused")).await, Ok(None));
    }
}
