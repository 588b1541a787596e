//! The programs this engine serves, each with its policy and earning rule, looked up by ID on
//! every call. Built once from configuration; the rules engine will swap versions at run time.

use std::collections::HashMap;
use std::sync::Arc;

use loyalty_core::basket::BasketLimits;
use loyalty_core::earn::{EarnEvaluator, FlatCashback};
use loyalty_core::ops::Checkout;
use loyalty_core::program::ProgramPolicy;

use crate::config::{Config, ConfigError};

/// One program as the engine runs it.
#[derive(Debug)]
pub struct Program {
    pub policy: ProgramPolicy,
    pub earn: Arc<dyn EarnEvaluator>,
    pub limits: BasketLimits,
}

impl Program {
    pub fn checkout(&self) -> Checkout<'_> {
        Checkout { program: &self.policy, earn: self.earn.as_ref(), limits: &self.limits }
    }
}

/// Programs by ID.
#[derive(Debug, Default)]
pub struct Programs {
    by_id: HashMap<String, Arc<Program>>,
}

impl Programs {
    pub fn from_config(config: &Config) -> Result<Programs, ConfigError> {
        config.validate()?;
        let mut by_id = HashMap::new();
        for (index, program) in config.effective_programs().iter().enumerate() {
            let policy = program.policy(&format!("programs[{index}]")).map_err(|problems| ConfigError { problems })?;
            let earn: Arc<dyn EarnEvaluator> = Arc::new(FlatCashback::new(program.cashback_percent));
            by_id.insert(policy.program_id.clone(), Arc::new(Program { policy, earn, limits: config.limits.basket() }));
        }
        Ok(Programs { by_id })
    }

    pub fn get(&self, program_id: &str) -> Option<Arc<Program>> {
        self.by_id.get(program_id).cloned()
    }
}
