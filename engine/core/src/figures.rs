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
//!
//! Two figures need more than sums by day:
//! - Sales without a customer (`RecordSale`) are committed on internal accounts that are nobody's
//!   ([`sales_account_id`]: one per store, month and shard of the receipt ID, so that no row is hot
//!   and none grows for ever); their
//!   deltas carry the money paid, and the report sets their average receipt beside identified
//!   buyers'.
//! - The liability by expiry: every delta carries how the account's points changed by the local day
//!   their bucket expires ([`ExpiryChange`], buckets after the commit less before), and the fold
//!   keeps, for every expiry day, what was held as of each of the
//!   [`EXPIRY_WINDOW_DAYS_MAX`] days before it ([`Expiring`]): enough to say what was held at the
//!   end of any day and expires within that many days after it, without reading an account.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::account::Bucket;
use crate::ledger::{EntryKind, LedgerEntry};

/// The longest window after a report's last day that the liability by expiry answers (the report
/// gives 30 and 90 days): the fold keeps each expiry day's changes by day for this many days
/// before it, and sums the earlier ones.
pub const EXPIRY_WINDOW_DAYS_MAX: u64 = 90;
/// The shorter window of the liability by expiry.
pub const EXPIRING_SOON_DAYS: u64 = 30;
/// Points whose bucket expires in this year or later never expire: `DateTime::MAX_UTC` is the
/// engine's own "no expiry", and an import may bring far-off dates meaning the same.
pub const NEVER_EXPIRES_FROM_YEAR: i32 = 9999;
/// The prefix of the internal accounts that hold sales without a customer: no identifier leads to
/// them, and account IDs minted for customers (`acc-...`) or named by tills (no '/') never start
/// with it.
pub const SALES_ACCOUNT_PREFIX: &str = "sales/";
/// Internal accounts per store for sales without a customer: a store's tills commit on this many
/// rows (each its own compare-and-set, and on ScyllaDB its own partition), so that no single row
/// takes a busy store's every sale.
pub const SALES_SHARDS_PER_STORE: u64 = 16;

/// The internal account a sale without a customer with receipt `receipt_id` at `store_id`, arriving
/// in the local month `month` (`YYYY-MM`), is committed on: the store's month's shard of the
/// receipt ID. A month's accounts take that month's sales only (on ScyllaDB each is a partition:
/// none grows for ever). A retry in the same month names the same account; one in a later month
/// finds the receipt's account through the receipt itself (`Checkout::record_sale`).
pub fn sales_account_id(store_id: &str, month: &str, receipt_id: &str) -> String {
    // FNV-1a, 64 bits, then MurmurHash3's 64-bit finaliser: the same in every process and release
    // (the shard is part of the account ID). Without the finaliser the low bits of FNV-1a see only
    // the low bits of each byte, and its top bits spread short IDs badly (measured: 8 shards of 16).
    let mut hash = receipt_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    let shard = hash % SALES_SHARDS_PER_STORE;
    format!("{SALES_ACCOUNT_PREFIX}{store_id}/{month}/{shard:02}")
}

/// Whether an account is one of the internal accounts of sales without a customer, which are no
/// customer's: listings, sweeps and reads by account ID leave them out.
pub fn is_sales_account(account_id: &str) -> bool {
    account_id.starts_with(SALES_ACCOUNT_PREFIX)
}

/// The local day a bucket expiring at `expires_at` counts under in the liability by expiry: the day
/// its expiry instant falls on (points good through 10 March expire at the start of 11 March: the
/// 11th), or `None` for points that never expire.
pub fn expiry_day(expires_at: DateTime<Utc>, zone: chrono_tz::Tz) -> Option<NaiveDate> {
    // (Checked in UTC first: the engine's "no expiry", `DateTime::MAX_UTC`, has no local time east
    // of Greenwich.)
    if expires_at.year() >= NEVER_EXPIRES_FROM_YEAR {
        return None;
    }
    let day = expires_at.with_timezone(&zone).date_naive();
    (day.year() < NEVER_EXPIRES_FROM_YEAR).then_some(day)
}

