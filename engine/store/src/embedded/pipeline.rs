//! The commit path with the journal: redb is kept off it.
//!
//! Two threads. The *committer* takes a batch of queued commits, checks each against the rows of
//! the commits acknowledged so far ([`Overlay`]) over redb, writes the ones that hold as one
//! journal record, fdatasyncs it, puts their rows in the overlay (where reads see them from then
//! on), answers the callers and hands the batch to the *applier*. The applier writes batches into
//! redb, as many as have queued in one transaction that is not made durable, and every
//! `checkpoint_bytes` of journal makes redb durable with one durable commit; rows redb holds leave
//! the overlay. So a call waits for one journal append and its fdatasync, never for redb's page
//! writes or a checkpoint (which measured 120-150 ms when they were on the path, bench/analysis.md).
//!
//! Bounds: the committer waits (and callers queue behind it) while more than four checkpoints'
//! worth of journal is not covered by a checkpoint, which bounds the overlay's memory, the
//! journal's files and the replay after a crash. A failure of either thread poisons the store:
//! every later write is refused, reads go on (the overlay still holds what was acknowledged), and
//! a restart applies the journal to redb again.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase};
use tokio::sync::mpsc;

use super::apply::{ReadTables, Tables, apply};
use super::journal::Segments;
use super::overlay::{Overlay, Staged};
use super::record::EncodedCommit;
use super::{EmbeddedConfig, Gathered, JOURNAL_SEQ, Message, Pending, checkpoint, gather, io, refuse_queued};
use crate::{CommitOutcome, StoreError};

/// How long the applier gathers records after the first before it writes them into redb. Off the
/// callers' path; measured at 16 clients, Accrue (bench/analysis.md): without it a redb
/// transaction held 2.4 commits and the applier spent 14.5 s of CPU on 202,000 commits; with 5 ms,
/// 34 commits and 7.1 s.
const APPLY_GATHER: Duration = Duration::from_millis(5);
/// Commits the applier writes into redb in one transaction, at most.
const APPLY_COMMITS_MAX: usize = 4096;
/// Journal not covered by a checkpoint, in checkpoints, past which the committer waits.
const UNSETTLED_CHECKPOINTS_MAX: u64 = 4;

/// How far the journal's records have gone: written (and acknowledged), in redb, durable in redb.
#[derive(Debug, Default)]
struct Progress {
    committed: u64,
    applied: u64,
    checkpointed: u64,
    /// The overlay has been cleared of the records up to this one.
    forgotten: u64,
}

/// What the store's callers, the committer and the applier share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) overlay: RwLock<Overlay>,
    pub(super) poisoned: std::sync::atomic::AtomicBool,
    progress: Mutex<Progress>,
    /// Signalled whenever `progress` moves or the store is poisoned.
    moved: Condvar,
}

impl Shared {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn overlay(&self) -> std::sync::RwLockReadGuard<'_, Overlay> {
        self.overlay.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn overlay_mut(&self) -> std::sync::RwLockWriteGuard<'_, Overlay> {
        self.overlay.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    pub(super) fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
        let _progress = self.progress();
        self.moved.notify_all();
    }

    fn update(&self, change: impl FnOnce(&mut Progress)) {
        change(&mut self.progress());
        self.moved.notify_all();
    }

    fn checkpointed(&self) -> u64 {
        self.progress().checkpointed
    }

    /// Drops from the overlay the rows of records redb holds now (the applier, after each of its
    /// transactions). Takes the overlay's write lock, so never while the committer checks a batch
    /// against it.
    fn forget_applied(&self) {
        let applied = {
            let progress = self.progress();
            if progress.applied <= progress.forgotten {
                return;
            }
            progress.applied
        };
        self.overlay_mut().forget_through(applied);
        let mut progress = self.progress();
        progress.forgotten = progress.forgotten.max(applied);
    }

    /// Waits until redb holds every commit acknowledged before the call (a read of redb alone, a
    /// backup or a direct write to it, then sees them or follows them).
    pub(super) fn settle(&self) -> Result<(), StoreError> {
        let mut progress = self.progress();
        let target = progress.committed;
        while progress.applied < target {
            if self.is_poisoned() {
                return Err(StoreError::Poisoned);
            }
            progress = self.moved.wait_timeout(progress, Duration::from_millis(100)).unwrap_or_else(PoisonError::into_inner).0;
        }
        drop(progress);
        self.forget_applied();
        Ok(())
    }
}

/// Poisons the store if the thread holding it unwinds (a panic in redb, which some damaged pages
/// cause): the commits it had not written into redb are in the journal only, so nothing may go on
/// as if they were.
struct PoisonOnPanic<'a>(&'a Shared);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison();
            tracing::error!("the store's applier thread panicked; refusing further writes");
        }
    }
}

/// One journal record's commits on their way to redb.
struct Record {
    seq: u64,
    bytes: u64,
    commits: Vec<EncodedCommit>,
}

