//! Property tests of the rules engine: compile, evaluate, budgets and spending.
//!
//! The generators build arbitrary valid programs (any mix of `percent_of_lines`,
//! `percent_of_receipt`, `fixed_points`, `multiplier` and `tier_percent` rules, every stacking mode,
//! priorities with ties, line filters over small pools of SKUs, categories and brands so that rules
//! overlap, receipt, store, channel, coupon and customer conditions (RFM segments among them),
//! validity windows around the receipt's time, per-receipt and per-customer limits, an optional
//! tier table with spend caps, and spending rules with a cap, exclusions and a minimum balance),
//! arbitrary baskets (1 to 30 lines, money with 2 decimals, excise and promo flags, some lines
//! earning on less than their total, as when points paid part of the receipt), arbitrary accounts
//! (tier progress and floor, tags, purchases and their RFM months, budget counters of this period
//! and stale ones, birth dates near the receipt) and arbitrary times. Properties:
//!
//! (a) `compile` of any document, valid or not (wild percentages, points, dates, hours, IDs,
//!     tiers), returns rules or problems and never panics; when it accepts a document every
//!     percentage, amount and limit in it is in range, and the rules it accepts evaluate safely.
//! (b) No combination of rules earns a negative amount on a line or in total; the lines add up to
//!     the total exactly, so do the per-rule totals, and each line's `applied` adds up to its points.
//! (c) A rule never gives more than its `limits.per_receipt_points` on a receipt, nor more than
//!     what its per-customer budget has left; over several receipts through `ops::accrue`, the
//!     points and uses a budgeted rule gives in a period never exceed its limits.
//! (d) `spend_quote(...).max` never exceeds floor(eligible x cap% / 100) (plus what certificates
//!     may pay on their own caps) nor what the account can put up; it is zero for unregistered cards
//!     when `registered_only` and below the minimum balance; `eligible` leaves out the lines of
//!     `spending.exclude`. Through `ops::authorize` and `ops::redeem`, any request above the quoted
//!     maximum is refused and any request at or below it succeeds (and a hold so placed is
//!     capturable in full).
//! (e) Evaluation is deterministic and independent of the order rules (and the entries of their
//!     lists) are written in the document.
//!
//! 256 cases per property unless PROPTEST_CASES says otherwise.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use loyalty_core::account::{AccountState, Bucket, Certificate, Hold, MonthSpend, RfmMonth, RuleCounter};
use loyalty_core::basket::{BasketLimits, BasketLine};
use loyalty_core::ops::{self, AccrueCmd, AuthorizeCmd, Checkout, RedeemCmd, SaleContext};
use loyalty_core::outcome::{SpendLimit, SpendQuote};
use loyalty_core::program::{PointsRounding, ProgramPolicy};
use loyalty_core::receipt::ReceiptState;
use loyalty_core::rfm::Segment;
use loyalty_core::rules::compile::{POINTS_MAX, period_key};
use loyalty_core::rules::definition::{
    BirthdayWindow, Conditions, CustomerConditions, CustomerLimit, Effect, HoursWindow, Limits, LineFilter, Period, ReceiptConditions,
    ReviewPeriod, SpendingRules, Stacking, TierLevel, TierTable, Trigger, Validity,
};
use loyalty_core::rules::evaluate::{Earn, PurchaseContext, evaluate_purchase};
use loyalty_core::rules::spending::spend_quote;
use loyalty_core::rules::tiers::{effective_tier, month_index};
use loyalty_core::rules::{CompiledRules, Rule, RuleSet, compile};
use loyalty_core::txn::Txn;
use loyalty_core::{Decimal, Origin};
use proptest::prelude::*;
use proptest::sample::subsequence;
use proptest::strategy::ValueTree;
use proptest::test_runner::{TestCaseError, TestRunner};
use rust_decimal::RoundingStrategy;

// ---------------------------------------------------------------------------------------------
// Pools and small strategies
// ---------------------------------------------------------------------------------------------

/// Small pools, so that rules overlap on the same lines. Baskets also use names outside them.
const SKUS: [&str; 8] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"];
const CATEGORIES: [&str; 4] = ["c0", "c1", "c2", "c3"];
const BRANDS: [&str; 3] = ["b0", "b1", "b2"];
const TAGS: [&str; 3] = ["t0", "t1", "t2"];
const WEEK_DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const STORES: [&str; 2] = ["store-1", "store-2"];

fn config() -> ProptestConfig {
    // No regression files: this suite owns only its source file.
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn names(pool: &'static [&'static str], max: usize) -> BoxedStrategy<Vec<String>> {
    subsequence(pool, 1..=max).prop_map(|names| names.into_iter().map(str::to_owned).collect()).boxed()
}

/// Mostly empty: a list condition is the exception.
fn some_names(pool: &'static [&'static str], max: usize, weight_empty: u32) -> BoxedStrategy<Vec<String>> {
    prop_oneof![weight_empty => Just(Vec::new()), 1 => names(pool, max)].boxed()
}

fn flag() -> BoxedStrategy<Option<bool>> {
    prop_oneof![4 => Just(None), 1 => Just(Some(false)), 1 => Just(Some(true))].boxed()
}

fn sometimes<T: std::fmt::Debug + Clone>(strategy: impl Strategy<Value = T> + Clone) -> impl Strategy<Value = Option<T>> + Clone {
    prop::option::weighted(0.25, strategy)
}

/// Money with 2 decimals, mostly small.
fn money() -> BoxedStrategy<Decimal> {
    prop_oneof![4 => 0_i64..=100_000, 2 => 100_000_i64..=3_000_000, 1 => Just(0_i64)].prop_map(|cents| Decimal::new(cents, 2)).boxed()
}

/// 0 to 100 with up to 2 decimals, often whole.
fn percent() -> BoxedStrategy<Decimal> {
    prop_oneof![
        3 => (0_i64..=30).prop_map(Decimal::from),
        1 => (0_i64..=10_000).prop_map(|hundredths| Decimal::new(hundredths, 2)),
        1 => prop_oneof![Just(Decimal::ZERO), Just(Decimal::ONE_HUNDRED)],
    ]
    .boxed()
}

/// Points above 0 at the program's points scale.
fn points(scale: u32) -> BoxedStrategy<Decimal> {
    prop_oneof![3 => 1_i64..=500, 1 => 1_i64..=200_000].prop_map(move |units| Decimal::new(units, scale)).boxed()
}

fn line_filter() -> BoxedStrategy<LineFilter> {
    (
        (some_names(&SKUS, 4, 2), some_names(&CATEGORIES, 2, 3), some_names(&BRANDS, 2, 4)),
        (some_names(&SKUS, 2, 6), some_names(&CATEGORIES, 1, 8), some_names(&BRANDS, 1, 8)),
        flag(),
        flag(),
    )
        .prop_map(|((skus, categories, brands), (exclude_skus, exclude_categories, exclude_brands), excise, promo_price)| LineFilter {
            skus,
            categories,
            brands,
            exclude_skus,
            exclude_categories,
            exclude_brands,
            excise,
            promo_price,
        })
        .boxed()
}

fn local_day(program: &ProgramPolicy, at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&program.time_zone).date_naive()
}

// ---------------------------------------------------------------------------------------------
// Valid programs
// ---------------------------------------------------------------------------------------------

/// The program's policy: points scale, rounding and its own spend cap.
#[derive(Clone, Debug)]
struct Setup {
    points_scale: u32,
    rounding: PointsRounding,
    redeem_cap_percent: Decimal,
}

fn setup_strategy() -> BoxedStrategy<Setup> {
    (
        prop_oneof![2 => Just(0_u32), 1 => Just(2_u32)],
        prop_oneof![2 => Just(PointsRounding::Down), 1 => Just(PointsRounding::HalfUp), 1 => Just(PointsRounding::HalfEven)],
        percent(),
    )
        .prop_map(|(points_scale, rounding, redeem_cap_percent)| Setup { points_scale, rounding, redeem_cap_percent })
        .boxed()
}

impl Setup {
    fn program(&self) -> ProgramPolicy {
        let mut program = ProgramPolicy::with_defaults("p");
        program.points_scale = self.points_scale;
        program.rounding = self.rounding;
        program.redeem_cap_percent = self.redeem_cap_percent;
        program
    }
}

