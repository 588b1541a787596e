//! How many points a receipt may spend, and which rule bounds it: registered cards only, a minimum
//! spendable balance, lines points cannot pay for, and a cap on the share of the receipt (by tier).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::compile::CompiledRules;
use super::tiers::effective_tier;
use crate::account::AccountState;
use crate::basket::BasketLine;
use crate::outcome::{SpendLimit, SpendQuote};
use crate::program::ProgramPolicy;

/// The most points this basket may spend, given `puttable` points the account can put up (its
/// spendable balance, or what a new hold may reserve), with what bounds it and why in words.
pub fn spend_quote(
    rules: &CompiledRules,
    program: &ProgramPolicy,
    account: &AccountState,
    lines: &[BasketLine],
    now: DateTime<Utc>,
    puttable: Decimal,
) -> SpendQuote {
    let spending = &rules.spending;
    let tier = effective_tier(rules, account, now, program.time_zone);
    let tier_cap = rules.tiers.as_ref().and_then(|tiers| tiers.levels.iter().find(|level| level.id == tier)).and_then(|level| level.spend_cap_percent);
    let cap_percent = tier_cap.or(spending.cap_percent).unwrap_or(program.redeem_cap_percent);
    let eligible: Decimal = lines
        .iter()
        .filter(|line| rules.spending_exclude.as_ref().is_none_or(|exclude| !exclude.matches(line)))
        .map(|line| line.line_total)
        .sum();
    let quote = |max: Decimal, limit: SpendLimit, explanation: String| SpendQuote { max, limit, cap_percent, eligible, explanation };
    if spending.registered_only && !account.registered {
        return quote(Decimal::ZERO, SpendLimit::NotRegistered, "only registered cards may spend points".to_owned());
    }
    let puttable = program.floor_points(puttable.max(Decimal::ZERO));
    if puttable < spending.min_balance_to_spend {
        return quote(
            Decimal::ZERO,
            SpendLimit::MinimumBalance,
            format!("spending starts at {} points; {} can be used now", spending.min_balance_to_spend.normalize(), puttable.normalize()),
        );
    }
    let cap = program.floor_points(eligible * cap_percent / Decimal::ONE_HUNDRED);
    let source = if tier_cap.is_some() { format!("tier {tier}") } else { "program".to_owned() };
    if puttable < cap {
        quote(puttable, SpendLimit::Balance, format!("the customer's {} spendable points", puttable.normalize()))
    } else {
        quote(cap, SpendLimit::ReceiptCap, format!("{}% of the {} points may pay for ({source} cap)", cap_percent.normalize(), eligible.normalize()))
    }
}
