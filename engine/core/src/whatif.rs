//! What-if: a candidate rule set evaluated again on receipts already accrued, beside what the
//! rules in force gave them (`docs/reports.md`, "What-if"). No I/O and no clock: the engine's scan
//! (`loyalty-engine`'s `whatif`) finds the receipts and hands each one here with its account and
//! the instant of the report.
//!
//! - [`compare_receipt`] rebuilds a receipt's basket from what the accrual kept (the closed lines,
//!   [`KeptBasket`], the points spent on it), evaluates it under the candidate at its sale's
//!   instant, and sets the result beside what the accrual gave, rule by rule.
//! - [`Tally`] sums the comparisons per rule and in total, and the change in liability.
//!
//! What a receipt "gave" is what its accrual recorded (each line's points and the rules behind
//! them), never a new evaluation under the current rules: a receipt evaluated under an older
//! version, or with budgets as they were then, counts as it was paid.
//!
//! The liability change: for each receipt, the points the candidate would have left on the account
//! less those the current rules left, each line's points times the share of the line not returned
//! since (rounded down to the points scale, the same way on both sides, so that a candidate equal
//! to the rules in force changes nothing); summed over the receipts whose points had not expired
//! by the report's instant (a bucket earned on the sale's day expires with the program's expiry
//! policy). What would have expired already is reported apart (`expired_difference`). The extra
//! (or missing) points are taken as unspent: the liability change is an upper bound on what
//! customers would hold, not a model of how they would have spent.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::account::AccountState;
use crate::allocate::allocate;
use crate::basket::BasketLine;
use crate::outcome::RulePoints;
use crate::program::ProgramPolicy;
use crate::receipt::{KeptBasket, ReceiptState};
use crate::rules::definition::Trigger;
use crate::rules::{CompiledRules, PurchaseContext, RuleSet, budgets, evaluate_purchase};

/// Longest window a what-if looks back over, in days (the stored answers of receipts are kept 400
/// days by default; the receipts themselves longer).
pub const DAYS_MAX: u32 = 400;

/// Why a receipt the scan found was not evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReceiptSkip {
    /// Accrued before receipts kept their basket (the products of each line): nothing to evaluate.
    NoBasket,
    /// Reversed since: it gives nothing under any rules.
    Reversed,
    /// The earn entry names a receipt of another account (a referral reward paid on a friend's
    /// receipt) or a receipt the store no longer has.
    NotThisAccounts,
    /// The account had more receipts in the window than a scan evaluates per account.
    AccountReceiptsMax,
}

impl ReceiptSkip {
    /// The stable name the report gives.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptSkip::NoBasket => "no_basket",
            ReceiptSkip::Reversed => "reversed",
            ReceiptSkip::NotThisAccounts => "not_this_accounts",
            ReceiptSkip::AccountReceiptsMax => "account_receipts_max",
        }
    }
}

/// Why an account the scan found was not looked into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountSkip {
    /// An internal account of sales without a customer: no rules ran on its receipts.
    Sales,
}

impl AccountSkip {
    /// The stable name the report gives.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountSkip::Sales => "sales_account",
        }
    }
}

/// One receipt under the rules that paid it and under the candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    /// Per rule, what the accrual gave (the closed lines' rules summed).
    pub given: Vec<RulePoints>,
    /// Per rule, what the candidate would have given.
    pub candidate: Vec<RulePoints>,
    /// Of what was given, and of what the candidate would have given, what is left after the
    /// receipt's returns (each line's points times its share not returned, rounded down).
    pub given_kept: Decimal,
    pub candidate_kept: Decimal,
    /// When the receipt's points expire (the program's expiry from the sale's day).
    pub expires_at: DateTime<Utc>,
}