fn tiers_strategy() -> BoxedStrategy<Option<TierTable>> {
    let level = (1_i64..=5_000_000, sometimes(percent()), prop::option::weighted(0.5, percent()));
    prop::option::weighted(
        0.6,
        (
            1_u32..=36,
            prop_oneof![Just(ReviewPeriod::Month), Just(ReviewPeriod::Quarter), Just(ReviewPeriod::Year)],
            prop::collection::vec(level, 1..=5),
        )
            .prop_map(|(window_months, review, levels)| {
                let mut min_spend = Decimal::ZERO;
                let levels = levels
                    .into_iter()
                    .enumerate()
                    .map(|(index, (step_cents, cashback, cap))| {
                        if index > 0 {
                            min_spend += Decimal::new(step_cents, 2);
                        }
                        // Most tiers pay a cashback, so that tier_percent rules pay something.
                        let cashback_percent = cashback.or_else(|| (index % 2 == 0).then(|| Decimal::from(index + 1)));
                        TierLevel { id: format!("L{index}"), min_spend, cashback_percent, spend_cap_percent: cap }
                    })
                    .collect();
                TierTable { window_months, review, levels }
            }),
    )
    .boxed()
}

fn spending_strategy(scale: u32) -> BoxedStrategy<SpendingRules> {
    (
        prop::option::weighted(0.6, percent()),
        prop_oneof![3 => Just(Decimal::ZERO), 1 => (1_i64..=2_000).prop_map(move |units| Decimal::new(units, scale))],
        prop::bool::weighted(0.8),
        prop::option::weighted(0.5, line_filter()),
    )
        .prop_map(|(cap_percent, min_balance_to_spend, registered_only, exclude)| SpendingRules {
            cap_percent,
            min_balance_to_spend,
            registered_only,
            exclude,
        })
        .boxed()
}

fn effect_strategy(scale: u32, tier_cashback: bool) -> BoxedStrategy<Effect> {
    prop_oneof![
        4 => percent().prop_map(|percent| Effect::PercentOfLines { percent }),
        2 => percent().prop_map(|percent| Effect::PercentOfReceipt { percent }),
        2 => points(scale).prop_map(|points| Effect::FixedPoints { points }),
        2 => prop_oneof![(2_i64..=5).prop_map(Decimal::from), (101_i64..=10_000).prop_map(|hundredths| Decimal::new(hundredths, 2))]
            .prop_map(|factor| Effect::Multiplier { factor }),
        2 => Just(Effect::TierPercent),
    ]
    .prop_map(move |effect| match effect {
        Effect::TierPercent if !tier_cashback => Effect::PercentOfLines { percent: Decimal::from(2) },
        other => other,
    })
    .boxed()
}

fn customer_strategy(tier_ids: Vec<String>) -> BoxedStrategy<CustomerConditions> {
    let tier_count = tier_ids.len();
    (
        prop_oneof![4 => Just(Vec::new()), 1 => subsequence((0..tier_count).collect::<Vec<_>>(), 1..=tier_count.min(2))],
        some_names(&TAGS, 2, 4),
        some_names(&TAGS, 1, 6),
        prop_oneof![6 => Just(None), 1 => Just(Some(true)), 1 => Just(Some(false))],
        prop_oneof![8 => Just(None), 1 => Just(Some(true)), 1 => Just(Some(false))],
        prop::option::weighted(0.1, 0_u32..=60),
        prop::option::weighted(0.1, 0_u32..=1_000),
        prop::option::weighted(
            0.2,
            (0_u32..=31, 0_u32..=31).prop_map(|(days_before, days_after)| BirthdayWindow { days_before, days_after }),
        ),
        prop_oneof![4 => Just(Vec::new()), 1 => subsequence(Segment::ALL.to_vec(), 1..=3)],
    )
        .prop_map(
            move |(tiers, tags_any, tags_none, registered, first_purchase, inactive_days_min, account_age_days_max, birthday, segments)| {
                CustomerConditions {
                    tiers: tiers.into_iter().map(|index| tier_ids[index].clone()).collect(),
                    tags_any,
                    tags_none,
                    registered,
                    first_purchase,
                    inactive_days_min,
                    account_age_days_max,
                    birthday,
                    segments: segments.into_iter().map(|segment| segment.name().to_owned()).collect(),
                }
            },
        )
        .boxed()
}

fn conditions_strategy(tier_ids: Vec<String>) -> BoxedStrategy<Conditions> {
    (
        line_filter(),
        (
            prop::option::weighted(0.15, money()),
            prop::option::weighted(0.1, money()),
            prop::option::weighted(0.1, (0_i64..=6).prop_map(Decimal::from)),
        ),
        some_names(&STORES, 1, 6),
        prop_oneof![8 => Just(Vec::new()), 1 => Just(vec!["till-1".to_owned()])],
        prop_oneof![6 => Just(Vec::new()), 1 => Just(vec!["pos".to_owned()]), 1 => Just(vec!["app".to_owned(), "online".to_owned()])],
        customer_strategy(tier_ids),
        prop_oneof![8 => Just(None), 1 => Just(Some("C1".to_owned())), 1 => Just(Some("C2".to_owned()))],
    )
        .prop_map(|(lines, (min_total, min_matching_total, min_matching_quantity), stores, tills, channels, customer, coupon)| Conditions {
            lines,
            receipt: ReceiptConditions { min_total, min_matching_total, min_matching_quantity },
            stores,
            tills,
            channels,
            customer,
            coupon,
        })
        .boxed()
}

fn limits_strategy(scale: u32) -> BoxedStrategy<Limits> {
    (
        prop::option::weighted(0.3, points(scale)),
        prop::option::weighted(
            0.3,
            (
                prop_oneof![Just(Period::Day), Just(Period::Week), Just(Period::Month), Just(Period::Year), Just(Period::Ever)],
                prop::option::weighted(0.7, points(scale)),
                prop::option::weighted(0.5, 1_u32..=3),
            ),
        ),
    )
        .prop_map(|(per_receipt_points, per_customer)| Limits {
            per_receipt_points,
            per_customer: per_customer.map(|(period, points, uses)| CustomerLimit {
                period,
                points,
                uses: if points.is_none() && uses.is_none() { Some(1) } else { uses },
            }),
        })
        .boxed()
}

/// Validity windows around the receipt's local day, so that about half of them are in force.
fn validity_strategy(today: NaiveDate) -> BoxedStrategy<Validity> {
    (
        prop::option::weighted(0.2, (-20_i64..=5, prop::option::of(0_u32..24 * 4))),
        prop::option::weighted(0.2, 0_i64..=20),
        prop_oneof![5 => Just(Vec::new()), 1 => subsequence(&WEEK_DAYS[..], 1..=4)],
        prop::option::weighted(0.2, (0_u32..24 * 4, 1_u32..=24 * 4)),
    )
        .prop_map(move |(from, until_after_from, days, hours)| {
            let quarter = |index: u32| format!("{:02}:{:02}", index / 4, (index % 4) * 15);
            let from_day = from.map(|(offset, _)| today + Duration::days(offset));
            Validity {
                from: from.zip(from_day).map(|((_, time), day)| match time {
                    None => day.format("%Y-%m-%d").to_string(),
                    Some(index) => format!("{}T{}", day.format("%Y-%m-%d"), quarter(index)),
                }),
                // A day given as `until` is included, so a window from a day to the same day is valid.
                until: until_after_from
                    .map(|after| (from_day.unwrap_or(today - Duration::days(5)) + Duration::days(after)).format("%Y-%m-%d").to_string()),
                days: days.into_iter().map(str::to_owned).collect(),
                hours: hours.and_then(|(from, until)| {
                    let until = (from + until) % (24 * 4 + 1);
                    (until != from && !(from == 0 && until == 24 * 4)).then(|| HoursWindow {
                        from: quarter(from),
                        until: if until == 24 * 4 { "24:00".to_owned() } else { quarter(until) },
                    })
                }),
            }
        })
        .boxed()
}

