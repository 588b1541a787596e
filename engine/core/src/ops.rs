//! The checkout operations, as pure functions over an account's [`Txn`] and a [`ReceiptState`].
//!
//! Each takes a validated command, applies it to the working copies, and returns the answer the
//! till gets. On a rejection the caller drops both copies, so nothing half-written remains. The
//! engine around them handles identity, locking, idempotency and persistence.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Origin;
use crate::account::{AccountState, Certificate, Hold, MonthPurchases};
use crate::allocate::allocate;
use crate::basket::{BasketLimits, BasketLine, basket_total, validate_basket};
use crate::events::PendingCredit;
use crate::ledger::EntryKind;
use crate::outcome::{
    AccrueOutcome, AuthorizeOutcome, BonusOutcome, HoldView, RedeemOutcome, RefundOutcome, ReverseOutcome, RulePoints, SaleOutcome,
    SpendLimit, SpendQuote,
};
use crate::presence::PresenceProof;
use crate::program::ProgramPolicy;
use crate::receipt::{Accrual, ClosedLine, HoldStatus, KeptBasket, KeptItem, REFUNDS_PER_RECEIPT_MAX, ReceiptHold, ReceiptState};
use crate::rejection::Rejection;
use crate::rules::campaigns::Allowance;
use crate::rules::evaluate::{Award, AwardKind, Earn, PurchaseContext, evaluate_awards, evaluate_purchase, evaluate_schedule};
use crate::rules::{CompiledRules, budgets, spending, tiers};
use crate::txn::{Posting, Txn};

/// What every operation needs from the program: its policy and one version of its rules.
#[derive(Clone, Copy, Debug)]
pub struct Checkout<'a> {
    pub program: &'a ProgramPolicy,
    pub rules: &'a CompiledRules,
    pub limits: &'a BasketLimits,
}

/// Where and how the till sells: conditions of some rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleContext {
    /// "pos" when the till does not say.
    pub channel: String,
    pub coupons: Vec<String>,
}

/// Quote a basket and, when `spend` is above zero, hold that many points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeCmd {
    pub receipt_id: String,
    pub lines: Vec<BasketLine>,
    pub spend: Decimal,
    /// Zero means the program's default.
    pub hold_ttl_seconds: u32,
    pub sale: SaleContext,
    /// Who presented the customer and the code, checked when points are held.
    #[serde(skip)]
    pub presence: PresenceProof,
}

/// Spend points on a receipt, capturing its hold or directly on `lines`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemCmd {
    pub receipt_id: String,
    pub points: Decimal,
    pub hold_id: Option<String>,
    pub lines: Vec<BasketLine>,
    /// Checked when points are spent without a hold (a hold was checked when it was placed).
    #[serde(skip)]
    pub presence: PresenceProof,
}

/// Earn on the paid receipt's final lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccrueCmd {
    pub receipt_id: String,
    pub lines: Vec<BasketLine>,
    pub sale: SaleContext,
    /// Change the customer keeps as points (money; zero for none).
    pub change: Decimal,
    /// When the sale happened, for a receipt sent late by a till that was offline (`offline`);
    /// `None`: now. Last and left out when `None`, so a call's fingerprint is what it was before
    /// the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
}

/// An event bonus (a rule pays for a named event) or a manual adjustment (staff give or take
/// points, with a reason).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BonusCmd {
    Event {
        event: String,
    },
    Manual {
        points: Decimal,
        reason: String,
    },
    /// A schedule rule's award for one occasion (see `rules::evaluate::schedule_occasion`).
    Schedule {
        rule_id: String,
        occasion: String,
    },
    /// Points another account's receipt owes this one (a referral reward or its refund).
    Credit(PendingCredit),
    /// Not a bonus: tells the outbox about points expiring within `window_days`.
    ExpiryNotice {
        window_days: u32,
    },
    /// Not a bonus: writes to the ledger the expiries of an account nobody calls on (the sweep,
    /// so that the program's expired points and liability are right for dormant customers). The
    /// operation's start does it (`Txn::begin`); the call adds nothing.
    SettleExpired,
}

/// Record a sale made without a customer (`RecordSale`), for the program's figures: no rules,
/// no points, no customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleCmd {
    pub receipt_id: String,
    /// The money paid (normalised: "100" and "100.00" are the same request).
    pub total: Decimal,
    /// When the sale happened, for a sale sent late by a till that was offline (bounded as an
    /// accrual's); it counts on the day it arrives, as every late receipt does. Left out when
    /// `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Cancel a receipt entirely.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReverseCmd {
    pub receipt_id: String,
    pub reason: String,
}

/// One returned line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundLine {
    pub line_no: u32,
    pub quantity: Decimal,
}

/// Return part of a receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundCmd {
    pub receipt_id: String,
    pub refund_id: String,
    pub lines: Vec<RefundLine>,
    pub reason: String,
    /// When the goods were returned, for a refund sent late by an offline till; `None`: now.
    /// Last and left out when `None` (see [`AccrueCmd::occurred_at`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
}

fn receipt_posting(receipt: &ReceiptState) -> Posting<'_> {
    Posting { receipt_id: Some(&receipt.receipt_id), refund_id: None }
}

