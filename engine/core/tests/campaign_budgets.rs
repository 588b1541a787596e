//! Campaign-wide budgets in evaluation: a budgeted campaign's rules pay at most what the allowance
//! leaves them, the rest of the receipt is untouched, and the lines say where the budget cut.

use chrono::{DateTime, TimeZone, Utc};
use loyalty_core::Decimal;
use loyalty_core::account::AccountState;
use loyalty_core::basket::BasketLine;
use loyalty_core::program::ProgramPolicy;
use loyalty_core::rules::campaigns::{Allowance, CampaignUse, UNLIMITED};
use loyalty_core::rules::definition::DocumentFormat;
use loyalty_core::rules::evaluate::{Earn, PurchaseContext, evaluate_purchase};
use loyalty_core::rules::{CompiledRules, compile, parse_rule_set};
use proptest::prelude::*;

const RULES: &str = r#"
[budgets.launch]
points = 1000

[[rules]]
id = "base"
name = "cashback 1%"
effect = { kind = "percent_of_lines", percent = 1 }

[[rules]]
id = "launch-coffee"
name = "launch: 10% on coffee"
campaign = "launch"
priority = 10
stacking = "always"
when = { lines = { categories = ["coffee"] } }
effect = { kind = "percent_of_lines", percent = 10 }

[[rules]]
id = "launch-bonus"
name = "launch: 50 points a receipt"
campaign = "launch"
priority = 5
stacking = "always"
effect = { kind = "fixed_points", points = 50 }
"#;

fn rules() -> CompiledRules {
    compile(&parse_rule_set(RULES, DocumentFormat::Toml).expect("parses"), 1, 0).expect("compiles")
}

fn dec(value: i64) -> Decimal {
    Decimal::from(value)
}

fn line(line_no: u32, category: &str, total: i64) -> BasketLine {
    BasketLine {
        line_no,
        sku: format!("sku-{line_no}"),
        category: category.into(),
        brand: String::new(),
        quantity: Decimal::ONE,
        unit_price: dec(total),
        line_total: dec(total),
        excise: false,
        promo_price: false,
    }
}

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 6, 0, 0).single().expect("valid time")
}

fn earn(rules: &CompiledRules, lines: &[BasketLine], allowance: &Allowance) -> Earn {
    let program = ProgramPolicy::with_defaults("budgets");
    let account = AccountState::new("acc".into(), true, at());
    let bases: Vec<Decimal> = lines.iter().map(|line| line.line_total).collect();
    evaluate_purchase(
        rules,
        &PurchaseContext {
            program: &program,
            account: &account,
            lines,
            bases: &bases,
            at: at(),
            store_id: "store-1",
            till_id: "till-1",
            channel: "pos",
            coupons: &[],
            change: Decimal::ZERO,
            allowance,
        },
    )
}

fn rule_points(earn: &Earn) -> Vec<(String, Decimal)> {
    earn.rules.iter().map(|rule| (rule.rule_id.to_string(), rule.points)).collect()
}

fn limited(points: i64) -> Allowance {
    let mut allowance = Allowance::unlimited();
    allowance.limit("launch", dec(points));
    allowance
}

#[test]
fn with_budget_enough_the_campaign_pays_in_full_and_says_what_it_drew() {
    let rules = rules();
    let lines = [line(1, "coffee", 2000), line(2, "bread", 1000)];
    let earn = earn(&rules, &lines, &limited(1000));
    assert_eq!(rule_points(&earn), vec![("launch-coffee".into(), dec(200)), ("launch-bonus".into(), dec(50)), ("base".into(), dec(30))]);
    assert_eq!(earn.campaigns, vec![CampaignUse { campaign: "launch".into(), wanted: dec(250), given: dec(250) }]);
    assert!(earn.lines.iter().all(|line| !line.reason.contains("budget")));
    // Unlimited (a quote) is the same.
    assert_eq!(rule_points(&self::earn(&rules, &lines, &UNLIMITED)), rule_points(&earn));
}

