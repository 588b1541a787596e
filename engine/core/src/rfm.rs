//! RFM: how recently, how often and for how much each customer buys, each scored 1 to 5 by the
//! program's thresholds, and the named segment the recency and frequency scores put them in
//! ("champions", "at_risk", ...): what a CRM manager targets personal offers by
//! (`docs/reports.md`, "RFM segments").
//!
//! The measures come from the account alone, at any instant, with no ledger scan: recency from
//! `last_purchase_at`, frequency and monetary value from [`RfmMonth`] counters that each purchase,
//! refund and cancellation keeps up to date in the account's own commit, one per local month of
//! sale, at most [`RFM_MONTHS_KEPT`] of them. A score is then a pure function of the account, the
//! thresholds (versioned with the rules) and the instant: Authorize, DryRun and Accrue of one
//! receipt see the same segment, and a replay sees what the first call saw.
//!
//! Thresholds rather than quintiles: a quintile is a rank among every customer of the program, so a
//! customer's score would move when other customers buy, and could only be known from a scan of
//! the whole program. A rule paying "10% for at_risk" at the till must decide from the customer's
//! own account, the same way on every engine and on a replay; thresholds set by the CRM manager do
//! that, and the counts per score that the sweep publishes show how to set them (near quintiles,
//! if that is what the manager wants).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::account::{AccountState, RfmMonth};

/// Months of purchases an account keeps for its RFM scores, counting back from the newest month it
/// recorded: the longest window a program may set.
pub const RFM_MONTHS_KEPT: u32 = 12;
/// The highest score; every measure scores 1 to this.
pub const SCORE_MAX: u8 = 5;
/// Thresholds per measure: those of scores 2, 3, 4 and 5.
pub const THRESHOLDS: usize = SCORE_MAX as usize - 1;
/// The longest recency threshold, in days (ten years).
pub const RECENCY_DAYS_MAX: u32 = 3650;

/// A program's RFM thresholds: `[rfm]` in its rules document, versioned with the rules. Each list
/// gives the thresholds of scores 2, 3, 4 and 5; below the first, a measure scores 1.
///
/// The defaults suit a supermarket chain in tenge (a weekly shop of about 5,000): set `monetary`
/// in the program's own currency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RfmThresholds {
    /// Frequency and monetary value count the purchases of this many calendar months, the current
    /// one included (1 to [`RFM_MONTHS_KEPT`]).
    #[serde(default = "default_window_months")]
    pub window_months: u32,
    /// Days since the last purchase (local calendar days) at most which score 2, 3, 4 and 5:
    /// strictly falling. Default: 90, 30, 14, 7.
    #[serde(default = "default_recency_days")]
    pub recency_days: Vec<u32>,
    /// Purchases in the window at least which score 2, 3, 4 and 5: strictly rising, from 1.
    /// Default: 2, 6, 12, 24 (twice a month scores 5; once a month 4).
    #[serde(default = "default_frequency")]
    pub frequency: Vec<u32>,
    /// Money paid in the window (net of refunds) at least which scores 2, 3, 4 and 5: strictly
    /// rising, above 0. Default: 20,000, 60,000, 150,000, 400,000.
    #[serde(default = "default_monetary")]
    pub monetary: Vec<Decimal>,
}

fn default_window_months() -> u32 {
    RFM_MONTHS_KEPT
}

fn default_recency_days() -> Vec<u32> {
    vec![90, 30, 14, 7]
}

fn default_frequency() -> Vec<u32> {
    vec![2, 6, 12, 24]
}

fn default_monetary() -> Vec<Decimal> {
    [20_000, 60_000, 150_000, 400_000].into_iter().map(Decimal::from).collect()
}

impl Default for RfmThresholds {
    fn default() -> Self {
        RfmThresholds {
            window_months: default_window_months(),
            recency_days: default_recency_days(),
            frequency: default_frequency(),
            monetary: default_monetary(),
        }
    }
}

