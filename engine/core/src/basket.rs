//! A basket as the till sends it, and the checks every basket passes before any rule reads it.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::rejection::Rejection;

/// One line of a receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasketLine {
    /// Unique within the receipt; refunds name lines by it.
    pub line_no: u32,
    pub sku: String,
    pub category: String,
    /// Empty when the till does not send it.
    #[serde(default)]
    pub brand: String,
    pub quantity: Decimal,
    pub unit_price: Decimal,
    /// What the line costs after line discounts.
    pub line_total: Decimal,
    /// Excise goods (alcohol, tobacco) earn nothing.
    pub excise: bool,
    /// Goods already sold at a promotional price earn nothing.
    pub promo_price: bool,
}

/// Bounds on a basket, so that no request can make the engine do unbounded work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasketLimits {
    pub lines_max: usize,
    /// Largest money amount in any field (line total, unit price), in currency units.
    pub amount_max: Decimal,
    pub quantity_max: Decimal,
    pub sku_len_max: usize,
}

impl Default for BasketLimits {
    fn default() -> Self {
        BasketLimits {
            lines_max: 500,
            amount_max: Decimal::from(1_000_000_000_i64),
            quantity_max: Decimal::from(1_000_000_i64),
            sku_len_max: 64,
        }
    }
}

/// Checks a basket's shape and ranges; every error names the offending field.
pub fn validate_basket(lines: &[BasketLine], limits: &BasketLimits, money_scale: u32) -> Result<(), Rejection> {
    if lines.is_empty() {
        return Err(Rejection::invalid("lines", "a basket has at least one line"));
    }
    if lines.len() > limits.lines_max {
        return Err(Rejection::invalid("lines", format!("at most {} lines per receipt", limits.lines_max)));
    }
    let mut seen = std::collections::HashSet::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let field = |name: &str| format!("lines[{index}].{name}");
        if !seen.insert(line.line_no) {
            return Err(Rejection::invalid(field("line_no"), format!("line_no {} appears twice", line.line_no)));
        }
        if line.sku.is_empty() || line.sku.len() > limits.sku_len_max {
            return Err(Rejection::invalid(field("sku"), format!("1 to {} characters", limits.sku_len_max)));
        }
        if line.category.len() > limits.sku_len_max {
            return Err(Rejection::invalid(field("category"), format!("at most {} characters", limits.sku_len_max)));
        }
        if line.brand.len() > limits.sku_len_max {
            return Err(Rejection::invalid(field("brand"), format!("at most {} characters", limits.sku_len_max)));
        }
        if line.quantity <= Decimal::ZERO || line.quantity > limits.quantity_max {
            return Err(Rejection::invalid(field("quantity"), format!("must be above 0 and at most {}", limits.quantity_max)));
        }
        for (name, amount) in [("unit_price", line.unit_price), ("line_total", line.line_total)] {
            if amount < Decimal::ZERO || amount > limits.amount_max {
                return Err(Rejection::invalid(field(name), format!("must be between 0 and {}", limits.amount_max)));
            }
            if amount.scale() > money_scale && amount.normalize().scale() > money_scale {
                return Err(Rejection::invalid(field(name), format!("at most {money_scale} decimal places")));
            }
        }
    }
    Ok(())
}

/// The receipt total: the sum of line totals.
pub fn basket_total(lines: &[BasketLine]) -> Decimal {
    lines.iter().map(|line| line.line_total).sum()
}
