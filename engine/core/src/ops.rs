//! The checkout operations, as pure functions over an account's [`Txn`] and a [`ReceiptState`].
//!
//! Each takes a validated command, applies it to the working copies, and returns the answer the
//! till gets. On a rejection the caller drops both copies, so nothing half-written remains. The
//! engine around them handles identity, locking, idempotency and persistence.

use chrono::Duration;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::account::{AccountState, Hold};
use crate::allocate::allocate;
use crate::basket::{BasketLimits, BasketLine, basket_total, validate_basket};
use crate::earn::{Earn, EarnEvaluator, EarnInput};
use crate::outcome::{AccrueOutcome, AuthorizeOutcome, HoldView, RedeemOutcome, RefundOutcome, ReverseOutcome, SpendLimit};
use crate::program::ProgramPolicy;
use crate::receipt::{Accrual, ClosedLine, HoldStatus, REFUNDS_PER_RECEIPT_MAX, ReceiptHold, ReceiptState};
use crate::rejection::Rejection;
use crate::txn::{Posting, Txn};

/// What every operation needs from the program.
#[derive(Clone, Copy, Debug)]
pub struct Checkout<'a> {
    pub program: &'a ProgramPolicy,
    pub earn: &'a dyn EarnEvaluator,
    pub limits: &'a BasketLimits,
}

/// Quote a basket and, when `spend` is above zero, hold that many points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeCmd {
    pub receipt_id: String,
    pub lines: Vec<BasketLine>,
    pub spend: Decimal,
    /// Zero means the program's default.
    pub hold_ttl_seconds: u32,
}

/// Spend points on a receipt, capturing its hold or directly on `lines`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemCmd {
    pub receipt_id: String,
    pub points: Decimal,
    pub hold_id: Option<String>,
    pub lines: Vec<BasketLine>,
}

/// Earn on the paid receipt's final lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccrueCmd {
    pub receipt_id: String,
    pub lines: Vec<BasketLine>,
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

/// The most points a receipt of `total` may spend, given what the account can put up.
fn spend_limit(program: &ProgramPolicy, account: &AccountState, total: Decimal, puttable: Decimal) -> (Decimal, SpendLimit) {
    if !account.registered {
        return (Decimal::ZERO, SpendLimit::NotRegistered);
    }
    let cap = program.floor_points(total * program.redeem_cap_percent / Decimal::ONE_HUNDRED);
    let puttable = program.floor_points(puttable);
    if puttable < cap { (puttable, SpendLimit::Balance) } else { (cap, SpendLimit::ReceiptCap) }
}

fn check_spend(limit: (Decimal, SpendLimit), requested: Decimal, spendable: Decimal) -> Result<(), Rejection> {
    match limit.1 {
        _ if requested <= limit.0 => Ok(()),
        SpendLimit::NotRegistered => Err(Rejection::CardNotRegistered),
        SpendLimit::ReceiptCap => Err(Rejection::ExceedsReceiptCap { requested, cap: limit.0 }),
        SpendLimit::Balance => Err(Rejection::InsufficientPoints { requested, spendable }),
    }
}

fn evaluate(ck: &Checkout<'_>, account: &AccountState, lines: &[BasketLine], bases: &[Decimal], at: chrono::DateTime<chrono::Utc>) -> Earn {
    let earn = ck.earn.evaluate(&EarnInput { program: ck.program, account, lines, bases, at });
    assert!(earn.total >= Decimal::ZERO && earn.lines.iter().all(|line| line.points >= Decimal::ZERO), "negative earn");
    earn
}

fn hold_ttl(program: &ProgramPolicy, requested: u32) -> Result<Duration, Rejection> {
    let seconds = if requested == 0 { program.hold_ttl_seconds } else { requested };
    if seconds > program.hold_ttl_max_seconds {
        return Err(Rejection::invalid("hold_ttl_seconds", format!("at most {} seconds", program.hold_ttl_max_seconds)));
    }
    Ok(Duration::seconds(i64::from(seconds)))
}

