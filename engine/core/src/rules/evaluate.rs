//! Evaluation of a purchase against one program version: which rules apply to which lines, how
//! many points each gives, and why. No I/O, no clock: the time of the receipt is an input.
//!
//! The order of work, and why:
//! 1. **Candidates** come from the index: rules listed under a line's SKU, category or brand (with
//!    that line), rules listed under the customer's tier, tags or RFM segment, and the general
//!    rules. A rule no line or segment points at is never looked at.
//! 2. **Receipt-level conditions** (validity window, store, till, channel, customer, coupon, receipt
//!    total, budget left) are checked once per candidate, then its matching lines are collected.
//! 3. **Stacking**, per line for line effects and per receipt for receipt effects, walks applicable
//!    rules by priority (see [`super::definition::Stacking`]). Multipliers come last, on what the
//!    percentage rules gave each line.
//! 4. **Budgets** scale a rule's exact amounts down to what it may still give.
//! 5. **Rounding** is per rule over the whole receipt (1% of ten 50-tenge lines is 5 points, not
//!    0), then each rule's points are shared out over its lines exactly, so the lines add up to the
//!    rule and the rules add up to the receipt.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::campaigns::{self, Allowance, CampaignUse};
use super::compile::{CompiledRule, CompiledRules, period_key};
use super::definition::{Effect, Stacking};
use super::tiers::effective_tier;
use crate::account::AccountState;
use crate::allocate::allocate;
use crate::basket::BasketLine;
use crate::outcome::{LineEarn, RulePoints};
use crate::program::ProgramPolicy;
use crate::rfm::Segment;

/// Everything a purchase evaluation may look at.
#[derive(Clone, Copy, Debug)]
pub struct PurchaseContext<'a> {
    pub program: &'a ProgramPolicy,
    pub account: &'a AccountState,
    pub lines: &'a [BasketLine],
    /// Per line: the money it earns on (its total less its share of spent points).
    pub bases: &'a [Decimal],
    pub at: DateTime<Utc>,
    pub store_id: &'a str,
    pub till_id: &'a str,
    pub channel: &'a str,
    pub coupons: &'a [String],
    /// Change the customer asks to keep as points (money; zero for none).
    pub change: Decimal,
    /// What budgeted campaigns may still give (`super::campaigns`); unlimited for a quote.
    pub allowance: &'a Allowance,
}

/// What a basket earns: per line with the rules behind it, per rule, and the total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Earn {
    pub lines: Vec<LineEarn>,
    /// Per rule that gave points, highest priority first.
    pub rules: Vec<RulePoints>,
    pub total: Decimal,
    /// The customer's tier the evaluation used.
    pub tier: String,
    pub program_version: u64,
    /// What the customers up the buyer's referral chain get (not part of `total`).
    pub referrals: Vec<ReferralReward>,
    /// The change taken as points, and the rule that took it (not part of `total`). `None` when
    /// change was offered and no rule takes it.
    pub change: Option<RulePoints>,
    /// What the receipt drew on each budgeted campaign it matched, in the order of their rules.
    pub campaigns: Vec<CampaignUse>,
}

/// Points for one referrer, from one referral rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReferralReward {
    /// 1 for the direct referrer.
    pub level: u32,
    pub account_id: String,
    pub rule_id: String,
    pub points: Decimal,
}

/// How far stacking has gone on one line (or on the receipt).
#[derive(Clone, Copy, PartialEq, Eq)]
enum StackState {
    Open,
    Stacked,
    Closed,
}

/// Whether a rule with `stacking` applies given what already applied, updating the state.
fn admit(state: &mut StackState, stacking: Stacking) -> bool {
    match (stacking, *state) {
        (Stacking::Always, _) => true,
        (Stacking::Exclusive, StackState::Open) => {
            *state = StackState::Closed;
            true
        }
        (Stacking::Exclusive, _) | (Stacking::Stackable, StackState::Closed) => false,
        (Stacking::Stackable, _) => {
            *state = StackState::Stacked;
            true
        }
    }
}

/// One rule's exact (unrounded) points on one line.
#[derive(Clone, Copy)]
struct Cell {
    slot: usize,
    line: usize,
    exact: Decimal,
}

/// A rule that passed its conditions, with its matching lines.
struct Applicable<'r> {
    rule: &'r CompiledRule,
    lines: Vec<usize>,
}

