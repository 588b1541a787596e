//! What every part of the engine shares: the store's accounts (`accounts`), the programs and their
//! rule versions, the time as each program sees it, the ID source, and this engine's reservations
//! of campaign budgets. Built once by
//! [`crate::engine::Engine::new`] and held by each part behind an `Arc`.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::accounts::Accounts;
use crate::campaign_budgets::CampaignBudgets;
use crate::clock::Clock;
use crate::documents::Documents;
use crate::error::{EngineError, EngineResult};
use crate::ids::IdSource;
use crate::programs::{Program, Programs};
use crate::rule_admin::RuleVersions;
use crate::sandbox::SandboxClocks;

/// The engine's shared state (see the module documentation).
#[derive(Debug)]
pub struct Context {
    pub(crate) accounts: Accounts,
    pub(crate) programs: Arc<Programs>,
    pub(crate) rules: RuleVersions,
    /// The test clocks of sandbox programs.
    pub(crate) clocks: SandboxClocks,
    pub(crate) ids: Arc<dyn IdSource>,
    clock: Arc<dyn Clock>,
    /// Woken when a commit wrote credits owed to other accounts (see `credits`).
    pub(crate) credits_due: tokio::sync::Notify,
    /// This engine's reservations of campaign budgets.
    pub(crate) campaigns: CampaignBudgets,
}

impl Context {
    pub fn new(
        accounts: Accounts,
        programs: Arc<Programs>,
        rules: RuleVersions,
        clocks: SandboxClocks,
        ids: Arc<dyn IdSource>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let campaigns = CampaignBudgets::new(Documents::new(Arc::clone(&accounts.store)), Arc::clone(&ids));
        Context { accounts, programs, rules, clocks, ids, clock, credits_due: tokio::sync::Notify::new(), campaigns }
    }

    /// The engine's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The time as one program sees it: the engine's clock, plus its test clock's offset when the
    /// program is a sandbox. Every call of the program reads this.
    pub fn now_in(&self, program_id: &str) -> DateTime<Utc> {
        let now = self.now();
        if self.programs.is_sandbox(program_id) { now + self.clocks.offset(program_id) } else { now }
    }

    /// A program this engine serves, or PROGRAM_NOT_FOUND.
    pub fn program(&self, program_id: &str) -> EngineResult<Arc<Program>> {
        self.programs.get(program_id).ok_or_else(|| EngineError::ProgramNotFound(program_id.to_owned()))
    }
}
