//! The example programs in `deploy/programs/`, run on real receipts and checked to the point.
//!
//! Each case is a receipt in, the points per line and per rule out. The programs are the files an
//! operator deploys, read by the same parser the engine uses, so a change to a file that changes
//! what customers get fails here.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use loyalty_core::Decimal;
use loyalty_core::account::{AccountState, RuleCounter};
use loyalty_core::basket::BasketLine;
use loyalty_core::outcome::SpendLimit;
use loyalty_core::program::ProgramPolicy;
use loyalty_core::rules::compile::format_of_path;
use loyalty_core::rules::evaluate::{PurchaseContext, evaluate_purchase};
use loyalty_core::rules::spending::spend_quote;
use loyalty_core::rules::{CompiledRules, compile, parse_rule_set};

fn program_file(name: &str) -> CompiledRules {
    let path = format!("{}/../../deploy/programs/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let format = format_of_path(&path).expect("known extension");
    let rules = parse_rule_set(&text, format).unwrap_or_else(|error| panic!("{path}: {error}"));
    compile(&rules, 1, 0).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn dec(raw: &str) -> Decimal {
    raw.parse().expect("decimal")
}

/// A line: number, SKU, brand, total, and flags ("x" excise, "p" promo price).
fn line(line_no: u32, sku: &str, brand: &str, total: &str, flags: &str) -> BasketLine {
    BasketLine {
        line_no,
        sku: sku.into(),
        category: "grocery".into(),
        brand: brand.into(),
        quantity: Decimal::ONE,
        unit_price: dec(total),
        line_total: dec(total),
        excise: flags.contains('x'),
        promo_price: flags.contains('p'),
    }
}

/// 11:00 in Almaty on the given day.
fn local_morning(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, 6, 0, 0).single().expect("valid time")
}

fn customer(birth: Option<NaiveDate>) -> AccountState {
    let mut account = AccountState::new("acc".into(), true, local_morning(2025, 1, 1));
    account.profile.birth_date = birth;
    account
}

/// Evaluates a paid receipt; returns the points per line, per rule, and the total.
fn earn(rules: &CompiledRules, account: &AccountState, lines: &[BasketLine], at: DateTime<Utc>) -> (Vec<i64>, Vec<(String, i64)>, i64) {
    let program = ProgramPolicy::with_defaults("worked");
    let bases: Vec<Decimal> = lines.iter().map(|line| line.line_total).collect();
    let ctx = PurchaseContext {
        program: &program,
        account,
        lines,
        bases: &bases,
        at,
        store_id: "store-1",
        till_id: "till-1",
        channel: "pos",
        coupons: &[],
    };
    let earn = evaluate_purchase(rules, &ctx);
    let whole = |value: Decimal| i64::try_from(value.mantissa()).expect("small") / 10_i64.pow(value.scale());
    (
        earn.lines.iter().map(|line| whole(line.points)).collect(),
        earn.rules.iter().map(|rule| (rule.rule_id.clone(), whole(rule.points))).collect(),
        whole(earn.total),
    )
}

fn rules_of(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(id, points)| ((*id).to_owned(), *points)).collect()
}

#[test]
fn supermarket_ordinary_receipt_pays_the_base_and_the_own_brand_rate_and_skips_excise_and_promo() {
    let rules = program_file("supermarket.toml");
    let lines = [
        line(1, "milk", "", "900.00", ""),
        line(2, "vodka", "", "3000.00", "x"),
        line(3, "bread", "", "200.00", "p"),
        line(4, "cheese", "Dala", "2000.00", ""),
        line(5, "sku-10001", "", "500.00", ""),
    ];
    let (per_line, per_rule, total) = earn(&rules, &customer(None), &lines, local_morning(2026, 6, 1));
    assert_eq!(per_line, vec![9, 0, 0, 100, 25]);
    assert_eq!(per_rule, rules_of(&[("own-brand-5", 125), ("base", 9)]));
    assert_eq!(total, 134);
}

#[test]
fn supermarket_receipt_of_20000_or_more_earns_2_percent_except_where_a_higher_rule_applies() {
    let rules = program_file("supermarket.toml");
    let lines = [line(1, "meat", "", "15000.00", ""), line(2, "sku-10002", "", "4000.00", ""), line(3, "cognac", "", "2000.00", "x")];
    let (per_line, per_rule, total) = earn(&rules, &customer(None), &lines, local_morning(2026, 6, 1));
    assert_eq!(per_line, vec![300, 200, 0]);
    assert_eq!(per_rule, rules_of(&[("own-brand-5", 200), ("big-basket-2", 300)]));
    assert_eq!(total, 500);
    // 19,999.99 is below the threshold: the base rate.
    let lines = [line(1, "meat", "", "19999.99", "")];
    assert_eq!(earn(&rules, &customer(None), &lines, local_morning(2026, 6, 1)).2, 199);
}

