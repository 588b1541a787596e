//! Exact proportional allocation ("largest remainder"): splits a total across weighted parts at a
//! given decimal scale so that the parts add up to the total exactly. Used wherever a receipt-level
//! amount becomes per-line amounts (points earned, points spent), because rounding each part on its
//! own would make the parts disagree with the whole.

use rust_decimal::{Decimal, RoundingStrategy};

/// Splits `total` (already at `scale`, non-negative) in proportion to `weights` (non-negative).
/// The parts are multiples of 10^-scale and sum to `total`; leftover units go to the parts with the
/// largest remainders, ties to the earlier part. All-zero weights require a zero total.
pub fn allocate(total: Decimal, weights: &[Decimal], scale: u32) -> Vec<Decimal> {
    assert!(total >= Decimal::ZERO, "allocate: negative total {total}");
    let weight_sum: Decimal = weights.iter().copied().sum();
    if weight_sum.is_zero() {
        assert!(total.is_zero(), "allocate: total {total} over zero weights");
        return vec![Decimal::ZERO; weights.len()];
    }
    let unit = Decimal::new(1, scale);
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (index, weight) in weights.iter().enumerate() {
        assert!(*weight >= Decimal::ZERO, "allocate: negative weight {weight}");
        let exact = total * *weight / weight_sum;
        let floor = exact.round_dp_with_strategy(scale, RoundingStrategy::ToZero);
        parts.push(floor);
        remainders.push((exact - floor, index));
    }
    let mut leftover = total - parts.iter().copied().sum::<Decimal>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, index) in remainders {
        if leftover <= Decimal::ZERO {
            break;
        }
        if weights[index].is_zero() {
            continue;
        }
        parts[index] += unit;
        leftover -= unit;
    }
    assert!(leftover.is_zero(), "allocate: {leftover} left over");
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("test decimal")
    }

    #[test]
    fn parts_sum_to_total_at_scale() {
        let parts = allocate(d("10"), &[d("1"), d("1"), d("1")], 0);
        assert_eq!(parts, vec![d("4"), d("3"), d("3")]);
        let parts = allocate(d("0.10"), &[d("2"), d("1")], 2);
        assert_eq!(parts, vec![d("0.07"), d("0.03")]);
    }

    #[test]
    fn zero_weight_parts_get_nothing() {
        let parts = allocate(d("5"), &[d("0"), d("3"), d("0"), d("1")], 0);
        assert_eq!(parts.iter().copied().sum::<Decimal>(), d("5"));
        assert_eq!(parts[0], Decimal::ZERO);
        assert_eq!(parts[2], Decimal::ZERO);
    }
}
