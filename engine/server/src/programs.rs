//! The programs this engine serves, each with its policy (from configuration) and its current rules
//! version (from the store), looked up on every call.
//!
//! A call takes an `Arc<Program>` once and evaluates against it from start to end, so a rules
//! change swapped in meanwhile never mixes two versions in one evaluation. A receipt whose first
//! call used an older version keeps using it (see `Engine::pinned`), so the points a till quoted
//! at authorize are the points accrue pays; recent versions stay in memory for that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use loyalty_core::basket::BasketLimits;
use loyalty_core::ops::Checkout;
use loyalty_core::program::ProgramPolicy;
use loyalty_core::rules::{CompiledRules, RuleSet, RuleSetError, compile, flat_cashback};

use crate::config::{Config, ConfigError};

/// Older versions of one program kept in memory for receipts pinned to them.
const OLD_VERSIONS_KEPT: usize = 16;

/// One program at one rules version, as the engine runs it.
#[derive(Debug)]
pub struct Program {
    pub policy: ProgramPolicy,
    pub rules: Arc<CompiledRules>,
    pub limits: BasketLimits,
}

impl Program {
    pub fn checkout(&self) -> Checkout<'_> {
        Checkout { program: &self.policy, rules: &self.rules, limits: &self.limits }
    }

    pub fn id(&self) -> &str {
        &self.policy.program_id
    }
}

/// What configuration says about one program: its policy, limits, and the rules it starts with
/// when the store has none yet.
#[derive(Debug)]
pub struct ProgramSetup {
    pub policy: ProgramPolicy,
    pub limits: BasketLimits,
    pub initial_rules: RuleSet,
    /// Where the initial rules came from ("config" or `file:<path>`), recorded as the author.
    pub initial_source: String,
    /// A test program with a clock of its own (`sandbox`).
    pub sandbox: bool,
}

/// Programs by ID, each at its current version.
#[derive(Debug)]
pub struct Programs {
    setups: HashMap<String, ProgramSetup>,
    current: RwLock<HashMap<String, Arc<Program>>>,
    /// (program, version) -> program, for pinned receipts; at most `OLD_VERSIONS_KEPT` per program.
    old: Mutex<HashMap<String, Vec<Arc<Program>>>>,
    /// When each stored version was made (versions are written once), for late receipts.
    created: Mutex<HashMap<(String, u64), chrono::DateTime<chrono::Utc>>>,
}

impl Programs {
    /// Reads and checks the configuration and the rule files it names. Each program starts at
    /// version 0 (its initial rules, not yet stored) until [`crate::engine::Engine::bootstrap_rules`] installs
    /// the stored version.
    pub fn from_config(config: &Config) -> Result<Programs, ConfigError> {
        config.validate()?;
        let mut setups = HashMap::new();
        let mut current = HashMap::new();
        let mut problems = Vec::new();
        for (index, program) in config.effective_programs().iter().enumerate() {
            let at = format!("programs[{index}]");
            let policy = program.policy(&at).map_err(|problems| ConfigError { problems })?;
            let (initial_rules, initial_source) = match &program.rules_file {
                None => (flat_cashback(program.cashback_percent), "config".to_owned()),
                Some(path) => match crate::config::read_rule_file(path) {
                    Ok(rules) => (rules, format!("file:{}", path.display())),
                    Err(problem) => {
                        problems.push(format!("{at}.rules_file: {problem}"));
                        continue;
                    }
                },
            };
            let rules = match compile(&initial_rules, 0, policy.points_scale) {
                Ok(rules) => rules,
                Err(error) => {
                    problems.extend(error.problems.iter().map(|p| format!("{at}.rules_file ({initial_source}): {}: {}", p.at, p.reason)));
                    continue;
                }
            };
            let limits = config.limits.basket();
            let id = policy.program_id.clone();
            current.insert(id.clone(), Arc::new(Program { policy: policy.clone(), rules: Arc::new(rules), limits: limits.clone() }));
            setups.insert(id, ProgramSetup { policy, limits, initial_rules, initial_source, sandbox: program.sandbox });
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Programs { setups, current: RwLock::new(current), old: Mutex::new(HashMap::new()), created: Mutex::new(HashMap::new()) })
    }

    /// The current version of a program.
    pub fn get(&self, program_id: &str) -> Option<Arc<Program>> {
        self.current.read().ok().and_then(|current| current.get(program_id).cloned())
    }

    /// Whether the program is a sandbox (a test clock, `AdvanceClock`).
    pub fn is_sandbox(&self, program_id: &str) -> bool {
        self.setups.get(program_id).is_some_and(|setup| setup.sandbox)
    }

    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.setups.keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn setup(&self, program_id: &str) -> Option<&ProgramSetup> {
        self.setups.get(program_id)
    }

    /// Checks a rule set against a program's settings, as version `version`.
    pub fn compile(&self, program_id: &str, rules: &RuleSet, version: u64) -> Option<Result<CompiledRules, RuleSetError>> {
        self.setups.get(program_id).map(|setup| compile(rules, version, setup.policy.points_scale))
    }

    /// Makes `rules` the program's current version, unless a newer one is already current (two
    /// refreshes may race). The replaced version stays reachable for pinned receipts.
    pub fn install(&self, program_id: &str, rules: CompiledRules) -> Option<Arc<Program>> {
        let setup = self.setups.get(program_id)?;
        let program = Arc::new(Program { policy: setup.policy.clone(), rules: Arc::new(rules), limits: setup.limits.clone() });
        let replaced = {
            let mut current = self.current.write().ok()?;
            match current.get(program_id) {
                Some(existing) if existing.rules.version() >= program.rules.version() => return Some(Arc::clone(existing)),
                _ => current.insert(program_id.to_owned(), Arc::clone(&program)),
            }
        };
        if let Some(replaced) = replaced {
            self.remember(replaced);
        }
        tracing::info!(program = program_id, version = program.rules.version(), "rules version installed");
        metrics::gauge!("loyalty_program_rules_version", "program" => program_id.to_owned()).set(program.rules.version() as f64);
        Some(program)
    }

    /// Keeps an older version for receipts pinned to it.
    pub fn remember(&self, program: Arc<Program>) {
        if let Ok(mut old) = self.old.lock() {
            let versions = old.entry(program.id().to_owned()).or_default();
            if versions.iter().any(|known| known.rules.version() == program.rules.version()) {
                return;
            }
            versions.push(program);
            if versions.len() > OLD_VERSIONS_KEPT {
                versions.remove(0);
            }
        }
    }

    /// When a version was stored, if this engine has seen it.
    pub fn created_at(&self, program_id: &str, version: u64) -> Option<chrono::DateTime<chrono::Utc>> {
        self.created.lock().ok()?.get(&(program_id.to_owned(), version)).copied()
    }

    /// Remembers when a version was stored (a few hundred bytes per version, ever).
    pub fn note_created_at(&self, program_id: &str, version: u64, at: chrono::DateTime<chrono::Utc>) {
        if let Ok(mut created) = self.created.lock() {
            created.insert((program_id.to_owned(), version), at);
        }
    }

    /// A program at a given version, if it is in memory.
    pub fn at_version(&self, program_id: &str, version: u64) -> Option<Arc<Program>> {
        if let Some(current) = self.get(program_id)
            && current.rules.version() == version
        {
            return Some(current);
        }
        let old = self.old.lock().ok()?;
        old.get(program_id)?.iter().find(|program| program.rules.version() == version).cloned()
    }
}