#[test]
fn supermarket_birthday_window_is_14_percent_from_two_days_before_through_the_day() {
    let rules = program_file("supermarket.toml");
    let born = NaiveDate::from_ymd_opt(1990, 3, 12);
    let lines = [line(1, "meat", "", "1000.00", ""), line(2, "cheese", "Dala", "2000.00", ""), line(3, "beer", "", "5000.00", "x")];
    for day in [10, 11, 12] {
        let (per_line, per_rule, total) = earn(&rules, &customer(born), &lines, local_morning(2026, 3, day));
        assert_eq!((per_line, per_rule, total), (vec![140, 280, 0], rules_of(&[("birthday-14", 420)]), 420), "March {day}");
    }
    for day in [9, 13] {
        let (_, per_rule, total) = earn(&rules, &customer(born), &lines, local_morning(2026, 3, day));
        assert_eq!((per_rule, total), (rules_of(&[("own-brand-5", 100), ("base", 10)]), 110), "March {day}");
    }
    // The window wraps the new year: born on 1 January, 30 December counts.
    let (_, _, total) = earn(&rules, &customer(NaiveDate::from_ymd_opt(1990, 1, 1)), &lines[..1], local_morning(2026, 12, 30));
    assert_eq!(total, 140);
}

#[test]
fn supermarket_birthday_points_are_capped_per_receipt_and_per_year() {
    let rules = program_file("supermarket.toml");
    let born = NaiveDate::from_ymd_opt(1990, 3, 12);
    let big = [line(1, "tv", "", "50000.00", "")];
    let (_, per_rule, total) = earn(&rules, &customer(born), &big, local_morning(2026, 3, 12));
    assert_eq!((per_rule, total), (rules_of(&[("birthday-14", 5000)]), 5000), "5,000 per receipt");
    let mut spent_budget = customer(born);
    spent_budget.counters.push(RuleCounter { rule_id: "birthday-14".into(), period: "2026".into(), points: dec("8000"), uses: 2 });
    let (_, per_rule, _) = earn(&rules, &spent_budget, &[line(1, "tv", "", "20000.00", "")], local_morning(2026, 3, 12));
    assert_eq!(per_rule, rules_of(&[("birthday-14", 2000)]), "10,000 a year, 8,000 used");
    // Last year's counter does not count this year.
    spent_budget.counters[0].period = "2025".into();
    let (_, per_rule, _) = earn(&rules, &spent_budget, &[line(1, "tv", "", "20000.00", "")], local_morning(2026, 3, 12));
    assert_eq!(per_rule, rules_of(&[("birthday-14", 2800)]));
}

#[test]
fn supermarket_rounds_each_rule_over_the_receipt_not_each_line() {
    let rules = program_file("supermarket.toml");
    let lines: Vec<BasketLine> = (1..=10).map(|n| line(n, "gum", "", "50.00", "")).collect();
    let (per_line, _, total) = earn(&rules, &customer(None), &lines, local_morning(2026, 6, 1));
    assert_eq!(total, 5);
    assert_eq!(per_line.iter().sum::<i64>(), 5);
}

#[test]
fn supermarket_points_pay_at_most_20_percent_and_never_for_excise() {
    let rules = program_file("supermarket.toml");
    let program = ProgramPolicy::with_defaults("worked");
    let lines = [line(1, "meat", "", "10000.00", ""), line(2, "vodka", "", "5000.00", "x")];
    let now = local_morning(2026, 6, 1);
    let quote = spend_quote(&rules, &program, &customer(None), &lines, now, dec("5000"));
    assert_eq!((quote.max, quote.limit, quote.eligible), (dec("2000"), SpendLimit::ReceiptCap, dec("10000.00")));
    let quote = spend_quote(&rules, &program, &customer(None), &lines, now, dec("1500"));
    assert_eq!((quote.max, quote.limit), (dec("1500"), SpendLimit::Balance));
    let mut anonymous = customer(None);
    anonymous.registered = false;
    let quote = spend_quote(&rules, &program, &anonymous, &lines, now, dec("5000"));
    assert_eq!((quote.max, quote.limit), (Decimal::ZERO, SpendLimit::NotRegistered));
}
