//! The example programs in `deploy/programs/`, run on real receipts and checked to the point.
//!
//! Each case is a receipt in, the points per line and per rule out. The programs are the files an
//! operator deploys, read by the same parser the engine uses, so a change to a file that changes
//! what customers get fails here.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use loyalty_core::account::{AccountState, Bucket, Certificate, RuleCounter};
use loyalty_core::basket::BasketLimits;
use loyalty_core::basket::BasketLine;
use loyalty_core::ops::{self, BonusCmd, Checkout, RedeemCmd};
use loyalty_core::outcome::SpendLimit;
use loyalty_core::program::ProgramPolicy;
use loyalty_core::receipt::ReceiptState;
use loyalty_core::rejection::Rejection;
use loyalty_core::rules::compile::format_of_path;
use loyalty_core::rules::evaluate::evaluate_schedule;
use loyalty_core::rules::evaluate::{PurchaseContext, evaluate_purchase};
use loyalty_core::rules::spending::spend_quote;
use loyalty_core::rules::tiers;
use loyalty_core::rules::{CompiledRules, compile, parse_rule_set};
use loyalty_core::txn::Txn;
use loyalty_core::{Decimal, Origin};

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

/// The account with a bucket of `points` spendable from 2025 to 2030 (a certificate if given).
fn with_points(mut account: AccountState, points: &str, certificate: Option<Certificate>) -> AccountState {
    let id = account.next_bucket_id;
    account.next_bucket_id += 1;
    let expires_at = if certificate.is_some() { local_morning(2026, 6, 10) } else { local_morning(2030, 1, 1) };
    account.buckets.push(Bucket {
        id,
        receipt_id: None,
        available_from: local_morning(2025, 1, 1),
        expires_at,
        remaining: dec(points),
        certificate,
    });
    account.buckets.sort_by_key(|bucket| (bucket.expires_at, bucket.id));
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
        change: Decimal::ZERO,
        allowance: &loyalty_core::rules::campaigns::UNLIMITED,
    };
    let earn = evaluate_purchase(rules, &ctx);
    let whole = |value: Decimal| i64::try_from(value.mantissa()).expect("small") / 10_i64.pow(value.scale());
    (
        earn.lines.iter().map(|line| whole(line.points)).collect(),
        earn.rules.iter().map(|rule| (rule.rule_id.to_string(), whole(rule.points))).collect(),
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

/// A till offline on the birthday sends its receipt three days later: the birthday window is
/// judged at the sale, the points count their pending period and expiry from it.
#[test]
fn a_late_receipt_from_the_birthday_still_earns_the_birthday_percent() {
    let rules = program_file("supermarket.toml");
    let program = ProgramPolicy::with_defaults("worked");
    let limits = BasketLimits::default();
    let checkout = Checkout { program: &program, rules: &rules, limits: &limits };
    let (sold_at, now) = (local_morning(2026, 3, 12), local_morning(2026, 3, 15));
    let lines = vec![line(1, "meat", "", "1000.00", "")];
    let accrue = |occurred_at: Option<DateTime<Utc>>| {
        let account = customer(NaiveDate::from_ymd_opt(1990, 3, 12));
        let mut txn = Txn::begin(&program, &account, now, "tx".into(), Origin::default());
        let mut receipt = ReceiptState::new("R".into(), account.account_id.clone(), now, Origin::default());
        let cmd =
            ops::AccrueCmd { receipt_id: "R".into(), lines: lines.clone(), sale: Default::default(), change: Decimal::ZERO, occurred_at };
        let outcome = ops::accrue(&checkout, &mut txn, &mut receipt, &cmd).expect("accrued");
        let (account, _) = txn.finish().expect("invariants hold");
        (outcome, account)
    };
    let (late, account) = accrue(Some(sold_at));
    assert_eq!((late.earned, late.rules[0].rule_id.as_ref()), (dec("140"), "birthday-14"));
    assert_eq!(late.available_from, Some(program.available_from(sold_at)), "pending until the day after the sale");
    assert_eq!(late.expires_at, Some(program.expires_at(sold_at)));
    assert_eq!(account.last_purchase_at, Some(sold_at));
    assert_eq!(late.balance.available, dec("140"), "spendable now: the day after the sale has passed");
    let (on_time, _) = accrue(None);
    assert_eq!(on_time.earned, dec("10"), "three days after the birthday: base 1% only");
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
    let holder = with_points(customer(None), "5000", None);
    let quote = spend_quote(&rules, &program, &holder, &lines, now, dec("5000"), now);
    assert_eq!((quote.max, quote.limit, quote.eligible), (dec("2000"), SpendLimit::ReceiptCap, dec("10000.00")));
    let quote = spend_quote(&rules, &program, &holder, &lines, now, dec("1500"), now);
    assert_eq!((quote.max, quote.limit), (dec("1500"), SpendLimit::Balance));
    let mut anonymous = holder.clone();
    anonymous.registered = false;
    let quote = spend_quote(&rules, &program, &anonymous, &lines, now, dec("5000"), now);
    assert_eq!((quote.max, quote.limit), (Decimal::ZERO, SpendLimit::NotRegistered));
}

// ---------------------------------------------------------------------------------------------
// The café (deploy/programs/cafe.yaml)

/// A café customer whose spend over the last months reaches `spend`.
fn regular_with_spend(rules: &CompiledRules, spend: &str, at: DateTime<Utc>) -> AccountState {
    let program = ProgramPolicy::with_defaults("worked");
    let mut account = customer(None);
    let month = tiers::month_index(at.with_timezone(&program.time_zone).date_naive());
    tiers::record_spend(rules, &mut account, Some(month), dec(spend), at, program.time_zone);
    account.purchases = 3;
    account.last_purchase_at = Some(at);
    account
}

#[test]
fn cafe_pays_the_cashback_of_each_of_its_five_tiers() {
    let rules = program_file("cafe.yaml");
    let at = local_morning(2026, 6, 1);
    let lines = [line(1, "latte", "", "2500.00", ""), line(2, "croissant", "", "1500.00", "")];
    for (spend, tier, points) in
        [("0", "friend", 200), ("30000", "regular", 280), ("80000", "silver", 400), ("200000", "gold", 600), ("500000", "platinum", 800)]
    {
        let account = regular_with_spend(&rules, spend, at);
        assert_eq!(tiers::effective_tier(&rules, &account, at, chrono_tz::Asia::Almaty), tier);
        let (_, per_rule, total) = earn(&rules, &account, &lines, at);
        assert_eq!((per_rule, total), (rules_of(&[("tier-cashback", points)]), points), "{tier}");
    }
}

#[test]
fn cafe_caps_spending_by_tier_and_a_birthday_certificate_adds_at_most_7_percent() {
    let rules = program_file("cafe.yaml");
    let program = ProgramPolicy::with_defaults("worked");
    let now = local_morning(2026, 6, 1);
    let lines = [line(1, "cake", "", "10000.00", "")];
    // UDS's café figures: points pay 7% of a receipt at the first tier, rising to 20% at the top.
    for (spend, cap) in [("0", "7"), ("30000", "10"), ("80000", "12"), ("200000", "15"), ("500000", "20")] {
        let customer = with_points(regular_with_spend(&rules, spend, now), "5000", None);
        let quote = spend_quote(&rules, &program, &customer, &lines, now, dec("5000"), now);
        let expected = dec("10000") * dec(cap) / dec("100");
        assert_eq!((quote.max, quote.cap_percent), (expected, dec(cap)), "spend {spend}: {}", quote.explanation);
    }
    let gold = with_points(regular_with_spend(&rules, "250000", now), "5000", None);
    let quote = spend_quote(&rules, &program, &gold, &lines, now, dec("5000"), now);
    assert_eq!((quote.max, quote.cap_percent), (dec("1500"), dec("15")), "gold: 15%");
    assert_eq!(quote.explanation, "points may pay for 15% of the 10000 of eligible goods (tier gold cap)", "of money, not of points");
    let certificate = Certificate { rule_id: "birthday-certificate".into(), label: "birthday certificate".into(), cap_percent: dec("7") };
    let regular = with_points(with_points(regular_with_spend(&rules, "30000", now), "5000", None), "1000", Some(certificate.clone()));
    let quote = spend_quote(&rules, &program, &regular, &lines, now, dec("6000"), now);
    assert_eq!(quote.max, dec("1700"), "10% = 1,000 in points + 7% = 700 from the certificate");
    assert_eq!(quote.certificate_limits.iter().map(|(_, max)| *max).collect::<Vec<_>>(), vec![dec("700")]);
    let only_certificate = with_points(regular_with_spend(&rules, "30000", now), "1000", Some(certificate));
    let quote = spend_quote(&rules, &program, &only_certificate, &lines, now, dec("1000"), now);
    assert_eq!(quote.max, dec("700"), "a certificate alone pays at most its 7%");
}

#[test]
fn certificates_and_points_together_never_pay_for_more_than_the_receipt() {
    let rules = program_file("cafe.yaml");
    let program = ProgramPolicy::with_defaults("worked");
    let now = local_morning(2026, 6, 1);
    let lines = [line(1, "cake", "", "1000.00", "")];
    let gift = Certificate { rule_id: "gift".into(), label: "gift certificate".into(), cap_percent: dec("100") };
    let account = with_points(with_points(regular_with_spend(&rules, "30000", now), "5000", None), "5000", Some(gift));
    let quote = spend_quote(&rules, &program, &account, &lines, now, dec("10000"), now);
    assert_eq!(
        (quote.max, quote.limit),
        (dec("1000"), SpendLimit::ReceiptCap),
        "10% in points plus 100% from the certificate is bounded by the 1,000 receipt: {}",
        quote.explanation
    );
    let mut account = account;
    account.ledger_sum = account.booked_balance();
    let limits = BasketLimits::default();
    let checkout = Checkout { program: &program, rules: &rules, limits: &limits };
    let mut txn = Txn::begin(&program, &account, now, "tx".into(), Origin::default());
    let mut receipt = ReceiptState::new("R".into(), "acc".into(), now, Origin::default());
    let cmd = RedeemCmd { receipt_id: "R".into(), points: dec("1001"), hold_id: None, lines: lines.to_vec(), presence: Default::default() };
    assert!(matches!(ops::redeem(&checkout, &mut txn, &mut receipt, &cmd), Err(Rejection::ExceedsReceiptCap { .. })));
    ops::redeem(&checkout, &mut txn, &mut receipt, &RedeemCmd { points: dec("1000"), ..cmd }).expect("the whole receipt");
    txn.finish().expect("invariants hold");
}

#[test]
fn cafe_spend_takes_the_certificate_up_to_its_cap_then_points() {
    let rules = program_file("cafe.yaml");
    let program = ProgramPolicy::with_defaults("worked");
    let now = local_morning(2026, 6, 1);
    let certificate = Certificate { rule_id: "birthday-certificate".into(), label: "birthday certificate".into(), cap_percent: dec("7") };
    let mut account = with_points(with_points(regular_with_spend(&rules, "30000", now), "5000", None), "1000", Some(certificate));
    account.ledger_sum = account.booked_balance();
    let limits = BasketLimits::default();
    let checkout = Checkout { program: &program, rules: &rules, limits: &limits };
    let mut txn = Txn::begin(&program, &account, now, "tx".into(), Origin::default());
    let mut receipt = ReceiptState::new("R".into(), "acc".into(), now, Origin::default());
    let cmd = RedeemCmd {
        receipt_id: "R".into(),
        points: dec("1701"),
        hold_id: None,
        lines: vec![line(1, "cake", "", "10000.00", "")],
        presence: Default::default(),
    };
    assert!(matches!(ops::redeem(&checkout, &mut txn, &mut receipt, &cmd), Err(Rejection::ExceedsReceiptCap { .. })));
    let cmd = RedeemCmd { points: dec("1700"), ..cmd };
    ops::redeem(&checkout, &mut txn, &mut receipt, &cmd).expect("within both caps");
    let taken: Vec<(bool, Decimal)> = receipt.spent_slices.iter().map(|slice| (slice.certificate.is_some(), slice.amount)).collect();
    assert_eq!(taken, vec![(true, dec("700")), (false, dec("1000"))]);
    txn.finish().expect("invariants hold");
}

#[test]
fn cafe_welcome_and_review_bonuses_are_paid_once() {
    let rules = program_file("cafe.yaml");
    let program = ProgramPolicy::with_defaults("worked");
    let now = local_morning(2026, 6, 1);
    let limits = BasketLimits::default();
    let checkout = Checkout { program: &program, rules: &rules, limits: &limits };
    let account = customer(None);
    let mut txn = Txn::begin(&program, &account, now, "tx1".into(), Origin::default());
    let welcome = ops::enrollment_bonuses(&checkout, &mut txn);
    assert_eq!(welcome.iter().map(|award| (&*award.rule_id, award.points)).collect::<Vec<_>>(), vec![("welcome", dec("5000"))]);
    let (account, _) = txn.finish().expect("invariants");
    assert_eq!(account.balance_at(now).spendable, dec("5000"), "welcome points are spendable at once");
    let review = BonusCmd::Event { event: "review".into() };
    let mut txn = Txn::begin(&program, &account, now, "tx2".into(), Origin::default());
    assert_eq!(ops::bonus(&checkout, &mut txn, &review).expect("review").points, dec("1000"));
    let (account, _) = txn.finish().expect("invariants");
    let mut txn = Txn::begin(&program, &account, now, "tx3".into(), Origin::default());
    assert_eq!(ops::bonus(&checkout, &mut txn, &review).expect("second review").points, Decimal::ZERO, "once per customer");
    let mut txn = Txn::begin(&program, &account, now, "tx4".into(), Origin::default());
    let unknown = ops::bonus(&checkout, &mut txn, &BonusCmd::Event { event: "selfie".into() });
    assert!(matches!(unknown, Err(Rejection::UnknownEvent { .. })));
}

#[test]
fn cafe_win_back_certificate_comes_15_days_after_the_last_purchase_once_per_absence() {
    let rules = program_file("cafe.yaml");
    let program = ProgramPolicy::with_defaults("worked");
    let last_visit = local_morning(2026, 6, 1);
    let account = regular_with_spend(&rules, "5000", last_visit);
    let due = |days: i64| {
        evaluate_schedule(&rules, &program, &account, last_visit + chrono::Duration::days(days))
            .into_iter()
            .map(|(award, occasion)| (award.rule_id.clone(), occasion, award.points()))
            .collect::<Vec<_>>()
    };
    assert!(due(14).is_empty());
    assert_eq!(due(15), vec![("win-back".to_owned(), "after-2026-06-01".to_owned(), dec("2000"))]);
    assert_eq!(due(40), due(15), "the same occasion until the customer comes back");
}

#[test]
fn cafe_birthday_certificate_is_due_on_the_birthday_and_keyed_by_its_year() {
    let rules = program_file("cafe.yaml");
    let program = ProgramPolicy::with_defaults("worked");
    let mut account = customer(NaiveDate::from_ymd_opt(1990, 7, 20));
    account.last_purchase_at = Some(local_morning(2026, 7, 19));
    let on = |day: u32| evaluate_schedule(&rules, &program, &account, local_morning(2026, 7, day));
    assert!(on(19).is_empty());
    let due: Vec<(String, String)> = on(20).into_iter().map(|(award, occasion)| (award.rule_id, occasion)).collect();
    assert_eq!(due, vec![("birthday-certificate".to_owned(), "birthday-2026".to_owned())]);
    assert!(on(21).is_empty());
}

#[test]
fn cafe_referrals_pay_3_1_1_percent_up_the_chain_and_nothing_without_one() {
    let rules = program_file("cafe.yaml");
    let program = ProgramPolicy::with_defaults("worked");
    let at = local_morning(2026, 6, 1);
    let mut referred = regular_with_spend(&rules, "0", at);
    referred.referral_chain = vec!["parent".into(), "grandparent".into(), "great".into(), "beyond".into()];
    let lines = [line(1, "beans", "", "10000.00", "")];
    let bases: Vec<Decimal> = lines.iter().map(|line| line.line_total).collect();
    let ctx = PurchaseContext {
        program: &program,
        account: &referred,
        lines: &lines,
        bases: &bases,
        at,
        store_id: "s",
        till_id: "t",
        channel: "pos",
        coupons: &[],
        change: Decimal::ZERO,
        allowance: &loyalty_core::rules::campaigns::UNLIMITED,
    };
    let earn = evaluate_purchase(&rules, &ctx);
    let rewards: Vec<(u32, &str, Decimal)> = earn.referrals.iter().map(|r| (r.level, r.account_id.as_str(), r.points)).collect();
    assert_eq!(rewards, vec![(1, "parent", dec("300")), (2, "grandparent", dec("100")), (3, "great", dec("100"))]);
    assert_eq!(earn.total, dec("500"), "the buyer's own 5% is unchanged");
    let alone = regular_with_spend(&rules, "0", at);
    assert!(evaluate_purchase(&rules, &PurchaseContext { account: &alone, ..ctx }).referrals.is_empty());
}
