//! Rules versions: the first version at start, changes through the admin API, and the refresh
//! that brings changes made by other engine processes into this one's memory.
//!
//! Every change builds the whole new rule set, compiles it (a bad rule is refused here, with its
//! path and the reason), stores it as the next version with a compare-and-set on the program's
//! version row, and only then swaps it in. The store is the source of truth; memory follows it.

use std::sync::Arc;

use loyalty_core::rules::{Rule, RuleSet};
use loyalty_store::StoredRules;

use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};
use crate::programs::Program;

/// One change to a program's rules.
#[derive(Clone, Debug)]
pub enum RuleEdit {
    /// The whole rule set (from a file in git, say).
    Replace(Box<RuleSet>),
    /// Adds the rule, or replaces the rule with its ID.
    Upsert(Box<Rule>),
    SetActive {
        rule_id: String,
        active: bool,
    },
    /// Every rule of a campaign at once.
    SetCampaignActive {
        campaign: String,
        active: bool,
    },
}

/// Who changes what, against which version.
#[derive(Clone, Debug)]
pub struct RuleChange {
    pub program_id: String,
    /// The version the change was made against; another version is a conflict (re-read, retry).
    pub expected_version: u64,
    pub edit: RuleEdit,
    pub author: String,
    pub comment: String,
}

fn decode(program_id: &str, stored: &StoredRules) -> EngineResult<RuleSet> {
    serde_json::from_str(&stored.document).map_err(|error| {
        EngineError::Internal(format!("program {program_id}: stored rules version {} unreadable: {error}", stored.version))
    })
}

impl Engine {
    /// At start: installs each program's latest stored rules, storing the configured ones as
    /// version 1 when the store has none.
    pub async fn bootstrap_rules(&self) -> EngineResult<()> {
        for program_id in self.programs().ids() {
            let stored = match self.store().latest_rules(&program_id).await? {
                Some(stored) => stored,
                None => {
                    let setup = self.programs().setup(&program_id).ok_or_else(|| EngineError::ProgramNotFound(program_id.clone()))?;
                    let first = StoredRules {
                        version: 1,
                        document: serde_json::to_string(&setup.initial_rules).map_err(|error| EngineError::Internal(error.to_string()))?,
                        created_at: self.now_in(&program_id),
                        author: setup.initial_source.clone(),
                        comment: "initial rules".into(),
                    };
                    // Another engine starting at the same time may store version 1 first: use theirs.
                    self.store().put_rules(&program_id, first).await?;
                    self.store().latest_rules(&program_id).await?.ok_or_else(|| EngineError::Internal("rules vanished".into()))?
                }
            };
            self.install_stored(&program_id, &stored)?;
            if let Some(setup) = self.programs().setup(&program_id)
                && setup.initial_source.starts_with("file:")
                && decode(&program_id, &stored)? != setup.initial_rules
            {
                tracing::warn!(
                    program = program_id.as_str(),
                    version = stored.version,
                    source = setup.initial_source.as_str(),
                    "the rules file differs from the stored version; the stored version runs (apply the file through the admin API to change it)"
                );
            }
        }
        // Sandbox programs read their test clocks before the first call.
        self.refresh_clocks().await?;
        Ok(())
    }

    fn install_stored(&self, program_id: &str, stored: &StoredRules) -> EngineResult<Arc<Program>> {
        let rule_set = decode(program_id, stored)?;
        let compiled = self
            .programs()
            .compile(program_id, &rule_set, stored.version)
            .ok_or_else(|| EngineError::ProgramNotFound(program_id.to_owned()))?
            .map_err(EngineError::RulesInvalid)?;
        self.programs().install(program_id, compiled).ok_or_else(|| EngineError::ProgramNotFound(program_id.to_owned()))
    }

