//! One commit's conditions and writes, over any rows that hold the store's state.
//!
//! The same function decides every commit wherever it runs: the committer checks it against the
//! acknowledged commits redb does not hold yet over redb's last state (`overlay::Staged`), the
//! applier and the recovery write it into redb's tables (and expect it to apply again), and the
//! direct writer (`journal = false`) does both in one redb transaction. So a commit that was
//! acknowledged once applies again, in journal order, to the same effect.

use loyalty_core::receipt::ReceiptState;
use redb::ReadableTable;

use super::record::EncodedCommit;
use super::{ACCOUNTS, CREDITS, IDENTITIES, LEDGER, META, OUTBOX, OUTBOX_HEAD, RECEIPTS, REQUESTS, io, version_of};
use crate::codec::decode_versioned;
use crate::{CommitOutcome, Conflict, StoreError};

/// The rows a commit reads for its conditions and writes when they hold.
pub(super) trait CommitRows {
    /// The stored account's version; 0 if there is none.
    fn account_version(&self, program: &str, account: &str) -> Result<u64, StoreError>;
    /// The stored receipt's version (0: none) and the account that claimed it.
    fn receipt(&self, program: &str, receipt: &str) -> Result<Option<(u64, String)>, StoreError>;
    fn ledger_has(&self, program: &str, account: &str, seq: u64) -> Result<bool, StoreError>;
    fn identity_owner(&self, program: &str, storage_key: &str) -> Result<Option<String>, StoreError>;
    fn request_exists(&self, program: &str, request: &str) -> Result<bool, StoreError>;
    /// The program's last outbox seq; 0 if none.
    fn outbox_head(&self, program: &str) -> Result<u64, StoreError>;

    fn put_account(&mut self, program: &str, account: &str, bytes: &[u8]) -> Result<(), StoreError>;
    fn put_ledger(&mut self, program: &str, account: &str, seq: u64, bytes: &[u8]) -> Result<(), StoreError>;
    fn put_receipt(&mut self, program: &str, receipt: &str, bytes: &[u8]) -> Result<(), StoreError>;
    fn put_identity(&mut self, program: &str, storage_key: &str, account: &str) -> Result<(), StoreError>;
    fn remove_identity(&mut self, program: &str, storage_key: &str) -> Result<(), StoreError>;
    fn put_request(&mut self, program: &str, request: &str, bytes: &[u8]) -> Result<(), StoreError>;
    fn put_outbox(&mut self, program: &str, seq: u64, bytes: &[u8]) -> Result<(), StoreError>;
    fn set_outbox_head(&mut self, program: &str, seq: u64) -> Result<(), StoreError>;
    fn put_credit(&mut self, program: &str, credit: &str, bytes: &[u8]) -> Result<(), StoreError>;
}

/// The version of a stored receipt record and the account that claimed it.
pub(super) fn receipt_claim(bytes: &[u8]) -> Result<(u64, String), StoreError> {
    let (version, receipt): (u64, ReceiptState) = decode_versioned("receipt", bytes)?;
    Ok((version, receipt.account_id))
}

