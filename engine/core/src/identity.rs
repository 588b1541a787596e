//! How a till names a customer: phone number, card number or app token, and their normal forms.
//! Normalising here means one customer is found however the cashier typed the number.

use serde::{Deserialize, Serialize};

use crate::rejection::Rejection;

/// The kinds of identifier a customer can be found by. The numeric tag is part of storage keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdentityKind {
    Phone,
    Card,
    AppToken,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Phone => "phone",
            IdentityKind::Card => "card",
            IdentityKind::AppToken => "app token",
        }
    }

    fn tag(self) -> char {
        match self {
            IdentityKind::Phone => 'p',
            IdentityKind::Card => 'c',
            IdentityKind::AppToken => 't',
        }
    }
}

/// A normalised identifier, unique within a program.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdentityKey {
    pub kind: IdentityKind,
    pub value: String,
}

impl IdentityKey {
    /// The storage form, `p:+77011234567`: one string so that every backend keys it the same way.
    pub fn storage_key(&self) -> String {
        format!("{}:{}", self.kind.tag(), self.value)
    }
}

/// How a program reads local phone notation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhonePlan {
    /// The country calling code added to national numbers, e.g. "7" for Kazakhstan.
    pub country_code: String,
    /// Digits of a national number without the trunk prefix, e.g. 10 for Kazakhstan.
    pub national_digits: usize,
    /// The trunk prefix dialled before national numbers, e.g. "8" in Kazakhstan; may be empty.
    pub trunk_prefix: String,
}

impl Default for PhonePlan {
    fn default() -> Self {
        PhonePlan { country_code: "7".into(), national_digits: 10, trunk_prefix: "8".into() }
    }
}

/// Normalises a phone number to E.164 (`+` and 8 to 15 digits). Accepts spaces, dashes, dots and
/// parentheses; `+CC...` as is; a national number with or without the trunk prefix; or the
/// country code without `+`.
pub fn normalize_phone(field: &str, raw: &str, plan: &PhonePlan) -> Result<String, Rejection> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(Rejection::invalid(field, "required"));
    }
    if trimmed.len() > 32 {
        return Err(Rejection::invalid(field, "longer than 32 characters"));
    }
    let international = trimmed.starts_with('+');
    let mut digits = String::with_capacity(16);
    for (index, c) in trimmed.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if index == 0 => {}
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(Rejection::invalid(field, "a phone number has only digits, '+', spaces, '-', '.', '(' and ')'")),
        }
    }
    let e164_digits = if international {
        digits
    } else if digits.len() == plan.national_digits {
        format!("{}{}", plan.country_code, digits)
    } else if !plan.trunk_prefix.is_empty()
        && digits.len() == plan.trunk_prefix.len() + plan.national_digits
        && digits.starts_with(&plan.trunk_prefix)
    {
        format!("{}{}", plan.country_code, &digits[plan.trunk_prefix.len()..])
    } else if digits.len() == plan.country_code.len() + plan.national_digits && digits.starts_with(&plan.country_code) {
        digits
    } else {
        return Err(Rejection::invalid(field, "not a phone number of this program's country; use +<country code><number>"));
    };
    if !(8..=15).contains(&e164_digits.len()) || e164_digits.starts_with('0') {
        return Err(Rejection::invalid(field, "an E.164 number has 8 to 15 digits and no leading 0"));
    }
    Ok(format!("+{e164_digits}"))
}

/// Validates a card number: 4 to 32 ASCII letters or digits (barcodes), upper-cased.
pub fn normalize_card(field: &str, raw: &str) -> Result<String, Rejection> {
    let value = raw.trim();
    if !(4..=32).contains(&value.len()) {
        return Err(Rejection::invalid(field, "a card number has 4 to 32 letters or digits"));
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Rejection::invalid(field, "a card number has only letters and digits"));
    }
    Ok(value.to_ascii_uppercase())
}

/// Validates an app token: 16 to 128 URL-safe characters.
pub fn normalize_app_token(field: &str, raw: &str) -> Result<String, Rejection> {
    let value = raw.trim();
    if !(16..=128).contains(&value.len()) {
        return Err(Rejection::invalid(field, "an app token has 16 to 128 characters"));
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err(Rejection::invalid(field, "an app token has only letters, digits, '-', '_' and '.'"));
    }
    Ok(value.to_owned())
}

/// The Luhn check digit of a digit string, used for the virtual card numbers the engine issues.
pub fn luhn_check_digit(digits: &str) -> Option<u8> {
    let mut sum = 0u32;
    for (index, c) in digits.chars().rev().enumerate() {
        let mut d = c.to_digit(10)?;
        if index % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    Some(((10 - sum % 10) % 10) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kazakh_notations_normalise_to_one_number() {
        let plan = PhonePlan::default();
        for raw in ["+7 701 123 45 67", "8 (701) 123-45-67", "7011234567", "77011234567", "+77011234567"] {
            assert_eq!(normalize_phone("phone", raw, &plan).as_deref(), Ok("+77011234567"), "{raw}");
        }
    }

    #[test]
    fn malformed_phones_name_the_field() {
        let plan = PhonePlan::default();
        for raw in ["", "12345", "+7701abc", "++77011234567", "8701123456789"] {
            match normalize_phone("customer.phone", raw, &plan) {
                Err(Rejection::InvalidArgument { field, .. }) => assert_eq!(field, "customer.phone"),
                other => panic!("{raw}: {other:?}"),
            }
        }
    }

    #[test]
    fn luhn_digit_matches_known_number() {
        // 7992739871 has check digit 3.
        assert_eq!(luhn_check_digit("7992739871"), Some(3));
    }
}
