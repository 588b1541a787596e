//! The embedded backend: one redb file and its write-ahead journal, written with group commit.
//!
//! Why redb: measured on this machine (ARCHITECTURE.md has the table), redb gives 2 µs point reads
//! that stay near 2 µs while the writer commits, 7 µs for a page of 50 ledger entries, and reopens
//! in under a millisecond after kill -9 with quick-repair; its group-commit write rate (about 36,000
//! durable writes/s in batches of 64) is far above what checkout traffic needs.
//!
//! Why group commit: one fsync costs about 0.3-0.5 ms here, so one fsync per call would cap the
//! engine near 2,000-3,000 calls/s. Instead every call hands its [`Commit`] to one thread (the
//! committer, or without the journal the writer) and waits; that thread takes everything queued (up
//! to `batch_max`), checks it, makes it durable with one fsync, and answers all of them. Calls that
//! arrive meanwhile form the next batch.
//!
//! The journal (`journal = true`, the default): with [`Durability::Fsync`] a batch is made durable
//! by appending its commits to a write-ahead journal and fdatasyncing that, not by a durable redb
//! commit (which rewrites and fsyncs every B-tree page the batch touched). redb is kept off the
//! callers' path: acknowledged commits wait in memory (`overlay.rs`, where every read looks first)
//! until an applier thread has written them into redb, and redb's own durable commit runs there as
//! a checkpoint every `checkpoint_bytes` of journal (`pipeline.rs`). `journal.rs` has the format
//! and the recovery. Whether it is on or off, opening applies whatever a journal left behind.
//! Without it (`journal = false`, or [`Durability::None`]) the writer applies each batch to redb
//! in one write transaction and commits it with the store's durability (`writer.rs`).
//!
//! Durability: a call is answered only after the fsync that covers it returned, and its batch
//! becomes visible to readers only then. A failed commit poisons the store: it refuses every later
//! write rather than pretend, and health turns NOT_SERVING until a restart recovers from the files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use loyalty_core::account::AccountState;
use loyalty_core::identity::IdentityKey;
use loyalty_core::ledger::LedgerEntry;
use loyalty_core::receipt::{CallRecord, ReceiptState};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{decode, decode_versioned, encode, encode_versioned};
use loyalty_core::events::PendingCredit;

mod apply;
mod journal;
mod overlay;
mod pipeline;
mod record;
mod writer;

use apply::{Tables, apply};
use journal::Segments;
use pipeline::Shared;
use record::{EncodedCommit, Reader};

use crate::{AccountPage, Commit, CommitOutcome, OutboxRecord, Store, StoreError, StoredFigures, StoredRules, Versioned};

/// (program, account) -> version + AccountState.
const ACCOUNTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("accounts");
/// (program, account, seq) -> LedgerEntry.
const LEDGER: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("ledger");
/// (program, receipt) -> version + ReceiptState.
const RECEIPTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("receipts");
/// (program, identity storage key) -> account ID.
const IDENTITIES: TableDefinition<(&str, &str), &str> = TableDefinition::new("identities");
/// (program, enrolment request) -> CallRecord.
const REQUESTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("requests");
/// Schema metadata.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (program, version) -> StoredRules.
const RULES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("rules");
/// program -> latest rules version.
const RULES_HEAD: TableDefinition<&str, u64> = TableDefinition::new("rules_head");
/// (program, seq) -> Event.
const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");
/// (program, credit ID) -> PendingCredit.
const CREDITS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("credits");
/// program -> last outbox seq.
const OUTBOX_HEAD: TableDefinition<&str, u64> = TableDefinition::new("outbox_head");
/// program -> the program's running figures: their `through_seq` as a versioned record's version,
/// the document as its value (`codec::encode_versioned`), so that the compare-and-set reads the
/// cursor without decoding the document.
const FIGURES: TableDefinition<&str, &[u8]> = TableDefinition::new("figures");

/// The on-disk schema this code reads and writes. 2: rules, outbox, and stored responses with
/// rule explanations. 3: the write-ahead journal beside the file holds acknowledged commits that
/// the file may not (an older build would ignore it and lose them, so it must refuse the file).
///
/// Not bumped for a table added since (`figures`): opening creates a missing table, so a file of
/// version 3 without it opens and simply has none stored yet. (That release also added fields to
/// accounts and outbox events, which an older build refuses to decode: a file is not handed back
/// to an older build once a newer one wrote it.) 4: the journal is segment files
/// (`loyalty.journal.<first record>`), which a build of schema 3 would not read: it would open
/// the file without the acknowledged commits they hold.
const SCHEMA_VERSION: u64 = 4;
/// Schema versions this code upgrades in place: 2 has no journal, 3 its single journal file (read
/// at opening, before the upgrade is written).
const SCHEMA_UPGRADABLE: [u64; 2] = [2, 3];
/// META key: the last journal record the file holds.
const JOURNAL_SEQ: &str = "journal_seq";

/// When an acknowledged commit is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Every acknowledged commit was fsynced (group commit shares one fsync among a batch).
    Fsync,
    /// No fsync: a crash of the process loses nothing the OS already has, a crash of the machine
    /// loses recent commits. For benchmarks and throwaway test data only.
    None,
}

/// Settings of the embedded store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// The database file.
    pub path: PathBuf,
    pub durability: Durability,
    /// Most commits that share one write transaction and one fsync.
    pub batch_max: usize,
    /// Commits that may wait for the writer; callers wait for room beyond that.
    pub queue_max: usize,
    /// redb's page cache.
    pub cache_bytes: usize,
    /// Persist the allocator state with every durable redb commit (each batch, or with the journal
    /// only the checkpoints) so that reopening after a crash takes milliseconds instead of a scan
    /// of the whole file.
    pub quick_repair: bool,
    /// Make batches durable through the write-ahead journal (with [`Durability::Fsync`]) and keep
    /// redb off the callers' path, instead of a durable redb commit per batch. On by default.
    pub journal: bool,
    /// Journal bytes after which redb makes its pages durable (a checkpoint) and the journal moves
    /// to a new segment; the committer waits while four times this is not checkpointed, which
    /// bounds the memory of acknowledged commits redb does not hold yet and the replay after a crash.
    pub checkpoint_bytes: u64,
}

