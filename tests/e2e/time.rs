//! Time-driven behaviour under an injected clock: pending periods, hold expiry, points expiry.

use chrono::{Duration, TimeZone, Utc};
use loyalty_tests::*;
use rust_decimal::Decimal;
use tonic::Code;

use crate::expect_error;

#[tokio::test]
async fn points_become_spendable_at_the_next_local_midnight() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.enroll(enroll("e", "+77010000200", "")).await.expect("enroll");
    let customer = phone("+77010000200");
    let earned = client.accrue(accrue("R1", customer.clone(), vec![line(1, "tv", "1", "20000.00")])).await.expect("accrue").into_inner();
    // Earned at 11:00 in Almaty (UTC+5) on 10 March: spendable from 11 March 00:00 local = 10 March 19:00 UTC.
    let midnight = Utc.with_ymd_and_hms(2026, 3, 10, 19, 0, 0).single().expect("time");
    assert_eq!(earned.available_from.expect("available_from").seconds, midnight.timestamp());

    server.clock.set(midnight - Duration::seconds(1));
    let balance = balance_of(&mut client, customer.clone()).await;
    assert_eq!((balance.pending.as_str(), balance.available.as_str()), ("200", "0"));
    expect_error(
        client.redeem(redeem("R2", customer.clone(), "10", "", vec![line(1, "x", "1", "100.00")])).await,
        Code::FailedPrecondition,
        "INSUFFICIENT_POINTS",
    );
    server.clock.set(midnight);
    let balance = balance_of(&mut client, customer.clone()).await;
    assert_eq!((balance.pending.as_str(), balance.available.as_str()), ("0", "200"));
    server.stop().await;
}

#[tokio::test]
async fn an_expired_hold_releases_its_points_and_cannot_be_captured() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.enroll(enroll("e", "+77010000201", "")).await.expect("enroll");
    let customer = phone("+77010000201");
    client.accrue(accrue("R1", customer.clone(), vec![line(1, "tv", "1", "20000.00")])).await.expect("accrue");
    server.clock.advance(Duration::days(1));

    let hold = client
        .authorize(authorize("R2", customer.clone(), vec![line(1, "x", "1", "1000.00")], "150"))
        .await
        .expect("hold")
        .into_inner()
        .hold
        .expect("hold");
    assert_eq!(balance_of(&mut client, customer.clone()).await.spendable, "50");
    // The default hold lives 15 minutes.
    server.clock.advance(Duration::minutes(15));
    let balance = balance_of(&mut client, customer.clone()).await;
    assert_eq!((balance.held.as_str(), balance.spendable.as_str()), ("0", "200"));
    expect_error(
        client.redeem(redeem("R2", customer.clone(), "150", &hold.hold_id, vec![])).await,
        Code::FailedPrecondition,
        "HOLD_EXPIRED",
    );
    // The till may still spend directly on the receipt, within the cap and the balance.
    let direct =
        client.redeem(redeem("R2", customer.clone(), "150", "", vec![line(1, "x", "1", "1000.00")])).await.expect("direct").into_inner();
    assert_eq!(direct.balance.expect("balance").available, "50");
    server.stop().await;
}

#[tokio::test]
async fn points_expire_by_the_clock_and_the_next_change_records_it() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.enroll(enroll("e", "+77010000202", "")).await.expect("enroll");
    let customer = phone("+77010000202");
    client.accrue(accrue("R1", customer.clone(), vec![line(1, "tv", "1", "30000.00")])).await.expect("accrue");
    server.clock.advance(Duration::days(400));
    client.accrue(accrue("R2", customer.clone(), vec![line(1, "tv", "1", "10000.00")])).await.expect("accrue later");
    server.clock.advance(Duration::days(1));
    let account = client.get_account(get_account(customer.clone())).await.expect("account").into_inner();
    assert_eq!(account.balance.expect("balance").available, "400");
    assert_eq!(account.expiring_30d, "0");

    // R1 was earned on 10 March 2026 (Almaty): its 300 points are good through 10 March 2028, so
    // they expire at 11 March 2028 00:00 local = 10 March 2028 19:00 UTC.
    let r1_expiry = Utc.with_ymd_and_hms(2028, 3, 10, 19, 0, 0).single().expect("time");
    server.clock.set(r1_expiry - Duration::days(10));
    let account = client.get_account(get_account(customer.clone())).await.expect("account").into_inner();
    assert_eq!(account.expiring_30d, "300");
    assert_eq!(account.next_expiry_at.expect("next expiry").seconds, r1_expiry.timestamp());
    server.clock.set(r1_expiry);
    let balance = balance_of(&mut client, customer.clone()).await;
    assert_eq!((balance.available.as_str(), balance.balance.as_str()), ("100", "100"), "no batch job: expired points just stop counting");

    // The next change writes the expiry into the ledger, so the ledger sums to the balance again.
    client.accrue(accrue("R3", customer.clone(), vec![line(1, "tv", "1", "5000.00")])).await.expect("accrue after expiry");
    let ledger = full_ledger(&mut client, customer.clone()).await;
    let expired: Vec<_> = ledger.iter().filter(|entry| entry.kind == loyalty_proto::v1::EntryKind::Expire as i32).collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].amount, "-300");
    let sum: Decimal = ledger.iter().map(|entry| dec(&entry.amount)).sum();
    assert_eq!(sum, dec(&balance_of(&mut client, customer).await.balance));
    server.stop().await;
}