fn rule_strategy(scale: u32, tier_ids: Vec<String>, tier_cashback: bool, today: NaiveDate) -> BoxedStrategy<Rule> {
    (
        -3_i32..=3,
        prop_oneof![Just(Stacking::Exclusive), Just(Stacking::Stackable), Just(Stacking::Always)],
        conditions_strategy(tier_ids),
        effect_strategy(scale, tier_cashback),
        limits_strategy(scale),
        validity_strategy(today),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.4),
    )
        .prop_map(|(priority, stacking, when, effect, limits, valid, active, plain)| {
            // A plain rule has only its line filter, so that rules often meet on the same lines.
            let (when, valid) =
                if plain { (Conditions { lines: when.lines, ..Conditions::default() }, Validity::default()) } else { (when, valid) };
            Rule {
                id: String::new(),
                name: String::new(),
                campaign: None,
                active,
                priority,
                stacking,
                trigger: Trigger::Purchase,
                event: None,
                when,
                effect,
                limits,
                valid,
            }
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// Accounts, baskets, scenarios
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct AccountSpec {
    registered: bool,
    created_days_before: i64,
    tags: Vec<String>,
    purchases: u32,
    last_purchase_days_before: Option<i64>,
    birth: Option<BirthSpec>,
    /// (months before the receipt's month, amount).
    months: Vec<(i32, Decimal)>,
    floor: Option<usize>,
    review_due_days: Option<i64>,
    /// (rule index, points units, uses, of the current period).
    counters: Vec<(usize, i64, u32, bool)>,
}

#[derive(Clone, Debug)]
enum BirthSpec {
    /// Born in `year`, on the day `offset` days from the receipt's local day.
    Near {
        year: i32,
        offset: i64,
    },
    Ordinal {
        year: i32,
        ordinal: u32,
    },
    LeapDay,
}

fn account_strategy() -> BoxedStrategy<AccountSpec> {
    (
        prop::bool::weighted(0.85),
        0_i64..=1_500,
        some_names(&TAGS, 2, 1),
        prop_oneof![1 => Just(0_u32), 3 => 1_u32..=50],
        prop::option::weighted(0.8, 0_i64..=120),
        prop::option::weighted(
            0.6,
            prop_oneof![
                3 => (1950_i32..=2005, -35_i64..=35).prop_map(|(year, offset)| BirthSpec::Near { year, offset }),
                1 => (1950_i32..=2005, 1_u32..=366).prop_map(|(year, ordinal)| BirthSpec::Ordinal { year, ordinal }),
                1 => Just(BirthSpec::LeapDay),
            ],
        ),
        prop::collection::vec((0_i32..=15, money()), 0..=4),
        prop::option::of(0_usize..5),
        prop::option::weighted(0.5, -60_i64..=60),
        prop::collection::vec((0_usize..10, 0_i64..=600, 0_u32..=4, prop::bool::weighted(0.8)), 0..=6),
    )
        .prop_map(
            |(
                registered,
                created_days_before,
                tags,
                purchases,
                last_purchase_days_before,
                birth,
                months,
                floor,
                review_due_days,
                counters,
            )| {
                AccountSpec {
                    registered,
                    created_days_before,
                    tags,
                    purchases,
                    last_purchase_days_before,
                    birth,
                    months,
                    floor,
                    review_due_days,
                    counters,
                }
            },
        )
        .boxed()
}

#[derive(Clone, Debug)]
struct LineSpec {
    sku: usize,
    category: usize,
    brand: usize,
    quantity: Decimal,
    cents: i64,
    excise: bool,
    promo: bool,
    /// Percent of the line's total that points paid (its base is the rest).
    paid_by_points: Option<i64>,
}

fn line_strategy() -> BoxedStrategy<LineSpec> {
    (
        0_usize..10,
        0_usize..5,
        0_usize..4,
        prop_oneof![3 => (1_i64..=5).prop_map(Decimal::from), 1 => (1_i64..=5_000).prop_map(|thousandths| Decimal::new(thousandths, 3))],
        prop_oneof![5 => 0_i64..=200_000, 2 => 200_000_i64..=5_000_000, 1 => Just(0_i64)],
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::option::weighted(0.2, 0_i64..=100),
    )
        .prop_map(|(sku, category, brand, quantity, cents, excise, promo, paid_by_points)| LineSpec {
            sku,
            category,
            brand,
            quantity,
            cents,
            excise,
            promo,
            paid_by_points,
        })
        .boxed()
}

/// One evaluation: the program, the account, the basket and the sale.
#[derive(Clone, Debug)]
struct Scenario {
    program: ProgramPolicy,
    rules: RuleSet,
    account: AccountState,
    lines: Vec<BasketLine>,
    /// Per line: what it earns on (at most its total).
    bases: Vec<Decimal>,
    at: DateTime<Utc>,
    origin: Origin,
    sale: SaleContext,
}

impl Scenario {
    fn compiled(&self) -> Result<CompiledRules, TestCaseError> {
        compile(&self.rules, 1, self.program.points_scale)
            .map_err(|error| TestCaseError::fail(format!("the generator made an invalid program: {error}")))
    }

    fn context(&self) -> PurchaseContext<'_> {
        PurchaseContext {
            program: &self.program,
            account: &self.account,
            lines: &self.lines,
            bases: &self.bases,
            at: self.at,
            store_id: &self.origin.store_id,
            till_id: &self.origin.till_id,
            channel: &self.sale.channel,
            coupons: &self.sale.coupons,
            change: Decimal::ZERO,
            allowance: &loyalty_core::rules::campaigns::UNLIMITED,
        }
    }

    fn local_day(&self) -> NaiveDate {
        local_day(&self.program, self.at)
    }

    fn unit(&self) -> Decimal {
        Decimal::new(1, self.program.points_scale)
    }
}

/// 2025-01-01 .. 2027-02-04, any second.
fn at_strategy() -> BoxedStrategy<DateTime<Utc>> {
    (0_i64..=800 * 86_400)
        .prop_map(|seconds| Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).single().expect("valid start") + Duration::seconds(seconds))
        .boxed()
}

fn sale_strategy() -> BoxedStrategy<(String, String, Vec<String>)> {
    (
        prop_oneof![Just("store-1"), Just("store-2")],
        prop_oneof![3 => Just("pos"), 1 => Just("app")],
        prop_oneof![3 => Just(Vec::new()), 1 => Just(vec!["C1".to_owned()]), 1 => Just(vec!["C2".to_owned(), "C1".to_owned()])],
    )
        .prop_map(|(store, channel, coupons)| (store.to_owned(), channel.to_owned(), coupons))
        .boxed()
}

type ScenarioParts =
    (Setup, Option<TierTable>, DateTime<Utc>, SpendingRules, Vec<Rule>, AccountSpec, Vec<LineSpec>, (String, String, Vec<String>));

fn scenario_strategy() -> BoxedStrategy<Scenario> {
    (setup_strategy(), tiers_strategy(), at_strategy())
        .prop_flat_map(|(setup, tiers, at)| {
            let program = setup.program();
            let today = local_day(&program, at);
            let tier_ids: Vec<String> =
                tiers.as_ref().map_or_else(|| vec!["base".to_owned()], |table| table.levels.iter().map(|level| level.id.clone()).collect());
            let cashback = tiers.as_ref().is_some_and(|table| table.levels.iter().any(|level| level.cashback_percent.is_some()));
            let scale = setup.points_scale;
            (
                Just(setup),
                Just(tiers),
                Just(at),
                spending_strategy(scale),
                prop::collection::vec(rule_strategy(scale, tier_ids, cashback, today), 0..=12),
                account_strategy(),
                prop::collection::vec(line_strategy(), 1..=30),
                sale_strategy(),
            )
        })
        .prop_map(build_scenario)
        .boxed()
}

