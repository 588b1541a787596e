//! Property tests of the ledger, buckets, holds and receipts.
//!
//! A test model drives one account and a handful of receipts through random sequences of checkout
//! operations (accrue, authorize with a hold, capture, direct redeem, refunds, reverse) and clock
//! advances, exactly the way the engine wraps each operation: a [`Txn`] over a copy of the account,
//! a copy of the receipt, and on success `txn.finish()` plus `receipt.check_invariants()`; on a
//! rejection both copies are dropped. Every ledger entry ever written is kept in a `Vec`.
//!
//! After every step (and, on a clock advance, at every instant where the account's balances could
//! change) the model checks:
//!
//! 1. Ledger: seqs are 1..=n without gaps; each entry's `balance_after` is the running sum; the sum
//!    of all entries equals `account.ledger_sum` and `account.booked_balance()`; each kind has its
//!    sign (Earn/ReturnSpent > 0; Spend/Clawback/Expire < 0).
//! 2. Balances at each instant: held <= available; spendable = available - held >= 0;
//!    balance = ledger_sum - (remaining of buckets already expired but not yet settled).
//! 3. Debt is 0 under `RefundPolicy::Reject` and never negative; available, pending and every
//!    bucket's remaining are never negative (buckets are strictly positive).
//! 4. Receipts: spent_returned <= spent, earn_clawed <= earned, returned quantity <= quantity; for
//!    every receipt R, the non-Expire entries tagged R sum to
//!    `earned - earn_clawed - spent + spent_returned` (per kind: Earn = earned, Spend = -spent,
//!    ReturnSpent = spent_returned, Clawback = -earn_clawed), so after a full reverse or a full
//!    refund of every line they sum to exactly 0. Expire entries are tagged with the receipt that
//!    *earned* the expiring bucket (not the receipt whose operation settled it, e.g. a refund that
//!    returns spent points into an already expired bucket), so they are excluded; instead, the
//!    points expired from R's buckets never exceed what R earned.
//!    Refunds are proportional: clawed <= sum(points * returned / quantity), and spent returned
//!    <= spent * money_returned / total.
//!    Spent points that a refund or reverse gives back into a bucket already past its expiry expire
//!    again in the same operation: its Expire entries after the ReturnSpent entry total exactly the
//!    returned amount that went into expired buckets (they never pay off debt). This one fails
//!    today: see `returned_points_from_an_expired_bucket_do_not_pay_off_debt`.
//! 5. Earn is never negative and stays within the cashback rate of the eligible lines; points
//!    spent on a receipt never exceed floor(cap% x the basket the cap was computed on) nor what was
//!    spendable at that time (plus the receipt's own hold for a capture); quotes are honoured: an
//!    amount within `max_spend` is never refused for the balance or the cap; a live hold is always
//!    capturable in full; under the allow-negative policy a reverse or a refund is never refused
//!    for the balance.
//! 6. The program's figures: the changes by expiry day that every commit's `figures` event
//!    carries add up to the account's buckets by expiry day (the liability by expiry is a sum of
//!    commits, never a scan of accounts).
//! 7. RFM: the account's counters by month of sale equal a recomputation from its receipts (per
//!    month, the receipts accrued and not reversed, and what they paid net of refunds and of the
//!    points given back), over the twelve months up to the newest; the frequency and monetary
//!    value at `now` are their sums over the window.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Months, TimeZone, Utc};
use loyalty_core::account::AccountState;
use loyalty_core::basket::{BasketLimits, BasketLine, basket_total};
use loyalty_core::ledger::{EntryKind, LedgerEntry};
use loyalty_core::ops::{self, AccrueCmd, AuthorizeCmd, Checkout, RedeemCmd, RefundCmd, RefundLine, ReverseCmd, SaleContext};
use loyalty_core::program::{PendingRule, PointsRounding, ProgramPolicy, RefundPolicy};
use loyalty_core::receipt::{HoldStatus, ReceiptState};
use loyalty_core::rejection::Rejection;
use loyalty_core::rules::{CompiledRules, compile, flat_cashback};
use loyalty_core::txn::Txn;
use loyalty_core::{Decimal, Origin};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{TestCaseError, TestRunner};
use rust_decimal::RoundingStrategy;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn d(text: &str) -> Decimal {
    text.parse().expect("decimal literal in the test")
}

fn start_time() -> DateTime<Utc> {
    // 09:00 UTC is 14:00 in Almaty.
    Utc.with_ymd_and_hms(2026, 1, 15, 9, 0, 0).single().expect("valid start time")
}

fn origin() -> Origin {
    Origin { store_id: "store-1".into(), till_id: "till-1".into(), actor: "till-gw".into() }
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(TestCaseError::fail(format!($($fmt)+)));
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Generated input
// ---------------------------------------------------------------------------------------------

/// The program variant a scenario runs under.
#[derive(Clone, Debug)]
struct Setup {
    refund_policy: RefundPolicy,
    points_scale: u32,
    pending: PendingRule,
    cap_percent: u32,
    cashback: Decimal,
    rounding: PointsRounding,
    registered: bool,
    start_offset_minutes: i64,
    /// An opening purchase of this many cents (0: none), a day before the steps start.
    opening_cents: i64,
}

#[derive(Clone, Debug)]
struct LineSpec {
    quantity: Decimal,
    unit_cents: i64,
    discount_percent: u32,
    excise: bool,
    promo: bool,
}

/// How many points an operation asks for.
#[derive(Clone, Debug)]
enum Amount {
    /// This many thousandths of the most it may ask for (above 1000 asks too much).
    OfMax(u32),
    /// A fixed number of points.
    Fixed(i64),
    /// More decimals than any tested program allows.
    TooFine,
}

#[derive(Clone, Copy, Debug)]
enum CaptureMode {
    ById,
    Implicit,
    WrongId,
    Over,
}

#[derive(Clone, Copy, Debug)]
enum Qty {
    Remaining,
    /// Thousandths of the remaining quantity.
    OfRemaining(u32),
    Over,
}

#[derive(Clone, Copy, Debug)]
enum Advance {
    Minutes(i64),
    Hours(i64),
    Days(i64),
    Months(u32),
    /// To this many minutes before the next bucket expiry (a fresh hold may outlive the bucket).
    BeforeBucketExpiry(i64),
    /// To the next hold's expiry, shifted by this many seconds.
    AroundHoldExpiry(i64),
}

#[derive(Clone, Debug)]
enum Step {
    Accrue { receipt: Target, lines: Vec<LineSpec>, reuse: bool },
    Authorize { receipt: Target, lines: Vec<LineSpec>, reuse: bool, spend: Amount, ttl: u32 },
    Capture { receipt: Target, percent: u32, mode: CaptureMode },
    Redeem { receipt: Target, lines: Vec<LineSpec>, reuse: bool, spend: Amount },
    Refund { receipt: Target, mask: u8, quantities: Vec<Qty>, bogus: u8 },
    Reverse { receipt: Target },
    Advance(Advance),
}

/// Which receipt a step works on: chosen among the receipts in the state the step needs (open,
/// holding, accrued...) or a new one, so that most steps do something; a stray step picks any
/// receipt, to exercise the rejections.
#[derive(Clone, Copy, Debug)]
struct Target {
    selector: usize,
    stray: bool,
}

fn target_strategy() -> impl Strategy<Value = Target> {
    (prop_oneof![2 => 0_usize..2, 1 => 0_usize..16], prop::bool::weighted(0.1)).prop_map(|(selector, stray)| Target { selector, stray })
}

fn setup_strategy() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![3 => Just(RefundPolicy::AllowNegative), 2 => Just(RefundPolicy::Reject)],
        prop_oneof![Just(0_u32), Just(2_u32)],
        prop_oneof![2 => Just(PendingRule::NextDay), 2 => Just(PendingRule::None), 1 => Just(PendingRule::Hours(3))],
        prop_oneof![Just(20_u32), Just(100_u32)],
        prop_oneof![Just("1"), Just("3"), Just("0.5"), Just("10")].prop_map(d),
        prop_oneof![4 => Just(PointsRounding::Down), 1 => Just(PointsRounding::HalfUp), 1 => Just(PointsRounding::HalfEven)],
        prop::bool::weighted(0.92),
        0_i64..(3 * 24 * 60),
        prop_oneof![1 => Just(0_i64), 3 => 1_000_000_i64..=100_000_000],
    )
        .prop_map(
            |(refund_policy, points_scale, pending, cap_percent, cashback, rounding, registered, start_offset_minutes, opening_cents)| {
                Setup {
                    refund_policy,
                    points_scale,
                    pending,
                    cap_percent,
                    cashback,
                    rounding,
                    registered,
                    start_offset_minutes,
                    opening_cents,
                }
            },
        )
}

fn line_strategy() -> impl Strategy<Value = LineSpec> {
    (
        prop_oneof![
            Just("1"),
            Just("0.5"),
            Just("1.25"),
            Just("2"),
            Just("3"),
            Just("0.75"),
            Just("1.5"),
            Just("0.125"),
            Just("2.345"),
            Just("10")
        ]
        .prop_map(d),
        prop_oneof![4 => 1_i64..=50_000, 3 => 50_000_i64..=1_000_000, 1 => 1_000_000_i64..=10_000_000, 1 => Just(0_i64)],
        prop_oneof![3 => Just(0_u32), 1 => 1_u32..=50],
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(quantity, unit_cents, discount_percent, excise, promo)| LineSpec {
            quantity,
            unit_cents,
            discount_percent,
            excise,
            promo,
        })
}

fn basket_strategy() -> impl Strategy<Value = Vec<LineSpec>> {
    prop::collection::vec(line_strategy(), 1..=5)
}

fn amount_strategy() -> impl Strategy<Value = Amount> {
    prop_oneof![
        3 => Just(Amount::OfMax(1000)),
        4 => (1_u32..1000).prop_map(Amount::OfMax),
        1 => (1001_u32..=1300).prop_map(Amount::OfMax),
        2 => (1_i64..=3000).prop_map(Amount::Fixed),
        1 => Just(Amount::TooFine),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (target_strategy(), basket_strategy(), prop::bool::weighted(0.7))
            .prop_map(|(receipt, lines, reuse)| Step::Accrue { receipt, lines, reuse }),
        4 => (
            target_strategy(),
            basket_strategy(),
            prop::bool::weighted(0.3),
            amount_strategy(),
            prop_oneof![8 => Just(0_u32), 2 => Just(60_u32), 2 => Just(1800_u32), 2 => Just(3600_u32), 1 => Just(3601_u32)],
        )
            .prop_map(|(receipt, lines, reuse, spend, ttl)| Step::Authorize { receipt, lines, reuse, spend, ttl }),
        4 => (
            target_strategy(),
            prop_oneof![Just(100_u32), 1_u32..=100],
            prop_oneof![
                4 => Just(CaptureMode::ById),
                3 => Just(CaptureMode::Implicit),
                1 => Just(CaptureMode::WrongId),
                1 => Just(CaptureMode::Over)
            ],
        )
            .prop_map(|(receipt, percent, mode)| Step::Capture { receipt, percent, mode }),
        3 => (target_strategy(), basket_strategy(), prop::bool::weighted(0.3), amount_strategy())
            .prop_map(|(receipt, lines, reuse, spend)| Step::Redeem { receipt, lines, reuse, spend }),
        5 => (
            target_strategy(),
            1_u8..32,
            prop::collection::vec(
                prop_oneof![3 => Just(Qty::Remaining), 4 => (1_u32..1000).prop_map(Qty::OfRemaining), 1 => Just(Qty::Over)],
                5
            ),
            0_u8..25,
        )
            .prop_map(|(receipt, mask, quantities, bogus)| Step::Refund { receipt, mask, quantities, bogus }),
        1 => target_strategy().prop_map(|receipt| Step::Reverse { receipt }),
        5 => prop_oneof![
            3 => (1_i64..=30).prop_map(Advance::Minutes),
            2 => (1_i64..=48).prop_map(Advance::Hours),
            2 => (1_i64..=60).prop_map(Advance::Days),
            2 => (1_u32..=24).prop_map(Advance::Months),
            1 => (0_i64..=70).prop_map(Advance::BeforeBucketExpiry),
            1 => (-1_i64..=1).prop_map(Advance::AroundHoldExpiry),
        ]
        .prop_map(Step::Advance),
    ]
}