impl RfmThresholds {
    /// What is wrong with the thresholds, each as (field, reason); empty when they are usable.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !(1..=RFM_MONTHS_KEPT).contains(&self.window_months) {
            problems.push(("window_months", format!("1 to {RFM_MONTHS_KEPT}, not {}", self.window_months)));
        }
        let count = |field: &'static str, len: usize, problems: &mut Vec<(&'static str, String)>| {
            if len != THRESHOLDS {
                problems.push((field, format!("{THRESHOLDS} thresholds (of scores 2 to {SCORE_MAX}), not {len}")));
            }
        };
        count("recency_days", self.recency_days.len(), &mut problems);
        count("frequency", self.frequency.len(), &mut problems);
        count("monetary", self.monetary.len(), &mut problems);
        if self.recency_days.windows(2).any(|pair| pair[0] <= pair[1]) {
            problems.push(("recency_days", "strictly falling: fewer days for a higher score".to_owned()));
        }
        if self.recency_days.iter().any(|days| *days > RECENCY_DAYS_MAX) {
            problems.push(("recency_days", format!("at most {RECENCY_DAYS_MAX} days")));
        }
        if self.frequency.windows(2).any(|pair| pair[0] >= pair[1]) || self.frequency.first().is_some_and(|first| *first == 0) {
            problems.push(("frequency", "strictly rising from at least 1 purchase".to_owned()));
        }
        if self.monetary.windows(2).any(|pair| pair[0] >= pair[1]) || self.monetary.first().is_some_and(|first| *first <= Decimal::ZERO) {
            problems.push(("monetary", "strictly rising from above 0".to_owned()));
        }
        problems
    }
}

/// The named segments, from the recency and frequency scores (the standard RFM segment map; the
/// monetary score is reported beside them, and is not part of the name). Ordered from the best
/// customers to the lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// Bought very recently (R 5) and often (F 4-5).
    Champions,
    /// Recent enough (R 3-4) and often (F 4-5).
    Loyal,
    /// Recent (R 4-5), a few purchases (F 2-3).
    PotentialLoyalists,
    /// Bought very recently (R 5), once or so (F 1).
    New,
    /// Recent (R 4), once or so (F 1).
    Promising,
    /// Middling on both (R 3, F 3).
    NeedAttention,
    /// Middling recency (R 3), few purchases (F 1-2).
    AboutToSleep,
    /// Used to buy fairly often (F 3-4), not lately (R 1-2).
    AtRisk,
    /// Used to buy most often (F 5), not lately (R 1-2).
    CannotLose,
    /// Few purchases (F 1-2), long ago (R 1-2), not both the lowest.
    Hibernating,
    /// The lowest on both (R 1, F 1).
    Lost,
}

impl Segment {
    /// Every segment, in the map's order.
    pub const ALL: [Segment; 11] = [
        Segment::Champions,
        Segment::Loyal,
        Segment::PotentialLoyalists,
        Segment::New,
        Segment::Promising,
        Segment::NeedAttention,
        Segment::AboutToSleep,
        Segment::AtRisk,
        Segment::CannotLose,
        Segment::Hibernating,
        Segment::Lost,
    ];

    /// The segment of a recency and a frequency score (each 1 to 5; outside, the nearest).
    pub fn of(recency: u8, frequency: u8) -> Segment {
        match (recency.clamp(1, SCORE_MAX), frequency.clamp(1, SCORE_MAX)) {
            (5, 1) => Segment::New,
            (4, 1) => Segment::Promising,
            (4..=5, 2..=3) => Segment::PotentialLoyalists,
            (5, _) => Segment::Champions,
            (4, _) => Segment::Loyal,
            (3, 1..=2) => Segment::AboutToSleep,
            (3, 3) => Segment::NeedAttention,
            (3, _) => Segment::Loyal,
            (1, 1) => Segment::Lost,
            (1..=2, 1..=2) => Segment::Hibernating,
            (1..=2, 3..=4) => Segment::AtRisk,
            _ => Segment::CannotLose,
        }
    }

    /// The name rules and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Segment::Champions => "champions",
            Segment::Loyal => "loyal",
            Segment::PotentialLoyalists => "potential_loyalists",
            Segment::New => "new",
            Segment::Promising => "promising",
            Segment::NeedAttention => "need_attention",
            Segment::AboutToSleep => "about_to_sleep",
            Segment::AtRisk => "at_risk",
            Segment::CannotLose => "cannot_lose",
            Segment::Hibernating => "hibernating",
            Segment::Lost => "lost",
        }
    }

    /// The segment named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Segment> {
        Segment::ALL.into_iter().find(|segment| segment.name() == name)
    }

    /// Every name, for error messages.
    pub fn names() -> String {
        Segment::ALL.map(Segment::name).join(", ")
    }
}