fn ensure_open(receipt: &ReceiptState) -> Result<(), Rejection> {
    if receipt.reversed {
        return Err(Rejection::ReceiptReversed { receipt_id: receipt.receipt_id.clone() });
    }
    if receipt.accrual.is_some() {
        return Err(Rejection::ReceiptClosed { receipt_id: receipt.receipt_id.clone() });
    }
    Ok(())
}

fn ensure_points_scale(program: &ProgramPolicy, field: &str, points: Decimal) -> Result<(), Rejection> {
    if points.normalize().scale() > program.points_scale {
        return Err(Rejection::invalid(field, format!("points have at most {} decimal places in this program", program.points_scale)));
    }
    Ok(())
}

/// The most points a basket may spend given `puttable` points the account can put up.
fn spend_quote(
    ck: &Checkout<'_>,
    account: &AccountState,
    lines: &[BasketLine],
    now: DateTime<Utc>,
    puttable: Decimal,
    lasting_until: DateTime<Utc>,
) -> SpendQuote {
    let quote = spending::spend_quote(ck.rules, ck.program, account, lines, now, puttable, lasting_until);
    assert!(quote.max >= Decimal::ZERO, "negative spend cap {}", quote.max);
    quote
}

fn check_spend(quote: &SpendQuote, requested: Decimal, spendable: Decimal, minimum: Decimal) -> Result<(), Rejection> {
    match quote.limit {
        _ if requested <= quote.max => Ok(()),
        SpendLimit::NotRegistered => Err(Rejection::CardNotRegistered),
        SpendLimit::MinimumBalance => Err(Rejection::BelowMinimumBalance { minimum, spendable }),
        SpendLimit::ReceiptCap => Err(Rejection::ExceedsReceiptCap { requested, cap: quote.max }),
        SpendLimit::Balance => Err(Rejection::InsufficientPoints { requested, spendable }),
    }
}

/// What a basket earns under the checkout's rules; never a negative amount.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    ck: &Checkout<'_>,
    account: &AccountState,
    lines: &[BasketLine],
    bases: &[Decimal],
    at: DateTime<Utc>,
    origin: &Origin,
    sale: &SaleContext,
    change: Decimal,
    allowance: &Allowance,
) -> Earn {
    let earn = evaluate_purchase(
        ck.rules,
        &PurchaseContext {
            program: ck.program,
            account,
            lines,
            bases,
            at,
            store_id: &origin.store_id,
            till_id: &origin.till_id,
            channel: &sale.channel,
            coupons: &sale.coupons,
            change,
            allowance,
        },
    );
    assert!(earn.total >= Decimal::ZERO && earn.lines.iter().all(|line| line.points >= Decimal::ZERO), "negative earn");
    assert_eq!(earn.total, earn.lines.iter().map(|line| line.points).sum::<Decimal>(), "lines do not add up to the earn");
    earn
}

fn hold_ttl(program: &ProgramPolicy, requested: u32) -> Result<Duration, Rejection> {
    let seconds = if requested == 0 { program.hold_ttl_seconds } else { requested };
    if seconds > program.hold_ttl_max_seconds {
        return Err(Rejection::invalid("hold_ttl_seconds", format!("at most {} seconds", program.hold_ttl_max_seconds)));
    }
    Ok(Duration::seconds(i64::from(seconds)))
}

/// Authorize without spending: a quote, no side effects. Campaign budgets are not limited.
pub fn quote(
    ck: &Checkout<'_>,
    account: &AccountState,
    cmd: &AuthorizeCmd,
    now: DateTime<Utc>,
    origin: &Origin,
) -> Result<AuthorizeOutcome, Rejection> {
    quote_within(ck, account, cmd, now, origin, &Allowance::unlimited())
}

/// [`quote`], with what budgeted campaigns may still give.
pub fn quote_within(
    ck: &Checkout<'_>,
    account: &AccountState,
    cmd: &AuthorizeCmd,
    now: DateTime<Utc>,
    origin: &Origin,
    allowance: &Allowance,
) -> Result<AuthorizeOutcome, Rejection> {
    validate_basket(&cmd.lines, ck.limits, ck.program.money_scale)?;
    let ttl = hold_ttl(ck.program, cmd.hold_ttl_seconds)?;
    let bases: Vec<Decimal> = cmd.lines.iter().map(|line| line.line_total).collect();
    let earn = evaluate(ck, account, &cmd.lines, &bases, now, origin, &cmd.sale, Decimal::ZERO, allowance);
    let spend = spend_quote(ck, account, &cmd.lines, now, account.holdable_at(now, now + ttl), now + ttl);
    Ok(AuthorizeOutcome {
        account_id: account.account_id.clone(),
        lines: earn.lines,
        earn_total: earn.total,
        rules: earn.rules,
        spend,
        tier: earn.tier,
        program_version: earn.program_version,
        balance: account.balance_at(now),
        hold: None,
        tx_id: None,
    })
}

/// Authorize with spending: the quote plus a hold of `cmd.spend` points on the receipt.
pub fn authorize(
    ck: &Checkout<'_>,
    txn: &mut Txn<'_>,
    receipt: &mut ReceiptState,
    cmd: &AuthorizeCmd,
    hold_id: String,
) -> Result<AuthorizeOutcome, Rejection> {
    authorize_within(ck, txn, receipt, cmd, hold_id, &Allowance::unlimited())
}

