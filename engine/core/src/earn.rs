//! The earning rule, behind an interface so that the rules engine can replace it.
//!
//! An evaluator sees the program, the account and the basket with each line's base (its total less
//! its share of spent points) and says what each line earns. It does no I/O and reads no clock: the
//! time of the receipt is an input.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::account::AccountState;
use crate::allocate::allocate;
use crate::basket::BasketLine;
use crate::outcome::LineEarn;
use crate::program::ProgramPolicy;

/// Everything an evaluator may look at.
#[derive(Debug)]
pub struct EarnInput<'a> {
    pub program: &'a ProgramPolicy,
    pub account: &'a AccountState,
    pub lines: &'a [BasketLine],
    /// Per line, in the order of `lines`: the money that line earns on.
    pub bases: &'a [Decimal],
    pub at: DateTime<Utc>,
}

/// What a basket earns: per line, and the total (already rounded by the program's rule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Earn {
    pub lines: Vec<LineEarn>,
    pub total: Decimal,
}

/// Computes what a basket earns. Implementations must never return a negative amount.
pub trait EarnEvaluator: Send + Sync + std::fmt::Debug {
    fn evaluate(&self, input: &EarnInput<'_>) -> Earn;
}

/// A program-wide cashback percentage; excise and promo-price lines earn nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatCashback {
    pub percent: Decimal,
}

impl FlatCashback {
    pub fn new(percent: Decimal) -> Self {
        assert!(percent >= Decimal::ZERO && percent <= Decimal::ONE_HUNDRED, "cashback {percent}%");
        FlatCashback { percent }
    }
}

impl EarnEvaluator for FlatCashback {
    fn evaluate(&self, input: &EarnInput<'_>) -> Earn {
        let rate = self.percent / Decimal::ONE_HUNDRED;
        let mut exact = Vec::with_capacity(input.lines.len());
        let mut reasons = Vec::with_capacity(input.lines.len());
        for (line, base) in input.lines.iter().zip(input.bases) {
            let (points, reason) = if line.excise {
                (Decimal::ZERO, "excluded: excise".to_owned())
            } else if line.promo_price {
                (Decimal::ZERO, "excluded: promo price".to_owned())
            } else {
                (*base * rate, format!("cashback {}%", self.percent.normalize()))
            };
            exact.push(points);
            reasons.push(reason);
        }
        // Round the receipt, not each line: 1% of ten 50-tenge lines is 5 points, not 0.
        let total = input.program.round_points(exact.iter().copied().sum()).max(Decimal::ZERO);
        let per_line = allocate(total, &exact, input.program.points_scale);
        let lines = input
            .lines
            .iter()
            .zip(input.bases)
            .zip(per_line)
            .zip(reasons)
            .map(|(((line, base), points), reason)| LineEarn {
                line_no: line.line_no,
                base: if line.excise || line.promo_price { Decimal::ZERO } else { *base },
                points,
                reason,
            })
            .collect();
        Earn { lines, total }
    }
}