/// The basket an accrual evaluated, rebuilt from the receipt: its lines and each line's base (its
/// total less its share of the points spent on the receipt, shared as the accrual shared them).
fn rebuilt_basket<'r>(
    receipt: &'r ReceiptState,
    policy: &ProgramPolicy,
) -> Result<(&'r KeptBasket, Vec<BasketLine>, Vec<Decimal>), ReceiptSkip> {
    let accrual = receipt.accrual.as_ref().ok_or(ReceiptSkip::NotThisAccounts)?;
    let basket = receipt.basket.as_ref().filter(|basket| basket.items.len() == accrual.lines.len()).ok_or(ReceiptSkip::NoBasket)?;
    let lines: Vec<BasketLine> = accrual
        .lines
        .iter()
        .zip(&basket.items)
        .map(|(line, item)| BasketLine {
            line_no: line.line_no,
            sku: item.sku.clone(),
            category: item.category.clone(),
            brand: item.brand.clone(),
            quantity: line.quantity,
            unit_price: item.unit_price,
            line_total: line.line_total,
            excise: item.excise,
            promo_price: item.promo_price,
        })
        .collect();
    let totals: Vec<Decimal> = lines.iter().map(|line| line.line_total).collect();
    let shares = allocate(receipt.spent, &totals, policy.share_scale());
    let bases = totals.iter().zip(&shares).map(|(total, share)| *total - *share).collect();
    Ok((basket, lines, bases))
}

/// Per rule, the points of `parts` summed, in the order each rule first appears.
fn per_rule<'a>(parts: impl Iterator<Item = &'a RulePoints>) -> Vec<RulePoints> {
    let mut sums: Vec<RulePoints> = Vec::new();
    for part in parts {
        match sums.iter_mut().find(|sum| sum.rule_id == part.rule_id) {
            Some(sum) => sum.points += part.points,
            None => sums.push(part.clone()),
        }
    }
    sums
}

/// What is left of a line's `points` once `returned` of its `quantity` came back: what refunds
/// take back is rounded down (`ops::refund`), so what is left is the rest.
fn kept(policy: &ProgramPolicy, points: Decimal, quantity: Decimal, returned: Decimal) -> Decimal {
    if returned.is_zero() || quantity.is_zero() {
        return points;
    }
    if returned >= quantity {
        return Decimal::ZERO;
    }
    points - policy.floor_points(points * returned / quantity)
}

/// Evaluates one accrued receipt of `account` under `candidate`, at the sale's instant, with the
/// account as given (the caller's approximation of the customer then: see the module docs), and
/// charges the candidate's per-customer budgets on `account`, so that the caller, handing an
/// account's receipts oldest first, has later receipts meet the budgets earlier ones used.
pub fn compare_receipt(
    candidate: &CompiledRules,
    policy: &ProgramPolicy,
    account: &mut AccountState,
    receipt: &ReceiptState,
) -> Result<Comparison, ReceiptSkip> {
    if receipt.account_id != account.account_id {
        return Err(ReceiptSkip::NotThisAccounts);
    }
    if receipt.reversed {
        return Err(ReceiptSkip::Reversed);
    }
    let (basket, lines, bases) = rebuilt_basket(receipt, policy)?;
    let accrual = receipt.accrual.as_ref().ok_or(ReceiptSkip::NotThisAccounts)?;
    let earn = evaluate_purchase(
        candidate,
        &PurchaseContext {
            program: policy,
            account,
            lines: &lines,
            bases: &bases,
            at: basket.sold_at,
            store_id: &basket.store_id,
            till_id: &basket.till_id,
            channel: &basket.channel,
            coupons: &basket.coupons,
            change: Decimal::ZERO,
            // Campaign budgets are not applied: the what-if shows what the campaigns' rules
            // would give, to set against their budgets.
            allowance: &crate::rules::campaigns::UNLIMITED,
        },
    );
    let local_day = basket.sold_at.with_timezone(&policy.time_zone).date_naive();
    budgets::charge(candidate, account, &earn.rules, local_day);
    let given_kept = accrual.lines.iter().map(|line| kept(policy, line.points, line.quantity, line.returned)).sum();
    let candidate_kept =
        accrual.lines.iter().zip(&earn.lines).map(|(line, earned)| kept(policy, earned.points, line.quantity, line.returned)).sum();
    Ok(Comparison {
        given: per_rule(accrual.lines.iter().flat_map(|line| &line.applied)),
        candidate: earn.rules,
        given_kept,
        candidate_kept,
        expires_at: policy.expires_at(basket.sold_at),
    })
}