/// [`authorize`], its quote showing what budgeted campaigns may still give.
pub fn authorize_within(
    ck: &Checkout<'_>,
    txn: &mut Txn<'_>,
    receipt: &mut ReceiptState,
    cmd: &AuthorizeCmd,
    hold_id: String,
    allowance: &Allowance,
) -> Result<AuthorizeOutcome, Rejection> {
    assert!(cmd.spend > Decimal::ZERO, "authorize with spend {}", cmd.spend);
    ensure_open(receipt)?;
    ensure_points_scale(ck.program, "spend_points", cmd.spend)?;
    if receipt.hold.is_some() || receipt.spent > Decimal::ZERO {
        return Err(Rejection::IdempotencyConflict { kind: "receipt", key: receipt.receipt_id.clone() });
    }
    let now = txn.now();
    // First, so that every wrong code counts, whatever else is wrong with the call.
    txn.account_mut().presence.verify(&ck.program.presence, &cmd.presence, now)?;
    let mut outcome = quote_within(ck, txn.account(), cmd, now, &txn.origin().clone(), allowance)?;
    let expires_at = now + hold_ttl(ck.program, cmd.hold_ttl_seconds)?;
    check_spend(&outcome.spend, cmd.spend, outcome.balance.spendable, ck.rules.source().spending.min_balance_to_spend)?;
    txn.place_hold(Hold { hold_id: hold_id.clone(), receipt_id: cmd.receipt_id.clone(), amount: cmd.spend, expires_at });
    receipt.hold = Some(ReceiptHold {
        hold_id: hold_id.clone(),
        amount: cmd.spend,
        expires_at,
        status: HoldStatus::Active,
        certificate_limits: outcome.spend.certificate_limits.clone(),
    });
    outcome.hold = Some(HoldView { hold_id, amount: cmd.spend, expires_at });
    outcome.tx_id = Some(txn.tx_id().to_owned());
    outcome.balance = txn.account().balance_at(now);
    Ok(outcome)
}

/// Spends points on a receipt: captures its active hold (the rest is released) or, without one,
/// spends directly within the receipt's cap computed on `cmd.lines`.
pub fn redeem(ck: &Checkout<'_>, txn: &mut Txn<'_>, receipt: &mut ReceiptState, cmd: &RedeemCmd) -> Result<RedeemOutcome, Rejection> {
    ensure_open(receipt)?;
    if cmd.points <= Decimal::ZERO {
        return Err(Rejection::invalid("points", "must be above 0"));
    }
    ensure_points_scale(ck.program, "points", cmd.points)?;
    if receipt.spent > Decimal::ZERO {
        return Err(Rejection::IdempotencyConflict { kind: "receipt", key: receipt.receipt_id.clone() });
    }
    let now = txn.now();
    let reason = format!("spent on receipt {}", receipt.receipt_id);
    let hold = receipt.hold.clone();
    let mut released = Decimal::ZERO;
    let capture = match (&cmd.hold_id, &hold) {
        (Some(id), Some(hold)) if *id == hold.hold_id => Some(hold.clone()),
        (Some(id), _) => return Err(Rejection::HoldNotFound { hold_id: id.clone() }),
        (None, Some(hold)) if hold.status == HoldStatus::Active && (now < hold.expires_at || cmd.lines.is_empty()) => Some(hold.clone()),
        (None, _) => None,
    };
    let slices = match capture {
        Some(hold) => {
            if hold.status != HoldStatus::Active {
                return Err(Rejection::HoldClosed { hold_id: hold.hold_id, state: hold.status.as_str() });
            }
            if now >= hold.expires_at {
                return Err(Rejection::HoldExpired { hold_id: hold.hold_id });
            }
            if cmd.points > hold.amount {
                return Err(Rejection::CaptureExceedsHold { requested: cmd.points, held: hold.amount });
            }
            // The hold's points return to spendable, and the capture spends from them.
            txn.release_hold(&hold.hold_id);
            released = hold.amount - cmd.points;
            let slices = txn.spend(cmd.points, receipt_posting(receipt), reason, &hold.certificate_limits)?;
            if let Some(receipt_hold) = receipt.hold.as_mut() {
                receipt_hold.status = HoldStatus::Captured;
            }
            slices
        }
        None => {
            txn.account_mut().presence.verify(&ck.program.presence, &cmd.presence, now)?;
            if cmd.lines.is_empty() {
                return Err(Rejection::invalid("lines", "required to spend on a receipt without an active hold"));
            }
            validate_basket(&cmd.lines, ck.limits, ck.program.money_scale)?;
            let spendable = txn.account().balance_at(now).spendable;
            let quote = spend_quote(ck, txn.account(), &cmd.lines, now, spendable, now);
            check_spend(&quote, cmd.points, spendable, ck.rules.source().spending.min_balance_to_spend)?;
            txn.spend(cmd.points, receipt_posting(receipt), reason, &quote.certificate_limits)?
        }
    };
    receipt.spent += cmd.points;
    receipt.spent_slices.extend(slices);
    Ok(RedeemOutcome {
        tx_id: txn.tx_id().to_owned(),
        account_id: txn.account().account_id.clone(),
        redeemed: cmd.points,
        released,
        balance: txn.account().balance_at(now),
    })
}

