//! RFM segments end to end: customers with different histories, bought through the till over a
//! manual clock, land in their segments; `ListSegments` counts them after a sweep (and keeps each
//! sweep's counts as a version); a rule for at_risk customers pays only them, the quote and the
//! accrual agreeing, with the segment in the explanation; time moving on moves customers into
//! another segment, and the rule with them; another engine over the store reads the same counts.

use std::sync::Arc;

use chrono::Duration;
use loyalty_engine::clock::{Clock, ManualClock};
use loyalty_engine::engine::Engine;
use loyalty_engine::ids::UuidIds;
use loyalty_engine::programs::Programs;
use loyalty_proto::admin as admin_pb;
use loyalty_proto::v1 as pb;
use loyalty_tests::*;
use tonic::Code;

use crate::{bad_field, expect_error};

/// Small thresholds so that a handful of receipts reach every score; 10% on coffee for customers
/// who used to buy and stopped (at_risk, cannot_lose).
const RULES: &str = r#"
[rfm]
window_months = 12
recency_days = [60, 30, 14, 7]
frequency = [2, 3, 4, 5]
monetary = ["1000", "2000", "5000", "10000"]

[[rules]]
id = "base"
name = "cashback 1%"
effect = { kind = "percent_of_lines", percent = "1" }

[[rules]]
id = "coffee-at-risk"
name = "coffee 10%"
priority = 100
stacking = "exclusive"
when.lines = { categories = ["coffee"] }
when.customer.segments = ["at_risk", "cannot_lose"]
effect = { kind = "percent_of_lines", percent = "10" }
"#;

fn coffee() -> pb::BasketLine {
    let mut coffee = line(1, "arabica", "1", "1000.00");
    coffee.category = "coffee".into();
    coffee
}

fn bread() -> pb::BasketLine {
    line(2, "bread", "1", "500.00")
}

async fn list(admin: &mut Admin, version: u64) -> Result<tonic::Response<admin_pb::ListSegmentsResponse>, tonic::Status> {
    admin.list_segments(admin_pb::ListSegmentsRequest { program_id: PROGRAM.into(), version }).await
}

/// The non-zero segments of an answer, by name.
fn segments(answer: &admin_pb::ListSegmentsResponse) -> Vec<(String, u64)> {
    answer.segments.iter().filter(|count| count.customers > 0).map(|count| (count.segment.clone(), count.customers)).collect()
}

fn named(items: &[(&str, u64)]) -> Vec<(String, u64)> {
    items.iter().map(|(name, count)| ((*name).to_owned(), *count)).collect()
}