/// Points held in an account's buckets by their expiry instant: what [`ExpiryChange::between`]
/// compares before and after a commit.
pub fn held_by_expiry(buckets: &[Bucket]) -> Vec<(DateTime<Utc>, Decimal)> {
    buckets.iter().map(|bucket| (bucket.expires_at, bucket.remaining)).collect()
}

/// How one commit changed the points its account holds, by the local day they expire: the
/// account's buckets after the commit less those before. Summed over every commit of every account,
/// the changes add up to the points every account holds now, by expiry day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExpiryChange {
    /// By expiry day, ascending, no zeros.
    pub by_day: Vec<(NaiveDate, Decimal)>,
    /// Points that never expire.
    pub never: Decimal,
}

impl ExpiryChange {
    /// The change from `before` to `after` (each as [`held_by_expiry`] gives them) in `zone`.
    pub fn between(before: &[(DateTime<Utc>, Decimal)], after: &[(DateTime<Utc>, Decimal)], zone: chrono_tz::Tz) -> ExpiryChange {
        let mut change = ExpiryChange::default();
        if before == after {
            return change;
        }
        let mut by_instant: BTreeMap<DateTime<Utc>, Decimal> = BTreeMap::new();
        for (at, points) in before {
            *by_instant.entry(*at).or_default() -= *points;
        }
        for (at, points) in after {
            *by_instant.entry(*at).or_default() += *points;
        }
        let mut by_day: BTreeMap<NaiveDate, Decimal> = BTreeMap::new();
        for (at, points) in by_instant.into_iter().filter(|(_, points)| !points.is_zero()) {
            match expiry_day(at, zone) {
                Some(day) => *by_day.entry(day).or_default() += points,
                None => change.never += points,
            }
        }
        change.by_day = by_day.into_iter().filter(|(_, points)| !points.is_zero()).collect();
        change
    }

    pub fn is_zero(&self) -> bool {
        self.by_day.is_empty() && self.never.is_zero()
    }
}

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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The program's local date of the commit.
    pub day: NaiveDate,
    pub store_id: String,
    pub points: Points,
    pub sale: Option<Sale>,
    /// The commit registered the customer (an enrolment).
    pub enrolled: bool,
    /// A sale without a customer (`RecordSale`): the money paid. (This and what follows are last
    /// and default, so that deltas written before them still read.)
    #[serde(default)]
    pub unidentified_sale: Option<Decimal>,
    /// How the commit changed the account's points by expiry day.
    #[serde(default)]
    pub expiry: ExpiryChange,
    /// What the commit's receipt got from each budgeted campaign (`rules::campaigns`).
    #[serde(default)]
    pub campaigns: Vec<(String, Decimal)>,
}

/// What a commit recorded besides its ledger entries, for [`Delta::of`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// A purchase of an identified customer.
    pub sale: Option<Sale>,
    /// A sale without a customer: the money paid.
    pub unidentified_sale: Option<Decimal>,
    /// The commit registered the customer.
    pub enrolled: bool,
    /// How the account's points changed by expiry day.
    pub expiry: ExpiryChange,
    /// What each budgeted campaign gave.
    pub campaigns: Vec<(String, Decimal)>,
}