/// The committer thread; starts the applier and stops it at the end.
pub(super) fn commit_loop(
    db: &Database,
    mut inbox: mpsc::Receiver<Message>,
    shared: &Shared,
    config: &EmbeddedConfig,
    mut segments: Segments,
) {
    {
        let mut progress = shared.progress();
        let before = segments.next_seq() - 1;
        *progress = Progress { committed: before, applied: before, checkpointed: before, forgotten: before };
    }
    let (to_applier, records) = std::sync::mpsc::channel::<Record>();
    let stopping = std::thread::scope(|scope| {
        let applier = std::thread::Builder::new()
            .name("store-applier".into())
            .spawn_scoped(scope, || {
                let _poisons_if_it_panics = PoisonOnPanic(shared);
                apply_loop(db, records, shared, config)
            })
            .expect("spawn the store's applier thread");
        let mut batch: Vec<Pending> = Vec::with_capacity(config.batch_max);
        let stopping = loop {
            let gathered = gather(&mut inbox, &mut batch, config.batch_max);
            if !batch.is_empty() {
                commit_batch(db, &mut batch, shared, config, &mut segments, &to_applier);
            }
            if !shared.is_poisoned()
                && let Err(error) = segments.rotate_if_full(shared.checkpointed())
            {
                shared.poison();
                tracing::error!(%error, "starting a new journal segment failed; refusing further writes");
            }
            if let Gathered::Stop(stopping) = gathered {
                break stopping;
            }
        };
        refuse_queued(&mut inbox);
        // The applier writes what it has, checkpoints, and ends.
        drop(to_applier);
        let checkpointed = applier.join().unwrap_or(false);
        (stopping, checkpointed)
    });
    let (stopping, checkpointed) = stopping;
    // A clean stop leaves the file holding everything: the journal goes. Otherwise it stays, and
    // the next opening applies it.
    if checkpointed
        && !shared.is_poisoned()
        && let Err(error) = segments.close()
    {
        tracing::warn!(%error, "the journal's files were not all removed after the last checkpoint");
    }
    if let Some(done) = stopping {
        let _ = done.send(());
    }
}

/// A batch checked and journaled: each commit's outcome, the rows of those that applied, and the
/// journal record's number and size (none if nothing applied).
type Checked = (Vec<Result<CommitOutcome, StoreError>>, Overlay, Option<(u64, u64)>);

/// Checks, journals and answers one batch.
fn commit_batch(
    db: &Database,
    batch: &mut Vec<Pending>,
    shared: &Shared,
    config: &EmbeddedConfig,
    segments: &mut Segments,
    to_applier: &Sender<Record>,
) {
    let room = checkpoint_room(config);
    let unsettled = segments.unsettled_bytes(shared.checkpointed());
    metrics::gauge!("loyalty_store_journal_unsettled_bytes").set(unsettled as f64);
    if unsettled > room {
        let waiting = Instant::now();
        while !shared.is_poisoned() && segments.unsettled_bytes(shared.checkpointed()) > room {
            let progress = shared.progress();
            let _ = shared.moved.wait_timeout(progress, Duration::from_millis(50));
        }
        metrics::histogram!("loyalty_store_room_wait_seconds").record(waiting.elapsed().as_secs_f64());
    }
    if shared.is_poisoned() {
        for pending in batch.drain(..) {
            let _ = pending.reply.send(Err(StoreError::Poisoned));
        }
        return;
    }
    let started = Instant::now();
    let result = (|| -> Result<Checked, StoreError> {
        // The overlay first, then redb: what is not in the overlay, redb held before this read began.
        let acknowledged = shared.overlay();
        let read = db.begin_read().map_err(io)?;
        let redb = ReadTables::open(&read)?;
        let mut staged = Staged { batch: Overlay::default(), acknowledged: &acknowledged, redb: &redb };
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut record = Vec::new();
        for pending in batch.iter() {
            let outcome = apply(&mut staged, &pending.commit)?;
            // Refused commits wrote nothing; the others go to the journal in the order applied.
            if matches!(outcome, Ok(CommitOutcome::Applied { .. })) {
                pending.commit.write_to(&mut record)?;
            }
            outcomes.push(outcome);
        }
        let rows = staged.batch;
        drop(acknowledged);
        let written = match record.is_empty() {
            true => None,
            false => Some((segments.append(&record)?, record.len() as u64)),
        };
        Ok((outcomes, rows, written))
    })();
    metrics::histogram!("loyalty_store_batch_size").record(batch.len() as f64);
    metrics::histogram!("loyalty_store_commit_seconds").record(started.elapsed().as_secs_f64());
    match result {
        Ok((outcomes, rows, written)) => {
            metrics::counter!("loyalty_store_commits_total").increment(batch.len() as u64);
            if let Some((seq, _)) = written {
                // Readers see the batch only now that it is durable, and never before a settle()
                // would wait for it.
                shared.update(|progress| progress.committed = seq);
                shared.overlay_mut().absorb(rows, seq);
            }
            let mut commits = Vec::new();
            for (pending, outcome) in batch.drain(..).zip(outcomes) {
                if matches!(outcome, Ok(CommitOutcome::Applied { .. })) {
                    commits.push(pending.commit);
                }
                let _ = pending.reply.send(outcome);
            }
            if let Some((seq, bytes)) = written
                && to_applier.send(Record { seq, bytes, commits }).is_err()
            {
                // The applier is gone (it panicked): redb will not receive this batch until a
                // restart applies the journal.
                shared.poison();
            }
        }
        Err(error) => {
            // A failed read or journal write leaves the durable state unknown to us: stop writing
            // rather than acknowledge anything on top of it.
            shared.poison();
            tracing::error!(%error, batch = batch.len(), "store commit failed; refusing further writes");
            for pending in batch.drain(..) {
                let _ = pending.reply.send(Err(error.clone()));
            }
        }
    }
}