/// One rule's part in a what-if.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleTally {
    /// The rule's name (the candidate's when both have it), or its ID.
    pub label: String,
    /// Whether the rule is an active purchase rule of the rules in force, and of the candidate.
    pub in_current: bool,
    pub in_candidate: bool,
    /// Points the rule gave on the receipts evaluated, and receipts it gave points on.
    pub given: Decimal,
    pub given_receipts: u64,
    /// Points the rule would have given under the candidate, and on how many receipts.
    pub candidate: Decimal,
    pub candidate_receipts: u64,
}

/// A what-if's sums: per rule and in total, the change in liability, and what was skipped. Holds
/// one entry per rule, whatever the number of receipts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    rules: BTreeMap<String, RuleTally>,
    pub accounts_scanned: u64,
    pub receipts_evaluated: u64,
    pub receipts_skipped: BTreeMap<ReceiptSkip, u64>,
    pub accounts_skipped: BTreeMap<AccountSkip, u64>,
    /// Points the receipts were given, and would have been under the candidate.
    pub given_total: Decimal,
    pub candidate_total: Decimal,
    /// Of those, what is left after returns (see [`Comparison`]).
    pub given_kept: Decimal,
    pub candidate_kept: Decimal,
    /// `candidate_kept - given_kept` over the receipts whose points had not expired at the
    /// report's instant: what customers would hold now beyond what they hold (see the module
    /// docs).
    pub liability_change: Decimal,
    /// `candidate_kept - given_kept` over the receipts whose points would have expired by then.
    pub expired_difference: Decimal,
}

impl Tally {
    /// An empty tally listing every active purchase rule of the rules in force and the candidate.
    pub fn new(current: &RuleSet, candidate: &RuleSet) -> Tally {
        let mut tally = Tally::default();
        let purchase_rules = |set: &RuleSet| {
            set.rules
                .iter()
                .filter(|rule| rule.active && rule.trigger == Trigger::Purchase)
                .map(|rule| (rule.id.clone(), if rule.name.is_empty() { rule.id.clone() } else { rule.name.clone() }))
                .collect::<Vec<_>>()
        };
        for (id, label) in purchase_rules(current) {
            let rule = tally.rules.entry(id).or_default();
            rule.label = label;
            rule.in_current = true;
        }
        for (id, label) in purchase_rules(candidate) {
            let rule = tally.rules.entry(id).or_default();
            rule.label = label;
            rule.in_candidate = true;
        }
        tally
    }

