//! A program's figures, the numbers the business judges it by (`docs/reports.md`), kept as
//! commits happen: every commit that moves points or records a purchase carries a [`Delta`] (in
//! its outbox event of kind `figures`), and [`Figures::fold`] adds it to the program's running
//! totals by local day and store, and by month for the customers' activity. A report over any
//! period then sums days, never ledgers.
//!
//! Conventions, chosen so that every figure is a sum over the ledger and can be recomputed from
//! it: a commit counts on the program's local day it was committed (a late receipt from an
//! offline till on the day it arrived), at the store its call came from (the engine's own work,
//! such as expiry notices, under store ""); points are summed by ledger entry kind as posted; a
//! refund or reversal counts in the period of the return, against the points and money of that
//! period, and does not undo the purchase it returns (the purchase happened).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ledger::{EntryKind, LedgerEntry};

/// Points moved, summed by ledger entry kind, each signed as posted (spends, expiries and
/// claw-backs negative). (Every stored figure defaults, so that a document written before a
/// figure existed still reads.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Points {
    /// Earned on purchases, and referral rewards (paid as earnings).
    pub earned: Decimal,
    pub spent: Decimal,
    pub expired: Decimal,
    /// Spent points a refund or reversal gave back.
    pub returned: Decimal,
    /// Earned points a refund or reversal took back.
    pub clawed_back: Decimal,
    /// Welcome, event and schedule bonuses, change kept as points, card fees as points.
    pub bonus: Decimal,
    /// Manual adjustments by staff, either sign.
    pub adjusted: Decimal,
    /// Moved between accounts by merges (out and in: zero over the program).
    pub merged: Decimal,
    /// Balances brought from another platform by an import.
    pub opened: Decimal,
}

impl Points {
    /// Adds one ledger entry.
    pub fn post(&mut self, kind: EntryKind, amount: Decimal) {
        let sum = match kind {
            EntryKind::Earn => &mut self.earned,
            EntryKind::Spend => &mut self.spent,
            EntryKind::Expire => &mut self.expired,
            EntryKind::ReturnSpent => &mut self.returned,
            EntryKind::Clawback => &mut self.clawed_back,
            EntryKind::Bonus => &mut self.bonus,
            EntryKind::Adjustment => &mut self.adjusted,
            EntryKind::Merge => &mut self.merged,
            EntryKind::Opening => &mut self.opened,
        };
        *sum += amount;
    }

    fn add(&mut self, other: &Points) {
        for (mine, theirs) in [
            (&mut self.earned, other.earned),
            (&mut self.spent, other.spent),
            (&mut self.expired, other.expired),
            (&mut self.returned, other.returned),
            (&mut self.clawed_back, other.clawed_back),
            (&mut self.bonus, other.bonus),
            (&mut self.adjusted, other.adjusted),
            (&mut self.merged, other.merged),
            (&mut self.opened, other.opened),
        ] {
            *mine += theirs;
        }
    }

    /// Every kind together: what the ledgers grew by.
    pub fn net(&self) -> Decimal {
        self.earned + self.spent + self.expired + self.returned + self.clawed_back + self.bonus + self.adjusted + self.merged + self.opened
    }

    fn is_zero(&self) -> bool {
        *self == Points::default()
    }
}

/// A purchase a commit recorded (an accrued receipt of an identified customer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sale {
    /// What the customer paid in money (the receipt's total less the points spent on it).
    pub paid: Decimal,
    /// The customer's purchases in this local month, this one included: 1 makes them active in
    /// the month, 2 a repeat buyer (0: not counted, a purchase dated before the customer's latest
    /// month by a clock behind).
    pub month_purchases: u32,
    /// Seconds since the customer's previous purchase, if there was one.
    pub since_previous: Option<i64>,
}

/// What one commit adds to its program's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The program's local date of the commit.
    pub day: NaiveDate,
    pub store_id: String,
    pub points: Points,
    pub sale: Option<Sale>,
    /// The commit registered the customer (an enrolment).
    pub enrolled: bool,
}

impl Delta {
    /// The delta of a commit at `now` (local date `day`) from `store_id` that posted `entries`.
    pub fn of(day: NaiveDate, store_id: &str, entries: &[LedgerEntry], sale: Option<Sale>, enrolled: bool) -> Option<Delta> {
        let mut points = Points::default();
        for entry in entries {
            points.post(entry.kind, entry.amount);
        }
        (!points.is_zero() || sale.is_some() || enrolled).then(|| Delta { day, store_id: store_id.to_owned(), points, sale, enrolled })
    }
}

/// One day at one store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Day {
    pub points: Points,
    pub purchases: u64,
    pub paid: Decimal,
    /// Purchases that had a previous one, and the seconds between them in total.
    pub gaps: u64,
    pub gap_seconds: i64,
    pub enrolled: u64,
}