/// The local calendar day of the birthday in `year`; 29 February falls on the 28th in other years.
fn birthday_in(birth: NaiveDate, year: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year, birth.month(), birth.day()).or_else(|| NaiveDate::from_ymd_opt(year, birth.month(), 28))
}

/// The birthday whose window (`before` days before through `after` days after) contains `today`.
fn birthday_around(birth: NaiveDate, today: NaiveDate, before: u32, after: u32) -> Option<NaiveDate> {
    (today.year() - 1..=today.year() + 1).filter_map(|year| birthday_in(birth, year)).find(|birthday| {
        let days = (today - *birthday).num_days();
        days >= -i64::from(before) && days <= i64::from(after)
    })
}

fn in_birthday_window(birth: NaiveDate, today: NaiveDate, before: u32, after: u32) -> bool {
    birthday_around(birth, today, before, after).is_some()
}

/// Points and uses a rule may still give this customer in its current period (None: no budget).
pub(crate) fn budget_left(rule: &CompiledRule, account: &AccountState, today: NaiveDate) -> (Option<Decimal>, Option<u32>) {
    let Some(limit) = &rule.limits.per_customer else {
        return (None, None);
    };
    let period = period_key(limit.period, today);
    let used = account.counters.iter().find(|counter| counter.rule_id == rule.id && counter.period == period);
    let (points_used, uses_used) = used.map_or((Decimal::ZERO, 0), |counter| (counter.points, counter.uses));
    (limit.points.map(|max| (max - points_used).max(Decimal::ZERO)), limit.uses.map(|max| max.saturating_sub(uses_used)))
}

/// Who the customer is at the time of the evaluation: what customer conditions look at besides the
/// account.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Standing<'a> {
    pub tier: &'a str,
    /// The RFM segment, when some rule looks at segments and the customer ever bought.
    pub segment: Option<Segment>,
}

/// Customer conditions shared by purchase, enrolment and event rules.
pub(crate) fn customer_matches(
    rule: &CompiledRule,
    account: &AccountState,
    standing: Standing<'_>,
    at: DateTime<Utc>,
    today: NaiveDate,
) -> bool {
    let customer = &rule.customer;
    let tier = standing.tier;
    (customer.tiers.is_empty() || customer.tiers.iter().any(|wanted| wanted == tier))
        && (customer.segments.is_empty() || standing.segment.is_some_and(|segment| customer.segments.contains(&segment)))
        && (customer.tags_any.is_empty() || customer.tags_any.iter().any(|tag| account.tags.contains(tag)))
        && !customer.tags_none.iter().any(|tag| account.tags.contains(tag))
        && customer.registered.is_none_or(|wanted| wanted == account.registered)
        && customer.first_purchase.is_none_or(|wanted| wanted == (account.purchases == 0))
        && customer
            .inactive_days_min
            .is_none_or(|days| account.last_purchase_at.is_some_and(|last| (at - last).num_days() >= i64::from(days)))
        && customer.account_age_days_max.is_none_or(|days| (at - account.created_at).num_days() <= i64::from(days))
        && customer.birthday.is_none_or(|window| {
            account.profile.birth_date.is_some_and(|birth| in_birthday_window(birth, today, window.days_before, window.days_after))
        })
}

fn receipt_level_matches(
    rule: &CompiledRule,
    ctx: &PurchaseContext<'_>,
    standing: Standing<'_>,
    local: chrono::NaiveDateTime,
    receipt_total: Decimal,
) -> bool {
    rule.valid.contains(local)
        && (rule.stores.is_empty() || rule.stores.contains(ctx.store_id))
        && (rule.tills.is_empty() || rule.tills.contains(ctx.till_id))
        && (rule.channels.is_empty() || rule.channels.contains(ctx.channel))
        && rule.coupon.as_ref().is_none_or(|coupon| ctx.coupons.iter().any(|presented| presented == coupon))
        && customer_matches(rule, ctx.account, standing, ctx.at, local.date())
        && rule.min_total.is_none_or(|min| receipt_total >= min)
        && match budget_left(rule, ctx.account, local.date()) {
            (Some(points), _) if points.is_zero() => false,
            (_, Some(0)) => false,
            _ => true,
        }
}

