//! The programs' figures (`loyalty_core::figures`, `docs/reports.md`): every commit that moves
//! points or records a purchase writes a `figures` event to its program's outbox, in the same
//! commit; every engine folds those events, in the background, into the program's running figures
//! and stores them with the outbox seq they include, by compare-and-set, so that engines folding at
//! once never count an event twice. A report (`ReadFigures`, `loyalty-engine report`) reads the
//! stored figures and adds the events since, so it is exact as of the outbox, and costs a read of
//! one document whatever the size of the program.
//!
//! On ScyllaDB the outbox delivers at least once (a relay that ran slow writes an event again, with
//! its `event_id`): the fold remembers the IDs of the events of the last minutes and skips a copy.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::NaiveDate;
use loyalty_core::events::EventKind;
use loyalty_core::figures::{Figures, Report};
use loyalty_store::StoredFigures;
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{EngineError, EngineResult};
use crate::programs::Program;

/// Outbox events read per page.
const PAGE: usize = 1_000;
/// Most events one round folds before it stores them (the next round goes on from there).
const ROUND_MAX: usize = 100_000;
/// How far back (in outbox seq: microseconds on ScyllaDB) an event's copy can come: the relay's
/// settle time and recovery grace, with a margin.
const DUPLICATE_WINDOW_MICROS: u64 = 15 * 60 * 1_000_000;
/// Most event IDs remembered for that.
const RECENT_MAX: usize = 200_000;
/// Attempts of a round against other engines folding at once.
const ATTEMPTS_MAX: u32 = 8;

/// The stored document: the figures, and the recent events folded (on a store that may deliver an
/// event twice).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Document {
    figures: Figures,
    #[serde(default)]
    recent: VecDeque<(u64, String)>,
}

/// The figures of every program (see the module documentation).
#[derive(Clone, Debug)]
pub struct Reports {
    ctx: Arc<Context>,
}

/// Figures as of an outbox seq.
struct Folded {
    through_seq: u64,
    document: Document,
    /// Figures events folded beyond what was stored.
    added: usize,
}

impl Reports {
    pub fn new(ctx: Arc<Context>) -> Self {
        Reports { ctx }
    }

    /// Folds the events since the stored figures into them and stores them; returns how many
    /// events were folded (0: the stored figures were current).
    pub async fn catch_up(&self, program_id: &str) -> EngineResult<usize> {
        for _ in 0..ATTEMPTS_MAX {
            let stored = self.ctx.accounts.store.figures(program_id).await?;
            let expected = stored.as_ref().map_or(0, |stored| stored.through_seq);
            let folded = self.fold_since(program_id, stored, ROUND_MAX).await?;
            if folded.through_seq == expected {
                return Ok(0);
            }
            let document = serde_json::to_string(&folded.document).map_err(|error| EngineError::Internal(error.to_string()))?;
            let next = StoredFigures { through_seq: folded.through_seq, document };
            if self.ctx.accounts.store.put_figures(program_id, expected, next).await? {
                metrics::counter!("loyalty_figures_events_folded_total").increment(folded.added as u64);
                return Ok(folded.added);
            }
            // Another engine stored a fold first: go on from theirs.
        }
        Err(EngineError::Contention { attempts: ATTEMPTS_MAX })
    }

    /// The program's report over its local days `from..=to` (one store's, or every store's), as
    /// of the latest outbox event.
    pub async fn report(&self, program: &Program, from: NaiveDate, to: NaiveDate, store: Option<&str>) -> EngineResult<(Report, u64)> {
        let stored = self.ctx.accounts.store.figures(program.id()).await?;
        let folded = self.fold_since(program.id(), stored, usize::MAX).await?;
        Ok((folded.document.figures.report(from, to, store), folded.through_seq))
    }

    /// The stored figures with the outbox events after them folded in (at most `max` events).
    async fn fold_since(&self, program_id: &str, stored: Option<StoredFigures>, max: usize) -> EngineResult<Folded> {
        let (mut through_seq, mut document) = match stored {
            Some(stored) => {
                let document = serde_json::from_str(&stored.document)
                    .map_err(|error| EngineError::Internal(format!("program {program_id}: stored figures unreadable: {error}")))?;
                (stored.through_seq, document)
            }
            None => (0, Document::default()),
        };
        let duplicates_possible = self.ctx.accounts.store.shared();
        let mut seen: std::collections::HashSet<String> = document.recent.iter().map(|(_, id)| id.clone()).collect();
        let mut added = 0;
        while added < max {
            let page = self.ctx.accounts.store.outbox_page(program_id, through_seq, PAGE).await?;
            for record in &page {
                through_seq = record.seq;
                let Some(delta) = record.event.figures.as_deref().filter(|_| record.event.kind == EventKind::Figures) else { continue };
                if duplicates_possible {
                    if !seen.insert(record.event_id.clone()) {
                        continue;
                    }
                    document.recent.push_back((record.seq, record.event_id.clone()));
                }
                document.figures.fold(delta);
                added += 1;
            }
            if page.len() < PAGE {
                break;
            }
        }
        let oldest = through_seq.saturating_sub(DUPLICATE_WINDOW_MICROS);
        while document.recent.front().is_some_and(|(seq, _)| *seq < oldest) || document.recent.len() > RECENT_MAX {
            document.recent.pop_front();
        }
        Ok(Folded { through_seq, document, added })
    }
}