/// A customer's measures at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RfmMeasures {
    /// Local calendar days from the last purchase to the instant (0: the same day).
    pub recency_days: u32,
    /// Purchases in the window (cancelled receipts not counted).
    pub frequency: u32,
    /// Money paid in the window, net of refunds.
    pub monetary: Decimal,
}

/// A customer's scores and segment at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RfmScore {
    pub measures: RfmMeasures,
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
    pub segment: Segment,
}

/// A month's position: year * 12 + month index (0 = January); the same numbering as
/// `rules::tiers::month_index`, which receipts record their sale's month in.
pub fn month_index(day: NaiveDate) -> i32 {
    day.year() * 12 + i32::try_from(day.month0()).unwrap_or(0)
}

/// The customer's measures at `now` (in the program's time zone `zone`) over the last
/// `window_months` months; `None` for a customer who never bought.
pub fn measures(account: &AccountState, window_months: u32, now: DateTime<Utc>, zone: Tz) -> Option<RfmMeasures> {
    let last = account.last_purchase_at?;
    let today = now.with_timezone(&zone).date_naive();
    let days = (today - last.with_timezone(&zone).date_naive()).num_days().max(0);
    let current = month_index(today);
    let first = current - i32::try_from(window_months.clamp(1, RFM_MONTHS_KEPT)).unwrap_or(12) + 1;
    let (frequency, monetary) = account
        .rfm_months
        .iter()
        .filter(|month| month.month >= first && month.month <= current)
        .fold((0u32, Decimal::ZERO), |(count, paid), month| (count.saturating_add(month.purchases), paid + month.paid));
    Some(RfmMeasures { recency_days: u32::try_from(days).unwrap_or(u32::MAX), frequency, monetary })
}

/// 1 plus the number of thresholds `passed` says the value reached, at most [`SCORE_MAX`].
fn score_by<T>(thresholds: &[T], passed: impl Fn(&T) -> bool) -> u8 {
    let reached = thresholds.iter().filter(|threshold| passed(threshold)).count();
    u8::try_from(reached + 1).unwrap_or(SCORE_MAX).min(SCORE_MAX)
}

/// The scores of `measures` under `thresholds`.
pub fn score_measures(thresholds: &RfmThresholds, measures: RfmMeasures) -> RfmScore {
    let recency = score_by(&thresholds.recency_days, |days| measures.recency_days <= *days);
    let frequency = score_by(&thresholds.frequency, |count| measures.frequency >= *count);
    let monetary = score_by(&thresholds.monetary, |amount| measures.monetary >= *amount);
    RfmScore { measures, recency, frequency, monetary, segment: Segment::of(recency, frequency) }
}

/// The customer's scores and segment at `now`; `None` for a customer who never bought (in no
/// segment).
pub fn score(account: &AccountState, thresholds: &RfmThresholds, now: DateTime<Utc>, zone: Tz) -> Option<RfmScore> {
    measures(account, thresholds.window_months, now, zone).map(|measures| score_measures(thresholds, measures))
}

/// Drops the months older than [`RFM_MONTHS_KEPT`] before the newest one.
fn keep_recent(months: &mut Vec<RfmMonth>) {
    months.sort_by_key(|month| month.month);
    if let Some(newest) = months.last().map(|month| month.month) {
        let first = newest - i32::try_from(RFM_MONTHS_KEPT).unwrap_or(12) + 1;
        months.retain(|month| month.month >= first);
    }
}

/// Records a purchase in `month` (of its sale, local) that paid `paid` in money.
pub fn record_purchase(account: &mut AccountState, month: i32, paid: Decimal) {
    match account.rfm_months.iter_mut().find(|kept| kept.month == month) {
        Some(kept) => {
            kept.purchases = kept.purchases.saturating_add(1);
            kept.paid += paid;
        }
        None => account.rfm_months.push(RfmMonth { month, purchases: 1, paid }),
    }
    keep_recent(&mut account.rfm_months);
}