impl EmbeddedConfig {
    /// The write-ahead journal beside the database file.
    pub fn journal_path(&self) -> PathBuf {
        self.path.with_extension("journal")
    }

    pub fn in_dir(data_dir: &Path) -> Self {
        EmbeddedConfig {
            path: data_dir.join("loyalty.redb"),
            durability: Durability::Fsync,
            batch_max: 256,
            queue_max: 4096,
            cache_bytes: 256 << 20,
            quick_repair: true,
            journal: true,
            checkpoint_bytes: 16 << 20,
        }
    }

    /// Whether batches are made durable through the journal.
    fn journaled(&self) -> bool {
        self.journal && self.durability == Durability::Fsync
    }
}

fn io<E: std::fmt::Display>(error: E) -> StoreError {
    StoreError::Io(error.to_string())
}

pub(super) struct Pending {
    commit: EncodedCommit,
    reply: oneshot::Sender<Result<CommitOutcome, StoreError>>,
}

pub(super) enum Message {
    /// Boxed: a commit carries whole account and receipt states.
    Commit(Box<Pending>),
    Shutdown(oneshot::Sender<()>),
}

/// Waits for the next commit and takes everything queued behind it, up to `batch_max` in `batch`:
/// a group commit's batch, for the committer and the direct writer alike. The batch is to be
/// written either way; [`Gathered::Stop`] says to stop after it.
fn gather(inbox: &mut mpsc::Receiver<Message>, batch: &mut Vec<Pending>, batch_max: usize) -> Gathered {
    match inbox.blocking_recv() {
        Some(Message::Commit(pending)) => batch.push(*pending),
        Some(Message::Shutdown(done)) => return Gathered::Stop(Some(done)),
        None => return Gathered::Stop(None),
    }
    while batch.len() < batch_max {
        match inbox.try_recv() {
            Ok(Message::Commit(pending)) => batch.push(*pending),
            Ok(Message::Shutdown(done)) => return Gathered::Stop(Some(done)),
            Err(_) => break,
        }
    }
    Gathered::Batch
}

/// What [`gather`] ended with.
enum Gathered {
    /// A batch to write; more may follow.
    Batch,
    /// Stop after writing the batch: a shutdown request (answered once everything is written), or
    /// the queue closed.
    Stop(Option<oneshot::Sender<()>>),
}

/// After a shutdown request: refuses whatever is still queued (nothing was acknowledged for it).
fn refuse_queued(inbox: &mut mpsc::Receiver<Message>) {
    inbox.close();
    while let Ok(message) = inbox.try_recv() {
        if let Message::Commit(pending) = message {
            let _ = pending.reply.send(Err(StoreError::Closed));
        }
    }
}

/// The redb-backed store. Cheap to share behind an `Arc`.
pub struct EmbeddedStore {
    db: Arc<Database>,
    queue: mpsc::Sender<Message>,
    /// The overlay of acknowledged commits redb does not hold yet, the writer's progress, and
    /// whether a failed write poisoned the store.
    shared: Arc<Shared>,
    /// Set by `shutdown`: every later write is refused.
    closed: AtomicBool,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    path: PathBuf,
    /// Of the store's own write transactions outside the batches (rules, credits).
    durability: redb::Durability,
    quick_repair: bool,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("path", &self.path).finish_non_exhaustive()
    }
}

/// What `verify` found: the accounts whose ledgers add up (and their entries), and the ones that
/// do not, each named with what is wrong.
#[derive(Debug, Default)]
pub struct Verification {
    pub accounts: u64,
    pub entries: u64,
    pub damaged: Vec<Damaged>,
}

/// One table's size as redb counts it (`verify` prints them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSize {
    pub name: String,
    pub rows: u64,
    /// Keys and values.
    pub stored_bytes: u64,
    /// The B-tree's own bytes (page headers, branch pages).
    pub metadata_bytes: u64,
    /// Bytes of the table's pages that hold nothing.
    pub fragmented_bytes: u64,
}

/// An account `verify` could not read, or whose ledger does not add up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damaged {
    pub program_id: String,
    pub account_id: String,
    pub what: String,
}

/// One account as `verify` checked it: its ledger entries, or what is wrong.
#[derive(Clone, Debug)]
pub struct AccountCheck {
    pub program_id: String,
    pub account_id: String,
    pub outcome: Result<u64, String>,
}

/// Checks one account's stored state against its ledger; returns its entries' count.
fn check_account(
    ledger: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    program_id: &str,
    account_id: &str,
    value: &[u8],
) -> Result<u64, String> {
    let (_, state): (u64, AccountState) = decode_versioned("account", value).map_err(|error| error.to_string())?;
    let mut sum = loyalty_core::Decimal::ZERO;
    let mut expected_seq = 1u64;
    for entry in ledger.range((program_id, account_id, 0)..=(program_id, account_id, u64::MAX)).map_err(|error| error.to_string())? {
        let (_, bytes) = entry.map_err(|error| error.to_string())?;
        let entry: LedgerEntry = decode("ledger entry", bytes.value()).map_err(|error| error.to_string())?;
        if entry.seq != expected_seq {
            return Err(format!("entry {} where {expected_seq} was due", entry.seq));
        }
        sum += entry.amount;
        if entry.balance_after != sum {
            return Err(format!("entry {} says {} after, sum is {sum}", entry.seq, entry.balance_after));
        }
        expected_seq += 1;
    }
    if expected_seq - 1 != state.ledger_seq || sum != state.ledger_sum || sum != state.booked_balance() {
        return Err(format!(
            "ledger sums to {sum} over {} entries, account says {} over {} (booked {})",
            expected_seq - 1,
            state.ledger_sum,
            state.ledger_seq,
            state.booked_balance()
        ));
    }
    Ok(expected_seq - 1)
}

