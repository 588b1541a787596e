//! The rules engine at checkout, measured alone: `evaluate_purchase` for baskets of 1, 20 and 200
//! lines against programs of 10, 100 and 1,000 active rules (`rules/evaluate/{rules}_rules_{lines}_lines`),
//! `spend_quote` for 20 lines against 1,000 rules, and `compile` of the 1,000-rule program.
//!
//! Why: every Authorize and Accrue evaluates the basket, in the request path, while holding the
//! account's lock. `compile` indexes purchase rules by SKU, category, brand, tier and tag, so the
//! cost of an evaluation should grow with the lines and with the rules that can match them, not
//! with all rules in the program: a 1,000-rule program should cost little more than a 10-rule one
//! for the same basket. These cells show whether it does.
//!
//! The programs are synthetic but shaped like the 20,000-SKU supermarket of the domain notes
//! (`sku-00000`..`sku-19999` in 200 categories `cat-000`..`cat-199`, the last ten excise goods;
//! 400 brands): a 1% base rule (excise and promo lines excluded), a 5-level tier table paid by a
//! `tier_percent` rule, a birthday-window rule, a receipt-total threshold rule, then rules on lists
//! of 20-50 SKUs, on categories, on brands and on customer segments, with week-day, hour and date
//! windows, exclusive / stackable / always mixes and per-receipt and per-customer limits. A small
//! seeded generator (SplitMix64) builds them, so every run measures the same programs and baskets.
//! Baskets draw SKUs from the same catalogue with the same popularity skew as the rules' SKU lists,
//! so a realistic share of lines hits indexed rules; the share is printed before each cell.
//! The account, the store and the time are fixed (18:30 on Wednesday 10 June 2026 in the program's
//! time zone, `ProgramPolicy::with_defaults`), and the customer's birthday window is open.

use std::hint::black_box;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use loyalty_core::account::{AccountState, Bucket, Certificate, MonthSpend, RuleCounter};
use loyalty_core::basket::BasketLine;
use loyalty_core::program::ProgramPolicy;
use loyalty_core::rules::definition::{
    BirthdayWindow, Conditions, CustomerConditions, CustomerLimit, Effect, HoursWindow, Limits, LineFilter, Period, ReceiptConditions,
    ReviewPeriod, SpendingRules, Stacking, TierLevel, TierTable, Trigger, Validity,
};
use loyalty_core::rules::evaluate::{PurchaseContext, evaluate_purchase};
use loyalty_core::rules::spending::spend_quote;
use loyalty_core::rules::tiers::month_index;
use loyalty_core::rules::{CompiledRules, Rule, RuleSet, compile};
use rust_decimal::Decimal;

const SKUS: u64 = 20_000;
const SKUS_PER_CATEGORY: u64 = 100;
/// Categories from this one on are excise goods (alcohol, tobacco).
const FIRST_EXCISE_CATEGORY: u64 = 190;
const BRANDS: u64 = 400;
const TIERS: [(&str, i64, i64, i64); 5] =
    [("base", 0, 1, 20), ("silver", 50_000, 2, 25), ("gold", 150_000, 3, 30), ("platinum", 400_000, 5, 40), ("diamond", 1_000_000, 7, 50)];

/// SplitMix64: a tiny deterministic generator, so the programs and baskets are the same every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[usize::try_from(self.next() % items.len() as u64).expect("index fits")]
    }

    /// A SKU by popularity: rank r is drawn with density falling as 1/sqrt(r) (u^2 of a uniform u),
    /// and ranks are spread over the catalogue by a fixed permutation, so popular goods sit in every
    /// category.
    fn popular_sku(&mut self) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        // Truncation is the intent: a rank in 0..SKUS.
        let rank = ((u * u) * SKUS as f64) as u64;
        (rank.min(SKUS - 1) * 7_919) % SKUS
    }
}

fn sku(index: u64) -> String {
    format!("sku-{index:05}")
}

