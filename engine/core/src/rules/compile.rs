//! From a rule document to the form checkout evaluates: every field checked (a bad rule is refused
//! here, with its path and the reason, never discovered at a till), inactive rules left out, lists
//! turned into sets, and rules indexed by SKU, category, brand, tier, tag and RFM segment so that
//! evaluating a receipt costs in proportion to the rules that can match it, not to all rules.

use std::collections::{HashMap, HashSet};

/// The index and filter maps: keys are the program's own SKUs, categories, brands, tiers and tags,
/// looked up once or more per basket line, so a fast hash (seeded per process) beats SipHash here.
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type Set<K> = HashSet<K, foldhash::fast::RandomState>;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Weekday};
use rust_decimal::Decimal;

use super::definition::{
    BirthdayWindow, DocumentFormat, Effect, Limits, LineFilter, Period, Rule, RuleSet, SpendingRules, Stacking, TierTable, Trigger,
};
use super::yaml_depth::{YAML_DEPTH_MAX, YamlDepth, yaml_depth};
use crate::rfm::{RfmScore, RfmThresholds, Segment};

/// Most rules in one program.
pub const RULES_MAX: usize = 5_000;
/// Most entries in one list of a rule (SKUs, categories, stores...).
pub const LIST_ITEMS_MAX: usize = 100_000;
/// Most tiers.
pub const TIERS_MAX: usize = 32;
/// Longest rule ID, tier ID, SKU, category, brand, tag, store, channel or coupon.
pub const NAME_LEN_MAX: usize = 64;
/// Largest fixed award or per-receipt budget, in points.
pub const POINTS_MAX: i64 = 1_000_000_000;

/// One thing wrong with a rule document: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleProblem {
    /// `rules[3] (birthday).effect.percent`, `tiers.levels[1].min_spend`.
    pub at: String,
    pub reason: String,
}

/// Every problem found in a document, all at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid rules:\n  {}", .problems.iter().map(|p| format!("{}: {}", p.at, p.reason)).collect::<Vec<_>>().join("\n  "))]
pub struct RuleSetError {
    pub problems: Vec<RuleProblem>,
}

impl RuleSetError {
    fn one(at: impl Into<String>, reason: impl Into<String>) -> Self {
        RuleSetError { problems: vec![RuleProblem { at: at.into(), reason: reason.into() }] }
    }
}

/// Reads a document in the given format, naming the path of the first unreadable field.
fn parse<T: serde::de::DeserializeOwned>(text: &str, format: DocumentFormat) -> Result<T, RuleSetError> {
    fn located<E: std::fmt::Display>(error: serde_path_to_error::Error<E>) -> RuleSetError {
        let at = problem_path(error.path());
        RuleSetError::one(at, error.into_inner().to_string().trim().replace('\n', " "))
    }
    match format {
        DocumentFormat::Toml => serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(located),
        DocumentFormat::Yaml => match yaml_depth(text, YAML_DEPTH_MAX) {
            YamlDepth::TooDeep { offset } => {
                Err(RuleSetError::one("document", format!("collections nest more than {YAML_DEPTH_MAX} levels deep (at byte {offset})")))
            }
            YamlDepth::Unreadable(why) => Err(RuleSetError::one("document", format!("not YAML: {why}"))),
            YamlDepth::Within => serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text)).map_err(located),
        },
        DocumentFormat::Json => serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text)).map_err(located),
    }
}

/// A parse error's path as `rules[0].when.skus`. Keys a dotted path cannot show (blank, or holding
/// `.`, `[`, `]` or quotes) are written quoted in brackets, `rules[0][" "]`, so every problem
/// names a place even for a key made of spaces; the empty path is the `document`.
fn problem_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut at = String::new();
    for segment in path.iter() {
        let name = match segment {
            Segment::Seq { index } => {
                at.push_str(&format!("[{index}]"));
                continue;
            }
            Segment::Map { key: name } | Segment::Enum { variant: name } => name.as_str(),
            Segment::Unknown => "?",
        };
        if name.trim().is_empty() || name.contains(['.', '[', ']', '"']) {
            at.push_str(&format!("[{name:?}]"));
        } else {
            if !at.is_empty() {
                at.push('.');
            }
            at.push_str(name);
        }
    }
    if at.is_empty() { "document".to_owned() } else { at }
}

/// Reads a whole rule set.
pub fn parse_rule_set(text: &str, format: DocumentFormat) -> Result<RuleSet, RuleSetError> {
    parse(text, format)
}

/// Reads one rule (the admin API's unit of change).
pub fn parse_rule(text: &str, format: DocumentFormat) -> Result<Rule, RuleSetError> {
    parse(text, format)
}

