//! The acknowledged commits that redb does not hold yet, in memory.
//!
//! With the journal, a batch is durable once its journal record is; the committer then puts the
//! batch's rows here, where every read looks first, answers the callers, and hands the batch to the
//! applier thread, which writes it into redb in the background (many batches per redb transaction)
//! and makes redb durable at checkpoints. Rows leave the overlay once redb holds them: every row
//! remembers the journal record that wrote it, and [`Overlay::forget_through`] drops the rows of
//! records the applier has committed to redb (a row a later record overwrote stays), at a cost in
//! the rows dropped, whatever the overlay holds.
//!
//! Reading is "the overlay, then redb": a row missing from the overlay was either never written
//! or dropped after redb held it, and a redb read transaction begun after the overlay was looked
//! at sees it. The committer holds the overlay's read lock across a batch's conditions, so that
//! nothing is dropped between its overlay lookups and its redb reads.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;

use super::apply::{CommitRows, ReadTables, receipt_claim};
use super::version_of;
use crate::StoreError;

/// One row and the journal record that wrote it.
#[derive(Clone, Debug)]
struct Slot<V> {
    seq: u64,
    value: V,
}

/// program -> key -> row.
type Rows<K, V> = HashMap<String, BTreeMap<K, Slot<V>>>;

fn row<'a, K: Ord + std::borrow::Borrow<Q>, Q: Ord + ?Sized, V>(rows: &'a Rows<K, V>, program: &str, key: &Q) -> Option<&'a V> {
    rows.get(program)?.get(key).map(|slot| &slot.value)
}

fn put<K: Ord, V>(rows: &mut Rows<K, V>, program: &str, key: K, seq: u64, value: V) {
    let slot = Slot { seq, value };
    match rows.get_mut(program) {
        Some(keys) => {
            keys.insert(key, slot);
        }
        None => {
            rows.insert(program.to_owned(), BTreeMap::from([(key, slot)]));
        }
    }
}

/// Moves every row of `from` into `into`, marked as written by record `seq`; notes each row's key
/// in `written` (as `key_of` makes it) and returns how many rows are new.
fn absorb<K: Ord + Clone, V>(
    into: &mut Rows<K, V>,
    from: Rows<K, V>,
    seq: u64,
    written: &mut Vec<RowKey>,
    key_of: fn(String, K) -> RowKey,
) -> usize {
    let mut added = 0;
    for (program, keys) in from {
        let target = into.entry(program.clone()).or_default();
        for (key, slot) in keys {
            written.push(key_of(program.clone(), key.clone()));
            if target.insert(key, Slot { seq, value: slot.value }).is_none() {
                added += 1;
            }
        }
    }
    added
}

/// Drops one row if no record after `applied` wrote it since; returns whether it did.
fn forget<K: Ord, V>(rows: &mut Rows<K, V>, program: &str, key: &K, applied: u64) -> bool {
    let Some(keys) = rows.get_mut(program) else { return false };
    let dropped = keys.get(key).is_some_and(|slot| slot.seq <= applied) && keys.remove(key).is_some();
    if keys.is_empty() {
        rows.remove(program);
    }
    dropped
}

/// A row's table, program and key: what one journal record wrote, to drop once redb holds it.
#[derive(Debug)]
enum RowKey {
    Account(String, String),
    Receipt(String, String),
    Identity(String, String),
    Request(String, String),
    Ledger(String, (String, u64)),
    Outbox(String, u64),
    OutboxHead(String),
    Credit(String, String),
}

/// Rows written by acknowledged commits, by table. `()` keys the per-program outbox head.
#[derive(Debug, Default)]
pub(super) struct Overlay {
    accounts: Rows<String, Vec<u8>>,
    receipts: Rows<String, Vec<u8>>,
    /// `None`: the identifier was released.
    identities: Rows<String, Option<String>>,
    requests: Rows<String, Vec<u8>>,
    ledger: Rows<(String, u64), Vec<u8>>,
    outbox: Rows<u64, Vec<u8>>,
    outbox_head: Rows<(), u64>,
    credits: Rows<String, Vec<u8>>,
    /// The rows each journal record wrote, oldest first.
    written: VecDeque<(u64, Vec<RowKey>)>,
    /// Rows held, for the metrics.
    rows: usize,
}

