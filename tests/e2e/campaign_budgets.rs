//! Campaign-wide budgets end to end: many tills at once spend a launch budget of 1,000 points that
//! they want three times over. Never a point over it, and on one engine exactly it; receipts past
//! it get the rest of their points and lines that say the budget is spent; replays take nothing
//! again; `ReadBudgets` accounts for every point (given + held by engines = reserved <= budget).
//! On ScyllaDB two engines share the budget through their reservations, and a clean stop gives
//! back what an engine held.

use loyalty_proto::admin as admin_pb;
use loyalty_proto::v1 as pb;
use loyalty_tests::*;
use rust_decimal::Decimal;

const RULES: &str = r#"
[budgets.launch]
points = "1000"
chunk_points = "150"

[[rules]]
id = "base"
name = "cashback 1%"
effect = { kind = "percent_of_lines", percent = "1" }

[[rules]]
id = "launch"
name = "launch 10% on coffee"
campaign = "launch"
priority = 100
stacking = "always"
when.lines = { categories = ["coffee"] }
effect = { kind = "percent_of_lines", percent = "10" }
"#;

/// Receipts sent, each wanting 100 points of the launch budget.
const RECEIPTS: usize = 30;

fn basket() -> Vec<pb::BasketLine> {
    let mut coffee = line(1, "arabica", "1", "1000.00");
    coffee.category = "coffee".into();
    vec![coffee, line(2, "bread", "1", "500.00")]
}

fn receipt(index: usize) -> pb::AccrueRequest {
    accrue(&format!("LAUNCH-{index}"), card(&format!("LAUNCH{index:04}")), basket())
}

async fn apply(admin: &mut Admin) {
    apply_version(admin, 1, RULES).await;
}

async fn apply_version(admin: &mut Admin, expected_version: u64, document: &str) {
    admin
        .apply_rules(admin_pb::ApplyRulesRequest {
            program_id: PROGRAM.into(),
            expected_version,
            format: admin_pb::DocumentFormat::Toml as i32,
            document: document.into(),
            comment: "launch campaign with a budget".into(),
        })
        .await
        .expect("rules apply");
}

async fn budget(admin: &mut Admin) -> admin_pb::CampaignBudget {
    let read = admin.read_budgets(admin_pb::ReadBudgetsRequest { program_id: PROGRAM.into() }).await.expect("read budgets").into_inner();
    assert_eq!(read.budgets.len(), 1, "{read:?}");
    read.budgets.into_iter().next().expect("one budget")
}

/// The launch rule's points in an answer.
fn launch_points(answer: &pb::AccrueResponse) -> Decimal {
    answer.rules.iter().filter(|rule| rule.rule_id == "launch").map(|rule| dec(&rule.points)).sum()
}

/// Sends receipts `indexes` from 8 tills at once over the given engines (round robin).
async fn send(servers: &[&TestServer], indexes: std::ops::Range<usize>) -> Vec<pb::AccrueResponse> {
    send_from(servers, indexes, 8).await
}