fn build_scenario((setup, tiers, at, spending, mut rules, spec, line_specs, (store, channel, coupons)): ScenarioParts) -> Scenario {
    let program = setup.program();
    let today = local_day(&program, at);
    for (index, rule) in rules.iter_mut().enumerate() {
        rule.id = format!("r{index}");
    }
    let mut account = AccountState::new("acc".into(), spec.registered, at - Duration::days(spec.created_days_before));
    account.tags = spec.tags;
    account.purchases = spec.purchases;
    account.last_purchase_at =
        if spec.purchases == 0 { None } else { spec.last_purchase_days_before.map(|days| at - Duration::days(days)) };
    account.profile.birth_date = spec.birth.and_then(|birth| match birth {
        BirthSpec::Near { year, offset } => {
            let day = today + Duration::days(offset);
            NaiveDate::from_ymd_opt(year, day.month(), day.day()).or_else(|| NaiveDate::from_ymd_opt(year, day.month(), 28))
        }
        BirthSpec::Ordinal { year, ordinal } => NaiveDate::from_yo_opt(year, ordinal).or_else(|| NaiveDate::from_yo_opt(year, 365)),
        BirthSpec::LeapDay => NaiveDate::from_ymd_opt(1988, 2, 29),
    });
    let month = month_index(today);
    let mut months: Vec<MonthSpend> = Vec::new();
    for (back, amount) in spec.months {
        match months.iter_mut().find(|entry| entry.month == month - back) {
            Some(entry) => entry.amount += amount,
            None => months.push(MonthSpend { month: month - back, amount }),
        }
    }
    months.retain(|entry| !entry.amount.is_zero());
    months.sort_by_key(|entry| entry.month);
    // RFM months beside the tier months, so that customers fall in every segment: a few purchases
    // per month of spend, paid what the month spent.
    account.rfm_months = months
        .iter()
        .enumerate()
        .map(|(index, entry)| RfmMonth {
            month: entry.month,
            purchases: 1 + 2 * u32::try_from(index).expect("few months"),
            paid: entry.amount,
        })
        .collect();
    account.tier_progress.months = months;
    if let Some(table) = &tiers {
        account.tier_progress.floor = spec.floor.map(|index| table.levels[index % table.levels.len()].id.clone());
        account.tier_progress.review_due = spec.review_due_days.map(|days| at + Duration::days(days));
        account.tier = table.levels[0].id.clone();
    }
    // Counters of budgeted rules: most of this period, some stale.
    for (rule_index, units, uses, current) in spec.counters {
        let Some(rule) = (!rules.is_empty()).then(|| &rules[rule_index % rules.len()]) else { continue };
        let Some(limit) = &rule.limits.per_customer else { continue };
        let period = if current { period_key(limit.period, today) } else { "1999-01".to_owned() };
        if account.counters.iter().any(|counter| counter.rule_id == rule.id && counter.period == period) {
            continue;
        }
        account.counters.push(RuleCounter { rule_id: rule.id.clone(), period, points: Decimal::new(units, setup.points_scale), uses });
    }
    let mut lines = Vec::with_capacity(line_specs.len());
    let mut bases = Vec::with_capacity(line_specs.len());
    for (index, spec) in line_specs.into_iter().enumerate() {
        let line_total = Decimal::new(spec.cents, 2);
        lines.push(BasketLine {
            line_no: u32::try_from(index + 1).expect("few lines"),
            sku: SKUS.get(spec.sku).map_or_else(|| format!("zz{}", spec.sku), |sku| (*sku).to_owned()),
            category: CATEGORIES.get(spec.category).map_or("other", |category| category).to_owned(),
            brand: BRANDS.get(spec.brand).map_or("", |brand| brand).to_owned(),
            quantity: spec.quantity,
            unit_price: line_total,
            line_total,
            excise: spec.excise,
            promo_price: spec.promo,
        });
        let paid = spec
            .paid_by_points
            .map_or(Decimal::ZERO, |percent| (line_total * Decimal::new(percent, 2)).round_dp_with_strategy(2, RoundingStrategy::ToZero));
        bases.push(line_total - paid);
    }
    Scenario {
        program,
        rules: RuleSet { tiers, spending, rules, rfm: None, budgets: Default::default() },
        account,
        lines,
        bases,
        at,
        origin: Origin { store_id: store, till_id: "till-1".into(), actor: "till-gw".into() },
        sale: SaleContext { channel, coupons },
    }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// (b): nothing negative, and every way of adding up the earn gives its total.
fn check_earn_adds_up(earn: &Earn) -> Result<(), TestCaseError> {
    prop_assert!(earn.total >= Decimal::ZERO, "negative total {}", earn.total);
    for line in &earn.lines {
        prop_assert!(line.points >= Decimal::ZERO, "line {} earns {}", line.line_no, line.points);
        let applied: Decimal = line.applied.iter().map(|applied| applied.points).sum();
        prop_assert_eq!(applied, line.points, "line {}: applied {:?} do not add up to its points", line.line_no, line.applied);
        for applied in &line.applied {
            prop_assert!(applied.points > Decimal::ZERO, "line {}: rule {} applied with {}", line.line_no, applied.rule_id, applied.points);
        }
    }
    let lines: Decimal = earn.lines.iter().map(|line| line.points).sum();
    prop_assert_eq!(lines, earn.total, "lines do not add up to the total");
    let rules: Decimal = earn.rules.iter().map(|rule| rule.points).sum();
    prop_assert_eq!(rules, earn.total, "rules do not add up to the total");
    for rule in &earn.rules {
        prop_assert!(rule.points > Decimal::ZERO, "rule {} listed with {}", rule.rule_id, rule.points);
        let on_lines: Decimal = earn
            .lines
            .iter()
            .flat_map(|line| &line.applied)
            .filter(|applied| applied.rule_id == rule.rule_id)
            .map(|applied| applied.points)
            .sum();
        prop_assert_eq!(on_lines, rule.points, "rule {}: its lines do not add up to it", &rule.rule_id);
    }
    Ok(())
}

fn given_by(earn: &Earn, rule_id: &str) -> Decimal {
    earn.rules.iter().filter(|rule| *rule.rule_id == *rule_id).map(|rule| rule.points).sum()
}

/// What a rule's per-customer budget has used in the current period: (points, uses).
fn used(account: &AccountState, rule: &Rule, today: NaiveDate) -> (Decimal, u32) {
    let Some(limit) = &rule.limits.per_customer else { return (Decimal::ZERO, 0) };
    let period = period_key(limit.period, today);
    account
        .counters
        .iter()
        .find(|counter| counter.rule_id == rule.id && counter.period == period)
        .map_or((Decimal::ZERO, 0), |counter| (counter.points, counter.uses))
}

/// (c) on one receipt: per-receipt limits and what per-customer budgets have left.
fn check_limits(scenario: &Scenario, earn: &Earn) -> Result<(), TestCaseError> {
    for rule in &scenario.rules.rules {
        let given = given_by(earn, &rule.id);
        if let Some(max) = rule.limits.per_receipt_points {
            prop_assert!(given <= max, "rule {} gave {} over its per-receipt limit {}", &rule.id, given, max);
        }
        if let Some(limit) = &rule.limits.per_customer {
            let (points_used, uses_used) = used(&scenario.account, rule, scenario.local_day());
            if let Some(max) = limit.points {
                let left = (max - points_used).max(Decimal::ZERO);
                prop_assert!(given <= left, "rule {} gave {} with {} left of its budget", &rule.id, given, left);
            }
            if let Some(uses) = limit.uses
                && uses_used >= uses
            {
                prop_assert!(given.is_zero(), "rule {} gave {} after its {} uses", &rule.id, given, uses);
            }
        }
    }
    Ok(())
}

/// What the document says a spending exclusion takes (definition.rs, `LineFilter`).
fn filter_takes(filter: &LineFilter, line: &BasketLine) -> bool {
    let has = |list: &[String], value: &str| list.iter().any(|item| item == value);
    let positive = !(filter.skus.is_empty() && filter.categories.is_empty() && filter.brands.is_empty());
    let listed = !positive || has(&filter.skus, &line.sku) || has(&filter.categories, &line.category) || has(&filter.brands, &line.brand);
    let excluded =
        has(&filter.exclude_skus, &line.sku) || has(&filter.exclude_categories, &line.category) || has(&filter.exclude_brands, &line.brand);
    listed
        && !excluded
        && filter.excise.is_none_or(|wanted| wanted == line.excise)
        && filter.promo_price.is_none_or(|wanted| wanted == line.promo_price)
}

fn eligible(rules: &RuleSet, lines: &[BasketLine]) -> Decimal {
    lines
        .iter()
        .filter(|line| rules.spending.exclude.as_ref().is_none_or(|exclude| !filter_takes(exclude, line)))
        .map(|line| line.line_total)
        .sum()
}

/// (d): the bounds of one quote, given what the account could put up and which buckets last.
fn check_quote(
    scenario: &Scenario,
    compiled: &CompiledRules,
    quote: &SpendQuote,
    puttable: Decimal,
    lasting_until: DateTime<Utc>,
) -> Result<(), TestCaseError> {
    let program = &scenario.program;
    let rules = &scenario.rules;
    let account = &scenario.account;
    let expected_eligible = eligible(rules, &scenario.lines);
    prop_assert_eq!(quote.eligible, expected_eligible, "eligible amount");
    let tier = effective_tier(compiled, account, scenario.at, program.time_zone);
    let tier_cap =
        rules.tiers.as_ref().and_then(|table| table.levels.iter().find(|level| level.id == tier)).and_then(|level| level.spend_cap_percent);
    let cap_percent = tier_cap.or(rules.spending.cap_percent).unwrap_or(program.redeem_cap_percent);
    prop_assert_eq!(quote.cap_percent, cap_percent, "cap in force for tier {}", tier);
    let floor = |value: Decimal| value.round_dp_with_strategy(program.points_scale, RoundingStrategy::ToZero);
    let share = |percent: Decimal| floor(expected_eligible * percent / Decimal::ONE_HUNDRED);
    let certificates: Decimal = account
        .buckets
        .iter()
        .filter(|bucket| bucket.is_available(scenario.at) && bucket.expires_at > lasting_until)
        .filter_map(|bucket| bucket.certificate.as_ref().map(|certificate| bucket.remaining.min(share(certificate.cap_percent))))
        .sum();
    prop_assert!(quote.max >= Decimal::ZERO, "negative max {}", quote.max);
    prop_assert!(quote.max <= floor(puttable.max(Decimal::ZERO)), "max {} above the {} the account can put up", quote.max, puttable);
    prop_assert!(
        quote.max <= share(cap_percent) + certificates,
        "max {} above {}% of {} plus {} from certificates",
        quote.max,
        cap_percent,
        expected_eligible,
        certificates
    );
    if certificates.is_zero() {
        prop_assert!(quote.max <= share(cap_percent), "max {} above {}% of {}", quote.max, cap_percent, expected_eligible);
    }
    if rules.spending.registered_only && !account.registered {
        prop_assert!(quote.max.is_zero(), "an unregistered card may spend {}", quote.max);
        prop_assert_eq!(quote.limit, SpendLimit::NotRegistered);
    } else if floor(puttable.max(Decimal::ZERO)) < rules.spending.min_balance_to_spend {
        prop_assert!(quote.max.is_zero(), "{} may be spent below the minimum balance", quote.max);
    }
    Ok(())
}

fn shuffled<T: Clone>(items: &[T], order: &[usize]) -> Vec<T> {
    order.iter().map(|&index| items[index].clone()).collect()
}

fn reversed_lists(filter: &mut LineFilter) {
    for list in [
        &mut filter.skus,
        &mut filter.categories,
        &mut filter.brands,
        &mut filter.exclude_skus,
        &mut filter.exclude_categories,
        &mut filter.exclude_brands,
    ] {
        list.reverse();
    }
}

// ---------------------------------------------------------------------------------------------
// Spending scenarios
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Availability {
    Now,
    Pending,
}

#[derive(Clone, Copy, Debug)]
enum Expiry {
    Expired,
    /// Before a hold of the default TTL would end.
    InMinutes(i64),
    Far,
}

#[derive(Clone, Debug)]
struct BucketSpec {
    units: i64,
    availability: Availability,
    expiry: Expiry,
    certificate_cap: Option<Decimal>,
}

fn bucket_strategy() -> BoxedStrategy<BucketSpec> {
    (
        prop_oneof![3 => 1_i64..=2_000, 2 => 1_i64..=200_000],
        prop_oneof![5 => Just(Availability::Now), 1 => Just(Availability::Pending)],
        prop_oneof![1 => Just(Expiry::Expired), 1 => (1_i64..=30).prop_map(Expiry::InMinutes), 5 => Just(Expiry::Far)],
        prop::option::weighted(0.25, (1_i64..=10_000).prop_map(|hundredths| Decimal::new(hundredths, 2))),
    )
        .prop_map(|(units, availability, expiry, certificate_cap)| BucketSpec { units, availability, expiry, certificate_cap })
        .boxed()
}

/// How much a request asks, relative to the quoted maximum.
#[derive(Clone, Copy, Debug)]
enum Ask {
    Max,
    /// Thousandths of the maximum.
    Below(u32),
    OneUnitBelow,
    OneUnitAbove,
    Above(i64),
}

fn ask_strategy() -> BoxedStrategy<Ask> {
    prop_oneof![
        3 => Just(Ask::Max),
        3 => (1_u32..1000).prop_map(Ask::Below),
        1 => Just(Ask::OneUnitBelow),
        2 => Just(Ask::OneUnitAbove),
        2 => (1_i64..=100_000).prop_map(Ask::Above),
    ]
    .boxed()
}

impl Ask {
    fn amount(self, max: Decimal, unit: Decimal) -> Decimal {
        let scale = unit.scale();
        match self {
            Ask::Max => max,
            Ask::Below(thousandths) => {
                (max * Decimal::new(i64::from(thousandths), 3)).round_dp_with_strategy(scale, RoundingStrategy::ToZero)
            }
            Ask::OneUnitBelow => max - unit,
            Ask::OneUnitAbove => max + unit,
            Ask::Above(units) => max + Decimal::new(units, scale),
        }
    }
}

/// A scenario whose account has points (buckets, certificates, maybe another receipt's hold).
fn spending_scenario_strategy() -> BoxedStrategy<(Scenario, Vec<Ask>)> {
    (
        scenario_strategy(),
        prop::collection::vec(bucket_strategy(), 1..=5),
        prop::option::weighted(0.3, 1_i64..=100),
        prop::collection::vec(ask_strategy(), 1..=4),
        prop::bool::weighted(0.7),
    )
        .prop_map(|(mut scenario, buckets, hold_percent, asks, registered)| {
            let at = scenario.at;
            let scale = scenario.program.points_scale;
            let account = &mut scenario.account;
            account.registered = account.registered || registered;
            for spec in buckets {
                let id = account.next_bucket_id;
                account.next_bucket_id += 1;
                let remaining = Decimal::new(spec.units, scale);
                account.buckets.push(Bucket {
                    id,
                    receipt_id: None,
                    available_from: match spec.availability {
                        Availability::Now => at - Duration::days(1),
                        Availability::Pending => at + Duration::hours(2),
                    },
                    expires_at: match spec.expiry {
                        Expiry::Expired => at - Duration::minutes(1),
                        Expiry::InMinutes(minutes) => at + Duration::minutes(minutes),
                        Expiry::Far => at + Duration::days(300),
                    },
                    remaining,
                    certificate: spec.certificate_cap.map(|cap_percent| Certificate {
                        rule_id: "birthday-certificate".into(),
                        label: "birthday".into(),
                        cap_percent,
                    }),
                });
                account.ledger_sum += remaining;
            }
            account.buckets.sort_by_key(|bucket| (bucket.expires_at, bucket.id));
            // Another receipt's hold, on points that outlive it.
            if let Some(percent) = hold_percent {
                let expires_at = at + Duration::minutes(10);
                let amount = (account.holdable_at(at, expires_at) * Decimal::new(percent, 2))
                    .round_dp_with_strategy(scale, RoundingStrategy::ToZero);
                if amount > Decimal::ZERO {
                    account.holds.push(Hold { hold_id: "h-other".into(), receipt_id: "R-other".into(), amount, expires_at });
                }
            }
            (scenario, asks)
        })
        .boxed()
}

fn authorize_cmd(scenario: &Scenario, spend: Decimal) -> AuthorizeCmd {
    AuthorizeCmd {
        receipt_id: "R".into(),
        lines: scenario.lines.clone(),
        spend,
        hold_ttl_seconds: 0,
        sale: scenario.sale.clone(),
        presence: Default::default(),
    }
}

fn check_spending_ops(scenario: &Scenario, compiled: &CompiledRules, asks: &[Ask]) -> Result<(), TestCaseError> {
    let program = &scenario.program;
    let limits = BasketLimits::default();
    let ck = Checkout { program, rules: compiled, limits: &limits };
    let at = scenario.at;
    let account = &scenario.account;
    let unit = scenario.unit();
    // The quote a till gets from Authorize without spending.
    let quoted = ops::quote(&ck, account, &authorize_cmd(scenario, Decimal::ZERO), at, &scenario.origin)
        .map_err(|rejection| TestCaseError::fail(format!("quote refused: {rejection:?}")))?;
    let ttl_end = at + Duration::seconds(i64::from(program.hold_ttl_seconds));
    check_quote(scenario, compiled, &quoted.spend, account.holdable_at(at, ttl_end), ttl_end)?;
    // The quote a direct Redeem checks against.
    let spendable = account.balance_at(at).spendable;
    let direct = spend_quote(compiled, program, account, &scenario.lines, at, spendable, at);
    check_quote(scenario, compiled, &direct, spendable, at)?;
    for ask in asks {
        // Authorize with a hold, then capture it.
        let spend = ask.amount(quoted.spend.max, unit);
        if spend > Decimal::ZERO {
            let mut txn = Txn::begin(program, account, at, "tx-auth".into(), scenario.origin.clone());
            let mut receipt = ReceiptState::new("R".into(), account.account_id.clone(), at, scenario.origin.clone());
            let result = ops::authorize(&ck, &mut txn, &mut receipt, &authorize_cmd(scenario, spend), "h-new".into());
            if spend <= quoted.spend.max {
                let outcome = result.map_err(|rejection| {
                    TestCaseError::fail(format!("authorize of {spend} refused within the quoted {}: {rejection:?}", quoted.spend.max))
                })?;
                prop_assert_eq!(outcome.hold.as_ref().map(|hold| hold.amount), Some(spend));
                let held = txn.finish_all().map_err(|broken| TestCaseError::fail(format!("after authorize: {broken:?}")))?.account;
                let mut txn = Txn::begin(program, &held, at + Duration::seconds(30), "tx-capture".into(), scenario.origin.clone());
                let capture = RedeemCmd {
                    receipt_id: "R".into(),
                    points: spend,
                    hold_id: Some("h-new".into()),
                    lines: Vec::new(),
                    presence: Default::default(),
                };
                ops::redeem(&ck, &mut txn, &mut receipt, &capture)
                    .map_err(|rejection| TestCaseError::fail(format!("capture of the {spend} hold refused: {rejection:?}")))?;
                txn.finish_all().map_err(|broken| TestCaseError::fail(format!("after capture: {broken:?}")))?;
            } else {
                prop_assert!(result.is_err(), "authorize of {} accepted above the quoted {}", spend, quoted.spend.max);
            }
        }
        // A direct redeem, within or above its own quote; a quote from Authorize is honoured too.
        for (points, max) in [(ask.amount(direct.max, unit), direct.max), (ask.amount(quoted.spend.max, unit), quoted.spend.max)] {
            if points <= Decimal::ZERO {
                continue;
            }
            let mut txn = Txn::begin(program, account, at, "tx-redeem".into(), scenario.origin.clone());
            let mut receipt = ReceiptState::new("R".into(), account.account_id.clone(), at, scenario.origin.clone());
            let cmd =
                RedeemCmd { receipt_id: "R".into(), points, hold_id: None, lines: scenario.lines.clone(), presence: Default::default() };
            let result = ops::redeem(&ck, &mut txn, &mut receipt, &cmd);
            if points <= max {
                result.map_err(|rejection| {
                    TestCaseError::fail(format!("redeem of {points} refused within the quoted {max}: {rejection:?}"))
                })?;
                txn.finish_all().map_err(|broken| TestCaseError::fail(format!("after redeem: {broken:?}")))?;
            } else if max == direct.max {
                prop_assert!(result.is_err(), "redeem of {} accepted above the quoted {}", points, max);
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Budgets over several receipts
// ---------------------------------------------------------------------------------------------

/// Accrues `receipts` copies of the basket one after another on the account (the same local day),
/// as the engine does: a Txn per receipt, the new state carried over. Returns each receipt's earn
/// per rule.
fn accrue_receipts(scenario: &Scenario, compiled: &CompiledRules, receipts: usize) -> Result<Vec<HashMap<String, Decimal>>, TestCaseError> {
    let limits = BasketLimits::default();
    let ck = Checkout { program: &scenario.program, rules: compiled, limits: &limits };
    let mut account = scenario.account.clone();
    let mut given = Vec::with_capacity(receipts);
    for number in 0..receipts {
        let receipt_id = format!("R{number}");
        let mut txn = Txn::begin(&scenario.program, &account, scenario.at, format!("tx{number}"), scenario.origin.clone());
        let mut receipt = ReceiptState::new(receipt_id.clone(), account.account_id.clone(), scenario.at, scenario.origin.clone());
        let cmd =
            AccrueCmd { occurred_at: None, receipt_id, lines: scenario.lines.clone(), sale: scenario.sale.clone(), change: Decimal::ZERO };
        let outcome = ops::accrue(&ck, &mut txn, &mut receipt, &cmd)
            .map_err(|rejection| TestCaseError::fail(format!("accrue refused: {rejection:?}")))?;
        given.push(outcome.rules.iter().map(|rule| (rule.rule_id.to_string(), rule.points)).collect());
        account = txn.finish_all().map_err(|broken| TestCaseError::fail(format!("after accrue: {broken:?}")))?.account;
    }
    Ok(given)
}

fn check_budgets_over_receipts(scenario: &Scenario, compiled: &CompiledRules, receipts: usize) -> Result<(), TestCaseError> {
    let given = accrue_receipts(scenario, compiled, receipts)?;
    for rule in &scenario.rules.rules {
        let Some(limit) = &rule.limits.per_customer else { continue };
        let (points_used, uses_used) = used(&scenario.account, rule, scenario.local_day());
        let points: Decimal = given.iter().filter_map(|receipt| receipt.get(&rule.id)).sum();
        let paid_receipts = u32::try_from(given.iter().filter(|receipt| receipt.contains_key(&rule.id)).count()).expect("few receipts");
        if let Some(max) = limit.points {
            let left = (max - points_used).max(Decimal::ZERO);
            prop_assert!(points <= left, "rule {} gave {} over {} receipts with {} of its budget left", &rule.id, points, receipts, left);
        }
        if let Some(uses) = limit.uses {
            prop_assert!(
                paid_receipts <= uses.saturating_sub(uses_used),
                "rule {} paid {} receipts with {} of its {} uses used",
                &rule.id,
                paid_receipts,
                uses_used,
                uses
            );
        }
        if let Some(max) = rule.limits.per_receipt_points {
            for receipt in &given {
                let points = receipt.get(&rule.id).copied().unwrap_or_default();
                prop_assert!(points <= max, "rule {} gave {} on a receipt, limit {}", &rule.id, points, max);
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (a) Wild documents
// ---------------------------------------------------------------------------------------------

fn wild_decimal() -> BoxedStrategy<Decimal> {
    prop_oneof![
        4 => (-10_000_i64..=20_000, 0_u32..=3).prop_map(|(mantissa, scale)| Decimal::new(mantissa, scale)),
        1 => (any::<i64>(), 0_u32..=28).prop_map(|(mantissa, scale)| Decimal::new(mantissa, scale)),
        1 => prop_oneof![
            Just(Decimal::MAX),
            Just(Decimal::MIN),
            Just(Decimal::ZERO),
            Just(Decimal::ONE_HUNDRED),
            Just(Decimal::from(POINTS_MAX)),
            Just(Decimal::from(POINTS_MAX) + Decimal::new(1, 2)),
            Just(Decimal::new(1, 28)),
            Just(Decimal::new(-1, 28)),
        ],
    ]
    .boxed()
}

fn wild_name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z][0-9]",
        1 => Just(String::new()),
        1 => "[a-z_-]{60,70}",
        1 => "\\PC{0,6}",
        1 => Just("has space".to_owned()),
    ]
    .boxed()
}

fn wild_names() -> BoxedStrategy<Vec<String>> {
    prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(wild_name(), 1..=3)].boxed()
}

fn wild_date() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (2020_i32..=2030, 1_u32..=12, 1_u32..=31).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        2 => (2020_i32..=2030, 1_u32..=12, 1_u32..=28, 0_u32..=25, 0_u32..=61).prop_map(|(y, m, d, h, min)| format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}")),
        1 => prop_oneof![
            Just("2026-02-30".to_owned()),
            Just("2026-12-31 18:00".to_owned()),
            Just("2026-12-31T18:00:59".to_owned()),
            Just("+262142-12-31".to_owned()),
            Just("262143-12-31".to_owned()),
            Just("-262143-01-01".to_owned()),
            Just("0000-01-01".to_owned()),
            Just("9999-12-31T23:59".to_owned()),
            Just(String::new()),
            Just("tomorrow".to_owned()),
        ],
        1 => "\\PC{0,12}",
    ]
    .boxed()
}

fn wild_time() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (0_u32..=25, 0_u32..=61).prop_map(|(h, m)| format!("{h:02}:{m:02}")),
        1 => prop_oneof![Just("24:00".to_owned()), Just("00:00".to_owned()), Just("7:5".to_owned()), Just(String::new()), Just("noon".to_owned())],
    ]
    .boxed()
}

fn wild_filter() -> BoxedStrategy<LineFilter> {
    (wild_names(), wild_names(), wild_names(), wild_names(), wild_names(), wild_names(), flag(), flag())
        .prop_map(|(skus, categories, brands, exclude_skus, exclude_categories, exclude_brands, excise, promo_price)| LineFilter {
            skus,
            categories,
            brands,
            exclude_skus,
            exclude_categories,
            exclude_brands,
            excise,
            promo_price,
        })
        .boxed()
}

fn wild_effect() -> BoxedStrategy<Effect> {
    prop_oneof![
        3 => wild_decimal().prop_map(|percent| Effect::PercentOfLines { percent }),
        2 => wild_decimal().prop_map(|percent| Effect::PercentOfReceipt { percent }),
        2 => wild_decimal().prop_map(|points| Effect::FixedPoints { points }),
        2 => wild_decimal().prop_map(|factor| Effect::Multiplier { factor }),
        1 => Just(Effect::TierPercent),
        1 => (wild_decimal(), 0_u32..=4_000, wild_decimal())
            .prop_map(|(value, valid_days, cap_percent)| Effect::IssueCertificate { value, valid_days, cap_percent }),
        1 => prop::collection::vec(wild_decimal(), 0..=7).prop_map(|percents| Effect::Referral { percents }),
        1 => wild_decimal().prop_map(|max_points| Effect::ChangeToPoints { max_points }),
    ]
    .boxed()
}

fn wild_rule() -> BoxedStrategy<Rule> {
    (
        (wild_name(), "\\PC{0,8}", any::<bool>(), any::<i32>(), prop_oneof![Just(Stacking::Exclusive), Just(Stacking::Stackable), Just(Stacking::Always)]),
        (
            prop_oneof![3 => Just(Trigger::Purchase), 1 => Just(Trigger::Enrollment), 1 => Just(Trigger::Event), 1 => Just(Trigger::Schedule)],
            prop::option::weighted(0.2, wild_name()),
        ),
        (
            wild_filter(),
            (prop::option::weighted(0.2, wild_decimal()), prop::option::weighted(0.2, wild_decimal()), prop::option::weighted(0.2, wild_decimal())),
            (wild_names(), wild_names(), wild_names(), prop::option::weighted(0.2, wild_name())),
            (
                wild_names(),
                wild_names(),
                wild_names(),
                prop::option::of(any::<bool>()),
                prop::option::of(any::<bool>()),
                prop::option::weighted(0.2, any::<u32>()),
                prop::option::weighted(0.2, any::<u32>()),
                prop::option::weighted(0.2, (0_u32..=40, 0_u32..=40)),
                prop_oneof![
                    3 => Just(Vec::new()),
                    1 => prop::collection::vec(prop_oneof![Just("at_risk".to_owned()), Just("at-risk".to_owned()), wild_name()], 1..=3)
                ],
            ),
        ),
        wild_effect(),
        (
            prop::option::weighted(0.3, wild_decimal()),
            prop::option::weighted(
                0.3,
                (
                    prop_oneof![Just(Period::Day), Just(Period::Week), Just(Period::Month), Just(Period::Year), Just(Period::Ever)],
                    prop::option::of(wild_decimal()),
                    prop::option::of(0_u32..=3),
                ),
            ),
        ),
        (
            prop::option::weighted(0.3, wild_date()),
            prop::option::weighted(0.3, wild_date()),
            prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(prop_oneof![Just("mon".to_owned()), Just("Sunday".to_owned()), Just("xyz".to_owned()), Just(String::new())], 1..=3)],
            prop::option::weighted(0.3, (wild_time(), wild_time())),
        ),
    )
        .prop_map(
            |(
                (id, name, active, priority, stacking),
                (trigger, event),
                (lines, (min_total, min_matching_total, min_matching_quantity), (stores, tills, channels, coupon), customer),
                effect,
                (per_receipt_points, per_customer),
                (from, until, days, hours),
            )| {
                let (tiers, tags_any, tags_none, registered, first_purchase, inactive_days_min, account_age_days_max, birthday, segments) =
                    customer;
                Rule {
                    id,
                    name,
                    campaign: None,
                    active,
                    priority,
                    stacking,
                    trigger,
                    event,
                    when: Conditions {
                        lines,
                        receipt: ReceiptConditions { min_total, min_matching_total, min_matching_quantity },
                        stores,
                        tills,
                        channels,
                        customer: CustomerConditions {
                            tiers,
                            tags_any,
                            tags_none,
                            registered,
                            first_purchase,
                            inactive_days_min,
                            account_age_days_max,
                            birthday: birthday.map(|(days_before, days_after)| BirthdayWindow { days_before, days_after }),
                            segments,
                        },
                        coupon,
                    },
                    effect,
                    limits: Limits {
                        per_receipt_points,
                        per_customer: per_customer.map(|(period, points, uses)| CustomerLimit { period, points, uses }),
                    },
                    valid: Validity { from, until, days, hours: hours.map(|(from, until)| HoursWindow { from, until }) },
                }
            },
        )
    .boxed()
}

