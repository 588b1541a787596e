//! The programs' figures (`ReadFigures`): kept as commits happen, and equal to a recomputation
//! from the raw ledgers (every customer's, read through ListTransactions), from the answers the
//! tills got and the sales without a customer they sent (RecordSale, retries and a conflicting body
//! included), and from every customer's buckets as they stood at the end of the period (the
//! liability by expiry), for every store and for one, over the whole period and over one day, on
//! both stores.

use std::collections::BTreeMap;
use std::time::Duration;

use loyalty_core::account::Bucket;
use loyalty_core::figures::is_sales_account;
use loyalty_engine::clock::Clock;
use loyalty_proto::admin as admin_pb;
use loyalty_proto::v1 as pb;
use loyalty_store::Store;
use loyalty_tests::*;
use rust_decimal::Decimal;
use tonic::Code;

use crate::{bad_field, expect_error};

/// Points by kind, signed as posted, the way ReadFigures sums them.
#[derive(Debug, Default, PartialEq)]
struct Sums(BTreeMap<&'static str, Decimal>);

fn kind_name(kind: i32) -> &'static str {
    match pb::EntryKind::try_from(kind).expect("a known kind") {
        pb::EntryKind::Earn => "earned",
        pb::EntryKind::Spend => "spent",
        pb::EntryKind::Expire => "expired",
        pb::EntryKind::ReturnSpent => "returned",
        pb::EntryKind::Clawback => "clawed_back",
        pb::EntryKind::Bonus => "bonus",
        pb::EntryKind::Adjustment => "adjusted",
        pb::EntryKind::Merge => "merged",
        pb::EntryKind::Opening => "opened",
        pb::EntryKind::Unspecified => panic!("an entry without a kind"),
    }
}

fn reported(points: &admin_pb::FigurePoints) -> Sums {
    let mut sums = Sums::default();
    for (name, value) in [
        ("earned", &points.earned),
        ("spent", &points.spent),
        ("expired", &points.expired),
        ("returned", &points.returned),
        ("clawed_back", &points.clawed_back),
        ("bonus", &points.bonus),
        ("adjusted", &points.adjusted),
        ("merged", &points.merged),
        ("opened", &points.opened),
    ] {
        let value = dec(value);
        if !value.is_zero() {
            sums.0.insert(name, value);
        }
    }
    sums
}

async fn figures(admin: &mut Admin, from: &str, to: &str, store: &str) -> admin_pb::ReadFiguresResponse {
    let request = admin_pb::ReadFiguresRequest { program_id: PROGRAM.into(), from: from.into(), to: to.into(), store_id: store.into() };
    admin.read_figures(request).await.expect("figures").into_inner()
}

fn sale(receipt_id: &str, store: &str, total: &str) -> pb::RecordSaleRequest {
    pb::RecordSaleRequest {
        program_id: PROGRAM.into(),
        store_id: store.into(),
        till_id: TILL.into(),
        receipt_id: receipt_id.into(),
        total: total.into(),
        ..Default::default()
    }
}

/// Every customer's buckets as they stand now, read from the store (the internal sales accounts
/// left out: they are nobody's and hold nothing).
async fn every_customers_buckets(store: &dyn Store) -> Vec<Bucket> {
    let mut buckets = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = store.account_ids(PROGRAM, &cursor, 100).await.expect("account IDs");
        for account_id in page.ids.iter().filter(|id| !is_sales_account(id)) {
            let account = store.account(PROGRAM, account_id).await.expect("account read").expect("listed");
            buckets.extend(account.value.buckets);
        }
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    buckets
}

/// Of `buckets` (as they stood at the end of `to`), the points expiring within 30 and 90 days
/// after `to` (their expiry's local day in to+1 ..= to+30, 90), and those that never expire.
fn liability_by_expiry(buckets: &[Bucket], to: chrono::NaiveDate, zone: chrono_tz::Tz) -> (Decimal, Decimal, Decimal) {
    let mut held = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for bucket in buckets {
        if chrono::Datelike::year(&bucket.expires_at) >= 9999 {
            held.2 += bucket.remaining;
            continue;
        }
        let days_after = (bucket.expires_at.with_timezone(&zone).date_naive() - to).num_days();
        if (1..=30).contains(&days_after) {
            held.0 += bucket.remaining;
        }
        if (1..=90).contains(&days_after) {
            held.1 += bucket.remaining;
        }
    }
    held
}

