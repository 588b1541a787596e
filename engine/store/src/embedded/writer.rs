//! The commit path without the journal (`journal = false`, or [`Durability::None`]): one writer
//! thread applies each batch to redb in one write transaction and commits it with the store's
//! durability (an fsync of redb's pages with [`Durability::Fsync`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use redb::Database;
use tokio::sync::mpsc;

use super::apply::{Tables, apply};
use super::{EmbeddedConfig, Gathered, Message, Pending, gather, io, redb_durability, refuse_queued};
use crate::{CommitOutcome, StoreError};

/// The writer thread: take a batch, apply it in one transaction, make it durable once, answer
/// everyone.
pub(super) fn write_loop(db: &Database, mut inbox: mpsc::Receiver<Message>, poisoned: &AtomicBool, config: &EmbeddedConfig) {
    let mut batch: Vec<Pending> = Vec::with_capacity(config.batch_max);
    let stopping = loop {
        let gathered = gather(&mut inbox, &mut batch, config.batch_max);
        if !batch.is_empty() {
            write_batch(db, &mut batch, poisoned, config);
        }
        if let Gathered::Stop(stopping) = gathered {
            break stopping;
        }
    };
    refuse_queued(&mut inbox);
    if !poisoned.load(Ordering::Acquire) {
        // A clean stop leaves the file holding everything, the store's own writes that were not
        // made durable (figures) included.
        if let Err(error) = super::checkpoint(db, config) {
            tracing::error!(%error, "the store's last commit failed");
        }
    }
    if let Some(done) = stopping {
        let _ = done.send(());
    }
}

fn write_batch(db: &Database, batch: &mut Vec<Pending>, poisoned: &AtomicBool, config: &EmbeddedConfig) {
    if poisoned.load(Ordering::Acquire) {
        for pending in batch.drain(..) {
            let _ = pending.reply.send(Err(StoreError::Poisoned));
        }
        return;
    }
    let started = Instant::now();
    let result = (|| -> Result<Vec<Result<CommitOutcome, StoreError>>, StoreError> {
        let mut txn = db.begin_write().map_err(io)?;
        txn.set_durability(redb_durability(config.durability)).map_err(io)?;
        txn.set_quick_repair(config.quick_repair);
        let mut outcomes = Vec::with_capacity(batch.len());
        {
            let mut tables = Tables::open(&txn)?;
            for pending in batch.iter() {
                outcomes.push(apply(&mut tables, &pending.commit)?);
            }
        }
        // Readers see the batch only now that it is durable.
        txn.commit().map_err(io)?;
        Ok(outcomes)
    })();
    metrics::histogram!("loyalty_store_batch_size").record(batch.len() as f64);
    metrics::histogram!("loyalty_store_commit_seconds").record(started.elapsed().as_secs_f64());
    match result {
        Ok(outcomes) => {
            metrics::counter!("loyalty_store_commits_total").increment(batch.len() as u64);
            for (pending, outcome) in batch.drain(..).zip(outcomes) {
                let _ = pending.reply.send(outcome);
            }
        }
        Err(error) => {
            // A failed write transaction or fsync leaves the durable state unknown to us: stop
            // writing rather than acknowledge anything on top of it.
            poisoned.store(true, Ordering::Release);
            tracing::error!(%error, batch = batch.len(), "store commit failed; refusing further writes");
            for pending in batch.drain(..) {
                let _ = pending.reply.send(Err(error.clone()));
            }
        }
    }
}