fn category_of(index: u64) -> u64 {
    index / SKUS_PER_CATEGORY
}

fn category(index: u64) -> String {
    format!("cat-{index:03}")
}

fn brand(index: u64) -> String {
    format!("brand-{index:03}")
}

/// Every tenth SKU is unbranded; the others belong to 400 brands of 20 consecutive SKUs each.
fn brand_of(index: u64) -> String {
    if index.is_multiple_of(10) { String::new() } else { brand((index / 20) % BRANDS) }
}

fn percent(value: u64) -> Decimal {
    Decimal::from(value)
}

fn rule(id: String, priority: i32, stacking: Stacking, when: Conditions, effect: Effect) -> Rule {
    Rule {
        id,
        name: String::new(),
        campaign: None,
        active: true,
        priority,
        stacking,
        trigger: Trigger::Purchase,
        event: None,
        when,
        effect,
        limits: Limits::default(),
        valid: Validity::default(),
    }
}

fn earning_lines() -> LineFilter {
    LineFilter { excise: Some(false), promo_price: Some(false), ..LineFilter::default() }
}

fn tier_table() -> TierTable {
    TierTable {
        window_months: 12,
        review: ReviewPeriod::Quarter,
        levels: TIERS
            .iter()
            .map(|&(id, min_spend, cashback, cap)| TierLevel {
                id: id.into(),
                min_spend: Decimal::from(min_spend),
                cashback_percent: Some(Decimal::from(cashback)),
                spend_cap_percent: Some(Decimal::from(cap)),
            })
            .collect(),
    }
}

