//! The sweep over every customer of a program, run periodically: the awards of schedule rules
//! (birthday and win-back certificates: funnels), "points expiring soon" notices for the outbox,
//! and the expiries of customers nobody calls on (written to their ledgers, so that the program's
//! expired points and liability are right: `reports`), and retention (`retention`: the stored
//! answers of receipts past the program's horizon removed). Each is a receipt-keyed call on the account
//! (`funnel/<account>/<rule>/<occasion>`, `expiring/<account>/<month>`, `expired/<account>/<day>`),
//! so a sweep that runs twice, or on two engines at once, does each once.
//!
//! On the way it scores every customer's RFM segment as of its start and stores the counts
//! (`segments`): segments move with time alone, and this is the pass that sees every customer.

use std::sync::Arc;

use loyalty_core::Origin;
use loyalty_core::ops::{self, BonusCmd};
use loyalty_core::outcome::StoredResponse;
use loyalty_core::receipt::OpKind;
use loyalty_core::rules::evaluate::evaluate_schedule;

use crate::checkout::{Checkout, Route};
use crate::context::Context;
use crate::error::EngineResult;
use crate::programs::Program;
use crate::retention::Retention;
use crate::segments::{Segments, SegmentsDocument};

/// Accounts read per page.
const PAGE: usize = 500;
/// Customers hear about points that expire within this many days.
pub const EXPIRY_NOTICE_DAYS: u32 = 30;

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub accounts: usize,
    pub awards: usize,
    pub expiry_notices: usize,
    /// Accounts whose expired points the sweep wrote to their ledgers.
    pub expiries_settled: usize,
    /// Receipts whose stored answers retention removed.
    pub receipts_compacted: usize,
    /// The version of the segment counts it stored (0: none, a later sweep's were stored first).
    pub segments_version: u64,
}

/// The sweep (see the module documentation).
#[derive(Clone, Debug)]
pub struct Sweep {
    ctx: Arc<Context>,
    checkout: Checkout,
    retention: Retention,
    /// Where the customers' segment counts go.
    segments: Segments,
}

impl Sweep {
    pub fn new(ctx: Arc<Context>, checkout: Checkout, segments: Segments) -> Self {
        Sweep { retention: Retention::new(Arc::clone(&ctx)), ctx, checkout, segments }
    }

    /// Sweeps every account of one program once.
    pub async fn run(&self, program: &Arc<Program>) -> EngineResult<SweepReport> {
        let program_id = program.id();
        let origin = Origin::system("schedule");
        let mut report = SweepReport::default();
        // Every customer is scored as of the start, so the counts are of one instant.
        let scored_at = self.ctx.now_in(program_id);
        let mut counts = loyalty_core::rfm::SegmentCounts::default();
        let mut cursor = String::new();
        loop {
            let store = &self.ctx.accounts.store;
            let page = store.account_ids(program_id, &cursor, PAGE).await?;
            for account_id in &page.ids {
                // The internal accounts of sales without a customer are nobody's: nothing to award,
                // notify or expire (they hold no points).
                if loyalty_core::figures::is_sales_account(account_id) {
                    continue;
                }
                let Some(stored) = store.account(program_id, account_id).await? else { continue };
                // A merged card's emptied account: its customer is swept under their own account.
                if stored.value.merged_into.is_some() {
                    continue;
                }
                report.accounts += 1;
                counts.count(program.rules.rfm_score(&stored.value, scored_at, program.policy.time_zone).as_ref());
                let now = self.ctx.now_in(program_id);
                let mut due: Vec<(String, BonusCmd)> = evaluate_schedule(&program.rules, &program.policy, &stored.value, now)
                    .into_iter()
                    .map(|(award, occasion)| {
                        (
                            format!("funnel/{account_id}/{}/{occasion}", award.rule_id),
                            BonusCmd::Schedule { rule_id: award.rule_id, occasion },
                        )
                    })
                    .collect();
                let (expiring, next) = stored.value.expiring_within(now, chrono::Duration::days(i64::from(EXPIRY_NOTICE_DAYS)));
                if let Some(next) = next.filter(|_| expiring > loyalty_core::Decimal::ZERO) {
                    let month = next.with_timezone(&program.policy.time_zone).format("%Y-%m");
                    due.push((format!("expiring/{account_id}/{month}"), BonusCmd::ExpiryNotice { window_days: EXPIRY_NOTICE_DAYS }));
                }
                // Expired points still on the account: the next call would write them off; for a
                // customer who does not come back, the sweep does (once a day at most).
                if stored.value.buckets.iter().any(|bucket| bucket.is_expired(now)) {
                    let day = now.with_timezone(&program.policy.time_zone).format("%Y-%m-%d");
                    due.push((format!("expired/{account_id}/{day}"), BonusCmd::SettleExpired));
                }
                for (key, cmd) in due {
                    // Done before: skip without taking the account's lock.
                    if store.receipt(program_id, &key).await?.is_some() {
                        continue;
                    }
                    // Done before under the key of earlier releases (without the account: only the
                    // first account swept ever got it), for this account: not again.
                    let legacy = key.replacen(&format!("/{account_id}/"), "/", 1);
                    if store.receipt(program_id, &legacy).await?.is_some_and(|receipt| receipt.value.account_id == *account_id) {
                        continue;
                    }
                    let response = self
                        .checkout
                        .receipt_call(
                            program,
                            &origin,
                            Route::Account(account_id),
                            &key,
                            OpKind::Bonus,
                            "",
                            &cmd,
                            |checkout, txn, _receipt| ops::bonus(checkout, txn, &cmd).map(StoredResponse::Bonus),
                        )
                        .await?;
                    match (&cmd, response) {
                        (BonusCmd::ExpiryNotice { .. }, _) => report.expiry_notices += 1,
                        (BonusCmd::SettleExpired, _) => report.expiries_settled += 1,
                        (_, StoredResponse::Bonus(outcome)) if !outcome.points.is_zero() => report.awards += 1,
                        _ => {}
                    }
                }
                // Retention's failure on one account (a receipt that does not read) does not stop
                // the sweep of the others; it is tried again next sweep.
                match self.retention.account(program, &stored.value).await {
                    Ok(compacted) => report.receipts_compacted += compacted.receipts,
                    Err(error) => {
                        tracing::warn!(program = program_id, account = account_id.as_str(), %error, "retention skipped an account")
                    }
                }
            }
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        // For dashboards: the program's customers by segment (labels: the program and one of the
        // eleven segment names, never a customer).
        for segment in loyalty_core::rfm::Segment::ALL {
            metrics::gauge!("loyalty_rfm_customers", "program" => program_id.to_owned(), "segment" => segment.name())
                .set(counts.in_segment(segment) as f64);
        }
        let document = SegmentsDocument { computed_at: scored_at, rules_version: program.rules.version(), counts };
        report.segments_version = self.segments.store(program_id, &document, self.ctx.now_in(program_id)).await?.unwrap_or(0);
        metrics::counter!("loyalty_schedule_awards_total").increment(report.awards as u64);
        metrics::counter!("loyalty_expiry_notices_total").increment(report.expiry_notices as u64);
        Ok(report)
    }
}