/// What the operator sees of redb's repair after an unclean stop (kill -9, power loss): it reads
/// the whole file to rebuild its allocator state unless `quick_repair` kept that state durable, so
/// its time grows with the file. A line when it starts, then its progress at most once a second.
#[derive(Debug, Default)]
struct RepairLog {
    /// When progress was last logged; `None` until the repair starts.
    logged: Mutex<Option<Instant>>,
}

impl RepairLog {
    fn progress(&self, fraction: f64) {
        let mut logged = self.logged.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match *logged {
            None => tracing::warn!(
                "the store was not closed cleanly: repairing it (this reads the whole file; storage.quick_repair = true makes it instant at a cost to durable throughput)"
            ),
            Some(at) if at.elapsed().as_secs() >= 1 => tracing::info!(percent = (fraction * 100.0).round() as u32, "repairing the store"),
            Some(_) => return,
        }
        *logged = Some(Instant::now());
    }

    fn happened(&self) -> bool {
        self.logged.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database and starts the writer thread. Opening after a crash repairs
    /// the file to its last durable commit.
    pub fn open(config: EmbeddedConfig) -> Result<Self, StoreError> {
        assert!(config.batch_max > 0 && config.queue_max > 0, "empty batch or queue");
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir).map_err(|error| StoreError::Io(format!("create {}: {error}", dir.display())))?;
        }
        let bytes = std::fs::metadata(&config.path).map_or(0, |metadata| metadata.len());
        tracing::info!(path = %config.path.display(), mib = bytes >> 20, "opening the store");
        let started = Instant::now();
        let repair = Arc::new(RepairLog::default());
        // redb's repair of some damaged files panics ("entered unreachable code") rather than
        // answering an error: either way the file is damaged, and the operator is told so.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let repair = Arc::clone(&repair);
            Database::builder()
                .set_cache_size(config.cache_bytes)
                .set_repair_callback(move |session| repair.progress(session.progress()))
                .create(&config.path)
        }));
        let db = match opened {
            Ok(opened) => opened.map_err(|error| opening_failed(&config.path, error))?,
            Err(_) => {
                return Err(opening_failed(
                    &config.path,
                    redb::DatabaseError::Storage(redb::StorageError::Corrupted("the database's repair gave up (a panic in redb)".into())),
                ));
            }
        };
        let db = Arc::new(db);
        if repair.happened() {
            tracing::warn!(seconds = started.elapsed().as_secs_f64(), mib = bytes >> 20, "store repaired after an unclean stop");
        }
        Self::prepare_schema(&db)?;
        let next_seq = recover(&db, &config)? + 1;
        let (queue, inbox) = mpsc::channel(config.queue_max);
        let shared = Arc::new(Shared::default());
        let writer = {
            let db = Arc::clone(&db);
            let shared = Arc::clone(&shared);
            let thread = std::thread::Builder::new().name("store-writer".into());
            if config.journaled() {
                let segments = Segments::start(&config.journal_path(), next_seq, config.checkpoint_bytes)?;
                let config = config.clone();
                thread.spawn(move || pipeline::commit_loop(&db, inbox, &shared, &config, segments))
            } else {
                // Nothing written from here on goes to a journal: the file holds everything in it.
                journal::remove(&config.journal_path())?;
                let config = config.clone();
                thread.spawn(move || writer::write_loop(&db, inbox, &shared.poisoned, &config))
            }
            .map_err(io)?
        };
        tracing::info!(seconds = started.elapsed().as_secs_f64(), "store open");
        Ok(EmbeddedStore {
            db,
            queue,
            shared,
            closed: AtomicBool::new(false),
            writer: Mutex::new(Some(writer)),
            path: config.path,
            durability: redb_durability(config.durability),
            quick_repair: config.quick_repair,
        })
    }

    fn prepare_schema(db: &Database) -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(io)?;
        {
            txn.open_table(ACCOUNTS).map_err(io)?;
            txn.open_table(LEDGER).map_err(io)?;
            txn.open_table(RECEIPTS).map_err(io)?;
            txn.open_table(IDENTITIES).map_err(io)?;
            txn.open_table(REQUESTS).map_err(io)?;
            txn.open_table(RULES).map_err(io)?;
            txn.open_table(RULES_HEAD).map_err(io)?;
            txn.open_table(OUTBOX).map_err(io)?;
            txn.open_table(OUTBOX_HEAD).map_err(io)?;
            txn.open_table(CREDITS).map_err(io)?;
            txn.open_table(FIGURES).map_err(io)?;
            let mut meta = txn.open_table(META).map_err(io)?;
            let stored = meta.get("schema_version").map_err(io)?.map(|guard| guard.value());
            match stored {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(io)?;
                }
                Some(old) if SCHEMA_UPGRADABLE.contains(&old) => {
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(io)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(other) => return Err(StoreError::Corrupt(format!("schema version {other}, this build reads {SCHEMA_VERSION}"))),
            }
        }
        txn.commit().map_err(io)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.shared.is_poisoned() {
            return Err(StoreError::Poisoned);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// Checks every account against its ledger: entries numbered 1..=last with no gap, their sum
    /// equal to the account's booked balance, and each entry's running balance right. Returns the
    /// number of accounts and entries checked, or the first account that fails. For tests and
    /// `restore`; reads the whole database.
    pub fn verify_ledgers(&self) -> Result<(u64, u64), StoreError> {
        let verification = self.verify_accounts(|_| {})?;
        match verification.damaged.first() {
            Some(damaged) => Err(StoreError::Corrupt(format!("account {}: {}", damaged.account_id, damaged.what))),
            None => Ok((verification.accounts, verification.entries)),
        }
    }

    /// Every table's rows and bytes (after the acknowledged commits reach redb): what the data
    /// directory's bytes are made of, for `verify` and for sizing retention.
    pub fn table_sizes(&self) -> Result<Vec<TableSize>, StoreError> {
        fn size<K: redb::Key + 'static, V: redb::Value + 'static>(
            read: &redb::ReadTransaction,
            definition: TableDefinition<K, V>,
        ) -> Result<TableSize, StoreError> {
            use redb::{ReadableTableMetadata, TableHandle};
            let table = read.open_table(definition).map_err(io)?;
            let stats = table.stats().map_err(io)?;
            Ok(TableSize {
                name: definition.name().to_owned(),
                rows: table.len().map_err(io)?,
                stored_bytes: stats.stored_bytes(),
                metadata_bytes: stats.metadata_bytes(),
                fragmented_bytes: stats.fragmented_bytes(),
            })
        }
        self.shared.settle()?;
        let read = self.db.begin_read().map_err(io)?;
        Ok(vec![
            size(&read, ACCOUNTS)?,
            size(&read, LEDGER)?,
            size(&read, RECEIPTS)?,
            size(&read, IDENTITIES)?,
            size(&read, REQUESTS)?,
            size(&read, OUTBOX)?,
            size(&read, OUTBOX_HEAD)?,
            size(&read, CREDITS)?,
            size(&read, RULES)?,
            size(&read, RULES_HEAD)?,
            size(&read, FIGURES)?,
            size(&read, META)?,
        ])
    }

    /// Checks every account against its ledger as [`EmbeddedStore::verify_ledgers`] does, but goes
    /// on past an account that fails (a record that does not decode, a ledger that does not add
    /// up), so that the operator learns which accounts are still readable and which are damaged;
    /// `each` sees every account with its outcome. Fails only if the tables cannot be read at all.
    pub fn verify_accounts(&self, mut each: impl FnMut(&AccountCheck)) -> Result<Verification, StoreError> {
        self.shared.settle()?;
        let read = self.db.begin_read().map_err(io)?;
        let accounts = read.open_table(ACCOUNTS).map_err(io)?;
        let ledger = read.open_table(LEDGER).map_err(io)?;
        let mut verification = Verification::default();
        for item in accounts.iter().map_err(io)? {
            let (key, value) = item.map_err(io)?;
            let (program_id, account_id) = key.value();
            let outcome = check_account(&ledger, program_id, account_id, value.value());
            let check = AccountCheck { program_id: program_id.to_owned(), account_id: account_id.to_owned(), outcome };
            each(&check);
            match check.outcome {
                Ok(entries) => {
                    verification.accounts += 1;
                    verification.entries += entries;
                }
                Err(what) => verification.damaged.push(Damaged { program_id: check.program_id, account_id: check.account_id, what }),
            }
        }
        Ok(verification)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    // Every read of a table commits write looks at the overlay of acknowledged commits first, and
    // begins its redb read only after (overlay.rs says why that order is consistent).

    async fn account(&self, program_id: &str, account_id: &str) -> Result<Option<Versioned<AccountState>>, StoreError> {
        let decoded = |bytes: &[u8]| -> Result<Option<Versioned<AccountState>>, StoreError> {
            let (version, value): (u64, AccountState) = decode_versioned("account", bytes)?;
            crate::checked_account(account_id, version, value).map(Some)
        };
        if let Some(bytes) = self.shared.overlay().account(program_id, account_id) {
            return decoded(bytes);
        }
        let read = self.db.begin_read().map_err(io)?;
        let table = read.open_table(ACCOUNTS).map_err(io)?;
        match table.get((program_id, account_id)).map_err(io)? {
            Some(guard) => decoded(guard.value()),
            None => Ok(None),
        }
    }

    async fn identity(&self, program_id: &str, key: &IdentityKey) -> Result<Option<String>, StoreError> {
        let storage_key = key.storage_key();
        if let Some(owner) = self.shared.overlay().identity(program_id, &storage_key) {
            return Ok(owner.map(str::to_owned));
        }
        let read = self.db.begin_read().map_err(io)?;
        let table = read.open_table(IDENTITIES).map_err(io)?;
        Ok(table.get((program_id, storage_key.as_str())).map_err(io)?.map(|guard| guard.value().to_owned()))
    }

    async fn receipt(&self, program_id: &str, receipt_id: &str) -> Result<Option<Versioned<ReceiptState>>, StoreError> {
        let decoded = |bytes: &[u8]| -> Result<Option<Versioned<ReceiptState>>, StoreError> {
            let (version, value) = decode_versioned("receipt", bytes)?;
            Ok(Some(Versioned { version, value }))
        };
        if let Some(bytes) = self.shared.overlay().receipt(program_id, receipt_id) {
            return decoded(bytes);
        }
        let read = self.db.begin_read().map_err(io)?;
        let table = read.open_table(RECEIPTS).map_err(io)?;
        match table.get((program_id, receipt_id)).map_err(io)? {
            Some(guard) => decoded(guard.value()),
            None => Ok(None),
        }
    }

    async fn request(&self, program_id: &str, request_id: &str) -> Result<Option<CallRecord>, StoreError> {
        if let Some(bytes) = self.shared.overlay().request(program_id, request_id) {
            return Ok(Some(decode("request", bytes)?));
        }
        let read = self.db.begin_read().map_err(io)?;
        let table = read.open_table(REQUESTS).map_err(io)?;
        match table.get((program_id, request_id)).map_err(io)? {
            Some(guard) => Ok(Some(decode("request", guard.value())?)),
            None => Ok(None),
        }
    }

    async fn ledger_page(&self, program_id: &str, account_id: &str, before_seq: u64, limit: usize) -> Result<Vec<LedgerEntry>, StoreError> {
        if before_seq <= 1 || limit == 0 {
            return Ok(Vec::new());
        }
        // The overlay holds an account's newest entries (redb has every older one), newest first.
        let mut entries = Vec::with_capacity(limit.min(256));
        let mut below = before_seq;
        for (seq, bytes) in self.shared.overlay().ledger(program_id, account_id, 1, before_seq).into_iter().rev().take(limit) {
            entries.push(decode("ledger entry", bytes)?);
            below = seq;
        }
        if entries.len() == limit || below <= 1 {
            return Ok(entries);
        }
        let read = self.db.begin_read().map_err(io)?;
        let table = read.open_table(LEDGER).map_err(io)?;
        for item in table.range((program_id, account_id, 1)..(program_id, account_id, below)).map_err(io)?.rev().take(limit - entries.len())
        {
            let (_, value) = item.map_err(io)?;
            entries.push(decode("ledger entry", value.value())?);
        }
        Ok(entries)
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        self.check_writable()?;
        let commit = EncodedCommit::new(commit)?;
        let (reply, answer) = oneshot::channel();
        self.queue.send(Message::Commit(Box::new(Pending { commit, reply }))).await.map_err(|_| StoreError::Closed)?;
        // A dropped reply means the writer died mid-batch: the outcome is unknown to us, so the call
        // is not acknowledged; a retry is answered from the store once it is back.
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn latest_rules(&self, program_id: &str) -> Result<Option<StoredRules>, StoreError> {
        let read = self.db.begin_read().map_err(io)?;
        let head = read.open_table(RULES_HEAD).map_err(io)?;
        let Some(version) = head.get(program_id).map_err(io)?.map(|guard| guard.value()) else {
            return Ok(None);
        };
        let table = read.open_table(RULES).map_err(io)?;
        match table.get((program_id, version)).map_err(io)? {
            Some(guard) => Ok(Some(decode("rules", guard.value())?)),
            None => Err(StoreError::Corrupt(format!("program {program_id}: rules version {version} missing"))),
        }
    }

    async fn rules_head(&self, program_id: &str) -> Result<u64, StoreError> {
        let read = self.db.begin_read().map_err(io)?;
        let head = read.open_table(RULES_HEAD).map_err(io)?;
        Ok(head.get(program_id).map_err(io)?.map_or(0, |guard| guard.value()))
    }

    async fn rules_version(&self, program_id: &str, version: u64) -> Result<Option<StoredRules>, StoreError> {
        let read = self.db.begin_read().map_err(io)?;
        let table = read.open_table(RULES).map_err(io)?;
        match table.get((program_id, version)).map_err(io)? {
            Some(guard) => Ok(Some(decode("rules", guard.value())?)),
            None => Ok(None),
        }
    }

    async fn put_rules(&self, program_id: &str, rules: StoredRules) -> Result<bool, StoreError> {
        self.check_writable()?;
        // Rare (an admin change): its own write transaction, which waits for the applier's (or the
        // writer's) current transaction rather than joining it. Commits never read rules.
        let db = Arc::clone(&self.db);
        let program_id = program_id.to_owned();
        let bytes = encode(&rules)?;
        let (durability, quick_repair) = (self.durability, self.quick_repair);
        tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
            let mut txn = db.begin_write().map_err(io)?;
            txn.set_durability(durability).map_err(io)?;
            txn.set_quick_repair(quick_repair);
            {
                let mut head = txn.open_table(RULES_HEAD).map_err(io)?;
                let latest = head.get(program_id.as_str()).map_err(io)?.map_or(0, |guard| guard.value());
                if latest + 1 != rules.version {
                    return Ok(false);
                }
                head.insert(program_id.as_str(), rules.version).map_err(io)?;
                let mut table = txn.open_table(RULES).map_err(io)?;
                table.insert((program_id.as_str(), rules.version), bytes.as_slice()).map_err(io)?;
            }
            txn.commit().map_err(io)?;
            Ok(true)
        })
        .await
        .map_err(io)?
    }

    async fn figures(&self, program_id: &str) -> Result<Option<StoredFigures>, StoreError> {
        let read = self.db.begin_read().map_err(io)?;
        let table = read.open_table(FIGURES).map_err(io)?;
        let Some(guard) = table.get(program_id).map_err(io)? else {
            return Ok(None);
        };
        let (through_seq, document) = decode_versioned("figures", guard.value())?;
        Ok(Some(StoredFigures { through_seq, document }))
    }

    async fn put_figures(&self, program_id: &str, expected_through: u64, figures: StoredFigures) -> Result<bool, StoreError> {
        self.check_writable()?;
        figures.check_advances(program_id, expected_through)?;
        // A write transaction of its own, which redb runs only between the applier's (or the
        // writer's) transactions, and not made durable: figures are derived from the outbox and carry the seq they
        // include, so a crash that loses the latest put only makes the next fold start from the
        // cursor the file holds. (A durable redb commit per put would be a checkpoint, which
        // stalls the writer for as long, every few seconds, with the journal on.) The writer's
        // next durable commit or checkpoint makes it durable with everything before it.
        let db = Arc::clone(&self.db);
        let program_id = program_id.to_owned();
        let bytes = encode_versioned(figures.through_seq, &figures.document)?;
        let quick_repair = self.quick_repair;
        tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
            let mut txn = db.begin_write().map_err(io)?;
            txn.set_durability(redb::Durability::None).map_err(io)?;
            txn.set_quick_repair(quick_repair);
            match put_figures_in(&txn, &program_id, expected_through, &bytes)? {
                FiguresPut::Written => txn.commit().map_err(io).map(|()| true),
                FiguresPut::Unwritten { stored_already } => Ok(stored_already),
            }
        })
        .await
        .map_err(io)?
    }

    async fn account_ids(&self, program_id: &str, cursor: &str, limit: usize) -> Result<AccountPage, StoreError> {
        // Accounts created since redb's state are in the overlay only: the page is the first
        // `limit` of both, in order.
        let mut ids: std::collections::BTreeSet<String> =
            self.shared.overlay().account_ids(program_id, cursor).take(limit).map(str::to_owned).collect();
        let read = self.db.begin_read().map_err(io)?;
        let table = read.open_table(ACCOUNTS).map_err(io)?;
        let mut from_redb = 0;
        for item in table.range((program_id, cursor)..).map_err(io)? {
            let (key, _) = item.map_err(io)?;
            let (program, account_id) = key.value();
            if program != program_id || from_redb >= limit {
                break;
            }
            if account_id != cursor {
                ids.insert(account_id.to_owned());
                from_redb += 1;
            }
        }
        let ids: Vec<String> = ids.into_iter().take(limit).collect();
        let next = if ids.len() < limit { None } else { ids.last().cloned() };
        Ok(AccountPage { ids, next })
    }

    async fn pending_credits(&self, program_id: &str, limit: usize) -> Result<Vec<PendingCredit>, StoreError> {
        // By credit ID, the overlay's over redb's.
        let mut credits: std::collections::BTreeMap<String, Vec<u8>> =
            self.shared.overlay().credits(program_id).map(|(credit, bytes)| (credit.to_owned(), bytes.to_vec())).collect();
        let read = self.db.begin_read().map_err(io)?;
        let table = read.open_table(CREDITS).map_err(io)?;
        for item in table.range((program_id, "")..).map_err(io)?.take(limit) {
            let (key, value) = item.map_err(io)?;
            if key.value().0 != program_id {
                break;
            }
            credits.entry(key.value().1.to_owned()).or_insert_with(|| value.value().to_vec());
        }
        credits.values().take(limit).map(|bytes| decode("pending credit", bytes)).collect()
    }

    async fn delete_credit(&self, program_id: &str, credit_id: &str) -> Result<(), StoreError> {
        self.check_writable()?;
        let db = Arc::clone(&self.db);
        let shared = Arc::clone(&self.shared);
        let (program_id, credit_id) = (program_id.to_owned(), credit_id.to_owned());
        let quick_repair = self.quick_repair;
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            // The credit may be in the overlay still: redb must hold it before it is deleted there
            // (and the overlay then no longer holds it).
            shared.settle()?;
            // Not made durable (a durable redb commit would be a checkpoint's worth of page
            // writes per credit): a crash that loses the delete leaves the credit pending, and
            // applying it again is answered from its receipt, applied once.
            let mut txn = db.begin_write().map_err(io)?;
            txn.set_durability(redb::Durability::None).map_err(io)?;
            txn.set_quick_repair(quick_repair);
            txn.open_table(CREDITS).map_err(io)?.remove((program_id.as_str(), credit_id.as_str())).map_err(io)?;
            txn.commit().map_err(io)
        })
        .await
        .map_err(io)?
    }

    async fn outbox_page(&self, program_id: &str, after_seq: u64, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        // The overlay holds the newest events (redb every older one).
        let newest: Vec<(u64, Vec<u8>)> =
            self.shared.overlay().outbox(program_id, after_seq).take(limit).map(|(seq, bytes)| (seq, bytes.to_vec())).collect();
        let below = newest.first().map_or(u64::MAX, |(seq, _)| *seq);
        let read = self.db.begin_read().map_err(io)?;
        let table = read.open_table(OUTBOX).map_err(io)?;
        let mut records = Vec::with_capacity(limit.min(1024));
        let record = |seq: u64, bytes: &[u8]| -> Result<OutboxRecord, StoreError> {
            Ok(OutboxRecord { seq, event_id: seq.to_string(), event: decode("outbox event", bytes)? })
        };
        if after_seq < below - 1 {
            for item in table.range((program_id, after_seq.saturating_add(1))..(program_id, below)).map_err(io)?.take(limit) {
                let (key, value) = item.map_err(io)?;
                records.push(record(key.value().1, value.value())?);
            }
        }
        for (seq, bytes) in newest.into_iter().take(limit - records.len()) {
            records.push(record(seq, &bytes)?);
        }
        Ok(records)
    }

    async fn backup(&self, path: &Path) -> Result<Option<crate::BackupReport>, StoreError> {
        // A long copy of pages: off the async workers. The read transaction it holds does not
        // block the writer (redb readers see a snapshot).
        let db = Arc::clone(&self.db);
        let shared = Arc::clone(&self.shared);
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            shared.settle()?;
            backup_database(&db, &path).map(Some)
        })
        .await
        .map_err(io)?
    }

    fn is_writable(&self) -> bool {
        !self.shared.is_poisoned() && !self.closed.load(Ordering::Acquire) && !self.queue.is_closed()
    }

    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let (done, finished) = oneshot::channel();
        if self.queue.send(Message::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
        let handle = self.writer.lock().ok().and_then(|mut writer| writer.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// What a figures put did inside its write transaction.
enum FiguresPut {
    /// The stored figures included the cursor the put named: the new ones are written, to commit.
    Written,
    /// Nothing written; `stored_already`: the stored figures are exactly the ones offered (a
    /// repeated put), rather than another writer's.
    Unwritten { stored_already: bool },
}

/// Writes a program's figures record `bytes` into `txn` if the stored figures include exactly
/// `expected_through` (0: none stored); otherwise writes nothing.
fn put_figures_in(txn: &redb::WriteTransaction, program_id: &str, expected_through: u64, bytes: &[u8]) -> Result<FiguresPut, StoreError> {
    let mut table = txn.open_table(FIGURES).map_err(io)?;
    let (stored_through, stored_already) = match table.get(program_id).map_err(io)? {
        // The record's encoding is deterministic: the same figures give the same bytes.
        Some(guard) => (version_of("figures", guard.value())?, guard.value() == bytes),
        None => (0, false),
    };
    if stored_through != expected_through {
        return Ok(FiguresPut::Unwritten { stored_already });
    }
    table.insert(program_id, bytes).map_err(io)?;
    Ok(FiguresPut::Written)
}

/// Applies the journal's records that the file does not hold yet (after a crash) and makes them
/// durable in the file; returns the number of the last record the file holds.
fn recover(db: &Database, config: &EmbeddedConfig) -> Result<u64, StoreError> {
    let applied = {
        let read = db.begin_read().map_err(io)?;
        let meta = read.open_table(META).map_err(io)?;
        meta.get(JOURNAL_SEQ).map_err(io)?.map_or(0, |guard| guard.value())
    };
    let (records, last) = journal::recover(&config.journal_path(), applied)?;
    if records.is_empty() {
        return Ok(last);
    }
    let started = Instant::now();
    let mut txn = db.begin_write().map_err(io)?;
    txn.set_durability(redb::Durability::Immediate).map_err(io)?;
    txn.set_quick_repair(config.quick_repair);
    let mut commits = 0u64;
    {
        let mut tables = Tables::open(&txn)?;
        for (seq, payload) in &records {
            let mut reader = Reader::new(payload);
            while !reader.is_empty() {
                let commit = EncodedCommit::read_from(&mut reader)?;
                match apply(&mut tables, &commit)? {
                    Ok(CommitOutcome::Applied { .. }) => commits += 1,
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "journal record {seq}: a commit for account {} that applied once does not apply again ({other:?})",
                            commit.account_id
                        )));
                    }
                }
            }
        }
        tables.meta.insert(JOURNAL_SEQ, last).map_err(io)?;
    }
    txn.commit().map_err(io)?;
    tracing::info!(
        records = records.len(),
        commits,
        ms = started.elapsed().as_millis() as u64,
        "applied the journal's commits that the database file did not hold"
    );
    Ok(last)
}