/// Checks every condition of one commit and, if all hold, writes it into `rows`. Reads see the
/// commits written into `rows` before it. The outer error is the rows' own (fatal for the batch);
/// the inner one refuses this commit alone, which then wrote nothing.
pub(super) fn apply(rows: &mut impl CommitRows, commit: &EncodedCommit) -> Result<Result<CommitOutcome, StoreError>, StoreError> {
    let program = commit.program_id.as_str();
    let account_id = commit.account_id.as_str();
    let stored_version = rows.account_version(program, account_id)?;
    if stored_version != commit.expected_version {
        return Ok(Ok(CommitOutcome::Conflict(Conflict::AccountVersion { actual: stored_version })));
    }
    if let Some((receipt_id, expected, _)) = &commit.receipt {
        let (stored, owner) = rows.receipt(program, receipt_id)?.unwrap_or_default();
        if stored != *expected {
            return Ok(Ok(CommitOutcome::Conflict(Conflict::ReceiptVersion { actual: stored })));
        }
        // A receipt belongs to the account that claimed it, whatever version another one names.
        if stored > 0 && owner != account_id {
            return Ok(Ok(CommitOutcome::Conflict(Conflict::ReceiptTaken { account_id: owner })));
        }
    }
    // The entries must continue the stored ledger: no gap before them, nothing under them.
    if let Some((first, _)) = commit.ledger.first() {
        let follows = *first == 1 || rows.ledger_has(program, account_id, first - 1)?;
        if !follows || rows.ledger_has(program, account_id, *first)? {
            return Ok(Err(StoreError::Corrupt(format!(
                "commit for account {account_id} does not continue its stored ledger at entry {first}"
            ))));
        }
    }
    for (key, storage_key) in &commit.identity_claims {
        if let Some(owner) = rows.identity_owner(program, storage_key)?
            && owner != account_id
        {
            return Ok(Ok(CommitOutcome::Conflict(Conflict::IdentityTaken { key: key.clone(), account_id: owner })));
        }
    }
    if let Some((request_id, _)) = &commit.request
        && rows.request_exists(program, request_id)?
    {
        return Ok(Ok(CommitOutcome::Conflict(Conflict::RequestTaken)));
    }

    rows.put_account(program, account_id, &commit.account)?;
    for (seq, bytes) in &commit.ledger {
        rows.put_ledger(program, account_id, *seq, bytes)?;
    }
    if let Some((receipt_id, _, bytes)) = &commit.receipt {
        rows.put_receipt(program, receipt_id, bytes)?;
    }
    for (_, storage_key) in &commit.identity_claims {
        rows.put_identity(program, storage_key, account_id)?;
    }
    for storage_key in &commit.identity_releases {
        if rows.identity_owner(program, storage_key)?.is_some_and(|owner| owner == account_id) {
            rows.remove_identity(program, storage_key)?;
        }
    }
    if let Some((request_id, bytes)) = &commit.request {
        rows.put_request(program, request_id, bytes)?;
    }
    if !commit.events.is_empty() {
        let mut seq = rows.outbox_head(program)?;
        for bytes in &commit.events {
            seq += 1;
            rows.put_outbox(program, seq, bytes)?;
        }
        rows.set_outbox_head(program, seq)?;
    }
    for (credit_id, bytes) in &commit.credits {
        rows.put_credit(program, credit_id, bytes)?;
    }
    Ok(Ok(CommitOutcome::Applied { account_version: stored_version + 1 }))
}

/// The tables of one redb write transaction, opened once per batch.
pub(super) struct Tables<'txn> {
    pub(super) meta: redb::Table<'txn, &'static str, u64>,
    accounts: redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
    receipts: redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
    identities: redb::Table<'txn, (&'static str, &'static str), &'static str>,
    requests: redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
    ledger: redb::Table<'txn, (&'static str, &'static str, u64), &'static [u8]>,
    outbox: redb::Table<'txn, (&'static str, u64), &'static [u8]>,
    outbox_head: redb::Table<'txn, &'static str, u64>,
    credits: redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    pub(super) fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            meta: txn.open_table(META).map_err(io)?,
            accounts: txn.open_table(ACCOUNTS).map_err(io)?,
            receipts: txn.open_table(RECEIPTS).map_err(io)?,
            identities: txn.open_table(IDENTITIES).map_err(io)?,
            requests: txn.open_table(REQUESTS).map_err(io)?,
            ledger: txn.open_table(LEDGER).map_err(io)?,
            outbox: txn.open_table(OUTBOX).map_err(io)?,
            outbox_head: txn.open_table(OUTBOX_HEAD).map_err(io)?,
            credits: txn.open_table(CREDITS).map_err(io)?,
        })
    }
}

/// The same tables in a read transaction: what the committer reads under the journal's overlay.
pub(super) struct ReadTables {
    accounts: redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    receipts: redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    identities: redb::ReadOnlyTable<(&'static str, &'static str), &'static str>,
    requests: redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    ledger: redb::ReadOnlyTable<(&'static str, &'static str, u64), &'static [u8]>,
    outbox_head: redb::ReadOnlyTable<&'static str, u64>,
}

impl ReadTables {
    pub(super) fn open(txn: &redb::ReadTransaction) -> Result<Self, StoreError> {
        Ok(ReadTables {
            accounts: txn.open_table(ACCOUNTS).map_err(io)?,
            receipts: txn.open_table(RECEIPTS).map_err(io)?,
            identities: txn.open_table(IDENTITIES).map_err(io)?,
            requests: txn.open_table(REQUESTS).map_err(io)?,
            ledger: txn.open_table(LEDGER).map_err(io)?,
            outbox_head: txn.open_table(OUTBOX_HEAD).map_err(io)?,
        })
    }

    pub(super) fn account_version(&self, program: &str, account: &str) -> Result<u64, StoreError> {
        account_version_in(&self.accounts, program, account)
    }

