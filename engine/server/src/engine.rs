//! The engine: its parts, built once over one store and shared by every gRPC handler, and what it
//! does as a whole: start (rules, test clocks and credentials read from the store), backups, test
//! clocks, the outbox, and a stop that drains the calls inside before the store closes.
//!
//! The parts, each with one job and its own file:
//! - [`Checkout`] (`checkout`): the till's calls on receipts, and its reads.
//! - [`Customers`] (`customers`): enrolment, import, codes, profiles, cards, merges, erasure.
//! - [`Credits`] (`credits`) and [`Sweep`] (`sweep`): the work behind the calls (credits owed
//!   between accounts, interrupted commits' side effects, schedule awards and notices), run by
//!   `background`.
//! - [`Reports`] (`reports`): the programs' figures, folded from the outbox in the background.
//! - [`Segments`] (`segments`): the customers' RFM segment counts, stored by each sweep.
//! - [`WhatIf`] (`whatif`): a candidate rule set evaluated again on the receipts of the last days.
//! - [`RuleVersions`] (`rule_admin`), [`Access`] (`auth::registry`) and [`SandboxClocks`]
//!   (`sandbox`): the versioned documents (`documents`) every engine over one store follows.
//!
//! They share one [`Context`]: the accounts (`accounts`: identifiers, slots, cache, checked reads;
//! `commit`: the one commit path), the programs, the time each program sees, the ID source.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Duration, Utc};
use loyalty_store::{BackupReport, OutboxRecord, Store};

use crate::accounts::Accounts;
use crate::auth::credential::Credential;
use crate::auth::registry::{Access, BootstrapKey};
use crate::backups::Backups;
use crate::checkout::Checkout;
use crate::clock::Clock;
use crate::context::Context;
use crate::credits::Credits;
use crate::customers::Customers;
use crate::documents::Documents;
use crate::drain::InFlight;
use crate::error::{EngineError, EngineResult};
use crate::ids::IdSource;
use crate::programs::{Program, Programs};
use crate::reports::Reports;
use crate::rule_admin::RuleVersions;
use crate::sandbox::SandboxClocks;
use crate::segments::Segments;
use crate::sweep::{Sweep, SweepReport};
use crate::whatif::WhatIf;

/// The engine (see the module documentation). Shared by all gRPC handlers.
#[derive(Debug)]
pub struct Engine {
    ctx: Arc<Context>,
    /// The till's calls on receipts, and its reads.
    pub checkout: Checkout,
    /// The calls about a customer rather than a receipt.
    pub customers: Customers,
    /// Credits owed between accounts, and the relay of interrupted commits' side effects.
    pub credits: Credits,
    /// The schedule sweep: certificates and expiry notices.
    pub sweep: Sweep,
    /// The programs' figures (KPIs), folded from the outbox.
    pub reports: Reports,
    /// The customers' RFM segment counts, as the sweep last stored them.
    pub segments: Segments,
    /// What-if scans: a candidate rule set on the receipts of the last days.
    pub whatif: WhatIf,
    /// The credentials calls are checked against (the gate holds it too).
    pub access: Arc<Access>,
    /// The calls inside the engine: the store is shut only after the last (see `drain`).
    calls: InFlight,
    /// Online backups, when configured (see `backups`).
    backups: OnceLock<Backups>,
}

/// What advancing a sandbox clock did.
#[derive(Debug)]
pub struct Advanced {
    pub now: DateTime<Utc>,
    pub offset: Duration,
    /// The sweep run at the new time: the schedule awards and notices now due.
    pub sweep: SweepReport,
}

impl Engine {
    /// The engine over `store`, keeping at most `cached_accounts_max` accounts (and as many
    /// identifiers) in memory. Nothing is read from the store until [`Engine::bootstrap_rules`].
    pub fn new(
        store: Arc<dyn Store>,
        programs: Programs,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        cached_accounts_max: usize,
    ) -> Self {
        let programs = Arc::new(programs);
        let documents = Documents::new(Arc::clone(&store));
        let ctx = Arc::new(Context::new(
            Accounts::new(store, cached_accounts_max),
            Arc::clone(&programs),
            RuleVersions::new(Arc::clone(&programs), documents.clone()),
            SandboxClocks::new(programs, documents.clone()),
            ids,
            clock,
        ));
        let checkout = Checkout::new(Arc::clone(&ctx));
        let segments = Segments::new(documents.clone());
        let credits = Credits::new(Arc::clone(&ctx), checkout.clone());
        Engine {
            customers: Customers::new(Arc::clone(&ctx), credits.clone()),
            sweep: Sweep::new(Arc::clone(&ctx), checkout.clone(), segments.clone()),
            segments,
            reports: Reports::new(Arc::clone(&ctx)),
            whatif: WhatIf::new(Arc::clone(&ctx)),
            access: Arc::new(Access::new(documents)),
            checkout,
            credits,
            ctx,
            calls: InFlight::default(),
            backups: OnceLock::new(),
        }
    }