fn steps_strategy() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step_strategy(), 1..=40)
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// The program, as `Checkout` borrows it.
struct Env {
    policy: ProgramPolicy,
    rules: CompiledRules,
    cashback: Decimal,
    limits: BasketLimits,
}

impl Env {
    fn new(setup: &Setup) -> Env {
        let mut policy = ProgramPolicy::with_defaults("p");
        policy.refund_policy = setup.refund_policy;
        policy.points_scale = setup.points_scale;
        policy.pending = setup.pending;
        policy.redeem_cap_percent = Decimal::from(setup.cap_percent);
        policy.rounding = setup.rounding;
        let rules = compile(&flat_cashback(setup.cashback), 1, policy.points_scale).expect("flat cashback compiles");
        Env { policy, rules, cashback: setup.cashback, limits: BasketLimits::default() }
    }

    fn checkout(&self) -> Checkout<'_> {
        Checkout { program: &self.policy, rules: &self.rules, limits: &self.limits }
    }

    fn unit(&self) -> Decimal {
        Decimal::new(1, self.policy.points_scale)
    }

    fn cap_of(&self, lines: &[BasketLine]) -> Decimal {
        self.policy.floor_points(basket_total(lines) * self.policy.redeem_cap_percent / Decimal::ONE_HUNDRED)
    }
}

/// How often each interesting thing happened, to show that the generator reaches it.
#[derive(Clone, Debug, Default)]
struct Stats {
    accrued: usize,
    earned_points: usize,
    holds: usize,
    captures: usize,
    direct_redeems: usize,
    refunds: usize,
    refunds_returning_spent: usize,
    refunds_with_debt: usize,
    full_refunds: usize,
    reverses: usize,
    reverses_after_spend: usize,
    reject_refusals: usize,
    expired_entries: usize,
    expired_on_return: usize,
    hold_expired: usize,
    debt_seen: usize,
    steps: usize,
    rejections: usize,
    /// "op CODE" -> count.
    rejection_codes: BTreeMap<String, usize>,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.accrued += other.accrued;
        self.earned_points += other.earned_points;
        self.holds += other.holds;
        self.captures += other.captures;
        self.direct_redeems += other.direct_redeems;
        self.refunds += other.refunds;
        self.refunds_returning_spent += other.refunds_returning_spent;
        self.refunds_with_debt += other.refunds_with_debt;
        self.full_refunds += other.full_refunds;
        self.reverses += other.reverses;
        self.reverses_after_spend += other.reverses_after_spend;
        self.reject_refusals += other.reject_refusals;
        self.expired_entries += other.expired_entries;
        self.expired_on_return += other.expired_on_return;
        self.hold_expired += other.hold_expired;
        self.debt_seen += other.debt_seen;
        self.steps += other.steps;
        self.rejections += other.rejections;
        for (code, count) in &other.rejection_codes {
            *self.rejection_codes.entry(code.clone()).or_default() += count;
        }
    }
}

struct Model {
    now: DateTime<Utc>,
    account: AccountState,
    receipts: BTreeMap<String, ReceiptState>,
    /// The first basket each receipt authorized or redeemed on, reused by later steps.
    baskets: BTreeMap<String, Vec<BasketLine>>,
    /// Every ledger entry ever written, in order.
    ledger: Vec<LedgerEntry>,
    /// The changes by expiry day of every commit's figures event, summed (and of points that
    /// never expire).
    expiry_changes: BTreeMap<chrono::NaiveDate, Decimal>,
    never_expiring: Decimal,
    next_id: u64,
    receipt_counter: u64,
    /// The receipt the current step picked, for the trace.
    picked: String,
    trace: Vec<String>,
    stats: Stats,
}

impl Model {
    fn new(setup: &Setup) -> Model {
        let now = start_time() + Duration::minutes(setup.start_offset_minutes);
        Model {
            now,
            account: AccountState::new("A1".into(), setup.registered, now),
            receipts: BTreeMap::new(),
            baskets: BTreeMap::new(),
            ledger: Vec::new(),
            expiry_changes: BTreeMap::new(),
            never_expiring: Decimal::ZERO,
            next_id: 0,
            receipt_counter: 0,
            picked: String::new(),
            trace: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn mint(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }
}

fn build_lines(specs: &[LineSpec]) -> Vec<BasketLine> {
    specs
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let unit_price = Decimal::new(spec.unit_cents, 2);
            let gross = unit_price * spec.quantity;
            let line_total = (gross * Decimal::from(100 - spec.discount_percent) / Decimal::ONE_HUNDRED)
                .round_dp_with_strategy(2, RoundingStrategy::ToZero);
            BasketLine {
                line_no: u32::try_from(index + 1).expect("few lines"),
                sku: format!("sku-{index}"),
                category: "grocery".into(),
                brand: String::new(),
                quantity: spec.quantity,
                unit_price,
                line_total,
                excise: spec.excise,
                promo_price: spec.promo,
            }
        })
        .collect()
}

/// What one operation did when it was applied.
struct Applied<T> {
    outcome: T,
    /// The ledger entries it appended.
    entries: Vec<LedgerEntry>,
}

