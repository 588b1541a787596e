//! Many tills spending one customer's points at once: never an overdraft, and the successes add up
//! exactly to the decrease.

use chrono::Duration;
use loyalty_tests::*;
use rust_decimal::Decimal;
use tonic::Code;
use tonic_types::StatusExt;

async fn funded_customer(server: &TestServer, phone_number: &str, points_receipt_total: &str) -> Option<loyalty_proto::v1::CustomerRef> {
    let mut client = server.client().await;
    client.enroll(enroll(&format!("enr-{}", phone_number.trim_start_matches('+')), phone_number, "")).await.expect("enroll");
    let customer = phone(phone_number);
    client
        .accrue(accrue(
            &format!("fund-{}", phone_number.trim_start_matches('+')),
            customer.clone(),
            vec![line(1, "gold", "1", points_receipt_total)],
        ))
        .await
        .expect("fund");
    server.clock.advance(Duration::days(1));
    customer
}

#[tokio::test]
async fn two_hundred_concurrent_spends_never_overdraw() {
    let server = TestServer::start().await;
    // 1% of 100,000.00 = 1,000 points.
    let customer = funded_customer(&server, "+77010000100", "100000.00").await;
    let mut client = server.client().await;
    assert_eq!(balance_of(&mut client, customer.clone()).await.available, "1000");

    let mut calls = Vec::new();
    for index in 0..200 {
        // Ten connections shared by the 200 calls, as ten tills would.
        let mut client = if index < 10 { server.client().await } else { client.clone() };
        let request = redeem(&format!("spend-{index}"), customer.clone(), "7", "", vec![line(1, "coffee", "1", "100.00")]);
        calls.push(tokio::spawn(async move { client.redeem(request).await }));
    }
    let (mut succeeded, mut refused) = (0u32, 0u32);
    for call in calls {
        match call.await.expect("task") {
            Ok(response) => {
                assert_eq!(response.into_inner().redeemed, "7");
                succeeded += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(status.get_details_error_info().expect("info").reason, "INSUFFICIENT_POINTS");
                refused += 1;
            }
        }
    }
    // Calls on one account are serialised, so every spend that fits succeeds: floor(1000 / 7).
    assert_eq!(succeeded, 142);
    assert_eq!(refused, 58);
    let balance = balance_of(&mut client, customer.clone()).await;
    assert_eq!(dec(&balance.available), Decimal::from(1000 - 7 * 142));
    let ledger = full_ledger(&mut client, customer).await;
    let spent: Decimal =
        ledger.iter().filter(|entry| entry.kind == loyalty_proto::v1::EntryKind::Spend as i32).map(|entry| dec(&entry.amount)).sum();
    assert_eq!(spent, Decimal::from(-7 * 142));
    assert_eq!(ledger.iter().map(|entry| dec(&entry.amount)).sum::<Decimal>(), dec(&balance.balance));
    server.stop().await;
}

#[tokio::test]
async fn concurrent_holds_never_reserve_more_than_there_is() {
    let server = TestServer::start().await;
    let customer = funded_customer(&server, "+77010000101", "100000.00").await;
    let client = server.client().await;
    let mut calls = Vec::new();
    for index in 0..200 {
        let mut client = client.clone();
        let request = authorize(&format!("hold-{index}"), customer.clone(), vec![line(1, "coffee", "1", "100.00")], "10");
        calls.push(tokio::spawn(async move { client.authorize(request).await }));
    }
    let mut held = 0;
    for call in calls {
        if call.await.expect("task").is_ok() {
            held += 1;
        }
    }
    assert_eq!(held, 100, "1000 points hold exactly one hundred holds of 10");
    let mut client = client;
    let balance = balance_of(&mut client, customer).await;
    assert_eq!((balance.held.as_str(), balance.spendable.as_str(), balance.available.as_str()), ("1000", "0", "1000"));
    server.stop().await;
}