#[tokio::test]
async fn customers_land_in_their_segments_the_sweep_counts_them_and_an_at_risk_rule_pays_only_them() {
    segments_end_to_end(TestServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customers_land_in_their_segments_on_scylla() {
    let rig = crate::scylla::Rig::shared().await;
    segments_end_to_end(rig.engine().await).await;
}

async fn segments_end_to_end(server: TestServer) {
    let mut client = server.client().await;
    let mut admin = server.admin().await;
    let applied = admin
        .apply_rules(admin_pb::ApplyRulesRequest {
            program_id: PROGRAM.into(),
            expected_version: 1,
            format: admin_pb::DocumentFormat::Toml as i32,
            document: RULES.into(),
            comment: "RFM thresholds and a win-back offer".into(),
        })
        .await
        .expect("rules apply")
        .into_inner();
    assert_eq!(applied.version, 2);
    // An unknown segment is refused, naming the rule and the field.
    let typo = admin
        .apply_rules(admin_pb::ApplyRulesRequest {
            program_id: PROGRAM.into(),
            expected_version: 2,
            format: admin_pb::DocumentFormat::Toml as i32,
            document: RULES.replace(r#""cannot_lose"]"#, r#""cannot-lose"]"#),
            comment: String::new(),
        })
        .await;
    let status = expect_error(typo, Code::InvalidArgument, "RULES_INVALID");
    assert_eq!(bad_field(&status), "rules[1] (coffee-at-risk).when.customer.segments[1]");

    // Before any sweep there are no counts.
    let none = list(&mut admin, 0).await.expect("list").into_inner();
    assert_eq!((none.version, none.customers, none.computed_at), (0, 0, None));

    // 10-12 March: the soon-to-lapse customer buys three times.
    let lapsing = card("RFM0001");
    for day in 0..3 {
        let receipt = format!("L{day}");
        client.accrue(accrue(&receipt, lapsing.clone(), vec![bread(), line(3, "milk", "4", "400.00")])).await.expect("accrue");
        server.clock.advance(Duration::days(1));
    }
    // 12-15 April: the regular buys four times; a newcomer once on the 15th; another customer
    // enrols and buys nothing.
    server.clock.advance(Duration::days(30));
    let regular = card("RFM0002");
    for day in 0..4 {
        let receipt = format!("R{day}");
        client.accrue(accrue(&receipt, regular.clone(), vec![line(1, "cheese", "1", "3000.00")])).await.expect("accrue");
        if day < 3 {
            server.clock.advance(Duration::days(1));
        }
    }
    let newcomer = card("RFM0003");
    client.accrue(accrue("N0", newcomer.clone(), vec![bread()])).await.expect("accrue");
    client.enroll(enroll("rfm-e1", "+77010000931", "RFM0004")).await.expect("enroll");

    // 18 April: 37 days since the lapsing customer's last purchase (R 2, F 3: at_risk), 3 since
    // the regular's (R 5, F 4: champions) and the newcomer's (R 5, F 1: new).
    server.clock.advance(Duration::days(3));
    let program = server.engine.programs().get(PROGRAM).expect("program");
    let swept = server.engine.sweep.run(&program).await.expect("sweep");
    assert_eq!(swept.segments_version, 1);
    let first = list(&mut admin, 0).await.expect("list").into_inner();
    assert_eq!((first.version, first.latest_version, first.rules_version), (1, 1, 2));
    assert_eq!((first.customers, first.without_purchases), (4, 1));
    assert_eq!(segments(&first), named(&[("champions", 1), ("new", 1), ("at_risk", 1)]));
    assert_eq!(first.segments.len(), 11, "every segment is listed, zeros included");
    let scores = |counts: &[admin_pb::ScoreCount]| counts.iter().map(|count| count.customers).collect::<Vec<_>>();
    assert_eq!(scores(&first.recency_scores), [0, 1, 0, 0, 2]);
    assert_eq!(scores(&first.frequency_scores), [1, 0, 1, 1, 0]);
    // Paid: 3 x 2,100 = 6,300 (M 4); 4 x 3,000 = 12,000 (M 5); 500 (M 1).
    assert_eq!(scores(&first.monetary_scores), [1, 0, 0, 1, 1]);
    let computed_at = first.computed_at.expect("computed_at");
    assert_eq!(computed_at.seconds, server.clock.now().timestamp());

    // The at_risk customer gets 10% on coffee, quoted and paid alike, and the receipt says why;
    // the champion gets the base 1%.
    let quote = client.authorize(authorize("L9", lapsing.clone(), vec![coffee(), bread()], "")).await.expect("quote").into_inner();
    assert_eq!(quote.earn_total, "105");
    let paid = client.accrue(accrue("L9", lapsing.clone(), vec![coffee(), bread()])).await.expect("accrue").into_inner();
    assert_eq!(paid.earned, "105");
    assert_eq!((paid.lines[0].reason.as_str(), paid.lines[1].reason.as_str()), ("coffee 10%", "cashback 1%"));
    assert_eq!(quote.lines, paid.lines, "the quote's explanation is the accrual's");
    let champion = client.accrue(accrue("R9", regular.clone(), vec![coffee(), bread()])).await.expect("accrue").into_inner();
    assert_eq!((champion.earned.as_str(), champion.lines[0].reason.as_str()), ("15", "cashback 1%"));

    // 50 days on, nobody bought again: the former champion is a customer the program cannot lose
    // (R 2, F 5), the one who came back is at risk again (R 2, F 4), the newcomer hibernates
    // (R 2, F 1); the next sweep says so, and the rule now pays the former champion too.
    server.clock.advance(Duration::days(50));
    let swept = server.engine.sweep.run(&program).await.expect("sweep");
    assert_eq!(swept.segments_version, 2);
    let second = list(&mut admin, 0).await.expect("list").into_inner();
    assert_eq!((second.version, second.customers), (2, 4));
    assert_eq!(segments(&second), named(&[("at_risk", 1), ("cannot_lose", 1), ("hibernating", 1)]));
    let back = client.accrue(accrue("R10", regular.clone(), vec![coffee()])).await.expect("accrue").into_inner();
    assert_eq!((back.earned.as_str(), back.lines[0].reason.as_str()), ("100", "coffee 10%"));
    let lapsed = client.accrue(accrue("L10", lapsing.clone(), vec![coffee()])).await.expect("accrue").into_inner();
    assert_eq!((lapsed.earned.as_str(), lapsed.lines[0].reason.as_str()), ("100", "coffee 10%"));

    // The first sweep's counts stay readable; a version never stored is refused by name.
    assert_eq!(segments(&list(&mut admin, 1).await.expect("version 1").into_inner()), segments(&first));
    let status = expect_error(list(&mut admin, 3).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&status), "version");

    // Another engine over the same store reads the same counts; counts of a sweep that started
    // before the stored one's (a slow engine's) do not replace them.
    let config =
        loyalty_engine::config::Config { data_dir: server.dir.path().to_path_buf(), programs: vec![shop_program()], ..Default::default() };
    let other = Engine::new(
        Arc::clone(&server.store),
        Programs::from_config(&config).expect("config"),
        Arc::new(ManualClock::new(start_time())),
        Arc::new(UuidIds),
        1000,
    );
    let seen = other.segments.read(PROGRAM, 0).await.expect("read").expect("stored");
    assert_eq!((seen.version, seen.document.counts.customers), (2, 4));
    let mut stale = seen.document.clone();
    stale.computed_at -= Duration::minutes(5);
    assert_eq!(other.segments.store(PROGRAM, &stale, start_time()).await.expect("store"), None);
    assert_eq!(other.segments.latest_version(PROGRAM).await.expect("head"), 2);
    server.stop().await;
}
