//! Every kind of bad call gets its status, a stable reason and, for bad input, the field.

use chrono::Duration;
use loyalty_proto::v1 as pb;
use loyalty_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{bad_field, expect_error};

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.enroll(enroll("e", "+77010000300", "")).await.expect("enroll");
    let customer = phone("+77010000300");
    let good = vec![line(1, "tv", "1", "1000.00")];

    let mut negative = line(1, "tv", "1", "1000.00");
    negative.line_total = "-5.00".into();
    let mut absurd = line(1, "tv", "1", "1000.00");
    absurd.line_total = "99999999999999.00".into();
    let mut not_decimal = line(1, "tv", "1", "1000.00");
    not_decimal.quantity = "1e3".into();
    let mut zero_quantity = line(1, "tv", "1", "1000.00");
    zero_quantity.quantity = "0".into();
    let too_many: Vec<pb::BasketLine> = (0..501).map(|index| line(index, "x", "1", "1.00")).collect();
    let cases: Vec<(pb::AccrueRequest, &str)> = vec![
        (accrue("R1", customer.clone(), vec![]), "lines"),
        (accrue("R1", customer.clone(), too_many), "lines"),
        (accrue("R1", customer.clone(), vec![negative]), "lines[0].line_total"),
        (accrue("R1", customer.clone(), vec![absurd]), "lines[0].line_total"),
        (accrue("R1", customer.clone(), vec![not_decimal]), "lines[0].quantity"),
        (accrue("R1", customer.clone(), vec![zero_quantity]), "lines[0].quantity"),
        (accrue("R1", customer.clone(), vec![line(1, "a", "1", "1.00"), line(1, "b", "1", "1.00")]), "lines[1].line_no"),
        (accrue("bad receipt id!", customer.clone(), good.clone()), "receipt_id"),
        (accrue("", customer.clone(), good.clone()), "receipt_id"),
        (accrue(&"x".repeat(65), customer.clone(), good.clone()), "receipt_id"),
        (accrue("R1", phone("12-34"), good.clone()), "customer.phone"),
        (accrue("R1", card("??"), good.clone()), "customer.card_number"),
        (accrue("R1", None, good.clone()), "customer"),
    ];
    for (request, field) in cases {
        let status = expect_error(client.accrue(request).await, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(bad_field(&status), field, "{status:?}");
    }
    let mut no_store = accrue("R1", customer.clone(), good.clone());
    no_store.store_id.clear();
    assert_eq!(bad_field(&expect_error(client.accrue(no_store).await, Code::InvalidArgument, "INVALID_ARGUMENT")), "store_id");
    let status = expect_error(
        client.authorize(authorize("R1", customer.clone(), good.clone(), "-10")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(bad_field(&status), "spend_points");
    let status = expect_error(
        client.authorize(authorize("R1", customer.clone(), good.clone(), "1.5")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(bad_field(&status), "spend_points", "whole points only in this program");
    let status =
        expect_error(client.redeem(redeem("R1", customer.clone(), "0", "", good.clone())).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&status), "points");
    let status =
        expect_error(client.redeem(redeem("R1", customer.clone(), "10", "", vec![])).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&status), "lines");
    let mut long_hold = authorize("R1", customer.clone(), good.clone(), "10");
    long_hold.hold_ttl_seconds = 86_400;
    assert_eq!(bad_field(&expect_error(client.authorize(long_hold).await, Code::InvalidArgument, "INVALID_ARGUMENT")), "hold_ttl_seconds");
    let status = expect_error(client.enroll(enroll("e2", "not a phone", "")).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&status), "phone");

    // Nothing was written by any of them.
    assert!(full_ledger(&mut client, customer).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn unknown_things_are_not_found() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    expect_error(client.get_account(get_account(phone("+77019999999"))).await, Code::NotFound, "CUSTOMER_NOT_FOUND");
    expect_error(
        client.accrue(accrue("R1", phone("+77019999999"), vec![line(1, "x", "1", "1.00")])).await,
        Code::NotFound,
        "CUSTOMER_NOT_FOUND",
    );
    expect_error(client.refund(refund("nope", "rf", &[(1, "1")])).await, Code::NotFound, "RECEIPT_NOT_FOUND");
    expect_error(client.reverse(reverse("nope")).await, Code::NotFound, "RECEIPT_NOT_FOUND");
    let mut other_program = get_account(phone("+77019999999"));
    other_program.program_id = "elsewhere".into();
    // A key of one program gets the same answer for any other program, existing or not.
    expect_error(client.get_account(other_program).await, Code::PermissionDenied, "PERMISSION_DENIED");

    client.enroll(enroll("e", "+77010000301", "")).await.expect("enroll");
    let customer = phone("+77010000301");
    client.accrue(accrue("R1", customer.clone(), vec![line(1, "x", "1", "50000.00")])).await.expect("accrue");
    server.clock.advance(Duration::days(1));
    client.authorize(authorize("R2", customer.clone(), vec![line(1, "x", "1", "1000.00")], "10")).await.expect("hold");
    expect_error(client.redeem(redeem("R2", customer, "10", "hold-unknown", vec![])).await, Code::NotFound, "HOLD_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn business_rules_are_failed_precondition() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.enroll(enroll("e", "+77010000302", "")).await.expect("enroll");
    let customer = phone("+77010000302");
    client.accrue(accrue("R1", customer.clone(), vec![line(1, "x", "2", "10000.00")])).await.expect("accrue");
    server.clock.advance(Duration::days(1));
    let basket = vec![line(1, "x", "1", "1000.00")];

    // 200 points, receipt cap 500: the balance binds.
    expect_error(
        client.authorize(authorize("R2", customer.clone(), basket.clone(), "201")).await,
        Code::FailedPrecondition,
        "INSUFFICIENT_POINTS",
    );
    // A 100.00 receipt caps spending at 50.
    expect_error(
        client.authorize(authorize("R2", customer.clone(), vec![line(1, "x", "1", "100.00")], "51")).await,
        Code::FailedPrecondition,
        "EXCEEDS_RECEIPT_CAP",
    );
    let hold =
        client.authorize(authorize("R3", customer.clone(), basket.clone(), "100")).await.expect("hold").into_inner().hold.expect("hold");
    expect_error(
        client.redeem(redeem("R3", customer.clone(), "101", &hold.hold_id, vec![])).await,
        Code::FailedPrecondition,
        "CAPTURE_EXCEEDS_HOLD",
    );
    // Accrue closes the receipt and releases the unused hold; no spending on it afterwards.
    let closed = client.accrue(accrue("R3", customer.clone(), basket.clone())).await.expect("accrue R3").into_inner();
    assert_eq!(closed.hold_released, "100");
    expect_error(
        client.redeem(redeem("R3", customer.clone(), "10", &hold.hold_id, vec![])).await,
        Code::FailedPrecondition,
        "RECEIPT_CLOSED",
    );
    // A refund needs a paid receipt, and may not exceed it.
    client.authorize(authorize("R4", customer.clone(), basket.clone(), "10")).await.expect("hold R4");
    expect_error(client.refund(refund("R4", "rf", &[(1, "1")])).await, Code::FailedPrecondition, "RECEIPT_NOT_CLOSED");
    expect_error(client.refund(refund("R1", "rf", &[(1, "3")])).await, Code::FailedPrecondition, "REFUND_EXCEEDS_RECEIPT");
    let status = expect_error(client.refund(refund("R1", "rf", &[(7, "1")])).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&status), "lines[0].line_no");
    // After a reversal nothing more happens on the receipt.
    client.reverse(reverse("R1")).await.expect("reverse");
    expect_error(client.refund(refund("R1", "rf-2", &[(1, "1")])).await, Code::FailedPrecondition, "RECEIPT_REVERSED");
    server.stop().await;
}

#[tokio::test]
async fn clawback_of_spent_points_follows_the_program_policy() {
    // Under "reject", a refund that would claw back already-spent points is refused.
    let server =
        TestServer::start_with(|config| config.programs[0].refund_policy = loyalty_core::program::RefundPolicy::Reject, |store| store)
            .await;
    let mut client = server.client().await;
    client.enroll(enroll("e", "+77010000303", "")).await.expect("enroll");
    let customer = phone("+77010000303");
    client.accrue(accrue("R1", customer.clone(), vec![line(1, "x", "1", "20000.00")])).await.expect("accrue");
    server.clock.advance(Duration::days(1));
    client.redeem(redeem("R2", customer.clone(), "200", "", vec![line(1, "y", "1", "1000.00")])).await.expect("spend all");
    let status = expect_error(client.refund(refund("R1", "rf", &[(1, "1")])).await, Code::FailedPrecondition, "CLAWBACK_EXCEEDS_BALANCE");
    assert!(status.message().contains("200"), "{}", status.message());
    assert_eq!(balance_of(&mut client, customer.clone()).await.balance, "0", "nothing half-written");
    server.stop().await;

    // Under "allow_negative" (the default), the shortfall becomes debt, paid off by the next points.
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.enroll(enroll("e", "+77010000303", "")).await.expect("enroll");
    client.accrue(accrue("R1", customer.clone(), vec![line(1, "x", "1", "20000.00")])).await.expect("accrue");
    server.clock.advance(Duration::days(1));
    client.redeem(redeem("R2", customer.clone(), "200", "", vec![line(1, "y", "1", "1000.00")])).await.expect("spend all");
    let refunded = client.refund(refund("R1", "rf", &[(1, "1")])).await.expect("refund").into_inner();
    assert_eq!(refunded.debt_created, "200");
    let balance = refunded.balance.expect("balance");
    assert_eq!((balance.debt.as_str(), balance.balance.as_str()), ("200", "-200"));
    client.accrue(accrue("R3", customer.clone(), vec![line(1, "x", "1", "30000.00")])).await.expect("accrue R3");
    let balance = balance_of(&mut client, customer).await;
    assert_eq!((balance.debt.as_str(), balance.pending.as_str(), balance.balance.as_str()), ("0", "100", "100"));
    server.stop().await;
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted_with_their_sizes() {
    let server = TestServer::start_with(|config| config.limits.message_bytes_max = 4096, |store| store).await;
    let mut client = server.client().await;
    let mut request = accrue("R1", card("1234567"), vec![line(1, "x", "1", "1.00")]);
    request.lines[0].category = "c".repeat(8192);
    // RESOURCE_EXHAUSTED, as gRPC specifies for a message over the receiver's limit, with the
    // sizes: a till can tell "the basket is too big" from a field out of range.
    let status = expect_error(client.accrue(request).await, Code::ResourceExhausted, "MESSAGE_TOO_LARGE");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.metadata.get("limit").map(String::as_str), Some("4096"), "{status:?}");
    let bytes: usize = info.metadata.get("bytes").expect("bytes").parse().expect("a number");
    assert!(bytes > 8192, "{status:?}");
    assert!(status.message().contains("more than the 4096 bytes this engine accepts"), "{status:?}");
    // Nothing was written for it, and the connection carries on.
    expect_error(client.get_account(get_account(card("1234567"))).await, Code::NotFound, "CUSTOMER_NOT_FOUND");
    server.stop().await;
}
