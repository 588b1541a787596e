//! Per-customer budgets of rules ("1,000 points a month", "once ever"): counters kept on the account
//! for the current period, charged when a receipt earns and given back when it is refunded.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::compile::{CompiledRules, period_key};
use crate::account::{AccountState, RuleCounter};
use crate::outcome::RulePoints;

/// Charges the budgets of the rules that gave points; returns what was charged (kept with the
/// receipt so that a refund can give it back). Counters of past periods and of rules that no longer
/// have a budget are dropped, so the account keeps at most one counter per budgeted rule.
pub fn charge(rules: &CompiledRules, account: &mut AccountState, given: &[RulePoints], today: NaiveDate) -> Vec<RuleCounter> {
    let current = |rule_id: &str| {
        rules
            .rules
            .iter()
            .find(|rule| rule.id == rule_id)
            .and_then(|rule| rule.limits.per_customer.as_ref())
            .map(|limit| period_key(limit.period, today))
    };
    account.counters.retain(|counter| current(&counter.rule_id).is_some_and(|period| period == counter.period));
    let mut charged = Vec::new();
    for given in given {
        let Some(period) = current(&given.rule_id) else { continue };
        match account.counters.iter_mut().find(|counter| *counter.rule_id == *given.rule_id && counter.period == period) {
            Some(counter) => {
                counter.points += given.points;
                counter.uses += 1;
            }
            None => account.counters.push(RuleCounter {
                rule_id: given.rule_id.to_string(),
                period: period.clone(),
                points: given.points,
                uses: 1,
            }),
        }
        charged.push(RuleCounter { rule_id: given.rule_id.to_string(), period, points: given.points, uses: 1 });
    }
    charged
}

/// Gives back `points` of a charge (and its use, when the whole charge came back). A counter of a
/// period that has ended is gone, and nothing is given back to it.
pub fn give_back(account: &mut AccountState, charge: &RuleCounter, points: Decimal, whole: bool) {
    if let Some(counter) = account.counters.iter_mut().find(|counter| counter.rule_id == charge.rule_id && counter.period == charge.period)
    {
        counter.points = (counter.points - points).max(Decimal::ZERO);
        if whole {
            counter.uses = counter.uses.saturating_sub(charge.uses);
        }
    }
}
