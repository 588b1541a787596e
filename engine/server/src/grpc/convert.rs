//! Wire <-> domain conversions. Every request field is checked here or in the domain, and every
//! error names the field the way the .proto spells it (`lines[2].quantity`, `customer.phone`).

use chrono::{DateTime, NaiveDate, Utc};
use loyalty_core::Origin;
use loyalty_core::account::BalanceView;
use loyalty_core::basket::BasketLine;
use loyalty_core::identity::{IdentityKey, IdentityKind, normalize_app_token, normalize_card, normalize_phone};
use loyalty_core::ledger::{EntryKind, LedgerEntry};
use loyalty_core::ops::{RefundLine, SaleContext};
use loyalty_core::outcome::{BonusOutcome, HoldView, LineEarn, RulePoints, SpendLimit};
use loyalty_core::presence::PresenceProof;
use loyalty_core::profile::{Consent, ConsentChannel, Gender, ProfileChange};
use loyalty_core::program::ProgramPolicy;
use loyalty_core::rejection::Rejection;
use loyalty_proto::v1 as pb;
use rust_decimal::Decimal;

use crate::config::is_valid_id;

/// Longest decimal string accepted.
const DECIMAL_LEN_MAX: usize = 40;
/// Longest free-text reason kept in the ledger.
const REASON_LEN_MAX: usize = 256;
/// Longest customer name.
const NAME_LEN_MAX: usize = 128;
/// Most coupon codes on one receipt.
const COUPONS_MAX: usize = 16;
/// Most segment tags on one customer.
const TAGS_MAX: usize = 32;
/// Longest tag, channel or coupon code.
const TAG_LEN_MAX: usize = 64;

/// Most significant digits in a wire decimal (loyalty.proto).
const SIGNIFICANT_DIGITS_MAX: u32 = 28;

/// Parses a decimal in the documented wire format: `-?digits(.digits)?`, no exponent.
pub fn decimal(field: &str, raw: &str) -> Result<Decimal, Rejection> {
    let bad = || {
        Rejection::invalid(field, format!("'{}' is not a decimal such as 1234.50", raw.chars().take(DECIMAL_LEN_MAX).collect::<String>()))
    };
    if raw.is_empty() || raw.len() > DECIMAL_LEN_MAX {
        return Err(bad());
    }
    let unsigned = raw.strip_prefix('-').unwrap_or(raw);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|fraction| !digits(fraction)) {
        return Err(bad());
    }
    let value = Decimal::from_str_exact(raw).map(|value| value.normalize()).map_err(|_| bad())?;
    // `from_str_exact` takes a 29th digit when the value fits in 96 bits; the wire format says 28
    // (leading zeros and zeros at the end of the fraction do not count).
    if value.mantissa().unsigned_abs() >= 10_u128.pow(SIGNIFICANT_DIGITS_MAX) {
        return Err(Rejection::invalid(field, format!("at most {SIGNIFICANT_DIGITS_MAX} significant digits")));
    }
    Ok(value)
}

/// A non-negative decimal; an empty string is zero.
pub fn amount_or_zero(field: &str, raw: &str) -> Result<Decimal, Rejection> {
    if raw.is_empty() {
        return Ok(Decimal::ZERO);
    }
    let value = decimal(field, raw)?;
    if value < Decimal::ZERO {
        return Err(Rejection::invalid(field, "must not be negative"));
    }
    Ok(value)
}

/// What a customer paid for a card: money from 0 to `max`; empty is 0.
pub fn card_fee(raw: &str, max: Decimal) -> Result<Decimal, Rejection> {
    let fee = amount_or_zero("card_fee", raw)?;
    if fee > max {
        return Err(Rejection::invalid("card_fee", format!("at most {max}")));
    }
    Ok(fee)
}

/// A required, strictly positive decimal no larger than `max`.
pub fn positive(field: &str, raw: &str, max: Decimal) -> Result<Decimal, Rejection> {
    if raw.is_empty() {
        return Err(Rejection::invalid(field, "required"));
    }
    let value = decimal(field, raw)?;
    if value <= Decimal::ZERO || value > max {
        return Err(Rejection::invalid(field, format!("must be above 0 and at most {max}")));
    }
    Ok(value)
}