    pub(super) fn receipt(&self, program: &str, receipt: &str) -> Result<Option<(u64, String)>, StoreError> {
        receipt_in(&self.receipts, program, receipt)
    }

    pub(super) fn ledger_has(&self, program: &str, account: &str, seq: u64) -> Result<bool, StoreError> {
        ledger_has_in(&self.ledger, program, account, seq)
    }

    pub(super) fn identity_owner(&self, program: &str, storage_key: &str) -> Result<Option<String>, StoreError> {
        identity_owner_in(&self.identities, program, storage_key)
    }

    pub(super) fn request_exists(&self, program: &str, request: &str) -> Result<bool, StoreError> {
        Ok(self.requests.get((program, request)).map_err(io)?.is_some())
    }

    pub(super) fn outbox_head(&self, program: &str) -> Result<u64, StoreError> {
        outbox_head_in(&self.outbox_head, program)
    }
}

fn account_version_in(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    program: &str,
    account: &str,
) -> Result<u64, StoreError> {
    match table.get((program, account)).map_err(io)? {
        Some(guard) => version_of("account", guard.value()),
        None => Ok(0),
    }
}

fn receipt_in(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    program: &str,
    receipt: &str,
) -> Result<Option<(u64, String)>, StoreError> {
    match table.get((program, receipt)).map_err(io)? {
        Some(guard) => receipt_claim(guard.value()).map(Some),
        None => Ok(None),
    }
}

fn ledger_has_in(
    table: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    program: &str,
    account: &str,
    seq: u64,
) -> Result<bool, StoreError> {
    Ok(table.get((program, account, seq)).map_err(io)?.is_some())
}

fn identity_owner_in(
    table: &impl ReadableTable<(&'static str, &'static str), &'static str>,
    program: &str,
    storage_key: &str,
) -> Result<Option<String>, StoreError> {
    Ok(table.get((program, storage_key)).map_err(io)?.map(|owner| owner.value().to_owned()))
}

fn outbox_head_in(table: &impl ReadableTable<&'static str, u64>, program: &str) -> Result<u64, StoreError> {
    Ok(table.get(program).map_err(io)?.map_or(0, |guard| guard.value()))
}

impl CommitRows for Tables<'_> {
    fn account_version(&self, program: &str, account: &str) -> Result<u64, StoreError> {
        account_version_in(&self.accounts, program, account)
    }

    fn receipt(&self, program: &str, receipt: &str) -> Result<Option<(u64, String)>, StoreError> {
        receipt_in(&self.receipts, program, receipt)
    }

    fn ledger_has(&self, program: &str, account: &str, seq: u64) -> Result<bool, StoreError> {
        ledger_has_in(&self.ledger, program, account, seq)
    }

    fn identity_owner(&self, program: &str, storage_key: &str) -> Result<Option<String>, StoreError> {
        identity_owner_in(&self.identities, program, storage_key)
    }

    fn request_exists(&self, program: &str, request: &str) -> Result<bool, StoreError> {
        Ok(self.requests.get((program, request)).map_err(io)?.is_some())
    }

    fn outbox_head(&self, program: &str) -> Result<u64, StoreError> {
        outbox_head_in(&self.outbox_head, program)
    }

    fn put_account(&mut self, program: &str, account: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.accounts.insert((program, account), bytes).map_err(io).map(drop)
    }

    fn put_ledger(&mut self, program: &str, account: &str, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.ledger.insert((program, account, seq), bytes).map_err(io).map(drop)
    }

    fn put_receipt(&mut self, program: &str, receipt: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.receipts.insert((program, receipt), bytes).map_err(io).map(drop)
    }

    fn put_identity(&mut self, program: &str, storage_key: &str, account: &str) -> Result<(), StoreError> {
        self.identities.insert((program, storage_key), account).map_err(io).map(drop)
    }

    fn remove_identity(&mut self, program: &str, storage_key: &str) -> Result<(), StoreError> {
        self.identities.remove((program, storage_key)).map_err(io).map(drop)
    }

    fn put_request(&mut self, program: &str, request: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.requests.insert((program, request), bytes).map_err(io).map(drop)
    }

    fn put_outbox(&mut self, program: &str, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.outbox.insert((program, seq), bytes).map_err(io).map(drop)
    }

    fn set_outbox_head(&mut self, program: &str, seq: u64) -> Result<(), StoreError> {
        self.outbox_head.insert(program, seq).map_err(io).map(drop)
    }

    fn put_credit(&mut self, program: &str, credit: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.credits.insert((program, credit), bytes).map_err(io).map(drop)
    }
}