    /// Every rule's part, by rule ID.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &RuleTally)> {
        self.rules.iter().map(|(id, rule)| (id.as_str(), rule))
    }

    pub fn receipts_skipped_total(&self) -> u64 {
        self.receipts_skipped.values().sum()
    }

    pub fn skip_receipt(&mut self, reason: ReceiptSkip) {
        *self.receipts_skipped.entry(reason).or_default() += 1;
    }

    pub fn skip_account(&mut self, reason: AccountSkip) {
        *self.accounts_skipped.entry(reason).or_default() += 1;
    }

    fn rule(&mut self, part: &RulePoints) -> &mut RuleTally {
        let rule = self.rules.entry(part.rule_id.to_string()).or_default();
        if rule.label.is_empty() {
            rule.label = part.label.to_string();
        }
        rule
    }

    /// Adds one receipt's comparison, as of `now` (for what would have expired).
    pub fn add(&mut self, comparison: &Comparison, now: DateTime<Utc>) {
        self.receipts_evaluated += 1;
        for part in &comparison.given {
            let rule = self.rule(part);
            rule.given += part.points;
            rule.given_receipts += 1;
            self.given_total += part.points;
        }
        for part in &comparison.candidate {
            let rule = self.rule(part);
            rule.candidate += part.points;
            rule.candidate_receipts += 1;
            self.candidate_total += part.points;
        }
        self.given_kept += comparison.given_kept;
        self.candidate_kept += comparison.candidate_kept;
        let difference = comparison.candidate_kept - comparison.given_kept;
        if comparison.expires_at > now {
            self.liability_change += difference;
        } else {
            self.expired_difference += difference;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    use super::*;
    use crate::Origin;
    use crate::receipt::{Accrual, ClosedLine, KeptItem};
    use crate::rules::{DocumentFormat, compile, parse_rule_set};

    const CURRENT: &str = r#"
[[rules]]
id = "base"
name = "cashback 1%"
effect = { kind = "percent_of_lines", percent = "1" }

[[rules]]
id = "coffee"
name = "coffee 5%"
priority = 100
when.lines = { categories = ["coffee"] }
effect = { kind = "percent_of_lines", percent = "5" }
"#;

    fn rules(text: &str) -> (RuleSet, CompiledRules) {
        let set = parse_rule_set(text, DocumentFormat::Toml).expect("parse");
        let compiled = compile(&set, 0, 0).expect("compile");
        (set, compiled)
    }

    fn sold_at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, 6, 0, 0).single().expect("time")
    }

    fn part(rule_id: &str, label: &str, points: i64) -> RulePoints {
        RulePoints { rule_id: Arc::from(rule_id), label: Arc::from(label), points: Decimal::from(points) }
    }

    /// A receipt of `acc-1` as the current rules paid it: 1,000 of coffee (5% exclusive of
    /// nothing: 50 coffee + 10 base) and 2,000 of bread (20 base).
    fn receipt() -> ReceiptState {
        let mut receipt = ReceiptState::new("r-1".into(), "acc-1".into(), sold_at(), Origin::default());
        receipt.accrual = Some(Accrual {
            tx_id: "t".into(),
            lines: vec![
                ClosedLine {
                    line_no: 1,
                    quantity: Decimal::ONE,
                    line_total: Decimal::from(1000),
                    points: Decimal::from(60),
                    returned: Decimal::ZERO,
                    applied: vec![part("coffee", "coffee 5%", 50), part("base", "cashback 1%", 10)],
                },
                ClosedLine {
                    line_no: 2,
                    quantity: Decimal::from(2),
                    line_total: Decimal::from(2000),
                    points: Decimal::from(20),
                    returned: Decimal::ZERO,
                    applied: vec![part("base", "cashback 1%", 20)],
                },
            ],
            total: Decimal::from(3000),
            earned: Decimal::from(80),
            bucket_id: Some(1),
            program_version: 1,
            budget_charges: Vec::new(),
            tier_month: None,
            referrals: Vec::new(),
            change_points: Decimal::ZERO,
            rfm_counted: true,
            campaigns: Vec::new(),
        });
        let item = |sku: &str, category: &str| KeptItem {
            sku: sku.into(),
            category: category.into(),
            brand: String::new(),
            unit_price: Decimal::from(1000),
            excise: false,
            promo_price: false,
        };
        receipt.basket = Some(KeptBasket {
            sold_at: sold_at(),
            store_id: receipt.origin.store_id.clone(),
            till_id: receipt.origin.till_id.clone(),
            channel: "pos".into(),
            coupons: Vec::new(),
            items: vec![item("arabica", "coffee"), item("bread", "bakery")],
        });
        receipt
    }

    fn account() -> AccountState {
        AccountState::new("acc-1".into(), true, sold_at() - Duration::days(30))
    }

    #[test]
    fn the_current_rules_as_candidate_change_nothing() {
        let (set, compiled) = rules(CURRENT);
        let policy = ProgramPolicy::with_defaults("p");
        let comparison = compare_receipt(&compiled, &policy, &mut account(), &receipt()).expect("compared");
        let mut tally = Tally::new(&set, &set);
        tally.add(&comparison, sold_at());
        assert_eq!((tally.given_total, tally.candidate_total), (Decimal::from(80), Decimal::from(80)));
        assert_eq!((tally.liability_change, tally.expired_difference), (Decimal::ZERO, Decimal::ZERO));
        let coffee = tally.rules().find(|(id, _)| *id == "coffee").expect("coffee").1;
        assert_eq!((coffee.given, coffee.candidate, coffee.given_receipts), (Decimal::from(50), Decimal::from(50), 1));
    }

    #[test]
    fn a_doubled_percentage_a_new_rule_and_a_removed_one_show_per_rule() {
        let (current, _) = rules(CURRENT);
        let candidate_text = r#"
[[rules]]
id = "base"
name = "cashback 2%"
effect = { kind = "percent_of_lines", percent = "2" }

[[rules]]
id = "bakery"
name = "bread 3%"
priority = 50
when.lines = { categories = ["bakery"] }
effect = { kind = "percent_of_lines", percent = "3" }
"#;
        let (candidate_set, candidate) = rules(candidate_text);
        let policy = ProgramPolicy::with_defaults("p");
        // Half the bread came back: the kept points count half of that line, on both sides.
        let mut returned = receipt();
        returned.accrual.as_mut().expect("accrual").lines[1].returned = Decimal::ONE;
        let comparison = compare_receipt(&candidate, &policy, &mut account(), &returned).expect("compared");
        let mut tally = Tally::new(&current, &candidate_set);
        tally.add(&comparison, sold_at() + Duration::days(1));
        let by_id: BTreeMap<&str, (Decimal, Decimal, bool, bool)> =
            tally.rules().map(|(id, rule)| (id, (rule.given, rule.candidate, rule.in_current, rule.in_candidate))).collect();
        // Base 2% of 3,000 = 60; bread 3% of 2,000 = 60; coffee gone.
        assert_eq!(by_id["base"], (Decimal::from(30), Decimal::from(60), true, true));
        assert_eq!(by_id["bakery"], (Decimal::ZERO, Decimal::from(60), false, true));
        assert_eq!(by_id["coffee"], (Decimal::from(50), Decimal::ZERO, true, false));
        assert_eq!((tally.given_total, tally.candidate_total), (Decimal::from(80), Decimal::from(120)));
        // Kept: given 60 + 10 = 70; candidate 20 (coffee line) + 100 / 2 = 70.
        assert_eq!((tally.given_kept, tally.candidate_kept), (Decimal::from(70), Decimal::from(70)));
        assert_eq!(tally.liability_change, Decimal::ZERO);
        assert_eq!(tally.rules().find(|(id, _)| *id == "base").expect("base").1.label, "cashback 2%");
    }

    #[test]
    fn points_spent_on_the_receipt_earn_nothing_under_the_candidate_either() {
        let (set, _) = rules(CURRENT);
        let (candidate_set, candidate) = rules(&CURRENT.replace("\"1\"", "\"2\""));
        let policy = ProgramPolicy::with_defaults("p");
        // 600 points paid for part of the 3,000: shared by line total, 200 on coffee, 400 on bread.
        let mut spent = receipt();
        spent.spent = Decimal::from(600);
        let comparison = compare_receipt(&candidate, &policy, &mut account(), &spent).expect("compared");
        let mut tally = Tally::new(&set, &candidate_set);
        tally.add(&comparison, sold_at());
        // Base 2% of (3,000 - 600) = 48; coffee 5% of (1,000 - 200) = 40.
        let base = tally.rules().find(|(id, _)| *id == "base").expect("base").1.candidate;
        let coffee = tally.rules().find(|(id, _)| *id == "coffee").expect("coffee").1.candidate;
        assert_eq!((base, coffee), (Decimal::from(48), Decimal::from(40)));
    }

    #[test]
    fn points_past_their_expiry_leave_the_liability() {
        let (set, _) = rules(CURRENT);
        let (_, doubled) = rules(&CURRENT.replace("\"5\"", "\"10\""));
        let policy = ProgramPolicy { expiry_months: 1, ..ProgramPolicy::with_defaults("p") };
        let comparison = compare_receipt(&doubled, &policy, &mut account(), &receipt()).expect("compared");
        let mut tally = Tally::new(&set, &set);
        tally.add(&comparison, sold_at() + Duration::days(10));
        assert_eq!(tally.liability_change, Decimal::from(50));
        tally.add(&comparison, sold_at() + Duration::days(40));
        assert_eq!((tally.liability_change, tally.expired_difference), (Decimal::from(50), Decimal::from(50)));
    }

    #[test]
    fn receipts_without_a_basket_reversed_or_of_another_account_are_skipped() {
        let (_, compiled) = rules(CURRENT);
        let policy = ProgramPolicy::with_defaults("p");
        let mut old = receipt();
        old.basket = None;
        assert_eq!(compare_receipt(&compiled, &policy, &mut account(), &old), Err(ReceiptSkip::NoBasket));
        let mut reversed = receipt();
        reversed.reversed = true;
        assert_eq!(compare_receipt(&compiled, &policy, &mut account(), &reversed), Err(ReceiptSkip::Reversed));
        let mut other = account();
        other.account_id = "acc-2".into();
        assert_eq!(compare_receipt(&compiled, &policy, &mut other, &receipt()), Err(ReceiptSkip::NotThisAccounts));
    }

    #[test]
    fn per_customer_budgets_carry_from_one_receipt_to_the_next() {
        let (_, capped) = rules(&format!("{CURRENT}limits.per_customer = {{ period = \"month\", points = \"70\" }}\n"));
        let policy = ProgramPolicy::with_defaults("p");
        let mut account = account();
        let first = compare_receipt(&capped, &policy, &mut account, &receipt()).expect("first");
        let second = compare_receipt(&capped, &policy, &mut account, &receipt()).expect("second");
        let coffee = |comparison: &Comparison| {
            comparison.candidate.iter().find(|part| &*part.rule_id == "coffee").map_or(Decimal::ZERO, |part| part.points)
        };
        // 50 of the 70 on the first receipt, the 20 left on the second.
        assert_eq!((coffee(&first), coffee(&second)), (Decimal::from(50), Decimal::from(20)));
    }

    /// Per rule (of four) the points given and the candidate's, the kept points of both, and
    /// whether the points expired.
    type Drawn = (Vec<(u8, i64)>, Vec<(u8, i64)>, i64, i64, bool);

    fn comparisons() -> impl Strategy<Value = Vec<Drawn>> {
        let parts = prop::collection::vec((0u8..4, 0i64..500), 0..4);
        prop::collection::vec((parts.clone(), parts, 0i64..2000, 0i64..2000, any::<bool>()), 0..30)
    }

    proptest! {
        /// Per-rule sums add up to the totals, the liability change and what expired add up to
        /// the kept difference, and the order receipts come in changes nothing.
        #[test]
        fn sums_agree_however_they_are_added(items in comparisons()) {
            let now = sold_at();
            let built: Vec<Comparison> = items.iter().map(|(given, candidate, given_kept, candidate_kept, expired)| Comparison {
                given: given.iter().map(|(rule, points)| part(&format!("r{rule}"), "r", *points)).collect(),
                candidate: candidate.iter().map(|(rule, points)| part(&format!("r{rule}"), "r", *points)).collect(),
                given_kept: Decimal::from(*given_kept),
                candidate_kept: Decimal::from(*candidate_kept),
                expires_at: if *expired { now - Duration::days(1) } else { now + Duration::days(1) },
            }).collect();
            let mut forward = Tally::default();
            built.iter().for_each(|comparison| forward.add(comparison, now));
            let mut backward = Tally::default();
            built.iter().rev().for_each(|comparison| backward.add(comparison, now));
            prop_assert_eq!(&forward, &backward);
            let given: Decimal = forward.rules().map(|(_, rule)| rule.given).sum();
            let candidate: Decimal = forward.rules().map(|(_, rule)| rule.candidate).sum();
            prop_assert_eq!(given, forward.given_total);
            prop_assert_eq!(candidate, forward.candidate_total);
            prop_assert_eq!(forward.liability_change + forward.expired_difference, forward.candidate_kept - forward.given_kept);
            let unexpired: Decimal = built.iter().filter(|c| c.expires_at > now).map(|c| c.candidate_kept - c.given_kept).sum();
            prop_assert_eq!(forward.liability_change, unexpired);
            prop_assert_eq!(forward.receipts_evaluated, built.len() as u64);
        }
    }
}
