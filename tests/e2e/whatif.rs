//! What-if end to end: receipts accrued through the till under the program's rules (one of them
//! partly refunded, one older than the window), then `WhatIf` with a candidate that doubles the
//! base percentage, removes the coffee rule and adds one for groceries. Its per-rule and total
//! figures are checked against a recomputation from the baskets the test sent; progress arrives
//! before the report; a receipt older than the window is left out; a bad candidate is refused
//! naming the field; the limits stop the scan with `completed = false`; a caller that goes away
//! frees the engine's scan.

use std::collections::BTreeMap;

use chrono::Duration;
use loyalty_proto::admin as admin_pb;
use loyalty_proto::v1 as pb;
use loyalty_tests::*;
use rust_decimal::Decimal;
use tonic::Code;

use crate::{bad_field, expect_error};

const RULES: &str = r#"
[[rules]]
id = "base"
name = "cashback 1%"
effect = { kind = "percent_of_lines", percent = "1" }

[[rules]]
id = "coffee"
name = "coffee 5%"
priority = 100
when.lines = { categories = ["coffee"] }
effect = { kind = "percent_of_lines", percent = "5" }
"#;

const CANDIDATE: &str = r#"
[[rules]]
id = "base"
name = "cashback 2%"
effect = { kind = "percent_of_lines", percent = "2" }

[[rules]]
id = "grocery"
name = "groceries 3%"
priority = 50
when.lines = { categories = ["grocery"] }
effect = { kind = "percent_of_lines", percent = "3" }
"#;

/// (rule, category it pays on or "" for every line, percent) of a rule set.
type Percents = &'static [(&'static str, &'static str, i64)];
const RULES_PERCENTS: Percents = &[("base", "", 1), ("coffee", "coffee", 5)];
const CANDIDATE_PERCENTS: Percents = &[("base", "", 2), ("grocery", "grocery", 3)];

fn coffee(line_no: u32, price: &str) -> pb::BasketLine {
    let mut coffee = line(line_no, "arabica", "1", price);
    coffee.category = "coffee".into();
    coffee
}

/// What `rules` give a basket, per rule: each rule's percentage of its lines, rounded down per
/// receipt (the program's points scale is 0), and per line, for the share a return leaves.
fn recompute(rules: Percents, lines: &[pb::BasketLine]) -> (BTreeMap<&'static str, Decimal>, Vec<Decimal>) {
    let mut per_rule = BTreeMap::new();
    let mut per_line = vec![Decimal::ZERO; lines.len()];
    for (rule, category, percent) in rules {
        let matching: Vec<usize> = (0..lines.len()).filter(|index| category.is_empty() || lines[*index].category == *category).collect();
        let exact: Vec<Decimal> =
            matching.iter().map(|index| dec(&lines[*index].line_total) * Decimal::from(*percent) / Decimal::ONE_HUNDRED).collect();
        let points = exact.iter().copied().sum::<Decimal>().floor();
        if points > Decimal::ZERO {
            per_rule.insert(*rule, points);
            // The test's amounts are whole on every line, so the lines' shares are exact.
            for (index, share) in matching.iter().zip(&exact) {
                per_line[*index] += *share;
            }
        }
    }
    (per_rule, per_line)
}

fn request(document: &str, days: u32) -> admin_pb::WhatIfRequest {
    admin_pb::WhatIfRequest {
        program_id: PROGRAM.into(),
        format: admin_pb::DocumentFormat::Toml as i32,
        document: document.into(),
        days,
        ..Default::default()
    }
}

/// Every message of a WhatIf call, the report last.
async fn run(admin: &mut Admin, request: admin_pb::WhatIfRequest) -> Vec<admin_pb::WhatIfProgress> {
    let mut stream = admin.what_if(request).await.expect("what-if").into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.expect("message") {
        messages.push(message);
    }
    messages
}

fn report(messages: &[admin_pb::WhatIfProgress]) -> &admin_pb::WhatIfReport {
    let last = messages.last().expect("a message");
    assert!(messages[..messages.len() - 1].iter().all(|message| message.report.is_none()), "only the last carries the report");
    last.report.as_ref().expect("the last message is the report")
}