/// Earns on the paid receipt and closes it. Points spent on the receipt are shared out over the
/// lines in proportion to their totals and earn nothing; an unused hold is released.
pub fn accrue(ck: &Checkout<'_>, txn: &mut Txn<'_>, receipt: &mut ReceiptState, cmd: &AccrueCmd) -> Result<AccrueOutcome, Rejection> {
    accrue_within(ck, txn, receipt, cmd, &Allowance::unlimited())
}

/// [`accrue`], paying budgeted campaigns' rules at most what `allowance` leaves them; what the
/// receipt drew on each is in its accrual's `campaigns`.
pub fn accrue_within(
    ck: &Checkout<'_>,
    txn: &mut Txn<'_>,
    receipt: &mut ReceiptState,
    cmd: &AccrueCmd,
    allowance: &Allowance,
) -> Result<AccrueOutcome, Rejection> {
    ensure_open(receipt)?;
    validate_basket(&cmd.lines, ck.limits, ck.program.money_scale)?;
    // Everything about the sale is evaluated as of when it happened: rules, tier, birthday
    // windows, budgets' periods, and the points' pending period and expiry.
    let sold_at = crate::offline::sale_time(ck.program, txn.now(), cmd.occurred_at)?;
    let committed_at = txn.now();
    let total = basket_total(&cmd.lines);
    if receipt.spent > total {
        return Err(Rejection::invalid(
            "lines",
            format!("the lines total {total}, less than the {} points spent on this receipt", receipt.spent),
        ));
    }
    let mut hold_released = Decimal::ZERO;
    if let Some(hold) = receipt.hold.as_mut().filter(|hold| hold.status == HoldStatus::Active) {
        hold_released = txn.release_hold(&hold.hold_id);
        hold.status = HoldStatus::Released;
    }
    let totals: Vec<Decimal> = cmd.lines.iter().map(|line| line.line_total).collect();
    let shares = allocate(receipt.spent, &totals, ck.program.share_scale());
    let bases: Vec<Decimal> = totals.iter().zip(&shares).map(|(total, share)| *total - *share).collect();
    let origin = txn.origin().clone();
    let earn = evaluate(ck, txn.account(), &cmd.lines, &bases, sold_at, &origin, &cmd.sale, cmd.change, allowance);
    if cmd.change > Decimal::ZERO && earn.change.is_none() {
        return Err(Rejection::invalid("change_to_points", "this program takes no change as points here"));
    }
    let earning_lines = earn.lines.iter().filter(|line| line.points > Decimal::ZERO).count();
    let rule_list = earn.rules.iter().map(|rule| format!("{} {}", rule.label, rule.points.normalize())).collect::<Vec<_>>().join(", ");
    let reason = format!("earned on receipt {}: {} of {} lines ({rule_list})", receipt.receipt_id, earning_lines, cmd.lines.len());
    let rule_ids = earn.rules.iter().map(|rule| rule.rule_id.to_string()).collect();
    txn.set_program_version(earn.program_version);
    let terms = txn.earn_as_of(sold_at, earn.total, receipt_posting(receipt), reason, rule_ids);
    if let Some(change) = &earn.change {
        let reason = format!("change from receipt {} kept as points ({})", receipt.receipt_id, change.label);
        txn.bonus(EntryKind::Bonus, change.points, receipt_posting(receipt), reason, vec![change.rule_id.to_string()]);
    }
    let local_day = sold_at.with_timezone(&ck.program.time_zone).date_naive();
    let tier_month = tiers::month_index(local_day);
    let account = txn.account_mut();
    let budget_charges = budgets::charge(ck.rules, account, &earn.rules, local_day);
    account.purchases = account.purchases.saturating_add(1);
    let since_previous = account.last_purchase_at.filter(|previous| *previous < sold_at).map(|previous| (sold_at - previous).num_seconds());
    // A late receipt never moves the last purchase back (win-back counts from the latest).
    account.last_purchase_at = account.last_purchase_at.max(Some(sold_at));
    // RFM counts the purchase in the local month of its sale, at the money it paid.
    crate::rfm::record_purchase(account, tier_month, total - receipt.spent);
    // The program's figures count a purchase in the month it was committed (`figures`).
    // (An engine whose clock is behind the one that recorded a later month counts nothing.)
    let month = crate::figures::month_index(committed_at, ck.program.time_zone);
    let month_purchases = match account.month_purchases {
        MonthPurchases { month: last, count } if last == month => {
            account.month_purchases.count = count.saturating_add(1);
            account.month_purchases.count
        }
        MonthPurchases { month: last, .. } if last > month => 0,
        _ => {
            account.month_purchases = MonthPurchases { month, count: 1 };
            1
        }
    };
    let change = tiers::record_spend(ck.rules, account, Some(tier_month), total, sold_at, ck.program.time_zone);
    let tier = account.tier.clone();
    if let Some(change) = change {
        txn.tier_changed(change);
    }
    for reward in &earn.referrals {
        txn.owe(PendingCredit {
            credit_id: format!("referral/{}/{}", receipt.receipt_id, reward.level),
            account_id: reward.account_id.clone(),
            points: reward.points,
            rule_id: reward.rule_id.clone(),
            reason: format!("referral reward, level {}, receipt {}", reward.level, receipt.receipt_id),
            transfer: None,
        });
    }
    txn.record_sale(crate::figures::Sale { paid: total - receipt.spent, month_purchases, since_previous });
    txn.record_campaigns(&earn.campaigns);
    receipt.accrual = Some(Accrual {
        tx_id: txn.tx_id().to_owned(),
        lines: cmd
            .lines
            .iter()
            .zip(&earn.lines)
            .map(|(line, earned)| ClosedLine {
                line_no: line.line_no,
                quantity: line.quantity,
                line_total: line.line_total,
                points: earned.points,
                returned: Decimal::ZERO,
                applied: earned.applied.clone(),
            })
            .collect(),
        total,
        earned: earn.total,
        bucket_id: terms.map(|terms| terms.id),
        program_version: earn.program_version,
        budget_charges,
        tier_month: Some(tier_month),
        referrals: earn.referrals.clone(),
        change_points: earn.change.as_ref().map_or(Decimal::ZERO, |change| change.points),
        rfm_counted: true,
        campaigns: earn.campaigns.clone(),
    });
    receipt.basket = Some(KeptBasket {
        sold_at,
        store_id: origin.store_id.clone(),
        till_id: origin.till_id.clone(),
        channel: cmd.sale.channel.clone(),
        coupons: cmd.sale.coupons.clone(),
        items: cmd
            .lines
            .iter()
            .map(|line| KeptItem {
                sku: line.sku.clone(),
                category: line.category.clone(),
                brand: line.brand.clone(),
                unit_price: line.unit_price,
                excise: line.excise,
                promo_price: line.promo_price,
            })
            .collect(),
    });
    Ok(AccrueOutcome {
        tx_id: txn.tx_id().to_owned(),
        account_id: txn.account().account_id.clone(),
        lines: earn.lines,
        earned: earn.total,
        rules: earn.rules,
        tier,
        program_version: earn.program_version,
        paid_amount: total - receipt.spent,
        points_spent: receipt.spent,
        available_from: terms.map(|terms| terms.available_from),
        expires_at: terms.map(|terms| terms.expires_at),
        balance: txn.account().balance_at(txn.now()),
        hold_released,
        change_points: earn.change.map_or(Decimal::ZERO, |change| change.points),
    })
}