/// The rules that apply to this receipt, in priority order, each with its matching lines.
fn applicable<'r>(
    rules: &'r CompiledRules,
    ctx: &PurchaseContext<'_>,
    standing: Standing<'_>,
    local: chrono::NaiveDateTime,
) -> Vec<Applicable<'r>> {
    let index = &rules.purchase;
    // (rule position, line) pairs found through the line index; sorted, they group by rule.
    let mut keyed: Vec<(u32, usize)> = Vec::new();
    for (line_index, line) in ctx.lines.iter().enumerate() {
        let hits = [index.by_sku.get(&line.sku), index.by_category.get(&line.category), index.by_brand.get(&line.brand)];
        for position in hits.into_iter().flatten().flatten() {
            keyed.push((*position, line_index));
        }
    }
    keyed.sort_unstable();
    keyed.dedup();
    // Rules that look at every line: general ones and those of the customer's segment.
    let mut scanned: Vec<u32> = index.general.clone();
    if let Some(positions) = index.by_tier.get(standing.tier) {
        scanned.extend_from_slice(positions);
    }
    if let Some(slot) = standing.segment.and_then(|segment| Segment::ALL.iter().position(|listed| *listed == segment)) {
        scanned.extend_from_slice(&index.by_segment[slot]);
    }
    for tag in &ctx.account.tags {
        if let Some(positions) = index.by_tag.get(tag) {
            scanned.extend_from_slice(positions);
        }
    }
    scanned.sort_unstable();
    scanned.dedup();

    let receipt_total = crate::basket::basket_total(ctx.lines);
    let mut found = Vec::new();
    let (mut next_keyed, mut next_scanned) = (0, 0);
    loop {
        let keyed_position = keyed.get(next_keyed).map(|pair| pair.0);
        let scanned_position = scanned.get(next_scanned).copied();
        let (position, from_keyed) = match (keyed_position, scanned_position) {
            (None, None) => break,
            (Some(k), Some(s)) if s < k => (s, false),
            (Some(k), _) => (k, true),
            (None, Some(s)) => (s, false),
        };
        let group_end = if from_keyed { keyed[next_keyed..].partition_point(|pair| pair.0 == position) + next_keyed } else { next_keyed };
        let Some(rule) = usize::try_from(position).ok().and_then(|position| rules.rules.get(position)) else {
            break;
        };
        // Receipt-level conditions first: most candidates fail them, and then no line is looked at.
        let candidates = if from_keyed { next_keyed..group_end } else { 0..0 };
        if from_keyed {
            next_keyed = group_end;
        } else {
            next_scanned += 1;
        }
        if !receipt_level_matches(rule, ctx, standing, local, receipt_total) {
            continue;
        }
        let lines: Vec<usize> = if from_keyed {
            keyed[candidates].iter().map(|pair| pair.1).filter(|&line| rule.lines.matches(&ctx.lines[line])).collect()
        } else {
            (0..ctx.lines.len()).filter(|&line| rule.lines.matches(&ctx.lines[line])).collect()
        };
        if lines.is_empty() {
            continue;
        }
        if rule.min_matching_total.is_some() || rule.min_matching_quantity.is_some() {
            let total: Decimal = lines.iter().map(|&line| ctx.lines[line].line_total).sum();
            let quantity: Decimal = lines.iter().map(|&line| ctx.lines[line].quantity).sum();
            if rule.min_matching_total.is_some_and(|min| total < min) || rule.min_matching_quantity.is_some_and(|min| quantity < min) {
                continue;
            }
        }
        found.push(Applicable { rule, lines });
    }
    found
}

/// The label a rule's points are shown with: its own. A rule that targets RFM segments does not
/// add the segment: receipts, the ledger and the customer's app show these labels, and a segment
/// such as `lost` is the CRM manager's word, not the customer's (its name should say the offer).
fn shown_label(rule: &CompiledRule, _standing: Standing<'_>) -> std::sync::Arc<str> {
    rule.shown_label.clone()
}

fn tier_percent(rules: &CompiledRules, tier: &str) -> Decimal {
    rules
        .tiers
        .as_ref()
        .and_then(|tiers| tiers.levels.iter().find(|level| level.id == tier))
        .and_then(|level| level.cashback_percent)
        .unwrap_or(Decimal::ZERO)
}