/// One of the program's campaign rules: on SKUs, categories, brands or a segment, with a random
/// effect, stacking, validity and limits.
fn campaign_rule(g: &mut Gen, number: usize) -> Rule {
    let kind = g.range(0, 99);
    let id = match kind {
        0..45 => format!("sku-promo-{number:04}"),
        45..75 => format!("category-promo-{number:04}"),
        75..95 => format!("brand-promo-{number:04}"),
        _ => format!("segment-{number:04}"),
    };
    let mut lines = LineFilter::default();
    let mut customer = CustomerConditions::default();
    let mut receipt = ReceiptConditions::default();
    let effect;
    if kind < 45 {
        // A promotion on a list of 20-50 products.
        let count = g.range(20, 50);
        lines.skus = (0..count).map(|_| sku(g.popular_sku())).collect();
        lines.skus.sort();
        lines.skus.dedup();
        effect = match g.range(0, 9) {
            0..=5 => Effect::PercentOfLines { percent: percent(g.range(3, 15)) },
            6 | 7 => Effect::Multiplier { factor: Decimal::from(g.range(2, 3)) },
            _ => {
                receipt.min_matching_quantity = Some(Decimal::from(2));
                Effect::FixedPoints { points: Decimal::from(g.range(5, 30) * 10) }
            }
        };
    } else if kind < 75 {
        // A category week: 1-3 categories, sometimes without promo-price goods or one brand.
        let count = g.range(1, 3);
        lines.categories = (0..count).map(|_| category(g.range(0, FIRST_EXCISE_CATEGORY - 1))).collect();
        if g.chance(40) {
            lines.promo_price = Some(false);
        }
        if g.chance(20) {
            lines.exclude_brands = vec![brand(g.range(0, BRANDS - 1))];
        }
        effect = if g.chance(85) {
            Effect::PercentOfLines { percent: percent(g.range(2, 5)) }
        } else {
            Effect::Multiplier { factor: Decimal::from(2) }
        };
    } else if kind < 95 {
        // A supplier's brand promotion.
        let count = g.range(1, 2);
        lines.brands = (0..count).map(|_| brand(g.range(0, BRANDS - 1))).collect();
        effect = if g.chance(75) {
            Effect::PercentOfLines { percent: percent(g.range(3, 10)) }
        } else {
            Effect::Multiplier { factor: Decimal::from(g.range(2, 4)) }
        };
    } else {
        // A segment offer: every earning line, for some tags or tiers.
        lines = earning_lines();
        if g.chance(50) {
            customer.tags_any = vec![g.pick(&["pensioner", "large_family", "student", "staff"]).to_string()];
        } else {
            customer.tiers = vec![g.pick(&TIERS).0.to_owned()];
        }
        effect = Effect::PercentOfLines { percent: percent(g.range(1, 3)) };
    }
    let stacking = match g.range(0, 9) {
        // "Double points", never double twice: at most one multiplier per line.
        _ if matches!(effect, Effect::Multiplier { .. }) => Stacking::Exclusive,
        0..=6 => Stacking::Stackable,
        7 | 8 => Stacking::Exclusive,
        _ => Stacking::Always,
    };
    let priority = i32::try_from(g.range(1, 250)).expect("small priority");
    let mut rule = rule(id, priority, stacking, Conditions { lines, receipt, customer, ..Conditions::default() }, effect);
    rule.campaign = Some(format!("campaign-{}", number % 40));
    // Validity: a date window (most in force, some over or not yet started), week days, hours.
    if g.chance(30) {
        let (from, until) = *g.pick(&[
            ("2026-06-01", "2026-06-30"),
            ("2026-05-15", "2026-06-14"),
            ("2026-06-08", "2026-06-21"),
            ("2026-05-01", "2026-05-31"),
            ("2026-07-01", "2026-07-31"),
        ]);
        rule.valid.from = Some(from.into());
        rule.valid.until = Some(until.into());
    }
    if g.chance(25) {
        const DAYS: [&[&str]; 4] = [&["sat", "sun"], &["mon", "tue", "wed"], &["wed"], &["thu", "fri"]];
        rule.valid.days = g.pick(&DAYS).iter().map(|day| (*day).to_owned()).collect();
    }
    if g.chance(20) {
        let (from, until) = *g.pick(&[("08:00", "11:00"), ("17:00", "21:00"), ("22:00", "02:00"), ("12:00", "14:00")]);
        rule.valid.hours = Some(HoursWindow { from: from.into(), until: until.into() });
    }
    if g.chance(20) {
        rule.limits.per_receipt_points = Some(Decimal::from(g.range(1, 20) * 100));
    }
    if g.chance(15) {
        rule.limits.per_customer = Some(if g.chance(60) {
            CustomerLimit { period: Period::Month, points: Some(Decimal::from(g.range(5, 50) * 100)), uses: None }
        } else {
            CustomerLimit {
                period: *g.pick(&[Period::Week, Period::Ever]),
                points: None,
                uses: Some(u32::try_from(g.range(1, 4)).expect("small")),
            }
        });
    }
    rule
}

