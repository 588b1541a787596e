//! The programs' figures (`loyalty_core::figures`, `docs/reports.md`): every commit that moves
//! points or records a purchase writes a `figures` event to its program's outbox, in the same
//! commit; every engine folds those events, in the background, into the program's running figures
//! and stores them with the outbox seq they include, by compare-and-set, so that engines folding at
//! once never count an event twice. A report (`ReadFigures`, `loyalty-engine report`) reads the
//! stored figures and adds the events since, so it is exact as of the outbox, and costs a read of
//! one document whatever the size of the program (parsed once per stored version: the engine keeps
//! the last one it read).
//!
//! On ScyllaDB the outbox delivers at least once (a relay that ran slow writes an event again, with
//! its `event_id`): the fold remembers a digest of the IDs of the events of the last minutes and
//! skips a copy.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use chrono::NaiveDate;
use dashmap::DashMap;
use loyalty_core::events::EventKind;
use loyalty_core::figures::{Figures, Report};
use loyalty_store::{OutboxRecord, StoredFigures};
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{EngineError, EngineResult};
use crate::programs::Program;

/// Outbox events read per page.
const PAGE: usize = 1_000;
/// Most outbox events one round reads before it stores what it folded (the next goes on).
const ROUND_MAX: usize = 100_000;
/// How far back (in outbox seq: microseconds on ScyllaDB) a copy of an event can come: the relay's
/// settle time and recovery grace, with a margin.
const DUPLICATE_WINDOW_MICROS: u64 = 15 * 60 * 1_000_000;
/// Most event digests remembered for that.
const RECENT_MAX: usize = 100_000;
/// Attempts of a round against other engines folding at once.
const ATTEMPTS_MAX: u32 = 8;

/// The stored document: the figures, and digests of the recent events folded (on a store whose
/// outbox may show an event twice).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Document {
    pub figures: Figures,
    /// (outbox seq, digest of the event ID), oldest first.
    pub recent: VecDeque<(u64, u64)>,
}

