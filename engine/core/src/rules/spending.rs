//! How many points a receipt may spend, and which rule bounds it: registered cards only, a minimum
//! spendable balance, lines points cannot pay for, and a cap on the share of the receipt (by tier).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::compile::CompiledRules;
use super::tiers::effective_tier;
use crate::account::AccountState;
use crate::basket::BasketLine;
use crate::outcome::{SpendLimit, SpendQuote};
use crate::program::ProgramPolicy;

/// The most points this basket may spend, with what bounds it and why in words.
///
/// `puttable` is what the account can put up (its spendable balance, or what a new hold may
/// reserve); points must still be valid at `lasting_until` (the hold's expiry, or now). Ordinary
/// points pay up to the program's (or tier's) cap of the eligible amount; each certificate pays up
/// to its own cap on top, so a 7% birthday certificate adds at most 7% of the receipt; together they
/// never pay for more than the eligible amount itself.
pub fn spend_quote(
    rules: &CompiledRules,
    program: &ProgramPolicy,
    account: &AccountState,
    lines: &[BasketLine],
    now: DateTime<Utc>,
    puttable: Decimal,
    lasting_until: DateTime<Utc>,
) -> SpendQuote {
    let spending = &rules.spending;
    let tier = effective_tier(rules, account, now, program.time_zone);
    let tier_cap =
        rules.tiers.as_ref().and_then(|tiers| tiers.levels.iter().find(|level| level.id == tier)).and_then(|level| level.spend_cap_percent);
    let cap_percent = tier_cap.or(spending.cap_percent).unwrap_or(program.redeem_cap_percent);
    let eligible: Decimal = lines
        .iter()
        .filter(|line| rules.spending_exclude.as_ref().is_none_or(|exclude| !exclude.matches(line)))
        .map(|line| line.line_total)
        .sum();
    let share = |percent: Decimal| program.floor_points(eligible * percent / Decimal::ONE_HUNDRED);
    let lasting = |bucket: &&crate::account::Bucket| bucket.is_available(now) && bucket.expires_at > lasting_until;
    let certificate_limits: Vec<(u64, Decimal)> = account
        .buckets
        .iter()
        .filter(lasting)
        .filter_map(|bucket| {
            bucket.certificate.as_ref().map(|certificate| (bucket.id, bucket.remaining.min(share(certificate.cap_percent))))
        })
        .filter(|(_, max)| *max > Decimal::ZERO)
        .collect();
    let from_certificates: Decimal = certificate_limits.iter().map(|(_, max)| *max).sum();
    let ordinary: Decimal =
        account.buckets.iter().filter(lasting).filter(|bucket| bucket.certificate.is_none()).map(|bucket| bucket.remaining).sum();
    let quote = |max: Decimal, limit: SpendLimit, explanation: String, certificate_limits: Vec<(u64, Decimal)>| SpendQuote {
        max,
        limit,
        cap_percent,
        eligible,
        explanation,
        certificate_limits,
    };
    if spending.registered_only && !account.registered {
        return quote(Decimal::ZERO, SpendLimit::NotRegistered, "only registered cards may spend points".to_owned(), Vec::new());
    }
    let puttable = program.floor_points(puttable.max(Decimal::ZERO));
    if puttable < spending.min_balance_to_spend {
        return quote(
            Decimal::ZERO,
            SpendLimit::MinimumBalance,
            format!("spending starts at {} points; {} can be used now", spending.min_balance_to_spend.normalize(), puttable.normalize()),
            Vec::new(),
        );
    }
    let cap = share(cap_percent);
    let ordinary = program.floor_points(ordinary);
    // Certificates pay on top of the points cap, but nothing pays for more than the eligible
    // goods themselves: the whole eligible amount bounds the sum.
    let uncapped = cap.min(ordinary) + from_certificates;
    let whole = program.floor_points(eligible);
    let capacity = uncapped.min(whole);
    let source = if tier_cap.is_some() { format!("tier {tier}") } else { "program".to_owned() };
    let certificates =
        if from_certificates.is_zero() { String::new() } else { format!(" plus {} from certificates", from_certificates.normalize()) };
    if puttable >= capacity && capacity < uncapped {
        let explanation = format!("points and certificates may pay for at most the whole {} of eligible goods", eligible.normalize());
        quote(capacity, SpendLimit::ReceiptCap, explanation, certificate_limits)
    } else if puttable < capacity || ordinary < cap {
        let max = puttable.min(capacity);
        quote(
            max,
            SpendLimit::Balance,
            format!(
                "the customer's {} spendable points{}",
                max.normalize(),
                if from_certificates.is_zero() { "" } else { " (certificates included)" }
            ),
            certificate_limits,
        )
    } else {
        let explanation = format!(
            "points may pay for {}% of the {} of eligible goods ({source} cap){certificates}",
            cap_percent.normalize(),
            eligible.normalize()
        );
        quote(capacity, SpendLimit::ReceiptCap, explanation, certificate_limits)
    }
}