/// A program of `count` active purchase rules (at least 4): the base, tier, birthday and
/// receipt-total rules, then campaign rules.
fn program_rules(count: usize, seed: u64) -> RuleSet {
    let mut g = Gen(seed);
    let base = rule(
        "base".into(),
        0,
        Stacking::Stackable,
        Conditions { lines: earning_lines(), ..Conditions::default() },
        Effect::PercentOfLines { percent: Decimal::ONE },
    );
    let mut tier = rule(
        "tier-cashback".into(),
        10,
        Stacking::Stackable,
        Conditions {
            lines: earning_lines(),
            customer: CustomerConditions { tiers: TIERS[1..].iter().map(|tier| tier.0.to_owned()).collect(), ..Default::default() },
            ..Conditions::default()
        },
        Effect::TierPercent,
    );
    tier.limits.per_receipt_points = Some(Decimal::from(20_000));
    let mut birthday = rule(
        "birthday".into(),
        300,
        Stacking::Exclusive,
        Conditions {
            lines: earning_lines(),
            customer: CustomerConditions {
                birthday: Some(BirthdayWindow { days_before: 3, days_after: 3 }),
                registered: Some(true),
                ..Default::default()
            },
            ..Conditions::default()
        },
        Effect::PercentOfReceipt { percent: Decimal::from(5) },
    );
    birthday.limits.per_customer = Some(CustomerLimit { period: Period::Year, points: Some(Decimal::from(10_000)), uses: Some(3) });
    let mut big_basket = rule(
        "big-basket".into(),
        100,
        Stacking::Stackable,
        Conditions {
            lines: earning_lines(),
            receipt: ReceiptConditions { min_total: Some(Decimal::from(20_000)), ..Default::default() },
            ..Conditions::default()
        },
        Effect::FixedPoints { points: Decimal::from(500) },
    );
    big_basket.limits.per_receipt_points = Some(Decimal::from(500));
    let mut rules = vec![base, tier, birthday, big_basket];
    rules.extend((rules.len()..count).map(|number| campaign_rule(&mut g, number)));
    // Points pay for nothing excise (the last ten categories) and no gift card (20 SKUs).
    let exclude = LineFilter {
        skus: (0..20).map(|index| sku(index * 997 % SKUS)).collect(),
        categories: (FIRST_EXCISE_CATEGORY..SKUS / SKUS_PER_CATEGORY).map(category).collect(),
        ..LineFilter::default()
    };
    RuleSet {
        tiers: Some(tier_table()),
        spending: SpendingRules {
            cap_percent: Some(Decimal::from(20)),
            min_balance_to_spend: Decimal::from(100),
            registered_only: true,
            exclude: Some(exclude),
        },
        rules,
        rfm: None,
        budgets: Default::default(),
    }
}

/// A basket of `count` lines drawn from the catalogue by popularity.
fn basket(count: u32, seed: u64) -> Vec<BasketLine> {
    let mut g = Gen(seed);
    (1..=count)
        .map(|line_no| {
            let index = g.popular_sku();
            let quantity = Decimal::from(g.range(1, 3));
            let unit_price = Decimal::new(i64::try_from(g.range(15_000, 500_000)).expect("small price"), 2);
            BasketLine {
                line_no,
                sku: sku(index),
                category: category(category_of(index)),
                brand: brand_of(index),
                quantity,
                unit_price,
                line_total: unit_price * quantity,
                excise: category_of(index) >= FIRST_EXCISE_CATEGORY,
                promo_price: g.chance(10),
            }
        })
        .collect()
}

/// 18:30 on Wednesday 10 June 2026 in Almaty (UTC+5).
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 10, 13, 30, 0).single().expect("valid time")
}

/// A registered gold-tier pensioner two days before a birthday, with 60 days of earnings, a
/// certificate, and part of the birthday budget used this year.
fn account(program: &ProgramPolicy) -> AccountState {
    let now = now();
    let mut account = AccountState::new("acc-bench".into(), true, now - Duration::days(700));
    account.profile.birth_date = NaiveDate::from_ymd_opt(1985, 6, 12);
    account.tags = vec!["pensioner".into()];
    account.purchases = 240;
    account.last_purchase_at = Some(now - Duration::days(3));
    let month = month_index(now.with_timezone(&program.time_zone).date_naive());
    account.tier_progress.months = (0..6).map(|back| MonthSpend { month: month - back, amount: Decimal::from(30_000) }).collect();
    account.tier = "gold".into();
    account.counters = vec![RuleCounter { rule_id: "birthday".into(), period: "2026".into(), points: Decimal::from(1_200), uses: 1 }];
    for day in 0..60 {
        let earned = now - Duration::days(90 - day);
        account.buckets.push(Bucket {
            id: account.next_bucket_id,
            receipt_id: Some(format!("r{day}")),
            available_from: program.available_from(earned),
            expires_at: program.expires_at(earned),
            remaining: Decimal::from(40 + day),
            certificate: None,
        });
        account.next_bucket_id += 1;
    }
    account.buckets.push(Bucket {
        id: account.next_bucket_id,
        receipt_id: None,
        available_from: now - Duration::days(2),
        expires_at: now + Duration::days(13),
        remaining: Decimal::from(1_000),
        certificate: Some(Certificate { rule_id: "birthday-certificate".into(), label: "birthday".into(), cap_percent: Decimal::from(7) }),
    });
    account.next_bucket_id += 1;
    account.buckets.sort_by_key(|bucket| (bucket.expires_at, bucket.id));
    account
}