impl Overlay {
    pub(super) fn account(&self, program: &str, account: &str) -> Option<&[u8]> {
        row(&self.accounts, program, account).map(Vec::as_slice)
    }

    pub(super) fn receipt(&self, program: &str, receipt: &str) -> Option<&[u8]> {
        row(&self.receipts, program, receipt).map(Vec::as_slice)
    }

    /// `Some(None)`: released since redb's state.
    pub(super) fn identity(&self, program: &str, storage_key: &str) -> Option<Option<&str>> {
        row(&self.identities, program, storage_key).map(Option::as_deref)
    }

    pub(super) fn request(&self, program: &str, request: &str) -> Option<&[u8]> {
        row(&self.requests, program, request).map(Vec::as_slice)
    }

    fn ledger_has(&self, program: &str, account: &str, seq: u64) -> bool {
        self.ledger.get(program).is_some_and(|entries| entries.contains_key(&(account.to_owned(), seq)))
    }

    /// The account's entries numbered in `from..before`, in order.
    pub(super) fn ledger(&self, program: &str, account: &str, from: u64, before: u64) -> Vec<(u64, &[u8])> {
        let Some(entries) = self.ledger.get(program) else { return Vec::new() };
        let account = account.to_owned();
        entries.range((account.clone(), from)..(account, before)).map(|((_, seq), slot)| (*seq, slot.value.as_slice())).collect()
    }

    fn outbox_head(&self, program: &str) -> Option<u64> {
        row(&self.outbox_head, program, &()).copied()
    }

    /// The program's outbox events numbered after `after`, in order.
    pub(super) fn outbox(&self, program: &str, after: u64) -> impl Iterator<Item = (u64, &[u8])> {
        self.outbox
            .get(program)
            .into_iter()
            .flat_map(move |events| events.range((Bound::Excluded(after), Bound::Unbounded)))
            .map(|(seq, slot)| (*seq, slot.value.as_slice()))
    }

    /// The program's accounts after `cursor`, in order.
    pub(super) fn account_ids(&self, program: &str, cursor: &str) -> impl Iterator<Item = &str> {
        self.accounts
            .get(program)
            .into_iter()
            .flat_map(move |accounts| accounts.range::<str, _>((Bound::Excluded(cursor), Bound::Unbounded)))
            .map(|(account, _)| account.as_str())
    }

    /// The program's credits, by ID.
    pub(super) fn credits(&self, program: &str) -> impl Iterator<Item = (&str, &[u8])> {
        self.credits.get(program).into_iter().flatten().map(|(credit, slot)| (credit.as_str(), slot.value.as_slice()))
    }

    /// Takes in the rows of one journal record's commits (`batch`, written by [`Staged`]).
    pub(super) fn absorb(&mut self, batch: Overlay, seq: u64) {
        let mut keys = Vec::new();
        let added = absorb(&mut self.accounts, batch.accounts, seq, &mut keys, RowKey::Account)
            + absorb(&mut self.receipts, batch.receipts, seq, &mut keys, RowKey::Receipt)
            + absorb(&mut self.identities, batch.identities, seq, &mut keys, RowKey::Identity)
            + absorb(&mut self.requests, batch.requests, seq, &mut keys, RowKey::Request)
            + absorb(&mut self.ledger, batch.ledger, seq, &mut keys, RowKey::Ledger)
            + absorb(&mut self.outbox, batch.outbox, seq, &mut keys, RowKey::Outbox)
            + absorb(&mut self.outbox_head, batch.outbox_head, seq, &mut keys, |program, ()| RowKey::OutboxHead(program))
            + absorb(&mut self.credits, batch.credits, seq, &mut keys, RowKey::Credit);
        self.written.push_back((seq, keys));
        self.rows += added;
        metrics::gauge!("loyalty_store_overlay_rows").set(self.rows as f64);
    }

