//! A program's rules as the business writes them: a TOML, YAML or JSON document kept in git or sent
//! through the admin API. Nothing here is trusted: [`super::compile::compile`] checks every field and turns
//! the document into the indexed form that checkout evaluates.
//!
//! Dates, times and week days are plain strings ("2026-12-31", "08:00", "sat") so that the three
//! formats read the same; the compiler parses them and names the field when one is wrong.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use crate::rfm::RfmThresholds;

/// Everything a program's CRM manager configures about earning and spending.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// Customer tiers by spend; absent means every customer is in the tier "base".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<TierTable>,
    #[serde(default)]
    pub spending: SpendingRules,
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The thresholds of the customers' RFM scores and segments (`crate::rfm`); absent uses the
    /// defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfm: Option<RfmThresholds>,
    /// Campaign-wide budgets, by campaign name: the most points the purchase rules of that
    /// campaign (`rules[].campaign`) may give across all customers (`super::campaigns`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub budgets: std::collections::BTreeMap<String, CampaignBudget>,
}

/// A campaign's budget across all customers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignBudget {
    /// The most points the campaign's purchase rules give in all. Points clawed back by refunds
    /// do not come back to it.
    pub points: Decimal,
    /// How many points an engine reserves at a time; absent: a hundredth of `points`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_points: Option<Decimal>,
}

/// Tiers (statuses) reached by spend over a sliding window of calendar months.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierTable {
    /// Spend counts over this many calendar months, the current one included.
    #[serde(default = "twelve")]
    pub window_months: u32,
    /// A tier is never lowered before the end of this period; raising happens at once.
    #[serde(default)]
    pub review: ReviewPeriod,
    /// From the lowest tier up; the first has `min_spend = 0`.
    pub levels: Vec<TierLevel>,
}

fn twelve() -> u32 {
    12
}

/// When tiers may go down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewPeriod {
    Month,
    #[default]
    Quarter,
    Year,
}

/// One tier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLevel {
    pub id: String,
    /// Spend over the window that reaches this tier.
    pub min_spend: Decimal,
    /// Cashback of this tier, paid by rules with the `tier_percent` effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cashback_percent: Option<Decimal>,
    /// Share of a receipt points may pay in this tier; absent uses `spending.cap_percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_cap_percent: Option<Decimal>,
}

/// How points may be spent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendingRules {
    /// Share of the eligible part of a receipt points may pay; absent uses the program's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_percent: Option<Decimal>,
    /// Spending is allowed only once the spendable balance reaches this many points.
    #[serde(default)]
    pub min_balance_to_spend: Decimal,
    /// Only registered cards may spend (domain.md: the usual rule).
    #[serde(default = "yes")]
    pub registered_only: bool,
    /// Lines points cannot pay for (tobacco, alcohol, gift cards...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<LineFilter>,
}

impl Default for SpendingRules {
    fn default() -> Self {
        SpendingRules { cap_percent: None, min_balance_to_spend: Decimal::ZERO, registered_only: true, exclude: None }
    }
}

fn yes() -> bool {
    true
}

/// One rule (or campaign step): when it applies, what it gives, and its limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique in the program: letters, digits, '_' and '-'. Ledger entries record it.
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Groups rules into a campaign: for reports, switching a campaign on and off at once, and
    /// its budget across all customers (`budgets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default = "yes")]
    pub active: bool,
    /// Higher first; ties are broken by ID.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub stacking: Stacking,
    #[serde(default)]
    pub trigger: Trigger,
    /// For `trigger = "event"`: the event name ("review", "survey").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default)]
    pub when: Conditions,
    pub effect: Effect,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub valid: Validity,
}

/// How a rule combines with others that match the same line (or, for receipt-level effects, the
/// same receipt). Rules are walked by priority: an exclusive rule applies only if nothing applied
/// before it and then shuts out the rest; a stackable rule applies unless an exclusive one did;
/// an `always` rule applies regardless and shuts out nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stacking {
    Exclusive,
    #[default]
    Stackable,
    Always,
}

/// What makes a rule run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A paid receipt (Accrue), and the quote of one (Authorize).
    #[default]
    Purchase,
    /// Registration of the customer (welcome bonus).
    Enrollment,
    /// A named event reported through the API (a review on a maps service).
    Event,
    /// The engine's daily sweep over all customers (funnels): birthday and win-back awards. Each
    /// rule pays a customer once per occasion: once per inactivity spell for `inactive_days_min`,
    /// once per birthday for `birthday`, otherwise once per `limits.per_customer` period.
    Schedule,
}

