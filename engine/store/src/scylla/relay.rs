//! The relay: moving a commit's events and credits from the account's partition, where the commit
//! wrote them atomically with the money, to the program-wide `outbox` and `credits` tables.
//!
//! Why not write them there directly? They are other partitions, and a conditional batch cannot
//! span partitions: written after the batch, a crash in between would lose them; written before,
//! a batch that then fails would leave events of a purchase that never happened. So the batch
//! writes them into the account's partition (kinds 4 and 5), and a relay copies them out:
//!
//! 1. With the batch, the engine writes a *relay mark* `(program, minute, shard, account, version)`.
//! 2. Once the batch applied, the same engine relays the account's relay rows (credits before it
//!    answers, since the credit applier looks for them right away; events in the background),
//!    deletes them, then deletes the mark.
//! 3. If it crashes in between, the mark stays; any engine's recovery pass ([`recover`]) relays
//!    every account marked in the minutes from its watermark up to the grace period ago, then
//!    moves the watermark. A mark whose batch never applied finds no rows and is simply deleted.
//!    Marks live in one partition per minute and shard, so a pass reads only recent partitions
//!    and no partition collects more than a minute of deletions.
//!
//! Delivery is therefore at least once: an event copied twice (a recovery racing a slow relay)
//! keeps its `event_id`, `<account>/<version, 20 digits>/<index>`, by which readers drop the second
//! copy (zero-padded, so that events relayed together sort in commit order).
//!
//! Outbox order: an event's seq is the time it was relayed, in microseconds, and readers see only
//! events older than `relay_settle` (see [`outbox_page`]). A relay that took longer than half of
//! that writes its events again with a fresh seq before deleting the source rows, so that no
//! reader can have moved past an event that was not yet written.

use std::time::Instant;

use futures_util::TryStreamExt;
use scylla::value::CqlValue;

use super::statements::{Statements, kind};
use super::{ScyllaStore, as_blob, as_text, as_u64, big, column, fnv1a, io, text};
use crate::codec::decode;
use crate::{Commit, OutboxRecord, StoreError};

/// Partitions of the relay marks of one program.
const SHARDS: i32 = 16;
const HOUR_MICROS: u64 = 3_600_000_000;

/// The clustering key of a commit's `index`-th event.
pub(super) fn event_key(index: usize) -> String {
    format!("{index:04}")
}

fn shard_of(account_id: &str) -> i32 {
    i32::try_from(fnv1a(account_id) % SHARDS as u64).unwrap_or(0)
}

/// The store's clock in microseconds since the epoch: outbox seqs and the readers' horizon.
fn now_micros(store: &ScyllaStore) -> u64 {
    u64::try_from(store.clock.now().timestamp_micros()).unwrap_or(0)
}

/// A relay mark: the minute it was written in, and the commit it is for.
#[derive(Clone, Debug)]
pub(super) struct Mark {
    pub minute: u64,
    pub account_id: String,
    pub version: u64,
}

impl Mark {
    /// The mark of the commit of `account_id`'s `version`, written at `now`.
    pub fn at(now: chrono::DateTime<chrono::Utc>, account_id: &str, version: u64) -> Self {
        let minute = u64::try_from(now.timestamp() / 60).unwrap_or(0);
        Mark { minute, account_id: account_id.to_owned(), version }
    }

    fn key(&self, program_id: &str) -> Vec<CqlValue> {
        vec![text(program_id), big(self.minute), CqlValue::Int(shard_of(&self.account_id)), text(&self.account_id), big(self.version)]
    }

    pub async fn write(&self, store: &ScyllaStore, program_id: &str) -> Result<(), StoreError> {
        store.run(&store.statements.mark, self.key(program_id)).await.map(|_| ())
    }

    async fn delete(&self, store: &ScyllaStore, program_id: &str) -> Result<(), StoreError> {
        store.delete_for_good(&store.statements.unmark, self.key(program_id)).await
    }
}

/// Relays an applied commit's rows: credits before returning, events in the background. A failure
/// is left to the recovery pass (the mark stays).
pub(super) async fn after_commit(store: &ScyllaStore, commit: &Commit, mark: Mark) {
    let program_id = commit.program_id.clone();
    if !commit.credits.is_empty() {
        if let Err(error) = relay_account(store, &program_id, &mark, false).await {
            tracing::warn!(%error, "relay after commit failed; the recovery pass will retry");
        }
        return;
    }
    let Some(store) = store.me.upgrade() else { return };
    tokio::spawn(async move {
        if let Err(error) = relay_account(&store, &program_id, &mark, false).await {
            tracing::warn!(%error, "relay after commit failed; the recovery pass will retry");
        }
    });
}

