//! Retention over gRPC: receipts' stored answers older than the program's `answers_kept_days` are
//! removed by the sweep; refunds of those receipts stay exact, a retry is told RECEIPT_COMPACTED
//! (and a different payload still conflicts), younger receipts replay as before.

use chrono::Duration;
use loyalty_core::outcome::StoredResponse;
use loyalty_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

use crate::expect_error;

fn stored_bytes(receipt: &loyalty_core::receipt::ReceiptState) -> usize {
    loyalty_store::codec::encode(receipt).expect("encode").len()
}

#[tokio::test]
async fn old_answers_are_compacted_and_refunds_stay_exact() {
    let server = TestServer::start_with(
        |config| {
            config.programs[0].answers_kept_days = 30;
        },
        |store| store,
    )
    .await;
    let mut client = server.client().await;
    client.enroll(enroll("e-1", "+77010000020", "")).await.expect("enroll");
    let customer = phone("+77010000020");
    let basket = vec![line(1, "tv", "1", "50000.00"), line(2, "kettle", "2", "7000.00"), line(3, "bread", "3", "300.00")];
    let old = client.accrue(accrue("OLD", customer.clone(), basket.clone())).await.expect("accrue").into_inner();
    client.accrue(accrue("OLD-2", customer.clone(), vec![line(1, "tea", "1", "2000.00")])).await.expect("accrue");
    let before = server.store.receipt(PROGRAM, "OLD").await.expect("read").expect("stored").value;

    server.clock.advance(Duration::days(31));
    let young = client.accrue(accrue("YOUNG", customer.clone(), vec![line(1, "cup", "1", "5000.00")])).await.expect("accrue").into_inner();
    let program = server.engine.programs().get(PROGRAM).expect("program");
    let report = server.engine.sweep.run(&program).await.expect("sweep");
    assert_eq!(report.receipts_compacted, 2, "OLD and OLD-2: {report:?}");
    let young_receipt = server.store.receipt(PROGRAM, "YOUNG").await.expect("read").expect("stored").value;
    assert!(matches!(young_receipt.calls[0].response, StoredResponse::Accrue(_)), "younger than the horizon: kept");

    let after = server.store.receipt(PROGRAM, "OLD").await.expect("read").expect("stored").value;
    assert!(after.calls.iter().all(|call| matches!(call.response, StoredResponse::Compacted(_))), "{after:?}");
    assert_eq!(
        (after.accrual.as_ref().map(|accrual| accrual.earned), after.spent),
        (before.accrual.as_ref().map(|a| a.earned), before.spent)
    );
    // What a 3-line receipt keeps: its accrual's lines and amounts, not its answer (measured: 662
    // bytes before, 371 after).
    let (before_bytes, after_bytes) = (stored_bytes(&before), stored_bytes(&after));
    println!("receipt OLD: {before_bytes} bytes stored before retention, {after_bytes} after");
    assert!(after_bytes * 10 < before_bytes * 6, "the receipt kept {after_bytes} of {before_bytes} bytes");

    // A retry of the old call: applied once, its answer gone, said so.
    let status =
        expect_error(client.accrue(accrue("OLD", customer.clone(), basket.clone())).await, Code::FailedPrecondition, "RECEIPT_COMPACTED");
    let info = status.get_details_error_info().expect("details");
    assert_eq!(info.metadata.get("receipt_id").map(String::as_str), Some("OLD"));
    assert!(info.metadata.contains_key("compacted_at"), "{info:?}");
    // Another payload under the same receipt is still a conflict.
    expect_error(
        client.accrue(accrue("OLD", customer.clone(), vec![line(1, "tv", "1", "1.00")])).await,
        Code::AlreadyExists,
        "IDEMPOTENCY_CONFLICT",
    );
    // A young receipt replays its answer.
    let replay = client.accrue(accrue("YOUNG", customer.clone(), vec![line(1, "cup", "1", "5000.00")])).await.expect("replay").into_inner();
    assert_eq!(replay, young);

    // Refunding the whole of line 2 of the old receipt claws back exactly what it earned.
    let line_two = old.lines.iter().find(|line| line.line_no == 2).expect("line 2").points.clone();
    let returned = client.refund(refund("OLD", "back-1", &[(2, "2")])).await.expect("refund").into_inner();
    assert_eq!(dec(&returned.earn_clawed_back), dec(&line_two));
    let again = client.refund(refund("OLD", "back-1", &[(2, "2")])).await.expect("refund replay").into_inner();
    assert_eq!(again, returned, "the refund is younger than the horizon: its answer replays");

    // Nothing left to do; the ledger still adds up to the balance.
    let report = server.engine.sweep.run(&program).await.expect("sweep");
    assert_eq!(report.receipts_compacted, 0);
    let ledger = full_ledger(&mut client, customer.clone()).await;
    let sum: rust_decimal::Decimal = ledger.iter().map(|entry| dec(&entry.amount)).sum();
    assert_eq!(sum, dec(&balance_of(&mut client, customer.clone()).await.balance));
    server.stop().await;
}

/// With the horizon at 0 nothing is compacted, however old.
#[tokio::test]
async fn a_horizon_of_zero_keeps_every_answer() {
    let server = TestServer::start_with(|config| config.programs[0].answers_kept_days = 0, |store| store).await;
    let mut client = server.client().await;
    client.enroll(enroll("e-1", "+77010000021", "")).await.expect("enroll");
    let customer = phone("+77010000021");
    let first = client.accrue(accrue("R1", customer.clone(), vec![line(1, "tv", "1", "50000.00")])).await.expect("accrue").into_inner();
    server.clock.advance(Duration::days(4000));
    let program = server.engine.programs().get(PROGRAM).expect("program");
    assert_eq!(server.engine.sweep.run(&program).await.expect("sweep").receipts_compacted, 0);
    let replay = client.accrue(accrue("R1", customer, vec![line(1, "tv", "1", "50000.00")])).await.expect("replay").into_inner();
    assert_eq!(replay, first);
    server.stop().await;
}

/// A long history is compacted a bounded number of ledger entries per pass (200), each pass going
/// on from the account's cursor: two passes for 230 receipts.
#[tokio::test]
async fn a_long_history_is_compacted_over_several_passes() {
    let server = TestServer::start_with(|config| config.programs[0].answers_kept_days = 30, |store| store).await;
    let mut client = server.client().await;
    client.enroll(enroll("e-1", "+77010000022", "")).await.expect("enroll");
    let customer = phone("+77010000022");
    for n in 0..230 {
        client.accrue(accrue(&format!("R{n:03}"), customer.clone(), vec![line(1, "tv", "1", "1000.00")])).await.expect("accrue");
    }
    server.clock.advance(Duration::days(31));
    let program = server.engine.programs().get(PROGRAM).expect("program");
    let first = server.engine.sweep.run(&program).await.expect("sweep").receipts_compacted;
    let second = server.engine.sweep.run(&program).await.expect("sweep").receipts_compacted;
    let third = server.engine.sweep.run(&program).await.expect("sweep").receipts_compacted;
    assert_eq!((first, second, third), (200, 30, 0));
    for receipt in ["R000", "R199", "R200", "R229"] {
        let stored = server.store.receipt(PROGRAM, receipt).await.expect("read").expect("stored").value;
        assert!(matches!(stored.calls[0].response, StoredResponse::Compacted(_)), "{receipt}");
    }
    server.stop().await;
}