/// Conditions; all that are given must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Which lines the rule looks at and pays on.
    #[serde(default)]
    pub lines: LineFilter,
    #[serde(default)]
    pub receipt: ReceiptConditions,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tills: Vec<String>,
    /// "pos", "app", "online", "partner"...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    #[serde(default)]
    pub customer: CustomerConditions,
    /// A coupon code the till must present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<String>,
}

/// Which lines match. A line matches when it is in any of the positive lists (or there are none)
/// and in none of the exclusions, and the flags agree.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skus: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brands: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_skus: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_brands: Vec<String>,
    /// `false` leaves excise goods out, `true` takes only them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excise: Option<bool>,
    /// `false` leaves promo-price goods out, `true` takes only them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promo_price: Option<bool>,
}

/// Conditions on the receipt as a whole.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptConditions {
    /// The whole receipt's total is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_total: Option<Decimal>,
    /// The matching lines' total is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_matching_total: Option<Decimal>,
    /// The matching lines' quantity is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_matching_quantity: Option<Decimal>,
}

/// Conditions on the customer (the rule's segment).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerConditions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<String>,
    /// The customer has at least one of these tags ("pensioner", "large_family").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_any: Vec<String>,
    /// The customer has none of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_none: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<bool>,
    /// `true`: the customer's first purchase; `false`: any later one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_purchase: Option<bool>,
    /// At least this many days since the last purchase (win-back); never true on a first purchase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_days_min: Option<u32>,
    /// The account is at most this many days old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_age_days_max: Option<u32>,
    /// Within a window around the customer's birthday (in the program's time zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birthday: Option<BirthdayWindow>,
    /// The customer is in one of these RFM segments at the time of the sale ("at_risk",
    /// "hibernating": `crate::rfm::Segment`); a customer who never bought is in none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
}

/// From `days_before` the birthday through `days_after` it (0 and 0: the day itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BirthdayWindow {
    #[serde(default)]
    pub days_before: u32,
    #[serde(default)]
    pub days_after: u32,
}

/// What a rule gives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Effect {
    /// A percentage of each matching line's base (its total less its share of spent points).
    PercentOfLines { percent: Decimal },
    /// A percentage of the whole receipt's base, once the conditions hold.
    PercentOfReceipt { percent: Decimal },
    /// A fixed number of points per qualifying receipt, enrolment or event.
    FixedPoints { points: Decimal },
    /// Multiplies what the percentage rules gave each matching line ("double points on coffee").
    Multiplier { factor: Decimal },
    /// The cashback percentage of the customer's tier, on each matching line.
    TierPercent,
    /// Issues a certificate: `value` points, spendable at once, expiring after `valid_days`, and
    /// usable for at most `cap_percent` of a receipt (domain.md: 1,000 points, 15 days, 7%).
    IssueCertificate { value: Decimal, valid_days: u32, cap_percent: Decimal },
    /// Pays the customers who referred the buyer: `percents[0]` of the receipt's base to the
    /// referrer, `percents[1]` to the referrer's referrer, and so on (domain.md: 3%, 1%, 1%).
    /// The buyer's own earn is unchanged.
    Referral { percents: Vec<Decimal> },
    /// Takes the receipt's small change as points, one point per unit of currency, at most
    /// `max_points` (the "safe" service of domain.md); spendable at once.
    ChangeToPoints { max_points: Decimal },
}

/// Budgets of one rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most points the rule gives on one receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_receipt_points: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_customer: Option<CustomerLimit>,
}

/// A per-customer budget over a calendar period (in the program's time zone).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerLimit {
    pub period: Period,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<Decimal>,
    /// Receipts (or events) the rule may pay on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
    Year,
    Ever,
}

/// When a rule is in force, in the program's time zone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    /// First day ("2026-12-01") or instant ("2026-12-01T10:00").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Last day, included ("2026-12-31"), or the instant it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Week days ("mon".."sun"); empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// Local hours, "08:00"-"11:00" (the end excluded); a window past midnight wraps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<HoursWindow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursWindow {
    pub from: String,
    pub until: String,
}

/// The formats a rule document may be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocumentFormat {
    Toml,
    Yaml,
    Json,
}