/// Authorize without spending: a quote, no side effects.
pub fn quote(
    ck: &Checkout<'_>,
    account: &AccountState,
    cmd: &AuthorizeCmd,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<AuthorizeOutcome, Rejection> {
    validate_basket(&cmd.lines, ck.limits, ck.program.money_scale)?;
    let ttl = hold_ttl(ck.program, cmd.hold_ttl_seconds)?;
    let bases: Vec<Decimal> = cmd.lines.iter().map(|line| line.line_total).collect();
    let earn = evaluate(ck, account, &cmd.lines, &bases, now);
    let limit = spend_limit(ck.program, account, basket_total(&cmd.lines), account.holdable_at(now, now + ttl));
    Ok(AuthorizeOutcome {
        account_id: account.account_id.clone(),
        lines: earn.lines,
        earn_total: earn.total,
        max_spend: limit.0,
        max_spend_limit: limit.1,
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
    assert!(cmd.spend > Decimal::ZERO, "authorize with spend {}", cmd.spend);
    ensure_open(receipt)?;
    ensure_points_scale(ck.program, "spend_points", cmd.spend)?;
    if receipt.hold.is_some() || receipt.spent > Decimal::ZERO {
        return Err(Rejection::IdempotencyConflict { kind: "receipt", key: receipt.receipt_id.clone() });
    }
    let now = txn.now();
    let mut outcome = quote(ck, txn.account(), cmd, now)?;
    let expires_at = now + hold_ttl(ck.program, cmd.hold_ttl_seconds)?;
    check_spend((outcome.max_spend, outcome.max_spend_limit), cmd.spend, outcome.balance.spendable)?;
    txn.place_hold(Hold { hold_id: hold_id.clone(), receipt_id: cmd.receipt_id.clone(), amount: cmd.spend, expires_at });
    receipt.hold = Some(ReceiptHold { hold_id: hold_id.clone(), amount: cmd.spend, expires_at, status: HoldStatus::Active });
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
            let slices = txn.spend(cmd.points, receipt_posting(receipt), reason)?;
            if let Some(receipt_hold) = receipt.hold.as_mut() {
                receipt_hold.status = HoldStatus::Captured;
            }
            slices
        }
        None => {
            if cmd.lines.is_empty() {
                return Err(Rejection::invalid("lines", "required to spend on a receipt without an active hold"));
            }
            validate_basket(&cmd.lines, ck.limits, ck.program.money_scale)?;
            let spendable = txn.account().balance_at(now).spendable;
            let limit = spend_limit(ck.program, txn.account(), basket_total(&cmd.lines), spendable);
            check_spend(limit, cmd.points, spendable)?;
            txn.spend(cmd.points, receipt_posting(receipt), reason)?
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
    ensure_open(receipt)?;
    validate_basket(&cmd.lines, ck.limits, ck.program.money_scale)?;
    let now = txn.now();
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
    let earn = evaluate(ck, txn.account(), &cmd.lines, &bases, now);
    let earning_lines = earn.lines.iter().filter(|line| line.points > Decimal::ZERO).count();
    let reason = format!("earned on receipt {}: {} of {} lines", receipt.receipt_id, earning_lines, cmd.lines.len());
    let terms = txn.earn(earn.total, receipt_posting(receipt), reason);
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
            })
            .collect(),
        total,
        earned: earn.total,
        bucket_id: terms.map(|terms| terms.id),
    });
    Ok(AccrueOutcome {
        tx_id: txn.tx_id().to_owned(),
        account_id: txn.account().account_id.clone(),
        lines: earn.lines,
        earned: earn.total,
        paid_amount: total - receipt.spent,
        points_spent: receipt.spent,
        available_from: terms.map(|terms| terms.available_from),
        expires_at: terms.map(|terms| terms.expires_at),
        balance: txn.account().balance_at(now),
        hold_released,
    })
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
pub fn reverse(_ck: &Checkout<'_>, txn: &mut Txn<'_>, receipt: &mut ReceiptState, cmd: &ReverseCmd) -> Result<ReverseOutcome, Rejection> {
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
    let earned = receipt.accrual.as_ref().map_or(Decimal::ZERO, |accrual| accrual.earned);
    let clawback = earned - receipt.earn_clawed;
    let own_bucket = receipt.accrual.as_ref().and_then(|accrual| accrual.bucket_id);
    let debt_created = txn.clawback(clawback, posting, own_bucket, reason)?;
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