/// Takes back what a refund (`cancelled` false) or a reversal (`cancelled` true: the purchase did
/// not happen) of a receipt sold in `month` returned: `paid_back` in money, net of the points given
/// back. A month no longer kept changes nothing (and the callers skip receipts accrued before the
/// months were kept: `Accrual::rfm_counted`). The sums stay exact, so that a receipt's refunds and reversal take off exactly what it
/// added: the points a refund gives back are rounded to the points' scale, so a fully refunded
/// receipt may have taken off a cent more than it paid, which its month shows until the reversal.
pub fn record_return(account: &mut AccountState, month: Option<i32>, paid_back: Decimal, cancelled: bool) {
    let Some(month) = month else { return };
    let Some(position) = account.rfm_months.iter().position(|kept| kept.month == month) else { return };
    let kept = &mut account.rfm_months[position];
    kept.paid -= paid_back;
    if cancelled {
        kept.purchases = kept.purchases.saturating_sub(1);
    }
    if kept.purchases == 0 && kept.paid.is_zero() {
        account.rfm_months.remove(position);
    }
}

/// Adds the months of a merged account to the customer's.
pub fn merge_months(account: &mut AccountState, months: &[RfmMonth]) {
    for month in months {
        match account.rfm_months.iter_mut().find(|kept| kept.month == month.month) {
            Some(kept) => {
                kept.purchases = kept.purchases.saturating_add(month.purchases);
                kept.paid += month.paid;
            }
            None => account.rfm_months.push(month.clone()),
        }
    }
    keep_recent(&mut account.rfm_months);
}

/// How many customers of a program are in each segment and at each score: what the sweep counts
/// and the admin API lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentCounts {
    /// Customers counted: every account but the internal and merged ones.
    pub customers: u64,
    /// Of those, customers who never bought (in no segment, at no score).
    pub without_purchases: u64,
    /// Customers by segment (segments with none left out).
    pub segments: BTreeMap<Segment, u64>,
    /// Customers by recency, frequency and monetary score: index 0 is score 1.
    pub recency: [u64; SCORE_MAX as usize],
    pub frequency: [u64; SCORE_MAX as usize],
    pub monetary: [u64; SCORE_MAX as usize],
}

impl SegmentCounts {
    /// Counts one customer with their score (`None`: never bought).
    pub fn count(&mut self, score: Option<&RfmScore>) {
        self.customers += 1;
        let Some(score) = score else {
            self.without_purchases += 1;
            return;
        };
        *self.segments.entry(score.segment).or_default() += 1;
        for (by_score, value) in
            [(&mut self.recency, score.recency), (&mut self.frequency, score.frequency), (&mut self.monetary, score.monetary)]
        {
            by_score[usize::from(value.clamp(1, SCORE_MAX) - 1)] += 1;
        }
    }

