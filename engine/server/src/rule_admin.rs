//! Rules versions: the first version at start, changes through the admin API, the refresh that
//! brings changes made by other engine processes into this one's memory, and the older versions
//! a receipt stays pinned to.
//!
//! Every change builds the whole new rule set, compiles it (a bad rule is refused here, with its
//! path and the reason), stores it as the next version of the program's versioned document
//! (`documents`, key: the program ID), and only then swaps it in. The store is the source of
//! truth; memory follows it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use loyalty_core::rules::{CompiledRules, Rule, RuleSet};

use crate::documents::{Changed, Documents, Edit, First, Version, VersionNote};
use crate::error::{EngineError, EngineResult};
use crate::programs::{Program, Programs};

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

/// A program's rules as versions: stored as versioned documents, installed into [`Programs`].
#[derive(Clone, Debug)]
pub struct RuleVersions {
    programs: Arc<Programs>,
    documents: Documents,
}

impl RuleVersions {
    pub fn new(programs: Arc<Programs>, documents: Documents) -> Self {
        RuleVersions { programs, documents }
    }

    /// At start: installs each program's latest stored rules, storing the configured ones as
    /// version 1 when the store has none (`now_in`: the program's time, for the version's date).
    pub async fn bootstrap(&self, now_in: impl Fn(&str) -> DateTime<Utc>) -> EngineResult<()> {
        for program_id in self.programs.ids() {
            let setup = self.programs.setup(&program_id).ok_or_else(|| EngineError::ProgramNotFound(program_id.clone()))?;
            let (stored, _) = self
                .documents
                .bootstrap(&program_id, now_in(&program_id), || {
                    Ok(First {
                        document: setup.initial_rules.clone(),
                        author: setup.initial_source.clone(),
                        comment: "initial rules".into(),
                    })
                })
                .await?;
            if setup.initial_source.starts_with("file:") && stored.document != setup.initial_rules {
                tracing::warn!(
                    program = program_id.as_str(),
                    version = stored.version,
                    source = setup.initial_source.as_str(),
                    "the rules file differs from the stored version; the stored version runs (apply the file through the admin API to change it)"
                );
            }
            self.install(&program_id, stored)?;
        }
        Ok(())
    }

    fn install(&self, program_id: &str, stored: Version<RuleSet>) -> EngineResult<Arc<Program>> {
        let compiled = self.compile(program_id, &stored.document, stored.version)?;
        self.programs.install(program_id, compiled).ok_or_else(|| EngineError::ProgramNotFound(program_id.to_owned()))
    }

    fn compile(&self, program_id: &str, rule_set: &RuleSet, version: u64) -> EngineResult<CompiledRules> {
        self.programs
            .compile(program_id, rule_set, version)
            .ok_or_else(|| EngineError::ProgramNotFound(program_id.to_owned()))?
            .map_err(EngineError::RulesInvalid)
    }

    /// Brings every program up to the latest stored version; returns how many changed.
    pub async fn refresh(&self) -> EngineResult<usize> {
        let mut changed = 0;
        for program_id in self.programs.ids() {
            let current = self.programs.get(&program_id).map_or(0, |program| program.rules.version());
            if let Some(stored) = self.documents.newer::<RuleSet>(&program_id, current).await? {
                self.install(&program_id, stored)?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Applies one change as a new version (dated `now`) and makes it current here at once.
    pub async fn change(&self, change: RuleChange, now: DateTime<Utc>) -> EngineResult<Arc<Program>> {
        let program_id = change.program_id.as_str();
        let setup = self.programs.setup(program_id).ok_or_else(|| EngineError::ProgramNotFound(program_id.to_owned()))?;
        let mut compiled = None;
        let changed = self
            .documents
            .change(&change.program_id, Some(change.expected_version), &change.author, now, |latest: Option<RuleSet>| {
                let mut rule_set = latest.unwrap_or_else(|| setup.initial_rules.clone());
                edit(&mut rule_set, change.edit)?;
                compiled = Some(self.compile(program_id, &rule_set, change.expected_version + 1)?);
                Ok(Edit::Write { document: rule_set, comment: change.comment, value: () })
            })
            .await?;
        match (changed, compiled) {
            (Changed::Stored { .. }, Some(compiled)) => {
                metrics::counter!("loyalty_rule_changes_total", "program" => program_id.to_owned()).increment(1);
                self.programs.install(program_id, compiled).ok_or_else(|| EngineError::ProgramNotFound(program_id.to_owned()))
            }
            (Changed::Conflict { current }, _) => Err(EngineError::RulesVersionConflict { program_id: program_id.to_owned(), current }),
            _ => Err(EngineError::Internal("a rules change stored nothing".into())),
        }
    }

    /// The notes of a program's rules versions below `before`, newest first (the audit trail), and
    /// the version to continue below.
    pub async fn history(&self, program_id: &str, before: u64, limit: usize) -> EngineResult<(Vec<VersionNote>, u64)> {
        self.documents.history(program_id, before, limit).await
    }

    /// The program as it was at `at`: the latest version stored at or before it (walking back from
    /// the current one, at most [`VERSIONS_WALKED_MAX`]), for a receipt a till sends late. The
    /// current version when nothing older is stored (its rules were the program's from the start).
    pub(crate) async fn version_in_force(&self, program: &Arc<Program>, at: DateTime<Utc>) -> EngineResult<Arc<Program>> {
        let mut version = program.rules.version();
        for _ in 0..VERSIONS_WALKED_MAX {
            let since = match self.programs.created_at(program.id(), version) {
                Some(since) => since,
                None => match self.documents.note_at(program.id(), version).await? {
                    Some(stored) => {
                        self.programs.note_created_at(program.id(), version, stored.created_at);
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
        if let Some(found) = self.programs.at_version(program.id(), version) {
            return Ok(found);
        }
        let Some(stored) = self.documents.at::<RuleSet>(program.id(), version).await? else {
            // Version 0 (initial rules never stored: a test engine) or a pruned version: evaluate
            // against the current one rather than refuse the till.
            return Ok(Arc::clone(program));
        };
        let compiled = self.compile(program.id(), &stored.document, version)?;
        let pinned = Arc::new(Program { policy: program.policy.clone(), rules: Arc::new(compiled), limits: program.limits.clone() });
        self.programs.remember(Arc::clone(&pinned));
        Ok(pinned)
    }
}

/// Applies one edit to a rule set.
fn edit(rule_set: &mut RuleSet, edit: RuleEdit) -> EngineResult<()> {
    match edit {
        RuleEdit::Replace(replacement) => *rule_set = *replacement,
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
    Ok(())
}

/// Most versions a late receipt looks back through for the one in force at its sale.
const VERSIONS_WALKED_MAX: usize = 64;