impl Delta {
    /// The delta of a commit on local date `day` from `store_id` that posted `entries` and
    /// recorded `recorded`; `None` when it adds nothing to the figures.
    pub fn of(day: NaiveDate, store_id: &str, entries: &[LedgerEntry], recorded: Recorded) -> Option<Delta> {
        let mut points = Points::default();
        for entry in entries {
            points.post(entry.kind, entry.amount);
        }
        let Recorded { sale, unidentified_sale, enrolled, expiry, campaigns } = recorded;
        (!points.is_zero() || sale.is_some() || unidentified_sale.is_some() || enrolled || !expiry.is_zero()).then(|| Delta {
            day,
            store_id: store_id.to_owned(),
            points,
            sale,
            enrolled,
            unidentified_sale,
            expiry,
            campaigns,
        })
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
    /// Sales without a customer (`RecordSale`), and the money paid on them.
    pub unidentified_purchases: u64,
    pub unidentified_paid: Decimal,
    /// The change of the points that never expire (the liability's, summed over every store).
    pub never_expiring: Decimal,
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
    /// The points held, by the local day their buckets expire (every store together).
    pub expiring: BTreeMap<NaiveDate, Expiring>,
    /// The points each budgeted campaign gave, ever (refunds take nothing off: the budget counts
    /// what was given).
    pub campaigns: BTreeMap<String, Decimal>,
}

/// The points held in buckets expiring on one day, as commits changed them: the changes made in
/// the [`EXPIRY_WINDOW_DAYS_MAX`] days before the expiry day by the day they were made, the
/// earlier ones summed. That answers exactly how many were held at the end of any day of that
/// window (the only days whose report counts them), and stays small: at most one sum per day of the
/// window. Changes made on or after the expiry day (the expiry written off) count in no window and
/// are not kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Expiring {
    /// The changes made more than the window before the expiry day.
    pub earlier: Decimal,
    /// The changes made in the window before the expiry day, by the local day they were made.
    pub by_day: BTreeMap<NaiveDate, Decimal>,
}

impl Expiring {
    /// The points held at the end of local day `day` (within the window before the expiry day).
    fn held_at_end_of(&self, day: NaiveDate) -> Decimal {
        self.earlier + self.by_day.range(..=day).map(|(_, points)| *points).sum::<Decimal>()
    }
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
    /// Sales without a customer (`RecordSale`) and the money paid on them.
    pub unidentified_purchases: u64,
    pub unidentified_paid: Decimal,
    /// Money paid / sales, of sales without a customer.
    pub unidentified_average_receipt: Option<Decimal>,
    /// How much more an identified buyer pays per receipt: the average receipt of identified
    /// buyers / that of unidentified ones - 1 (0.51: +51%).
    pub identified_uplift: Option<Decimal>,
    /// Of `outstanding`, the points held at the end of `to` in buckets expiring within 30 days
    /// after it (on the local days `to`+1 ..= `to`+30), and within 90 days (the 30 included); every
    /// store.
    pub expiring_30d: Decimal,
    pub expiring_90d: Decimal,
    /// Of `outstanding`, the points held at the end of `to` that never expire; every store.
    pub never_expiring: Decimal,
}

fn ratio(numerator: Decimal, denominator: Decimal) -> Option<Decimal> {
    (!denominator.is_zero()).then(|| (numerator / denominator).round_dp(4))
}