/// The share of each referral reward that returned money takes back: what `returned_after` of
/// the receipt's total owes back, less what earlier refunds already took.
fn owe_back_referrals(
    program: &ProgramPolicy,
    txn: &mut Txn<'_>,
    receipt: &ReceiptState,
    accrual: &Accrual,
    returned_after: Decimal,
    key: &str,
) {
    let share = |points: Decimal, returned: Decimal| {
        if accrual.total.is_zero() || returned >= accrual.total { points } else { program.floor_points(points * returned / accrual.total) }
    };
    for reward in &accrual.referrals {
        let owed_back = share(reward.points, returned_after) - share(reward.points, receipt.money_returned);
        if owed_back > Decimal::ZERO {
            txn.owe(PendingCredit {
                credit_id: format!("referral/{}/{}/{key}", receipt.receipt_id, reward.level),
                account_id: reward.account_id.clone(),
                points: -owed_back,
                rule_id: reward.rule_id.clone(),
                reason: format!("referral reward taken back, level {}, receipt {} ({key})", reward.level, receipt.receipt_id),
                transfer: None,
            });
        }
    }
}

/// Per budget a receipt charged: the points of that rule its refunds have taken back so far.
fn rule_points_returned(program: &ProgramPolicy, accrual: &Accrual, rule_id: &str) -> Decimal {
    accrual
        .lines
        .iter()
        .flat_map(|line| line.applied.iter().filter(|applied| *applied.rule_id == *rule_id).map(move |applied| (line, applied.points)))
        .map(
            |(line, points)| {
                if line.returned == line.quantity { points } else { program.floor_points(points * line.returned / line.quantity) }
            },
        )
        .sum()
}

/// Gives back the budgets a receipt charged, in proportion to what its refunds returned
/// (`before` is the accrual before this refund, `after` with it).
fn give_back_budgets(program: &ProgramPolicy, account: &mut AccountState, before: &Accrual, after: &Accrual, reversed: bool) {
    for charge in &after.budget_charges {
        let returned_before = rule_points_returned(program, before, &charge.rule_id);
        let returned_after = if reversed { charge.points } else { rule_points_returned(program, after, &charge.rule_id) };
        budgets::give_back(account, charge, returned_after - returned_before, returned_after >= charge.points);
    }
}

/// Cumulative amounts returned by refunds, derived from the returned quantities so that repeated
/// partial refunds add up exactly to the whole and never beyond it.
fn returned_so_far(program: &ProgramPolicy, receipt: &ReceiptState, accrual: &Accrual) -> (Decimal, Decimal, Decimal) {
    let mut clawed = Decimal::ZERO;
    let mut money = Decimal::ZERO;
    let mut all_returned = true;
    for line in &accrual.lines {
        if line.returned == line.quantity {
            clawed += line.points;
            money += line.line_total;
        } else {
            all_returned = false;
            clawed += program.floor_points(line.points * line.returned / line.quantity);
            money += program.floor_money(line.line_total * line.returned / line.quantity);
        }
    }
    let spent_back = if all_returned {
        receipt.spent
    } else if accrual.total.is_zero() {
        Decimal::ZERO
    } else {
        program.floor_points(receipt.spent * money / accrual.total)
    };
    (clawed, money, spent_back)
}