/// Evaluates a purchase: what each line earns under which rules.
pub fn evaluate_purchase(rules: &CompiledRules, ctx: &PurchaseContext<'_>) -> Earn {
    assert_eq!(ctx.lines.len(), ctx.bases.len(), "one base per line");
    let program = ctx.program;
    let local = ctx.at.with_timezone(&program.time_zone).naive_local();
    let tier = effective_tier(rules, ctx.account, ctx.at, program.time_zone);
    let standing = Standing { tier, segment: rules.segment_for_rules(ctx.account, ctx.at, program.time_zone) };
    let found = applicable(rules, ctx, standing, local);
    let hundred = Decimal::ONE_HUNDRED;

    let mut cells: Vec<Cell> = Vec::new();
    let mut line_state = vec![StackState::Open; ctx.lines.len()];
    let mut percent_points = vec![Decimal::ZERO; ctx.lines.len()];
    // Line effects, by priority.
    for (slot, rule) in found.iter().enumerate() {
        let percent = match &rule.rule.effect {
            Effect::PercentOfLines { percent } => *percent,
            Effect::TierPercent => tier_percent(rules, tier),
            _ => continue,
        };
        // Dividing by 100 is exact (a shift of the scale): once per rule, not per line.
        let fraction = percent / hundred;
        for &line in &rule.lines {
            if admit(&mut line_state[line], rule.rule.stacking) {
                let exact = ctx.bases[line] * fraction;
                percent_points[line] += exact;
                cells.push(Cell { slot, line, exact });
            }
        }
    }
    // Multipliers, on what the percentage rules gave each line.
    let mut multiplier_state = vec![StackState::Open; ctx.lines.len()];
    for (slot, rule) in found.iter().enumerate() {
        let Effect::Multiplier { factor } = &rule.rule.effect else { continue };
        for &line in &rule.lines {
            if admit(&mut multiplier_state[line], rule.rule.stacking) && !percent_points[line].is_zero() {
                cells.push(Cell { slot, line, exact: percent_points[line] * (*factor - Decimal::ONE) });
            }
        }
    }
    // Receipt effects, by priority.
    let mut receipt_state = StackState::Open;
    for (slot, rule) in found.iter().enumerate() {
        let receipt_effect = matches!(rule.rule.effect, Effect::PercentOfReceipt { .. } | Effect::FixedPoints { .. });
        if !receipt_effect || !admit(&mut receipt_state, rule.rule.stacking) {
            continue;
        }
        match &rule.rule.effect {
            Effect::PercentOfReceipt { percent } => {
                let fraction = *percent / hundred;
                for line in 0..ctx.lines.len() {
                    cells.push(Cell { slot, line, exact: ctx.bases[line] * fraction });
                }
            }
            Effect::FixedPoints { points } => {
                let weights: Vec<Decimal> = rule.lines.iter().map(|&line| ctx.bases[line]).collect();
                let weight_sum: Decimal = weights.iter().copied().sum();
                for (index, &line) in rule.lines.iter().enumerate() {
                    let exact = if weight_sum.is_zero() {
                        if index == 0 { *points } else { Decimal::ZERO }
                    } else {
                        *points * weights[index] / weight_sum
                    };
                    cells.push(Cell { slot, line, exact });
                }
            }
            _ => {}
        }
    }

    // Budgets, rounding and sharing out, rule by rule.
    cells.sort_by_key(|cell| cell.slot);
    let mut line_points = vec![Decimal::ZERO; ctx.lines.len()];
    let mut line_applied: Vec<Vec<RulePoints>> = vec![Vec::new(); ctx.lines.len()];
    let mut per_rule = Vec::new();
    let mut total = Decimal::ZERO;
    let mut allowance = ctx.allowance.clone();
    let mut campaign_uses = Vec::new();
    // Per line: the rules a campaign's budget cut there.
    let mut line_cuts: Vec<Vec<std::sync::Arc<str>>> = vec![Vec::new(); ctx.lines.len()];
    let mut start = 0;
    while start < cells.len() {
        let slot = cells[start].slot;
        let end = cells[start..].partition_point(|cell| cell.slot == slot) + start;
        let group = &cells[start..end];
        start = end;
        let rule = found[slot].rule;
        let label = shown_label(rule, standing);
        let exact: Decimal = group.iter().map(|cell| cell.exact).sum();
        let (budget, _) = budget_left(rule, ctx.account, local.date());
        let limit = [rule.limits.per_receipt_points, budget].into_iter().flatten().min();
        let capped = limit.map_or(exact, |limit| exact.min(limit));
        let mut rule_total = program.round_points(capped).max(Decimal::ZERO);
        if let Some(campaign) = &rule.budget {
            let wanted = rule_total;
            if let Some(left) = allowance.left(campaign) {
                // Never rounded up past what the campaign has left.
                rule_total = rule_total.min(program.floor_points(left));
                allowance.take(campaign, rule_total);
            }
            campaigns::record(&mut campaign_uses, campaign, wanted, rule_total);
            if rule_total < wanted {
                for cell in group.iter().filter(|cell| !cell.exact.is_zero()) {
                    if !line_cuts[cell.line].contains(&label) {
                        line_cuts[cell.line].push(label.clone());
                    }
                }
            }
        }
        if rule_total.is_zero() {
            continue;
        }
        let weights: Vec<Decimal> = group.iter().map(|cell| cell.exact).collect();
        for (cell, points) in group.iter().zip(allocate(rule_total, &weights, program.points_scale)) {
            if points.is_zero() {
                continue;
            }
            line_points[cell.line] += points;
            match line_applied[cell.line].iter_mut().find(|applied| std::sync::Arc::ptr_eq(&applied.rule_id, &rule.shown_id)) {
                Some(applied) => applied.points += points,
                None => line_applied[cell.line].push(RulePoints { rule_id: rule.shown_id.clone(), label: label.clone(), points }),
            }
        }
        total += rule_total;
        per_rule.push(RulePoints { rule_id: rule.shown_id.clone(), label, points: rule_total });
    }

    // Referral rewards: on the receipt's base, for the chain above the buyer, after budgets.
    let mut referrals = Vec::new();
    let base_total: Decimal = ctx.bases.iter().copied().sum();
    let mut referral_state = StackState::Open;
    for rule in &found {
        let Effect::Referral { percents } = &rule.rule.effect else { continue };
        if ctx.account.referral_chain.is_empty() || !admit(&mut referral_state, rule.rule.stacking) {
            continue;
        }
        let matching: Decimal = rule.lines.iter().map(|&line| ctx.bases[line]).sum();
        let base = if rule.lines.len() == ctx.lines.len() { base_total } else { matching };
        for ((level, percent), account_id) in percents.iter().enumerate().zip(&ctx.account.referral_chain) {
            let mut points = program.round_points(base * *percent / hundred);
            if let Some(max) = rule.rule.limits.per_receipt_points {
                points = points.min(max);
            }
            if points > Decimal::ZERO {
                let level = u32::try_from(level + 1).unwrap_or(u32::MAX);
                referrals.push(ReferralReward { level, account_id: account_id.clone(), rule_id: rule.rule.id.clone(), points });
            }
        }
    }

    // Change to points: the highest-priority rule that takes it.
    let change = found.iter().find_map(|rule| match &rule.rule.effect {
        Effect::ChangeToPoints { max_points } if ctx.change > Decimal::ZERO => Some(RulePoints {
            rule_id: rule.rule.shown_id.clone(),
            label: rule.rule.shown_label.clone(),
            points: program.floor_points(ctx.change).min(*max_points),
        }),
        _ => None,
    });

    let lines = ctx
        .lines
        .iter()
        .zip(ctx.bases)
        .zip(line_points)
        .zip(line_applied)
        .zip(line_cuts)
        .map(|((((line, base), points), applied), cuts)| {
            let mut reason = match (applied.is_empty(), line.excise, line.promo_price) {
                (false, _, _) => {
                    let mut reason = String::with_capacity(applied.iter().map(|rule| rule.label.len() + 3).sum());
                    for (index, rule) in applied.iter().enumerate() {
                        if index > 0 {
                            reason.push_str(" + ");
                        }
                        reason.push_str(&rule.label);
                    }
                    reason
                }
                (true, true, _) => "no rule applies: excise goods".to_owned(),
                (true, false, true) => "no rule applies: promo price".to_owned(),
                (true, false, false) => "no rule applies".to_owned(),
            };
            // A rule the campaign's budget cut says so where it would have paid.
            for label in cuts {
                reason.push_str("; ");
                reason.push_str(&label);
                reason.push_str(": campaign budget spent");
            }
            LineEarn { line_no: line.line_no, base: *base, points, reason, applied }
        })
        .collect();
    Earn {
        lines,
        rules: per_rule,
        total,
        tier: tier.to_owned(),
        program_version: rules.version,
        referrals,
        change,
        campaigns: campaign_uses,
    }
}