/// Runs one operation the way the engine does; on success the new account, receipt and entries
/// replace the model's, on a rejection nothing changes.
fn apply<T>(
    env: &Env,
    model: &mut Model,
    receipt_id: &str,
    op: impl FnOnce(&Checkout<'_>, &mut Txn<'_>, &mut ReceiptState, String) -> Result<T, Rejection>,
) -> Result<Result<Applied<T>, Rejection>, TestCaseError> {
    let tx_id = model.mint("tx");
    let hold_id = model.mint("hold");
    let checkout = env.checkout();
    let mut txn = Txn::begin(&env.policy, &model.account, model.now, tx_id, origin());
    let mut receipt = model
        .receipts
        .get(receipt_id)
        .cloned()
        .unwrap_or_else(|| ReceiptState::new(receipt_id.to_owned(), model.account.account_id.clone(), model.now, origin()));
    match op(&checkout, &mut txn, &mut receipt, hold_id) {
        Ok(outcome) => {
            let finished = match txn.finish_all() {
                Ok(done) => done,
                Err(broken) => return Err(TestCaseError::fail(format!("Txn::finish refused a successful operation: {broken}"))),
            };
            for delta in finished.events.iter().filter_map(|event| event.figures.as_deref()) {
                for (day, points) in &delta.expiry.by_day {
                    *model.expiry_changes.entry(*day).or_default() += *points;
                }
                model.never_expiring += delta.expiry.never;
            }
            model.expiry_changes.retain(|_, points| !points.is_zero());
            let (account, entries) = (finished.account, finished.entries);
            if let Err(detail) = receipt.check_invariants() {
                return Err(TestCaseError::fail(format!("receipt invariants broken after a successful operation: {detail}")));
            }
            for entry in &entries {
                check!(entry.at == model.now, "entry {} stamped {} at {}", entry.seq, entry.at, model.now);
                if entry.kind == EntryKind::Expire {
                    model.stats.expired_entries += 1;
                }
            }
            model.account = account;
            model.ledger.extend(entries.iter().cloned());
            model.receipts.insert(receipt_id.to_owned(), receipt);
            Ok(Ok(Applied { outcome, entries }))
        }
        Err(rejection) => {
            model.stats.rejections += 1;
            Ok(Err(rejection))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Not accrued nor reversed (a new receipt is also a candidate).
    Open,
    /// With a live receipt hold.
    Held,
    /// Accrued and not reversed.
    Accrued,
    /// Any stored receipt not reversed yet.
    Stored,
}

fn pick(model: &mut Model, want: Want, target: Target) -> String {
    let mut candidates: Vec<String> = model
        .receipts
        .iter()
        .filter(|(_, receipt)| {
            target.stray
                || match want {
                    Want::Open => receipt.accrual.is_none() && !receipt.reversed,
                    Want::Held => receipt.hold.as_ref().is_some_and(|hold| hold.status == HoldStatus::Active) && !receipt.reversed,
                    Want::Accrued => receipt.accrual.is_some() && !receipt.reversed,
                    Want::Stored => !receipt.reversed,
                }
        })
        .map(|(receipt_id, _)| receipt_id.clone())
        .collect();
    // Receipts that spent or hold points first: they make the most interesting refunds.
    candidates.sort_by_key(|receipt_id| {
        let receipt = &model.receipts[receipt_id];
        (receipt.spent.is_zero() && receipt.hold.is_none(), receipt_id.clone())
    });
    let slots = candidates.len() + usize::from(want == Want::Open || target.stray || candidates.is_empty());
    let picked = match candidates.get(target.selector % slots) {
        Some(receipt_id) => receipt_id.clone(),
        None => {
            model.receipt_counter += 1;
            format!("R{}", model.receipt_counter)
        }
    };
    model.picked.clone_from(&picked);
    picked
}

fn resolve_amount(env: &Env, amount: &Amount, max: Decimal) -> Decimal {
    let unit = env.unit();
    match amount {
        Amount::OfMax(permille) => env.policy.floor_points(max * Decimal::from(*permille) / Decimal::from(1000)).max(unit),
        Amount::Fixed(points) => Decimal::from(*points),
        Amount::TooFine => d("12.345"),
    }
}

/// Non-Expire entries appended for `receipt_id`, summed by kind: (earn, spend, return, clawback).
fn sums_by_kind<'a>(entries: impl Iterator<Item = &'a LedgerEntry>, receipt_id: &str) -> (Decimal, Decimal, Decimal, Decimal) {
    let mut sums = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for entry in entries.filter(|entry| entry.receipt_id.as_deref() == Some(receipt_id)) {
        match entry.kind {
            EntryKind::Earn => sums.0 += entry.amount,
            EntryKind::Spend => sums.1 += entry.amount,
            EntryKind::ReturnSpent => sums.2 += entry.amount,
            EntryKind::Clawback => sums.3 += entry.amount,
            EntryKind::Expire | EntryKind::Bonus | EntryKind::Adjustment | EntryKind::Merge | EntryKind::Opening => {}
        }
    }
    sums
}

/// Spent points given back into a bucket that has already expired expire again at once: the
/// operation that returns them writes Expire entries (tagged with the bucket's earning receipt)
/// for exactly the returned amount that went into expired buckets. Which slices a return fills is
/// documented on `Txn::return_spent`: latest-expiring first, after what earlier returns gave back.
/// Expired points never pay off debt: that would turn expired points into value.
fn check_expired_returns(
    before: &ReceiptState,
    debt_before: Decimal,
    returned: Decimal,
    entries: &[LedgerEntry],
    now: DateTime<Utc>,
    stats: &mut Stats,
) -> Result<(), TestCaseError> {
    let mut order: Vec<_> = before.spent_slices.iter().collect();
    order.sort_by_key(|slice| std::cmp::Reverse((slice.expires_at, slice.bucket_id)));
    let mut skip = before.spent_returned;
    let mut left = returned;
    let mut into_expired = Decimal::ZERO;
    for slice in order {
        let unreturned = slice.amount - skip.min(slice.amount);
        skip -= skip.min(slice.amount);
        let give = unreturned.min(left);
        left -= give;
        if slice.expires_at <= now {
            into_expired += give;
        }
    }
    let Some(returned_at) = entries.iter().position(|entry| entry.kind == EntryKind::ReturnSpent) else {
        check!(returned.is_zero(), "returned {returned} without a ReturnSpent entry");
        return Ok(());
    };
    let expired_after: Decimal =
        entries[returned_at..].iter().filter(|entry| entry.kind == EntryKind::Expire).map(|entry| -entry.amount).sum();
    if into_expired > Decimal::ZERO {
        stats.expired_on_return += 1;
    }
    check!(
        expired_after == into_expired,
        "{returned} spent points returned, {into_expired} of them into buckets expired by {now}, but {expired_after} expired again \
         (debt before: {debt_before}; entries {entries:#?})"
    );
    Ok(())
}

fn rejection_kind_ok(stats: &mut Stats, allowed: &[&str], rejection: &Rejection, what: &str) -> Result<(), TestCaseError> {
    *stats.rejection_codes.entry(format!("{what} {}", rejection.code())).or_default() += 1;
    check!(allowed.contains(&rejection.code()), "{what}: unexpected rejection {} ({rejection})", rejection.code());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------------------------

fn step_accrue(env: &Env, model: &mut Model, receipt: Target, specs: &[LineSpec], reuse: bool) -> Result<String, TestCaseError> {
    let receipt_id = pick(model, Want::Open, receipt);
    let lines = match model.baskets.get(&receipt_id) {
        Some(known) if reuse => known.clone(),
        _ => build_lines(specs),
    };
    let spent = model.receipts.get(&receipt_id).map_or(Decimal::ZERO, |state| state.spent);
    let now = model.now;
    let cmd = AccrueCmd {
        occurred_at: None,
        receipt_id: receipt_id.clone(),
        lines: lines.clone(),
        sale: SaleContext::default(),
        change: Decimal::ZERO,
    };
    match apply(env, model, &receipt_id, |ck, txn, rc, _| ops::accrue(ck, txn, rc, &cmd))? {
        Ok(applied) => {
            check!(
                applied.outcome.balance == model.account.balance_at(model.now),
                "the answer's balance {:?} is not the account's {:?}",
                applied.outcome.balance,
                model.account.balance_at(model.now)
            );
            let out = &applied.outcome;
            model.stats.accrued += 1;
            // Property 5: earn is never negative and within the rate on the eligible lines.
            check!(out.earned >= Decimal::ZERO, "negative earn {}", out.earned);
            check!(out.lines.iter().all(|line| line.points >= Decimal::ZERO), "negative line earn {:?}", out.lines);
            let line_sum: Decimal = out.lines.iter().map(|line| line.points).sum();
            check!(line_sum == out.earned, "line points {line_sum} != earned {}", out.earned);
            for (line, earned) in lines.iter().zip(&out.lines) {
                check!(
                    !(line.excise || line.promo_price) || earned.points.is_zero(),
                    "excluded line {} earned {}",
                    line.line_no,
                    earned.points
                );
            }
            let eligible: Decimal = lines.iter().filter(|line| !line.excise && !line.promo_price).map(|line| line.line_total).sum();
            let rate = env.cashback / Decimal::ONE_HUNDRED;
            let high = eligible * rate;
            let low = (eligible - spent).max(Decimal::ZERO) * rate;
            let half = env.unit() / Decimal::TWO;
            if env.policy.rounding == PointsRounding::Down {
                check!(out.earned <= env.policy.floor_points(high), "earned {} above floor({high})", out.earned);
                check!(out.earned >= env.policy.floor_points(low), "earned {} below floor({low}) (spent {spent})", out.earned);
            } else {
                check!(out.earned <= high + half, "earned {} above {high} + rounding", out.earned);
                check!(out.earned >= low - half, "earned {} below {low} - rounding", out.earned);
            }
            check!(out.points_spent == spent, "accrue reports {} spent, receipt had {spent}", out.points_spent);
            let earns: Vec<&LedgerEntry> = applied.entries.iter().filter(|entry| entry.kind == EntryKind::Earn).collect();
            if out.earned.is_zero() {
                check!(earns.is_empty(), "zero earn wrote entries {earns:?}");
            } else {
                model.stats.earned_points += 1;
                check!(earns.len() == 1, "accrue wrote {} earn entries", earns.len());
                let entry = earns[0];
                check!(entry.amount == out.earned, "earn entry {} != earned {}", entry.amount, out.earned);
                check!(entry.receipt_id.as_deref() == Some(receipt_id.as_str()), "earn entry tagged {:?}", entry.receipt_id);
                check!(entry.available_from == Some(env.policy.available_from(now)), "earn available_from {:?}", entry.available_from);
                check!(entry.expires_at == Some(env.policy.expires_at(now)), "earn expires_at {:?}", entry.expires_at);
            }
            Ok(format!("ok earned {} (total {}, eligible {eligible}, spent {spent})", out.earned, basket_total(&lines)))
        }
        Err(rejection) => {
            rejection_kind_ok(&mut model.stats, &["RECEIPT_CLOSED", "RECEIPT_REVERSED", "INVALID_ARGUMENT"], &rejection, "accrue")?;
            if rejection.code() == "INVALID_ARGUMENT" {
                check!(spent > basket_total(&lines), "accrue refused a valid basket: {rejection}");
            }
            Ok(format!("rejected {}: {rejection}", rejection.code()))
        }
    }
}

fn step_authorize(
    env: &Env,
    model: &mut Model,
    receipt: Target,
    specs: &[LineSpec],
    reuse: bool,
    spend: &Amount,
    ttl: u32,
) -> Result<String, TestCaseError> {
    let receipt_id = pick(model, Want::Open, receipt);
    let lines = match model.baskets.get(&receipt_id) {
        Some(known) if reuse => known.clone(),
        _ => build_lines(specs),
    };
    let now = model.now;
    let quote_cmd = AuthorizeCmd {
        presence: Default::default(),
        receipt_id: receipt_id.clone(),
        lines: lines.clone(),
        spend: Decimal::ZERO,
        hold_ttl_seconds: ttl,
        sale: SaleContext::default(),
    };
    let quote = ops::quote(&env.checkout(), &model.account, &quote_cmd, now, &Origin::default());
    let max_spend = quote.as_ref().map_or(Decimal::ZERO, |quote| quote.spend.max);
    let points = resolve_amount(env, spend, max_spend);
    if points <= Decimal::ZERO {
        return Ok("skipped: no points".into());
    }
    let ttl_effective = if ttl == 0 { env.policy.hold_ttl_seconds } else { ttl };
    let holdable = model.account.holdable_at(now, now + Duration::seconds(i64::from(ttl_effective)));
    let spendable = model.account.balance_at(now).spendable;
    let cap = env.cap_of(&lines);
    let cmd = AuthorizeCmd { spend: points, ..quote_cmd };
    match apply(env, model, &receipt_id, |ck, txn, rc, hold_id| ops::authorize(ck, txn, rc, &cmd, hold_id))? {
        Ok(applied) => {
            check!(
                applied.outcome.balance == model.account.balance_at(model.now),
                "the answer's balance {:?} is not the account's {:?}",
                applied.outcome.balance,
                model.account.balance_at(model.now)
            );
            model.stats.holds += 1;
            let hold = applied.outcome.hold.clone();
            check!(hold.as_ref().is_some_and(|hold| hold.amount == points), "authorize answered hold {hold:?} for {points}");
            // Property 5: a hold never exceeds the quote, the receipt cap or the holdable points.
            check!(quote.is_ok(), "authorize succeeded where the quote failed");
            check!(points <= max_spend, "held {points} above the quoted max {max_spend}");
            check!(points <= cap, "held {points} above the cap {cap}");
            check!(points <= holdable && points <= spendable, "held {points}, holdable {holdable}, spendable {spendable}");
            check!(model.account.registered, "an unregistered account placed a hold");
            check!(applied.entries.iter().all(|entry| entry.kind == EntryKind::Expire), "a hold wrote entries {:?}", applied.entries);
            model.baskets.entry(receipt_id).or_insert(lines);
            Ok(format!("ok hold {points} (max {max_spend}, cap {cap}, ttl {ttl_effective}s)"))
        }
        Err(rejection) => {
            rejection_kind_ok(
                &mut model.stats,
                &[
                    "RECEIPT_CLOSED",
                    "RECEIPT_REVERSED",
                    "INVALID_ARGUMENT",
                    "IDEMPOTENCY_CONFLICT",
                    "INSUFFICIENT_POINTS",
                    "EXCEEDS_RECEIPT_CAP",
                    "CARD_NOT_REGISTERED",
                ],
                &rejection,
                "authorize",
            )?;
            if matches!(rejection.code(), "INSUFFICIENT_POINTS" | "EXCEEDS_RECEIPT_CAP" | "CARD_NOT_REGISTERED") {
                check!(points > max_spend, "authorize of {points} refused ({rejection}) although the quote allowed {max_spend}");
            }
            Ok(format!("rejected {points}: {} {rejection}", rejection.code()))
        }
    }
}

fn step_capture(env: &Env, model: &mut Model, receipt: Target, percent: u32, mode: CaptureMode) -> Result<String, TestCaseError> {
    let receipt_id = pick(model, Want::Held, receipt);
    let now = model.now;
    let state = model.receipts.get(&receipt_id).cloned();
    let hold = state.as_ref().and_then(|state| state.hold.clone());
    let unit = env.unit();
    let held = hold.as_ref().map_or(unit, |hold| hold.amount);
    let mut points = env.policy.floor_points(held * Decimal::from(percent) / Decimal::ONE_HUNDRED).max(unit);
    if matches!(mode, CaptureMode::Over) {
        points = held + unit;
    }
    let hold_id = match (mode, &hold) {
        (CaptureMode::Implicit, _) => None,
        (CaptureMode::WrongId, _) | (_, None) => Some("no-such-hold".to_owned()),
        (_, Some(hold)) => Some(hold.hold_id.clone()),
    };
    let spendable = model.account.balance_at(now).spendable;
    let cmd = RedeemCmd { receipt_id: receipt_id.clone(), points, hold_id, lines: Vec::new(), presence: Default::default() };
    let auth_cap = model.baskets.get(&receipt_id).map(|lines| env.cap_of(lines));
    match apply(env, model, &receipt_id, |ck, txn, rc, _| ops::redeem(ck, txn, rc, &cmd))? {
        Ok(applied) => {
            check!(
                applied.outcome.balance == model.account.balance_at(model.now),
                "the answer's balance {:?} is not the account's {:?}",
                applied.outcome.balance,
                model.account.balance_at(model.now)
            );
            model.stats.captures += 1;
            let Some(hold) = hold else {
                return Err(TestCaseError::fail("a capture succeeded on a receipt without a hold"));
            };
            check!(hold.status == HoldStatus::Active && now < hold.expires_at, "captured a hold {hold:?} at {now}");
            check!(points <= hold.amount, "captured {points} of a {} hold", hold.amount);
            check!(
                applied.outcome.released == hold.amount - points,
                "released {} of {} after capturing {points}",
                applied.outcome.released,
                hold.amount
            );
            // Property 5: within the cap of the authorized basket and the spendable (+ own hold).
            if let Some(cap) = auth_cap {
                check!(points <= cap, "captured {points} above the authorized basket's cap {cap}");
            }
            check!(points <= spendable + hold.amount, "captured {points}, spendable {spendable} + own hold {}", hold.amount);
            let spends: Decimal = applied.entries.iter().filter(|entry| entry.kind == EntryKind::Spend).map(|entry| entry.amount).sum();
            check!(spends == -points, "capture of {points} wrote spends of {spends}");
            Ok(format!("ok captured {points} of {}", hold.amount))
        }
        Err(rejection) => {
            // A live hold is always capturable: never INSUFFICIENT_POINTS.
            rejection_kind_ok(
                &mut model.stats,
                &[
                    "HOLD_NOT_FOUND",
                    "HOLD_EXPIRED",
                    "HOLD_CLOSED",
                    "CAPTURE_EXCEEDS_HOLD",
                    "RECEIPT_CLOSED",
                    "RECEIPT_REVERSED",
                    "IDEMPOTENCY_CONFLICT",
                    "INVALID_ARGUMENT",
                ],
                &rejection,
                "capture",
            )?;
            if rejection.code() == "HOLD_EXPIRED" {
                model.stats.hold_expired += 1;
            }
            Ok(format!("rejected capture of {points}: {} {rejection}", rejection.code()))
        }
    }
}

fn step_redeem(
    env: &Env,
    model: &mut Model,
    receipt: Target,
    specs: &[LineSpec],
    reuse: bool,
    spend: &Amount,
) -> Result<String, TestCaseError> {
    let receipt_id = pick(model, Want::Open, receipt);
    let lines = match model.baskets.get(&receipt_id) {
        Some(known) if reuse => known.clone(),
        _ => build_lines(specs),
    };
    let now = model.now;
    let state = model.receipts.get(&receipt_id).cloned();
    // Without a hold ID the receipt's live hold is captured instead (and the lines are ignored).
    let captures =
        state.as_ref().and_then(|state| state.hold.as_ref()).is_some_and(|hold| hold.status == HoldStatus::Active && now < hold.expires_at);
    let own_hold = state.as_ref().and_then(|state| state.hold.as_ref()).map_or(Decimal::ZERO, |hold| hold.amount);
    let spendable = model.account.balance_at(now).spendable;
    let cap = env.cap_of(&lines);
    let max = if model.account.registered { cap.min(env.policy.floor_points(spendable)) } else { Decimal::ZERO };
    let points = resolve_amount(env, spend, max);
    let cmd = RedeemCmd { receipt_id: receipt_id.clone(), points, hold_id: None, lines: lines.clone(), presence: Default::default() };
    match apply(env, model, &receipt_id, |ck, txn, rc, _| ops::redeem(ck, txn, rc, &cmd))? {
        Ok(applied) => {
            check!(
                applied.outcome.balance == model.account.balance_at(model.now),
                "the answer's balance {:?} is not the account's {:?}",
                applied.outcome.balance,
                model.account.balance_at(model.now)
            );
            let spends: Decimal = applied.entries.iter().filter(|entry| entry.kind == EntryKind::Spend).map(|entry| entry.amount).sum();
            check!(spends == -points, "redeem of {points} wrote spends of {spends}");
            check!(model.account.registered, "an unregistered account spent");
            if captures {
                model.stats.captures += 1;
                check!(points <= own_hold, "implicit capture of {points} above the hold {own_hold}");
                Ok(format!("ok captured (implicitly) {points}"))
            } else {
                model.stats.direct_redeems += 1;
                // Property 5.
                check!(points <= cap, "redeemed {points} above the cap {cap} of a {} basket", basket_total(&lines));
                check!(points <= spendable, "redeemed {points} above the spendable {spendable}");
                model.baskets.entry(receipt_id).or_insert(lines);
                Ok(format!("ok redeemed {points} (cap {cap}, spendable {spendable})"))
            }
        }
        Err(rejection) => {
            rejection_kind_ok(
                &mut model.stats,
                &[
                    "RECEIPT_CLOSED",
                    "RECEIPT_REVERSED",
                    "INVALID_ARGUMENT",
                    "IDEMPOTENCY_CONFLICT",
                    "INSUFFICIENT_POINTS",
                    "EXCEEDS_RECEIPT_CAP",
                    "CARD_NOT_REGISTERED",
                    "CAPTURE_EXCEEDS_HOLD",
                    "HOLD_EXPIRED",
                    "HOLD_CLOSED",
                ],
                &rejection,
                "redeem",
            )?;
            if !captures && matches!(rejection.code(), "INSUFFICIENT_POINTS" | "EXCEEDS_RECEIPT_CAP" | "CARD_NOT_REGISTERED") {
                check!(points > max, "redeem of {points} refused ({rejection}) within the limit {max}");
            }
            if captures {
                check!(rejection.code() != "INSUFFICIENT_POINTS", "a live hold could not be captured: {rejection}");
            }
            Ok(format!("rejected redeem of {points}: {} {rejection}", rejection.code()))
        }
    }
}

fn step_refund(env: &Env, model: &mut Model, receipt: Target, mask: u8, quantities: &[Qty], bogus: u8) -> Result<String, TestCaseError> {
    let receipt_id = pick(model, Want::Accrued, receipt);
    // The engine answers RECEIPT_NOT_FOUND for a receipt it never stored.
    let Some(state) = model.receipts.get(&receipt_id).cloned() else {
        return Ok("skipped: unknown receipt".into());
    };
    let closed: Vec<(u32, Decimal, Decimal)> = state.accrual.as_ref().map_or_else(
        || vec![(1, Decimal::ONE, Decimal::ZERO)],
        |accrual| accrual.lines.iter().map(|line| (line.line_no, line.quantity, line.returned)).collect(),
    );
    let mut lines = Vec::new();
    // The mask picks lines; one that picks none of the receipt's lines picks one by its value.
    let fallback = usize::from(mask) % closed.len();
    let picks = |index: usize| index < 5 && mask & (1 << index) != 0;
    let none_picked = !(0..closed.len()).any(picks);
    for (index, (line_no, quantity, returned)) in closed.iter().enumerate() {
        if !(picks(index) || (none_picked && index == fallback)) {
            continue;
        }
        let remaining = *quantity - *returned;
        let step = Decimal::new(1, 3);
        let quantity = match quantities[index] {
            Qty::Remaining => remaining,
            Qty::OfRemaining(permille) => {
                (remaining * Decimal::from(permille) / Decimal::from(1000)).round_dp_with_strategy(3, RoundingStrategy::ToZero).max(step)
            }
            Qty::Over => remaining + d("0.25"),
        };
        lines.push(RefundLine { line_no: *line_no, quantity });
    }
    match bogus {
        0 => {
            if let Some(first) = lines.first().cloned() {
                lines.push(first);
            }
        }
        1 => lines.push(RefundLine { line_no: 99, quantity: Decimal::ONE }),
        2 => lines.iter_mut().for_each(|line| line.quantity = Decimal::ZERO),
        _ => {}
    }
    let refund_id = model.mint("refund");
    let debt_before = model.account.debt;
    let cmd = RefundCmd {
        occurred_at: None,
        receipt_id: receipt_id.clone(),
        refund_id: refund_id.clone(),
        lines: lines.clone(),
        reason: String::new(),
    };
    match apply(env, model, &receipt_id, |ck, txn, rc, _| ops::refund(ck, txn, rc, &cmd))? {
        Ok(applied) => {
            check!(
                applied.outcome.balance == model.account.balance_at(model.now),
                "the answer's balance {:?} is not the account's {:?}",
                applied.outcome.balance,
                model.account.balance_at(model.now)
            );
            let out = &applied.outcome;
            model.stats.refunds += 1;
            check!(out.earn_clawed_back >= Decimal::ZERO && out.spent_returned >= Decimal::ZERO, "refund answered {out:?}");
            check!(out.debt_created >= Decimal::ZERO, "negative debt created {}", out.debt_created);
            if env.policy.refund_policy == RefundPolicy::Reject {
                check!(out.debt_created.is_zero(), "debt {} created under the reject policy", out.debt_created);
            }
            if out.spent_returned > Decimal::ZERO {
                model.stats.refunds_returning_spent += 1;
            }
            if out.debt_created > Decimal::ZERO {
                model.stats.refunds_with_debt += 1;
            }
            let (_, _, returned, clawed) = sums_by_kind(applied.entries.iter(), &receipt_id);
            check!(returned == out.spent_returned, "return entries {returned} != answered {}", out.spent_returned);
            check!(clawed == -out.earn_clawed_back, "clawback entries {clawed} != answered {}", out.earn_clawed_back);
            for entry in applied.entries.iter().filter(|entry| entry.kind != EntryKind::Expire) {
                check!(entry.refund_id.as_deref() == Some(refund_id.as_str()), "refund entry {} tagged {:?}", entry.seq, entry.refund_id);
            }
            check_expired_returns(&state, debt_before, out.spent_returned, &applied.entries, model.now, &mut model.stats)?;
            let after = model.receipts.get(&receipt_id).cloned().ok_or_else(|| TestCaseError::fail("refunded receipt vanished"))?;
            let accrual = after.accrual.as_ref().ok_or_else(|| TestCaseError::fail("refund without an accrual"))?;
            // Proportionality: never more than the exact share of the returned quantities.
            let exact_claw: Decimal = accrual.lines.iter().map(|line| line.points * line.returned / line.quantity).sum();
            check!(after.earn_clawed <= exact_claw, "clawed {} above the exact share {exact_claw}", after.earn_clawed);
            let lines_count = Decimal::from(accrual.lines.len());
            check!(
                after.earn_clawed >= exact_claw - lines_count * env.unit(),
                "clawed {} far below the exact share {exact_claw}",
                after.earn_clawed
            );
            if !accrual.total.is_zero() {
                let exact_back = after.spent * after.money_returned / accrual.total;
                check!(after.spent_returned <= exact_back, "returned {} spent above the exact share {exact_back}", after.spent_returned);
            }
            if accrual.lines.iter().all(|line| line.returned == line.quantity) {
                model.stats.full_refunds += 1;
            }
            Ok(format!(
                "ok {refund_id} {:?}: clawed {}, returned {}, debt {}",
                lines.iter().map(|line| (line.line_no, line.quantity)).collect::<Vec<_>>(),
                out.earn_clawed_back,
                out.spent_returned,
                out.debt_created
            ))
        }
        Err(rejection) => {
            let mut allowed = vec!["RECEIPT_REVERSED", "RECEIPT_NOT_CLOSED", "INVALID_ARGUMENT", "REFUND_EXCEEDS_RECEIPT"];
            if env.policy.refund_policy == RefundPolicy::Reject {
                allowed.push("CLAWBACK_EXCEEDS_BALANCE");
            }
            rejection_kind_ok(&mut model.stats, &allowed, &rejection, "refund")?;
            if rejection.code() == "CLAWBACK_EXCEEDS_BALANCE" {
                model.stats.reject_refusals += 1;
            }
            Ok(format!(
                "rejected refund {:?}: {} {rejection}",
                lines.iter().map(|line| (line.line_no, line.quantity)).collect::<Vec<_>>(),
                rejection.code()
            ))
        }
    }
}

fn step_reverse(env: &Env, model: &mut Model, receipt: Target) -> Result<String, TestCaseError> {
    let receipt_id = pick(model, Want::Stored, receipt);
    let Some(state) = model.receipts.get(&receipt_id).cloned() else {
        return Ok("skipped: unknown receipt".into());
    };
    let cmd = ReverseCmd { receipt_id: receipt_id.clone(), reason: String::new() };
    let debt_before = model.account.debt;
    match apply(env, model, &receipt_id, |ck, txn, rc, _| ops::reverse(ck, txn, rc, &cmd))? {
        Ok(applied) => {
            check!(
                applied.outcome.balance == model.account.balance_at(model.now),
                "the answer's balance {:?} is not the account's {:?}",
                applied.outcome.balance,
                model.account.balance_at(model.now)
            );
            let out = &applied.outcome;
            model.stats.reverses += 1;
            if state.spent > Decimal::ZERO {
                model.stats.reverses_after_spend += 1;
            }
            check!(!state.reversed, "reversed twice");
            check!(
                out.spent_returned == state.spent - state.spent_returned,
                "reverse returned {} of {} - {}",
                out.spent_returned,
                state.spent,
                state.spent_returned
            );
            let earned = state.accrual.as_ref().map_or(Decimal::ZERO, |accrual| accrual.earned);
            check!(
                out.earn_clawed_back == earned - state.earn_clawed,
                "reverse clawed {} of {earned} - {}",
                out.earn_clawed_back,
                state.earn_clawed
            );
            if env.policy.refund_policy == RefundPolicy::Reject {
                check!(out.debt_created.is_zero(), "debt {} created under the reject policy", out.debt_created);
            }
            check_expired_returns(&state, debt_before, out.spent_returned, &applied.entries, model.now, &mut model.stats)?;
            Ok(format!(
                "ok reversed: clawed {}, returned {}, released {}, debt {}",
                out.earn_clawed_back, out.spent_returned, out.hold_released, out.debt_created
            ))
        }
        Err(rejection) => {
            let mut allowed = vec!["RECEIPT_REVERSED"];
            if env.policy.refund_policy == RefundPolicy::Reject {
                allowed.push("CLAWBACK_EXCEEDS_BALANCE");
            }
            rejection_kind_ok(&mut model.stats, &allowed, &rejection, "reverse")?;
            if rejection.code() == "CLAWBACK_EXCEEDS_BALANCE" {
                model.stats.reject_refusals += 1;
            }
            Ok(format!("rejected reverse: {} {rejection}", rejection.code()))
        }
    }
}

/// Moves the clock, checking the balances at every instant in between where they could change.
fn step_advance(env: &Env, model: &mut Model, advance: Advance) -> Result<String, TestCaseError> {
    let from = model.now;
    let to = match advance {
        Advance::Minutes(minutes) => from + Duration::minutes(minutes),
        Advance::Hours(hours) => from + Duration::hours(hours),
        Advance::Days(days) => from + Duration::days(days),
        Advance::Months(months) => from.checked_add_months(Months::new(months)).expect("a date far from the end of time"),
        Advance::BeforeBucketExpiry(minutes) => {
            let next = model.account.buckets.iter().map(|bucket| bucket.expires_at).filter(|at| *at > from).min();
            next.map_or(from, |at| at - Duration::minutes(minutes)).max(from)
        }
        Advance::AroundHoldExpiry(seconds) => {
            let next = model.account.holds.iter().map(|hold| hold.expires_at).filter(|at| *at > from).min();
            next.map_or(from, |at| at + Duration::seconds(seconds)).max(from)
        }
    };
    let mut instants: Vec<DateTime<Utc>> = model
        .account
        .buckets
        .iter()
        .flat_map(|bucket| [bucket.available_from, bucket.expires_at])
        .chain(model.account.holds.iter().map(|hold| hold.expires_at))
        .filter(|at| *at > from && *at < to)
        .collect();
    instants.push(to);
    instants.sort();
    instants.dedup();
    for at in instants {
        check_balances(env, model, at)?;
    }
    model.now = to;
    Ok(format!("now {to}"))
}

// ---------------------------------------------------------------------------------------------
// Checks after every step
// ---------------------------------------------------------------------------------------------

/// Property 1: the ledger.
fn check_ledger(model: &Model) -> Result<(), TestCaseError> {
    let mut running = Decimal::ZERO;
    for (index, entry) in model.ledger.iter().enumerate() {
        check!(entry.seq == u64::try_from(index + 1).expect("small ledger"), "entry #{index} has seq {}", entry.seq);
        running += entry.amount;
        check!(entry.balance_after == running, "entry {} balance_after {} != running sum {running}", entry.seq, entry.balance_after);
        let sign_ok = match entry.kind {
            EntryKind::Earn | EntryKind::ReturnSpent | EntryKind::Bonus | EntryKind::Opening => entry.amount > Decimal::ZERO,
            EntryKind::Adjustment | EntryKind::Merge => !entry.amount.is_zero(),
            EntryKind::Spend | EntryKind::Clawback | EntryKind::Expire => entry.amount < Decimal::ZERO,
        };
        check!(sign_ok, "entry {} {:?} of {}", entry.seq, entry.kind, entry.amount);
    }
    check!(
        model.account.ledger_seq == u64::try_from(model.ledger.len()).expect("small ledger"),
        "ledger_seq {} with {} entries",
        model.account.ledger_seq,
        model.ledger.len()
    );
    check!(running == model.account.ledger_sum, "ledger sums to {running}, account.ledger_sum {}", model.account.ledger_sum);
    check!(running == model.account.booked_balance(), "ledger sums to {running}, booked balance {}", model.account.booked_balance());
    let expired: Decimal = model.ledger.iter().filter(|entry| entry.kind == EntryKind::Expire).map(|entry| -entry.amount).sum();
    let earned: Decimal = model.ledger.iter().filter(|entry| entry.kind == EntryKind::Earn).map(|entry| entry.amount).sum();
    check!(expired <= earned, "expired {expired} of {earned} ever earned");
    Ok(())
}

/// Properties 2 and 3 at one instant.
fn check_balances(env: &Env, model: &Model, at: DateTime<Utc>) -> Result<(), TestCaseError> {
    let account = &model.account;
    let view = account.balance_at(at);
    check!(view.held <= view.available, "at {at}: held {} > available {} ({:?})", view.held, view.available, account);
    check!(view.spendable == view.available - view.held, "at {at}: spendable {} != {} - {}", view.spendable, view.available, view.held);
    check!(view.spendable >= Decimal::ZERO, "at {at}: spendable {}", view.spendable);
    check!(view.available >= Decimal::ZERO && view.pending >= Decimal::ZERO, "at {at}: {view:?}");
    let unsettled: Decimal = account.buckets.iter().filter(|bucket| bucket.is_expired(at)).map(|bucket| bucket.remaining).sum();
    check!(
        view.balance == account.ledger_sum - unsettled,
        "at {at}: balance {} != ledger {} - expired unsettled {unsettled}",
        view.balance,
        account.ledger_sum
    );
    check!(account.debt >= Decimal::ZERO, "negative debt {}", account.debt);
    if env.policy.refund_policy == RefundPolicy::Reject {
        check!(account.debt.is_zero(), "debt {} under the reject policy", account.debt);
    }
    check!(account.buckets.iter().all(|bucket| bucket.remaining > Decimal::ZERO), "empty or negative bucket in {:?}", account.buckets);
    check!(account.holds.iter().all(|hold| hold.amount > Decimal::ZERO), "empty hold in {:?}", account.holds);
    if let Err(detail) = account.check_invariants(at) {
        return Err(TestCaseError::fail(format!("at {at}: AccountState::check_invariants: {detail}")));
    }
    Ok(())
}

/// Property 4: every receipt against the ledger.
fn check_receipts(model: &Model) -> Result<(), TestCaseError> {
    for (receipt_id, receipt) in &model.receipts {
        if let Err(detail) = receipt.check_invariants() {
            return Err(TestCaseError::fail(detail));
        }
        check!(
            receipt.spent_returned >= Decimal::ZERO && receipt.spent_returned <= receipt.spent,
            "{receipt_id}: returned {} of {}",
            receipt.spent_returned,
            receipt.spent
        );
        let sliced: Decimal = receipt.spent_slices.iter().map(|slice| slice.amount).sum();
        check!(sliced == receipt.spent, "{receipt_id}: slices {sliced} != spent {}", receipt.spent);
        let earned = receipt.accrual.as_ref().map_or(Decimal::ZERO, |accrual| accrual.earned);
        check!(
            receipt.earn_clawed >= Decimal::ZERO && receipt.earn_clawed <= earned,
            "{receipt_id}: clawed {} of {earned}",
            receipt.earn_clawed
        );
        let mut fully_refunded = false;
        if let Some(accrual) = &receipt.accrual {
            for line in &accrual.lines {
                check!(
                    line.returned >= Decimal::ZERO && line.returned <= line.quantity,
                    "{receipt_id} line {}: returned {} of {}",
                    line.line_no,
                    line.returned,
                    line.quantity
                );
                check!(line.points >= Decimal::ZERO, "{receipt_id} line {} earned {}", line.line_no, line.points);
            }
            let line_points: Decimal = accrual.lines.iter().map(|line| line.points).sum();
            check!(line_points == accrual.earned, "{receipt_id}: line points {line_points} != earned {}", accrual.earned);
            check!(receipt.money_returned <= accrual.total, "{receipt_id}: money returned {} of {}", receipt.money_returned, accrual.total);
            fully_refunded = accrual.lines.iter().all(|line| line.returned == line.quantity);
            if fully_refunded {
                check!(
                    receipt.money_returned == accrual.total,
                    "{receipt_id} fully refunded {} of {}",
                    receipt.money_returned,
                    accrual.total
                );
            }
        }
        let (earn, spend, returned, clawed) = sums_by_kind(model.ledger.iter(), receipt_id);
        check!(earn == earned, "{receipt_id}: earn entries {earn} != earned {earned}");
        check!(spend == -receipt.spent, "{receipt_id}: spend entries {spend} != spent {}", receipt.spent);
        check!(returned == receipt.spent_returned, "{receipt_id}: return entries {returned} != spent_returned {}", receipt.spent_returned);
        check!(clawed == -receipt.earn_clawed, "{receipt_id}: clawback entries {clawed} != earn_clawed {}", receipt.earn_clawed);
        let net = earn + spend + returned + clawed;
        if receipt.reversed || fully_refunded {
            check!(
                receipt.spent_returned == receipt.spent,
                "{receipt_id} closed out: returned {} of {}",
                receipt.spent_returned,
                receipt.spent
            );
            check!(receipt.earn_clawed == earned, "{receipt_id} closed out: clawed {} of {earned}", receipt.earn_clawed);
            check!(
                net.is_zero(),
                "{receipt_id} closed out (reversed {}, fully refunded {fully_refunded}) but its non-expire entries sum to {net}",
                receipt.reversed
            );
        }
        let expired: Decimal = model
            .ledger
            .iter()
            .filter(|entry| entry.kind == EntryKind::Expire && entry.receipt_id.as_deref() == Some(receipt_id.as_str()))
            .map(|entry| -entry.amount)
            .sum();
        check!(expired <= earn, "{receipt_id}: its buckets expired {expired} of {earn} earned");
    }
    // A tagged Expire entry names a receipt that earned. (A bucket that merged one day's earnings
    // from several receipts carries no tag, and neither do its Expire entries.)
    for entry in model.ledger.iter().filter(|entry| entry.kind == EntryKind::Expire && entry.receipt_id.is_some()) {
        let tagged = entry.receipt_id.as_ref().and_then(|id| model.receipts.get(id));
        check!(
            tagged.and_then(|receipt| receipt.accrual.as_ref()).is_some(),
            "expire entry {} tagged {:?}, which never earned",
            entry.seq,
            entry.receipt_id
        );
    }
    Ok(())
}

/// Property 6: the figures' changes by expiry day add up to the account's buckets.
fn check_expiry_changes(env: &Env, model: &Model) -> Result<(), TestCaseError> {
    let mut held: BTreeMap<chrono::NaiveDate, Decimal> = BTreeMap::new();
    let mut never = Decimal::ZERO;
    for bucket in &model.account.buckets {
        match loyalty_core::figures::expiry_day(bucket.expires_at, env.policy.time_zone) {
            Some(day) => *held.entry(day).or_default() += bucket.remaining,
            None => never += bucket.remaining,
        }
    }
    held.retain(|_, points| !points.is_zero());
    check!(held == model.expiry_changes, "buckets by expiry day {held:?}, the figures' changes sum to {:?}", model.expiry_changes);
    check!(never == model.never_expiring, "never expiring {never}, the figures say {}", model.never_expiring);
    Ok(())
}

/// Property 7: the RFM counters against the receipts.
fn check_rfm(env: &Env, model: &Model) -> Result<(), TestCaseError> {
    use loyalty_core::rfm::{RFM_MONTHS_KEPT, measures, month_index};
    let mut by_month: BTreeMap<i32, (u32, Decimal)> = BTreeMap::new();
    for receipt in model.receipts.values() {
        let Some(accrual) = &receipt.accrual else { continue };
        let month = accrual.tier_month.expect("every accrual records its month");
        let kept = by_month.entry(month).or_default();
        // A reversal returns whatever refunds left (without adding it to `money_returned`).
        if !receipt.reversed {
            kept.0 += 1;
            kept.1 += accrual.total - receipt.spent - receipt.money_returned + receipt.spent_returned;
        }
    }
    let newest = by_month.keys().next_back().copied().unwrap_or_default();
    let first = newest - i32::try_from(RFM_MONTHS_KEPT).expect("small") + 1;
    let expected: Vec<(i32, u32, Decimal)> = by_month
        .into_iter()
        .filter(|(month, (purchases, paid))| *month >= first && (*purchases > 0 || !paid.is_zero()))
        .map(|(month, (purchases, paid))| (month, purchases, paid))
        .collect();
    let kept: Vec<(i32, u32, Decimal)> = model.account.rfm_months.iter().map(|month| (month.month, month.purchases, month.paid)).collect();
    check!(kept == expected, "RFM months {kept:?}, the receipts say {expected:?}");
    if let Some(now) = measures(&model.account, RFM_MONTHS_KEPT, model.now, env.policy.time_zone) {
        let current = month_index(model.now.with_timezone(&env.policy.time_zone).date_naive());
        let window = expected.iter().filter(|(month, _, _)| *month > current - 12 && *month <= current);
        let (frequency, monetary) =
            window.fold((0, Decimal::ZERO), |(count, paid), (_, purchases, money)| (count + purchases, paid + money));
        check!(
            (now.frequency, now.monetary) == (frequency, monetary),
            "RFM at {}: {now:?}, the receipts say {frequency} and {monetary}",
            model.now
        );
    } else {
        check!(model.account.rfm_months.is_empty(), "RFM months without a purchase: {:?}", model.account.rfm_months);
    }
    Ok(())
}

fn check_all(env: &Env, model: &Model) -> Result<(), TestCaseError> {
    check_ledger(model)?;
    check_rfm(env, model)?;
    check_expiry_changes(env, model)?;
    check_balances(env, model, model.now)?;
    check_receipts(model)
}

fn run_step(env: &Env, model: &mut Model, step: &Step) -> Result<String, TestCaseError> {
    match step {
        Step::Accrue { receipt, lines, reuse } => step_accrue(env, model, *receipt, lines, *reuse),
        Step::Authorize { receipt, lines, reuse, spend, ttl } => step_authorize(env, model, *receipt, lines, *reuse, spend, *ttl),
        Step::Capture { receipt, percent, mode } => step_capture(env, model, *receipt, *percent, *mode),
        Step::Redeem { receipt, lines, reuse, spend } => step_redeem(env, model, *receipt, lines, *reuse, spend),
        Step::Refund { receipt, mask, quantities, bogus } => step_refund(env, model, *receipt, *mask, quantities, *bogus),
        Step::Reverse { receipt } => step_reverse(env, model, *receipt),
        Step::Advance(advance) => step_advance(env, model, *advance),
    }
}

/// Runs a scenario, checking every property after every step; returns what it exercised.
fn run_scenario(setup: &Setup, steps: &[Step]) -> Result<Stats, TestCaseError> {
    let mut stats = Stats::default();
    run_scenario_counting(setup, steps, &mut stats)?;
    Ok(stats)
}

/// Like [`run_scenario`], adding what it exercised to `stats` even when a property fails.
fn run_scenario_counting(setup: &Setup, steps: &[Step], stats: &mut Stats) -> Result<(), TestCaseError> {
    let env = Env::new(setup);
    let mut model = Model::new(setup);
    if setup.opening_cents > 0 {
        let opening =
            vec![LineSpec { quantity: Decimal::ONE, unit_cents: setup.opening_cents, discount_percent: 0, excise: false, promo: false }];
        let target = Target { selector: 0, stray: false };
        let summary =
            step_accrue(&env, &mut model, target, &opening, false).and_then(|summary| check_all(&env, &model).map(|()| summary))?;
        model.trace.push(format!("opening {}: {summary}", model.picked));
        step_advance(&env, &mut model, Advance::Days(1))?;
        check_all(&env, &model)?;
    }
    for (index, step) in steps.iter().enumerate() {
        let at = model.now;
        model.picked.clear();
        let result = run_step(&env, &mut model, step).and_then(|summary| check_all(&env, &model).map(|()| summary));
        match result {
            Ok(summary) => model.trace.push(format!("#{index} @{at} {} {}: {summary}", step_label(step), model.picked)),
            Err(failure) => {
                stats.add(&model.stats);
                return Err(TestCaseError::fail(format!(
                    "step #{index} @{at} {} {}: {failure}\n--- steps so far ---\n{}\n--- account ---\n{:#?}\n--- receipts ---\n{:#?}",
                    step_label(step),
                    model.picked,
                    model.trace.join("\n"),
                    model.account,
                    model
                        .receipts
                        .values()
                        .map(|receipt| (
                            &receipt.receipt_id,
                            receipt.spent,
                            receipt.spent_returned,
                            &receipt.accrual,
                            receipt.earn_clawed,
                            receipt.reversed
                        ))
                        .collect::<Vec<_>>(),
                )));
            }
        }
        model.stats.steps += 1;
    }
    if model.account.debt > Decimal::ZERO {
        model.stats.debt_seen += 1;
    }
    stats.add(&model.stats);
    Ok(())
}

fn step_label(step: &Step) -> String {
    match step {
        Step::Accrue { reuse, .. } => format!("accrue (reuse {reuse})"),
        Step::Authorize { spend, ttl, .. } => format!("authorize {spend:?} ttl {ttl}"),
        Step::Capture { percent, mode, .. } => format!("capture {percent}% {mode:?}"),
        Step::Redeem { spend, .. } => format!("redeem {spend:?}"),
        Step::Refund { .. } => "refund".to_owned(),
        Step::Reverse { .. } => "reverse".to_owned(),
        Step::Advance(advance) => format!("advance {advance:?}"),
    }
}

fn config() -> ProptestConfig {
    // No regression files: this suite owns only its source file.
    // 1000 cases unless PROPTEST_CASES says otherwise (about 10 s per property in a debug build).
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(1000);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// All five properties after every step of a random checkout history, under a random program.
    #[test]
    fn ledger_properties_hold_after_every_step(setup in setup_strategy(), steps in steps_strategy()) {
        run_scenario(&setup, &steps)?;
    }

    /// The strictest variant: no debt, a 20% cap and fractional points.
    #[test]
    fn ledger_properties_hold_under_reject_policy(
        setup in setup_strategy().prop_map(|setup| Setup {
            refund_policy: RefundPolicy::Reject,
            cap_percent: 20,
            points_scale: 2,
            registered: true,
            ..setup
        }),
        steps in steps_strategy(),
    ) {
        run_scenario(&setup, &steps)?;
    }
}

/// Guards against a vacuous generator: the histories reach every interesting path.
#[test]
fn generated_histories_reach_every_path() {
    let mut runner = TestRunner::deterministic();
    let strategy = (setup_strategy(), steps_strategy());
    let mut total = Stats::default();
    let mut failed = 0_usize;
    for _ in 0..300 {
        let (setup, steps) = strategy.new_tree(&mut runner).expect("a generated scenario").current();
        // Property failures are the property tests' to report (with a shrunk input); this test
        // only measures what the generator reaches.
        if run_scenario_counting(&setup, &steps, &mut total).is_err() {
            failed += 1;
        }
    }
    eprintln!("coverage over 300 scenarios ({failed} of them broke a property): {total:#?}");
    for (what, count) in [
        ("accruals", total.accrued),
        ("accruals earning points", total.earned_points),
        ("holds", total.holds),
        ("captures", total.captures),
        ("direct redeems", total.direct_redeems),
        ("refunds", total.refunds),
        ("refunds returning spent points", total.refunds_returning_spent),
        ("refunds creating debt", total.refunds_with_debt),
        ("full refunds", total.full_refunds),
        ("reverses", total.reverses),
        ("reverses after a spend", total.reverses_after_spend),
        ("reject-policy refusals", total.reject_refusals),
        ("expire entries", total.expired_entries),
        ("expired holds", total.hold_expired),
    ] {
        assert!(count > 0, "no {what} in 300 generated scenarios: {total:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic examples with exact numbers
// ---------------------------------------------------------------------------------------------

/// A single-account harness for the examples.
struct Shop {
    env: Env,
    model: Model,
}

impl Shop {
    fn new(adjust: impl FnOnce(&mut Setup)) -> Shop {
        let mut setup = Setup {
            refund_policy: RefundPolicy::AllowNegative,
            points_scale: 0,
            pending: PendingRule::NextDay,
            cap_percent: 100,
            cashback: Decimal::ONE,
            rounding: PointsRounding::Down,
            registered: true,
            start_offset_minutes: 0,
            opening_cents: 0,
        };
        adjust(&mut setup);
        Shop { env: Env::new(&setup), model: Model::new(&setup) }
    }

    fn checked(&self) {
        if let Err(failure) = check_all(&self.env, &self.model) {
            panic!("{failure}");
        }
    }

    fn accrue(&mut self, receipt_id: &str, lines: Vec<BasketLine>) -> loyalty_core::outcome::AccrueOutcome {
        let cmd =
            AccrueCmd { occurred_at: None, receipt_id: receipt_id.into(), lines, sale: SaleContext::default(), change: Decimal::ZERO };
        let result =
            apply(&self.env, &mut self.model, receipt_id, |ck, txn, rc, _| ops::accrue(ck, txn, rc, &cmd)).expect("model invariants");
        self.checked();
        result.expect("accrue accepted").outcome
    }

    fn redeem(
        &mut self,
        receipt_id: &str,
        points: Decimal,
        lines: Vec<BasketLine>,
    ) -> Result<loyalty_core::outcome::RedeemOutcome, Rejection> {
        let cmd = RedeemCmd { receipt_id: receipt_id.into(), points, hold_id: None, lines, presence: Default::default() };
        let result =
            apply(&self.env, &mut self.model, receipt_id, |ck, txn, rc, _| ops::redeem(ck, txn, rc, &cmd)).expect("model invariants");
        self.checked();
        result.map(|applied| applied.outcome)
    }

    fn authorize(
        &mut self,
        receipt_id: &str,
        spend: Decimal,
        lines: Vec<BasketLine>,
    ) -> Result<loyalty_core::outcome::AuthorizeOutcome, Rejection> {
        let cmd = AuthorizeCmd {
            receipt_id: receipt_id.into(),
            lines,
            spend,
            hold_ttl_seconds: 0,
            sale: SaleContext::default(),
            presence: Default::default(),
        };
        let result = apply(&self.env, &mut self.model, receipt_id, |ck, txn, rc, hold_id| ops::authorize(ck, txn, rc, &cmd, hold_id))
            .expect("model invariants");
        self.checked();
        result.map(|applied| applied.outcome)
    }

    fn capture(&mut self, receipt_id: &str, points: Decimal, hold_id: &str) -> Result<loyalty_core::outcome::RedeemOutcome, Rejection> {
        let cmd = RedeemCmd {
            receipt_id: receipt_id.into(),
            points,
            hold_id: Some(hold_id.into()),
            lines: Vec::new(),
            presence: Default::default(),
        };
        let result =
            apply(&self.env, &mut self.model, receipt_id, |ck, txn, rc, _| ops::redeem(ck, txn, rc, &cmd)).expect("model invariants");
        self.checked();
        result.map(|applied| applied.outcome)
    }

    fn refund(
        &mut self,
        receipt_id: &str,
        refund_id: &str,
        lines: &[(u32, &str)],
    ) -> Result<loyalty_core::outcome::RefundOutcome, Rejection> {
        let cmd = RefundCmd {
            occurred_at: None,
            receipt_id: receipt_id.into(),
            refund_id: refund_id.into(),
            lines: lines.iter().map(|(line_no, quantity)| RefundLine { line_no: *line_no, quantity: d(quantity) }).collect(),
            reason: String::new(),
        };
        let result =
            apply(&self.env, &mut self.model, receipt_id, |ck, txn, rc, _| ops::refund(ck, txn, rc, &cmd)).expect("model invariants");
        self.checked();
        result.map(|applied| applied.outcome)
    }

    fn reverse(&mut self, receipt_id: &str) -> Result<loyalty_core::outcome::ReverseOutcome, Rejection> {
        let cmd = ReverseCmd { receipt_id: receipt_id.into(), reason: String::new() };
        let result =
            apply(&self.env, &mut self.model, receipt_id, |ck, txn, rc, _| ops::reverse(ck, txn, rc, &cmd)).expect("model invariants");
        self.checked();
        result.map(|applied| applied.outcome)
    }

    fn advance(&mut self, by: Duration) {
        self.model.now += by;
        self.checked();
    }

    fn balance(&self) -> loyalty_core::account::BalanceView {
        self.model.account.balance_at(self.model.now)
    }

    fn receipt(&self, receipt_id: &str) -> &ReceiptState {
        self.model.receipts.get(receipt_id).expect("a known receipt")
    }

    /// Gives the account `points` spendable points (1% of a basket worth 100 x points).
    fn fund(&mut self, receipt_id: &str, points: i64) {
        let out = self.accrue(receipt_id, vec![line(1, "1", &format!("{}.00", points * 100), false)]);
        assert_eq!(out.earned, Decimal::from(points));
        self.advance(Duration::days(1));
        assert_eq!(self.balance().spendable, Decimal::from(points));
    }
}

fn line(line_no: u32, quantity: &str, line_total: &str, excise: bool) -> BasketLine {
    let quantity = d(quantity);
    let line_total = d(line_total);
    BasketLine {
        line_no,
        sku: format!("sku-{line_no}"),
        category: "grocery".into(),
        brand: String::new(),
        quantity,
        unit_price: (line_total / quantity).round_dp(2),
        line_total,
        excise,
        promo_price: false,
    }
}

#[test]
fn excise_line_earns_nothing_10000_basket_earns_80() {
    let mut shop = Shop::new(|_| {});
    let out = shop.accrue("R1", vec![line(1, "1", "8000.00", false), line(2, "1", "2000.00", true)]);
    assert_eq!(out.earned, d("80"));
    assert_eq!(out.lines[0].points, d("80"));
    assert_eq!(out.lines[1].points, Decimal::ZERO);
    // Pending until the next local midnight, then spendable.
    assert_eq!(shop.balance().pending, d("80"));
    assert_eq!(shop.balance().available, Decimal::ZERO);
    shop.advance(Duration::days(1));
    assert_eq!(shop.balance().available, d("80"));
    let entries = &shop.model.ledger;
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].kind, entries[0].amount, entries[0].balance_after), (EntryKind::Earn, d("80"), d("80")));
}

#[test]
fn points_spent_earn_nothing_1000_of_5000_earns_40() {
    let mut shop = Shop::new(|_| {});
    shop.fund("FUND", 1000);
    let redeemed = shop.redeem("R1", d("1000"), vec![line(1, "1", "5000.00", false)]).expect("redeem within balance and cap");
    assert_eq!(redeemed.redeemed, d("1000"));
    assert_eq!(shop.balance().spendable, Decimal::ZERO);
    let out = shop.accrue("R1", vec![line(1, "1", "5000.00", false)]);
    assert_eq!(out.earned, d("40"));
    assert_eq!(out.paid_amount, d("4000.00"));
    assert_eq!(out.lines[0].base, d("4000.00"));
    let kinds: Vec<(EntryKind, Decimal)> = shop.model.ledger.iter().map(|entry| (entry.kind, entry.amount)).collect();
    assert_eq!(kinds, vec![(EntryKind::Earn, d("1000")), (EntryKind::Spend, d("-1000")), (EntryKind::Earn, d("40"))]);
}

#[test]
fn same_via_hold_capture_1000_of_5000_earns_40() {
    let mut shop = Shop::new(|_| {});
    shop.fund("FUND", 1000);
    let basket = vec![line(1, "2", "3000.00", false), line(2, "1", "2000.00", false)];
    let auth = shop.authorize("R1", d("1000"), basket.clone()).expect("hold within balance");
    let hold = auth.hold.expect("a hold");
    assert_eq!(shop.balance().held, d("1000"));
    assert_eq!(shop.balance().spendable, Decimal::ZERO);
    // Nothing else may spend the held points.
    let other = shop.redeem("R2", d("1"), vec![line(1, "1", "100.00", false)]);
    assert!(matches!(other, Err(Rejection::InsufficientPoints { .. })), "{other:?}");
    let captured = shop.capture("R1", d("1000"), &hold.hold_id).expect("capture of a live hold");
    assert_eq!(captured.released, Decimal::ZERO);
    let out = shop.accrue("R1", basket);
    // 1000 points shared 600/400 over the lines: bases 2400 + 1600 = 4000.
    assert_eq!(out.earned, d("40"));
    assert_eq!(out.lines[0].base, d("2400.00"));
    assert_eq!(out.lines[1].base, d("1600.00"));
}

#[test]
fn refunding_half_of_one_of_two_equal_lines_claws_back_half_of_its_points() {
    let mut shop = Shop::new(|_| {});
    let out = shop.accrue("R1", vec![line(1, "2", "1100.00", false), line(2, "2", "1100.00", false)]);
    // 1% of 2200 = 22, 11 per line.
    assert_eq!(out.earned, d("22"));
    assert_eq!((out.lines[0].points, out.lines[1].points), (d("11"), d("11")));
    let first = shop.refund("R1", "F1", &[(1, "1")]).expect("refund");
    // Half of 11 is 5.5: floor 5 now, and the rest (6) when the line is fully returned.
    assert_eq!(first.earn_clawed_back, d("5"));
    assert_eq!(first.refunded_amount, d("550.00"));
    let rest = shop.refund("R1", "F2", &[(1, "1")]).expect("refund");
    assert_eq!(rest.earn_clawed_back, d("6"));
    assert_eq!(shop.receipt("R1").earn_clawed, d("11"));
    // An even split claws back exactly half.
    let mut even = Shop::new(|_| {});
    let out = even.accrue("R1", vec![line(1, "2", "1000.00", false), line(2, "2", "1000.00", false)]);
    assert_eq!((out.lines[0].points, out.lines[1].points), (d("10"), d("10")));
    let half = even.refund("R1", "F1", &[(1, "1")]).expect("refund");
    assert_eq!(half.earn_clawed_back, d("5"));
    assert_eq!(even.balance().balance, d("15"));
}

#[test]
fn three_refunds_of_a_third_return_exactly_the_whole() {
    let mut shop = Shop::new(|_| {});
    shop.fund("FUND", 100);
    shop.redeem("R1", d("100"), vec![line(1, "3", "1000.00", false)]).expect("redeem");
    // Earns 1% of 900 = 9.
    let out = shop.accrue("R1", vec![line(1, "3", "1000.00", false)]);
    assert_eq!(out.earned, d("9"));
    let mut clawed = Vec::new();
    let mut returned = Vec::new();
    let mut money = Vec::new();
    for refund_id in ["F1", "F2", "F3"] {
        let refund = shop.refund("R1", refund_id, &[(1, "1")]).expect("a third of the line");
        clawed.push(refund.earn_clawed_back);
        returned.push(refund.spent_returned);
        money.push(refund.refunded_amount);
    }
    assert_eq!(clawed, vec![d("3"), d("3"), d("3")]);
    // floor(100 x 333.33 / 1000) = 33, floor(100 x 666.66 / 1000) = 66, then the rest: 34.
    assert_eq!(returned, vec![d("33"), d("33"), d("34")]);
    assert_eq!(money, vec![d("333.33"), d("333.33"), d("333.34")]);
    let receipt = shop.receipt("R1");
    assert_eq!((receipt.spent_returned, receipt.earn_clawed, receipt.money_returned), (d("100"), d("9"), d("1000.00")));
    let more = shop.refund("R1", "F4", &[(1, "0.001")]);
    assert!(matches!(more, Err(Rejection::RefundExceedsReceipt { .. })), "{more:?}");
    // Fractional quantities too: 0.75 kg returned in three 0.25 kg refunds.
    let out = shop.accrue("R2", vec![line(1, "0.75", "1000.00", false)]);
    assert_eq!(out.earned, d("10"));
    let parts: Vec<Decimal> = ["G1", "G2", "G3"]
        .into_iter()
        .map(|refund_id| shop.refund("R2", refund_id, &[(1, "0.25")]).expect("a third").earn_clawed_back)
        .collect();
    assert_eq!(parts, vec![d("3"), d("3"), d("4")]);
}

#[test]
fn reverse_after_partial_refund_returns_exactly_the_rest() {
    let mut shop = Shop::new(|_| {});
    shop.fund("FUND", 500);
    shop.redeem("R1", d("300"), vec![line(1, "1", "2000.00", false), line(2, "3", "1000.00", false)]).expect("redeem");
    let out = shop.accrue("R1", vec![line(1, "1", "2000.00", false), line(2, "3", "1000.00", false)]);
    // 1% of 3000.00 - 300 = 27.
    assert_eq!(out.earned, d("27"));
    let refund = shop.refund("R1", "F1", &[(2, "1")]).expect("refund");
    let reverse = shop.reverse("R1").expect("reverse");
    assert_eq!(refund.spent_returned + reverse.spent_returned, d("300"));
    assert_eq!(refund.earn_clawed_back + reverse.earn_clawed_back, d("27"));
    // Back to the funded balance: the receipt left no trace.
    assert_eq!(shop.balance().balance, d("500"));
    assert_eq!(shop.balance().spendable, d("500"));
}

#[test]
fn holds_expire_after_15_minutes_and_points_expire_after_24_months() {
    let mut shop = Shop::new(|_| {});
    shop.fund("FUND", 100);
    let auth = shop.authorize("R1", d("60"), vec![line(1, "1", "1000.00", false)]).expect("hold");
    let hold = auth.hold.expect("a hold");
    shop.advance(Duration::minutes(14));
    assert_eq!(shop.balance().spendable, d("40"));
    shop.advance(Duration::minutes(1));
    assert_eq!(shop.balance().spendable, d("100"));
    let late = shop.capture("R1", d("60"), &hold.hold_id);
    assert!(matches!(late, Err(Rejection::HoldExpired { .. })), "{late:?}");
    // At the end of the local day 24 months after it was earned the bucket is gone, and the next
    // operation books the expiry.
    let earned_at = shop.model.ledger[0].at;
    shop.model.now = shop.env.policy.expires_at(earned_at);
    shop.checked();
    assert_eq!(shop.balance().balance, Decimal::ZERO);
    assert_eq!(shop.model.account.ledger_sum, d("100"));
    shop.accrue("R2", vec![line(1, "1", "100.00", false)]);
    let kinds: Vec<(EntryKind, Decimal, Option<String>)> =
        shop.model.ledger.iter().map(|entry| (entry.kind, entry.amount, entry.receipt_id.clone())).collect();
    assert_eq!(
        kinds,
        vec![
            (EntryKind::Earn, d("100"), Some("FUND".into())),
            (EntryKind::Expire, d("-100"), Some("FUND".into())),
            (EntryKind::Earn, d("1"), Some("R2".into())),
        ]
    );
}

#[test]
fn spent_points_returned_into_an_expired_bucket_expire_under_the_earning_receipt() {
    let mut shop = Shop::new(|_| {});
    shop.fund("FUND", 100);
    shop.redeem("R1", d("100"), vec![line(1, "1", "1000.00", false)]).expect("redeem");
    shop.accrue("R1", vec![line(1, "1", "1000.00", false)]);
    // The FUND bucket's expiry passes while its points are spent on R1.
    let earned_at = shop.model.ledger[0].at;
    shop.model.now = shop.env.policy.expires_at(earned_at);
    shop.checked();
    let reverse = shop.reverse("R1").expect("reverse");
    assert_eq!(reverse.spent_returned, d("100"));
    // 1% of 900 = 9 earned by R1, clawed back from R1's own bucket.
    assert_eq!(reverse.earn_clawed_back, d("9"));
    let last: Vec<(EntryKind, Decimal, Option<String>)> =
        shop.model.ledger.iter().rev().take(3).rev().map(|entry| (entry.kind, entry.amount, entry.receipt_id.clone())).collect();
    assert_eq!(
        last,
        vec![
            (EntryKind::ReturnSpent, d("100"), Some("R1".into())),
            (EntryKind::Clawback, d("-9"), Some("R1".into())),
            (EntryKind::Expire, d("-100"), Some("FUND".into())),
        ]
    );
    // R1's own entries net to zero; the expiry belongs to FUND.
    let (earn, spend, returned, clawed) = sums_by_kind(shop.model.ledger.iter(), "R1");
    assert_eq!(earn + spend + returned + clawed, Decimal::ZERO);
    assert_eq!(shop.model.account.ledger_sum, Decimal::ZERO);
}

#[test]
fn reject_policy_refuses_a_clawback_of_spent_points() {
    let mut shop = Shop::new(|setup| setup.refund_policy = RefundPolicy::Reject);
    shop.fund("R1", 10);
    shop.redeem("R2", d("10"), vec![line(1, "1", "100.00", false)]).expect("spend the earned points");
    let refused = shop.refund("R1", "F1", &[(1, "1")]);
    assert!(matches!(refused, Err(Rejection::ClawbackExceedsBalance { .. })), "{refused:?}");
    let refused = shop.reverse("R1");
    assert!(matches!(refused, Err(Rejection::ClawbackExceedsBalance { .. })), "{refused:?}");
    assert_eq!(shop.model.account.debt, Decimal::ZERO);
    // Under the allow-negative policy the same refund creates debt, paid off by the next earn.
    let mut shop = Shop::new(|_| {});
    shop.fund("R1", 10);
    shop.redeem("R2", d("10"), vec![line(1, "1", "100.00", false)]).expect("spend the earned points");
    let refund = shop.refund("R1", "F1", &[(1, "1")]).expect("refund into debt");
    assert_eq!(refund.debt_created, d("10"));
    assert_eq!(shop.balance().balance, d("-10"));
    shop.accrue("R3", vec![line(1, "1", "1500.00", false)]);
    assert_eq!(shop.model.account.debt, Decimal::ZERO);
    assert_eq!(shop.balance().pending, d("5"));
}

#[test]
fn cap_of_20_percent_limits_redeem() {
    let mut shop = Shop::new(|setup| setup.cap_percent = 20);
    shop.fund("FUND", 1000);
    let basket = vec![line(1, "1", "1234.56", false)];
    let over = shop.redeem("R1", d("247"), basket.clone());
    assert!(matches!(over, Err(Rejection::ExceedsReceiptCap { .. })), "{over:?}");
    shop.redeem("R1", d("246"), basket).expect("floor(20% of 1234.56) = 246");
}

/// Regression: spent points given back into a bucket that has already expired must expire again;
/// they must not pay off debt (that would turn expired points into value).
///
/// R1 earns 12; R2 spends 1 of them; reversing R1 claws back 12: 11 from the bucket and 1 as debt.
/// After R1's bucket expires, reversing R2 gives its 1 point back into that expired bucket.
/// The point expires again (ReturnSpent +1, Expire -1), debt stays 1, balance -1.
#[test]
fn returned_points_from_an_expired_bucket_do_not_pay_off_debt() {
    let mut shop = Shop::new(|_| {});
    shop.fund("R1", 12);
    shop.redeem("R2", d("1"), vec![line(1, "1", "100.00", false)]).expect("spend 1 of R1's points");
    let reverse = shop.reverse("R1").expect("reverse R1");
    assert_eq!((reverse.earn_clawed_back, reverse.debt_created), (d("12"), d("1")));
    let earned_at = shop.model.ledger[0].at;
    shop.model.now = shop.env.policy.expires_at(earned_at);
    shop.checked();
    let reverse = shop.reverse("R2").expect("reverse R2");
    assert_eq!(reverse.spent_returned, d("1"));
    let entries: Vec<(EntryKind, Decimal, Option<String>)> =
        shop.model.ledger.iter().map(|entry| (entry.kind, entry.amount, entry.receipt_id.clone())).collect();
    assert_eq!(
        (shop.model.account.debt, shop.balance().balance, entries),
        (
            d("1"),
            d("-1"),
            vec![
                (EntryKind::Earn, d("12"), Some("R1".into())),
                (EntryKind::Spend, d("-1"), Some("R2".into())),
                (EntryKind::Clawback, d("-12"), Some("R1".into())),
                (EntryKind::ReturnSpent, d("1"), Some("R2".into())),
                (EntryKind::Expire, d("-1"), Some("R1".into())),
            ]
        ),
        "(debt, balance, ledger): the point returned into R1's expired bucket paid off debt instead of expiring"
    );
}