    /// Drops the rows of the records up to `applied`, which redb now holds.
    pub(super) fn forget_through(&mut self, applied: u64) {
        while self.written.front().is_some_and(|(seq, _)| *seq <= applied) {
            let Some((_, keys)) = self.written.pop_front() else { break };
            for key in keys {
                let dropped = match &key {
                    RowKey::Account(program, key) => forget(&mut self.accounts, program, key, applied),
                    RowKey::Receipt(program, key) => forget(&mut self.receipts, program, key, applied),
                    RowKey::Identity(program, key) => forget(&mut self.identities, program, key, applied),
                    RowKey::Request(program, key) => forget(&mut self.requests, program, key, applied),
                    RowKey::Ledger(program, key) => forget(&mut self.ledger, program, key, applied),
                    RowKey::Outbox(program, key) => forget(&mut self.outbox, program, key, applied),
                    RowKey::OutboxHead(program) => forget(&mut self.outbox_head, program, &(), applied),
                    RowKey::Credit(program, key) => forget(&mut self.credits, program, key, applied),
                };
                self.rows -= usize::from(dropped);
            }
        }
        metrics::gauge!("loyalty_store_overlay_rows").set(self.rows as f64);
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

/// What the committer checks a batch against: the batch's own rows so far, then the acknowledged
/// commits redb does not hold yet, then redb. Writes go to the batch's rows only, which become the
/// overlay's once the batch's journal record is durable.
pub(super) struct Staged<'a> {
    pub(super) batch: Overlay,
    pub(super) acknowledged: &'a Overlay,
    pub(super) redb: &'a ReadTables,
}

impl Staged<'_> {
    /// The first of the batch's rows and the acknowledged ones that has `find`.
    fn either<'s, T>(&'s self, find: impl Fn(&'s Overlay) -> Option<T>) -> Option<T> {
        find(&self.batch).or_else(|| find(self.acknowledged))
    }
}