fn wild_rule_set() -> BoxedStrategy<(RuleSet, u32)> {
    (
        prop::option::weighted(
            0.5,
            (
                0_u32..=40,
                prop::collection::vec(
                    (wild_name(), wild_decimal(), prop::option::of(wild_decimal()), prop::option::of(wild_decimal())),
                    0..=4,
                ),
            )
                .prop_map(|(window_months, levels)| TierTable {
                    window_months,
                    review: ReviewPeriod::Quarter,
                    levels: levels
                        .into_iter()
                        .map(|(id, min_spend, cashback_percent, spend_cap_percent)| TierLevel {
                            id,
                            min_spend,
                            cashback_percent,
                            spend_cap_percent,
                        })
                        .collect(),
                }),
        ),
        (prop::option::of(wild_decimal()), wild_decimal(), any::<bool>(), prop::option::weighted(0.3, wild_filter())),
        prop::collection::vec(wild_rule(), 0..=6),
        0_u32..=4,
    )
        .prop_map(|(tiers, (cap_percent, min_balance_to_spend, registered_only, exclude), rules, points_scale)| {
            (
                RuleSet {
                    tiers,
                    spending: SpendingRules { cap_percent, min_balance_to_spend, registered_only, exclude },
                    rules,
                    rfm: None,
                    budgets: Default::default(),
                },
                points_scale,
            )
        })
        .boxed()
}