/// A partial return: claws back what the returned lines earned and gives back the share of the
/// spent points that paid for them.
pub fn refund(ck: &Checkout<'_>, txn: &mut Txn<'_>, receipt: &mut ReceiptState, cmd: &RefundCmd) -> Result<RefundOutcome, Rejection> {
    if receipt.reversed {
        return Err(Rejection::ReceiptReversed { receipt_id: receipt.receipt_id.clone() });
    }
    let Some(mut accrual) = receipt.accrual.clone() else {
        return Err(Rejection::ReceiptNotClosed { receipt_id: receipt.receipt_id.clone() });
    };
    // A return sent late by an offline till: the tier it changes is reviewed as of the return.
    let returned_at = crate::offline::sale_time(ck.program, txn.now(), cmd.occurred_at)?;
    if cmd.lines.is_empty() {
        return Err(Rejection::invalid("lines", "a refund returns at least one line"));
    }
    if cmd.lines.len() > ck.limits.lines_max {
        return Err(Rejection::invalid("lines", format!("at most {} lines per refund", ck.limits.lines_max)));
    }
    if receipt.refunds >= REFUNDS_PER_RECEIPT_MAX {
        return Err(Rejection::invalid("refund_id", format!("a receipt takes at most {REFUNDS_PER_RECEIPT_MAX} refunds")));
    }
    let before = returned_so_far(ck.program, receipt, &accrual);
    let mut seen = std::collections::HashSet::with_capacity(cmd.lines.len());
    for (index, returned) in cmd.lines.iter().enumerate() {
        if !seen.insert(returned.line_no) {
            return Err(Rejection::invalid(format!("lines[{index}].line_no"), "appears twice"));
        }
        if returned.quantity <= Decimal::ZERO {
            return Err(Rejection::invalid(format!("lines[{index}].quantity"), "must be above 0"));
        }
        let Some(line) = accrual.lines.iter_mut().find(|line| line.line_no == returned.line_no) else {
            return Err(Rejection::invalid(format!("lines[{index}].line_no"), format!("the receipt has no line {}", returned.line_no)));
        };
        let remaining = line.quantity - line.returned;
        if returned.quantity > remaining {
            return Err(Rejection::RefundExceedsReceipt { line_no: line.line_no, requested: returned.quantity, remaining });
        }
        line.returned += returned.quantity;
    }
    let after = returned_so_far(ck.program, receipt, &accrual);
    let clawback = after.0 - before.0;
    let refunded_amount = after.1 - before.1;
    let spent_back = after.2 - receipt.spent_returned;
    let posting = Posting { receipt_id: Some(&cmd.receipt_id), refund_id: Some(&cmd.refund_id) };
    let reason = if cmd.reason.is_empty() { format!("refund {} of receipt {}", cmd.refund_id, cmd.receipt_id) } else { cmd.reason.clone() };
    txn.return_spent(&receipt.spent_slices, receipt.spent_returned, spent_back, posting, reason.clone());
    let debt_created = txn.clawback(clawback, posting, accrual.bucket_id, reason)?;
    if let Some(before) = &receipt.accrual {
        let account = txn.account_mut();
        give_back_budgets(ck.program, account, before, &accrual, false);
        // The money refunded, less the points given back for it, was not paid after all.
        if accrual.rfm_counted {
            crate::rfm::record_return(account, accrual.tier_month, refunded_amount - spent_back, false);
        }
        if let Some(change) =
            tiers::record_spend(ck.rules, account, accrual.tier_month, -refunded_amount, returned_at, ck.program.time_zone)
        {
            txn.tier_changed(change);
        }
    }
    owe_back_referrals(ck.program, txn, receipt, &accrual, receipt.money_returned + refunded_amount, &cmd.refund_id);
    receipt.accrual = Some(accrual);
    receipt.earn_clawed += clawback;
    receipt.spent_returned += spent_back;
    receipt.money_returned += refunded_amount;
    receipt.refunds += 1;
    Ok(RefundOutcome {
        tx_id: txn.tx_id().to_owned(),
        account_id: txn.account().account_id.clone(),
        earn_clawed_back: clawback,
        spent_returned: spent_back,
        debt_created,
        refunded_amount,
        balance: txn.account().balance_at(txn.now()),
    })
}

