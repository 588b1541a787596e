//! Tiers by spend over a sliding window of calendar months.
//!
//! The tier is a pure function of the account's spend per month, the floor fixed at the last review
//! and the clock: `max(floor, qualified)` until the review period ends, then `qualified`. So a tier
//! rises the moment a receipt crosses a threshold, falls only at the end of a review period, and a
//! refund that takes back the spend which raised it takes the tier back down too, but never below
//! the floor the customer held when the period began.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use super::compile::{CompiledRules, CompiledTiers};
use super::definition::ReviewPeriod;
use crate::account::{AccountState, MonthSpend};

/// The tier of every customer in a program without a tier table.
pub const BASE_TIER: &str = "base";

/// A month's position: year * 12 + month index.
pub fn month_index(day: NaiveDate) -> i32 {
    day.year() * 12 + i32::try_from(day.month0()).unwrap_or(0)
}

fn local_day(at: DateTime<Utc>, tz: Tz) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// Spend counted toward tiers at `now` (zero in a program without tiers).
pub fn tier_spend(rules: &CompiledRules, account: &AccountState, now: DateTime<Utc>, tz: Tz) -> Decimal {
    rules.tiers.as_ref().map_or(Decimal::ZERO, |tiers| window_spend(tiers, account, now, tz))
}

/// Spend inside the window that ends with the month of `now`.
fn window_spend(tiers: &CompiledTiers, account: &AccountState, now: DateTime<Utc>, tz: Tz) -> Decimal {
    let current = month_index(local_day(now, tz));
    let first = current - i32::try_from(tiers.window_months).unwrap_or(12) + 1;
    account.tier_progress.months.iter().filter(|month| month.month >= first && month.month <= current).map(|month| month.amount).sum()
}

fn qualified(tiers: &CompiledTiers, spend: Decimal) -> usize {
    tiers.levels.iter().rposition(|level| level.min_spend <= spend).unwrap_or(0)
}

fn level_of(tiers: &CompiledTiers, id: Option<&str>) -> usize {
    id.and_then(|id| tiers.levels.iter().position(|level| level.id == id)).unwrap_or(0)
}

fn effective_level(tiers: &CompiledTiers, account: &AccountState, now: DateTime<Utc>, tz: Tz) -> usize {
    let reached = qualified(tiers, window_spend(tiers, account, now, tz));
    match account.tier_progress.review_due {
        Some(due) if now < due => reached.max(level_of(tiers, account.tier_progress.floor.as_deref())),
        _ => reached,
    }
}

/// The customer's tier at `now`.
pub fn effective_tier<'r>(rules: &'r CompiledRules, account: &AccountState, now: DateTime<Utc>, tz: Tz) -> &'r str {
    match &rules.tiers {
        None => BASE_TIER,
        Some(tiers) => tiers.levels[effective_level(tiers, account, now, tz)].id.as_str(),
    }
}

/// The start of the review period after the one containing `day`.
fn next_review(review: ReviewPeriod, day: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    let first_of_month = day.with_day(1)?;
    let next = match review {
        ReviewPeriod::Month => first_of_month.checked_add_months(Months::new(1))?,
        ReviewPeriod::Quarter => {
            let quarter_start = first_of_month.with_month0(day.month0() / 3 * 3)?;
            quarter_start.checked_add_months(Months::new(3))?
        }
        ReviewPeriod::Year => NaiveDate::from_ymd_opt(day.year() + 1, 1, 1)?,
    };
    tz.from_local_datetime(&next.and_time(NaiveTime::MIN)).earliest().map(|at| at.with_timezone(&Utc))
}

/// A tier change, for the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierChange {
    pub from: String,
    pub to: String,
}

/// Adds `amount` (negative for a refund) to the spend of `month` and brings the tier up to date:
/// a review that fell due fixes a new floor, months that left the window are dropped, and
/// `account.tier` is set to the effective tier. Returns the change, if the tier moved.
pub fn record_spend(
    rules: &CompiledRules,
    account: &mut AccountState,
    month: Option<i32>,
    amount: Decimal,
    now: DateTime<Utc>,
    tz: Tz,
) -> Option<TierChange> {
    let Some(tiers) = &rules.tiers else {
        account.tier = BASE_TIER.to_owned();
        return None;
    };
    // The tier as it stood (computed, not as last stored: a review may have fallen due since).
    let before = tiers.levels[effective_level(tiers, account, now, tz)].id.clone();
    let today = local_day(now, tz);
    // A review that fell due fixes the floor from the spend before this change: the receipt that
    // triggers the review must not become part of the floor, or refunding it could not undo it.
    let first = month_index(today) - i32::try_from(tiers.window_months).unwrap_or(12) + 1;
    account.tier_progress.months.retain(|entry| entry.month >= first && !entry.amount.is_zero());
    if account.tier_progress.review_due.is_none_or(|due| now >= due) {
        let reached = qualified(tiers, window_spend(tiers, account, now, tz));
        account.tier_progress.floor = Some(tiers.levels[reached].id.clone());
        account.tier_progress.review_due = next_review(tiers.review, today, tz);
    }
    let progress = &mut account.tier_progress;
    if let Some(month) = month {
        match progress.months.iter_mut().find(|entry| entry.month == month) {
            Some(entry) => entry.amount = (entry.amount + amount).max(Decimal::ZERO),
            None if amount > Decimal::ZERO => {
                progress.months.push(MonthSpend { month, amount });
                progress.months.sort_by_key(|entry| entry.month);
            }
            None => {}
        }
    }
    progress.months.retain(|entry| !entry.amount.is_zero());
    account.tier = tiers.levels[effective_level(tiers, account, now, tz)].id.clone();
    (account.tier != before).then(|| TierChange { from: before, to: account.tier.clone() })
}

