//! Fuzz targets for request validation at the gRPC edge, written as proptest properties.
//!
//! What is fuzzed: every conversion of `loyalty_engine::grpc::convert` (decimals, amounts, IDs,
//! free text, origins, customer references, basket and refund lines, names, birth dates, sale
//! context, tags) and the identifier normalisers of `loyalty_core::identity` (phone, card, app
//! token), fed hostile strings (random unicode, control characters, NUL, bidirectional marks,
//! non-ASCII digits, strings up to 100 KB, numbers with exponents, signs, many digits, thousands
//! separators, leading zeros and whitespace) and arbitrary prost messages; and prost decoding of
//! arbitrary bytes (random, and random protobuf field streams) as each checkout request, with the
//! handlers' conversions run on whatever decodes. Properties: nothing panics; every refusal is
//! `Rejection::InvalidArgument` naming the field it was given (`lines[3].quantity` for lines) with
//! a reason; accepted decimals follow the documented grammar, round-trip through their string and
//! respect their bounds; accepted IDs, text and identifiers are within their limits and free of
//! control characters; accepted phone numbers are E.164.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test -p loyalty-engine --test fuzz_requests`.
//! A bug found here is fixed and its property kept, with the minimal failing input in its doc
//! ("Found here (fixed)"); while a bug is open its test carries `#[ignore = "BUG: ..."]`.
//!
//! Why proptest rather than cargo-fuzz: it runs on the stable toolchain, so these targets run in
//! CI with every `cargo test --workspace` (a modest number of cases, a few seconds each) and a
//! longer run needs nothing but an environment variable; and a failure is shrunk to a small input
//! that reads as a regression case. No failure files are written (`failure_persistence: None`):
//! a failing input is kept as a test of its own.

use std::fmt::Debug;
use std::sync::Arc;

use chrono::NaiveDate;
use loyalty_core::identity::{IdentityKind, PhonePlan, normalize_app_token, normalize_card, normalize_phone};
use loyalty_core::program::ProgramPolicy;
use loyalty_core::rejection::Rejection;
use loyalty_engine::auth::{Caller, Credential};
use loyalty_engine::grpc::convert;
use loyalty_proto::v1 as pb;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use prost::Message;
use rust_decimal::Decimal;

/// The engine's default limits (`config::LimitsConfig`).
const ID_LEN_MAX: usize = 64;
const LINES_MAX: usize = 500;
const AMOUNT_MAX: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// The wire format's documented bounds (loyalty.proto and `convert`).
const DECIMAL_LEN_MAX: usize = 40;
const SIGNIFICANT_DIGITS_MAX: usize = 28;

/// `cases` unless PROPTEST_CASES says otherwise; no failure files (this suite owns only its source).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|raw| raw.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// Hostile strings
// ---------------------------------------------------------------------------------------------

/// Pieces hostile strings are made of: digits (ASCII and not), signs, separators, exponents,
/// whitespace of every kind, control characters, bidirectional and zero-width marks, combining
/// marks, and the characters IDs and phone numbers allow.
#[rustfmt::skip]
const PIECES: &[&str] = &[
    "0", "1", "7", "9", "00", "123", "-", "+", ".", ",", "_", ":", "(", ")", " ", "\t", "\n", "\r", "\0", "\u{7f}", "\u{85}", "\u{1b}",
    "e", "E", "e+5", "e-3", "1e3", "NaN", "inf", "\u{661}", "\u{663}", "\u{ff11}", "\u{ff12}", "\u{200f}", "\u{202e}", "\u{200b}",
    "\u{feff}", "\u{a0}", "\u{3000}", "\u{2028}", "\u{301}", "é", "💳", "x", "A", "z", "'", "\"", "\\", "%", "/",
];

fn pieces(max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(select(PIECES), 0..=max).prop_map(|pieces| pieces.concat()).boxed()
}

/// Number-like text: whitespace, signs, digits, thousands separators, fractions, exponents.
fn numeric() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[ \t]{0,1}[+-]{0,2}[0-9]{0,45}([,_ ][0-9]{3}){0,3}(\\.[0-9]{0,45})?([eE][+-]?[0-9]{1,3})?[ \t]{0,1}",
        2 => well_formed_decimal(),
        1 => select(&[
            "0", "-0", "-0.0", "0.", ".0", "1.", ".5", "1..2", "--1", "+1", "1e3", "1E-3", "0x10", "1_000", "1,000.50", "1 000",
            "1000000000", "1000000000.00", "1000000000.01", "79228162514264337593543950335", "79228162514264337593543950336",
            "-79228162514264337593543950335", "0.0000000000000000000000000001", "0.00000000000000000000000000001",
            "12345678901234567890123456789", "1234567890123456789012345678.9", "00000000000000000000000000000000000000001",
        ][..])
        .prop_map(str::to_owned),
    ]
    .boxed()
}