fn in_percent_range(value: Decimal) -> bool {
    value >= Decimal::ZERO && value <= Decimal::ONE_HUNDRED
}

fn valid_points(value: Decimal, scale: u32) -> bool {
    value > Decimal::ZERO && value <= Decimal::from(POINTS_MAX) && value.normalize().scale() <= scale
}

/// What an accepted document must satisfy, field by field.
fn check_accepted(rules: &RuleSet, scale: u32) -> Result<(), TestCaseError> {
    if let Some(table) = &rules.tiers {
        prop_assert!(!table.levels.is_empty() && (1..=36).contains(&table.window_months));
        prop_assert!(table.levels[0].min_spend.is_zero());
        prop_assert!(table.levels.windows(2).all(|pair| pair[0].min_spend < pair[1].min_spend));
        for level in &table.levels {
            prop_assert!(level.cashback_percent.is_none_or(in_percent_range) && level.spend_cap_percent.is_none_or(in_percent_range));
        }
    }
    prop_assert!(rules.spending.cap_percent.is_none_or(in_percent_range));
    prop_assert!(rules.spending.min_balance_to_spend >= Decimal::ZERO);
    for rule in &rules.rules {
        match &rule.effect {
            Effect::PercentOfLines { percent } | Effect::PercentOfReceipt { percent } => {
                prop_assert!(in_percent_range(*percent), "percent {}", percent)
            }
            Effect::FixedPoints { points } => prop_assert!(valid_points(*points, scale), "points {}", points),
            Effect::Multiplier { factor } => prop_assert!(*factor > Decimal::ONE && *factor <= Decimal::ONE_HUNDRED, "factor {}", factor),
            Effect::ChangeToPoints { max_points } => prop_assert!(valid_points(*max_points, scale)),
            Effect::Referral { percents } => prop_assert!(!percents.is_empty() && percents.iter().copied().all(in_percent_range)),
            Effect::IssueCertificate { value, valid_days, cap_percent } => {
                prop_assert!(valid_points(*value, scale) && (1..=3650).contains(valid_days));
                prop_assert!(*cap_percent > Decimal::ZERO && *cap_percent <= Decimal::ONE_HUNDRED);
            }
            Effect::TierPercent => {}
        }
        prop_assert!(rule.limits.per_receipt_points.is_none_or(|points| valid_points(points, scale)), "per_receipt_points");
        if let Some(limit) = &rule.limits.per_customer {
            prop_assert!(limit.points.is_some() || limit.uses.is_some());
            prop_assert!(limit.points.is_none_or(|points| valid_points(points, scale)) && limit.uses != Some(0));
        }
        let receipt = &rule.when.receipt;
        for value in [receipt.min_total, receipt.min_matching_total, receipt.min_matching_quantity].into_iter().flatten() {
            prop_assert!(value >= Decimal::ZERO);
        }
    }
    Ok(())
}