#[tokio::test]
async fn what_if_compares_a_candidate_with_what_the_rules_gave() {
    what_if_end_to_end(TestServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_if_compares_a_candidate_with_what_the_rules_gave_on_scylla() {
    let rig = crate::scylla::Rig::shared().await;
    what_if_end_to_end(rig.engine().await).await;
}

async fn what_if_end_to_end(server: TestServer) {
    let mut client = server.client().await;
    let mut admin = server.admin().await;
    let applied = admin
        .apply_rules(admin_pb::ApplyRulesRequest {
            program_id: PROGRAM.into(),
            expected_version: 1,
            format: admin_pb::DocumentFormat::Toml as i32,
            document: RULES.into(),
            comment: "base and coffee".into(),
        })
        .await
        .expect("rules apply")
        .into_inner();
    assert_eq!(applied.version, 2);

    // 40 days before the report: a receipt the 30-day window leaves out.
    let old = vec![line(1, "bread", "1", "1000.00")];
    client.accrue(accrue("W-old", card("WI0003"), old.clone())).await.expect("accrue");
    server.clock.advance(Duration::days(40));
    // In the window: three receipts of two customers; half the bread of the first comes back.
    let baskets: Vec<(&str, Option<pb::CustomerRef>, Vec<pb::BasketLine>)> = vec![
        ("W-1", card("WI0001"), vec![coffee(1, "1000.00"), line(2, "bread", "2", "1000.00")]),
        ("W-2", card("WI0002"), vec![line(1, "milk", "1", "500.00")]),
        ("W-3", card("WI0001"), vec![coffee(1, "200.00")]),
    ];
    for (receipt, customer, lines) in &baskets {
        let paid = client.accrue(accrue(receipt, customer.clone(), lines.clone())).await.expect("accrue").into_inner();
        let (given, _) = recompute(RULES_PERCENTS, lines);
        assert_eq!(dec(&paid.earned), given.values().copied().sum::<Decimal>(), "receipt {receipt}: the recomputation is the engine's");
        server.clock.advance(Duration::days(1));
    }
    client.refund(refund("W-1", "W-1-r", &[(2, "1")])).await.expect("refund");
    // Returned quantity per (receipt, line index).
    let returned = |receipt: &str, index: usize| if receipt == "W-1" && index == 1 { Decimal::from(1) } else { Decimal::ZERO };

    // What the test expects: per rule, given and candidate; totals; kept after the return.
    let mut given_rules: BTreeMap<&str, Decimal> = BTreeMap::new();
    let mut candidate_rules: BTreeMap<&str, Decimal> = BTreeMap::new();
    let (mut given_kept, mut candidate_kept) = (Decimal::ZERO, Decimal::ZERO);
    for (receipt, _, lines) in &baskets {
        let (given, given_lines) = recompute(RULES_PERCENTS, lines);
        let (candidate, candidate_lines) = recompute(CANDIDATE_PERCENTS, lines);
        given.iter().for_each(|(rule, points)| *given_rules.entry(rule).or_default() += *points);
        candidate.iter().for_each(|(rule, points)| *candidate_rules.entry(rule).or_default() += *points);
        for (index, line) in lines.iter().enumerate() {
            let left = (dec(&line.quantity) - returned(receipt, index)) / dec(&line.quantity);
            given_kept += (given_lines[index] * left).floor();
            candidate_kept += (candidate_lines[index] * left).floor();
        }
    }
    let given_total: Decimal = given_rules.values().copied().sum();
    let candidate_total: Decimal = candidate_rules.values().copied().sum();

    let messages = run(&mut admin, request(CANDIDATE, 30)).await;
    assert!(messages.len() >= 2, "progress before the report: {messages:?}");
    let whatif = report(&messages);
    assert!(whatif.completed && whatif.stopped_by.is_empty(), "{whatif:?}");
    assert_eq!(whatif.current_version, 2);
    assert_eq!(whatif.receipts_evaluated, 3, "the receipt older than the window is left out");
    assert_eq!(whatif.accounts_scanned, 3);
    let rules: BTreeMap<&str, (&str, bool, bool, Decimal, Decimal)> = whatif
        .rules
        .iter()
        .map(|rule| {
            (rule.rule_id.as_str(), (rule.label.as_str(), rule.in_current, rule.in_candidate, dec(&rule.given), dec(&rule.candidate)))
        })
        .collect();
    let expected =
        |rule: &str| (given_rules.get(rule).copied().unwrap_or_default(), candidate_rules.get(rule).copied().unwrap_or_default());
    assert_eq!(rules["base"], ("cashback 2%", true, true, expected("base").0, expected("base").1));
    assert_eq!(rules["coffee"], ("coffee 5%", true, false, expected("coffee").0, Decimal::ZERO));
    assert_eq!(rules["grocery"], ("groceries 3%", false, true, Decimal::ZERO, expected("grocery").1));
    assert_eq!((dec(&whatif.given_total), dec(&whatif.candidate_total)), (given_total, candidate_total));
    assert_eq!(dec(&whatif.difference), candidate_total - given_total);
    assert_eq!(dec(&whatif.liability_change), candidate_kept - given_kept);
    assert_eq!(dec(&whatif.expired_difference), Decimal::ZERO);
    // Worked out by hand once, so that the recomputation cannot drift with the engine: given 60
    // coffee + 37 base = 97; candidate 74 base + 75 groceries = 149; kept 87 and 99.
    assert_eq!((given_total, candidate_total, given_kept, candidate_kept), (dec("97"), dec("149"), dec("87"), dec("99")));

    // 60 days take the old receipt in too.
    let wider = run(&mut admin, request(CANDIDATE, 60)).await;
    let wider = report(&wider);
    assert_eq!(wider.receipts_evaluated, 4);
    assert_eq!(dec(&wider.given_total), given_total + dec("10"));

    // A store the receipts were not sold in finds none of them.
    let elsewhere = run(&mut admin, admin_pb::WhatIfRequest { store_id: "store-9".into(), ..request(CANDIDATE, 30) }).await;
    assert_eq!(report(&elsewhere).receipts_evaluated, 0);

    // The limits stop the scan, which says so.
    let limited = run(&mut admin, admin_pb::WhatIfRequest { max_receipts: 1, ..request(CANDIDATE, 30) }).await;
    let limited = report(&limited);
    assert_eq!((limited.completed, limited.stopped_by.as_str(), limited.receipts_evaluated), (false, "max_receipts", 1));

    // A bad candidate, a window out of bounds and a limit above the server's are refused by field.
    let bad = admin.what_if(request(&CANDIDATE.replace("\"3\"", "\"150\""), 30)).await;
    let status = expect_error(bad, Code::InvalidArgument, "RULES_INVALID");
    assert_eq!(bad_field(&status), "rules[1] (grocery).effect.percent");
    let status = expect_error(admin.what_if(request(CANDIDATE, 401)).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&status), "days");
    let too_long = admin.what_if(admin_pb::WhatIfRequest { max_seconds: 601, ..request(CANDIDATE, 30) }).await;
    assert_eq!(bad_field(&expect_error(too_long, Code::InvalidArgument, "INVALID_ARGUMENT")), "max_seconds");
    let status = expect_error(admin.what_if(request("", 30)).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&status), "document");

    // A caller that goes away after the first message frees the engine's scan.
    let mut stream = admin.what_if(request(CANDIDATE, 30)).await.expect("what-if").into_inner();
    stream.message().await.expect("first message");
    drop(stream);
    let engine = std::sync::Arc::clone(&server.engine);
    eventually(std::time::Duration::from_secs(10), "the scan's place is free", || async { engine.whatif.is_running() }, |running| !running)
        .await;
    // And the next what-if runs.
    assert!(report(&run(&mut admin, request(CANDIDATE, 30)).await).completed);
    server.stop().await;
}