impl Figures {
    /// Adds one commit's delta.
    pub fn fold(&mut self, delta: &Delta) {
        for (campaign, points) in &delta.campaigns {
            *self.campaigns.entry(campaign.clone()).or_default() += *points;
        }
        let day = self.days.entry(delta.day).or_default().entry(delta.store_id.clone()).or_default();
        day.points.add(&delta.points);
        day.enrolled += u64::from(delta.enrolled);
        day.never_expiring += delta.expiry.never;
        if let Some(paid) = delta.unidentified_sale {
            day.unidentified_purchases += 1;
            day.unidentified_paid += paid;
        }
        for (expires_on, points) in &delta.expiry.by_day {
            let before_expiry = u64::try_from((*expires_on - delta.day).num_days()).unwrap_or(0);
            // Written off, or changed on its last day: no window after a day before it holds this.
            if before_expiry == 0 {
                continue;
            }
            let expiring = self.expiring.entry(*expires_on).or_default();
            if before_expiry > EXPIRY_WINDOW_DAYS_MAX {
                expiring.earlier += *points;
            } else {
                let sum = expiring.by_day.entry(delta.day).or_default();
                *sum += *points;
                if sum.is_zero() {
                    expiring.by_day.remove(&delta.day);
                }
            }
            if expiring.earlier.is_zero() && expiring.by_day.is_empty() {
                self.expiring.remove(expires_on);
            }
        }
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
                report.never_expiring += figures.never_expiring;
                if *day < from || store.is_some_and(|store| store != store_id) {
                    continue;
                }
                report.points.add(&figures.points);
                report.purchases += figures.purchases;
                report.paid += figures.paid;
                report.enrolled += figures.enrolled;
                report.unidentified_purchases += figures.unidentified_purchases;
                report.unidentified_paid += figures.unidentified_paid;
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
        let unidentified = Decimal::from(report.unidentified_purchases);
        report.unidentified_average_receipt = ratio(report.unidentified_paid, unidentified).map(|average| average.round_dp(2));
        // (paid / purchases) / (unidentified paid / unidentified purchases) - 1, from the unrounded
        // averages.
        report.identified_uplift =
            ratio(report.paid * unidentified, Decimal::from(report.purchases) * report.unidentified_paid).map(|ratio| ratio - Decimal::ONE);
        for (window, held) in [(EXPIRING_SOON_DAYS, &mut report.expiring_30d), (EXPIRY_WINDOW_DAYS_MAX, &mut report.expiring_90d)] {
            // (A period ending on the last representable day has no days after it.)
            if let Some(first) = to.checked_add_days(Days::new(1)) {
                let last = to.checked_add_days(Days::new(window)).unwrap_or(NaiveDate::MAX);
                *held = self.expiring.range(first..=last).map(|(_, expiring)| expiring.held_at_end_of(to)).sum();
            }
        }
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
        Delta { day: day(d), store_id: store.to_owned(), points, sale, ..Delta::default() }
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
        assert_eq!(Delta::of(day(1), "s", &[], Recorded::default()), None);
        let entries =
            [entry(1, EntryKind::Earn, 7), entry(2, EntryKind::Spend, -3), entry(3, EntryKind::Earn, 2), entry(4, EntryKind::Expire, -1)];
        let delta = Delta::of(day(1), "s", &entries, Recorded::default()).expect("entries make a delta");
        let points = delta.points;
        assert_eq!((points.earned, points.spent, points.expired), (Decimal::from(9), Decimal::from(-3), Decimal::from(-1)));
        assert_eq!(points.net(), Decimal::from(5));
        let enrolment = Recorded { enrolled: true, ..Recorded::default() };
        assert!(Delta::of(day(1), "s", &[], enrolment).is_some_and(|delta| delta.enrolled), "an enrolment with no points counts");
        let sale = Recorded { unidentified_sale: Some(Decimal::from(12)), ..Recorded::default() };
        assert_eq!(Delta::of(day(1), "s", &[], sale).and_then(|delta| delta.unidentified_sale), Some(Decimal::from(12)));
    }

    fn at(d: i64, hours: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_naive_utc_and_offset(day(1).and_hms_opt(0, 0, 0).expect("midnight"), Utc)
            + chrono::Duration::days(d)
            + chrono::Duration::hours(hours)
    }

    #[test]
    fn a_commit_carries_how_it_changed_the_points_held_by_expiry_day() {
        let utc = chrono_tz::UTC;
        let before = [(at(40, 0), Decimal::from(10)), (at(40, 5), Decimal::from(5)), (at(70, 0), Decimal::from(3))];
        // A spend of 12 from the day-40 buckets, an earn expiring on day 100, one that never does.
        let after = [
            (at(40, 5), Decimal::from(3)),
            (at(70, 0), Decimal::from(3)),
            (at(100, 0), Decimal::from(8)),
            (DateTime::<Utc>::MAX_UTC, Decimal::ONE),
        ];
        let change = ExpiryChange::between(&before, &after, utc);
        let on = |d: i64| day(1) + chrono::Duration::days(d);
        assert_eq!(change.by_day, vec![(on(40), Decimal::from(-12)), (on(100), Decimal::from(8))], "day 70 did not change");
        assert_eq!(change.never, Decimal::ONE);
        assert!(ExpiryChange::between(&before, &before, utc).is_zero());
        // In Almaty (UTC+5) 20:00 UTC is the next local day.
        let almaty = ExpiryChange::between(&[], &[(at(40, 20), Decimal::ONE)], chrono_tz::Asia::Almaty);
        assert_eq!(almaty.by_day, vec![(on(41), Decimal::ONE)]);
        assert_eq!(expiry_day(at(0, 0).with_year(NEVER_EXPIRES_FROM_YEAR).expect("year"), utc), None);
    }

