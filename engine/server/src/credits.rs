//! Credits owed between accounts (referral rewards and what refunds take back from them).
//!
//! A purchase never writes two accounts in one commit: its commit records what it owes each
//! referrer as a pending credit, durably, and this applier credits each one later under the
//! referrer's own lock, keyed by the credit's ID on the referrer's account so that a credit applied
//! twice (a crash between applying and forgetting it, two engines draining at once) pays once.
//! Referral rewards are not at the till's critical path: they reach the referrer within a moment.

use std::sync::Arc;

use loyalty_core::Origin;
use loyalty_core::events::PendingCredit;
use loyalty_core::ops::{self, BonusCmd};
use loyalty_core::outcome::StoredResponse;
use loyalty_core::receipt::OpKind;

use crate::checkout::{Checkout, Route};
use crate::context::Context;
use crate::error::EngineResult;
use crate::programs::Program;

/// Credits applied per program per round.
const CREDITS_PER_ROUND: usize = 256;

/// The credit applier, and the relay of side effects interrupted commits left behind.
#[derive(Clone, Debug)]
pub struct Credits {
    ctx: Arc<Context>,
    checkout: Checkout,
}

impl Credits {
    pub fn new(ctx: Arc<Context>, checkout: Checkout) -> Self {
        Credits { ctx, checkout }
    }

    /// Applies pending credits of every program (a page each); returns how many were applied.
    /// A credit that fails is logged and left for the next round.
    pub async fn apply_pending(&self) -> EngineResult<usize> {
        let mut applied = 0;
        for program_id in self.ctx.programs.ids() {
            let Some(program) = self.ctx.programs.get(&program_id) else { continue };
            for credit in self.ctx.accounts.store.pending_credits(&program_id, CREDITS_PER_ROUND).await? {
                match self.apply(&program, &credit).await {
                    Ok(()) => applied += 1,
                    Err(error) => {
                        tracing::warn!(program = program_id.as_str(), credit = credit.credit_id.as_str(), %error, "credit not applied; will retry")
                    }
                }
            }
        }
        if applied > 0 {
            metrics::counter!("loyalty_credits_applied_total").increment(applied as u64);
        }
        Ok(applied)
    }

    /// Applies one credit (once: it is keyed by its ID on the account it pays), then forgets it.
    pub async fn apply(&self, program: &Arc<Program>, credit: &PendingCredit) -> EngineResult<()> {
        let origin = Origin::system(if credit.rule_id == loyalty_core::merge::MERGE_RULE_ID { "merge" } else { "referral" });
        let cmd = BonusCmd::Credit(credit.clone());
        let route = Route::Account(&credit.account_id);
        self.checkout
            .receipt_call(program, &origin, route, &credit.credit_id, OpKind::Bonus, "", &cmd, |checkout, txn, _receipt| {
                ops::bonus(checkout, txn, &cmd).map(StoredResponse::Bonus)
            })
            .await?;
        // Applied (or found applied): now it may be forgotten.
        self.ctx.accounts.store.delete_credit(program.id(), &credit.credit_id).await?;
        Ok(())
    }

    /// Runs the store's relay recovery (see `Store::relay`) for every program once: side effects
    /// of commits whose engine crashed before relaying them reach the outbox and the credits
    /// table. Returns how many were relayed; the credit applier is woken when any were.
    pub async fn relay_interrupted(&self) -> usize {
        let mut total = 0;
        for program_id in self.ctx.programs.ids() {
            match self.ctx.accounts.store.relay(&program_id).await {
                Ok(0) => {}
                Ok(relayed) => {
                    tracing::info!(program = program_id.as_str(), relayed, "relayed side effects of interrupted commits");
                    total += relayed;
                }
                Err(error) => tracing::warn!(program = program_id.as_str(), %error, "relay recovery failed; will retry"),
            }
        }
        if total > 0 {
            self.ctx.credits_due.notify_one();
        }
        total
    }

    /// Resolves when a commit wrote credits owed to other accounts.
    pub async fn due(&self) {
        self.ctx.credits_due.notified().await;
    }
}