/// Writes a rule set or one rule as a document.
pub fn render<T: serde::Serialize>(value: &T, format: DocumentFormat) -> Result<String, String> {
    match format {
        DocumentFormat::Toml => toml::to_string(value).map_err(|error| error.to_string()),
        DocumentFormat::Yaml => serde_yaml_ng::to_string(value).map_err(|error| error.to_string()),
        DocumentFormat::Json => serde_json::to_string_pretty(value).map_err(|error| error.to_string()),
    }
}

/// The format a file name implies.
pub fn format_of_path(path: &str) -> Option<DocumentFormat> {
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".toml") {
        Some(DocumentFormat::Toml)
    } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        Some(DocumentFormat::Yaml)
    } else if lower.ends_with(".json") {
        Some(DocumentFormat::Json)
    } else {
        None
    }
}

/// Which lines a rule takes, as sets.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompiledFilter {
    pub skus: Set<String>,
    pub categories: Set<String>,
    pub brands: Set<String>,
    pub exclude_skus: Set<String>,
    pub exclude_categories: Set<String>,
    pub exclude_brands: Set<String>,
    pub excise: Option<bool>,
    pub promo_price: Option<bool>,
}

impl CompiledFilter {
    pub fn has_positive_lists(&self) -> bool {
        !(self.skus.is_empty() && self.categories.is_empty() && self.brands.is_empty())
    }

    pub fn matches(&self, line: &crate::basket::BasketLine) -> bool {
        let listed = !self.has_positive_lists()
            || self.skus.contains(&line.sku)
            || self.categories.contains(&line.category)
            || (!line.brand.is_empty() && self.brands.contains(&line.brand));
        let excluded = self.exclude_skus.contains(&line.sku)
            || self.exclude_categories.contains(&line.category)
            || (!line.brand.is_empty() && self.exclude_brands.contains(&line.brand));
        listed
            && !excluded
            && self.excise.is_none_or(|wanted| wanted == line.excise)
            && self.promo_price.is_none_or(|wanted| wanted == line.promo_price)
    }
}

/// When a rule is in force, parsed.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompiledValidity {
    /// Local instants: from (included) and until (excluded).
    pub from: Option<NaiveDateTime>,
    pub until: Option<NaiveDateTime>,
    /// Bit `n` set: week day `n` (Monday = 0) allowed; zero means every day.
    pub days: u8,
    pub hours: Option<(NaiveTime, NaiveTime)>,
}

impl CompiledValidity {
    pub fn contains(&self, local: NaiveDateTime) -> bool {
        use chrono::Datelike;
        if self.from.is_some_and(|from| local < from) || self.until.is_some_and(|until| local >= until) {
            return false;
        }
        if self.days != 0 && self.days & (1 << local.weekday().num_days_from_monday()) == 0 {
            return false;
        }
        match self.hours {
            None => true,
            Some((from, until)) if from < until => local.time() >= from && local.time() < until,
            Some((from, until)) => local.time() >= from || local.time() < until,
        }
    }
}

/// Conditions on the customer, parsed.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompiledCustomer {
    pub tiers: Vec<String>,
    pub tags_any: Vec<String>,
    pub tags_none: Vec<String>,
    pub registered: Option<bool>,
    pub first_purchase: Option<bool>,
    pub inactive_days_min: Option<u32>,
    pub account_age_days_max: Option<u32>,
    pub birthday: Option<BirthdayWindow>,
    /// RFM segments; empty: any customer.
    pub segments: Vec<Segment>,
}

/// A rule ready for checkout.
#[derive(Clone, Debug)]
pub(crate) struct CompiledRule {
    pub id: String,
    /// `id`, and the rule's name (its id if it has none), as receipts and ledger reasons carry
    /// them, made once here.
    pub shown_id: std::sync::Arc<str>,
    pub shown_label: std::sync::Arc<str>,
    pub stacking: Stacking,
    pub lines: CompiledFilter,
    pub min_total: Option<Decimal>,
    pub min_matching_total: Option<Decimal>,
    pub min_matching_quantity: Option<Decimal>,
    pub stores: Set<String>,
    pub tills: Set<String>,
    pub channels: Set<String>,
    pub customer: CompiledCustomer,
    pub coupon: Option<String>,
    pub effect: Effect,
    pub limits: Limits,
    pub valid: CompiledValidity,
    /// The rule's campaign, when the campaign has a budget across all customers (`campaigns`).
    pub budget: Option<std::sync::Arc<str>>,
}

