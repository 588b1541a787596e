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
    for weight in weights {
        assert!(*weight >= Decimal::ZERO, "allocate: negative weight {weight}");
    }
    // One part takes the whole (the common case: a rule that matched one line).
    if let [weight] = weights {
        assert!(!weight.is_zero() || total.is_zero(), "allocate: total {total} over zero weights");
        return vec![total];
    }
    allocate_in_units(total, weights, scale).unwrap_or_else(|| allocate_decimal(total, weights, scale))
}

/// The same in whole units of 10^-scale with exact integer remainders: `total` and the weights as
/// integers (the weights at their largest scale), each part `total * weight / sum` by integer
/// division. `None` when a number does not fit in 128 bits (weights of very different scales).
fn allocate_in_units(total: Decimal, weights: &[Decimal], scale: u32) -> Option<Vec<Decimal>> {
    let units = |value: Decimal, at: u32| -> Option<i128> {
        let own = value.scale();
        let mantissa = value.mantissa();
        if own <= at { mantissa.checked_mul(10i128.checked_pow(at - own)?) } else { None }
    };
    let total_units = units(total, scale)?;
    let weight_scale = weights.iter().map(Decimal::scale).max().unwrap_or(0);
    let weight_units: Vec<i128> = weights.iter().map(|weight| units(*weight, weight_scale)).collect::<Option<_>>()?;
    let weight_sum = weight_units.iter().try_fold(0i128, |sum, weight| sum.checked_add(*weight))?;
    if weight_sum == 0 {
        assert!(total.is_zero(), "allocate: total {total} over zero weights");
        return Some(vec![Decimal::ZERO; weights.len()]);
    }
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (index, weight) in weight_units.iter().enumerate() {
        let product = total_units.checked_mul(*weight)?;
        parts.push(product / weight_sum);
        remainders.push((product % weight_sum, index));
    }
    let mut leftover = total_units - parts.iter().sum::<i128>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, index) in remainders {
        if leftover <= 0 {
            break;
        }
        if weight_units[index] == 0 {
            continue;
        }
        parts[index] += 1;
        leftover -= 1;
    }
    assert_eq!(leftover, 0, "allocate: units left over");
    parts.into_iter().map(|part| Decimal::try_from_i128_with_scale(part, scale).ok()).collect()
}

/// The same in decimal arithmetic (28 significant digits), for numbers too large for
/// [`allocate_in_units`].
fn allocate_decimal(total: Decimal, weights: &[Decimal], scale: u32) -> Vec<Decimal> {
    let weight_sum: Decimal = weights.iter().copied().sum();
    if weight_sum.is_zero() {
        assert!(total.is_zero(), "allocate: total {total} over zero weights");
        return vec![Decimal::ZERO; weights.len()];
    }
    let unit = Decimal::new(1, scale);
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (index, weight) in weights.iter().enumerate() {
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

    proptest::proptest! {
        /// Whole units and decimal arithmetic agree wherever both apply: the same parts, summing
        /// to the total, each within one unit of its exact share.
        #[test]
        fn units_and_decimals_agree(
            total in 0i64..10_000_000,
            scale in 0u32..3,
            weights in proptest::collection::vec((0i64..100_000_000, 0u32..6), 2..30),
        ) {
            let total = Decimal::new(total, scale);
            let weights: Vec<Decimal> = weights.into_iter().map(|(mantissa, scale)| Decimal::new(mantissa, scale)).collect();
            if weights.iter().all(|weight| weight.is_zero()) {
                return Ok(());
            }
            let units = allocate_in_units(total, &weights, scale).expect("fits in 128 bits");
            proptest::prop_assert_eq!(&units, &allocate_decimal(total, &weights, scale));
            proptest::prop_assert_eq!(units.iter().copied().sum::<Decimal>(), total);
            let weight_sum: Decimal = weights.iter().copied().sum();
            for (part, weight) in units.iter().zip(&weights) {
                let exact = total * *weight / weight_sum;
                proptest::prop_assert!((*part - exact).abs() < Decimal::new(1, scale), "{} vs exact {}", part, exact);
            }
        }
    }

    #[test]
    fn one_weight_takes_the_whole_and_huge_weights_fall_back_to_decimals() {
        assert_eq!(allocate(d("7.5"), &[d("3.25")], 1), vec![d("7.5")]);
        // 10^20 at scale 0 beside a weight at scale 20 does not fit in 128 bits as units.
        let weights = [d("100000000000000000000"), d("0.00000000000000000001")];
        assert_eq!(allocate_in_units(d("10"), &weights, 0), None);
        assert_eq!(allocate(d("10"), &weights, 0), vec![d("10"), d("0")]);
    }
}