    /// Customers in `segment`.
    pub fn in_segment(&self, segment: Segment) -> u64 {
        self.segments.get(&segment).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const ALMATY: Tz = chrono_tz::Asia::Almaty;

    fn at(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(year, month, day, hour, minute, 0).single().expect("valid instant")
    }

    fn month(year: i32, month: u32) -> i32 {
        month_index(NaiveDate::from_ymd_opt(year, month, 1).expect("valid month"))
    }

    fn account() -> AccountState {
        AccountState::new("a".into(), true, at(2025, 1, 1, 0, 0))
    }

    /// A purchase as the accrual records it: the counters and the last purchase.
    fn buy(account: &mut AccountState, sold_at: DateTime<Utc>, paid: i64) {
        record_purchase(account, month_index(sold_at.with_timezone(&ALMATY).date_naive()), Decimal::from(paid));
        account.purchases += 1;
        account.last_purchase_at = account.last_purchase_at.max(Some(sold_at));
    }

    fn measured(recency_days: u32, frequency: u32, monetary: i64) -> RfmScore {
        score_measures(&RfmThresholds::default(), RfmMeasures { recency_days, frequency, monetary: Decimal::from(monetary) })
    }

    #[test]
    fn scores_change_exactly_at_the_thresholds() {
        let recency = |days| measured(days, 1, 0).recency;
        assert_eq!([0, 7, 8, 14, 15, 30, 31, 90, 91, 5000].map(recency), [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]);
        let frequency = |count| measured(0, count, 0).frequency;
        assert_eq!([0, 1, 2, 5, 6, 11, 12, 23, 24, 300].map(frequency), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        let monetary = |paid| measured(0, 1, paid).monetary;
        assert_eq!([0, 19_999, 20_000, 59_999, 60_000, 149_999, 150_000, 399_999, 400_000].map(monetary), [1, 1, 2, 2, 3, 3, 4, 4, 5]);
        let cents = score_measures(
            &RfmThresholds::default(),
            RfmMeasures { recency_days: 0, frequency: 1, monetary: "19999.99".parse().expect("decimal") },
        );
        assert_eq!(cents.monetary, 1, "a cent below the threshold is below it");
    }

    #[test]
    fn every_pair_of_scores_has_one_segment_of_the_standard_map() {
        let map: Vec<Vec<&str>> = (1..=5).rev().map(|r| (1..=5).map(|f| Segment::of(r, f).name()).collect()).collect();
        assert_eq!(
            map,
            [
                ["new", "potential_loyalists", "potential_loyalists", "champions", "champions"],
                ["promising", "potential_loyalists", "potential_loyalists", "loyal", "loyal"],
                ["about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"],
                ["hibernating", "hibernating", "at_risk", "at_risk", "cannot_lose"],
                ["lost", "hibernating", "at_risk", "at_risk", "cannot_lose"],
            ]
        );
        for segment in Segment::ALL {
            assert_eq!(Segment::from_name(segment.name()), Some(segment));
            assert!((1..=5).any(|r| (1..=5).any(|f| Segment::of(r, f) == segment)), "{segment:?} is on the map");
        }
        assert_eq!(Segment::from_name("at-risk"), None);
    }

    #[test]
    fn the_window_rolls_over_months_and_the_account_keeps_twelve() {
        let mut customer = account();
        buy(&mut customer, at(2026, 1, 10, 6, 0), 1000);
        buy(&mut customer, at(2026, 1, 20, 6, 0), 500);
        buy(&mut customer, at(2026, 6, 5, 6, 0), 2000);
        let thresholds = RfmThresholds::default();
        // At the end of December 2026 the window is January to December: all three count.
        let december = measures(&customer, 12, at(2026, 12, 31, 12, 0), ALMATY).expect("bought");
        assert_eq!((december.frequency, december.monetary), (3, Decimal::from(3500)));
        // From January 2027 January 2026 has left the window.
        let january = measures(&customer, 12, at(2027, 1, 1, 12, 0), ALMATY).expect("bought");
        assert_eq!((january.frequency, january.monetary), (1, Decimal::from(2000)));
        // A three-month window at the start of August holds June to August.
        let short = RfmThresholds { window_months: 3, ..thresholds.clone() };
        let august = score(&customer, &short, at(2026, 8, 1, 12, 0), ALMATY).expect("bought");
        assert_eq!((august.measures.frequency, august.measures.recency_days), (1, 57));
        // A purchase twelve months after the oldest drops it from the account; a late receipt for
        // a month older than the account keeps is not kept either.
        buy(&mut customer, at(2027, 1, 15, 6, 0), 700);
        assert_eq!(customer.rfm_months.iter().map(|kept| kept.month).collect::<Vec<_>>(), [month(2026, 6), month(2027, 1)]);
        record_purchase(&mut customer, month(2025, 12), Decimal::from(10));
        assert_eq!(customer.rfm_months.len(), 2);
    }

    #[test]
    fn months_and_days_are_the_programs_local_ones() {
        let mut customer = account();
        // 20:00 UTC on 31 January is 01:00 on 1 February in Almaty (UTC+5): a February purchase.
        buy(&mut customer, at(2026, 1, 31, 20, 0), 1000);
        assert_eq!(customer.rfm_months[0].month, month(2026, 2));
        let february_window = measures(&customer, 1, at(2026, 2, 28, 12, 0), ALMATY).expect("bought");
        assert_eq!(february_window.frequency, 1);
        let january_window = measures(&customer, 1, at(2026, 1, 31, 18, 0), ALMATY).expect("bought");
        assert_eq!(january_window.frequency, 0, "still January in Almaty: the purchase is next month's");
        // Recency counts local calendar days: 23:30 one day to 00:30 the next is a day.
        let mut late = account();
        buy(&mut late, at(2026, 3, 9, 18, 30), 100);
        assert_eq!(measures(&late, 12, at(2026, 3, 9, 18, 59), ALMATY).expect("bought").recency_days, 0);
        assert_eq!(measures(&late, 12, at(2026, 3, 9, 19, 30), ALMATY).expect("bought").recency_days, 1);
        // The same instants in UTC are one day.
        assert_eq!(measures(&late, 12, at(2026, 3, 9, 19, 30), chrono_tz::UTC).expect("bought").recency_days, 0);
    }

    #[test]
    fn a_customer_moves_between_segments_as_time_passes() {
        let mut customer = account();
        for week in 0..8 {
            buy(&mut customer, at(2026, 1, 5, 6, 0) + chrono::Duration::weeks(week), 3000);
        }
        let thresholds = RfmThresholds::default();
        let segment_at = |now| score(&customer, &thresholds, now, ALMATY).expect("bought").segment;
        // Eight purchases (F 3), the last on 23 February.
        assert_eq!(segment_at(at(2026, 2, 24, 6, 0)), Segment::PotentialLoyalists);
        assert_eq!(segment_at(at(2026, 3, 20, 6, 0)), Segment::NeedAttention, "25 days: R 3");
        assert_eq!(segment_at(at(2026, 5, 1, 6, 0)), Segment::AtRisk, "67 days: R 2");
        assert_eq!(segment_at(at(2027, 1, 10, 6, 0)), Segment::Hibernating, "R 1, the four February purchases still in the window: F 2");
        assert_eq!(segment_at(at(2027, 3, 10, 6, 0)), Segment::Lost, "R 1, and every purchase has left the window");
        assert_eq!(score(&account(), &thresholds, at(2026, 5, 1, 6, 0), ALMATY), None, "never bought: no segment");
    }

    #[test]
    fn refunds_take_money_back_and_a_cancellation_the_purchase() {
        let mut customer = account();
        buy(&mut customer, at(2026, 3, 10, 6, 0), 1000);
        buy(&mut customer, at(2026, 3, 11, 6, 0), 400);
        let march = Some(month(2026, 3));
        record_return(&mut customer, march, Decimal::from(300), false);
        assert_eq!((customer.rfm_months[0].purchases, customer.rfm_months[0].paid), (2, Decimal::from(1100)));
        record_return(&mut customer, march, Decimal::from(400), true);
        assert_eq!((customer.rfm_months[0].purchases, customer.rfm_months[0].paid), (1, Decimal::from(700)));
        record_return(&mut customer, Some(month(2025, 3)), Decimal::from(700), true);
        record_return(&mut customer, None, Decimal::from(700), true);
        assert_eq!(customer.rfm_months.len(), 1, "months not kept change nothing");
        record_return(&mut customer, march, Decimal::from(700), true);
        assert!(customer.rfm_months.is_empty(), "an empty month is dropped");
    }

    #[test]
    fn thresholds_are_checked_field_by_field() {
        assert!(RfmThresholds::default().problems().is_empty());
        let bad = RfmThresholds {
            window_months: 13,
            recency_days: vec![7, 14, 30, 90],
            frequency: vec![0, 1, 2],
            monetary: vec![Decimal::ONE, Decimal::ONE, Decimal::TWO, Decimal::TEN],
        };
        let fields: Vec<&str> = bad.problems().into_iter().map(|(field, _)| field).collect();
        assert_eq!(fields, ["window_months", "frequency", "recency_days", "frequency", "monetary"]);
    }

    #[test]
    fn counts_add_up_by_segment_and_score() {
        let mut counts = SegmentCounts::default();
        counts.count(Some(&measured(3, 30, 500_000)));
        counts.count(Some(&measured(60, 8, 100)));
        counts.count(None);
        assert_eq!((counts.customers, counts.without_purchases), (3, 1));
        assert_eq!((counts.in_segment(Segment::Champions), counts.in_segment(Segment::AtRisk)), (1, 1));
        assert_eq!((counts.recency, counts.frequency, counts.monetary), ([0, 1, 0, 0, 1], [0, 0, 1, 0, 1], [1, 0, 0, 0, 1]));
        // Stored as JSON by the engine, segments by name.
        let json = serde_json::to_string(&counts).expect("encodes");
        assert!(json.contains(r#""at_risk":1"#), "{json}");
        assert_eq!(serde_json::from_str::<SegmentCounts>(&json).expect("decodes"), counts);
    }
}