/// Grants the tier `tier_id` until the next review, as if a review had just fixed it as the floor
/// (a customer's tier brought from another platform). `false` if the program has no such tier.
pub fn grant_until_review(rules: &CompiledRules, account: &mut AccountState, tier_id: &str, now: DateTime<Utc>, tz: Tz) -> bool {
    let Some(tiers) = &rules.tiers else {
        return tier_id == BASE_TIER;
    };
    if !tiers.levels.iter().any(|level| level.id == tier_id) {
        return false;
    }
    account.tier_progress.floor = Some(tier_id.to_owned());
    account.tier_progress.review_due = next_review(tiers.review, local_day(now, tz), tz);
    account.tier = tiers.levels[effective_level(tiers, account, now, tz)].id.clone();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::compile::compile;
    use crate::rules::definition::{RuleSet, TierLevel, TierTable};

    fn rules(review: ReviewPeriod) -> CompiledRules {
        let level = |id: &str, min: i64| TierLevel {
            id: id.into(),
            min_spend: Decimal::from(min),
            cashback_percent: Some(Decimal::from(5)),
            spend_cap_percent: None,
        };
        let set = RuleSet {
            tiers: Some(TierTable { window_months: 12, review, levels: vec![level("t1", 0), level("t2", 1000), level("t3", 5000)] }),
            ..RuleSet::default()
        };
        compile(&set, 1, 0).expect("valid tiers")
    }

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 6, 0, 0).single().expect("valid time")
    }

    #[test]
    fn upgrade_at_once_downgrade_at_review_and_refunds_take_back_the_upgrade() {
        let rules = rules(ReviewPeriod::Quarter);
        let tz = chrono_tz::Asia::Almaty;
        let mut account = AccountState::new("a".into(), true, at(2026, 1, 5));
        let jan = month_index(local_day(at(2026, 1, 5), tz));
        assert_eq!(record_spend(&rules, &mut account, Some(jan), Decimal::from(999), at(2026, 1, 5), tz), None, "t1 from the start");
        assert_eq!(account.tier, "t1");
        let change = record_spend(&rules, &mut account, Some(jan), Decimal::from(1), at(2026, 1, 6), tz);
        assert_eq!(change, Some(TierChange { from: "t1".into(), to: "t2".into() }));
        // A refund of that receipt in the same quarter takes the upgrade back.
        record_spend(&rules, &mut account, Some(jan), Decimal::from(-1), at(2026, 1, 7), tz);
        assert_eq!(account.tier, "t1");
        record_spend(&rules, &mut account, Some(jan), Decimal::from(1), at(2026, 1, 8), tz);
        assert_eq!(account.tier, "t2");
        // At the next review the spend still counts (12-month window): t2 is the new floor.
        record_spend(&rules, &mut account, None, Decimal::ZERO, at(2026, 4, 2), tz);
        assert_eq!(account.tier_progress.floor.as_deref(), Some("t2"));
        // The refund after the review lowers qualification but the floor holds until the next review.
        record_spend(&rules, &mut account, Some(jan), Decimal::from(-500), at(2026, 4, 3), tz);
        assert_eq!(account.tier, "t2");
        assert_eq!(effective_tier(&rules, &account, at(2026, 6, 30), tz), "t2");
        assert_eq!(effective_tier(&rules, &account, at(2026, 7, 1), tz), "t1");
    }

    #[test]
    fn spend_leaves_the_window_after_twelve_months() {
        let rules = rules(ReviewPeriod::Month);
        let tz = chrono_tz::Asia::Almaty;
        let mut account = AccountState::new("a".into(), true, at(2026, 1, 5));
        let jan = month_index(local_day(at(2026, 1, 5), tz));
        record_spend(&rules, &mut account, Some(jan), Decimal::from(6000), at(2026, 1, 5), tz);
        assert_eq!(account.tier, "t3");
        assert_eq!(effective_tier(&rules, &account, at(2026, 12, 31), tz), "t3");
        assert_eq!(effective_tier(&rules, &account, at(2027, 2, 1), tz), "t1");
    }

    /// An imported tier holds until the next review, then the spend decides as for anyone.
    #[test]
    fn a_granted_tier_holds_until_the_next_review() {
        let rules = rules(ReviewPeriod::Quarter);
        let now = at(2026, 2, 10);
        let mut account = AccountState::new("a".into(), true, now);
        assert!(!grant_until_review(&rules, &mut account, "gold", now, Tz::UTC));
        assert!(grant_until_review(&rules, &mut account, "t3", now, Tz::UTC));
        assert_eq!(account.tier, "t3");
        assert_eq!(effective_tier(&rules, &account, at(2026, 3, 31), Tz::UTC), "t3");
        assert_eq!(effective_tier(&rules, &account, at(2026, 4, 2), Tz::UTC), "t1");
    }
}
