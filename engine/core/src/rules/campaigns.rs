//! Campaign-wide budgets: the most points the purchase rules of one campaign may give across all
//! customers ("a launch with 1,000,000 points to give away").
//!
//! The budget is program-wide, but checkout must not take a program-wide lock or a consensus round
//! per call. So engines hold *reservations*: each takes a chunk of the budget from the store at a
//! time (a compare-and-set on the campaign's reserved total, which never goes above the budget),
//! pays receipts out of it in memory, and gives back what it does not use. An evaluation sees
//! only what its engine holds ([`Allowance`]); a rule whose campaign has nothing left stops paying
//! and the line says so. Exact by construction: every point given was reserved first, and the
//! reservations add up to at most the budget. A point reserved and never given (an engine killed
//! holding a chunk) is lost to the campaign, never given twice; [`grant`] shrinks the chunks as
//! the budget runs out, so what can be stranded shrinks too.
//!
//! This module is the arithmetic (no I/O): what an evaluation may give ([`Allowance`]), what it
//! gave ([`CampaignUse`]), and how much a reservation takes ([`grant`]).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// What each budgeted campaign may still give in one evaluation. A campaign not listed is not
/// limited (the default, empty allowance limits nothing: a quote, a dry run, a program without
/// budgets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowance {
    left: BTreeMap<String, Decimal>,
}

/// The allowance that limits no campaign, for contexts that borrow one.
pub static UNLIMITED: Allowance = Allowance { left: BTreeMap::new() };

impl Allowance {
    /// No campaign limited.
    pub fn unlimited() -> Self {
        Allowance::default()
    }

    /// Limits `campaign` to `points` (never below zero).
    pub fn limit(&mut self, campaign: &str, points: Decimal) {
        self.left.insert(campaign.to_owned(), points.max(Decimal::ZERO));
    }

    /// What `campaign` may still give: `None` when it is not limited.
    pub fn left(&self, campaign: &str) -> Option<Decimal> {
        self.left.get(campaign).copied()
    }

    /// Takes `points` given by `campaign` off what it has left.
    pub(crate) fn take(&mut self, campaign: &str, points: Decimal) {
        if let Some(left) = self.left.get_mut(campaign) {
            *left = (*left - points).max(Decimal::ZERO);
        }
    }
}

/// What one receipt drew on one campaign's budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignUse {
    pub campaign: String,
    /// What the campaign's rules would have given with budget enough (after every other limit).
    pub wanted: Decimal,
    /// What they gave: `wanted`, or less when the campaign had less left.
    pub given: Decimal,
}

impl CampaignUse {
    /// Whether the campaign's budget cut this receipt's points.
    pub fn cut(&self) -> bool {
        self.given < self.wanted
    }
}

/// Adds what one rule of `campaign` wanted and gave to `uses`.
pub(crate) fn record(uses: &mut Vec<CampaignUse>, campaign: &str, wanted: Decimal, given: Decimal) {
    match uses.iter_mut().find(|used| used.campaign == campaign) {
        Some(used) => {
            used.wanted += wanted;
            used.given += given;
        }
        None => uses.push(CampaignUse { campaign: campaign.to_owned(), wanted, given }),
    }
}

/// How many points a reservation takes from a campaign whose budget is `budget` with `reserved`
/// already reserved, for an engine that needs `need` now and reserves `chunk` at a time: at least
/// what it needs when that is left, else everything left; otherwise a chunk, but never more than a
/// quarter of what is left beyond the need, so that as the budget runs out the chunks shrink and
/// engines strand less of it. Never more than what is left: `reserved + grant <= budget`.
pub fn grant(budget: Decimal, reserved: Decimal, need: Decimal, chunk: Decimal) -> Decimal {
    let left = (budget - reserved).max(Decimal::ZERO);
    let need = need.max(Decimal::ZERO);
    if need >= left {
        return left;
    }
    let spare = ((left - need) / Decimal::from(4)).floor();
    let extra = (chunk.max(Decimal::ZERO) - need).max(Decimal::ZERO).min(spare);
    need + extra
}

/// The chunk a campaign's reservations take when its budget does not say: a hundredth of the
/// budget, at least one point.
pub fn default_chunk(budget: Decimal) -> Decimal {
    (budget / Decimal::ONE_HUNDRED).floor().max(Decimal::ONE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(value: i64) -> Decimal {
        Decimal::from(value)
    }

    #[test]
    fn a_grant_is_a_chunk_while_plenty_is_left() {
        assert_eq!(grant(d(1_000_000), d(0), d(30), d(10_000)), d(10_000));
        // A need above the chunk is met whole.
        assert_eq!(grant(d(1_000_000), d(0), d(25_000), d(10_000)), d(25_000));
    }

    #[test]
    fn grants_shrink_as_the_budget_runs_out() {
        // 4,000 left: a quarter of what is left beyond the need of 40, not a whole chunk.
        assert_eq!(grant(d(1_000_000), d(996_000), d(40), d(10_000)), d(40 + 990));
        // Less left than needed: all of it, and nothing once it is gone.
        assert_eq!(grant(d(1_000), d(990), d(40), d(100)), d(10));
        assert_eq!(grant(d(1_000), d(1_000), d(40), d(100)), d(0));
        // A budget lowered below what is reserved grants nothing.
        assert_eq!(grant(d(500), d(900), d(1), d(100)), d(0));
    }

    #[test]
    fn an_allowance_limits_only_the_campaigns_it_names() {
        let mut allowance = Allowance::unlimited();
        assert_eq!(allowance.left("launch"), None);
        allowance.limit("launch", d(100));
        allowance.take("launch", d(30));
        allowance.take("other", d(30));
        assert_eq!(allowance.left("launch"), Some(d(70)));
        assert_eq!(allowance.left("other"), None);
        allowance.take("launch", d(500));
        assert_eq!(allowance.left("launch"), Some(d(0)));
    }

    proptest! {
        /// Reservations in any order never add up to more than the budget, and each meets the need
        /// whenever that much is left.
        #[test]
        fn reservations_never_pass_the_budget(
            budget in 0i64..5_000_000,
            chunk in 1i64..100_000,
            needs in proptest::collection::vec(0i64..50_000, 1..200),
        ) {
            let mut reserved = Decimal::ZERO;
            for need in needs {
                let left = d(budget) - reserved;
                let granted = grant(d(budget), reserved, d(need), d(chunk));
                prop_assert!(granted >= Decimal::ZERO);
                prop_assert!(granted <= left, "granted {granted} with {left} left");
                prop_assert!(granted >= d(need).min(left), "granted {granted} for a need of {need} with {left} left");
                reserved += granted;
            }
            prop_assert!(reserved <= d(budget));
        }
    }
}