    /// At start: each program's rules (the configured ones stored as version 1 when the store has
    /// none) and sandbox programs' test clocks, read from the store before the first call.
    pub async fn bootstrap_rules(&self) -> EngineResult<()> {
        self.ctx.clocks.refresh().await?;
        self.ctx.rules.bootstrap(|program_id| self.ctx.now_in(program_id)).await
    }

    /// At start: each program's credentials ([`Access::bootstrap`]); returns the admin keys
    /// generated for programs with none, for the operator.
    pub async fn bootstrap_access(&self, seeds: &std::collections::HashMap<String, Vec<Credential>>) -> EngineResult<Vec<BootstrapKey>> {
        self.access.bootstrap(&self.ctx.programs.ids(), seeds, self.ctx.now()).await
    }

    /// The programs' rules versions.
    pub fn rules(&self) -> &RuleVersions {
        &self.ctx.rules
    }

    /// The sandbox programs' test clocks.
    pub fn clocks(&self) -> &SandboxClocks {
        &self.ctx.clocks
    }

    pub fn programs(&self) -> &Arc<Programs> {
        &self.ctx.programs
    }

    /// A program this engine serves, or PROGRAM_NOT_FOUND.
    pub fn program(&self, program_id: &str) -> EngineResult<Arc<Program>> {
        self.ctx.program(program_id)
    }

    /// The engine's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.ctx.now()
    }

    /// The time as one program sees it (a sandbox program's runs ahead by its test clock).
    pub fn now_in(&self, program_id: &str) -> DateTime<Utc> {
        self.ctx.now_in(program_id)
    }

    /// Moves a sandbox program's clock forward by `by` ([`SandboxClocks::advance`]), then sweeps
    /// the program at its new time (certificates and notices now due are issued, as the daily
    /// sweep would have).
    pub async fn advance_clock(&self, program: &Arc<Program>, request_id: &str, by: Duration, actor: &str) -> EngineResult<Advanced> {
        let offset = self.ctx.clocks.advance(program.id(), request_id, by, actor, self.ctx.now()).await?;
        let sweep = self.sweep.run(program).await?;
        Ok(Advanced { now: self.ctx.now_in(program.id()), offset, sweep })
    }

    /// A page of a program's outbox (events for the CRM and messaging), after `after_seq`.
    pub async fn outbox_page(&self, program_id: &str, after_seq: u64, limit: usize) -> EngineResult<Vec<OutboxRecord>> {
        Ok(self.ctx.accounts.store.outbox_page(program_id, after_seq, limit).await?)
    }

    /// Whether the store takes writes (health follows it).
    pub fn is_writable(&self) -> bool {
        self.ctx.accounts.store.is_writable()
    }

    /// Turns online backups on (`storage.backup_dir`); a second call changes nothing.
    pub fn set_backups(&self, backups: Backups) {
        let _ = self.backups.set(backups);
    }

    /// Takes an online backup into the configured folder and prunes old ones.
    pub async fn backup_store(&self) -> EngineResult<BackupReport> {
        let backups = self.backups.get().ok_or(EngineError::BackupUnavailable("storage.backup_dir is not set"))?;
        backups.take(self.ctx.accounts.store.as_ref(), || self.ctx.now()).await
    }

    /// The calls inside the engine. Each gRPC call holds a place from admission to its answer.
    pub fn calls(&self) -> &InFlight {
        &self.calls
    }

    /// The program's campaign budgets: stored reservations and this engine's holdings.
    pub async fn campaign_budgets(&self, program: &Program) -> EngineResult<Vec<crate::campaign_budgets::BudgetView>> {
        let given = self.reports.campaigns_given(program.id()).await?;
        self.ctx.campaigns.read(program.id(), &program.rules, &given).await
    }

    /// Returns what this engine holds of campaign budgets unused for a minute (the refresh task).
    pub async fn return_idle_budgets(&self) {
        self.ctx.campaigns.return_unused(self.ctx.now(), false).await;
    }

    /// Stops taking calls, waits (at most `grace`) for the calls inside to finish, then shuts the
    /// store: every call that reached the store is committed and answered before it closes.
    /// Returns how many calls were still inside when the grace ran out (they then meet a closed
    /// store and fail UNAVAILABLE, nothing acknowledged).
    pub async fn close_after_calls(&self, grace: std::time::Duration) -> usize {
        let left = self.calls.close_and_drain(grace).await;
        // What this engine holds of campaign budgets goes back for the other engines.
        self.ctx.campaigns.return_unused(self.ctx.now(), true).await;
        self.ctx.accounts.store.shutdown().await;
        left
    }
}