/// Makes everything written into redb so far durable in the file: one durable commit.
fn checkpoint(db: &Database, config: &EmbeddedConfig) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut txn = db.begin_write().map_err(io)?;
    txn.set_durability(redb::Durability::Immediate).map_err(io)?;
    txn.set_quick_repair(config.quick_repair);
    txn.commit().map_err(io)?;
    metrics::histogram!("loyalty_store_checkpoint_seconds").record(started.elapsed().as_secs_f64());
    Ok(())
}

fn redb_durability(durability: Durability) -> redb::Durability {
    match durability {
        Durability::Fsync => redb::Durability::Immediate,
        Durability::None => redb::Durability::None,
    }
}

/// The version of a versioned record, without decoding the rest.
fn version_of(what: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    let raw: [u8; 8] =
        bytes.get(..8).and_then(|head| head.try_into().ok()).ok_or_else(|| StoreError::Corrupt(format!("{what}: short record")))?;
    Ok(u64::from_le_bytes(raw))
}

/// Rows copied per write transaction of a backup: bounds the memory a large copy holds.
const BACKUP_ROWS_PER_TXN: u64 = 100_000;

/// Copies one table of `read` into `copy`, committing every [`BACKUP_ROWS_PER_TXN`] rows.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &redb::ReadTransaction,
    copy: &Database,
    definition: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let from = match read.open_table(definition) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(error) => return Err(io(error)),
    };
    let mut rows = from.iter().map_err(io)?;
    let mut copied = 0u64;
    loop {
        let mut txn = copy.begin_write().map_err(io)?;
        txn.set_durability(redb::Durability::None).map_err(io)?;
        let mut done = true;
        {
            let mut to = txn.open_table(definition).map_err(io)?;
            for item in rows.by_ref() {
                let (key, value) = item.map_err(io)?;
                to.insert(key.value(), value.value()).map_err(io)?;
                copied += 1;
                if copied.is_multiple_of(BACKUP_ROWS_PER_TXN) {
                    done = false;
                    break;
                }
            }
        }
        txn.commit().map_err(io)?;
        if done {
            return Ok(copied);
        }
    }
}

