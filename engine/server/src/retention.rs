//! Retention: receipts' stored first answers older than the program's `answers_kept_days` are
//! removed, account by account, as the sweep visits each customer.
//!
//! What a receipt keeps for ever is what its money needs: what was spent, earned, returned and
//! clawed back, the accrual's lines (refunds and reversal stay exact) and each call's fingerprint
//! (a retry is still recognised, and a different payload still conflicts). What goes is the first
//! answer itself (lines, rule explanations, balances), which only a retry reads: a retry after the
//! horizon is told `RECEIPT_COMPACTED` (the call was applied once; its effect is in the ledger).
//!
//! Which receipts: those the account's ledger entries name, oldest first, from the entry after
//! `AccountState::compacted_through` up to the first entry newer than the horizon; at most
//! `ENTRIES_PER_PASS` (200) entries of an account per pass, so a first pass over years of history
//! spreads over sweeps. A receipt is compacted only if its last call, too, is older than the
//! horizon (`ReceiptState::last_call_at`); one with a call since (a late refund) keeps its
//! answers, and so does one written before `last_call_at` was kept that had more than one call.
//! Receipts no ledger entry names keep their answers too: a quote, a hold released, a purchase
//! that earned nothing, bonuses and credits (their entries name no receipt), and the receipts of
//! a merged card's emptied account. Each compaction is an ordinary commit under the account's
//! slot (the account unchanged but for the cursor, the receipt at its next version), so it never
//! races a refund: one of them re-reads and tries again. Answers kept by request ID (enrolment,
//! card replacement, merges, imports) are not touched.

use std::collections::BTreeSet;
use std::sync::Arc;

use loyalty_core::account::AccountState;
use loyalty_store::{AccountWrite, Commit, ReceiptWrite, Versioned};

use crate::context::Context;
use crate::error::EngineResult;
use crate::programs::Program;

/// Ledger entries of one account looked at per pass, at most: a first pass over years of history
/// spreads over sweeps (each receipt is a commit) rather than holding up the sweep's other work.
const ENTRIES_PER_PASS: u64 = 200;
/// Ledger entries read per page.
const PAGE: usize = 200;

/// What retention did to one account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Receipts whose answers were removed.
    pub receipts: usize,
}

/// Retention (see the module documentation).
#[derive(Clone, Debug)]
pub struct Retention {
    ctx: Arc<Context>,
}

impl Retention {
    pub fn new(ctx: Arc<Context>) -> Self {
        Retention { ctx }
    }

    /// Removes the stored answers of the account's receipts older than the program's horizon that
    /// the last passes did not reach yet; `state` is the account as the sweep read it.
    pub async fn account(&self, program: &Program, state: &AccountState) -> EngineResult<Compacted> {
        let kept_days = program.policy.answers_kept_days;
        let accounts = &self.ctx.accounts;
        let program_id = program.id();
        let account_id = state.account_id.as_str();
        if kept_days == 0 || state.compacted_through >= state.ledger_seq {
            return Ok(Compacted::default());
        }
        let now = self.ctx.now_in(program_id);
        let cutoff = now - chrono::Duration::days(i64::from(kept_days));
        let entries = self.due(program_id, state, cutoff).await?;
        let mut done = Compacted::default();
        // Receipts in the order of their first entry; the cursor moves past an entry only once
        // its receipt is done, so a lost race keeps what came before it.
        let mut through = state.compacted_through;
        let mut seen = BTreeSet::new();
        for (seq, receipt_id) in entries {
            if let Some(receipt_id) = receipt_id
                && seen.insert(receipt_id.clone())
            {
                match self.compact_receipt(program_id, account_id, &receipt_id, cutoff, now).await? {
                    Some(true) => done.receipts += 1,
                    Some(false) => {}
                    // Lost a race with a call on the account: the next pass goes on from here.
                    None => break,
                }
            }
            through = seq;
        }
        metrics::counter!("loyalty_receipts_compacted_total").increment(done.receipts as u64);
        if through > state.compacted_through {
            let slot = accounts.slot(program_id, account_id);
            let mut guard = slot.lock().await;
            if let Some(Versioned { version, mut value }) = accounts.load(&mut guard, program_id, account_id).await?
                && value.compacted_through < through
            {
                value.compacted_through = through;
                accounts.commit(&mut guard, Commit::new(program_id, AccountWrite { expected_version: version, state: value })).await?;
            }
        }
        Ok(done)
    }

    /// The account's ledger entries after its cursor and before `cutoff`, oldest first, at most
    /// [`ENTRIES_PER_PASS`]: each entry's seq and receipt. The first entry is read alone, so an
    /// account whose next entry is younger than the horizon (most of them, most of the time)
    /// costs one small read.
    async fn due(
        &self,
        program_id: &str,
        state: &AccountState,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> EngineResult<Vec<(u64, Option<String>)>> {
        let store = &self.ctx.accounts.store;
        let mut entries = Vec::new();
        let mut through = state.compacted_through;
        let last = state.ledger_seq.min(state.compacted_through + ENTRIES_PER_PASS);
        let mut page_len = 1;
        while through < last {
            // Entries through+1 ..= through+page_len, newest first.
            let before = (through + 1 + page_len as u64).min(last + 1);
            let mut page = store.ledger_page(program_id, &state.account_id, before, page_len).await?;
            page.reverse();
            let mut moved = false;
            let after = through;
            for entry in page.into_iter().filter(|entry| entry.seq > after) {
                if entry.at >= cutoff || entry.seq != through + 1 {
                    return Ok(entries);
                }
                through = entry.seq;
                entries.push((entry.seq, entry.receipt_id));
                moved = true;
            }
            if !moved {
                break;
            }
            page_len = PAGE;
        }
        Ok(entries)
    }

    /// Compacts one receipt of the account if its last call is older than `cutoff` and it still
    /// holds answers: `Some(whether it did)`, or `None` if another writer changed the account or
    /// the receipt meanwhile.
    async fn compact_receipt(
        &self,
        program_id: &str,
        account_id: &str,
        receipt_id: &str,
        cutoff: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> EngineResult<Option<bool>> {
        let accounts = &self.ctx.accounts;
        let slot = accounts.slot(program_id, account_id);
        let mut guard = slot.lock().await;
        let Some(receipt) = accounts.store.receipt(program_id, receipt_id).await? else { return Ok(Some(false)) };
        // A receipt another account claimed (a merge's), or one with a call within the horizon.
        // A receipt written before `last_call_at` was kept, with calls after its first (a refund,
        // a reversal), may have had them lately: it keeps its answers.
        let last_call = match receipt.value.last_call_at {
            Some(at) => at,
            None if receipt.value.calls.len() > 1 || receipt.value.refunds > 0 || receipt.value.reversed => return Ok(Some(false)),
            None => receipt.value.created_at,
        };
        if receipt.value.account_id != account_id || last_call >= cutoff {
            return Ok(Some(false));
        }
        let mut state = receipt.value;
        if !state.compact(now) {
            return Ok(Some(false));
        }
        let Some(account) = accounts.load(&mut guard, program_id, account_id).await? else { return Ok(Some(false)) };
        let commit = Commit {
            receipt: Some(ReceiptWrite { expected_version: receipt.version, state }),
            ..Commit::new(program_id, AccountWrite { expected_version: account.version, state: account.value })
        };
        Ok(accounts.commit(&mut guard, commit).await?.map(|_| true))
    }
}
