//! `WhatIf`: a candidate rule set evaluated again on the receipts of the last days, beside what
//! the rules in force gave them (the admin `WhatIf` call; `docs/reports.md`, "What-if").
//!
//! The scan runs on a task of its own and reports through a channel: progress at most every
//! [`PROGRESS_EVERY`], then the report. It pages through the program's accounts
//! (`Store::account_ids`), and for each customer's account through its ledger, newest first, back
//! to the window's start (`Store::ledger_page`), noting the receipts its earn entries name; then it
//! reads those receipts oldest first (`Store::receipt`) and hands each one to
//! `loyalty_core::whatif::compare_receipt` with a copy of the account. Memory holds the per-rule
//! sums, one page of accounts or ledger entries, and one account's receipt IDs in the window (at
//! most [`ACCOUNT_RECEIPTS_MAX`]).
//!
//! The account each receipt is evaluated with is the account as it is now (tier, tags, RFM months,
//! birth date, first purchase), with its per-customer budget counters emptied at the window's
//! start and charged by the candidate receipt by receipt: an approximation of the customer at the
//! sale, said so in the report's documentation.
//!
//! Bounded by the request's receipts and seconds (capped by the server), and stopped when the
//! caller goes away (the channel's receiver is dropped with the response stream). It yields to
//! checkout between pages, and one scan runs at a time per engine.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use loyalty_core::ledger::EntryKind;
use loyalty_core::rules::CompiledRules;
use loyalty_core::whatif::{AccountSkip, ReceiptSkip, Tally, compare_receipt};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::context::Context;
use crate::error::{EngineError, EngineResult};
use crate::programs::Program;

/// Accounts read per page of the program's accounts.
const ACCOUNTS_PAGE: usize = 256;
/// Ledger entries read per page of an account's ledger.
const LEDGER_PAGE: usize = 256;
/// Receipts evaluated between two yields to the runtime (checkout's tasks run in between).
const RECEIPTS_PER_YIELD: usize = 32;
/// Most receipts of one account a scan evaluates in its window; the rest are counted as skipped
/// (`account_receipts_max`). 10,000 receipts in 400 days is 25 a day: an internal account, not a
/// customer. Bounds the receipt IDs held for one account (about 1 MB).
pub const ACCOUNT_RECEIPTS_MAX: usize = 10_000;
/// At most one progress message per this long.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Scans running at once per engine: a scan reads the whole program, and checkout comes first.
const SCANS_AT_ONCE: usize = 1;
/// Messages the channel holds: progress is dropped rather than waited for when it is full.
const CHANNEL_CAPACITY: usize = 8;

/// What a scan is asked to do.
#[derive(Clone, Debug)]
pub struct Scan {
    /// The candidate, compiled (as version 0) against the program's policy.
    pub candidate: Arc<CompiledRules>,
    /// The window, in days back from now (1..=`loyalty_core::whatif::DAYS_MAX`).
    pub days: u32,
    /// Only receipts of this store, when set.
    pub store_id: Option<String>,
    pub max_receipts: u64,
    pub max_duration: Duration,
}

/// Why a scan ended before it had looked at every account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    MaxReceipts,
    MaxSeconds,
    /// The caller went away; nothing is reported.
    Cancelled,
}

impl Stop {
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::MaxReceipts => "max_receipts",
            Stop::MaxSeconds => "max_seconds",
            Stop::Cancelled => "cancelled",
        }
    }
}

/// The counts so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub accounts_scanned: u64,
    pub receipts_evaluated: u64,
    pub receipts_skipped: u64,
}

/// A scan's outcome.
#[derive(Clone, Debug)]
pub struct Report {
    pub tally: Tally,
    /// The rules version in force when the scan began.
    pub current_version: u64,
    pub window_start: DateTime<Utc>,
    /// The instant the scan took as now: the window's end, and what "expired by now" means.
    pub as_of: DateTime<Utc>,
    /// `None`: every account was scanned.
    pub stopped_by: Option<Stop>,
}

/// One message of a scan.
#[derive(Debug)]
pub enum Update {
    Progress(Progress),
    Done(Box<Report>),
    Failed(EngineError),
}

/// The what-if scans of the engine's programs (see the module documentation).
#[derive(Debug, Clone)]
pub struct WhatIf {
    ctx: Arc<Context>,
    /// Permits for scans running at once.
    running: Arc<Semaphore>,
}

fn progress(tally: &Tally) -> Progress {
    Progress {
        accounts_scanned: tally.accounts_scanned,
        receipts_evaluated: tally.receipts_evaluated,
        receipts_skipped: tally.receipts_skipped_total(),
    }
}