impl EmbeddedStore {
    /// Writes a consistent copy of the store to the new file `path` while commits go on: it waits
    /// until redb holds every commit acknowledged before the call, then copies what one read
    /// transaction sees (one committed state). Written as `path` + ".partial",
    /// made durable, then renamed, so a file at `path` is always whole.
    pub fn backup_to(&self, path: &Path) -> Result<crate::BackupReport, StoreError> {
        self.shared.settle()?;
        backup_database(&self.db, path)
    }
}

/// See [`EmbeddedStore::backup_to`].
fn backup_database(db: &Database, path: &Path) -> Result<crate::BackupReport, StoreError> {
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    if path.exists() {
        return Err(StoreError::Io(format!("backup {}: the file exists", path.display())));
    }
    let read = db.begin_read().map_err(io)?;
    let copy = Database::create(&partial).map_err(|error| StoreError::Io(format!("create {}: {error}", partial.display())))?;
    let accounts = copy_table(&read, &copy, ACCOUNTS)?;
    let ledger_entries = copy_table(&read, &copy, LEDGER)?;
    let mut rows = accounts + ledger_entries;
    rows += copy_table(&read, &copy, RECEIPTS)?;
    rows += copy_table(&read, &copy, IDENTITIES)?;
    rows += copy_table(&read, &copy, REQUESTS)?;
    rows += copy_table(&read, &copy, META)?;
    rows += copy_table(&read, &copy, RULES)?;
    rows += copy_table(&read, &copy, RULES_HEAD)?;
    rows += copy_table(&read, &copy, OUTBOX)?;
    rows += copy_table(&read, &copy, OUTBOX_HEAD)?;
    rows += copy_table(&read, &copy, CREDITS)?;
    rows += copy_table(&read, &copy, FIGURES)?;
    drop(read);
    // One durable commit makes every page of the copy durable.
    let mut last = copy.begin_write().map_err(io)?;
    last.set_durability(redb::Durability::Immediate).map_err(io)?;
    last.commit().map_err(io)?;
    drop(copy);
    std::fs::rename(&partial, path).map_err(|error| StoreError::Io(format!("rename {}: {error}", partial.display())))?;
    sync_parent(path)?;
    let bytes = std::fs::metadata(path).map_err(io)?.len();
    Ok(crate::BackupReport { path: path.to_owned(), bytes, rows, accounts, ledger_entries })
}