/// Purchase rules by what can make them match; each rule sits in exactly one place.
#[derive(Clone, Debug, Default)]
pub(crate) struct RuleIndex {
    pub by_sku: Map<String, Vec<u32>>,
    pub by_category: Map<String, Vec<u32>>,
    pub by_brand: Map<String, Vec<u32>>,
    pub by_tier: Map<String, Vec<u32>>,
    pub by_tag: Map<String, Vec<u32>>,
    /// Rules for customers in an RFM segment, by the segment's position in [`Segment::ALL`].
    pub by_segment: [Vec<u32>; Segment::ALL.len()],
    /// Rules any receipt may match: checked on every purchase.
    pub general: Vec<u32>,
}

/// Tiers, parsed.
#[derive(Clone, Debug)]
pub(crate) struct CompiledTiers {
    pub window_months: u32,
    pub review: super::definition::ReviewPeriod,
    pub levels: Vec<super::definition::TierLevel>,
}

/// A validated, indexed rule set: one program version. Immutable; a change compiles a new one.
#[derive(Clone, Debug)]
pub struct CompiledRules {
    pub(crate) version: u64,
    pub(crate) source: RuleSet,
    /// Active rules, highest priority first.
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) purchase: RuleIndex,
    pub(crate) enrollment: Vec<u32>,
    pub(crate) events: Map<String, Vec<u32>>,
    pub(crate) schedule: Vec<u32>,
    pub(crate) tiers: Option<CompiledTiers>,
    pub(crate) spending: SpendingRules,
    /// `spending.exclude`, compiled.
    pub(crate) spending_exclude: Option<CompiledFilter>,
    /// `rfm`, or the defaults.
    pub(crate) rfm: RfmThresholds,
    /// Whether an active rule has a segment condition: only then does an evaluation score the
    /// customer.
    pub(crate) uses_segments: bool,
}

impl CompiledRules {
    /// The program version this rule set is.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The document it was compiled from.
    pub fn source(&self) -> &RuleSet {
        &self.source
    }

    /// Active rules, highest priority first.
    pub fn active_rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|rule| rule.id.as_str())
    }

    /// The campaigns with a budget across all customers, by name.
    pub fn budgets(&self) -> &std::collections::BTreeMap<String, super::definition::CampaignBudget> {
        &self.source.budgets
    }

    /// The tier customers start in.
    pub fn entry_tier(&self) -> &str {
        self.tiers.as_ref().and_then(|tiers| tiers.levels.first()).map_or(super::tiers::BASE_TIER, |level| level.id.as_str())
    }

    /// Event names some active rule pays for.
    pub fn has_event(&self, event: &str) -> bool {
        self.events.contains_key(event)
    }

    /// Whether the daily sweep has anything to do for this program.
    pub fn has_schedule(&self) -> bool {
        !self.schedule.is_empty()
    }

    /// The thresholds of the customers' RFM scores in this version.
    pub fn rfm(&self) -> &RfmThresholds {
        &self.rfm
    }

    /// A customer's RFM scores and segment at `now` under this version's thresholds (`None`: the
    /// customer never bought).
    pub fn rfm_score(
        &self,
        account: &crate::account::AccountState,
        now: chrono::DateTime<chrono::Utc>,
        zone: chrono_tz::Tz,
    ) -> Option<RfmScore> {
        crate::rfm::score(account, &self.rfm, now, zone)
    }

    /// The segment rules see for `account` at `now`: `None` when no active rule looks at segments
    /// (the customer is not scored then) or the customer never bought.
    pub(crate) fn segment_for_rules(
        &self,
        account: &crate::account::AccountState,
        now: chrono::DateTime<chrono::Utc>,
        zone: chrono_tz::Tz,
    ) -> Option<Segment> {
        if !self.uses_segments {
            return None;
        }
        self.rfm_score(account, now, zone).map(|score| score.segment)
    }
}