/// Cancels a receipt: releases its hold, gives back what it spent and claws back what it earned,
/// less whatever refunds already settled.
pub fn reverse(ck: &Checkout<'_>, txn: &mut Txn<'_>, receipt: &mut ReceiptState, cmd: &ReverseCmd) -> Result<ReverseOutcome, Rejection> {
    if receipt.reversed {
        return Err(Rejection::ReceiptReversed { receipt_id: receipt.receipt_id.clone() });
    }
    let mut hold_released = Decimal::ZERO;
    if let Some(hold) = receipt.hold.as_mut().filter(|hold| hold.status == HoldStatus::Active) {
        hold_released = txn.release_hold(&hold.hold_id);
        hold.status = HoldStatus::Released;
    }
    let posting = receipt_posting(receipt);
    let reason = if cmd.reason.is_empty() { format!("receipt {} cancelled", receipt.receipt_id) } else { cmd.reason.clone() };
    let spent_back = receipt.spent - receipt.spent_returned;
    txn.return_spent(&receipt.spent_slices, receipt.spent_returned, spent_back, posting, reason.clone());
    // Change kept as points goes back with the receipt: the sale it came from did not happen.
    let earned = receipt.accrual.as_ref().map_or(Decimal::ZERO, |accrual| accrual.earned + accrual.change_points);
    let clawback = earned - receipt.earn_clawed;
    let own_bucket = receipt.accrual.as_ref().and_then(|accrual| accrual.bucket_id);
    let debt_created = txn.clawback(clawback, posting, own_bucket, reason)?;
    if let Some(accrual) = receipt.accrual.clone() {
        owe_back_referrals(ck.program, txn, receipt, &accrual, accrual.total, "reverse");
    }
    if let Some(accrual) = &receipt.accrual {
        let now = txn.now();
        let account = txn.account_mut();
        give_back_budgets(ck.program, account, accrual, accrual, true);
        let unreturned = accrual.total - receipt.money_returned;
        // A cancelled receipt is no purchase: its count and what it paid net of earlier refunds go.
        if accrual.rfm_counted {
            crate::rfm::record_return(account, accrual.tier_month, unreturned - spent_back, true);
        }
        if let Some(change) = tiers::record_spend(ck.rules, account, accrual.tier_month, -unreturned, now, ck.program.time_zone) {
            txn.tier_changed(change);
        }
    }
    receipt.spent_returned += spent_back;
    receipt.earn_clawed += clawback;
    receipt.reversed = true;
    Ok(ReverseOutcome {
        tx_id: txn.tx_id().to_owned(),
        account_id: txn.account().account_id.clone(),
        earn_clawed_back: clawback,
        spent_returned: spent_back,
        hold_released,
        debt_created,
        balance: txn.account().balance_at(txn.now()),
    })
}

/// Credits the welcome bonuses of enrolment rules to a new (or newly registered) account.
pub fn enrollment_bonuses(ck: &Checkout<'_>, txn: &mut Txn<'_>) -> Vec<RulePoints> {
    let awards = evaluate_awards(ck.rules, &ck.rules.enrollment, ck.program, txn.account(), txn.now(), &txn.origin().store_id);
    credit_awards(ck, txn, &awards, "welcome bonus")
}

/// Credits awards (points or certificates) and charges their rules' budgets.
fn credit_awards(ck: &Checkout<'_>, txn: &mut Txn<'_>, awards: &[Award], what: &str) -> Vec<RulePoints> {
    txn.set_program_version(ck.rules.version());
    let posting = Posting { receipt_id: None, refund_id: None };
    for award in awards {
        match &award.kind {
            AwardKind::Points(points) => {
                txn.bonus(EntryKind::Bonus, *points, posting, format!("{what}: {}", award.label), vec![award.rule_id.clone()]);
            }
            AwardKind::Certificate { value, valid_days, cap_percent } => {
                let certificate = Certificate { rule_id: award.rule_id.clone(), label: award.label.clone(), cap_percent: *cap_percent };
                let reason = format!(
                    "{what}: certificate {} ({} points, {valid_days} days, up to {}% of a receipt)",
                    award.label,
                    value.normalize(),
                    cap_percent.normalize()
                );
                txn.issue_certificate(*value, *valid_days, certificate, posting, reason);
            }
        }
    }
    let given: Vec<RulePoints> = awards.iter().map(Award::as_rule_points).collect();
    let local_day = txn.now().with_timezone(&ck.program.time_zone).date_naive();
    budgets::charge(ck.rules, txn.account_mut(), &given, local_day);
    given
}

/// Records a sale without a customer on one of the program's internal sales accounts
/// (`figures::sales_account_id`): the account's balance never changes; its commit carries the sale
/// to the figures.
pub fn record_sale(ck: &Checkout<'_>, txn: &mut Txn<'_>, receipt: &mut ReceiptState, cmd: &SaleCmd) -> Result<SaleOutcome, Rejection> {
    crate::offline::sale_time(ck.program, txn.now(), cmd.occurred_at)?;
    if cmd.total <= Decimal::ZERO {
        return Err(Rejection::invalid("total", "must be above 0"));
    }
    if cmd.total.scale() > ck.program.money_scale {
        return Err(Rejection::invalid("total", format!("at most {} decimal places", ck.program.money_scale)));
    }
    debug_assert!(receipt.calls.is_empty(), "a sale's receipt records one call");
    txn.record_unidentified_sale(cmd.total);
    Ok(SaleOutcome { tx_id: txn.tx_id().to_owned(), total: cmd.total, recorded_at: txn.now() })
}