/// Money a buyer paid: required, above 0 and at most `max`, with at most the currency's decimal
/// places.
pub fn money_paid(field: &str, raw: &str, program: &ProgramPolicy, max: Decimal) -> Result<Decimal, Rejection> {
    let value = positive(field, raw, max)?;
    if value.scale() > program.money_scale {
        return Err(Rejection::invalid(field, format!("at most {} decimal places ({})", program.money_scale, program.currency)));
    }
    Ok(value)
}

/// The currency a till names: the program's ISO 4217 code, or empty for it.
pub fn currency(field: &str, raw: &str, program: &ProgramPolicy) -> Result<(), Rejection> {
    if raw.is_empty() || raw == program.currency {
        return Ok(());
    }
    let shown: String = raw.chars().take(8).collect();
    Err(Rejection::invalid(field, format!("'{shown}' is not this program's currency, {}", program.currency)))
}

/// A required ID: 1 to `max` letters, digits, `.`, `_`, `:` or `-`.
pub fn id(field: &str, raw: &str, max: usize) -> Result<String, Rejection> {
    if raw.is_empty() {
        return Err(Rejection::invalid(field, "required"));
    }
    if !is_valid_id(raw, max) {
        return Err(Rejection::invalid(field, format!("1 to {max} letters, digits, '.', '_', ':' or '-'")));
    }
    Ok(raw.to_owned())
}

/// How the till presented the customer on a spending call: the identifier's kind and the code.
pub fn presence(customer: &IdentityKey, code: &str) -> Result<PresenceProof, Rejection> {
    let code = match code.trim() {
        "" => None,
        digits if digits.len() <= 12 && digits.bytes().all(|byte| byte.is_ascii_digit()) => Some(digits.to_owned()),
        _ => return Err(Rejection::invalid("customer_code", "the digits of the customer's one-time code")),
    };
    Ok(PresenceProof { identified_by: Some(customer.kind), code })
}

/// Free text of at most `max` characters.
pub fn text(field: &str, raw: &str, max: usize) -> Result<String, Rejection> {
    if raw.chars().count() > max {
        return Err(Rejection::invalid(field, format!("at most {max} characters")));
    }
    if raw.chars().any(char::is_control) {
        return Err(Rejection::invalid(field, "no control characters"));
    }
    Ok(raw.to_owned())
}

pub fn reason(raw: &str) -> Result<String, Rejection> {
    text("reason", raw, REASON_LEN_MAX)
}

pub fn origin(store_id: &str, till_id: &str, max: usize, caller: &crate::auth::Caller) -> Result<Origin, Rejection> {
    Ok(Origin { store_id: id("store_id", store_id, max)?, till_id: id("till_id", till_id, max)?, actor: caller.credential.id.clone() })
}

/// The customer's identifier, normalised.
pub fn customer(customer: Option<&pb::CustomerRef>, program: &ProgramPolicy) -> Result<IdentityKey, Rejection> {
    use pb::customer_ref::Id;
    match customer.and_then(|customer| customer.id.as_ref()) {
        Some(Id::Phone(raw)) => {
            Ok(IdentityKey { kind: IdentityKind::Phone, value: normalize_phone("customer.phone", raw, &program.phone_plan)? })
        }
        Some(Id::CardNumber(raw)) => Ok(IdentityKey { kind: IdentityKind::Card, value: normalize_card("customer.card_number", raw)? }),
        Some(Id::AppToken(raw)) => Ok(IdentityKey { kind: IdentityKind::AppToken, value: normalize_app_token("customer.app_token", raw)? }),
        None => Err(Rejection::invalid("customer", "one of phone, card_number or app_token is required")),
    }
}

