//! Rules that target RFM segments: "10% on coffee for at_risk customers" pays exactly the customers
//! in the segment at the time of the sale, says so on the receipt, agrees between the quote and the
//! accrual, and a document naming a segment that does not exist is refused with the rule and field.
//! A late receipt counts in its sale's month, and its refunds and cancellation take off that month.

use chrono::{DateTime, Duration, TimeZone, Utc};
use loyalty_core::account::AccountState;
use loyalty_core::basket::{BasketLimits, BasketLine};
use loyalty_core::ops::{self, AccrueCmd, AuthorizeCmd, Checkout, SaleContext};
use loyalty_core::program::ProgramPolicy;
use loyalty_core::receipt::ReceiptState;
use loyalty_core::rfm::Segment;
use loyalty_core::rules::{CompiledRules, DocumentFormat, compile, parse_rule_set};
use loyalty_core::txn::Txn;
use loyalty_core::{Decimal, Origin};

const RULES: &str = r#"
[rfm]
recency_days = [90, 30, 14, 7]
frequency = [2, 6, 12, 24]
monetary = ["20000", "60000", "150000", "400000"]

[[rules]]
id = "base"
name = "cashback 1%"
effect = { kind = "percent_of_lines", percent = "1" }

[[rules]]
id = "coffee-win-back"
name = "coffee 10%"
priority = 100
stacking = "exclusive"
when.lines = { categories = ["coffee"] }
when.customer.segments = ["at_risk", "cannot_lose"]
effect = { kind = "percent_of_lines", percent = "10" }
"#;

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).single().expect("valid instant")
}

fn rules() -> CompiledRules {
    compile(&parse_rule_set(RULES, DocumentFormat::Toml).expect("parses"), 1, 0).expect("compiles")
}

fn line(line_no: u32, category: &str, total: i64) -> BasketLine {
    BasketLine {
        line_no,
        sku: format!("sku-{line_no}"),
        category: category.into(),
        brand: String::new(),
        quantity: Decimal::ONE,
        unit_price: Decimal::from(total),
        line_total: Decimal::from(total),
        excise: false,
        promo_price: false,
    }
}

fn basket() -> Vec<BasketLine> {
    vec![line(1, "coffee", 1000), line(2, "bread", 500)]
}

/// A customer who bought `purchases` times, every `every_days` days, the last `days_ago` days
/// before `now`, each receipt paid in full through the accrual itself.
fn customer(
    policy: &ProgramPolicy,
    rules: &CompiledRules,
    purchases: u32,
    every_days: i64,
    days_ago: i64,
    now: DateTime<Utc>,
) -> AccountState {
    let mut account = AccountState::new("a".into(), true, now - Duration::days(400));
    let limits = BasketLimits::default();
    let checkout = Checkout { program: policy, rules, limits: &limits };
    for index in 0..purchases {
        let sold_at = now - Duration::days(days_ago + every_days * i64::from(purchases - 1 - index));
        let mut txn = Txn::begin(policy, &account, sold_at, format!("tx{index}"), Origin::default());
        let mut receipt = ReceiptState::new(format!("old-{index}"), "a".into(), sold_at, Origin::default());
        let cmd = AccrueCmd {
            receipt_id: receipt.receipt_id.clone(),
            lines: vec![line(1, "bread", 3000)],
            sale: SaleContext::default(),
            change: Decimal::ZERO,
            occurred_at: None,
        };
        ops::accrue(&checkout, &mut txn, &mut receipt, &cmd).expect("history accrues");
        account = txn.finish_all().expect("invariants").account;
    }
    account
}

