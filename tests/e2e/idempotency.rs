//! Replays return exactly the first answer and change nothing; the same key with another payload is
//! ALREADY_EXISTS naming the key; concurrent duplicates apply once.

use chrono::Duration;
use loyalty_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

use crate::expect_error;

#[tokio::test]
async fn replays_answer_the_first_response_and_change_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let first_enrol = client.enroll(enroll("e-1", "+77010000010", "")).await.expect("enroll").into_inner();
    let replayed_enrol = client.enroll(enroll("e-1", "+77010000010", "")).await.expect("enroll replay").into_inner();
    assert_eq!(first_enrol, replayed_enrol);
    let customer = phone("+77010000010");

    let basket = vec![line(1, "tv", "1", "50000.00")];
    let first = client.accrue(accrue("R1", customer.clone(), basket.clone())).await.expect("accrue").into_inner();
    server.clock.advance(Duration::days(1));
    client.accrue(accrue("R2", customer.clone(), vec![line(1, "kettle", "1", "10000.00")])).await.expect("accrue R2");
    // The replay answers what the first call answered, balance included, though the account moved on.
    let replay = client.accrue(accrue("R1", customer.clone(), basket.clone())).await.expect("replay").into_inner();
    assert_eq!(first, replay);
    let ledger = full_ledger(&mut client, customer.clone()).await;
    assert_eq!(ledger.len(), 2, "a replay writes nothing");

    let auth =
        client.authorize(authorize("R3", customer.clone(), vec![line(1, "a", "1", "1000.00")], "100")).await.expect("hold").into_inner();
    let auth_again = client
        .authorize(authorize("R3", customer.clone(), vec![line(1, "a", "1", "1000.00")], "100"))
        .await
        .expect("hold replay")
        .into_inner();
    assert_eq!(auth, auth_again, "same hold, not a second one");
    assert_eq!(balance_of(&mut client, customer.clone()).await.held, "100");

    let hold_id = auth.hold.expect("hold").hold_id;
    let spent = client.redeem(redeem("R3", customer.clone(), "100", &hold_id, vec![])).await.expect("redeem").into_inner();
    let spent_again = client.redeem(redeem("R3", customer.clone(), "100", &hold_id, vec![])).await.expect("redeem replay").into_inner();
    assert_eq!(spent, spent_again);
    assert_eq!(balance_of(&mut client, customer.clone()).await.available, "400");

    let refunded = client.refund(refund("R1", "rf", &[(1, "1")])).await.expect("refund").into_inner();
    let refunded_again = client.refund(refund("R1", "rf", &[(1, "1")])).await.expect("refund replay").into_inner();
    assert_eq!(refunded, refunded_again);
    let reversed = client.reverse(reverse("R3")).await.expect("reverse").into_inner();
    let reversed_again = client.reverse(reverse("R3")).await.expect("reverse replay").into_inner();
    assert_eq!(reversed, reversed_again);
    server.stop().await;
}

#[tokio::test]
async fn the_same_key_with_another_payload_is_already_exists_naming_the_key() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.enroll(enroll("e-1", "+77010000011", "")).await.expect("enroll");
    let customer = phone("+77010000011");
    client.accrue(accrue("R1", customer.clone(), vec![line(1, "tv", "1", "50000.00")])).await.expect("accrue");

    let status = expect_error(
        client.accrue(accrue("R1", customer.clone(), vec![line(1, "tv", "1", "40000.00")])).await,
        Code::AlreadyExists,
        "IDEMPOTENCY_CONFLICT",
    );
    let info = status.get_details_error_info().expect("info");
    assert_eq!(info.metadata.get("key").map(String::as_str), Some("R1"));
    assert!(status.message().contains("R1"), "{}", status.message());

    // The same receipt ID for another customer.
    expect_error(
        client.accrue(accrue("R1", card("999000111"), vec![line(1, "tv", "1", "50000.00")])).await,
        Code::AlreadyExists,
        "IDEMPOTENCY_CONFLICT",
    );
    // The same receipt ID from another till is another receipt's payload.
    let mut other_till = accrue("R1", customer.clone(), vec![line(1, "tv", "1", "50000.00")]);
    other_till.till_id = "till-2".into();
    expect_error(client.accrue(other_till).await, Code::AlreadyExists, "IDEMPOTENCY_CONFLICT");

    client.refund(refund("R1", "rf-1", &[(1, "0.5")])).await.expect("refund");
    let status = expect_error(client.refund(refund("R1", "rf-1", &[(1, "0.25")])).await, Code::AlreadyExists, "IDEMPOTENCY_CONFLICT");
    assert_eq!(status.get_details_error_info().expect("info").metadata.get("key").map(String::as_str), Some("rf-1"));

    expect_error(client.enroll(enroll("e-1", "+77010000099", "")).await, Code::AlreadyExists, "IDEMPOTENCY_CONFLICT");
    expect_error(client.enroll(enroll("e-2", "+7 701 000 00 11", "")).await, Code::AlreadyExists, "PHONE_ALREADY_REGISTERED");
    let ledger = full_ledger(&mut client, customer).await;
    assert_eq!(ledger.len(), 2, "one earn and one claw-back; rejected calls wrote nothing");
    server.stop().await;
}

#[tokio::test]
async fn concurrent_duplicates_apply_exactly_once() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let customer = card("5551112223");
    let mut calls = Vec::new();
    for _ in 0..50 {
        let mut client = server.client().await;
        let request = accrue("DUP", customer.clone(), vec![line(1, "tv", "1", "12345.00")]);
        calls.push(tokio::spawn(async move { client.accrue(request).await.map(|response| response.into_inner()) }));
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.expect("task").expect("every duplicate succeeds"));
    }
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]), "all duplicates get the first answer");
    let ledger = full_ledger(&mut client, customer).await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].amount, "123");
    server.stop().await;
}