/// A measurement, not a check (debug build, engine and clients in one process): WHATIF_CUSTOMERS
/// customers (2,000 by default) with two receipts each, accrued 32 at a time, then one WhatIf over
/// them; prints the scan's time and the process's resident memory before and after.
/// `cargo test -p loyalty-tests --test e2e what_if_over_many_customers -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement"]
async fn what_if_over_many_customers() {
    let customers: usize = std::env::var("WHATIF_CUSTOMERS").ok().and_then(|raw| raw.parse().ok()).unwrap_or(2000);
    let server = TestServer::start().await;
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| status.lines().find(|line| line.starts_with("VmRSS")).map(str::to_owned))
    };
    let seeded = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..32 {
        let mut client = server.client().await;
        tasks.spawn(async move {
            for customer in (worker..customers).step_by(32) {
                for receipt in 0..2 {
                    let lines = vec![coffee(1, "1000.00"), line(2, "bread", "2", "500.00")];
                    client
                        .accrue(accrue(&format!("M-{customer}-{receipt}"), card(&format!("M{customer:07}")), lines))
                        .await
                        .expect("accrue");
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("worker");
    }
    println!("seeded {customers} customers, {} receipts in {:?}; {:?}", customers * 2, seeded.elapsed(), rss());
    let mut admin = server.admin().await;
    let started = std::time::Instant::now();
    let messages = run(&mut admin, request(CANDIDATE, 30)).await;
    let whatif = report(&messages);
    println!(
        "what-if: {} accounts, {} receipts in {:?}, {} messages; {:?}",
        whatif.accounts_scanned,
        whatif.receipts_evaluated,
        started.elapsed(),
        messages.len(),
        rss()
    );
    assert_eq!(whatif.receipts_evaluated, 2 * customers as u64);
    server.stop().await;
}