/// Relays every account marked from the program's watermark up to the grace period ago, then
/// moves the watermark; returns the rows relayed.
pub(super) async fn recover(store: &ScyllaStore, program_id: &str) -> Result<usize, StoreError> {
    store.check_open()?;
    let now = u64::try_from(store.clock.now().timestamp()).unwrap_or(0);
    let now_minute = now / 60;
    let grace = store.config.relay_grace.as_secs();
    // The last minute whose marks are all at least `grace` old; with no grace (tests), the current
    // minute too, read again by every pass until it is over.
    let settled = (now.saturating_sub(grace) / 60).checked_sub(1);
    let through = if grace == 0 { Some(now_minute) } else { settled };
    let Some(through) = through else { return Ok(0) };
    let from = store.relay_watermarks.get(program_id).map_or_else(|| through.saturating_sub(store.config.relay_lookback_minutes), |at| *at);
    let mut relayed = 0;
    let mut failed = false;
    for minute in from..=through {
        for shard in 0..SHARDS {
            let mut marks = store
                .session
                .execute_iter(store.statements.marks.clone(), (program_id, i64::try_from(minute).unwrap_or(0), shard))
                .await
                .map_err(io("scylla relay marks"))?
                .rows_stream::<(String, i64)>()
                .map_err(io("scylla relay marks"))?;
            let mut due = Vec::new();
            while let Some((account_id, version)) = marks.try_next().await.map_err(io("scylla relay marks"))? {
                due.push(Mark { minute, account_id, version: u64::try_from(version).unwrap_or(0) });
            }
            for mark in due {
                // One account that cannot be relayed must not hold up the others: it is retried by
                // the next pass, which starts again at this minute.
                match relay_account(store, program_id, &mark, true).await {
                    Ok(rows) => relayed += rows,
                    Err(error) => {
                        tracing::warn!(%error, minute, "relay recovery of one account failed; will retry");
                        failed = true;
                    }
                }
            }
        }
        if !failed && settled.is_some_and(|settled| minute <= settled) {
            store.relay_watermarks.insert(program_id.to_owned(), minute + 1);
        }
    }
    if relayed > 0 {
        metrics::counter!("loyalty_scylla_relay_recovered_total").increment(relayed as u64);
    }
    Ok(relayed)
}

/// One relay row: (version, key, encoded value).
type RelayRow = (u64, String, Vec<u8>);

/// The account's relay rows, events and credits, in one read (adjacent kinds). `serial` for the
/// recovery pass (see `Statements::relay_rows_serial`).
async fn relay_rows(
    store: &ScyllaStore,
    program_id: &str,
    account_id: &str,
    serial: bool,
) -> Result<(Vec<RelayRow>, Vec<RelayRow>), StoreError> {
    let statement = if serial {
        super::paxos("serial_read");
        &store.statements.relay_rows_serial
    } else {
        &store.statements.relay_rows
    };
    let values = vec![text(program_id), text(account_id), CqlValue::TinyInt(kind::EVENT), CqlValue::TinyInt(kind::CREDIT)];
    let rows = store.rows(statement, values).await?;
    let (mut events, mut credits) = (Vec::new(), Vec::new());
    for row in &rows {
        let row_kind = match column(row, 0) {
            Some(CqlValue::TinyInt(row_kind)) => *row_kind,
            other => return Err(StoreError::Corrupt(format!("relay row of kind {other:?}"))),
        };
        let version = column(row, 1).map(as_u64).transpose()?.unwrap_or(0);
        let key = column(row, 2).map(as_text).transpose()?.unwrap_or_default();
        let value = column(row, 3).map(as_blob).transpose()?.unwrap_or_default();
        match row_kind {
            kind::EVENT => events.push((version, key, value)),
            kind::CREDIT => credits.push((version, key, value)),
            other => return Err(StoreError::Corrupt(format!("unknown relay row kind {other}"))),
        }
    }
    Ok((events, credits))
}