/// What the wire format documents: `-?digits(.digits)?`, here with up to 40 characters.
fn well_formed_decimal() -> BoxedStrategy<String> {
    "-?[0-9]{1,30}(\\.[0-9]{1,30})?".prop_filter("at most 40 characters", |raw| raw.len() <= DECIMAL_LEN_MAX).boxed()
}

/// A long string, up to 100 KB, of one piece repeated.
fn long() -> BoxedStrategy<String> {
    (select(PIECES), 1_usize..=100_000).prop_map(|(piece, bytes)| piece.repeat((bytes / piece.len()).max(1))).boxed()
}

fn hostile() -> BoxedStrategy<String> {
    prop_oneof![
        4 => pieces(24),
        3 => numeric(),
        2 => "\\PC{0,40}",
        2 => ".{0,40}",
        2 => "[A-Za-z0-9._:-]{1,80}",
        1 => long(),
    ]
    .boxed()
}

fn phone_like() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[+]?[0-9 ().-]{0,36}",
        2 => e164().prop_map(|(digits, separators)| with_separators(&format!("+{digits}"), &separators)),
        1 => "8 ?\\(?7[0-9]{2}\\)? ?[0-9]{3}-?[0-9]{2}-?[0-9]{2}",
        1 => hostile(),
    ]
    .boxed()
}

/// The digits of an E.164 number (8 to 15, no leading 0), and where to put separators.
fn e164() -> BoxedStrategy<(String, Vec<(usize, &'static str)>)> {
    ("[1-9][0-9]{7,14}", prop::collection::vec((any::<usize>(), select(&[" ", "-", ".", "(", ")"][..])), 0..4)).boxed()
}

fn with_separators(number: &str, separators: &[(usize, &str)]) -> String {
    let mut text = number.to_owned();
    for (at, separator) in separators {
        // Never before the leading '+'.
        let at = 1 + at % text.len();
        text.insert_str(at.min(text.len()), separator);
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// A refusal must be `InvalidArgument` naming a field that starts with one of `fields`, with a reason.
fn refused<T: Debug>(fields: &[&str], result: Result<T, Rejection>) -> Result<Option<T>, TestCaseError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Rejection::InvalidArgument { field, reason }) => {
            prop_assert!(
                !field.is_empty() && fields.iter().any(|expected| field.starts_with(expected)),
                "field {:?} is not one of {:?}",
                field,
                fields
            );
            prop_assert!(!reason.trim().is_empty(), "{}: no reason", field);
            Ok(None)
        }
        Err(other) => Err(TestCaseError::fail(format!("{fields:?}: refused with {other:?}, not InvalidArgument"))),
    }
}

/// For list fields: a refusal names the list, or `list[i].suffix` with `i` in range and a known
/// suffix.
fn refused_in_list<T: Debug>(list: &str, len: usize, suffixes: &[&str], result: Result<T, Rejection>) -> Result<Option<T>, TestCaseError> {
    if let Err(Rejection::InvalidArgument { field, .. }) = &result
        && let Some(rest) = field.strip_prefix(&format!("{list}["))
    {
        let (index, suffix) = rest.split_once(']').unwrap_or((rest, ""));
        let index: usize = index.parse().map_err(|_| TestCaseError::fail(format!("{field}: not an index")))?;
        prop_assert!(index < len, "{} names line {} of {}", field, index, len);
        let suffix = suffix.strip_prefix('.').unwrap_or(suffix);
        prop_assert!(suffixes.contains(&suffix), "{}: unknown suffix {:?}", field, suffix);
    }
    refused(&[list], result)
}