/// What an enrolment, event or schedule rule gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwardKind {
    Points(Decimal),
    Certificate { value: Decimal, valid_days: u32, cap_percent: Decimal },
}

/// One award of one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Award {
    pub rule_id: String,
    pub label: String,
    pub kind: AwardKind,
}

impl Award {
    /// The points it is worth (a certificate's value).
    pub fn points(&self) -> Decimal {
        match self.kind {
            AwardKind::Points(points) | AwardKind::Certificate { value: points, .. } => points,
        }
    }

    pub fn as_rule_points(&self) -> RulePoints {
        RulePoints { rule_id: self.rule_id.as_str().into(), label: self.label.as_str().into(), points: self.points() }
    }
}

/// Awards of enrolment, event or schedule rules that apply to this customer now, budgets respected.
pub fn evaluate_awards(
    rules: &CompiledRules,
    positions: &[u32],
    program: &ProgramPolicy,
    account: &AccountState,
    at: DateTime<Utc>,
    store_id: &str,
) -> Vec<Award> {
    let local = at.with_timezone(&program.time_zone).naive_local();
    let tier = effective_tier(rules, account, at, program.time_zone);
    let standing = Standing { tier, segment: rules.segment_for_rules(account, at, program.time_zone) };
    let mut state = StackState::Open;
    let mut awards = Vec::new();
    for rule in positions.iter().filter_map(|&position| usize::try_from(position).ok().and_then(|position| rules.rules.get(position))) {
        if !rule.valid.contains(local)
            || !(rule.stores.is_empty() || store_id.is_empty() || rule.stores.contains(store_id))
            || !customer_matches(rule, account, standing, at, local.date())
        {
            continue;
        }
        let (budget, uses) = budget_left(rule, account, local.date());
        if uses == Some(0) || budget.is_some_and(|budget| budget.is_zero()) {
            continue;
        }
        let kind = match &rule.effect {
            Effect::FixedPoints { points } => AwardKind::Points(program.round_points(budget.map_or(*points, |budget| budget.min(*points)))),
            Effect::IssueCertificate { value, valid_days, cap_percent } => {
                if budget.is_some_and(|budget| budget < *value) {
                    continue;
                }
                AwardKind::Certificate { value: *value, valid_days: *valid_days, cap_percent: *cap_percent }
            }
            _ => continue,
        };
        if !admit(&mut state, rule.stacking) {
            continue;
        }
        let award = Award { rule_id: rule.id.clone(), label: shown_label(rule, standing).to_string(), kind };
        if award.points() > Decimal::ZERO {
            awards.push(award);
        }
    }
    awards
}