/// A fixed receipt to run accepted wild documents on.
fn wild_evaluation(compiled: &CompiledRules, scale: u32) -> Result<(), TestCaseError> {
    let mut program = ProgramPolicy::with_defaults("p");
    program.points_scale = scale;
    let at = Utc.with_ymd_and_hms(2026, 3, 10, 7, 0, 0).single().expect("valid time");
    let mut account = AccountState::new("acc".into(), true, at - Duration::days(100));
    account.tags = vec!["a1".into()];
    account.profile.birth_date = NaiveDate::from_ymd_opt(1990, 3, 11);
    let lines: Vec<BasketLine> = ["a1", "b2", "c3", "zz"]
        .iter()
        .enumerate()
        .map(|(index, name)| BasketLine {
            line_no: u32::try_from(index + 1).expect("few lines"),
            sku: (*name).to_owned(),
            category: (*name).to_owned(),
            brand: (*name).to_owned(),
            quantity: Decimal::ONE,
            unit_price: Decimal::new(123_456, 2),
            line_total: Decimal::new(123_456, 2),
            excise: index == 2,
            promo_price: index == 3,
        })
        .collect();
    let bases: Vec<Decimal> = lines.iter().map(|line| line.line_total).collect();
    let ctx = PurchaseContext {
        program: &program,
        account: &account,
        lines: &lines,
        bases: &bases,
        at,
        store_id: "a1",
        till_id: "a1",
        channel: "a1",
        coupons: &["a1".to_owned()],
        change: Decimal::new(55, 2),
        allowance: &loyalty_core::rules::campaigns::UNLIMITED,
    };
    check_earn_adds_up(&evaluate_purchase(compiled, &ctx))?;
    let quote = spend_quote(compiled, &program, &account, &lines, at, Decimal::from(1_000), at);
    prop_assert!(quote.max >= Decimal::ZERO && quote.max <= Decimal::from(1_000));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// (a) Any document compiles to rules or to problems, never a panic; what it accepts is in
    /// range and evaluates safely.
    #[test]
    fn compile_accepts_or_lists_problems_and_never_panics((rules, scale) in wild_rule_set()) {
        match compile(&rules, 7, scale) {
            Ok(compiled) => {
                check_accepted(&rules, scale)?;
                prop_assert_eq!(compiled.version(), 7);
                prop_assert_eq!(compiled.active_rule_ids().count(), rules.rules.iter().filter(|rule| rule.active).count());
                wild_evaluation(&compiled, scale)?;
            }
            Err(error) => {
                prop_assert!(!error.problems.is_empty(), "an error without problems");
                prop_assert!(error.problems.iter().all(|problem| !problem.at.is_empty() && !problem.reason.is_empty()));
            }
        }
    }

    /// (b) No negative points anywhere, and lines, rules and each line's applied rules add up.
    #[test]
    fn earn_is_never_negative_and_adds_up(scenario in scenario_strategy()) {
        let compiled = scenario.compiled()?;
        let earn = evaluate_purchase(&compiled, &scenario.context());
        check_earn_adds_up(&earn)?;
        prop_assert_eq!(earn.lines.len(), scenario.lines.len());
        for (line, (earned, base)) in scenario.lines.iter().zip(earn.lines.iter().zip(&scenario.bases)) {
            prop_assert_eq!(earned.line_no, line.line_no);
            prop_assert_eq!(earned.base, *base);
        }
    }

    /// (c) Per-receipt limits and per-customer budgets, on one evaluation and over up to four
    /// receipts accrued one after another on the same day.
    #[test]
    fn limits_and_budgets_are_respected(scenario in scenario_strategy(), receipts in 1_usize..=4) {
        let compiled = scenario.compiled()?;
        let earn = evaluate_purchase(&compiled, &scenario.context());
        check_limits(&scenario, &earn)?;
        check_budgets_over_receipts(&scenario, &compiled, receipts)?;
    }

    /// (d) Spending stays within the cap, the balance and the spending rules, and checkout keeps
    /// the quote: above it refused, within it accepted.
    #[test]
    fn spending_never_exceeds_its_cap_and_quotes_are_kept((scenario, asks) in spending_scenario_strategy()) {
        let compiled = scenario.compiled()?;
        check_spending_ops(&scenario, &compiled, &asks)?;
    }

    /// (e) The same input gives the same output, whatever the order of the document's rules and
    /// of the entries in their lists.
    #[test]
    fn evaluation_is_deterministic_and_independent_of_rule_order(
        (scenario, order) in scenario_strategy().prop_flat_map(|scenario| {
            let count = scenario.rules.rules.len();
            (Just(scenario), Just((0..count).collect::<Vec<_>>()).prop_shuffle())
        })
    ) {
        let compiled = scenario.compiled()?;
        let first = evaluate_purchase(&compiled, &scenario.context());
        prop_assert_eq!(&evaluate_purchase(&compiled, &scenario.context()), &first, "a second evaluation differs");
        let mut reordered = scenario.clone();
        reordered.rules.rules = shuffled(&scenario.rules.rules, &order);
        for rule in &mut reordered.rules.rules {
            reversed_lists(&mut rule.when.lines);
        }
        if let Some(exclude) = reordered.rules.spending.exclude.as_mut() {
            reversed_lists(exclude);
        }
        let recompiled = reordered.compiled()?;
        prop_assert_eq!(&evaluate_purchase(&recompiled, &reordered.context()), &first, "rule order {:?} changes the earn", order);
        let at = scenario.at;
        let quote = |rules: &CompiledRules| spend_quote(rules, &scenario.program, &scenario.account, &scenario.lines, at, Decimal::from(10_000), at);
        prop_assert_eq!(quote(&recompiled), quote(&compiled), "rule order changes the spend quote");
    }
}

