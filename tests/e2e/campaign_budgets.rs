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
    admin
        .apply_rules(admin_pb::ApplyRulesRequest {
            program_id: PROGRAM.into(),
            expected_version: 1,
            format: admin_pb::DocumentFormat::Toml as i32,
            document: RULES.into(),
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
    let mut tills = Vec::new();
    for till in 0..8 {
        let server = servers[till % servers.len()];
        let mut client = server.client().await;
        let mine: Vec<usize> = indexes.clone().filter(|index| index % 8 == till).collect();
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
    let answers = send(&[&first, &second], 0..RECEIPTS).await;
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