fn valid_name(value: &str) -> bool {
    !value.is_empty() && value.len() <= NAME_LEN_MAX && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Collects problems with their paths while the compiler walks the document.
struct Checker {
    problems: Vec<RuleProblem>,
}

impl Checker {
    fn push(&mut self, at: &str, reason: impl Into<String>) {
        self.problems.push(RuleProblem { at: at.to_owned(), reason: reason.into() });
    }

    fn percent(&mut self, at: &str, value: Decimal) {
        if value < Decimal::ZERO || value > Decimal::ONE_HUNDRED {
            self.push(at, format!("a percentage from 0 to 100, not {value}"));
        }
    }

    fn points(&mut self, at: &str, value: Decimal, points_scale: u32) {
        if value <= Decimal::ZERO || value > Decimal::from(POINTS_MAX) {
            self.push(at, format!("above 0 and at most {POINTS_MAX}, not {value}"));
        } else if value.normalize().scale() > points_scale {
            self.push(at, format!("at most {points_scale} decimal places (the program's points scale)"));
        }
    }

    fn set(&mut self, at: &str, items: &[String]) -> Set<String> {
        if items.len() > LIST_ITEMS_MAX {
            self.push(at, format!("at most {LIST_ITEMS_MAX} entries"));
        }
        if let Some(bad) = items.iter().find(|item| item.is_empty() || item.len() > NAME_LEN_MAX) {
            self.push(at, format!("entries are 1 to {NAME_LEN_MAX} characters ('{}')", bad.chars().take(NAME_LEN_MAX).collect::<String>()));
        }
        items.iter().cloned().collect()
    }

    fn filter(&mut self, at: &str, filter: &LineFilter) -> CompiledFilter {
        CompiledFilter {
            skus: self.set(&format!("{at}.skus"), &filter.skus),
            categories: self.set(&format!("{at}.categories"), &filter.categories),
            brands: self.set(&format!("{at}.brands"), &filter.brands),
            exclude_skus: self.set(&format!("{at}.exclude_skus"), &filter.exclude_skus),
            exclude_categories: self.set(&format!("{at}.exclude_categories"), &filter.exclude_categories),
            exclude_brands: self.set(&format!("{at}.exclude_brands"), &filter.exclude_brands),
            excise: filter.excise,
            promo_price: filter.promo_price,
        }
    }

    fn tiers(&mut self, table: &TierTable) -> CompiledTiers {
        if !(1..=36).contains(&table.window_months) {
            self.push("tiers.window_months", "1 to 36");
        }
        if table.levels.is_empty() || table.levels.len() > TIERS_MAX {
            self.push("tiers.levels", format!("1 to {TIERS_MAX} tiers"));
        }
        let mut ids = Set::default();
        for (index, level) in table.levels.iter().enumerate() {
            let at = format!("tiers.levels[{index}] ({})", level.id);
            if !valid_name(&level.id) {
                self.push(&format!("{at}.id"), format!("1 to {NAME_LEN_MAX} letters, digits, '_' or '-'"));
            }
            if !ids.insert(level.id.as_str()) {
                self.push(&format!("{at}.id"), "appears twice");
            }
            if index == 0 && !level.min_spend.is_zero() {
                self.push(&format!("{at}.min_spend"), "the first tier starts at 0");
            }
            if index > 0 && level.min_spend <= table.levels[index - 1].min_spend {
                self.push(&format!("{at}.min_spend"), "must be above the previous tier's");
            }
            if let Some(percent) = level.cashback_percent {
                self.percent(&format!("{at}.cashback_percent"), percent);
            }
            if let Some(percent) = level.spend_cap_percent {
                self.percent(&format!("{at}.spend_cap_percent"), percent);
            }
        }
        CompiledTiers { window_months: table.window_months, review: table.review, levels: table.levels.clone() }
    }

    fn spending(&mut self, spending: &SpendingRules) -> Option<CompiledFilter> {
        if let Some(percent) = spending.cap_percent {
            self.percent("spending.cap_percent", percent);
        }
        if spending.min_balance_to_spend < Decimal::ZERO || spending.min_balance_to_spend > Decimal::from(POINTS_MAX) {
            self.push("spending.min_balance_to_spend", format!("0 to {POINTS_MAX}"));
        }
        spending.exclude.as_ref().map(|exclude| self.filter("spending.exclude", exclude))
    }

    fn local_instant(&mut self, at: &str, raw: &str, end_of_day: bool) -> Option<NaiveDateTime> {
        if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
            // A day given as `until` is included: the rule ends at the start of the next day.
            let day = if end_of_day { day.succ_opt()? } else { day };
            return Some(day.and_time(NaiveTime::MIN));
        }
        for pattern in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
            if let Ok(instant) = NaiveDateTime::parse_from_str(raw, pattern) {
                return Some(instant);
            }
        }
        self.push(at, format!("'{raw}' is not a date (2026-12-31) or a local time (2026-12-31T18:00)"));
        None
    }

    fn time_of_day(&mut self, at: &str, raw: &str) -> Option<NaiveTime> {
        if raw == "24:00" {
            return Some(NaiveTime::MIN);
        }
        NaiveTime::parse_from_str(raw, "%H:%M").map_err(|_| self.push(at, format!("'{raw}' is not a time such as 08:30"))).ok()
    }

    fn validity(&mut self, at: &str, rule: &Rule) -> CompiledValidity {
        let valid = &rule.valid;
        let from = valid.from.as_deref().and_then(|raw| self.local_instant(&format!("{at}.valid.from"), raw, false));
        let until = valid.until.as_deref().and_then(|raw| self.local_instant(&format!("{at}.valid.until"), raw, true));
        if let (Some(from), Some(until)) = (from, until)
            && from >= until
        {
            self.push(&format!("{at}.valid.until"), "must be after valid.from");
        }
        let mut days = 0u8;
        for (index, raw) in valid.days.iter().enumerate() {
            match raw.parse::<Weekday>() {
                Ok(day) => days |= 1 << day.num_days_from_monday(),
                Err(_) => self.push(&format!("{at}.valid.days[{index}]"), format!("'{raw}' is not a week day (mon..sun)")),
            }
        }
        let hours = valid.hours.as_ref().and_then(|hours| {
            let from = self.time_of_day(&format!("{at}.valid.hours.from"), &hours.from)?;
            let until = self.time_of_day(&format!("{at}.valid.hours.until"), &hours.until)?;
            if from == until {
                self.push(&format!("{at}.valid.hours"), "an empty window");
            }
            Some((from, until))
        });
        CompiledValidity { from, until, days, hours }
    }

    fn limits(&mut self, at: &str, limits: &Limits, points_scale: u32) {
        if let Some(points) = limits.per_receipt_points {
            self.points(&format!("{at}.limits.per_receipt_points"), points, points_scale);
        }
        if let Some(per_customer) = &limits.per_customer {
            if per_customer.points.is_none() && per_customer.uses.is_none() {
                self.push(&format!("{at}.limits.per_customer"), "give points, uses or both");
            }
            if let Some(points) = per_customer.points {
                self.points(&format!("{at}.limits.per_customer.points"), points, points_scale);
            }
            if per_customer.uses == Some(0) {
                self.push(&format!("{at}.limits.per_customer.uses"), "above 0 (deactivate the rule instead)");
            }
        }
    }

    fn rule(&mut self, index: usize, rule: &Rule, tiers: Option<&CompiledTiers>, points_scale: u32) -> CompiledRule {
        let at = format!("rules[{index}] ({})", rule.id);
        if !valid_name(&rule.id) {
            self.push(&format!("{at}.id"), format!("1 to {NAME_LEN_MAX} letters, digits, '_' or '-'"));
        }
        if rule.name.len() > 128 {
            self.push(&format!("{at}.name"), "at most 128 characters");
        }
        let when = &rule.when;
        let lines = self.filter(&format!("{at}.when.lines"), &when.lines);
        let stores = self.set(&format!("{at}.when.stores"), &when.stores);
        let tills = self.set(&format!("{at}.when.tills"), &when.tills);
        let channels = self.set(&format!("{at}.when.channels"), &when.channels);
        let customer = &when.customer;
        self.set(&format!("{at}.when.customer.tags_any"), &customer.tags_any);
        self.set(&format!("{at}.when.customer.tags_none"), &customer.tags_none);
        for (tier_index, tier) in customer.tiers.iter().enumerate() {
            let known = match tiers {
                Some(tiers) => tiers.levels.iter().any(|level| level.id == *tier),
                None => tier == super::tiers::BASE_TIER,
            };
            if !known {
                self.push(&format!("{at}.when.customer.tiers[{tier_index}]"), format!("no tier '{tier}' in this program"));
            }
        }
        let mut segments = Vec::with_capacity(customer.segments.len());
        for (segment_index, name) in customer.segments.iter().enumerate() {
            match Segment::from_name(name) {
                Some(segment) => segments.push(segment),
                None => self.push(
                    &format!("{at}.when.customer.segments[{segment_index}]"),
                    format!("no segment '{}'; the segments are {}", name.chars().take(NAME_LEN_MAX).collect::<String>(), Segment::names()),
                ),
            }
        }
        if !segments.is_empty() && rule.trigger == Trigger::Enrollment {
            self.push(&format!("{at}.when.customer.segments"), "a customer enrolling has bought nothing yet: in no segment");
        }
        if let Some(birthday) = customer.birthday
            && (birthday.days_before > 31 || birthday.days_after > 31)
        {
            self.push(&format!("{at}.when.customer.birthday"), "at most 31 days before and after");
        }
        if let Some(coupon) = &when.coupon
            && (coupon.is_empty() || coupon.len() > NAME_LEN_MAX)
        {
            self.push(&format!("{at}.when.coupon"), format!("1 to {NAME_LEN_MAX} characters"));
        }
        let receipt = &when.receipt;
        for (name, value) in [
            ("min_total", receipt.min_total),
            ("min_matching_total", receipt.min_matching_total),
            ("min_matching_quantity", receipt.min_matching_quantity),
        ] {
            if value.is_some_and(|value| value < Decimal::ZERO) {
                self.push(&format!("{at}.when.receipt.{name}"), "must not be negative");
            }
        }
        match &rule.effect {
            Effect::PercentOfLines { percent } | Effect::PercentOfReceipt { percent } => {
                self.percent(&format!("{at}.effect.percent"), *percent)
            }
            Effect::FixedPoints { points } => self.points(&format!("{at}.effect.points"), *points, points_scale),
            Effect::Multiplier { factor } => {
                if *factor <= Decimal::ONE || *factor > Decimal::ONE_HUNDRED {
                    self.push(&format!("{at}.effect.factor"), format!("above 1 and at most 100, not {factor}"));
                }
            }
            Effect::TierPercent => {
                if tiers.is_none_or(|tiers| tiers.levels.iter().all(|level| level.cashback_percent.is_none())) {
                    self.push(&format!("{at}.effect"), "tier_percent needs tiers with cashback_percent");
                }
            }
            Effect::ChangeToPoints { max_points } => self.points(&format!("{at}.effect.max_points"), *max_points, points_scale),
            Effect::Referral { percents } => {
                if percents.is_empty() || percents.len() > crate::account::REFERRAL_LEVELS_MAX {
                    self.push(&format!("{at}.effect.percents"), format!("1 to {} levels", crate::account::REFERRAL_LEVELS_MAX));
                }
                for (level, percent) in percents.iter().enumerate() {
                    self.percent(&format!("{at}.effect.percents[{level}]"), *percent);
                }
            }
            Effect::IssueCertificate { value, valid_days, cap_percent } => {
                self.points(&format!("{at}.effect.value"), *value, points_scale);
                if !(1..=3650).contains(valid_days) {
                    self.push(&format!("{at}.effect.valid_days"), "1 to 3650");
                }
                if *cap_percent <= Decimal::ZERO || *cap_percent > Decimal::ONE_HUNDRED {
                    self.push(&format!("{at}.effect.cap_percent"), format!("above 0 and at most 100, not {cap_percent}"));
                }
            }
        }
        let per_purchase = matches!(rule.trigger, Trigger::Purchase);
        if !per_purchase && matches!(rule.effect, Effect::Referral { .. } | Effect::ChangeToPoints { .. }) {
            self.push(&format!("{at}.effect"), "referral and change_to_points rules work on purchases");
        }
        if per_purchase && matches!(rule.effect, Effect::IssueCertificate { .. }) {
            self.push(&format!("{at}.effect"), "issue_certificate is for enrollment, event and schedule rules");
        }
        match (rule.trigger, &rule.event) {
            (Trigger::Event, None) => self.push(&format!("{at}.event"), "required with trigger = \"event\""),
            (Trigger::Event, Some(event)) if !valid_name(event) => {
                self.push(&format!("{at}.event"), format!("1 to {NAME_LEN_MAX} letters, digits, '_' or '-'"));
            }
            (Trigger::Purchase | Trigger::Enrollment | Trigger::Schedule, Some(_)) => {
                self.push(&format!("{at}.event"), "only with trigger = \"event\"");
            }
            _ => {}
        }
        if rule.trigger == Trigger::Schedule
            && customer.inactive_days_min.is_none()
            && customer.birthday.is_none()
            && rule.limits.per_customer.as_ref().is_none_or(|limit| limit.uses.is_none())
        {
            self.push(
                &format!("{at}.limits.per_customer.uses"),
                "a schedule rule without inactivity or birthday conditions needs a use limit per period",
            );
        }
        if !per_purchase {
            if !matches!(rule.effect, Effect::FixedPoints { .. } | Effect::IssueCertificate { .. }) {
                self.push(&format!("{at}.effect"), "enrolment, event and schedule rules give fixed_points or issue_certificate");
            }
            let has_line_conditions = when.lines != LineFilter::default() || *receipt != Default::default();
            if has_line_conditions || !when.tills.is_empty() || !when.channels.is_empty() || when.coupon.is_some() {
                self.push(
                    &format!("{at}.when"),
                    "enrolment, event and schedule rules have no receipt, line, till, channel or coupon conditions",
                );
            }
            if rule.limits.per_receipt_points.is_some() {
                self.push(&format!("{at}.limits.per_receipt_points"), "only for purchase rules");
            }
        }
        self.limits(&at, &rule.limits, points_scale);
        let valid = self.validity(&at, rule);
        CompiledRule {
            id: rule.id.clone(),
            shown_id: rule.id.as_str().into(),
            shown_label: if rule.name.is_empty() { rule.id.as_str().into() } else { rule.name.as_str().into() },
            stacking: rule.stacking,
            lines,
            min_total: receipt.min_total,
            min_matching_total: receipt.min_matching_total,
            min_matching_quantity: receipt.min_matching_quantity,
            stores,
            tills,
            channels,
            customer: CompiledCustomer {
                tiers: customer.tiers.clone(),
                tags_any: customer.tags_any.clone(),
                tags_none: customer.tags_none.clone(),
                registered: customer.registered,
                first_purchase: customer.first_purchase,
                inactive_days_min: customer.inactive_days_min,
                account_age_days_max: customer.account_age_days_max,
                birthday: customer.birthday,
                segments,
            },
            coupon: when.coupon.clone(),
            effect: rule.effect.clone(),
            limits: rule.limits.clone(),
            valid,
            budget: None,
        }
    }

    /// Campaign budgets: named like campaigns, positive, each naming a campaign of purchase rules
    /// that give points, the only points a budget counts.
    fn budgets(&mut self, rule_set: &RuleSet, points_scale: u32) {
        for (campaign, budget) in &rule_set.budgets {
            let at = format!("budgets.{campaign}");
            if !valid_name(campaign) {
                self.push(&at, format!("a campaign name: 1 to {NAME_LEN_MAX} letters, digits, '_' or '-'"));
            }
            self.points(&format!("{at}.points"), budget.points, points_scale);
            if let Some(chunk) = budget.chunk_points {
                self.points(&format!("{at}.chunk_points"), chunk, points_scale);
                if chunk > budget.points {
                    self.push(&format!("{at}.chunk_points"), format!("at most the budget's points, {}", budget.points));
                }
            }
            if !rule_set.rules.iter().any(|rule| rule.campaign.as_ref() == Some(campaign)) {
                self.push(&at, format!("no rule has campaign = \"{campaign}\""));
            }
        }
        for (index, rule) in rule_set.rules.iter().enumerate() {
            let Some(campaign) = rule.campaign.as_ref().filter(|campaign| rule_set.budgets.contains_key(*campaign)) else {
                continue;
            };
            let pays_points = matches!(
                rule.effect,
                Effect::PercentOfLines { .. }
                    | Effect::TierPercent
                    | Effect::Multiplier { .. }
                    | Effect::PercentOfReceipt { .. }
                    | Effect::FixedPoints { .. }
            );
            if rule.trigger != Trigger::Purchase || !pays_points {
                self.push(
                    &format!("rules[{index}] ({}).campaign", rule.id),
                    format!(
                        "campaign \"{campaign}\" has a budget, which counts the points of purchase rules; \
                         referral, change_to_points, enrolment, event and schedule rules cannot be in it"
                    ),
                );
            }
        }
    }
}

