//! Credits owed between accounts (referral rewards and what refunds take back from them).
//!
//! A purchase never writes two accounts in one commit: its commit records what it owes each
//! referrer as a pending credit, durably, and this applier credits each one later under the
//! referrer's own lock, keyed by the credit's ID on the referrer's account so that a credit applied
//! twice (a crash between applying and forgetting it, two engines draining at once) pays once.
//! Referral rewards are not at the till's critical path: they reach the referrer within a moment.

use std::sync::Arc;
use std::time::Duration;

use loyalty_core::Origin;
use loyalty_core::events::PendingCredit;
use loyalty_core::ops::{self, BonusCmd};
use loyalty_core::outcome::StoredResponse;
use loyalty_core::receipt::OpKind;

use crate::engine::{Engine, Route};
use crate::error::EngineResult;
use crate::programs::Program;

/// Credits applied per program per round.
const CREDITS_PER_ROUND: usize = 256;

impl Engine {
    /// Applies pending credits of every program (a page each); returns how many were applied.
    /// A credit that fails is logged and left for the next round.
    pub async fn apply_pending_credits(&self) -> EngineResult<usize> {
        let mut applied = 0;
        for program_id in self.programs().ids() {
            let Some(program) = self.programs().get(&program_id) else { continue };
            for credit in self.store().pending_credits(&program_id, CREDITS_PER_ROUND).await? {
                match self.apply_credit(&program, &credit).await {
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

    pub(crate) async fn apply_credit(&self, program: &Arc<Program>, credit: &PendingCredit) -> EngineResult<()> {
        let origin = Origin::system(if credit.rule_id == loyalty_core::merge::MERGE_RULE_ID { "merge" } else { "referral" });
        let cmd = BonusCmd::Credit(credit.clone());
        let route = Route::Account(&credit.account_id);
        self.receipt_call(program, &origin, route, &credit.credit_id, OpKind::Bonus, "", &cmd, |checkout, txn, _receipt| {
            ops::bonus(checkout, txn, &cmd).map(StoredResponse::Bonus)
        })
        .await?;
        // Applied (or found applied): now it may be forgotten.
        self.store().delete_credit(program.id(), &credit.credit_id).await?;
        Ok(())
    }
}

/// Applies credits as soon as a commit owes some, and every `every` in case a round failed or
/// another engine's commit owes them.
pub fn spawn_credit_applier(engine: Arc<Engine>, every: Duration) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(&engine);
    drop(engine);
    tokio::spawn(async move {
        loop {
            let Some(engine) = weak.upgrade() else { break };
            if let Err(error) = engine.apply_pending_credits().await {
                tracing::warn!(%error, "applying credits failed; will retry");
            }
            let due = async {
                engine.credits_due.notified().await;
            };
            tokio::select! {
                () = due => {}
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// Runs the store's relay recovery (see `Store::relay`) for every program every `every`: side
/// effects of commits whose engine crashed before relaying them reach the outbox and the credits
/// table within the store's grace period plus `every`.
pub fn spawn_relay_recovery(engine: Arc<Engine>, every: Duration) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(&engine);
    drop(engine);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(engine) = weak.upgrade() else { break };
            for program_id in engine.programs().ids() {
                match engine.store().relay(&program_id).await {
                    Ok(0) => {}
                    Ok(relayed) => {
                        tracing::info!(program = program_id.as_str(), relayed, "relayed side effects of interrupted commits");
                        engine.credits_due.notify_one();
                    }
                    Err(error) => tracing::warn!(program = program_id.as_str(), %error, "relay recovery failed; will retry"),
                }
            }
        }
    })
}