/// Guards against vacuous generators: the scenarios reach the cases the properties are about.
#[test]
fn generated_scenarios_reach_every_path() {
    let mut runner = TestRunner::deterministic();
    let strategy = scenario_strategy();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for _ in 0..300 {
        let scenario = strategy.new_tree(&mut runner).expect("a generated scenario").current();
        let compiled = compile(&scenario.rules, 1, scenario.program.points_scale).expect("the generator makes valid programs");
        let earn = evaluate_purchase(&compiled, &scenario.context());
        let mut count = |what: &'static str, happened: bool| *counts.entry(what).or_default() += usize::from(happened);
        count("earning receipts", earn.total > Decimal::ZERO);
        count("receipts with 3+ rules paid", earn.rules.len() >= 3);
        count("lines with 2+ rules", earn.lines.iter().any(|line| line.applied.len() >= 2));
        count("bases below totals", scenario.lines.iter().zip(&scenario.bases).any(|(line, base)| *base < line.line_total));
        let paid = |test: fn(&Effect) -> bool| {
            earn.rules.iter().any(|given| scenario.rules.rules.iter().any(|rule| *rule.id == *given.rule_id && test(&rule.effect)))
        };
        count("percent_of_lines paid", paid(|effect| matches!(effect, Effect::PercentOfLines { .. })));
        count("percent_of_receipt paid", paid(|effect| matches!(effect, Effect::PercentOfReceipt { .. })));
        count("fixed_points paid", paid(|effect| matches!(effect, Effect::FixedPoints { .. })));
        count("multiplier paid", paid(|effect| matches!(effect, Effect::Multiplier { .. })));
        count("tier_percent paid", paid(|effect| matches!(effect, Effect::TierPercent)));
        count(
            "per-receipt limit reached",
            scenario.rules.rules.iter().any(|rule| rule.limits.per_receipt_points.is_some_and(|max| given_by(&earn, &rule.id) == max)),
        );
        count(
            "per-customer points budget reached",
            scenario.rules.rules.iter().any(|rule| {
                rule.limits.per_customer.as_ref().and_then(|limit| limit.points).is_some_and(|max| {
                    let (used_points, _) = used(&scenario.account, rule, scenario.local_day());
                    given_by(&earn, &rule.id) > Decimal::ZERO && given_by(&earn, &rule.id) == max - used_points
                })
            }),
        );
        count(
            "budgeted rule shut out by its uses",
            scenario.rules.rules.iter().any(|rule| {
                rule.limits
                    .per_customer
                    .as_ref()
                    .and_then(|limit| limit.uses)
                    .is_some_and(|uses| used(&scenario.account, rule, scenario.local_day()).1 >= uses)
            }),
        );
        count("tier above the first", scenario.rules.tiers.is_some() && earn.tier != "L0");
    }
    let mut spend_counts: HashMap<String, usize> = HashMap::new();
    let strategy = spending_scenario_strategy();
    for _ in 0..300 {
        let (scenario, _) = strategy.new_tree(&mut runner).expect("a generated scenario").current();
        let compiled = compile(&scenario.rules, 1, scenario.program.points_scale).expect("the generator makes valid programs");
        let spendable = scenario.account.balance_at(scenario.at).spendable;
        let quote = spend_quote(&compiled, &scenario.program, &scenario.account, &scenario.lines, scenario.at, spendable, scenario.at);
        *spend_counts.entry(format!("{:?}", quote.limit)).or_default() += 1;
        *spend_counts.entry("max above zero".to_owned()).or_default() += usize::from(quote.max > Decimal::ZERO);
        *spend_counts.entry("certificates".to_owned()).or_default() += usize::from(!quote.certificate_limits.is_empty());
        *spend_counts.entry("lines excluded".to_owned()).or_default() +=
            usize::from(quote.eligible < scenario.lines.iter().map(|line| line.line_total).sum::<Decimal>());
    }
    eprintln!("coverage over 300 scenarios: {counts:#?}\nspending: {spend_counts:#?}");
    for (what, count) in &counts {
        assert!(*count > 0, "no {what} in 300 generated scenarios: {counts:#?}");
    }
    for what in ["ReceiptCap", "Balance", "NotRegistered", "MinimumBalance", "max above zero", "certificates", "lines excluded"] {
        assert!(spend_counts.get(what).is_some_and(|count| *count > 0), "no {what} in 300 spending scenarios: {spend_counts:#?}");
    }
}
