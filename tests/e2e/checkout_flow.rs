//! The whole checkout flow with exact numbers: enrol, earn, hold, redeem, accrue, refund, reverse.

use chrono::Duration;
use loyalty_tests::*;
use rust_decimal::Decimal;

use crate::expect_error;

#[tokio::test]
async fn enrol_earn_hold_redeem_accrue_refund_reverse() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let enrolled = client.enroll(enroll("enr-1", "+7 701 000 00 01", "")).await.expect("enroll").into_inner();
    assert!(enrolled.created);
    assert_eq!(enrolled.card_number.len(), 16, "a virtual card is issued");
    // The same customer, typed the way a cashier might.
    let customer = phone("8 (701) 000-00-01");

    // 1% on eligible lines: excise and promo-price lines earn nothing.
    let r1 = client
        .accrue(accrue(
            "R1",
            customer.clone(),
            vec![
                line(1, "milk", "2", "500.00"),
                excise(line(2, "vodka", "1", "3000.00")),
                promo(line(3, "bread", "1", "200.00")),
                line(4, "cheese", "1", "4000.00"),
            ],
        ))
        .await
        .expect("accrue R1")
        .into_inner();
    assert_eq!(r1.earned, "50");
    assert_eq!(r1.paid_amount, "8200.00");
    let per_line: Vec<(&str, &str)> = r1.lines.iter().map(|line| (line.points.as_str(), line.reason.as_str())).collect();
    assert_eq!(
        per_line,
        vec![("10", "cashback 1%"), ("0", "no rule applies: excise goods"), ("0", "no rule applies: promo price"), ("40", "cashback 1%")]
    );
    let balance = r1.balance.expect("balance");
    assert_eq!((balance.pending.as_str(), balance.available.as_str()), ("50", "0"), "earned points are pending until tomorrow");

    server.clock.advance(Duration::days(1));
    let balance = balance_of(&mut client, customer.clone()).await;
    assert_eq!((balance.pending.as_str(), balance.available.as_str()), ("0", "50"));

    client.accrue(accrue("R2", customer.clone(), vec![line(1, "tv", "1", "10000.00")])).await.expect("accrue R2");
    server.clock.advance(Duration::days(1));
    assert_eq!(balance_of(&mut client, customer.clone()).await.available, "150");

    // Authorize with a hold: the cap is 50% of 2000 = 1000, the balance (150) binds.
    let basket = vec![line(1, "a", "1", "1000.00"), line(2, "b", "1", "1000.00")];
    let auth = client.authorize(authorize("R3", customer.clone(), basket.clone(), "100")).await.expect("authorize").into_inner();
    assert_eq!((auth.max_spend.as_str(), auth.earn_total.as_str()), ("150", "20"));
    assert_eq!(auth.max_spend_limit, loyalty_proto::v1::SpendLimit::Balance as i32);
    let hold = auth.hold.expect("hold placed");
    assert_eq!(hold.amount, "100");
    let balance = auth.balance.expect("balance");
    assert_eq!((balance.held.as_str(), balance.spendable.as_str()), ("100", "50"));

    // Another till quoting for the same customer sees only what is not held.
    let quote = client.authorize(authorize("R-other", customer.clone(), basket.clone(), "")).await.expect("quote").into_inner();
    assert_eq!(quote.max_spend, "50");
    assert!(quote.hold.is_none());

    // Capture part of the hold; the rest is released.
    let redeemed = client.redeem(redeem("R3", customer.clone(), "80", &hold.hold_id, vec![])).await.expect("redeem").into_inner();
    assert_eq!((redeemed.redeemed.as_str(), redeemed.released.as_str()), ("80", "20"));
    let balance = redeemed.balance.expect("balance");
    assert_eq!((balance.available.as_str(), balance.held.as_str()), ("70", "0"));

    // Accrue on the paid receipt: 80 points paid part of it, so 1% of 1920 = 19.2 -> 19.
    let r3 = client.accrue(accrue("R3", customer.clone(), basket.clone())).await.expect("accrue R3").into_inner();
    assert_eq!((r3.earned.as_str(), r3.paid_amount.as_str(), r3.points_spent.as_str()), ("19", "1920.00", "80"));
    assert_eq!(r3.lines.iter().map(|line| line.points.as_str()).collect::<Vec<_>>(), vec!["10", "9"]);

    // Return line 1: claw back its 10 points and give back half the spent points (1000 of 2000).
    let rf1 = client.refund(refund("R3", "rf-1", &[(1, "1")])).await.expect("refund 1").into_inner();
    assert_eq!((rf1.earn_clawed_back.as_str(), rf1.spent_returned.as_str(), rf1.refunded_amount.as_str()), ("10", "40", "1000.00"));
    let balance = rf1.balance.expect("balance");
    assert_eq!((balance.available.as_str(), balance.pending.as_str()), ("110", "9"));

    // Return line 2: the rest, exactly.
    let rf2 = client.refund(refund("R3", "rf-2", &[(2, "1")])).await.expect("refund 2").into_inner();
    assert_eq!((rf2.earn_clawed_back.as_str(), rf2.spent_returned.as_str()), ("9", "40"));
    let balance = rf2.balance.expect("balance");
    assert_eq!((balance.available.as_str(), balance.pending.as_str()), ("150", "0"));

    // Nothing more can come back from R3.
    expect_error(client.refund(refund("R3", "rf-3", &[(1, "1")])).await, tonic::Code::FailedPrecondition, "REFUND_EXCEEDS_RECEIPT");

    // Cancel R2 entirely: its 100 points go.
    let reversed = client.reverse(reverse("R2")).await.expect("reverse").into_inner();
    assert_eq!((reversed.earn_clawed_back.as_str(), reversed.spent_returned.as_str()), ("100", "0"));
    assert_eq!(reversed.balance.expect("balance").balance, "50");

    // The ledger explains every point and sums to the balance.
    let ledger = full_ledger(&mut client, customer.clone()).await;
    let sum: Decimal = ledger.iter().map(|entry| dec(&entry.amount)).sum();
    assert_eq!(sum, Decimal::from(50));
    assert_eq!(ledger.first().map(|entry| entry.balance_after.as_str()), Some("50"), "newest first");
    let seqs: Vec<u64> = ledger.iter().map(|entry| entry.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).rev().collect::<Vec<_>>());
    assert!(ledger.iter().all(|entry| !entry.reason.is_empty() && !entry.transaction_id.is_empty()));
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_card_earns_but_spends_only_after_registration() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let plastic = card("2000123456789");

    let earned = client.accrue(accrue("A1", plastic.clone(), vec![line(1, "x", "1", "30000.00")])).await.expect("accrue").into_inner();
    assert_eq!(earned.earned, "300");
    server.clock.advance(Duration::days(1));

    let account = client.get_account(get_account(plastic.clone())).await.expect("account").into_inner();
    assert!(!account.registered);
    let quote =
        client.authorize(authorize("A2", plastic.clone(), vec![line(1, "x", "1", "1000.00")], "")).await.expect("quote").into_inner();
    assert_eq!(quote.max_spend, "0");
    assert_eq!(quote.max_spend_limit, loyalty_proto::v1::SpendLimit::NotRegistered as i32);
    expect_error(
        client.authorize(authorize("A2", plastic.clone(), vec![line(1, "x", "1", "1000.00")], "10")).await,
        tonic::Code::FailedPrecondition,
        "CARD_NOT_REGISTERED",
    );

    // Registering binds the card and keeps its points.
    let enrolled = client.enroll(enroll("enr-card", "+77010000002", "2000123456789")).await.expect("enroll").into_inner();
    assert!(!enrolled.created);
    assert_eq!(enrolled.account_id, account.account_id);
    assert_eq!(enrolled.balance.expect("balance").available, "300");
    let by_phone = client.get_account(get_account(phone("+77010000002"))).await.expect("by phone").into_inner();
    assert_eq!(by_phone.account_id, account.account_id);
    assert!(by_phone.registered);
    client.redeem(redeem("A2", plastic, "100", "", vec![line(1, "x", "1", "1000.00")])).await.expect("registered card spends");
    server.stop().await;
}