/// One month at one store: customers whose first purchase of the month was here, those whose
/// second was, and the purchases made here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Month {
    pub active: u64,
    pub repeat: u64,
    pub purchases: u64,
}

/// A program's running figures (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Figures {
    /// By local day, then store.
    pub days: BTreeMap<NaiveDate, BTreeMap<String, Day>>,
    /// By month (`YYYY-MM`), then store.
    pub months: BTreeMap<String, BTreeMap<String, Month>>,
}

/// The month key of a date.
pub fn month_of(day: NaiveDate) -> String {
    format!("{:04}-{:02}", day.year(), day.month())
}

/// A report over days `from..=to`, for one store or all.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// `None`: every store.
    pub store_id: Option<String>,
    pub points: Points,
    /// Points outstanding at the end of `to`: every ledger's growth from the start (all stores:
    /// a balance belongs to the customer, not to a store).
    pub outstanding: Decimal,
    pub purchases: u64,
    pub paid: Decimal,
    pub enrolled: u64,
    /// Customers active (at least one purchase) and repeat (at least two) in each month the
    /// period touches, summed over those months (for one store: those whose first, and second,
    /// purchase of the month was there).
    pub active_customers: u64,
    pub repeat_customers: u64,
    /// Points spent net of what returns gave back / points given net of what returns took back
    /// (earned, bonuses, and balances opened by an import, which are spent and expire too).
    pub redemption_rate: Option<Decimal>,
    /// Points expired / points given (net, as above).
    pub breakage_rate: Option<Decimal>,
    /// Points spent, net (one point is worth one unit of money) / money paid.
    pub effective_discount: Option<Decimal>,
    /// Money paid / purchases: the average receipt of identified buyers.
    pub average_receipt: Option<Decimal>,
    /// Repeat customers / active customers, over the months the period touches (every store only:
    /// a customer's second purchase may be at another store than their first).
    pub repeat_rate: Option<Decimal>,
    /// Purchases / active customers, over the months the period touches (every store only).
    pub purchases_per_customer: Option<Decimal>,
    /// Days between one purchase of a customer and their next, on average.
    pub days_between_purchases: Option<Decimal>,
}

fn ratio(numerator: Decimal, denominator: Decimal) -> Option<Decimal> {
    (!denominator.is_zero()).then(|| (numerator / denominator).round_dp(4))
}

impl Figures {
    /// Adds one commit's delta.
    pub fn fold(&mut self, delta: &Delta) {
        let day = self.days.entry(delta.day).or_default().entry(delta.store_id.clone()).or_default();
        day.points.add(&delta.points);
        day.enrolled += u64::from(delta.enrolled);
        if let Some(sale) = &delta.sale {
            day.purchases += 1;
            day.paid += sale.paid;
            if let Some(seconds) = sale.since_previous {
                day.gaps += 1;
                day.gap_seconds += seconds;
            }
            let month = self.months.entry(month_of(delta.day)).or_default().entry(delta.store_id.clone()).or_default();
            month.active += u64::from(sale.month_purchases == 1);
            month.repeat += u64::from(sale.month_purchases == 2);
            month.purchases += 1;
        }
    }

    /// The report over days `from..=to` (for `store`, or every store).
    pub fn report(&self, from: NaiveDate, to: NaiveDate, store: Option<&str>) -> Report {
        let mut report = Report { from, to, store_id: store.map(str::to_owned), ..Report::default() };
        let (mut gaps, mut gap_seconds) = (0u64, 0i64);
        for (day, stores) in self.days.range(..=to) {
            for (store_id, figures) in stores {
                report.outstanding += figures.points.net();
                if *day < from || store.is_some_and(|store| store != store_id) {
                    continue;
                }
                report.points.add(&figures.points);
                report.purchases += figures.purchases;
                report.paid += figures.paid;
                report.enrolled += figures.enrolled;
                gaps += figures.gaps;
                gap_seconds += figures.gap_seconds;
            }
        }
        let mut month_purchases = 0u64;
        for (_, stores) in self.months.range(month_of(from)..=month_of(to)) {
            for (store_id, month) in stores {
                if store.is_none_or(|store| store == store_id) {
                    report.active_customers += month.active;
                    report.repeat_customers += month.repeat;
                    month_purchases += month.purchases;
                }
            }
        }
        let sums = &report.points;
        let given = sums.earned + sums.clawed_back + sums.bonus + sums.opened;
        let spent = -(sums.spent + sums.returned);
        report.redemption_rate = ratio(spent, given);
        report.breakage_rate = ratio(-sums.expired, given);
        report.effective_discount = ratio(spent, report.paid);
        report.average_receipt = ratio(report.paid, Decimal::from(report.purchases)).map(|average| average.round_dp(2));
        if store.is_none() {
            let active = Decimal::from(report.active_customers);
            report.repeat_rate = ratio(Decimal::from(report.repeat_customers), active);
            report.purchases_per_customer = ratio(Decimal::from(month_purchases), active);
        }
        report.days_between_purchases = ratio(Decimal::from(gap_seconds), Decimal::from(gaps * 86_400));
        report
    }
}