/// An event bonus or a manual adjustment.
pub fn bonus(ck: &Checkout<'_>, txn: &mut Txn<'_>, cmd: &BonusCmd) -> Result<BonusOutcome, Rejection> {
    let (points, rules) = match cmd {
        BonusCmd::Event { event } => {
            let positions = ck.rules.events.get(event).ok_or_else(|| Rejection::UnknownEvent { event: event.clone() })?;
            let awards = evaluate_awards(ck.rules, positions, ck.program, txn.account(), txn.now(), &txn.origin().store_id);
            let given = credit_awards(ck, txn, &awards, &format!("bonus for {event}"));
            (given.iter().map(|award| award.points).sum(), given)
        }
        BonusCmd::Schedule { rule_id, occasion } => {
            // Re-evaluated on the account as it is now: the sweep's read may be stale.
            let (now, account) = (txn.now(), txn.account());
            let due: Vec<Award> = evaluate_schedule(ck.rules, ck.program, account, now)
                .into_iter()
                .filter(|(award, due)| award.rule_id == *rule_id && due == occasion)
                .map(|(award, _)| award)
                .collect();
            let given = credit_awards(ck, txn, &due, "scheduled");
            (given.iter().map(|award| award.points).sum(), given)
        }
        BonusCmd::ExpiryNotice { window_days } => {
            txn.expiry_notice(*window_days);
            (Decimal::ZERO, Vec::new())
        }
        BonusCmd::SettleExpired => (Decimal::ZERO, Vec::new()),
        BonusCmd::Credit(credit) => {
            let posting = Posting { receipt_id: None, refund_id: None };
            txn.set_program_version(ck.rules.version());
            let merged = credit.rule_id == crate::merge::MERGE_RULE_ID;
            if let Some(transfer) = &credit.transfer {
                crate::merge::merge_in(txn, transfer);
            } else if merged && credit.points > Decimal::ZERO {
                // Points a merged card's refund gave back: spendable at once, as they were.
                txn.bonus(EntryKind::Merge, credit.points, posting, credit.reason.clone(), Vec::new());
            } else if credit.points > Decimal::ZERO {
                txn.earn(credit.points, posting, credit.reason.clone(), vec![credit.rule_id.clone()]);
            } else if merged && credit.points < Decimal::ZERO {
                // What a refund of a merged card's old receipt took back: that refund was taken and
                // cannot be refused now, so what these points cannot cover becomes debt.
                txn.clawback_into_debt(-credit.points, posting, credit.reason.clone());
            } else if credit.points < Decimal::ZERO {
                // Under the reject policy a referrer who spent the reward keeps what cannot be taken.
                let wanted = -credit.points;
                match txn.clawback(wanted, posting, None, credit.reason.clone()) {
                    Err(Rejection::ClawbackExceedsBalance { coverable, .. }) if coverable > Decimal::ZERO => {
                        txn.clawback(coverable, posting, None, credit.reason.clone())?;
                    }
                    Err(Rejection::ClawbackExceedsBalance { .. }) => {}
                    other => {
                        other?;
                    }
                }
            }
            let label = if merged { "merge" } else { "referral" };
            let rule = RulePoints { rule_id: credit.rule_id.as_str().into(), label: label.into(), points: credit.points };
            (credit.points, vec![rule])
        }
        BonusCmd::Manual { points, reason } => {
            ensure_points_scale(ck.program, "points", *points)?;
            if reason.trim().is_empty() {
                return Err(Rejection::invalid("reason", "a manual adjustment always says why"));
            }
            let posting = Posting { receipt_id: None, refund_id: None };
            if *points > Decimal::ZERO {
                txn.bonus(EntryKind::Adjustment, *points, posting, reason.clone(), Vec::new());
            } else if *points < Decimal::ZERO {
                txn.adjust_down(-*points, posting, reason.clone())?;
            } else {
                return Err(Rejection::invalid("points", "must not be 0"));
            }
            (*points, Vec::new())
        }
    };
    Ok(BonusOutcome {
        tx_id: txn.tx_id().to_owned(),
        account_id: txn.account().account_id.clone(),
        points,
        rules,
        balance: txn.account().balance_at(txn.now()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::{OpKind, fingerprint};

    /// The commands as they were before `occurred_at`: receipts stored then keep their
    /// fingerprints, so their replays are still answered rather than refused as conflicts.
    #[derive(Serialize)]
    struct AccrueBefore<'a> {
        receipt_id: &'a str,
        lines: &'a [BasketLine],
        sale: &'a SaleContext,
        change: Decimal,
    }

    #[derive(Serialize)]
    struct RefundBefore<'a> {
        receipt_id: &'a str,
        refund_id: &'a str,
        lines: &'a [RefundLine],
        reason: &'a str,
    }

    #[test]
    fn a_call_without_occurred_at_has_the_fingerprint_it_had_before_the_field() {
        let sale = SaleContext { channel: "pos".into(), coupons: vec!["C1".into()] };
        let cmd = AccrueCmd { receipt_id: "R1".into(), lines: Vec::new(), sale: sale.clone(), change: Decimal::ONE, occurred_at: None };
        let before = AccrueBefore { receipt_id: "R1", lines: &[], sale: &sale, change: Decimal::ONE };
        assert_eq!(fingerprint(OpKind::Accrue, &cmd), fingerprint(OpKind::Accrue, &before));
        let late = AccrueCmd { occurred_at: Some(DateTime::UNIX_EPOCH), ..cmd };
        assert_ne!(fingerprint(OpKind::Accrue, &late), fingerprint(OpKind::Accrue, &before), "the sale's time is part of the call");

        let refund =
            RefundCmd { receipt_id: "R1".into(), refund_id: "F1".into(), lines: Vec::new(), reason: String::new(), occurred_at: None };
        let before = RefundBefore { receipt_id: "R1", refund_id: "F1", lines: &[], reason: "" };
        assert_eq!(fingerprint(OpKind::Refund, &refund), fingerprint(OpKind::Refund, &before));
    }
}