impl EmbeddedStore {
    /// Puts the backup `from` in place of the store of `config` (the engine stopped): the backup is
    /// opened and every ledger verified first; then it replaces the database file, the file it
    /// replaces is kept beside it as `<name>.replaced`, and the journal is removed (it belongs to
    /// the replaced file). Returns the verified accounts and ledger entries.
    pub async fn restore(from: &Path, config: &EmbeddedConfig) -> Result<(u64, u64), StoreError> {
        let dir = config.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let restoring = dir.join("restoring.redb");
        let _ = std::fs::remove_file(&restoring);
        journal::remove(&restoring.with_extension("journal"))?;
        std::fs::copy(from, &restoring).map_err(|error| StoreError::Io(format!("copy {}: {error}", from.display())))?;
        let checked = {
            let store = EmbeddedStore::open(EmbeddedConfig { path: restoring.clone(), journal: false, ..config.clone() })?;
            let checked = store.verify_ledgers();
            store.shutdown().await;
            checked?
        };
        journal::remove(&restoring.with_extension("journal"))?;
        if config.path.exists() {
            std::fs::rename(&config.path, config.path.with_extension("redb.replaced")).map_err(io)?;
        }
        journal::remove(&config.journal_path())?;
        std::fs::rename(&restoring, &config.path).map_err(io)?;
        sync_parent(&config.path)?;
        Ok(checked)
    }
}