/// Basket lines; ranges and uniqueness are checked by the domain's `validate_basket`.
pub fn lines(lines: &[pb::BasketLine], lines_max: usize) -> Result<Vec<BasketLine>, Rejection> {
    if lines.len() > lines_max {
        return Err(Rejection::invalid("lines", format!("at most {lines_max} lines per receipt")));
    }
    lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let field = |name: &str| format!("lines[{index}].{name}");
            Ok(BasketLine {
                line_no: line.line_no,
                sku: text(&field("sku"), &line.sku, 64)?,
                category: text(&field("category"), &line.category, 64)?,
                brand: text(&field("brand"), &line.brand, 64)?,
                quantity: decimal(&field("quantity"), &line.quantity)?,
                unit_price: decimal(&field("unit_price"), &line.unit_price)?,
                line_total: decimal(&field("line_total"), &line.line_total)?,
                excise: line.excise,
                promo_price: line.promo_price,
            })
        })
        .collect()
}

pub fn refund_lines(lines: &[pb::RefundLine], lines_max: usize) -> Result<Vec<RefundLine>, Rejection> {
    if lines.len() > lines_max {
        return Err(Rejection::invalid("lines", format!("at most {lines_max} lines per refund")));
    }
    lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            Ok(RefundLine { line_no: line.line_no, quantity: decimal(&format!("lines[{index}].quantity"), &line.quantity)? })
        })
        .collect()
}

/// An optional profile field.
pub fn name(raw: &str) -> Result<Option<String>, Rejection> {
    let value = text("name", raw.trim(), NAME_LEN_MAX)?;
    Ok((!value.is_empty()).then_some(value))
}

/// An optional `YYYY-MM-DD` birth date.
pub fn birth_date(raw: &str, today: NaiveDate) -> Result<Option<NaiveDate>, Rejection> {
    if raw.is_empty() {
        return Ok(None);
    }
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| Rejection::invalid("birth_date", "a date as YYYY-MM-DD"))?;
    if date > today || date < NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN) {
        return Err(Rejection::invalid("birth_date", "between 1900-01-01 and today"));
    }
    Ok(Some(date))
}

/// A report's period: its first and last local days (`YYYY-MM-DD`, both included), in order, at
/// most `days_max` days.
pub fn period(from: &str, to: &str, days_max: i64) -> Result<(NaiveDate, NaiveDate), Rejection> {
    let day =
        |field: &str, raw: &str| NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| Rejection::invalid(field, "a date as YYYY-MM-DD"));
    let (from, to) = (day("from", from)?, day("to", to)?);
    if to < from {
        return Err(Rejection::invalid("to", "on or after from"));
    }
    if (to - from).num_days() >= days_max {
        return Err(Rejection::invalid("to", format!("a period of at most {days_max} days")));
    }
    Ok((from, to))
}

/// A ratio of a report: four places, or empty when it has no denominator.
pub fn ratio(value: Option<Decimal>) -> String {
    value.map(|value| value.round_dp(4).normalize().to_string()).unwrap_or_default()
}

/// A sweep's segment counts on the wire (`stored`: none before the first sweep); every segment and
/// every score is listed, zeros included.
pub fn segments(
    stored: Option<crate::documents::Version<crate::segments::SegmentsDocument>>,
    latest_version: u64,
) -> loyalty_proto::admin::ListSegmentsResponse {
    use loyalty_core::rfm::{SCORE_MAX, Segment};
    use loyalty_proto::admin::{ListSegmentsResponse, ScoreCount, SegmentCount};
    let Some(stored) = stored else {
        return ListSegmentsResponse { latest_version, ..ListSegmentsResponse::default() };
    };
    let document = stored.document;
    let counts = &document.counts;
    let by_score = |customers: &[u64; SCORE_MAX as usize]| -> Vec<ScoreCount> {
        (1..=u32::from(SCORE_MAX)).zip(customers).map(|(score, customers)| ScoreCount { score, customers: *customers }).collect()
    };
    ListSegmentsResponse {
        version: stored.version,
        latest_version,
        computed_at: Some(timestamp(document.computed_at)),
        rules_version: document.rules_version,
        customers: counts.customers,
        without_purchases: counts.without_purchases,
        segments: Segment::ALL
            .into_iter()
            .map(|segment| SegmentCount { segment: segment.name().to_owned(), customers: counts.in_segment(segment) })
            .collect(),
        recency_scores: by_score(&counts.recency),
        frequency_scores: by_score(&counts.frequency),
        monetary_scores: by_score(&counts.monetary),
    }
}