/// Copies all of an account's relay rows out, deletes them, then deletes `mark` (whose batch may
/// not have applied: then there may be nothing to copy). Returns the rows copied.
async fn relay_account(store: &ScyllaStore, program_id: &str, mark: &Mark, serial: bool) -> Result<usize, StoreError> {
    let account_id = mark.account_id.as_str();
    let (events, credits) = relay_rows(store, program_id, account_id, serial).await?;
    for (_, credit_id, bytes) in &credits {
        store.run(&store.statements.credit_insert, vec![text(program_id), text(credit_id), CqlValue::Blob(bytes.clone())]).await?;
    }
    if !events.is_empty() {
        write_events(store, program_id, account_id, &events).await?;
    }
    // The relay rows were written by the commit's lightweight transaction: see `delete_for_good`.
    let mut done = Statements::unlogged(&store.profiles);
    done.set_timestamp(Some(store.tombstone_timestamp()));
    let mut values = Vec::new();
    for (row_kind, rows) in [(kind::EVENT, &events), (kind::CREDIT, &credits)] {
        for (seq, key, _) in rows {
            done.append_statement(store.statements.delete_row.clone());
            values.push(vec![text(program_id), text(account_id), CqlValue::TinyInt(row_kind), big(*seq), text(key)]);
        }
    }
    if !values.is_empty() {
        store.session.batch(&done, values).await.map_err(io("scylla relay cleanup"))?;
    }
    mark.delete(store, program_id).await?;
    Ok(events.len() + credits.len())
}

/// Writes events into the outbox under one fresh seq; again under a newer one if the writes took so
/// long that a reader may have passed the first.
async fn write_events(store: &ScyllaStore, program_id: &str, account_id: &str, events: &[RelayRow]) -> Result<(), StoreError> {
    let half_settle = store.config.relay_settle / 2;
    for _ in 0..3 {
        let started = Instant::now();
        let seq = now_micros(store);
        let hour = seq / HOUR_MICROS;
        // Each process records an hour once (the row only says "this hour has events").
        let hour_key = (program_id.to_owned(), hour);
        if !store.outbox_hours_written.contains(&hour_key) {
            store.run(&store.statements.outbox_hour, vec![text(program_id), big(hour)]).await?;
            store.outbox_hours_written.insert(hour_key);
        }
        let mut batch = Statements::unlogged(&store.profiles);
        let mut values = Vec::new();
        for (version, key, bytes) in events {
            batch.append_statement(store.statements.outbox_insert.clone());
            values.push(vec![
                text(program_id),
                big(hour),
                big(seq),
                text(&format!("{account_id}/{version:020}/{key}")),
                CqlValue::Blob(bytes.clone()),
            ]);
        }
        store.session.batch(&batch, values).await.map_err(io("scylla outbox write"))?;
        if started.elapsed() < half_settle {
            return Ok(());
        }
        metrics::counter!("loyalty_scylla_relay_rewrites_total").increment(1);
    }
    Err(StoreError::Io("outbox writes keep taking longer than half the settle time".into()))
}

/// Events relayed after `after_seq` and at least `relay_settle` ago, oldest first; a page that
/// reaches `limit` is completed to the end of its last seq.
pub(super) async fn outbox_page(
    store: &ScyllaStore,
    program_id: &str,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<OutboxRecord>, StoreError> {
    let settle = u64::try_from(store.config.relay_settle.as_micros()).unwrap_or(u64::MAX);
    let horizon = now_micros(store).saturating_sub(settle);
    if limit == 0 || after_seq >= horizon {
        return Ok(Vec::new());
    }
    let hours =
        store.rows(&store.statements.outbox_hours, vec![text(program_id), big(after_seq / HOUR_MICROS), CqlValue::Int(10_000)]).await?;
    let mut records: Vec<OutboxRecord> = Vec::new();
    for row in &hours {
        let hour = column(row, 0).map(as_u64).transpose()?.unwrap_or(0);
        if hour > horizon / HOUR_MICROS {
            break;
        }
        let want = i32::try_from(limit - records.len()).unwrap_or(i32::MAX);
        let rows = store
            .rows(&store.statements.outbox_range, vec![text(program_id), big(hour), big(after_seq), big(horizon), CqlValue::Int(want)])
            .await?;
        for row in &rows {
            records.push(outbox_record(row)?);
        }
        if records.len() >= limit {
            if let Some(last) = records.last().map(|record| record.seq) {
                records.retain(|record| record.seq != last);
                for row in store.rows(&store.statements.outbox_at, vec![text(program_id), big(hour), big(last)]).await? {
                    records.push(outbox_record(&row)?);
                }
            }
            break;
        }
    }
    Ok(records)
}

fn outbox_record(row: &scylla::value::Row) -> Result<OutboxRecord, StoreError> {
    let seq = column(row, 0).map(as_u64).transpose()?.unwrap_or(0);
    let event_id = column(row, 1).map(as_text).transpose()?.unwrap_or_default();
    let bytes = column(row, 2).map(as_blob).transpose()?.unwrap_or_default();
    Ok(OutboxRecord { seq, event_id, event: decode("outbox event", &bytes)? })
}