impl CommitRows for Staged<'_> {
    fn account_version(&self, program: &str, account: &str) -> Result<u64, StoreError> {
        match self.either(|rows| rows.account(program, account)) {
            Some(bytes) => version_of("account", bytes),
            None => self.redb.account_version(program, account),
        }
    }

    fn receipt(&self, program: &str, receipt: &str) -> Result<Option<(u64, String)>, StoreError> {
        match self.either(|rows| rows.receipt(program, receipt)) {
            Some(bytes) => receipt_claim(bytes).map(Some),
            None => self.redb.receipt(program, receipt),
        }
    }

    fn ledger_has(&self, program: &str, account: &str, seq: u64) -> Result<bool, StoreError> {
        // Entries are never removed: one in either place is there.
        if self.batch.ledger_has(program, account, seq) || self.acknowledged.ledger_has(program, account, seq) {
            return Ok(true);
        }
        self.redb.ledger_has(program, account, seq)
    }

    fn identity_owner(&self, program: &str, storage_key: &str) -> Result<Option<String>, StoreError> {
        match self.either(|rows| rows.identity(program, storage_key)) {
            Some(owner) => Ok(owner.map(str::to_owned)),
            None => self.redb.identity_owner(program, storage_key),
        }
    }

    fn request_exists(&self, program: &str, request: &str) -> Result<bool, StoreError> {
        match self.either(|rows| rows.request(program, request)) {
            Some(_) => Ok(true),
            None => self.redb.request_exists(program, request),
        }
    }

    fn outbox_head(&self, program: &str) -> Result<u64, StoreError> {
        match self.either(|rows| rows.outbox_head(program)) {
            Some(seq) => Ok(seq),
            None => self.redb.outbox_head(program),
        }
    }

    fn put_account(&mut self, program: &str, account: &str, bytes: &[u8]) -> Result<(), StoreError> {
        put(&mut self.batch.accounts, program, account.to_owned(), 0, bytes.to_vec());
        Ok(())
    }

    fn put_ledger(&mut self, program: &str, account: &str, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        put(&mut self.batch.ledger, program, (account.to_owned(), seq), 0, bytes.to_vec());
        Ok(())
    }

    fn put_receipt(&mut self, program: &str, receipt: &str, bytes: &[u8]) -> Result<(), StoreError> {
        put(&mut self.batch.receipts, program, receipt.to_owned(), 0, bytes.to_vec());
        Ok(())
    }

    fn put_identity(&mut self, program: &str, storage_key: &str, account: &str) -> Result<(), StoreError> {
        put(&mut self.batch.identities, program, storage_key.to_owned(), 0, Some(account.to_owned()));
        Ok(())
    }

    fn remove_identity(&mut self, program: &str, storage_key: &str) -> Result<(), StoreError> {
        put(&mut self.batch.identities, program, storage_key.to_owned(), 0, None);
        Ok(())
    }

    fn put_request(&mut self, program: &str, request: &str, bytes: &[u8]) -> Result<(), StoreError> {
        put(&mut self.batch.requests, program, request.to_owned(), 0, bytes.to_vec());
        Ok(())
    }

    fn put_outbox(&mut self, program: &str, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        put(&mut self.batch.outbox, program, seq, 0, bytes.to_vec());
        Ok(())
    }

    fn set_outbox_head(&mut self, program: &str, seq: u64) -> Result<(), StoreError> {
        put(&mut self.batch.outbox_head, program, (), 0, seq);
        Ok(())
    }

    fn put_credit(&mut self, program: &str, credit: &str, bytes: &[u8]) -> Result<(), StoreError> {
        put(&mut self.batch.credits, program, credit.to_owned(), 0, bytes.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(rows: impl FnOnce(&mut Overlay)) -> Overlay {
        let mut batch = Overlay::default();
        rows(&mut batch);
        batch
    }

    #[test]
    fn rows_leave_once_redb_holds_the_record_that_last_wrote_them() {
        let mut overlay = Overlay::default();
        overlay.absorb(
            batch(|rows| {
                put(&mut rows.accounts, "p", "a".into(), 0, vec![1]);
                put(&mut rows.accounts, "p", "b".into(), 0, vec![1]);
                put(&mut rows.ledger, "p", ("a".into(), 1), 0, vec![1]);
            }),
            7,
        );
        overlay.absorb(batch(|rows| put(&mut rows.accounts, "p", "a".into(), 0, vec![2])), 8);
        assert_eq!(overlay.rows, 3);
        overlay.forget_through(7);
        // b and a's entry were written by record 7 only; a was written again by 8.
        assert_eq!(overlay.account("p", "a"), Some(&[2u8][..]));
        assert_eq!(overlay.account("p", "b"), None);
        assert!(overlay.ledger("p", "a", 1, 2).is_empty());
        overlay.forget_through(8);
        assert!(overlay.is_empty());
        assert!(overlay.accounts.is_empty(), "empty programs are dropped");
    }

    #[test]
    fn ranges_read_in_order_within_the_program_and_account() {
        let mut overlay = Overlay::default();
        overlay.absorb(
            batch(|rows| {
                for (account, seq) in [("a", 3), ("a", 1), ("a", 2), ("b", 1)] {
                    put(&mut rows.ledger, "p", (account.into(), seq), 0, vec![seq as u8]);
                }
                for seq in [5, 4, 6] {
                    put(&mut rows.outbox, "p", seq, 0, vec![]);
                }
                put(&mut rows.outbox, "q", 1, 0, vec![]);
                for account in ["c", "a", "b"] {
                    put(&mut rows.accounts, "p", account.into(), 0, vec![]);
                }
            }),
            1,
        );
        assert_eq!(overlay.ledger("p", "a", 2, 4).iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(overlay.outbox("p", 4).map(|(seq, _)| seq).collect::<Vec<_>>(), vec![5, 6]);
        assert_eq!(overlay.account_ids("p", "a").collect::<Vec<_>>(), vec!["b", "c"]);
        assert_eq!(overlay.account_ids("p", "").count(), 3);
        assert_eq!(overlay.account_ids("q", "").count(), 0);
    }
}