fn index_rule(index: &mut RuleIndex, position: u32, rule: &CompiledRule) {
    let filter = &rule.lines;
    if filter.has_positive_lists() {
        for sku in &filter.skus {
            index.by_sku.entry(sku.clone()).or_default().push(position);
        }
        for category in &filter.categories {
            index.by_category.entry(category.clone()).or_default().push(position);
        }
        for brand in &filter.brands {
            index.by_brand.entry(brand.clone()).or_default().push(position);
        }
    } else if !rule.customer.tiers.is_empty() {
        for tier in &rule.customer.tiers {
            index.by_tier.entry(tier.clone()).or_default().push(position);
        }
    } else if !rule.customer.tags_any.is_empty() {
        for tag in &rule.customer.tags_any {
            index.by_tag.entry(tag.clone()).or_default().push(position);
        }
    } else if !rule.customer.segments.is_empty() {
        let mut segments = rule.customer.segments.clone();
        segments.sort_unstable();
        segments.dedup();
        for segment in segments {
            if let Some(slot) = Segment::ALL.iter().position(|listed| *listed == segment) {
                index.by_segment[slot].push(position);
            }
        }
    } else {
        index.general.push(position);
    }
}

/// Checks a rule set and compiles it as program version `version`. Every problem is reported at once.
pub fn compile(rule_set: &RuleSet, version: u64, points_scale: u32) -> Result<CompiledRules, RuleSetError> {
    let mut checker = Checker { problems: Vec::new() };
    if rule_set.rules.len() > RULES_MAX {
        checker.push("rules", format!("at most {RULES_MAX} rules"));
    }
    let tiers = rule_set.tiers.as_ref().map(|table| checker.tiers(table));
    if let Some(rfm) = &rule_set.rfm {
        for (field, reason) in rfm.problems() {
            checker.push(&format!("rfm.{field}"), reason);
        }
    }
    let spending_exclude = checker.spending(&rule_set.spending);
    checker.budgets(rule_set, points_scale);
    let mut ids = Set::default();
    let mut compiled = Vec::with_capacity(rule_set.rules.len());
    for (index, rule) in rule_set.rules.iter().enumerate() {
        if !ids.insert(rule.id.as_str()) {
            checker.push(&format!("rules[{index}] ({}).id", rule.id), "appears twice");
        }
        let mut compiled_rule = checker.rule(index, rule, tiers.as_ref(), points_scale);
        compiled_rule.budget =
            rule.campaign.as_deref().filter(|campaign| rule_set.budgets.contains_key(*campaign)).map(std::sync::Arc::from);
        if rule.active {
            compiled.push((rule.priority, rule.trigger, rule.event.clone(), compiled_rule));
        }
    }
    if !checker.problems.is_empty() {
        return Err(RuleSetError { problems: checker.problems });
    }
    compiled.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.3.id.cmp(&b.3.id)));
    let uses_segments = compiled.iter().any(|(_, _, _, rule)| !rule.customer.segments.is_empty());
    let mut rules = Vec::with_capacity(compiled.len());
    let mut purchase = RuleIndex::default();
    let mut enrollment = Vec::new();
    let mut events: Map<String, Vec<u32>> = Map::default();
    let mut schedule = Vec::new();
    for (position, (_, trigger, event, rule)) in compiled.into_iter().enumerate() {
        let position = u32::try_from(position).map_err(|_| RuleSetError::one("rules", "too many rules"))?;
        match trigger {
            Trigger::Purchase => index_rule(&mut purchase, position, &rule),
            Trigger::Enrollment => enrollment.push(position),
            Trigger::Event => events.entry(event.unwrap_or_default()).or_default().push(position),
            Trigger::Schedule => schedule.push(position),
        }
        rules.push(rule);
    }
    Ok(CompiledRules {
        version,
        source: rule_set.clone(),
        rules,
        purchase,
        enrollment,
        events,
        schedule,
        tiers,
        spending: rule_set.spending.clone(),
        spending_exclude,
        rfm: rule_set.rfm.clone().unwrap_or_default(),
        uses_segments,
    })
}