/// A digest of an event ID, the same in every process and release (FNV-1a, 64 bits).
fn digest(event_id: &str) -> u64 {
    event_id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// Folds `records` (in outbox order) into `document`: each `figures` event once, a copy of one
/// folded within the window skipped when `copies` is set. Returns the figures events folded.
pub fn fold_records(document: &mut Document, records: &[OutboxRecord], copies: bool) -> usize {
    let mut seen: HashSet<u64> = if copies { document.recent.iter().map(|(_, id)| *id).collect() } else { HashSet::new() };
    let mut folded = 0;
    for record in records {
        let Some(delta) = record.event.figures.as_deref().filter(|_| record.event.kind == EventKind::Figures) else { continue };
        if copies {
            let id = digest(&record.event_id);
            if !seen.insert(id) {
                continue;
            }
            document.recent.push_back((record.seq, id));
        }
        document.figures.fold(delta);
        folded += 1;
    }
    if let Some(last) = records.last() {
        let oldest = last.seq.saturating_sub(DUPLICATE_WINDOW_MICROS);
        while document.recent.front().is_some_and(|(seq, _)| *seq < oldest) || document.recent.len() > RECENT_MAX {
            document.recent.pop_front();
        }
    }
    folded
}

/// The figures of every program (see the module documentation).
#[derive(Clone, Debug)]
pub struct Reports {
    ctx: Arc<Context>,
    /// The last stored document read of each program, with the seq it includes.
    parsed: Arc<DashMap<String, Arc<(u64, Document)>>>,
}

/// Figures as of an outbox seq.
struct Folded {
    through_seq: u64,
    document: Document,
    /// Outbox events read beyond what was stored.
    read: usize,
    /// Figures events among them folded.
    folded: usize,
}

impl Reports {
    pub fn new(ctx: Arc<Context>) -> Self {
        Reports { ctx, parsed: Arc::new(DashMap::new()) }
    }

    /// Folds the events since the stored figures into them and stores them; returns how many
    /// figures events were folded (0: the stored figures were current).
    pub async fn catch_up(&self, program_id: &str) -> EngineResult<usize> {
        for _ in 0..ATTEMPTS_MAX {
            let stored = self.ctx.accounts.store.figures(program_id).await?;
            let expected = stored.as_ref().map_or(0, |stored| stored.through_seq);
            let folded = self.fold_since(program_id, stored, ROUND_MAX).await?;
            if folded.read == 0 {
                return Ok(0);
            }
            let document = serde_json::to_string(&folded.document).map_err(|error| EngineError::Internal(error.to_string()))?;
            let next = StoredFigures { through_seq: folded.through_seq, document };
            if self.ctx.accounts.store.put_figures(program_id, expected, next).await? {
                self.parsed.insert(program_id.to_owned(), Arc::new((folded.through_seq, folded.document)));
                metrics::counter!("loyalty_figures_events_folded_total").increment(folded.folded as u64);
                return Ok(folded.folded);
            }
            // Another engine stored a fold first: go on from theirs.
        }
        Err(EngineError::Contention { attempts: ATTEMPTS_MAX })
    }

    /// The program's report over its local days `from..=to` (one store's, or every store's), as
    /// of the latest outbox event, and the outbox seq that is.
    pub async fn report(&self, program: &Program, from: NaiveDate, to: NaiveDate, store: Option<&str>) -> EngineResult<(Report, u64)> {
        let stored = self.ctx.accounts.store.figures(program.id()).await?;
        let folded = self.fold_since(program.id(), stored, usize::MAX).await?;
        Ok((folded.document.figures.report(from, to, store), folded.through_seq))
    }

    /// The points each budgeted campaign of the program gave, ever, as of the outbox.
    pub async fn campaigns_given(&self, program_id: &str) -> EngineResult<std::collections::BTreeMap<String, loyalty_core::Decimal>> {
        let stored = self.ctx.accounts.store.figures(program_id).await?;
        Ok(self.fold_since(program_id, stored, usize::MAX).await?.document.figures.campaigns)
    }

    /// The stored figures (parsed, or as last parsed) with the outbox events after them folded in
    /// (at most `max` events read).
    async fn fold_since(&self, program_id: &str, stored: Option<StoredFigures>, max: usize) -> EngineResult<Folded> {
        let (mut through_seq, mut document) = match stored {
            Some(stored) => (stored.through_seq, self.parse(program_id, &stored)?),
            None => (0, Document::default()),
        };
        let copies = self.ctx.accounts.store.outbox_repeats_events();
        let (mut read, mut folded) = (0, 0);
        while read < max {
            let want = PAGE.min(max - read);
            let page = self.ctx.accounts.store.outbox_page(program_id, through_seq, want).await?;
            folded += fold_records(&mut document, &page, copies);
            read += page.len();
            let Some(last) = page.last() else { break };
            through_seq = last.seq;
            if page.len() < want {
                break;
            }
        }
        Ok(Folded { through_seq, document, read, folded })
    }

    /// The stored document, parsed once per stored version.
    fn parse(&self, program_id: &str, stored: &StoredFigures) -> EngineResult<Document> {
        if let Some(parsed) = self.parsed.get(program_id)
            && parsed.0 == stored.through_seq
        {
            return Ok(parsed.1.clone());
        }
        let document: Document = serde_json::from_str(&stored.document)
            .map_err(|error| EngineError::Internal(format!("program {program_id}: stored figures unreadable: {error}")))?;
        self.parsed.insert(program_id.to_owned(), Arc::new((stored.through_seq, document.clone())));
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_core::events::Event;
    use loyalty_core::figures::{Delta, Points};
    use rust_decimal::Decimal;

    fn record(seq: u64, event_id: &str, earned: i64) -> OutboxRecord {
        let day = NaiveDate::from_ymd_opt(2026, 3, 10).expect("date");
        let delta =
            Delta { day, store_id: "s1".into(), points: Points { earned: Decimal::from(earned), ..Points::default() }, ..Delta::default() };
        let event = Event::figures("a".into(), chrono::DateTime::UNIX_EPOCH, delta);
        OutboxRecord { seq, event_id: event_id.into(), event }
    }

    fn earned(document: &Document) -> Decimal {
        let day = NaiveDate::from_ymd_opt(2026, 3, 10).expect("date");
        document.figures.report(day, day, None).points.earned
    }

    #[test]
    fn a_copy_of_an_event_counts_once_where_the_outbox_repeats_events() {
        let mut document = Document::default();
        let first = [record(1_000, "a/1/0", 10), record(2_000, "a/2/0", 5)];
        assert_eq!(fold_records(&mut document, &first, true), 2);
        // A slow relay wrote the first one again, later, under its ID; a later page brings it.
        assert_eq!(fold_records(&mut document, &[record(3_000, "a/1/0", 10), record(4_000, "a/3/0", 1)], true), 1);
        assert_eq!(earned(&document), Decimal::from(16));
        // Where the outbox shows each event once, nothing is remembered and everything counts.
        let mut once = Document::default();
        assert_eq!(fold_records(&mut once, &[record(1, "1", 10), record(2, "2", 10)], false), 2);
        assert!(once.recent.is_empty());
    }

    #[test]
    fn a_copy_of_a_sale_without_a_customer_or_of_a_change_by_expiry_counts_once() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 10).expect("date");
        let expires = NaiveDate::from_ymd_opt(2026, 4, 1).expect("date");
        let mut sale = record(1_000, "sales/s1/03/1/0", 0);
        let delta = sale.event.figures.as_mut().expect("a figures event");
        delta.unidentified_sale = Some(Decimal::from(900));
        delta.expiry = loyalty_core::figures::ExpiryChange { by_day: vec![(expires, Decimal::from(40))], never: Decimal::ONE };
        let copy = OutboxRecord { seq: 5_000, ..sale.clone() };
        let mut document = Document::default();
        assert_eq!(fold_records(&mut document, &[sale, copy], true), 1);
        let report = document.figures.report(day, day, None);
        assert_eq!((report.unidentified_purchases, report.unidentified_paid), (1, Decimal::from(900)));
        assert_eq!((report.expiring_30d, report.never_expiring), (Decimal::from(40), Decimal::ONE));
    }

    #[test]
    fn digests_older_than_the_window_are_forgotten() {
        let mut document = Document::default();
        fold_records(&mut document, &[record(1, "old", 1)], true);
        fold_records(&mut document, &[record(DUPLICATE_WINDOW_MICROS + 10, "new", 1)], true);
        assert_eq!(document.recent.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [DUPLICATE_WINDOW_MICROS + 10]);
        assert_eq!(digest("a/1/0"), digest("a/1/0"));
        assert_ne!(digest("a/1/0"), digest("a/1/1"));
    }
}