#[test]
fn a_segment_rule_pays_only_the_customers_in_the_segment_and_says_so() {
    let policy = ProgramPolicy::with_defaults("p");
    let rules = rules();
    let now = at(20, 9);
    // Eight purchases a week apart, the last 60 days ago: F 3, R 2.
    let at_risk = customer(&policy, &rules, 8, 7, 60, now);
    // The same, the last 3 days ago: R 5.
    let regular = customer(&policy, &rules, 8, 7, 3, now);
    // Thirty purchases, the last 100 days ago: F 5, R 1.
    let cannot_lose = customer(&policy, &rules, 30, 7, 100, now);
    let newcomer = AccountState::new("n".into(), true, now);
    let segment = |account: &AccountState| rules.rfm_score(account, now, policy.time_zone).map(|score| score.segment);
    assert_eq!(
        [&at_risk, &regular, &cannot_lose, &newcomer].map(segment),
        [Some(Segment::AtRisk), Some(Segment::PotentialLoyalists), Some(Segment::CannotLose), None]
    );

    let limits = BasketLimits::default();
    let checkout = Checkout { program: &policy, rules: &rules, limits: &limits };
    let quote = |account: &AccountState| {
        let cmd = AuthorizeCmd {
            receipt_id: "r".into(),
            lines: basket(),
            spend: Decimal::ZERO,
            hold_ttl_seconds: 0,
            sale: SaleContext::default(),
            presence: Default::default(),
        };
        ops::quote(&checkout, account, &cmd, now, &Origin::default()).expect("quote")
    };
    let at_risk_quote = quote(&at_risk);
    assert_eq!(at_risk_quote.earn_total, Decimal::from(105), "10% of the coffee and 1% of the bread");
    assert_eq!(at_risk_quote.lines[0].reason, "coffee 10%");
    assert_eq!(at_risk_quote.lines[1].reason, "cashback 1%");
    assert_eq!(quote(&cannot_lose).lines[0].reason, "coffee 10%");
    for other in [&regular, &newcomer] {
        let other_quote = quote(other);
        assert_eq!(other_quote.earn_total, Decimal::from(15), "1% of everything");
        assert_eq!(other_quote.lines[0].reason, "cashback 1%");
    }

    // The accrual at the same instant pays what the quote said, and names the segment in the
    // ledger's reason.
    let mut txn = Txn::begin(&policy, &at_risk, now, "tx-now".into(), Origin::default());
    let mut receipt = ReceiptState::new("r".into(), "a".into(), now, Origin::default());
    let cmd = AccrueCmd { receipt_id: "r".into(), lines: basket(), sale: SaleContext::default(), change: Decimal::ZERO, occurred_at: None };
    let accrued = ops::accrue(&checkout, &mut txn, &mut receipt, &cmd).expect("accrue");
    assert_eq!((accrued.earned, accrued.lines.clone()), (at_risk_quote.earn_total, at_risk_quote.lines.clone()));
    let finished = txn.finish_all().expect("invariants");
    assert!(finished.entries[0].reason.contains("coffee 10% 100"), "{}", finished.entries[0].reason);
    // The purchase itself brings the customer back: the next receipt earns the base only.
    assert_eq!(segment(&finished.account), Some(Segment::PotentialLoyalists));
    assert_eq!(quote(&finished.account).earn_total, Decimal::from(15));
}