/// A figures report on the wire: points at the program's scale, money at the currency's, ratios
/// to four places.
pub fn figures(
    program: &ProgramPolicy,
    report: &loyalty_core::figures::Report,
    through_seq: u64,
) -> loyalty_proto::admin::ReadFiguresResponse {
    let sums = &report.points;
    loyalty_proto::admin::ReadFiguresResponse {
        from: report.from.to_string(),
        to: report.to.to_string(),
        store_id: report.store_id.clone().unwrap_or_default(),
        points: Some(loyalty_proto::admin::FigurePoints {
            earned: points(program, sums.earned),
            spent: points(program, sums.spent),
            expired: points(program, sums.expired),
            returned: points(program, sums.returned),
            clawed_back: points(program, sums.clawed_back),
            bonus: points(program, sums.bonus),
            adjusted: points(program, sums.adjusted),
            merged: points(program, sums.merged),
            opened: points(program, sums.opened),
        }),
        outstanding: points(program, report.outstanding),
        purchases: report.purchases,
        paid: money(program, report.paid),
        enrolled: report.enrolled,
        active_customers: report.active_customers,
        repeat_customers: report.repeat_customers,
        redemption_rate: ratio(report.redemption_rate),
        breakage_rate: ratio(report.breakage_rate),
        effective_discount: ratio(report.effective_discount),
        average_receipt: report.average_receipt.map(|average| money(program, average)).unwrap_or_default(),
        repeat_rate: ratio(report.repeat_rate),
        purchases_per_customer: ratio(report.purchases_per_customer),
        days_between_purchases: ratio(report.days_between_purchases),
        through_seq,
        unidentified_purchases: report.unidentified_purchases,
        unidentified_paid: money(program, report.unidentified_paid),
        unidentified_average_receipt: report.unidentified_average_receipt.map(|average| money(program, average)).unwrap_or_default(),
        identified_uplift: ratio(report.identified_uplift),
        expiring_30d: points(program, report.expiring_30d),
        expiring_90d: points(program, report.expiring_90d),
        never_expiring: points(program, report.never_expiring),
    }
}

/// Points at the program's scale ("120", or "120.50" in a program with a points scale of 2).
pub fn points(program: &ProgramPolicy, value: Decimal) -> String {
    let mut value = value;
    value.rescale(program.points_scale);
    value.to_string()
}

/// Money at the currency's scale ("1234.50").
pub fn money(program: &ProgramPolicy, value: Decimal) -> String {
    let mut value = value;
    value.rescale(program.money_scale);
    value.to_string()
}

/// An optional time sent by a till (`occurred_at`).
pub fn time(field: &str, at: Option<&prost_types::Timestamp>) -> Result<Option<DateTime<Utc>>, Rejection> {
    at.map(|at| {
        u32::try_from(at.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(at.seconds, nanos))
            .ok_or_else(|| Rejection::invalid(field, "not a valid time"))
    })
    .transpose()
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}

pub fn balance(program: &ProgramPolicy, view: &BalanceView) -> pb::Balance {
    pb::Balance {
        available: points(program, view.available),
        held: points(program, view.held),
        spendable: points(program, view.spendable),
        pending: points(program, view.pending),
        debt: points(program, view.debt),
        balance: points(program, view.balance),
        currency: program.currency.clone(),
    }
}

pub fn line_earns(program: &ProgramPolicy, lines: &[LineEarn]) -> Vec<pb::LineEarn> {
    lines
        .iter()
        .map(|line| pb::LineEarn {
            line_no: line.line_no,
            base: money(program, line.base),
            points: points(program, line.points),
            reason: line.reason.clone(),
            applied: rule_points(program, &line.applied),
        })
        .collect()
}

pub fn rule_points(program: &ProgramPolicy, rules: &[RulePoints]) -> Vec<pb::RulePoints> {
    rules
        .iter()
        .map(|rule| pb::RulePoints {
            rule_id: rule.rule_id.to_string(),
            label: rule.label.to_string(),
            points: points(program, rule.points),
        })
        .collect()
}