/// Journal bytes not covered by a checkpoint that the committer lets build up.
fn checkpoint_room(config: &EmbeddedConfig) -> u64 {
    config.checkpoint_bytes.max(1) * UNSETTLED_CHECKPOINTS_MAX
}

/// The applier thread: writes journal records into redb, in order, drops their rows from the
/// overlay, and checkpoints. Returns whether the last checkpoint, at the end, made the file hold
/// every record.
fn apply_loop(db: &Database, records: Receiver<Record>, shared: &Shared, config: &EmbeddedConfig) -> bool {
    let mut since_checkpoint = 0u64;
    let mut applied = None;
    while let Ok(first) = records.recv() {
        let mut commits = first.commits.len();
        let mut group = vec![first];
        let gathered_by = Instant::now() + APPLY_GATHER;
        while commits < APPLY_COMMITS_MAX {
            let left = gathered_by.saturating_duration_since(Instant::now());
            match records.recv_timeout(left) {
                Ok(record) => {
                    commits += record.commits.len();
                    group.push(record);
                }
                Err(_) => break,
            }
        }
        if shared.is_poisoned() {
            continue;
        }
        let started = Instant::now();
        match apply_group(db, &group) {
            Ok(last) => {
                metrics::histogram!("loyalty_store_apply_seconds").record(started.elapsed().as_secs_f64());
                metrics::histogram!("loyalty_store_apply_commits").record(commits as f64);
                shared.update(|progress| progress.applied = last);
                shared.forget_applied();
                metrics::gauge!("loyalty_store_applied_behind").set(shared.progress().committed.saturating_sub(last) as f64);
                applied = Some(last);
                since_checkpoint += group.iter().map(|record| record.bytes).sum::<u64>();
                if since_checkpoint >= config.checkpoint_bytes && checkpoint_through(db, shared, config, last) {
                    since_checkpoint = 0;
                }
            }
            Err(error) => {
                // The journal holds every acknowledged commit: a restart applies them again.
                shared.poison();
                tracing::error!(%error, "writing acknowledged commits into the database file failed; refusing further writes");
            }
        }
    }
    // The committer has stopped: make everything durable in the file, the store's own writes that
    // were not made durable (figures) included.
    let last = applied.unwrap_or_else(|| shared.progress().applied);
    checkpoint_through(db, shared, config, last)
}

/// Checkpoints redb; on success the journal up to `last` is no longer needed.
fn checkpoint_through(db: &Database, shared: &Shared, config: &EmbeddedConfig, last: u64) -> bool {
    if shared.is_poisoned() {
        return false;
    }
    match checkpoint(db, config) {
        Ok(()) => {
            shared.update(|progress| progress.checkpointed = last);
            true
        }
        Err(error) => {
            shared.poison();
            tracing::error!(%error, "store checkpoint failed; refusing further writes");
            false
        }
    }
}

/// Writes a group of journal records into redb in one transaction that is not made durable (the
/// journal is); returns the last record's number. Each commit was checked before it was
/// acknowledged, so each must apply again: one that does not is a broken invariant.
fn apply_group(db: &Database, group: &[Record]) -> Result<u64, StoreError> {
    let mut txn = db.begin_write().map_err(io)?;
    txn.set_durability(redb::Durability::None).map_err(io)?;
    let mut last = 0;
    {
        let mut tables = Tables::open(&txn)?;
        for record in group {
            for commit in &record.commits {
                match apply(&mut tables, commit)? {
                    Ok(CommitOutcome::Applied { .. }) => {}
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "journal record {}: a commit for account {} that was acknowledged does not apply to the database file ({other:?})",
                            record.seq, commit.account_id
                        )));
                    }
                }
            }
            last = record.seq;
        }
        tables.meta.insert(JOURNAL_SEQ, last).map_err(io)?;
    }
    txn.commit().map_err(io)?;
    Ok(last)
}