fn context<'a>(
    program: &'a ProgramPolicy,
    account: &'a AccountState,
    lines: &'a [BasketLine],
    bases: &'a [Decimal],
) -> PurchaseContext<'a> {
    PurchaseContext {
        program,
        account,
        lines,
        bases,
        at: now(),
        store_id: "store-01",
        till_id: "till-01",
        channel: "pos",
        coupons: &[],
        change: Decimal::ZERO,
        allowance: &loyalty_core::rules::campaigns::UNLIMITED,
    }
}

/// How much of the basket the program touches: printed once per cell, so the timings can be read
/// against the work the index lets through.
fn describe(rules: &CompiledRules, ctx: &PurchaseContext<'_>, name: &str) {
    let earn = evaluate_purchase(rules, ctx);
    let promoted = earn.lines.iter().filter(|line| line.applied.iter().any(|applied| applied.rule_id.contains("promo-"))).count();
    let earning = earn.lines.iter().filter(|line| !line.points.is_zero()).count();
    eprintln!(
        "{name}: {earning} of {} lines earn, {promoted} from a SKU, category or brand promotion; {} rules paid, {} points",
        ctx.lines.len(),
        earn.rules.len(),
        earn.total
    );
}

fn compiled(program: &ProgramPolicy, count: usize) -> CompiledRules {
    compile(&program_rules(count, 0x5EED_0000 + count as u64), 1, program.points_scale).expect("the synthetic program compiles")
}

fn evaluate(c: &mut Criterion) {
    let program = ProgramPolicy::with_defaults("bench");
    let account = account(&program);
    for count in [10, 100, 1_000] {
        let rules = compiled(&program, count);
        assert_eq!(rules.active_rule_ids().count(), count, "every rule active");
        for lines in [1, 20, 200] {
            let basket = basket(lines, 0xBA5C_E700 + u64::from(lines));
            let bases: Vec<Decimal> = basket.iter().map(|line| line.line_total).collect();
            let ctx = context(&program, &account, &basket, &bases);
            let name = format!("rules/evaluate/{count}_rules_{lines}_lines");
            describe(&rules, &ctx, &name);
            c.bench_function(&name, |b| b.iter(|| evaluate_purchase(black_box(&rules), black_box(&ctx))));
        }
    }
}

fn spend_and_compile(c: &mut Criterion) {
    let program = ProgramPolicy::with_defaults("bench");
    let account = account(&program);
    let rules = compiled(&program, 1_000);
    let basket = basket(20, 0xBA5C_E700 + 20);
    let spendable = account.balance_at(now()).spendable;
    let quote = spend_quote(&rules, &program, &account, &basket, now(), spendable, now());
    eprintln!("rules/spend_quote/1000_rules_20_lines: at most {} of {} spendable points ({})", quote.max, spendable, quote.explanation);
    c.bench_function("rules/spend_quote/1000_rules_20_lines", |b| {
        b.iter(|| spend_quote(black_box(&rules), &program, black_box(&account), black_box(&basket), now(), spendable, now()))
    });
    let set = program_rules(1_000, 0x5EED_0000 + 1_000);
    c.bench_function("rules/compile/1000_rules", |b| b.iter(|| compile(black_box(&set), 1, program.points_scale).expect("compiles")));
}

criterion_group!(benches, evaluate, spend_and_compile);
criterion_main!(benches);