/// The channel of a sale ("pos" when the till does not say) and its coupons.
pub fn sale(channel: &str, coupons: &[String]) -> Result<SaleContext, Rejection> {
    if coupons.len() > COUPONS_MAX {
        return Err(Rejection::invalid("coupon_codes", format!("at most {COUPONS_MAX}")));
    }
    let coupons = coupons
        .iter()
        .enumerate()
        .map(|(index, coupon)| id(&format!("coupon_codes[{index}]"), coupon, TAG_LEN_MAX))
        .collect::<Result<Vec<_>, _>>()?;
    let channel = if channel.is_empty() { "pos".to_owned() } else { id("channel", channel, TAG_LEN_MAX)? };
    Ok(SaleContext { channel, coupons })
}

/// What an UpdateProfile request changes, each field checked and named when refused.
pub fn profile_change(req: &pb::UpdateProfileRequest, today: NaiveDate) -> Result<ProfileChange, Rejection> {
    let gender = match req.gender.map(pb::Gender::try_from) {
        None => None,
        Some(Ok(pb::Gender::Unspecified)) => Some(None),
        Some(Ok(pb::Gender::Female)) => Some(Some(Gender::Female)),
        Some(Ok(pb::Gender::Male)) => Some(Some(Gender::Male)),
        Some(Ok(pb::Gender::Other)) => Some(Some(Gender::Other)),
        Some(Err(_)) => {
            return Err(Rejection::invalid("gender", "one of GENDER_FEMALE, GENDER_MALE, GENDER_OTHER, or unspecified to clear"));
        }
    };
    let consents = req
        .consents
        .iter()
        .enumerate()
        .map(|(index, consent)| {
            let channel = match pb::ConsentChannel::try_from(consent.channel) {
                Ok(pb::ConsentChannel::Sms) => ConsentChannel::Sms,
                Ok(pb::ConsentChannel::Email) => ConsentChannel::Email,
                Ok(pb::ConsentChannel::Push) => ConsentChannel::Push,
                Ok(pb::ConsentChannel::Messenger) => ConsentChannel::Messenger,
                Ok(pb::ConsentChannel::Unspecified) | Err(_) => {
                    return Err(Rejection::invalid(format!("consents[{index}].channel"), "one of SMS, EMAIL, PUSH, MESSENGER"));
                }
            };
            if consent.changed_at.is_some() {
                return Err(Rejection::invalid(format!("consents[{index}].changed_at"), "set by the engine; leave it empty"));
            }
            Ok((channel, consent.granted))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ProfileChange {
        name: req.name.as_deref().map(name).transpose()?,
        birth_date: req.birth_date.as_deref().map(|raw| birth_date(raw, today)).transpose()?,
        gender,
        tags: req.tags.as_ref().map(|list| tags("tags.tags", &list.tags)).transpose()?,
        consents,
    })
}

pub fn consent(consent: &Consent) -> pb::Consent {
    let channel = match consent.channel {
        ConsentChannel::Sms => pb::ConsentChannel::Sms,
        ConsentChannel::Email => pb::ConsentChannel::Email,
        ConsentChannel::Push => pb::ConsentChannel::Push,
        ConsentChannel::Messenger => pb::ConsentChannel::Messenger,
    };
    pb::Consent { channel: channel.into(), granted: consent.granted, changed_at: Some(timestamp(consent.changed_at)) }
}

pub fn gender(gender: Option<Gender>) -> pb::Gender {
    match gender {
        None => pb::Gender::Unspecified,
        Some(Gender::Female) => pb::Gender::Female,
        Some(Gender::Male) => pb::Gender::Male,
        Some(Gender::Other) => pb::Gender::Other,
    }
}

/// Segment tags: IDs, at most `TAGS_MAX`.
pub fn tags(field: &str, tags: &[String]) -> Result<Vec<String>, Rejection> {
    if tags.len() > TAGS_MAX {
        return Err(Rejection::invalid(field, format!("at most {TAGS_MAX} tags")));
    }
    tags.iter().enumerate().map(|(index, tag)| id(&format!("{field}[{index}]"), tag, TAG_LEN_MAX)).collect()
}

pub fn bonus(program: &ProgramPolicy, outcome: &BonusOutcome) -> pb::AwardBonusResponse {
    pb::AwardBonusResponse {
        transaction_id: outcome.tx_id.clone(),
        account_id: outcome.account_id.clone(),
        points: points(program, outcome.points),
        rules: rule_points(program, &outcome.rules),
        balance: Some(balance(program, &outcome.balance)),
    }
}

pub fn hold(program: &ProgramPolicy, hold: &HoldView) -> pb::Hold {
    pb::Hold { hold_id: hold.hold_id.clone(), amount: points(program, hold.amount), expires_at: Some(timestamp(hold.expires_at)) }
}

pub fn spend_limit(limit: SpendLimit) -> pb::SpendLimit {
    match limit {
        SpendLimit::ReceiptCap => pb::SpendLimit::ReceiptCap,
        SpendLimit::Balance => pb::SpendLimit::Balance,
        SpendLimit::NotRegistered => pb::SpendLimit::NotRegistered,
        SpendLimit::MinimumBalance => pb::SpendLimit::MinimumBalance,
    }
}

pub fn ledger_entry(program: &ProgramPolicy, entry: &LedgerEntry) -> pb::LedgerEntry {
    let kind = match entry.kind {
        EntryKind::Earn => pb::EntryKind::Earn,
        EntryKind::Spend => pb::EntryKind::Spend,
        EntryKind::Expire => pb::EntryKind::Expire,
        EntryKind::ReturnSpent => pb::EntryKind::ReturnSpent,
        EntryKind::Clawback => pb::EntryKind::Clawback,
        EntryKind::Bonus => pb::EntryKind::Bonus,
        EntryKind::Adjustment => pb::EntryKind::Adjustment,
        EntryKind::Merge => pb::EntryKind::Merge,
        EntryKind::Opening => pb::EntryKind::Opening,
    };
    pb::LedgerEntry {
        seq: entry.seq,
        transaction_id: entry.tx_id.clone(),
        kind: kind as i32,
        amount: points(program, entry.amount),
        balance_after: points(program, entry.balance_after),
        at: Some(timestamp(entry.at)),
        receipt_id: entry.receipt_id.clone().unwrap_or_default(),
        refund_id: entry.refund_id.clone().unwrap_or_default(),
        store_id: entry.store_id.clone(),
        till_id: entry.till_id.clone(),
        reason: entry.reason.clone(),
        available_from: entry.available_from.map(timestamp),
        expires_at: entry.expires_at.map(timestamp),
        rule_ids: entry.rule_ids.clone(),
        program_version: entry.program_version.unwrap_or_default(),
        actor: entry.actor.clone(),
    }
}

/// A ledger page token (`seq:<n>`, a previous page's `next_page_token`) as the seq the page
/// continues before; no token starts from the newest entry.
pub fn page_token(field: &str, token: &str) -> Result<u64, Rejection> {
    match token {
        "" => Ok(u64::MAX),
        token => token
            .strip_prefix("seq:")
            .and_then(|seq| seq.parse::<u64>().ok())
            .ok_or_else(|| Rejection::invalid(field, "not a token from a previous page")),
    }
}

/// The token of a ledger page's next page (see [`page_token`]); empty on the last page.
pub fn next_page_token(next_seq: Option<u64>) -> String {
    next_seq.map(|seq| format!("seq:{seq}")).unwrap_or_default()
}

/// A what-if's progress on the wire.
pub fn whatif_progress(progress: &crate::whatif::Progress) -> loyalty_proto::admin::WhatIfProgress {
    loyalty_proto::admin::WhatIfProgress {
        accounts_scanned: progress.accounts_scanned,
        receipts_evaluated: progress.receipts_evaluated,
        receipts_skipped: progress.receipts_skipped,
        report: None,
    }
}

/// A what-if's last message: its counts and its report.
pub fn whatif_report(program: &ProgramPolicy, report: &crate::whatif::Report) -> loyalty_proto::admin::WhatIfProgress {
    use loyalty_proto::admin as admin_pb;
    let tally = &report.tally;
    let skipped = |counts: Vec<(&'static str, u64)>| {
        counts.into_iter().map(|(reason, count)| admin_pb::WhatIfSkipped { reason: reason.to_owned(), count }).collect()
    };
    admin_pb::WhatIfProgress {
        accounts_scanned: tally.accounts_scanned,
        receipts_evaluated: tally.receipts_evaluated,
        receipts_skipped: tally.receipts_skipped_total(),
        report: Some(admin_pb::WhatIfReport {
            current_version: report.current_version,
            window_start: Some(timestamp(report.window_start)),
            as_of: Some(timestamp(report.as_of)),
            rules: tally
                .rules()
                .map(|(rule_id, rule)| admin_pb::WhatIfRule {
                    rule_id: rule_id.to_owned(),
                    label: rule.label.clone(),
                    in_current: rule.in_current,
                    in_candidate: rule.in_candidate,
                    given: points(program, rule.given),
                    given_receipts: rule.given_receipts,
                    candidate: points(program, rule.candidate),
                    candidate_receipts: rule.candidate_receipts,
                })
                .collect(),
            given_total: points(program, tally.given_total),
            candidate_total: points(program, tally.candidate_total),
            difference: points(program, tally.candidate_total - tally.given_total),
            liability_change: points(program, tally.liability_change),
            expired_difference: points(program, tally.expired_difference),
            accounts_scanned: tally.accounts_scanned,
            receipts_evaluated: tally.receipts_evaluated,
            receipts_skipped: skipped(tally.receipts_skipped.iter().map(|(reason, count)| (reason.as_str(), *count)).collect()),
            accounts_skipped: skipped(tally.accounts_skipped.iter().map(|(reason, count)| (reason.as_str(), *count)).collect()),
            completed: report.stopped_by.is_none(),
            stopped_by: report.stopped_by.map_or(String::new(), |stop| stop.as_str().to_owned()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_follow_the_documented_grammar() {
        assert_eq!(decimal("f", "1234.50"), Ok(Decimal::new(12345, 1)));
        assert_eq!(decimal("f", "-0.5"), Ok(Decimal::new(-5, 1)));
        for bad in ["", "1e3", "+1", "1.", ".5", "1,5", "NaN", " 1", "1..2", "0x10", "99999999999999999999999999999999"] {
            assert!(matches!(decimal("f", bad), Err(Rejection::InvalidArgument { .. })), "{bad:?}");
        }
    }

    #[test]
    fn a_sale_s_money_and_currency_are_the_program_s() {
        let program = ProgramPolicy::with_defaults("p");
        let max = Decimal::from(1_000_000);
        assert_eq!(money_paid("total", "1500.50", &program, max), Ok(Decimal::new(150_050, 2)));
        assert_eq!(money_paid("total", "1500.500", &program, max), Ok(Decimal::new(15_005, 1)), "zeros at the end do not count");
        for bad in ["", "-1", "0", "1.005", "2000000", "1e3"] {
            let refused = money_paid("total", bad, &program, max).expect_err(bad);
            assert!(matches!(&refused, Rejection::InvalidArgument { field, .. } if field == "total"), "{bad}: {refused:?}");
        }
        assert_eq!(currency("currency", "", &program), Ok(()));
        assert_eq!(currency("currency", "KZT", &program), Ok(()));
        for bad in ["kzt", "USD", "KZT "] {
            assert!(
                matches!(currency("currency", bad, &program), Err(Rejection::InvalidArgument { field, .. }) if field == "currency"),
                "{bad}"
            );
        }
    }

    #[test]
    fn points_are_shown_at_the_program_scale() {
        let program = ProgramPolicy::with_defaults("p");
        assert_eq!(points(&program, Decimal::new(1200, 1)), "120");
        assert_eq!(money(&program, Decimal::new(5, 1)), "0.50");
    }

    #[test]
    fn ledger_page_tokens_round_trip_and_strangers_are_refused() {
        assert_eq!(page_token("page_token", ""), Ok(u64::MAX));
        assert_eq!(page_token("page_token", &next_page_token(Some(42))), Ok(42));
        assert_eq!(next_page_token(None), "");
        for bad in ["42", "seq:", "seq:-1", "r1a2"] {
            assert!(page_token("page_token", bad).is_err(), "{bad}");
        }
    }
}
