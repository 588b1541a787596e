//! The rules engine: every earning and spending mechanic of a program, evaluated in memory.
//!
//! A program's rules are a document ([`definition::RuleSet`]) that [`compile::compile`] checks and
//! indexes into an immutable [`compile::CompiledRules`], one per program version. Checkout
//! evaluates a basket against exactly one version ([`evaluate::evaluate_purchase`],
//! [`spending::spend_quote`]), with no I/O and no clock: the time of the receipt is an input.
//! Campaign-wide budgets ([`campaigns`]) cap what a campaign gives across all customers, through
//! what the engine holds of them. Tiers ([`tiers`]), per-customer budgets ([`budgets`]) and RFM segments ([`crate::rfm`]) are
//! computed from state kept on the account, so that refunds can take them back.

pub mod budgets;
pub mod campaigns;
pub mod compile;
pub mod definition;
pub mod evaluate;
pub mod spending;
pub mod tiers;
pub mod yaml_depth;

pub use compile::{CompiledRules, RuleProblem, RuleSetError, compile, flat_cashback, parse_rule, parse_rule_set};
pub use definition::{DocumentFormat, Rule, RuleSet};
pub use evaluate::{Earn, PurchaseContext, evaluate_purchase};