#[test]
fn a_short_budget_pays_what_is_left_by_priority_and_the_lines_say_so() {
    let rules = rules();
    let lines = [line(1, "coffee", 2000), line(2, "bread", 1000)];
    // 220 left: the coffee rule (first by priority) takes 200, the bonus the last 20.
    let earn = earn(&rules, &lines, &limited(220));
    assert_eq!(rule_points(&earn), vec![("launch-coffee".into(), dec(200)), ("launch-bonus".into(), dec(20)), ("base".into(), dec(30))]);
    assert_eq!(earn.campaigns, vec![CampaignUse { campaign: "launch".into(), wanted: dec(250), given: dec(220) }]);
    assert!(earn.campaigns[0].cut());
    assert!(earn.lines.iter().all(|line| line.reason.contains("launch: 50 points a receipt: campaign budget spent")));
    assert!(earn.lines.iter().all(|line| !line.reason.contains("launch: 10% on coffee: campaign")));
    assert_eq!(earn.total, earn.lines.iter().map(|line| line.points).sum::<Decimal>());
}

#[test]
fn a_spent_budget_stops_the_campaign_and_nothing_else() {
    let rules = rules();
    let lines = [line(1, "coffee", 2000)];
    let earn = earn(&rules, &lines, &limited(0));
    assert_eq!(rule_points(&earn), vec![("base".into(), dec(20))]);
    assert_eq!(earn.campaigns, vec![CampaignUse { campaign: "launch".into(), wanted: dec(250), given: dec(0) }]);
    assert_eq!(
        earn.lines[0].reason,
        "cashback 1%; launch: 10% on coffee: campaign budget spent; launch: 50 points a receipt: campaign budget spent"
    );
}

#[test]
fn budgets_that_cannot_count_are_refused_with_their_field() {
    let problems = |text: &str| {
        let error = compile(&parse_rule_set(text, DocumentFormat::Toml).expect("parses"), 1, 0).expect_err("refused");
        error.problems.into_iter().map(|problem| format!("{}: {}", problem.at, problem.reason)).collect::<Vec<_>>()
    };
    let none = problems("[budgets.summer]\npoints = 10\n[[rules]]\nid = \"base\"\neffect = { kind = \"percent_of_lines\", percent = 1 }\n");
    assert_eq!(none, vec!["budgets.summer: no rule has campaign = \"summer\"".to_owned()]);
    let welcome = problems(
        "[budgets.welcome]\npoints = 10\nchunk_points = 20\n[[rules]]\nid = \"w\"\ncampaign = \"welcome\"\ntrigger = \"enrollment\"\n\
         effect = { kind = \"fixed_points\", points = 5 }\n",
    );
    assert_eq!(welcome.len(), 2, "{welcome:?}");
    assert!(welcome[0].starts_with("budgets.welcome.chunk_points: at most the budget's points"), "{welcome:?}");
    assert!(welcome[1].starts_with("rules[0] (w).campaign: campaign \"welcome\" has a budget"), "{welcome:?}");
    let zero = problems(
        "[budgets.z]\npoints = 0\n[[rules]]\nid = \"r\"\ncampaign = \"z\"\neffect = { kind = \"percent_of_lines\", percent = 1 }\n",
    );
    assert_eq!(zero.len(), 1);
    assert!(zero[0].starts_with("budgets.z.points: above 0"), "{zero:?}");
}

proptest! {
    /// Whatever the basket and whatever is left, the campaign gives at most what is left, in full
    /// when that is enough, and the rest of the receipt does not depend on it.
    #[test]
    fn a_campaign_never_gives_beyond_its_allowance(
        totals in proptest::collection::vec((any::<bool>(), 1i64..50_000), 1..12),
        left in 0i64..600,
    ) {
        let rules = rules();
        let lines: Vec<BasketLine> = totals
            .iter()
            .enumerate()
            .map(|(index, (coffee, total))| line(index as u32 + 1, if *coffee { "coffee" } else { "bread" }, *total))
            .collect();
        let full = earn(&rules, &lines, &UNLIMITED);
        let cut = earn(&rules, &lines, &limited(left));
        let used = &cut.campaigns[0];
        prop_assert_eq!(used.wanted, full.campaigns[0].given);
        prop_assert!(used.given <= dec(left));
        prop_assert_eq!(used.given, used.wanted.min(dec(left)));
        let campaign_points = |earn: &Earn| {
            earn.rules.iter().filter(|rule| rule.rule_id.starts_with("launch")).map(|rule| rule.points).sum::<Decimal>()
        };
        prop_assert_eq!(campaign_points(&cut), used.given);
        prop_assert_eq!(full.total - campaign_points(&full), cut.total - campaign_points(&cut));
        prop_assert_eq!(cut.total, cut.lines.iter().map(|line| line.points).sum::<Decimal>());
    }
}
