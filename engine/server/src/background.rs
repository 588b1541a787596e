//! The engine's background work, each on its own task for as long as the engine lives (a task
//! holds only a weak reference while it waits for its next round, so dropping the engine ends
//! it): the refresh that brings in rules, credentials and test clocks other engines stored; the
//! credit applier; the relay recovery of interrupted commits; the schedule sweep; the fold of the
//! programs' figures. Each round's failure is logged and the round tried again next time (what
//! each does is idempotent).

use std::sync::Arc;
use std::time::Duration;

use crate::engine::Engine;

/// When a task runs its next round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// Every period.
    Every,
    /// Every period, and as soon as a commit owes credits to other accounts.
    EveryOrCreditsDue,
}

/// Runs `work` at once and then every `every` for as long as the engine lives; with
/// [`Wake::EveryOrCreditsDue`], `every` after the end of a round or as soon as credits are due.
fn spawn_every<F, Fut>(engine: Arc<Engine>, every: Duration, wake: Wake, work: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(Arc<Engine>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(&engine);
    drop(engine);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once.
        ticker.tick().await;
        loop {
            let Some(engine) = weak.upgrade() else { break };
            work(Arc::clone(&engine)).await;
            let credits = (wake == Wake::EveryOrCreditsDue).then(|| engine.credits.clone());
            drop(engine);
            match credits {
                Some(credits) => tokio::select! {
                    () = credits.due() => {}
                    () = tokio::time::sleep(every) => {}
                },
                None => {
                    ticker.tick().await;
                }
            }
        }
    })
}

/// Checks the store for newer rules, credentials and test clock versions every `every`: how a
/// change made through another engine process reaches this one (a revoked key stops working
/// here within `every`). Campaign budget reservations unused for a minute go back then too.
pub fn spawn_refresh(engine: Arc<Engine>, every: Duration) -> tokio::task::JoinHandle<()> {
    spawn_every(engine, every, Wake::Every, |engine| async move {
        if let Err(error) = engine.rules().refresh().await {
            tracing::warn!(%error, "rules refresh failed; will retry");
        }
        if let Err(error) = engine.access.refresh(&engine.programs().ids()).await {
            tracing::warn!(%error, "credentials refresh failed; will retry");
        }
        if let Err(error) = engine.clocks().refresh().await {
            tracing::warn!(%error, "sandbox clock refresh failed; will retry");
        }
        engine.return_idle_budgets().await;
    })
}

/// Applies credits as soon as a commit owes some, and every `every` in case a round failed or
/// another engine's commit owes them.
pub fn spawn_credit_applier(engine: Arc<Engine>, every: Duration) -> tokio::task::JoinHandle<()> {
    spawn_every(engine, every, Wake::EveryOrCreditsDue, |engine| async move {
        if let Err(error) = engine.credits.apply_pending().await {
            tracing::warn!(%error, "applying credits failed; will retry");
        }
    })
}

/// Runs the store's relay recovery every `every`: side effects of commits whose engine crashed
/// before relaying them reach the outbox and the credits table within the store's grace period
/// plus `every`.
pub fn spawn_relay_recovery(engine: Arc<Engine>, every: Duration) -> tokio::task::JoinHandle<()> {
    spawn_every(engine, every, Wake::Every, |engine| async move {
        engine.credits.relay_interrupted().await;
    })
}

/// Sweeps every program every `every` (see `sweep`).
pub fn spawn_schedule_sweep(engine: Arc<Engine>, every: Duration) -> tokio::task::JoinHandle<()> {
    spawn_every(engine, every, Wake::Every, |engine| async move {
        for program_id in engine.programs().ids() {
            let Some(program) = engine.programs().get(&program_id) else { continue };
            match engine.sweep.run(&program).await {
                Ok(report) => tracing::info!(
                    program = program_id.as_str(),
                    accounts = report.accounts,
                    awards = report.awards,
                    expiry_notices = report.expiry_notices,
                    receipts_compacted = report.receipts_compacted,
                    "sweep done"
                ),
                Err(error) => tracing::warn!(program = program_id.as_str(), %error, "sweep failed; will retry"),
            }
        }
    })
}

/// Folds every program's new outbox events into its stored figures every `every` (see `reports`).
pub fn spawn_figures(engine: Arc<Engine>, every: Duration) -> tokio::task::JoinHandle<()> {
    spawn_every(engine, every, Wake::Every, |engine| async move {
        for program_id in engine.programs().ids() {
            if let Err(error) = engine.reports.catch_up(&program_id).await {
                tracing::warn!(program = program_id.as_str(), %error, "folding the figures failed; will retry");
            }
        }
    })
}
