//! The programs' figures (`ReadFigures`): kept as commits happen, and equal to a recomputation
//! from the raw ledgers (every customer's, read through ListTransactions) and from the answers the
//! tills got, for every store and for one, over the whole period and over one day, on both stores.

use std::collections::BTreeMap;
use std::time::Duration;

use loyalty_engine::clock::Clock;
use loyalty_proto::admin as admin_pb;
use loyalty_proto::v1 as pb;
use loyalty_tests::*;
use rust_decimal::Decimal;

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
    // Day two: the first customer's second purchase this month, a reversal.
    server.clock.advance(chrono::Duration::days(1));
    let r4 = client.accrue(accrue("F4", phone(phones[0]), vec![line(1, "milk", "1", "900.00")])).await.expect("F4");
    paid.push(r4.into_inner().paid_amount);
    client.reverse(reverse("F3")).await.expect("reverse");
    // Two years on the first customer buys again (their old points expire on that call); the
    // second never comes back, and the sweep writes their expiry (else the breakage and the
    // liability would wait for a customer who does not return).
    server.clock.advance(chrono::Duration::days(800));
    let r5 = client.accrue(accrue("F5", phone(phones[0]), vec![line(1, "milk", "1", "800.00")])).await.expect("F5");
    paid.push(r5.into_inner().paid_amount);
    let program = server.engine.program(PROGRAM).expect("program");
    let swept = server.engine.sweep.run(&program).await.expect("sweep");
    assert_eq!(swept.expiries_settled, 1, "the dormant customer's expired points: {swept:?}");
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
        |all| all.purchases == 5 && reported(all.points.as_ref().expect("points")) == expected,
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

    let s2 = figures(&mut admin, &from, &to, "s2").await;
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
    // Integrations reading the outbox do not see the engine's own figures events.
    let events = admin.read_events(admin_pb::ReadEventsRequest { program_id: PROGRAM.into(), after_seq: 0, limit: 1000 }).await;
    assert!(events.expect("events").into_inner().events.iter().all(|event| event.kind != "figures"));
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