    /// Brings every program up to the latest stored version; returns how many changed.
    pub async fn refresh_rules(&self) -> EngineResult<usize> {
        let mut changed = 0;
        for program_id in self.programs().ids() {
            let current = self.programs().get(&program_id).map_or(0, |program| program.rules.version());
            // Watch the head row; read the document only when it moved.
            if self.store().rules_head(&program_id).await? <= current {
                continue;
            }
            if let Some(stored) = self.store().latest_rules(&program_id).await?
                && stored.version > current
            {
                self.install_stored(&program_id, &stored)?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Applies one change as a new version and makes it current here at once.
    pub async fn change_rules(&self, change: RuleChange) -> EngineResult<Arc<Program>> {
        let program_id = change.program_id.as_str();
        let setup = self.programs().setup(program_id).ok_or_else(|| EngineError::ProgramNotFound(program_id.to_owned()))?;
        let latest = self.store().latest_rules(program_id).await?;
        let current_version = latest.as_ref().map_or(0, |stored| stored.version);
        if change.expected_version != current_version {
            return Err(EngineError::RulesVersionConflict { program_id: program_id.to_owned(), current: current_version });
        }
        let mut rule_set = match &latest {
            Some(stored) => decode(program_id, stored)?,
            None => setup.initial_rules.clone(),
        };
        match change.edit {
            RuleEdit::Replace(replacement) => rule_set = *replacement,
            RuleEdit::Upsert(rule) => match rule_set.rules.iter_mut().find(|existing| existing.id == rule.id) {
                Some(existing) => *existing = *rule,
                None => rule_set.rules.push(*rule),
            },
            RuleEdit::SetActive { rule_id, active } => {
                let rule = rule_set.rules.iter_mut().find(|rule| rule.id == rule_id).ok_or(EngineError::RuleNotFound(rule_id))?;
                rule.active = active;
            }
            RuleEdit::SetCampaignActive { campaign, active } => {
                let mut found = false;
                for rule in rule_set.rules.iter_mut().filter(|rule| rule.campaign.as_deref() == Some(campaign.as_str())) {
                    rule.active = active;
                    found = true;
                }
                if !found {
                    return Err(EngineError::RuleNotFound(format!("campaign {campaign}")));
                }
            }
        }
        let version = current_version + 1;
        let compiled = self
            .programs()
            .compile(program_id, &rule_set, version)
            .ok_or_else(|| EngineError::ProgramNotFound(program_id.to_owned()))?
            .map_err(EngineError::RulesInvalid)?;
        let stored = StoredRules {
            version,
            document: serde_json::to_string(&rule_set).map_err(|error| EngineError::Internal(error.to_string()))?,
            created_at: self.now_in(program_id),
            author: change.author,
            comment: change.comment,
        };
        if !self.store().put_rules(program_id, stored).await? {
            let current = self.store().latest_rules(program_id).await?.map_or(0, |stored| stored.version);
            return Err(EngineError::RulesVersionConflict { program_id: program_id.to_owned(), current });
        }
        metrics::counter!("loyalty_rule_changes_total", "program" => program_id.to_owned()).increment(1);
        self.programs().install(program_id, compiled).ok_or_else(|| EngineError::ProgramNotFound(program_id.to_owned()))
    }

    /// The program as it was at `at`: the latest version stored at or before it (walking back from
    /// the current one, at most [`VERSIONS_WALKED_MAX`]), for a receipt a till sends late. The
    /// current version when nothing older is stored (its rules were the program's from the start).
    pub(crate) async fn version_in_force(&self, program: &Arc<Program>, at: chrono::DateTime<chrono::Utc>) -> EngineResult<Arc<Program>> {
        let mut version = program.rules.version();
        for _ in 0..VERSIONS_WALKED_MAX {
            let since = match self.programs().created_at(program.id(), version) {
                Some(since) => since,
                None => match self.store().rules_version(program.id(), version).await? {
                    Some(stored) => {
                        self.programs().note_created_at(program.id(), version, stored.created_at);
                        stored.created_at
                    }
                    None => break,
                },
            };
            if since <= at || version <= 1 {
                break;
            }
            version -= 1;
        }
        self.pinned(program, version).await
    }

    /// The program at the version a receipt is pinned to: from memory, or read from the store.
    pub(crate) async fn pinned(&self, program: &Arc<Program>, version: u64) -> EngineResult<Arc<Program>> {
        if program.rules.version() == version {
            return Ok(Arc::clone(program));
        }
        if let Some(found) = self.programs().at_version(program.id(), version) {
            return Ok(found);
        }
        let Some(stored) = self.store().rules_version(program.id(), version).await? else {
            // Version 0 (initial rules never stored: a test engine) or a pruned version: evaluate
            // against the current one rather than refuse the till.
            return Ok(Arc::clone(program));
        };
        let rule_set = decode(program.id(), &stored)?;
        let compiled = self
            .programs()
            .compile(program.id(), &rule_set, version)
            .ok_or_else(|| EngineError::ProgramNotFound(program.id().to_owned()))?
            .map_err(EngineError::RulesInvalid)?;
        let pinned = Arc::new(Program { policy: program.policy.clone(), rules: Arc::new(compiled), limits: program.limits.clone() });
        self.programs().remember(Arc::clone(&pinned));
        Ok(pinned)
    }
}

/// Most versions a late receipt looks back through for the one in force at its sale.
const VERSIONS_WALKED_MAX: usize = 64;

/// Runs `work` every `every` for as long as the engine lives (the task holds only a weak
/// reference, so dropping the engine ends it).
fn spawn_every<F, Fut>(engine: Arc<Engine>, every: std::time::Duration, work: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(Arc<Engine>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let engine = Arc::downgrade(&engine);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(engine) = engine.upgrade() else { break };
            work(engine).await;
        }
    })
}

/// Checks the store for newer rules and credentials versions every `every`: how a change made
/// through another engine process reaches this one.
pub fn spawn_refresh(engine: Arc<Engine>, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    spawn_every(engine, every, |engine| async move {
        if let Err(error) = engine.refresh_rules().await {
            tracing::warn!(%error, "rules refresh failed; will retry");
        }
        // Credentials too: a key revoked through another engine stops working here.
        if let Err(error) = engine.refresh_access().await {
            tracing::warn!(%error, "credentials refresh failed; will retry");
        }
        // And sandbox programs' test clocks, advanced through another engine.
        if let Err(error) = engine.refresh_clocks().await {
            tracing::warn!(%error, "sandbox clock refresh failed; will retry");
        }
    })
}

/// Sweeps every program every `every` (see `sweep`). A failed sweep is logged and tried again next
/// time (what it does is idempotent).
pub fn spawn_schedule_sweep(engine: Arc<Engine>, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    spawn_every(engine, every, |engine| async move {
        for program_id in engine.programs().ids() {
            let Some(program) = engine.programs().get(&program_id) else { continue };
            match engine.sweep(&program).await {
                Ok(report) => tracing::info!(
                    program = program_id.as_str(),
                    accounts = report.accounts,
                    awards = report.awards,
                    expiry_notices = report.expiry_notices,
                    "sweep done"
                ),
                Err(error) => tracing::warn!(program = program_id.as_str(), %error, "sweep failed; will retry"),
            }
        }
    })
}