/// Why a database file does not open, saying what to do when it is damaged: the engine does not
/// start on a damaged file (nothing is misread), and the way back is the newest backup.
fn opening_failed(path: &Path, error: redb::DatabaseError) -> StoreError {
    let damaged = match &error {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => true,
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => io.kind() == std::io::ErrorKind::UnexpectedEof,
        _ => false,
    };
    if damaged {
        StoreError::Corrupt(format!(
            "{} is damaged ({error}): the engine does not start on it, so nothing is misread. Stop here, keep the damaged \
             file for analysis, and put the newest backup in its place: `loyalty-engine --data-dir DIR restore --from BACKUP` \
             (README, Backups); calls acknowledged after that backup are lost unless the tills send them again",
            path.display()
        ))
    } else {
        StoreError::Io(format!("open {}: {error}", path.display()))
    }
}

/// Makes a rename in `path`'s folder durable.
fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(|error| StoreError::Io(format!("sync {}: {error}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccountWrite;

    fn created(account_id: &str) -> Commit {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("instant");
        Commit::new("p", AccountWrite { expected_version: 0, state: AccountState::new(account_id.into(), true, at) })
    }

    fn config(dir: &Path, journal: bool) -> EmbeddedConfig {
        EmbeddedConfig { journal, checkpoint_bytes: 4096, ..EmbeddedConfig::in_dir(dir) }
    }

    fn journal_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("journal"))
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_clean_stop_leaves_no_journal_and_a_reopen_reads_every_commit() {
        let dir = tempfile::tempdir().expect("dir");
        let store = EmbeddedStore::open(config(dir.path(), true)).expect("open");
        for n in 0..200 {
            let outcome = store.commit(created(&format!("a{n:03}"))).await.expect("commit");
            assert_eq!(outcome, CommitOutcome::Applied { account_version: 1 });
        }
        assert!(!journal_files(dir.path()).is_empty(), "the journal is written while the store runs");
        store.shutdown().await;
        drop(store);
        assert_eq!(journal_files(dir.path()), Vec::<String>::new());
        let store = EmbeddedStore::open(config(dir.path(), true)).expect("reopen");
        assert_eq!(store.account_ids("p", "", 1000).await.expect("page").ids.len(), 200);
        assert_eq!(store.verify_ledgers().expect("verify"), (200, 0));
        store.shutdown().await;
    }

    /// A file of schema 3 with acknowledged commits in the single journal file its build wrote
    /// (killed before a checkpoint): the upgrade reads them, and an older build is refused since.
    #[tokio::test]
    async fn a_schema_3_file_opens_with_the_commits_in_its_single_journal_file() {
        let dir = tempfile::tempdir().expect("dir");
        let config = config(dir.path(), false);
        let store = EmbeddedStore::open(config.clone()).expect("open");
        store.commit(created("in-the-file")).await.expect("commit");
        store.shutdown().await;
        drop(store);
        {
            let db = Database::create(&config.path).expect("redb");
            let txn = db.begin_write().expect("write");
            {
                let mut meta = txn.open_table(META).expect("meta");
                meta.insert("schema_version", 3).expect("schema");
                meta.insert(JOURNAL_SEQ, 6).expect("journal seq");
            }
            txn.commit().expect("commit");
        }
        let mut record = Vec::new();
        EncodedCommit::new(created("in-the-journal")).expect("encode").write_to(&mut record).expect("record");
        let mut legacy = journal::Journal::open(&config.journal_path(), 6).expect("journal").journal;
        assert_eq!(legacy.append(&record).expect("append"), 7);
        drop(legacy);

        let store = EmbeddedStore::open(EmbeddedConfig { journal: true, ..config.clone() }).expect("upgrade");
        assert!(store.account("p", "in-the-file").await.expect("read").is_some());
        assert!(store.account("p", "in-the-journal").await.expect("read").is_some());
        assert!(!config.journal_path().exists(), "the single file goes once the database file holds it");
        store.shutdown().await;
        drop(store);
        let db = Database::create(&config.path).expect("redb");
        let read = db.begin_read().expect("read");
        let meta = read.open_table(META).expect("meta");
        assert_eq!(meta.get("schema_version").expect("get").map(|guard| guard.value()), Some(SCHEMA_VERSION));
        assert_eq!(meta.get(JOURNAL_SEQ).expect("get").map(|guard| guard.value()), Some(7));
    }
}