/// Sends progress if the last was long enough ago; never waits for the caller.
fn report_progress(updates: &mpsc::Sender<Update>, tally: &Tally, last: &mut Option<Instant>) {
    if last.is_none_or(|last| last.elapsed() >= PROGRESS_EVERY) {
        // A full channel means the caller is behind: this progress is skipped, the next one says more.
        let _ = updates.try_send(Update::Progress(progress(tally)));
        *last = Some(Instant::now());
    }
}

impl WhatIf {
    pub fn new(ctx: Arc<Context>) -> Self {
        WhatIf { ctx, running: Arc::new(Semaphore::new(SCANS_AT_ONCE)) }
    }

    /// Starts a scan of `program` on a task of its own and returns its messages: progress, then
    /// the report (or the failure). Dropping the receiver stops the scan. RESOURCE_EXHAUSTED
    /// OVERLOADED while another scan runs.
    pub fn start(&self, program: Arc<Program>, scan: Scan) -> EngineResult<mpsc::Receiver<Update>> {
        let permit = Arc::clone(&self.running).try_acquire_owned().map_err(|_| EngineError::Overloaded { limit: SCANS_AT_ONCE })?;
        let (updates, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // On a task of its own, so that a panic ends the stream INTERNAL, not OK without a report.
            let scanning = {
                let (program, updates) = (Arc::clone(&program), updates.clone());
                tokio::spawn(async move { this.run(&program, &scan, &updates).await })
            };
            let outcome = scanning.await.unwrap_or_else(|error| Err(EngineError::Internal(format!("the what-if stopped: {error}"))));
            let label = match &outcome {
                Ok(report) => report.stopped_by.map_or("completed", Stop::as_str),
                Err(_) => "failed",
            };
            metrics::counter!("loyalty_whatif_runs_total", "outcome" => label).increment(1);
            let last = match outcome {
                Ok(report) if report.stopped_by == Some(Stop::Cancelled) => return,
                Ok(report) => Update::Done(Box::new(report)),
                Err(error) => {
                    tracing::warn!(program = program.id(), %error, "what-if failed");
                    Update::Failed(error)
                }
            };
            let _ = updates.send(last).await;
        });
        Ok(receiver)
    }

    /// Whether a scan is running (its permit held).
    pub fn is_running(&self) -> bool {
        self.running.available_permits() < SCANS_AT_ONCE
    }

    /// The scan itself: every account, then the report.
    pub async fn run(&self, program: &Program, scan: &Scan, updates: &mpsc::Sender<Update>) -> EngineResult<Report> {
        let started = Instant::now();
        let program_id = program.id();
        let store = &self.ctx.accounts.store;
        let as_of = self.ctx.now_in(program_id);
        let window_start = as_of - chrono::Duration::days(i64::from(scan.days));
        let mut tally = Tally::new(program.rules.source(), scan.candidate.source());
        let mut last_progress = None;
        let mut cursor = String::new();
        let stopped_by = 'scan: loop {
            if updates.is_closed() {
                break Some(Stop::Cancelled);
            }
            let page = store.account_ids(program_id, &cursor, ACCOUNTS_PAGE).await?;
            for account_id in &page.ids {
                if updates.is_closed() {
                    break 'scan Some(Stop::Cancelled);
                }
                tally.accounts_scanned += 1;
                if loyalty_core::figures::is_sales_account(account_id) {
                    tally.skip_account(AccountSkip::Sales);
                    continue;
                }
                // A merged card's emptied account keeps its receipts: they are evaluated with the
                // card's account as the merge left it.
                let Some(stored) = store.account(program_id, account_id).await? else { continue };
                let Some(receipts) = self.receipts_in_window(program_id, account_id, window_start, scan, &mut tally, updates).await? else {
                    break 'scan Some(Stop::Cancelled);
                };
                let mut account = stored.value;
                // Budgets as if the window began with none used (see the module documentation).
                account.counters.clear();
                for (index, receipt_id) in receipts.into_iter().enumerate() {
                    // Checkout first: the embedded store's reads never wait.
                    if index % RECEIPTS_PER_YIELD == RECEIPTS_PER_YIELD - 1 {
                        tokio::task::yield_now().await;
                    }
                    if updates.is_closed() {
                        break 'scan Some(Stop::Cancelled);
                    }
                    if tally.receipts_evaluated >= scan.max_receipts {
                        break 'scan Some(Stop::MaxReceipts);
                    }
                    if started.elapsed() >= scan.max_duration {
                        break 'scan Some(Stop::MaxSeconds);
                    }
                    let Some(receipt) = store.receipt(program_id, &receipt_id).await? else {
                        tally.skip_receipt(ReceiptSkip::NotThisAccounts);
                        continue;
                    };
                    match compare_receipt(&scan.candidate, &program.policy, &mut account, &receipt.value) {
                        Ok(comparison) => tally.add(&comparison, as_of),
                        Err(reason) => tally.skip_receipt(reason),
                    }
                }
                if started.elapsed() >= scan.max_duration {
                    break 'scan Some(Stop::MaxSeconds);
                }
                report_progress(updates, &tally, &mut last_progress);
                tokio::task::yield_now().await;
            }
            match page.next {
                Some(next) => cursor = next,
                None => break None,
            }
            // Checkout first: the scan's reads come one page at a time.
            tokio::task::yield_now().await;
        };
        metrics::counter!("loyalty_whatif_receipts_total").increment(tally.receipts_evaluated);
        Ok(Report { tally, current_version: program.rules.version(), window_start, as_of, stopped_by })
    }

    /// The receipts an account's earn entries posted since `window_start` name (of the scan's
    /// store, if it names one), oldest first, at most [`ACCOUNT_RECEIPTS_MAX`]: the newest are
    /// kept, the older counted as skipped. `None` when the caller went away meanwhile.
    async fn receipts_in_window(
        &self,
        program_id: &str,
        account_id: &str,
        window_start: DateTime<Utc>,
        scan: &Scan,
        tally: &mut Tally,
        updates: &mpsc::Sender<Update>,
    ) -> EngineResult<Option<Vec<String>>> {
        let store = &self.ctx.accounts.store;
        let mut receipts = Vec::new();
        let mut before_seq = u64::MAX;
        loop {
            let page = store.ledger_page(program_id, account_id, before_seq, LEDGER_PAGE).await?;
            let Some(oldest) = page.last() else { break };
            before_seq = oldest.seq;
            for entry in &page {
                if entry.at < window_start {
                    receipts.reverse();
                    return Ok(Some(receipts));
                }
                let Some(receipt_id) = entry.receipt_id.as_ref().filter(|_| entry.kind == EntryKind::Earn) else { continue };
                if scan.store_id.as_ref().is_some_and(|store_id| *store_id != entry.store_id) {
                    continue;
                }
                if receipts.len() >= ACCOUNT_RECEIPTS_MAX {
                    tally.skip_receipt(ReceiptSkip::AccountReceiptsMax);
                } else {
                    receipts.push(receipt_id.clone());
                }
            }
            if page.len() < LEDGER_PAGE || before_seq <= 1 {
                break;
            }
            if updates.is_closed() {
                return Ok(None);
            }
            tokio::task::yield_now().await;
        }
        receipts.reverse();
        Ok(Some(receipts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::Engine;
    use crate::ids::UuidIds;
    use crate::programs::Programs;
    use loyalty_store::memory::MemoryStore;

    fn engine() -> Engine {
        let config = Config { programs: vec![crate::config::ProgramConfig { id: "p".into(), ..Default::default() }], ..Default::default() };
        let at = chrono::DateTime::parse_from_rfc3339("2026-03-10T06:00:00Z").expect("time").with_timezone(&Utc);
        Engine::new(
            Arc::new(MemoryStore::new()),
            Programs::from_config(&config).expect("config"),
            Arc::new(crate::clock::ManualClock::new(at)),
            Arc::new(UuidIds),
            100,
        )
    }

    fn scan(program: &Program) -> Scan {
        Scan { candidate: Arc::clone(&program.rules), days: 30, store_id: None, max_receipts: 10, max_duration: Duration::from_secs(5) }
    }

    #[tokio::test]
    async fn a_caller_that_went_away_stops_the_scan_and_frees_its_place() {
        let engine = engine();
        engine.bootstrap_rules().await.expect("rules");
        let program = engine.program("p").expect("program");
        let receiver = engine.whatif.start(Arc::clone(&program), scan(&program)).expect("started");
        assert!(matches!(engine.whatif.start(Arc::clone(&program), scan(&program)), Err(EngineError::Overloaded { .. })));
        drop(receiver);
        for _ in 0..100 {
            if !engine.whatif.is_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!engine.whatif.is_running(), "the scan's place is free again");
        // Run directly with its receiver gone, the scan says it was cancelled.
        let (updates, receiver) = mpsc::channel(1);
        drop(receiver);
        let report = engine.whatif.run(&program, &scan(&program), &updates).await.expect("run");
        assert_eq!(report.stopped_by, Some(Stop::Cancelled));
    }
}