#[test]
fn unknown_segments_and_bad_thresholds_are_refused_with_their_place() {
    let bad = RULES.replace(r#"["at_risk", "cannot_lose"]"#, r#"["at_risk", "at-risk"]"#).replace("[90, 30, 14, 7]", "[7, 14, 30, 90]");
    let error = compile(&parse_rule_set(&bad, DocumentFormat::Toml).expect("parses"), 1, 0).expect_err("refused");
    let places: Vec<&str> = error.problems.iter().map(|problem| problem.at.as_str()).collect();
    assert_eq!(places, ["rfm.recency_days", "rules[1] (coffee-win-back).when.customer.segments[1]"]);
    assert!(
        error.problems[1].reason.starts_with("no segment 'at-risk'; the segments are champions, loyal,"),
        "{}",
        error.problems[1].reason
    );
    let welcome = r#"
[[rules]]
id = "welcome"
trigger = "enrollment"
when.customer.segments = ["new"]
effect = { kind = "fixed_points", points = "100" }
"#;
    let error = compile(&parse_rule_set(welcome, DocumentFormat::Toml).expect("parses"), 1, 0).expect_err("refused");
    assert_eq!(error.problems[0].at, "rules[0] (welcome).when.customer.segments");
    let unknown_field = RULES.replace("[rfm]\n", "[rfm]\nwindow = 12\n");
    let error = parse_rule_set(&unknown_field, DocumentFormat::Toml).expect_err("unknown field");
    assert!(error.problems[0].at.starts_with("rfm"), "{:?}", error.problems);
}

/// A receipt an offline till sends late counts in the month it was sold, and is evaluated in the
/// segment the customer was in then; refunds and a cancellation take off that month.
#[test]
fn a_late_receipt_counts_in_its_sale_month_and_returns_take_off_that_month() {
    let policy = ProgramPolicy::with_defaults("p");
    let rules = rules();
    let limits = BasketLimits::default();
    let checkout = Checkout { program: &policy, rules: &rules, limits: &limits };
    // Eight purchases a week apart, the last on 28 December: at risk by the end of February.
    let now = Utc.with_ymd_and_hms(2026, 3, 2, 6, 0, 0).single().expect("valid instant");
    let sold_at = Utc.with_ymd_and_hms(2026, 2, 27, 6, 0, 0).single().expect("valid instant");
    let mut account = customer(&policy, &rules, 8, 7, 61, sold_at);
    assert_eq!(rules.rfm_score(&account, sold_at, policy.time_zone).map(|score| score.segment), Some(Segment::AtRisk));
    let mut txn = Txn::begin(&policy, &account, now, "late".into(), Origin::default());
    let mut receipt = ReceiptState::new("late".into(), "a".into(), now, Origin::default());
    let cmd = AccrueCmd {
        receipt_id: "late".into(),
        lines: basket(),
        sale: SaleContext::default(),
        change: Decimal::ZERO,
        occurred_at: Some(sold_at),
    };
    let accrued = ops::accrue(&checkout, &mut txn, &mut receipt, &cmd).expect("accrue");
    assert_eq!(accrued.lines[0].reason, "coffee 10%", "as of the sale");
    account = txn.finish_all().expect("invariants").account;
    let february = loyalty_core::rfm::month_index(chrono::NaiveDate::from_ymd_opt(2026, 2, 1).expect("date"));
    let kept =
        |account: &AccountState| account.rfm_months.iter().find(|month| month.month == february).map(|month| (month.purchases, month.paid));
    assert_eq!(kept(&account), Some((1, Decimal::from(1500))), "February's only purchase");

    // A refund of the bread line in March takes its money off February.
    let refund = ops::RefundCmd {
        receipt_id: "late".into(),
        refund_id: "late-r1".into(),
        lines: vec![ops::RefundLine { line_no: 2, quantity: Decimal::ONE }],
        reason: String::new(),
        occurred_at: None,
    };
    let mut txn = Txn::begin(&policy, &account, now + Duration::days(1), "refund".into(), Origin::default());
    ops::refund(&checkout, &mut txn, &mut receipt, &refund).expect("refund");
    account = txn.finish_all().expect("invariants").account;
    assert_eq!(kept(&account), Some((1, Decimal::from(1000))));
    // Cancelling the receipt takes the purchase off too.
    let mut txn = Txn::begin(&policy, &account, now + Duration::days(2), "reverse".into(), Origin::default());
    ops::reverse(&checkout, &mut txn, &mut receipt, &ops::ReverseCmd { receipt_id: "late".into(), reason: String::new() })
        .expect("reverse");
    account = txn.finish_all().expect("invariants").account;
    assert_eq!(kept(&account), None);
}

/// A receipt accrued before the months were kept (its accrual not `rfm_counted`) added nothing to
/// them, so its refund and cancellation take nothing off: the customer's later purchases stay whole.
#[test]
fn returns_of_a_receipt_accrued_before_the_months_were_kept_take_nothing_off() {
    let policy = ProgramPolicy::with_defaults("p");
    let rules = rules();
    let limits = BasketLimits::default();
    let checkout = Checkout { program: &policy, rules: &rules, limits: &limits };
    let now = at(10, 6);
    let mut account = customer(&policy, &rules, 3, 7, 5, now);
    let accrue_one = |account: &AccountState, receipt_id: &str, at: DateTime<Utc>| {
        let mut txn = Txn::begin(&policy, account, at, receipt_id.into(), Origin::default());
        let mut receipt = ReceiptState::new(receipt_id.into(), "a".into(), at, Origin::default());
        let cmd = AccrueCmd {
            receipt_id: receipt_id.into(),
            lines: basket(),
            sale: SaleContext::default(),
            change: Decimal::ZERO,
            occurred_at: None,
        };
        ops::accrue(&checkout, &mut txn, &mut receipt, &cmd).expect("accrue");
        (txn.finish_all().expect("invariants").account, receipt)
    };
    let (after_old, mut old) = accrue_one(&account, "old", now);
    // As a receipt from before the release: its purchase is not in the months.
    old.accrual.as_mut().expect("accrual").rfm_counted = false;
    account = after_old;
    let months_before = account.rfm_months.clone();
    let mut txn = Txn::begin(&policy, &account, now + Duration::days(1), "reverse".into(), Origin::default());
    ops::reverse(&checkout, &mut txn, &mut old, &ops::ReverseCmd { receipt_id: "old".into(), reason: String::new() }).expect("reverse");
    account = txn.finish_all().expect("invariants").account;
    assert_eq!(account.rfm_months, months_before, "nothing taken off for a receipt that added nothing");
}