async fn figures_add_up_to_the_ledgers(server: TestServer) {
    let mut client = server.client().await;
    let mut admin = server.admin().await;
    let zone = server.engine.program(PROGRAM).expect("program").policy.time_zone;
    let local_day =
        |at: &prost_types::Timestamp| chrono::DateTime::from_timestamp(at.seconds, 0).expect("time").with_timezone(&zone).date_naive();
    let phones = ["+77010000801", "+77010000802", "+77010000803"];
    for (index, number) in phones.iter().enumerate() {
        client.enroll(enroll(&format!("fig-e{index}"), number, "")).await.expect("enrol");
    }
    let first_day = server.clock.now().with_timezone(&zone).date_naive();
    let mut paid = Vec::new();
    let at_store = |mut request: pb::AccrueRequest, store: &str| {
        request.store_id = store.into();
        request
    };
    // Day one: two stores, a checkout that spends, a partial refund.
    let r1 = client.accrue(at_store(accrue("F1", phone(phones[0]), vec![line(1, "tv", "1", "50000.00")]), "s1")).await.expect("F1");
    paid.push(r1.into_inner().paid_amount);
    let r2 = client
        .accrue(at_store(accrue("F2", phone(phones[1]), vec![line(1, "milk", "2", "700.00"), line(2, "bread", "1", "300.00")]), "s2"))
        .await
        .expect("F2");
    paid.push(r2.into_inner().paid_amount);
    client.redeem(redeem("F3", phone(phones[0]), "200", "", vec![line(1, "coffee", "1", "1000.00")])).await.expect("spend on F3");
    let r3 = client.accrue(accrue("F3", phone(phones[0]), vec![line(1, "coffee", "1", "1000.00")])).await.expect("F3");
    paid.push(r3.into_inner().paid_amount);
    client.refund(refund("F2", "F2-back", &[(1, "1")])).await.expect("refund");
    // Sales without a customer, at both stores; the till's retries answer the first answer and
    // count once; another body under a used receipt ID, a customer's receipt, bad input: refused.
    let mut unidentified = Vec::new();
    for (receipt, store, total) in [("U1", "s1", "9000.00"), ("U2", "s1", "11000"), ("U3", "s2", "5000.50")] {
        let first = client.record_sale(sale(receipt, store, total)).await.expect("a sale without a customer").into_inner();
        let retry = client.record_sale(sale(receipt, store, total)).await.expect("its retry").into_inner();
        assert_eq!(first, retry, "a retry answers the first answer");
        unidentified.push((store, dec(&first.total)));
    }
    let with_currency = pb::RecordSaleRequest { currency: "KZT".into(), ..sale("U1", "s1", "9000") };
    client.record_sale(with_currency).await.expect("the same sale, its currency named and its total written otherwise");
    expect_error(client.record_sale(sale("U1", "s1", "9001")).await, Code::AlreadyExists, "IDEMPOTENCY_CONFLICT");
    expect_error(client.record_sale(sale("U1", "s2", "9000")).await, Code::AlreadyExists, "IDEMPOTENCY_CONFLICT");
    expect_error(client.record_sale(sale("F1", "s1", "100")).await, Code::AlreadyExists, "IDEMPOTENCY_CONFLICT");
    let on_a_sale = accrue("U2", phone(phones[2]), vec![line(1, "milk", "1", "100.00")]);
    expect_error(client.accrue(on_a_sale).await, Code::AlreadyExists, "IDEMPOTENCY_CONFLICT");
    let reversed = expect_error(client.reverse(reverse("U3")).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&reversed), "receipt_id");
    let refunded = expect_error(client.refund(refund("U3", "U3-back", &[(1, "1")])).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&refunded), "receipt_id");
    for (request, field) in [
        (sale("B1", "", "10"), "store_id"),
        (sale("B1", "s1", "-10"), "total"),
        (sale("B1", "s1", "0"), "total"),
        (sale("B1", "s1", ""), "total"),
        (sale("B1", "s1", "10.001"), "total"),
        (sale("", "s1", "10"), "receipt_id"),
        (pb::RecordSaleRequest { currency: "USD".into(), ..sale("B1", "s1", "10") }, "currency"),
        (
            pb::RecordSaleRequest { occurred_at: Some(prost_types::Timestamp { seconds: 0, nanos: 0 }), ..sale("B1", "s1", "10") },
            "occurred_at",
        ),
    ] {
        let refused = expect_error(client.record_sale(request.clone()).await, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(bad_field(&refused), field, "{request:?}");
    }
    let end_of_day_one = every_customers_buckets(server.store.as_ref()).await;
    // Day two: the first customer's second purchase this month, a reversal, a sale without a
    // customer sent late by an offline till (an hour after it was made).
    server.clock.advance(chrono::Duration::days(1));
    let r4 = client.accrue(accrue("F4", phone(phones[0]), vec![line(1, "milk", "1", "900.00")])).await.expect("F4");
    paid.push(r4.into_inner().paid_amount);
    client.reverse(reverse("F3")).await.expect("reverse");
    let an_hour_ago = convert_time(server.clock.now() - chrono::Duration::hours(1));
    let late = pb::RecordSaleRequest { occurred_at: Some(an_hour_ago), ..sale("U4", "s1", "7000") };
    unidentified.push(("s1", dec(&client.record_sale(late).await.expect("a late sale").into_inner().total)));
    let end_of_day_two = every_customers_buckets(server.store.as_ref()).await;
    // Two years on the first customer buys again (their old points expire on that call); the
    // second never comes back, and the sweep writes their expiry (else the breakage and the
    // liability would wait for a customer who does not return).
    server.clock.advance(chrono::Duration::days(800));
    let r5 = client.accrue(accrue("F5", phone(phones[0]), vec![line(1, "milk", "1", "800.00")])).await.expect("F5");
    paid.push(r5.into_inner().paid_amount);
    let program = server.engine.program(PROGRAM).expect("program");
    let swept = server.engine.sweep.run(&program).await.expect("sweep");
    assert_eq!(swept.expiries_settled, 1, "the dormant customer's expired points: {swept:?}");
    assert_eq!(swept.accounts, 3, "the customers, and not the internal sales accounts: {swept:?}");
    let dormant = full_ledger(&mut client, phone(phones[1])).await;
    assert!(dormant.iter().any(|entry| entry.kind == pb::EntryKind::Expire as i32), "{dormant:?}");
    let last_day = server.clock.now().with_timezone(&zone).date_naive();

    // The raw ledgers, by local day and store.
    let mut entries = Vec::new();
    for number in phones {
        entries.extend(full_ledger(&mut client, phone(number)).await);
    }
    let recompute = |from: chrono::NaiveDate, to: chrono::NaiveDate, store: Option<&str>| {
        let mut sums = Sums::default();
        for entry in &entries {
            let day = local_day(entry.at.as_ref().expect("at"));
            if day < from || day > to || store.is_some_and(|store| store != entry.store_id) {
                continue;
            }
            *sums.0.entry(kind_name(entry.kind)).or_default() += dec(&entry.amount);
        }
        sums.0.retain(|_, value| !value.is_zero());
        sums
    };
    let outstanding: Decimal = entries.iter().map(|entry| dec(&entry.amount)).sum();
    let paid: Decimal = paid.iter().map(|amount| dec(amount)).sum();
    assert!(recompute(first_day, last_day, None).0.contains_key("expired"), "the run expires points: {entries:?}");

    let (from, to) = (first_day.to_string(), last_day.to_string());
    let expected = recompute(first_day, last_day, None);
    // Over ScyllaDB the outbox shows an event once its relay settled.
    let all = eventually(
        Duration::from_secs(30),
        "figures of every commit",
        || {
            let mut admin = admin.clone();
            let (from, to) = (from.clone(), to.clone());
            async move { figures(&mut admin, &from, &to, "").await }
        },
        |all| all.purchases == 5 && all.unidentified_purchases == 4 && reported(all.points.as_ref().expect("points")) == expected,
    )
    .await;
    assert_eq!(reported(all.points.as_ref().expect("points")), recompute(first_day, last_day, None));
    assert_eq!(dec(&all.outstanding), outstanding, "the liability is every ledger's sum");
    assert_eq!(dec(&all.paid), paid);
    // Active: the first customer in March and in the month two years on, the second in March;
    // repeat: the first in March. Gaps: F3 came with F1 (none), F4 a day after, F5 800 days.
    assert_eq!((all.enrolled, all.active_customers, all.repeat_customers), (3, 3, 1), "{all:?}");
    assert_eq!((all.repeat_rate.as_str(), all.purchases_per_customer.as_str()), ("0.3333", "1.6667"));
    assert_eq!(all.days_between_purchases, "400.5");
    let sums = recompute(first_day, last_day, None).0;
    let sum = |name: &str| sums.get(name).copied().unwrap_or_default();
    let (spent, given) = (-(sum("spent") + sum("returned")), sum("earned") + sum("clawed_back") + sum("bonus") + sum("opened"));
    assert_eq!(dec(&all.redemption_rate), (spent / given).round_dp(4));
    assert_eq!(dec(&all.breakage_rate), (-sum("expired") / given).round_dp(4));
    assert_eq!(dec(&all.effective_discount), (spent / paid).round_dp(4));
    assert_eq!(dec(&all.average_receipt), (paid / Decimal::from(5)).round_dp(2));

    // Sales without a customer: what the tills sent, each once.
    let unidentified_paid: Decimal = unidentified.iter().map(|(_, total)| total).sum();
    assert_eq!(unidentified_paid, Decimal::new(3_200_050, 2));
    assert_eq!((all.unidentified_purchases, dec(&all.unidentified_paid)), (4, unidentified_paid));
    assert_eq!(dec(&all.unidentified_average_receipt), (unidentified_paid / Decimal::from(4)).round_dp(2));
    let uplift = ((paid / Decimal::from(5)) / (unidentified_paid / Decimal::from(4)) - Decimal::ONE).round_dp(4);
    assert_eq!(dec(&all.identified_uplift), uplift, "identified average / unidentified average - 1");
    // The liability by expiry at the end of the period: every customer's buckets now.
    let now_held = liability_by_expiry(&every_customers_buckets(server.store.as_ref()).await, last_day, zone);
    assert_eq!((dec(&all.expiring_30d), dec(&all.expiring_90d), dec(&all.never_expiring)), now_held);
    // At the end of a past day: the buckets as they stood then. Day one, and the day 30 days before
    // the first of day two's buckets expires (day one's buckets expire then, day two's a day
    // later: in the 90 days but not the 30).
    let day_one_held = figures(&mut admin, &from, &from, "").await;
    let held = |report: &admin_pb::ReadFiguresResponse| (dec(&report.expiring_30d), dec(&report.expiring_90d), dec(&report.never_expiring));
    assert_eq!(held(&day_one_held), liability_by_expiry(&end_of_day_one, first_day, zone));
    let first_expiry = end_of_day_two.iter().map(|bucket| bucket.expires_at.with_timezone(&zone).date_naive()).min().expect("points held");
    let before_expiry = first_expiry - chrono::Duration::days(30);
    assert!(before_expiry > first_day + chrono::Duration::days(1) && before_expiry < last_day, "no commit in between");
    let past = figures(&mut admin, &from, &before_expiry.to_string(), "").await;
    let past_held = liability_by_expiry(&end_of_day_two, before_expiry, zone);
    assert!(past_held.0 > Decimal::ZERO && past_held.1 > past_held.0, "the windows hold points apart: {past_held:?}");
    assert_eq!(held(&past), past_held, "{past:?}");
    assert_eq!(dec(&past.outstanding), end_of_day_two.iter().map(|bucket| bucket.remaining).sum::<Decimal>(), "no debt here");

    let s1 = figures(&mut admin, &from, &to, "s1").await;
    let s1_paid: Decimal = unidentified.iter().filter(|(store, _)| *store == "s1").map(|(_, total)| total).sum();
    assert_eq!((s1.unidentified_purchases, dec(&s1.unidentified_paid)), (3, s1_paid));
    let s2 = figures(&mut admin, &from, &to, "s2").await;
    assert_eq!((s2.unidentified_purchases, s2.unidentified_average_receipt.as_str()), (1, "5000.50"));
    assert_eq!(reported(s2.points.as_ref().expect("points")), recompute(first_day, last_day, Some("s2")));
    assert_eq!(s2.purchases, 1);
    assert_eq!((s2.repeat_rate.as_str(), s2.purchases_per_customer.as_str()), ("", ""), "every store only");
    assert_eq!(dec(&s2.outstanding), outstanding, "a balance is the customer's, whatever the store");

    let day_one = figures(&mut admin, &from, &from, "").await;
    assert_eq!(reported(day_one.points.as_ref().expect("points")), recompute(first_day, first_day, None));
    assert_eq!(day_one.purchases, 3);
    let day_one_outstanding: Decimal =
        entries.iter().filter(|entry| local_day(entry.at.as_ref().expect("at")) <= first_day).map(|entry| dec(&entry.amount)).sum();
    assert_eq!(dec(&day_one.outstanding), day_one_outstanding);

    let backwards = admin
        .read_figures(admin_pb::ReadFiguresRequest {
            program_id: PROGRAM.into(),
            from: to.clone(),
            to: from.clone(),
            store_id: String::new(),
        })
        .await;
    let status = backwards.expect_err("a period that ends before it starts");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // The internal sales accounts are nobody's: not found by their ID.
    let sales_account = loyalty_core::figures::sales_account_id("s1", "2026-01", "U1");
    let audit = admin
        .read_audit(admin_pb::ReadAuditRequest { program_id: PROGRAM.into(), account_id: sales_account.clone(), ..Default::default() })
        .await;
    assert!(audit.is_err(), "{sales_account}: {audit:?}");
    // Integrations reading the outbox do not see the engine's own figures events.
    let events = admin.read_events(admin_pb::ReadEventsRequest { program_id: PROGRAM.into(), after_seq: 0, limit: 1000 }).await;
    assert!(events.expect("events").into_inner().events.iter().all(|event| event.kind != "figures"));
}

fn convert_time(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: 0 }
}

#[tokio::test]
async fn figures_add_up_to_the_ledgers_on_the_embedded_store() {
    let server =
        TestServer::start_with(|config| config.programs[0].pending = loyalty_core::program::PendingRule::None, |store| store).await;
    figures_add_up_to_the_ledgers(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn figures_add_up_to_the_ledgers_on_scylla() {
    let rig = crate::scylla::Rig::shared().await;
    figures_add_up_to_the_ledgers(rig.engine().await).await;
}