    fn expiring(d: u32, changes: &[(i64, i64)], never: i64) -> Delta {
        let by_day = changes.iter().map(|(days, points)| (day(1) + chrono::Duration::days(*days), Decimal::from(*points))).collect();
        Delta { day: day(d), store_id: "s1".into(), expiry: ExpiryChange { by_day, never: Decimal::from(never) }, ..Delta::default() }
    }

    #[test]
    fn the_liability_by_expiry_is_what_was_held_at_the_end_of_the_period_and_expires_within_the_window_after_it() {
        let mut figures = Figures::default();
        // Day 1: 100 expiring on day 21 (offsets from 1 March), 50 on day 61, 7 that never expire.
        figures.fold(&expiring(1, &[(20, 100), (60, 50)], 7));
        // Day 5: 30 of the day-21 points spent, 5 more expiring on day 121.
        figures.fold(&expiring(5, &[(20, -30), (120, 5)], 0));
        // Day 22: the rest of the day-21 points written off (not kept: no window holds them).
        figures.fold(&expiring(22, &[(20, -70)], -2));
        let report = |to: u32| figures.report(day(1), day(to), None);
        let held = |to: u32| (report(to).expiring_30d, report(to).expiring_90d, report(to).never_expiring);
        let n = |value: i64| Decimal::from(value);
        assert_eq!(held(1), (n(100), n(150), n(7)), "at the end of day 1: days 2..=31 and 2..=91");
        assert_eq!(held(4), (n(100), n(150), n(7)), "a past period: the spend on day 5 came after");
        assert_eq!(held(5), (n(70), n(120), n(7)), "day 121 is 116 days after day 5");
        assert_eq!(held(21), (n(0), n(50), n(7)), "the day-21 points expire at its start: not after it; day 121 is 100 days on");
        assert_eq!(held(20), (n(70), n(120), n(7)), "they expire on the first day after day 20");
        assert_eq!(held(30), (n(0), n(50), n(5)), "never-expiring points are held as of the period's end");
        assert_eq!(held(31), (n(50), n(55), n(5)), "day 61 is the 30th day after day 31, day 121 the 90th");
        let day_21 = &figures.expiring[&(day(1) + chrono::Duration::days(20))];
        assert_eq!(
            day_21.by_day.values().copied().collect::<Vec<_>>(),
            [n(100), n(-30)],
            "the write-off on day 22 is in no window: not kept"
        );
        assert_eq!(figures.report(day(1), NaiveDate::MAX, None).expiring_30d, Decimal::ZERO, "no day after the last one");
    }

    #[test]
    fn unidentified_sales_have_their_own_average_and_the_uplift_compares_identified_buyers_with_them() {
        let mut figures = Figures::default();
        figures.fold(&delta(1, "s1", 0, 0, Some((15_100, 1, None))));
        for (store, paid) in [("s1", 9_000), ("s1", 11_000), ("s2", 5_000)] {
            figures.fold(&Delta { day: day(1), store_id: store.into(), unidentified_sale: Some(Decimal::from(paid)), ..Delta::default() });
        }
        let all = figures.report(day(1), day(1), None);
        assert_eq!((all.unidentified_purchases, all.unidentified_paid), (3, Decimal::from(25_000)));
        assert_eq!(all.unidentified_average_receipt, Some(Decimal::new(833_333, 2)));
        assert_eq!(all.identified_uplift, Some(Decimal::new(812, 3)), "15100 / (25000 / 3) - 1");
        assert_eq!((all.purchases, all.active_customers), (1, 1), "a sale without a customer is no customer's purchase");
        let s1 = figures.report(day(1), day(1), Some("s1"));
        assert_eq!((s1.unidentified_purchases, s1.unidentified_average_receipt), (2, Some(Decimal::from(10_000))));
        assert_eq!(s1.identified_uplift, Some(Decimal::new(51, 2)), "the +51% of domain.md");
        let s2 = figures.report(day(2), day(2), None);
        assert_eq!((s2.unidentified_average_receipt, s2.identified_uplift), (None, None), "nothing sold: no ratio");
    }