/// The rule set of a program that has only a flat cashback percentage (excise and promo-price
/// goods excluded): what a program gets before its CRM manager writes any rule.
pub fn flat_cashback(percent: Decimal) -> RuleSet {
    RuleSet {
        tiers: None,
        spending: SpendingRules::default(),
        rules: vec![Rule {
            id: "base".into(),
            name: format!("cashback {}%", percent.normalize()),
            campaign: None,
            active: true,
            priority: 0,
            stacking: Stacking::Stackable,
            trigger: Trigger::Purchase,
            event: None,
            when: super::definition::Conditions {
                lines: LineFilter { excise: Some(false), promo_price: Some(false), ..LineFilter::default() },
                ..Default::default()
            },
            effect: Effect::PercentOfLines { percent },
            limits: Limits::default(),
            valid: Default::default(),
        }],
        rfm: None,
        budgets: Default::default(),
    }
}

/// Period keys for per-customer budgets: a counter belongs to the period its key names.
pub fn period_key(period: Period, local_day: NaiveDate) -> String {
    use chrono::Datelike;
    // Written out rather than through a strftime pattern (parsed on every call; budgets are looked
    // up per rule per receipt); chrono's `%Y` for the years outside 0..=9999 it writes with a sign.
    let (year, month, day) = (local_day.year(), local_day.month(), local_day.day());
    if !(0..=9999).contains(&year) {
        return match period {
            Period::Day => local_day.format("%Y-%m-%d").to_string(),
            Period::Month => local_day.format("%Y-%m").to_string(),
            Period::Year => local_day.format("%Y").to_string(),
            Period::Week | Period::Ever => period_key_common(period, local_day),
        };
    }
    match period {
        Period::Day => format!("{year:04}-{month:02}-{day:02}"),
        Period::Month => format!("{year:04}-{month:02}"),
        Period::Year => format!("{year:04}"),
        Period::Week | Period::Ever => period_key_common(period, local_day),
    }
}

fn period_key_common(period: Period, local_day: NaiveDate) -> String {
    use chrono::Datelike;
    match period {
        Period::Week => {
            let week = local_day.iso_week();
            format!("{}-W{:02}", week.year(), week.week())
        }
        _ => "ever".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys written out equal chrono's strftime keys, which stored counters were made with.
    #[test]
    fn period_keys_are_the_strftime_keys() {
        let mut day = NaiveDate::from_ymd_opt(1899, 12, 25).expect("date");
        let last = NaiveDate::from_ymd_opt(2101, 1, 5).expect("date");
        while day <= last {
            assert_eq!(period_key(Period::Day, day), day.format("%Y-%m-%d").to_string());
            assert_eq!(period_key(Period::Month, day), day.format("%Y-%m").to_string());
            assert_eq!(period_key(Period::Year, day), day.format("%Y").to_string());
            day += chrono::Duration::days(1);
        }
        for year in [-5, 12, 999, 10_000] {
            let day = NaiveDate::from_ymd_opt(year, 3, 7).expect("date");
            assert_eq!(period_key(Period::Day, day), day.format("%Y-%m-%d").to_string());
            assert_eq!(period_key(Period::Year, day), day.format("%Y").to_string());
        }
    }
}