fn no_control(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

fn valid_id(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Digits from the first to the last non-zero one (one for zero).
/// Digits of the normalized value, zeros of its integer part included ("10000" has 5).
fn significant_digits(value: Decimal) -> usize {
    value.normalize().mantissa().unsigned_abs().to_string().len()
}

/// The raw text, read by hand: sign, leading zeros and trailing fraction zeros dropped.
fn canonical(raw: &str) -> String {
    let (negative, unsigned) = raw.strip_prefix('-').map_or((false, raw), |rest| (true, rest));
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let whole = whole.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let digits = if fraction.is_empty() { whole.to_owned() } else { format!("{whole}.{fraction}") };
    if negative && digits != "0" { format!("-{digits}") } else { digits }
}

fn documented_grammar(raw: &str) -> bool {
    let unsigned = raw.strip_prefix('-').unwrap_or(raw);
    let (whole, fraction) = unsigned.split_once('.').map_or((unsigned, None), |(whole, fraction)| (whole, Some(fraction)));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    raw.len() <= DECIMAL_LEN_MAX && digits(whole) && fraction.is_none_or(digits)
}

/// An accepted decimal: the documented grammar, the value the text says, and a string that reads
/// back as the same value.
fn check_accepted_decimal(raw: &str, value: Decimal) -> Result<(), TestCaseError> {
    prop_assert!(documented_grammar(raw), "{:?} accepted outside the documented grammar", raw);
    prop_assert_eq!(value.to_string(), canonical(raw), "{:?} read as {}", raw, value);
    let again = convert::decimal("again", &value.to_string()).map_err(|rejection| TestCaseError::fail(format!("{value}: {rejection}")))?;
    prop_assert_eq!(again, value, "{} does not read back", value);
    Ok(())
}

fn check_text(text: &str, max_chars: usize) -> Result<(), TestCaseError> {
    prop_assert!(text.chars().count() <= max_chars && no_control(text), "accepted text {:?}", text);
    Ok(())
}

fn check_e164(phone: &str) -> Result<(), TestCaseError> {
    let digits = phone.strip_prefix('+').unwrap_or_default();
    prop_assert!(
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0'),
        "{:?} is not E.164",
        phone
    );
    Ok(())
}

fn plans() -> BoxedStrategy<PhonePlan> {
    select(vec![
        PhonePlan::default(),
        PhonePlan { country_code: "1".into(), national_digits: 10, trunk_prefix: "1".into() },
        PhonePlan { country_code: "44".into(), national_digits: 10, trunk_prefix: "0".into() },
        PhonePlan { country_code: "49".into(), national_digits: 11, trunk_prefix: String::new() },
        PhonePlan { country_code: "998".into(), national_digits: 9, trunk_prefix: "8".into() },
    ])
    .boxed()
}

fn check_customer(reference: Option<&pb::CustomerRef>, program: &ProgramPolicy) -> Result<(), TestCaseError> {
    use pb::customer_ref::Id;
    let Some(key) = refused(&["customer"], convert::customer(reference, program))? else { return Ok(()) };
    match (reference.and_then(|reference| reference.id.as_ref()), key.kind) {
        (Some(Id::Phone(_)), IdentityKind::Phone) => check_e164(&key.value)?,
        (Some(Id::CardNumber(raw)), IdentityKind::Card) => {
            prop_assert_eq!(&key.value, &raw.trim().to_ascii_uppercase());
            prop_assert!(
                (4..=32).contains(&key.value.len()) && key.value.bytes().all(|b| b.is_ascii_alphanumeric()),
                "card {:?}",
                key.value
            );
        }
        (Some(Id::AppToken(raw)), IdentityKind::AppToken) => {
            prop_assert_eq!(&key.value, raw.trim());
            prop_assert!(
                (16..=128).contains(&key.value.len()) && key.value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "app token {:?}",
                key.value
            );
        }
        (id, kind) => prop_assert!(false, "{:?} became a {:?} key", id, kind),
    }
    Ok(())
}

fn check_lines(raw: &[pb::BasketLine], lines_max: usize) -> Result<(), TestCaseError> {
    let suffixes = ["sku", "category", "brand", "quantity", "unit_price", "line_total"];
    let Some(lines) = refused_in_list("lines", raw.len(), &suffixes, convert::lines(raw, lines_max))? else { return Ok(()) };
    prop_assert!(raw.len() <= lines_max);
    prop_assert_eq!(lines.len(), raw.len());
    for (line, raw) in lines.iter().zip(raw) {
        prop_assert_eq!(line.line_no, raw.line_no);
        prop_assert_eq!((&line.sku, &line.category, &line.brand), (&raw.sku, &raw.category, &raw.brand));
        for text in [&line.sku, &line.category, &line.brand] {
            check_text(text, 64)?;
        }
        for (value, raw) in [(line.quantity, &raw.quantity), (line.unit_price, &raw.unit_price), (line.line_total, &raw.line_total)] {
            check_accepted_decimal(raw, value)?;
        }
        prop_assert_eq!((line.excise, line.promo_price), (raw.excise, raw.promo_price));
    }
    Ok(())
}

fn check_refund_lines(raw: &[pb::RefundLine], lines_max: usize) -> Result<(), TestCaseError> {
    let Some(lines) = refused_in_list("lines", raw.len(), &["quantity"], convert::refund_lines(raw, lines_max))? else { return Ok(()) };
    prop_assert!(raw.len() <= lines_max && lines.len() == raw.len());
    for (line, raw) in lines.iter().zip(raw) {
        prop_assert_eq!(line.line_no, raw.line_no);
        check_accepted_decimal(&raw.quantity, line.quantity)?;
    }
    Ok(())
}

fn check_id(field: &str, raw: &str, max: usize) -> Result<(), TestCaseError> {
    if let Some(id) = refused(&[field], convert::id(field, raw, max))? {
        prop_assert_eq!(&id, raw);
        prop_assert!(valid_id(&id, max) && no_control(&id), "accepted ID {:?}", id);
    }
    Ok(())
}

/// The authenticated caller an origin records; read from JSON so that it needs only the fields a
/// stored credential must have.
fn caller() -> Caller {
    let credential = serde_json::json!({ "id": "fuzz-key", "scopes": [], "key_sha256": "00", "created_at": "2026-01-01T00:00:00Z" });
    let credential: Credential = serde_json::from_value(credential).expect("a minimal credential");
    Caller { program_id: "fuzz".to_owned(), credential: Arc::new(credential) }
}

fn check_origin(store_id: &str, till_id: &str) -> Result<(), TestCaseError> {
    if let Some(origin) = refused(&["store_id", "till_id"], convert::origin(store_id, till_id, ID_LEN_MAX, &caller()))? {
        prop_assert!(valid_id(&origin.store_id, ID_LEN_MAX) && valid_id(&origin.till_id, ID_LEN_MAX), "origin {:?}", origin);
    }
    Ok(())
}

fn check_sale(channel: &str, coupons: &[String]) -> Result<(), TestCaseError> {
    let result = convert::sale(channel, coupons);
    let sale = match &result {
        Err(Rejection::InvalidArgument { field, .. }) if field == "channel" => refused(&["channel"], result)?,
        _ => refused_in_list("coupon_codes", coupons.len(), &[""], result)?,
    };
    let Some(sale) = sale else { return Ok(()) };
    let channel_ok = if channel.is_empty() { sale.channel == "pos" } else { sale.channel == channel && valid_id(channel, 64) };
    prop_assert!(channel_ok, "channel {:?} became {:?}", channel, sale.channel);
    prop_assert!(coupons.len() <= 16 && sale.coupons == coupons && coupons.iter().all(|coupon| valid_id(coupon, 64)));
    Ok(())
}

fn check_tags(field: &str, tags: &[String]) -> Result<(), TestCaseError> {
    if let Some(accepted) = refused_in_list(field, tags.len(), &[""], convert::tags(field, tags))? {
        prop_assert!(accepted.len() <= 32 && accepted == tags && tags.iter().all(|tag| valid_id(tag, 64)), "tags {:?}", tags);
    }
    Ok(())
}

fn check_reason(raw: &str) -> Result<(), TestCaseError> {
    if let Some(reason) = refused(&["reason"], convert::reason(raw))? {
        prop_assert_eq!(&reason, raw);
        check_text(&reason, 256)?;
    }
    Ok(())
}

fn check_amount_or_zero(field: &str, raw: &str) -> Result<(), TestCaseError> {
    if let Some(value) = refused(&[field], convert::amount_or_zero(field, raw))? {
        prop_assert!(value >= Decimal::ZERO, "{:?} accepted as {}", raw, value);
        if raw.is_empty() {
            prop_assert_eq!(value, Decimal::ZERO);
        } else {
            check_accepted_decimal(raw, value)?;
        }
    }
    Ok(())
}

fn check_positive(field: &str, raw: &str, max: Decimal) -> Result<(), TestCaseError> {
    if let Some(value) = refused(&[field], convert::positive(field, raw, max))? {
        prop_assert!(value > Decimal::ZERO && value <= max, "{:?} accepted as {} (max {})", raw, value, max);
        check_accepted_decimal(raw, value)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

fn customer_ref() -> BoxedStrategy<Option<pb::CustomerRef>> {
    use pb::customer_ref::Id;
    let id = prop_oneof![
        Just(None),
        phone_like().prop_map(|raw| Some(Id::Phone(raw))),
        prop_oneof![2 => "[ ]?[A-Za-z0-9]{2,34}[ ]?", 1 => hostile()].prop_map(|raw| Some(Id::CardNumber(raw))),
        prop_oneof![2 => "[ ]?[A-Za-z0-9._-]{14,130}[ ]?", 1 => hostile()].prop_map(|raw| Some(Id::AppToken(raw))),
    ];
    prop::option::weighted(0.9, id.prop_map(|id| pb::CustomerRef { id })).boxed()
}

fn decimal_field() -> BoxedStrategy<String> {
    prop_oneof![4 => well_formed_decimal(), 2 => numeric(), 1 => hostile(), 1 => Just(String::new())].boxed()
}

fn name_field() -> BoxedStrategy<String> {
    prop_oneof![3 => "[a-z0-9-]{1,8}", 1 => "[a-z]{60,70}", 1 => hostile(), 1 => Just(String::new())].boxed()
}

/// A basket line: mostly well-formed (so that whole baskets get accepted), else hostile anywhere.
fn basket_line() -> BoxedStrategy<pb::BasketLine> {
    let well_formed =
        (well_formed_decimal(), well_formed_decimal(), well_formed_decimal(), "[a-z0-9-]{1,8}", "[a-z]{0,8}", "[A-Za-z]{0,8}");
    let hostile_fields = (decimal_field(), decimal_field(), decimal_field(), name_field(), name_field(), name_field());
    let fields = prop_oneof![3 => well_formed, 1 => hostile_fields];
    (any::<u32>(), fields, any::<bool>(), any::<bool>())
        .prop_map(|(line_no, (quantity, unit_price, line_total, sku, category, brand), excise, promo_price)| pb::BasketLine {
            line_no,
            sku,
            category,
            brand,
            quantity,
            unit_price,
            line_total,
            excise,
            promo_price,
        })
        .boxed()
}

fn refund_line() -> BoxedStrategy<pb::RefundLine> {
    (any::<u32>(), prop_oneof![3 => well_formed_decimal(), 1 => decimal_field()])
        .prop_map(|(line_no, quantity)| pb::RefundLine { line_no, quantity })
        .boxed()
}

fn id_field() -> BoxedStrategy<String> {
    prop_oneof![3 => "[A-Za-z0-9._:-]{1,70}", 1 => hostile(), 1 => Just(String::new())].boxed()
}

fn ids(max: usize) -> BoxedStrategy<Vec<String>> {
    prop::collection::vec(id_field(), 0..=max).boxed()
}

/// Runs what the handler of each request runs on its fields (`grpc::service`), checking each.
fn check_request(bytes: &[u8], today: NaiveDate) -> Result<(), TestCaseError> {
    let program = ProgramPolicy::with_defaults("fuzz");
    let customer = |reference: Option<&pb::CustomerRef>| check_customer(reference, &program);
    if let Ok(req) = pb::EnrollRequest::decode(bytes) {
        check_origin(&req.store_id, &req.till_id)?;
        check_id("request_id", &req.request_id, ID_LEN_MAX)?;
        if let Some(phone) = refused(&["phone"], normalize_phone("phone", &req.phone, &program.phone_plan))? {
            check_e164(&phone)?;
        }
        if !req.card_number.is_empty() {
            refused(&["card_number"], normalize_card("card_number", &req.card_number))?;
        }
        if !req.app_token.is_empty() {
            refused(&["app_token"], normalize_app_token("app_token", &req.app_token))?;
        }
        refused(&["name"], convert::name(&req.name))?;
        refused(&["birth_date"], convert::birth_date(&req.birth_date, today))?;
        check_tags("tags", &req.tags)?;
        if req.referrer.is_some() {
            customer(req.referrer.as_ref())?;
        }
        prop_assert_eq!(pb::EnrollRequest::decode(req.encode_to_vec().as_slice()).ok(), Some(req));
    }
    if let Ok(req) = pb::GetAccountRequest::decode(bytes) {
        check_id("program_id", &req.program_id, ID_LEN_MAX)?;
        customer(req.customer.as_ref())?;
    }
    if let Ok(req) = pb::ListTransactionsRequest::decode(bytes) {
        customer(req.customer.as_ref())?;
    }
    if let Ok(req) = pb::AuthorizeRequest::decode(bytes) {
        check_origin(&req.store_id, &req.till_id)?;
        customer(req.customer.as_ref())?;
        check_id("receipt_id", &req.receipt_id, ID_LEN_MAX)?;
        check_lines(&req.lines, LINES_MAX)?;
        check_amount_or_zero("spend_points", &req.spend_points)?;
        check_sale(&req.channel, &req.coupon_codes)?;
        prop_assert_eq!(pb::AuthorizeRequest::decode(req.encode_to_vec().as_slice()).ok(), Some(req));
    }
    if let Ok(req) = pb::RedeemRequest::decode(bytes) {
        check_origin(&req.store_id, &req.till_id)?;
        customer(req.customer.as_ref())?;
        check_id("receipt_id", &req.receipt_id, ID_LEN_MAX)?;
        check_positive("points", &req.points, AMOUNT_MAX)?;
        if !req.hold_id.is_empty() {
            check_id("hold_id", &req.hold_id, 128)?;
        }
        check_lines(&req.lines, LINES_MAX)?;
    }
    if let Ok(req) = pb::AccrueRequest::decode(bytes) {
        check_origin(&req.store_id, &req.till_id)?;
        customer(req.customer.as_ref())?;
        check_id("receipt_id", &req.receipt_id, ID_LEN_MAX)?;
        check_lines(&req.lines, LINES_MAX)?;
        check_sale(&req.channel, &req.coupon_codes)?;
        check_amount_or_zero("change_to_points", &req.change_to_points)?;
        prop_assert_eq!(pb::AccrueRequest::decode(req.encode_to_vec().as_slice()).ok(), Some(req));
    }
    if let Ok(req) = pb::ReverseRequest::decode(bytes) {
        check_origin(&req.store_id, &req.till_id)?;
        check_id("receipt_id", &req.receipt_id, ID_LEN_MAX)?;
        check_reason(&req.reason)?;
    }
    if let Ok(req) = pb::RefundRequest::decode(bytes) {
        check_origin(&req.store_id, &req.till_id)?;
        check_id("receipt_id", &req.receipt_id, ID_LEN_MAX)?;
        check_id("refund_id", &req.refund_id, ID_LEN_MAX)?;
        check_refund_lines(&req.lines, LINES_MAX)?;
        check_reason(&req.reason)?;
        prop_assert_eq!(pb::RefundRequest::decode(req.encode_to_vec().as_slice()).ok(), Some(req));
    }
    if let Ok(req) = pb::AwardBonusRequest::decode(bytes) {
        check_origin(&req.store_id, &req.till_id)?;
        customer(req.customer.as_ref())?;
        check_id("request_id", &req.request_id, ID_LEN_MAX)?;
        check_id("event", &req.event, 64)?;
    }
    Ok(())
}

/// One protobuf field as a till could send it (or could not: wire types need not match).
#[derive(Clone, Debug)]
enum WireField {
    Varint(u32, u64),
    Fixed64(u32, u64),
    Fixed32(u32, u32),
    Bytes(u32, Vec<u8>),
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn encode_fields(fields: &[WireField]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        let (number, wire_type) = match field {
            WireField::Varint(number, _) => (number, 0),
            WireField::Fixed64(number, _) => (number, 1),
            WireField::Bytes(number, _) => (number, 2),
            WireField::Fixed32(number, _) => (number, 5),
        };
        push_varint(&mut out, (u64::from(*number) << 3) | wire_type);
        match field {
            WireField::Varint(_, value) => push_varint(&mut out, *value),
            WireField::Fixed64(_, value) => out.extend_from_slice(&value.to_le_bytes()),
            WireField::Fixed32(_, value) => out.extend_from_slice(&value.to_le_bytes()),
            WireField::Bytes(_, bytes) => {
                push_varint(&mut out, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
        }
    }
    out
}

/// A random field stream over the request messages' field numbers (1 to 11): strings, nested
/// customer references, basket and refund lines, varints and the odd wrong wire type.
fn wire_fields() -> BoxedStrategy<Vec<WireField>> {
    let number = prop_oneof![9 => 1_u32..=11, 1 => any::<u32>().prop_map(|number| number % (1 << 29))];
    let payload = prop_oneof![
        4 => prop_oneof![hostile(), id_field(), decimal_field()].prop_map(String::into_bytes),
        2 => customer_ref().prop_map(|reference| reference.unwrap_or_default().encode_to_vec()),
        2 => basket_line().prop_map(|line| line.encode_to_vec()),
        1 => refund_line().prop_map(|line| line.encode_to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..32),
    ];
    let field = prop_oneof![
        6 => (number.clone(), payload).prop_map(|(number, bytes)| WireField::Bytes(number, bytes)),
        2 => (number.clone(), any::<u64>()).prop_map(|(number, value)| WireField::Varint(number, value)),
        1 => (number.clone(), any::<u64>()).prop_map(|(number, value)| WireField::Fixed64(number, value)),
        1 => (number, any::<u32>()).prop_map(|(number, value)| WireField::Fixed32(number, value)),
    ];
    prop::collection::vec(field, 0..12).boxed()
}

/// The fields of a request, for any of the request messages.
#[derive(Clone, Debug)]
struct RequestFields {
    ids: [String; 5],
    customer: Option<pb::CustomerRef>,
    lines: Vec<pb::BasketLine>,
    refund_lines: Vec<pb::RefundLine>,
    amount: String,
    text: String,
    list: Vec<String>,
}

/// A request message of a random kind with hostile fields, encoded. The messages gain optional
/// fields over time; `..Default::default()` keeps this compiling when they do.
#[allow(clippy::needless_update)]
fn typed_request() -> BoxedStrategy<Vec<u8>> {
    let lines = prop::collection::vec(basket_line(), 0..6);
    let refund_lines = prop::collection::vec(refund_line(), 0..6);
    let texts = (prop_oneof![2 => phone_like(), 1 => hostile()], decimal_field(), ids(6));
    let fields = (prop::array::uniform5(id_field()), customer_ref(), lines, refund_lines, texts).prop_map(
        |(ids, customer, lines, refund_lines, (text, amount, list))| RequestFields {
            ids,
            customer,
            lines,
            refund_lines,
            amount,
            text,
            list,
        },
    );
    (0_u8..7, fields)
        .prop_map(|(kind, fields)| {
            let RequestFields {
                ids: [program_id, store_id, till_id, receipt_id, other],
                customer,
                lines,
                refund_lines,
                amount,
                text,
                list,
            } = fields;
            match kind {
                0 => pb::AccrueRequest {
                    program_id,
                    store_id,
                    till_id,
                    receipt_id,
                    customer,
                    lines,
                    channel: other,
                    coupon_codes: list,
                    change_to_points: amount,
                    ..Default::default()
                }
                .encode_to_vec(),
                1 => pb::AuthorizeRequest {
                    program_id,
                    store_id,
                    till_id,
                    receipt_id,
                    customer,
                    lines,
                    spend_points: amount,
                    channel: other,
                    coupon_codes: list,
                    ..Default::default()
                }
                .encode_to_vec(),
                2 => pb::RedeemRequest {
                    program_id,
                    store_id,
                    till_id,
                    receipt_id,
                    customer,
                    points: amount,
                    hold_id: other,
                    lines,
                    ..Default::default()
                }
                .encode_to_vec(),
                3 => pb::RefundRequest {
                    program_id,
                    store_id,
                    till_id,
                    receipt_id,
                    refund_id: other,
                    lines: refund_lines,
                    reason: text,
                    ..Default::default()
                }
                .encode_to_vec(),
                4 => pb::EnrollRequest {
                    program_id,
                    store_id,
                    till_id,
                    request_id: receipt_id,
                    phone: text,
                    card_number: other,
                    name: amount,
                    tags: list,
                    referrer: customer,
                    ..Default::default()
                }
                .encode_to_vec(),
                5 => pb::AwardBonusRequest {
                    program_id,
                    store_id,
                    till_id,
                    request_id: receipt_id,
                    customer,
                    event: other,
                    ..Default::default()
                }
                .encode_to_vec(),
                _ => pb::ReverseRequest { program_id, store_id, till_id, receipt_id, reason: text, ..Default::default() }.encode_to_vec(),
            }
        })
        .boxed()
}

/// Bytes to decode: random; a random field stream; a request message, alone, followed by a
/// random field stream (protobuf merges what follows), or with bytes flipped, inserted or cut.
fn request_bytes() -> BoxedStrategy<Vec<u8>> {
    let edits = prop::collection::vec((any::<usize>(), any::<u8>(), 0_u8..3), 1..6);
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        2 => wire_fields().prop_map(|fields| encode_fields(&fields)),
        3 => typed_request(),
        1 => (typed_request(), wire_fields()).prop_map(|(mut bytes, fields)| {
            bytes.extend(encode_fields(&fields));
            bytes
        }),
        2 => (typed_request(), edits).prop_map(|(mut bytes, edits)| {
            for (at, byte, kind) in edits {
                let at = at % (bytes.len() + 1);
                match kind {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => bytes.truncate(at),
                }
            }
            bytes
        }),
    ]
    .boxed()
}

fn today() -> BoxedStrategy<NaiveDate> {
    (1950_i32..=2100, 1_u32..=366).prop_map(|(year, ordinal)| NaiveDate::from_yo_opt(year, ordinal).unwrap_or(NaiveDate::MIN)).boxed()
}

// ---------------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    /// Decimals: refused with the field named, or accepted exactly as the documented grammar says,
    /// reading back from their string; amounts not negative; positive amounts within (0, max].
    #[test]
    fn decimals_are_refused_by_field_or_read_exactly(raw in prop_oneof![numeric(), hostile()], field in "[a-z_]{1,12}", max in prop_oneof![Just(AMOUNT_MAX), Just(Decimal::MAX), (1_i64..=1_000_000).prop_map(Decimal::from)]) {
        if let Some(value) = refused(&[&field], convert::decimal(&field, &raw))? {
            check_accepted_decimal(&raw, value)?;
        }
        check_amount_or_zero(&field, &raw)?;
        check_positive(&field, &raw, max)?;
    }

    /// What the documented grammar allows, in at most 28 digits, is accepted.
    #[test]
    fn well_formed_decimals_of_28_digits_are_accepted(
        raw in prop_oneof!["-?[0-9]{1,28}", "-?[0-9]{1,14}\\.[0-9]{1,14}", "-?0\\.[0-9]{1,27}", "-?[0-9]{1,27}\\.[0-9]"]
    ) {
        prop_assert!(raw.bytes().filter(u8::is_ascii_digit).count() <= SIGNIFICANT_DIGITS_MAX);
        let value = convert::decimal("f", &raw).map_err(|rejection| TestCaseError::fail(format!("{raw:?}: {rejection}")))?;
        check_accepted_decimal(&raw, value)?;
    }

    /// IDs, free text, reasons, origins, names, birth dates, sale context and tags.
    #[test]
    fn ids_and_text_are_refused_by_field_or_within_limits(
        raw in hostile(),
        other in id_field(),
        max in prop_oneof![Just(ID_LEN_MAX), 1_usize..=300],
        list in ids(20),
        today in today(),
        date in prop_oneof![3 => "[+-]?[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}", 1 => hostile(), 1 => Just(String::new())],
    ) {
        check_id("receipt_id", &raw, max)?;
        check_id("receipt_id", &other, max)?;
        if let Some(text) = refused(&["note"], convert::text("note", &raw, max))? {
            prop_assert_eq!(&text, &raw);
            check_text(&text, max)?;
        }
        check_reason(&raw)?;
        check_origin(&raw, &other)?;
        check_origin(&other, &raw)?;
        if let Some(name) = refused(&["name"], convert::name(&raw))? {
            match name {
                Some(name) => {
                    prop_assert_eq!(name.as_str(), raw.trim());
                    check_text(&name, 128)?;
                }
                None => prop_assert!(raw.trim().is_empty()),
            }
        }
        for raw_date in [&date, &raw] {
            if let Some(Some(born)) = refused(&["birth_date"], convert::birth_date(raw_date, today))? {
                prop_assert!(born <= today && born >= NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN), "{:?} on {}", raw_date, today);
            }
        }
        check_sale(&raw, &list)?;
        check_sale(&other, &list)?;
        check_sale("", &list)?;
        check_tags("tags", &list)?;
    }

    /// Phone numbers, card numbers and app tokens: refused by field, or in their normal form.
    #[test]
    fn identifiers_are_refused_by_field_or_normalised(phone in phone_like(), raw in hostile(), plan in plans(), field in "[a-z_.]{1,16}") {
        for text in [&phone, &raw] {
            if let Some(normal) = refused(&[&field], normalize_phone(&field, text, &plan))? {
                check_e164(&normal)?;
            }
            if let Some(card) = refused(&[&field], normalize_card(&field, text))? {
                prop_assert!((4..=32).contains(&card.len()) && card.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()), "card {:?}", card);
            }
            if let Some(token) = refused(&[&field], normalize_app_token(&field, text))? {
                prop_assert!((16..=128).contains(&token.len()) && no_control(&token), "app token {:?}", token);
            }
        }
    }

    /// An international number with any of the allowed separators is accepted as its digits.
    #[test]
    fn e164_numbers_with_separators_are_accepted((digits, separators) in e164(), plan in plans()) {
        let raw = with_separators(&format!("+{digits}"), &separators);
        let normal = normalize_phone("phone", &raw, &plan).map_err(|rejection| TestCaseError::fail(format!("{raw:?}: {rejection}")))?;
        prop_assert_eq!(normal, format!("+{}", digits));
    }

    /// Customer references, basket lines and refund lines as prost messages.
    #[test]
    fn messages_are_refused_by_field_or_converted(
        reference in customer_ref(),
        plan in plans(),
        lines in prop::collection::vec(basket_line(), 0..12),
        refund_lines in prop::collection::vec(refund_line(), 0..12),
        lines_max in prop_oneof![Just(LINES_MAX), 0_usize..=12],
    ) {
        let mut program = ProgramPolicy::with_defaults("fuzz");
        program.phone_plan = plan;
        check_customer(reference.as_ref(), &program)?;
        check_lines(&lines, lines_max)?;
        check_refund_lines(&refund_lines, lines_max)?;
    }

    /// Arbitrary bytes decode as each request (or fail to) without a panic, and what decodes
    /// passes through the handlers' conversions without one.
    #[test]
    fn arbitrary_bytes_decode_and_convert_without_panics(bytes in request_bytes(), today in today()) {
        check_request(&bytes, today)?;
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Found here (fixed): "1000000000000000000000000000.1" (29 significant digits) was accepted,
    /// as were "10000000000000000000000000001" and "79228162514264337593543950335"
    /// (Decimal::MAX): `Decimal::from_str_exact` takes 29 digits when the value fits in 96 bits,
    /// and loyalty.proto documents at most 28.
    #[test]
    fn accepted_decimals_have_at_most_28_significant_digits(
        raw in prop_oneof![numeric(), "-?[1-9][0-9]{27,28}(\\.[0-9]{1,3})?", "-?[1-9]0{27,28}(\\.0{1,3})?"]
    ) {
        if let Ok(value) = convert::decimal("f", &raw) {
            prop_assert!(significant_digits(value) <= SIGNIFICANT_DIGITS_MAX, "{:?} accepted with {} significant digits", raw, significant_digits(value));
        }
    }
}

/// Guards against vacuous generators: some customers, baskets and decoded requests get through
/// validation, so the properties about accepted values are exercised.
#[test]
fn generators_reach_accepted_values() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let program = ProgramPolicy::with_defaults("fuzz");
    let inputs = (customer_ref(), prop::collection::vec(basket_line(), 1..4), request_bytes());
    let (mut customers, mut baskets, mut decoded) = (0, 0, 0);
    for _ in 0..300 {
        let Ok((reference, lines, bytes)) = inputs.new_tree(&mut runner).map(|tree| tree.current()) else { continue };
        customers += usize::from(convert::customer(reference.as_ref(), &program).is_ok());
        baskets += usize::from(convert::lines(&lines, LINES_MAX).is_ok());
        decoded +=
            usize::from(pb::AccrueRequest::decode(bytes.as_slice()).is_ok_and(|req| !req.lines.is_empty() || req.customer.is_some()));
    }
    // Deterministic, so these are floors with a margin, not rates: 29 requests decode since
    // AccrueRequest gained occurred_at (field 10), 30 before.
    assert!(customers >= 60 && baskets >= 60 && decoded >= 20, "of 300: {customers} customers, {baskets} baskets, {decoded} requests");
}