/// The occasion a schedule rule pays once for: the inactivity spell (by its last purchase), the
/// birthday, or the period of its use limit. Used as the idempotency key of the award.
pub fn schedule_occasion(
    rules: &CompiledRules,
    rule_id: &str,
    program: &ProgramPolicy,
    account: &AccountState,
    at: DateTime<Utc>,
) -> Option<String> {
    let rule = rules.rules.iter().find(|rule| rule.id == rule_id)?;
    let today = at.with_timezone(&program.time_zone).date_naive();
    if rule.customer.inactive_days_min.is_some() {
        let last = account.last_purchase_at?.with_timezone(&program.time_zone).date_naive();
        return Some(format!("after-{last}"));
    }
    if let Some(window) = rule.customer.birthday {
        let birthday = birthday_around(account.profile.birth_date?, today, window.days_before, window.days_after)?;
        return Some(format!("birthday-{}", birthday.year()));
    }
    rule.limits.per_customer.as_ref().map(|limit| period_key(limit.period, today))
}

/// The schedule awards due to this customer now, each with its occasion.
pub fn evaluate_schedule(
    rules: &CompiledRules,
    program: &ProgramPolicy,
    account: &AccountState,
    at: DateTime<Utc>,
) -> Vec<(Award, String)> {
    evaluate_awards(rules, &rules.schedule, program, account, at, "")
        .into_iter()
        .filter_map(|award| schedule_occasion(rules, &award.rule_id, program, account, at).map(|occasion| (award, occasion)))
        .collect()
}