/// Sends receipts `indexes` from `tills` tills at once over the given engines (round robin).
async fn send_from(servers: &[&TestServer], indexes: std::ops::Range<usize>, till_count: usize) -> Vec<pb::AccrueResponse> {
    let mut tills = Vec::new();
    for till in 0..till_count {
        let server = servers[till % servers.len()];
        let mut client = server.client().await;
        let mine: Vec<usize> = indexes.clone().filter(|index| index % 8 == till % 8).collect();
        tills.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for index in mine {
                answers.push((index, client.accrue(receipt(index)).await.expect("accrue").into_inner()));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for till in tills {
        answers.extend(till.await.expect("till"));
    }
    answers.sort_by_key(|(index, _)| *index);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

fn check_answers(answers: &[pb::AccrueResponse]) -> Decimal {
    for answer in answers {
        // The rest of the receipt never depends on the budget: 1% of 1,500.
        let base: Decimal = answer.rules.iter().filter(|rule| rule.rule_id == "base").map(|rule| dec(&rule.points)).sum();
        assert_eq!(base, dec("15"), "{answer:?}");
        let launch = launch_points(answer);
        assert!(launch <= dec("100"));
        assert_eq!(dec(&answer.earned), base + launch);
        let spent_said = answer.lines[0].reason.contains("launch 10% on coffee: campaign budget spent");
        assert_eq!(spent_said, launch < dec("100"), "the coffee line says so exactly when the budget cut it: {answer:?}");
    }
    answers.iter().map(launch_points).sum()
}

#[tokio::test]
async fn a_campaign_budget_is_given_exactly_and_never_passed() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    apply(&mut admin).await;
    let answers = send(&[&server], 0..RECEIPTS).await;
    let given = check_answers(&answers);
    // One engine gives all it reserved: exactly the budget.
    assert_eq!(given, dec("1000"));
    assert!(answers.iter().filter(|answer| launch_points(answer).is_zero()).count() >= RECEIPTS - 11);
    let read = budget(&mut admin).await;
    assert_eq!(
        (dec(&read.points), dec(&read.reserved), dec(&read.unreserved), dec(&read.held_here), dec(&read.given)),
        (dec("1000"), dec("1000"), dec("0"), dec("0"), given)
    );

    // Replays answer the same and take nothing again.
    let again = send(&[&server], 0..RECEIPTS).await;
    assert_eq!(again, answers);
    assert_eq!(budget(&mut admin).await, read);

    // Every customer's ledger holds what their receipt answered.
    let mut client = server.client().await;
    for (index, answer) in answers.iter().enumerate() {
        let balance = balance_of(&mut client, card(&format!("LAUNCH{index:04}"))).await;
        assert_eq!(dec(&balance.balance), dec(&answer.earned), "customer {index}");
    }

    // A quote now shows the campaign spent.
    let quote = client.authorize(authorize("LAUNCH-Q", card("LAUNCH9999"), basket(), "0")).await.expect("quote").into_inner();
    assert!(quote.rules.iter().all(|rule| rule.rule_id != "launch"), "{quote:?}");
    assert!(quote.lines[0].reason.contains("campaign budget spent"), "{quote:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engines_share_a_campaign_budget_on_scylla() {
    let rig = crate::scylla::Rig::shared().await;
    let first = rig.engine().await;
    let second = rig.engine().await;
    let mut admin = first.admin().await;
    apply(&mut admin).await;
    // The second engine sees the new rules at its next refresh; until then it would not limit.
    second.engine.rules().refresh().await.expect("refresh");
    // 16 tills: each receipt is sent by two at once, one on each engine (the loser of the race
    // gives back what it took and answers the winner's answer).
    let mut answers = send_from(&[&first, &second], 0..RECEIPTS, 16).await;
    for pair in answers.chunks(2) {
        assert_eq!(pair[0], pair[1], "a duplicate got another answer");
    }
    answers.dedup();
    assert_eq!(answers.len(), RECEIPTS);
    let given = check_answers(&answers);
    // The figures count what the receipts got once their events are relayed.
    let seen_first = eventually(
        std::time::Duration::from_secs(20),
        "the figures count the campaign's points",
        || {
            let mut admin = admin.clone();
            async move { budget(&mut admin).await }
        },
        |read| dec(&read.given) == given,
    )
    .await;
    let seen_second = budget(&mut second.admin().await).await;
    assert_eq!(seen_second.given, seen_first.given);
    assert_eq!(seen_first.reserved, seen_second.reserved);
    let reserved = dec(&seen_first.reserved);
    let held = dec(&seen_first.held_here) + dec(&seen_second.held_here);
    // Never over, and every reserved point is given or held by an engine.
    assert!(reserved <= dec("1000"), "{seen_first:?}");
    assert_eq!(given + held, reserved, "given {given}, held {held}, reserved {reserved}");
    assert!(given >= dec("1000") - dec("300"), "given {given}: at most one chunk held per engine");

    // A clean stop gives back what the second engine held.
    let held_second = dec(&seen_second.held_here);
    second.stop().await;
    let after = budget(&mut admin).await;
    assert_eq!(dec(&after.reserved), reserved - held_second);
    assert_eq!(dec(&after.unreserved), dec("1000") - reserved + held_second);
    first.stop().await;
}

/// The budget a receipt's points are checked against is the lower of its rules version's and the
/// latest: a receipt begun before the budget was lowered gets nothing past the new one; raising
/// it lets the campaign pay again.
#[tokio::test]
async fn a_lowered_budget_binds_receipts_begun_before_and_a_raised_one_pays_on() {
    let server =
        TestServer::start_with(|config| config.programs[0].pending = loyalty_core::program::PendingRule::None, |store| store).await;
    let mut admin = server.admin().await;
    let mut client = server.client().await;
    apply(&mut admin).await;
    // A customer earns, then begins a receipt (a hold) under version 2, budget 1,000.
    client.enroll(enroll("enrol-pinned", "+77015550101", "LAUNCHPINNED")).await.expect("enrol");
    let pinned = card("LAUNCHPINNED");
    let first = client.accrue(accrue("P-1", pinned.clone(), basket())).await.expect("accrue").into_inner();
    assert_eq!(launch_points(&first), dec("100"));
    client.authorize(authorize("P-2", pinned.clone(), basket(), "10")).await.expect("hold");
    let mut given = launch_points(&first) + check_answers(&send(&[&server], 0..3).await);
    // Version 3 lowers the budget to 500.
    apply_version(&mut admin, 2, &RULES.replace(r#"points = "1000""#, r#"points = "500""#)).await;
    given += check_answers(&send(&[&server], 3..12).await);
    // Past the few seconds the engine takes the campaign as spent: P-2 makes it read the store.
    server.clock.advance(chrono::Duration::seconds(10));
    let paid = client.accrue(accrue("P-2", pinned, basket())).await.expect("accrue").into_inner();
    assert_eq!(paid.program_version, 2, "the receipt keeps the version of its first call");
    given += launch_points(&paid);
    let read = budget(&mut admin).await;
    assert_eq!(dec(&read.given), given);
    assert!(given <= dec("500") && dec(&read.reserved) <= dec("500"), "given {given}: {read:?}");
    assert_eq!(given + dec(&read.held_here), dec(&read.reserved));
    // Version 4 raises it to 2,000; once the engine reads the store again (it took the campaign
    // as spent for a few seconds), receipts are paid in full.
    apply_version(&mut admin, 3, &RULES.replace(r#"points = "1000""#, r#"points = "2000""#)).await;
    server.clock.advance(chrono::Duration::seconds(10));
    let more = send(&[&server], 12..20).await;
    assert!(more.iter().all(|answer| launch_points(answer) == dec("100")), "{more:?}");
    let read = budget(&mut admin).await;
    assert_eq!(dec(&read.given), given + dec("800"));
    assert!(dec(&read.reserved) <= dec("2000"));
    server.stop().await;
}