/// The local month index (year × 12 + month) of an instant in `zone`, for counting a customer's
/// purchases in a month.
pub fn month_index(at: DateTime<Utc>, zone: chrono_tz::Tz) -> u32 {
    let local = at.with_timezone(&zone);
    u32::try_from(local.year()).unwrap_or(0) * 12 + local.month0()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).expect("date")
    }

    fn delta(d: u32, store: &str, earned: i64, spent: i64, sale: Option<(i64, u32, Option<i64>)>) -> Delta {
        let points = Points { earned: Decimal::from(earned), spent: Decimal::from(-spent), ..Points::default() };
        let sale = sale.map(|(paid, month_purchases, since_previous)| Sale { paid: Decimal::from(paid), month_purchases, since_previous });
        Delta { day: day(d), store_id: store.to_owned(), points, sale, enrolled: false }
    }

    #[test]
    fn a_report_sums_the_days_of_its_period_and_its_stores() {
        let mut figures = Figures::default();
        figures.fold(&delta(1, "s1", 100, 0, Some((10_000, 1, None))));
        figures.fold(&delta(2, "s1", 50, 70, Some((5_000, 2, Some(86_400)))));
        figures.fold(&delta(2, "s2", 30, 0, Some((3_000, 1, None))));
        figures.fold(&delta(5, "s1", 10, 0, None));
        let report = figures.report(day(2), day(4), None);
        assert_eq!((report.points.earned, report.points.spent), (Decimal::from(80), Decimal::from(-70)));
        assert_eq!(report.outstanding, Decimal::from(110), "everything up to the end of the period, day 1 included");
        assert_eq!((report.purchases, report.paid), (2, Decimal::from(8_000)));
        assert_eq!(report.redemption_rate, Some(Decimal::new(875, 3)));
        assert_eq!(report.average_receipt, Some(Decimal::from(4_000)));
        assert_eq!(report.days_between_purchases, Some(Decimal::ONE));
        assert_eq!((report.active_customers, report.repeat_customers), (2, 1), "March as a whole: the month's customers");
        assert_eq!(report.repeat_rate, Some(Decimal::new(5, 1)));
        assert_eq!(report.purchases_per_customer, Some(Decimal::new(15, 1)), "March's three purchases over its two customers");
        let one_store = figures.report(day(1), day(31), Some("s2"));
        assert_eq!((one_store.purchases, one_store.points.earned), (1, Decimal::from(30)));
        assert_eq!((one_store.repeat_rate, one_store.purchases_per_customer), (None, None), "every store only");
        assert_eq!(one_store.outstanding, Decimal::from(120), "a balance is the customer's, whatever the store");
        assert_eq!(figures.report(day(6), day(7), None).redemption_rate, None, "nothing given: no rate");
    }

    fn entry(seq: u64, kind: EntryKind, amount: i64) -> LedgerEntry {
        LedgerEntry {
            seq,
            tx_id: "tx".into(),
            kind,
            amount: Decimal::from(amount),
            balance_after: Decimal::ZERO,
            at: DateTime::UNIX_EPOCH,
            receipt_id: None,
            refund_id: None,
            store_id: "s".into(),
            till_id: "t".into(),
            reason: String::new(),
            available_from: None,
            expires_at: None,
            rule_ids: Vec::new(),
            program_version: None,
            actor: String::new(),
        }
    }

    #[test]
    fn a_delta_sums_its_entries_by_kind_and_an_empty_commit_has_none() {
        assert_eq!(Delta::of(day(1), "s", &[], None, false), None);
        let entries =
            [entry(1, EntryKind::Earn, 7), entry(2, EntryKind::Spend, -3), entry(3, EntryKind::Earn, 2), entry(4, EntryKind::Expire, -1)];
        let delta = Delta::of(day(1), "s", &entries, None, false).expect("entries make a delta");
        let points = delta.points;
        assert_eq!((points.earned, points.spent, points.expired), (Decimal::from(9), Decimal::from(-3), Decimal::from(-1)));
        assert_eq!(points.net(), Decimal::from(5));
        assert!(Delta::of(day(1), "s", &[], None, true).is_some_and(|delta| delta.enrolled), "an enrolment with no points counts");
    }
}