    #[test]
    fn sales_accounts_are_per_store_and_shard_and_nobody_s() {
        let account = sales_account_id("s1", "2026-03", "r-1");
        assert!(account.starts_with("sales/s1/2026-03/") && is_sales_account(&account), "{account}");
        assert_eq!(account, sales_account_id("s1", "2026-03", "r-1"), "a retry names the same account");
        let shards: std::collections::BTreeSet<String> = (0..1_000).map(|i| sales_account_id("s1", "2026-03", &format!("r-{i}"))).collect();
        assert_eq!(shards.len() as u64, SALES_SHARDS_PER_STORE, "receipts spread over every shard");
        // IDs that differ only in letters sharing their low four bits ('A' and 'Q', '1' and 'a')
        // spread too.
        let lookalikes: std::collections::BTreeSet<String> = ["AAAA", "QQQQ", "AQAQ", "QAQA", "1111", "aaaa", "1a1a", "a1a1"]
            .iter()
            .map(|id| sales_account_id("s1", "2026-03", id))
            .collect();
        assert!(lookalikes.len() > 2, "{lookalikes:?}");
        assert!(!is_sales_account("acc-0123") && !is_sales_account("card/p/1"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A commit: the account it is on, days after the start, and the account's holdings after
        /// it (days to expiry from the start, hours, points; a day of 0 never expires).
        type Commit = (usize, u32, Vec<(i64, i64, i64)>);
        /// Every account's points by expiry instant.
        type Holdings = Vec<Vec<(DateTime<Utc>, Decimal)>>;

        fn commits() -> impl Strategy<Value = Vec<Commit>> {
            let holding = (0i64..160, 0i64..24, 1i64..100);
            prop::collection::vec((0usize..3, 0u32..3, prop::collection::vec(holding, 0..4)), 1..30)
        }

        fn instant(days: i64, hours: i64) -> DateTime<Utc> {
            if days == 0 { DateTime::<Utc>::MAX_UTC } else { at(days, hours) }
        }

        proptest! {
            /// Folding every commit's change gives, for every day, what a scan of every account's
            /// buckets as they stood at the end of that day gives.
            #[test]
            fn the_folded_liability_by_expiry_is_a_scan_of_the_accounts_at_the_end_of_each_day(commits in commits()) {
                let zone = chrono_tz::Asia::Almaty;
                let mut figures = Figures::default();
                let mut held: Holdings = vec![Vec::new(); 3];
                let mut history: Vec<(NaiveDate, Holdings)> = Vec::new();
                let mut today = day(1);
                for (account, days_later, holdings) in commits {
                    today += chrono::Duration::days(i64::from(days_later));
                    let after: Vec<_> = holdings.iter().map(|(days, hours, points)| (instant(*days, *hours), Decimal::from(*points))).collect();
                    let expiry = ExpiryChange::between(&held[account], &after, zone);
                    held[account] = after;
                    figures.fold(&Delta { day: today, store_id: "s".into(), expiry, ..Delta::default() });
                    history.push((today, held.clone()));
                }
                for offset in 0..170 {
                    let to = day(1) + chrono::Duration::days(offset);
                    let state = history.iter().rev().find(|(day, _)| *day <= to).map(|(_, state)| state.clone()).unwrap_or_else(|| vec![Vec::new(); 3]);
                    let scan = |window: i64| -> Decimal {
                        state.iter().flatten().filter(|(at, _)| expiry_day(*at, zone).is_some_and(|on| on > to && on <= to + chrono::Duration::days(window))).map(|(_, points)| *points).sum()
                    };
                    let never: Decimal = state.iter().flatten().filter(|(at, _)| expiry_day(*at, zone).is_none()).map(|(_, points)| *points).sum();
                    let report = figures.report(to, to, None);
                    prop_assert_eq!((report.expiring_30d, report.expiring_90d, report.never_expiring), (scan(30), scan(90), never), "end of {}", to);
                }
            }
        }
    }
}
