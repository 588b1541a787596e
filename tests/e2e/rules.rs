//! The rules engine end to end: the example programs loaded from their files, explanations on the
//! wire and in the ledger, rule changes through the admin service (versions, conflicts, bad rules),
//! receipts pinned to a version, engines converging on a change, the daily sweep and the outbox.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use loyalty_engine::clock::ManualClock;
use loyalty_engine::engine::Engine;
use loyalty_engine::ids::UuidIds;
use loyalty_engine::programs::Programs;
use loyalty_proto::admin as admin_pb;
use loyalty_proto::v1 as pb;
use loyalty_tests::*;
use tonic::Code;

use crate::{bad_field, expect_error};

fn program_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("deploy").join("programs").join(name)
}

async fn server_with(file: &str) -> TestServer {
    let path = program_file(file);
    TestServer::start_with(move |config| config.programs[0].rules_file = Some(path), |store| store).await
}

fn applied(line: &pb::LineEarn) -> Vec<(String, String)> {
    line.applied.iter().map(|rule| (rule.rule_id.clone(), rule.points.clone())).collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

fn branded(mut line: pb::BasketLine, brand: &str) -> pb::BasketLine {
    line.brand = brand.into();
    line
}

#[tokio::test]
async fn supermarket_receipt_explains_every_line_and_the_ledger_names_rules_and_version() {
    let server = server_with("supermarket.toml").await;
    let mut client = server.client().await;
    let customer = card("CARD1001");
    let lines =
        vec![line(1, "milk", "2", "450.00"), excise(line(2, "vodka", "1", "3000.00")), branded(line(3, "cheese", "1", "2000.00"), "Dala")];
    let quote = client.authorize(authorize("Q1", customer.clone(), lines.clone(), "")).await.expect("quote").into_inner();
    assert_eq!((quote.earn_total.as_str(), quote.program_version), ("109", 1));
    let receipt = client.accrue(accrue("S1", customer.clone(), lines)).await.expect("accrue").into_inner();
    assert_eq!(receipt.earned, "109");
    assert_eq!(applied(&receipt.lines[0]), pairs(&[("base", "9")]));
    assert_eq!((applied(&receipt.lines[1]), receipt.lines[1].reason.as_str()), (vec![], "no rule applies: excise goods"));
    assert_eq!((applied(&receipt.lines[2]), receipt.lines[2].reason.as_str()), (pairs(&[("own-brand-5", "100")]), "own brand 5%"));
    let per_rule: Vec<(String, String)> = receipt.rules.iter().map(|rule| (rule.rule_id.clone(), rule.points.clone())).collect();
    assert_eq!(per_rule, pairs(&[("own-brand-5", "100"), ("base", "9")]));
    // Change kept as points: spendable at once, and a cancelled receipt takes it back with the earn.
    let kept =
        pb::AccrueRequest { change_to_points: "75.50".into(), ..accrue("S2", customer.clone(), vec![line(1, "gum", "1", "224.50")]) };
    let kept = client.accrue(kept).await.expect("accrue with change").into_inner();
    assert_eq!((kept.earned.as_str(), kept.change_points.as_str()), ("2", "75"));
    assert_eq!(kept.balance.expect("balance").available, "75");
    let too_much =
        pb::AccrueRequest { change_to_points: "500".into(), ..accrue("S3", customer.clone(), vec![line(1, "gum", "1", "224.50")]) };
    assert_eq!(client.accrue(too_much).await.expect("accrue").into_inner().change_points, "100", "at most 100");
    let reversed = client.reverse(reverse("S2")).await.expect("reverse").into_inner();
    assert_eq!(reversed.earn_clawed_back, "77");
    let ledger = full_ledger(&mut client, customer).await;
    let earn = ledger.iter().rev().find(|entry| entry.kind == pb::EntryKind::Earn as i32).expect("earn entry");
    assert_eq!((earn.rule_ids.clone(), earn.program_version), (vec!["own-brand-5".to_owned(), "base".to_owned()], 1));
    assert!(earn.reason.contains("own brand 5% 100") && earn.reason.contains("cashback 1% 9"), "{}", earn.reason);
    server.stop().await;
}

#[tokio::test]
async fn admin_changes_make_versions_refuse_bad_rules_and_stale_versions_and_apply_at_once() {
    let server = server_with("supermarket.toml").await;
    let mut client = server.client().await;
    let mut admin = server.admin().await;
    let listed = admin.list_rules(admin_pb::ListRulesRequest { program_id: PROGRAM.into(), format: 0 }).await.expect("list").into_inner();
    assert_eq!(listed.version, 1);
    assert_eq!(
        listed.rules.iter().map(|rule| rule.id.as_str()).collect::<Vec<_>>(),
        vec!["birthday-14", "own-brand-5", "big-basket-2", "base", "change-safe"]
    );

    let upsert = |expected_version: u64, document: &str| admin_pb::UpsertRuleRequest {
        program_id: PROGRAM.into(),
        expected_version,
        format: admin_pb::DocumentFormat::Toml as i32,
        document: document.into(),
        comment: "test".into(),
    };
    let bad = "id = \"coffee\"\npriority = 150\nstacking = \"exclusive\"\nwhen.lines = { categories = [\"coffee\"] }\neffect = { kind = \"percent_of_lines\", percent = \"150\" }\n";
    let status = expect_error(admin.upsert_rule(upsert(1, bad)).await, Code::InvalidArgument, "RULES_INVALID");
    assert_eq!(bad_field(&status), "rules[5] (coffee).effect.percent");
    let typo = "id = \"coffee\"\neffect = { kind = \"percent_of_lines\", pecent = \"5\" }\n";
    let status = expect_error(admin.upsert_rule(upsert(1, typo)).await, Code::InvalidArgument, "RULES_INVALID");
    assert!(bad_field(&status).starts_with("effect"), "{status:?}");

    let good = bad.replace("\"150\"", "\"3\"");
    let status = expect_error(admin.upsert_rule(upsert(0, &good)).await, Code::Aborted, "RULES_VERSION_CONFLICT");
    assert!(status.message().contains("version 1"), "{status:?}");
    let changed = admin.upsert_rule(upsert(1, &good)).await.expect("upsert").into_inner();
    assert_eq!((changed.version, changed.active_rules), (2, 6));

    let mut coffee = line(1, "arabica", "1", "1000.00");
    coffee.category = "coffee".into();
    let receipt = client.accrue(accrue("C1", card("CARD2001"), vec![coffee.clone()])).await.expect("accrue").into_inner();
    assert_eq!((receipt.earned.as_str(), receipt.program_version), ("30", 2), "3% from the new rule, at once");

    let deactivate = admin_pb::SetRuleActiveRequest {
        program_id: PROGRAM.into(),
        expected_version: 2,
        rule_id: "coffee".into(),
        active: false,
        comment: "campaign over".into(),
        ..Default::default()
    };
    assert_eq!(admin.set_rule_active(deactivate).await.expect("deactivate").into_inner().version, 3);
    let receipt = client.accrue(accrue("C2", card("CARD2001"), vec![coffee.clone()])).await.expect("accrue").into_inner();
    assert_eq!((receipt.earned.as_str(), receipt.program_version), ("10", 3), "back to the base 1%");

    // A dry run tries a candidate rule set without applying it.
    let candidate = "[[rules]]\nid = \"all-5\"\neffect = { kind = \"percent_of_lines\", percent = \"5\" }\n";
    let dry = admin
        .dry_run(admin_pb::DryRunRequest {
            program_id: PROGRAM.into(),
            format: admin_pb::DocumentFormat::Toml as i32,
            document: candidate.into(),
            lines: vec![coffee.clone()],
            ..Default::default()
        })
        .await
        .expect("dry run")
        .into_inner();
    assert_eq!((dry.earn_total.as_str(), dry.version), ("50", 0));
    let listed = admin.list_rules(admin_pb::ListRulesRequest { program_id: PROGRAM.into(), format: 2 }).await.expect("list").into_inner();
    assert_eq!(listed.version, 3, "a dry run changes nothing");
    assert!(listed.document.contains("coffee"), "YAML document lists the rule:\n{}", listed.document);
    server.stop().await;
}

#[tokio::test]
async fn a_receipt_keeps_the_version_its_authorization_used() {
    let server = server_with("supermarket.toml").await;
    let mut client = server.client().await;
    let mut admin = server.admin().await;
    client.enroll(enroll("e1", "+77010000901", "CARD3001")).await.expect("enroll");
    let customer = card("CARD3001");
    client.accrue(accrue("fund", customer.clone(), vec![line(1, "tv", "1", "100000.00")])).await.expect("fund");
    server.clock.advance(Duration::days(1));
    let lines = vec![line(1, "meat", "1", "5000.00")];
    let held = client.authorize(authorize("P1", customer.clone(), lines.clone(), "100")).await.expect("hold").into_inner();
    assert_eq!((held.earn_total.as_str(), held.program_version), ("50", 1));
    let rules = admin.list_rules(admin_pb::ListRulesRequest { program_id: PROGRAM.into(), format: 0 }).await.expect("list").into_inner();
    let raised = rules.document.replace("percent = \"1\"", "percent = \"3\"");
    let applied = admin
        .apply_rules(admin_pb::ApplyRulesRequest {
            program_id: PROGRAM.into(),
            expected_version: 1,
            format: admin_pb::DocumentFormat::Toml as i32,
            document: raised,
            comment: "base 3%".into(),
        })
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(applied.version, 2);
    let closed = client.accrue(accrue("P1", customer.clone(), lines.clone())).await.expect("accrue").into_inner();
    assert_eq!((closed.program_version, closed.earned.as_str()), (1, "50"), "version 1 from authorize to accrue (the hold was released)");
    let fresh = client.accrue(accrue("P2", customer.clone(), lines)).await.expect("accrue").into_inner();
    assert_eq!((fresh.program_version, fresh.earned.as_str()), (2, "150"));
    server.stop().await;
}

#[tokio::test]
async fn a_second_engine_over_the_same_store_converges_on_a_change_within_seconds() {
    let server = server_with("supermarket.toml").await;
    let mut admin = server.admin().await;
    let mut config =
        loyalty_engine::config::Config { data_dir: server.dir.path().to_path_buf(), programs: vec![shop_program()], ..Default::default() };
    config.programs[0].rules_file = Some(program_file("supermarket.toml"));
    let other = Arc::new(Engine::new(
        Arc::clone(&server.store),
        Programs::from_config(&config).expect("config"),
        Arc::new(ManualClock::new(start_time())),
        Arc::new(UuidIds),
        1000,
    ));
    other.bootstrap_rules().await.expect("bootstrap");
    let version = |engine: &Engine| engine.programs().get(PROGRAM).map(|program| program.rules.version());
    assert_eq!(version(&other), Some(1));
    let refresh = loyalty_engine::background::spawn_refresh(Arc::clone(&other), StdDuration::from_millis(100));
    let deactivate = admin_pb::SetRuleActiveRequest {
        program_id: PROGRAM.into(),
        expected_version: 1,
        campaign: "big-basket".into(),
        active: false,
        ..Default::default()
    };
    admin.set_rule_active(deactivate).await.expect("deactivate");
    eventually(
        StdDuration::from_secs(5),
        "the other engine picks up version 2",
        || std::future::ready(version(&other)),
        |version| *version == Some(2),
    )
    .await;
    let active: Vec<String> = other.programs().get(PROGRAM).expect("program").rules.active_rule_ids().map(str::to_owned).collect();
    assert!(!active.contains(&"big-basket-2".to_owned()));
    refresh.abort();
    server.stop().await;
}

#[tokio::test]
async fn cafe_customer_journey_welcome_tiers_review_win_back_certificate_and_the_outbox() {
    let server = server_with("cafe.yaml").await;
    let mut client = server.client().await;
    let mut admin = server.admin().await;
    let enrolled = client.enroll(enroll("e1", "+77010000902", "CAFE0001")).await.expect("enroll").into_inner();
    assert_eq!(enrolled.bonuses.iter().map(|b| (b.rule_id.as_str(), b.points.as_str())).collect::<Vec<_>>(), vec![("welcome", "5000")]);
    assert_eq!(enrolled.balance.expect("balance").spendable, "5000", "welcome points spend at once");
    let customer = card("CAFE0001");

    // 30,000 of coffee: 5% as a friend; the receipt lifts the customer to "regular" at once.
    let receipt =
        client.accrue(accrue("K1", customer.clone(), vec![line(1, "beans", "10", "3000.00")])).await.expect("accrue").into_inner();
    assert_eq!((receipt.earned.as_str(), receipt.tier.as_str()), ("1500", "regular"));
    // A refund of half takes the tier back down (tier progress follows refunds).
    client.refund(refund("K1", "K1-r1", &[(1, "5")])).await.expect("refund");
    let account = client.get_account(get_account(customer.clone())).await.expect("account").into_inner();
    assert_eq!((account.tier.as_str(), account.tier_spend.as_str()), ("friend", "15000.00"));

    let review = pb::AwardBonusRequest {
        program_id: PROGRAM.into(),
        store_id: STORE.into(),
        till_id: TILL.into(),
        request_id: "review-1".into(),
        customer: customer.clone(),
        event: "review".into(),
    };
    assert_eq!(client.award_bonus(review.clone()).await.expect("review").into_inner().points, "1000");
    assert_eq!(client.award_bonus(review.clone()).await.expect("replay").into_inner().points, "1000", "a replay answers the same");
    let again = pb::AwardBonusRequest { request_id: "review-2".into(), ..review };
    assert_eq!(client.award_bonus(again).await.expect("second review").into_inner().points, "0", "once per customer");

    // 15 days after the last purchase the sweep issues the win-back certificate, once.
    server.clock.advance(Duration::days(15));
    let program = server.engine.programs().get(PROGRAM).expect("program");
    assert_eq!(server.engine.sweep.run(&program).await.expect("sweep").awards, 1);
    assert_eq!(server.engine.sweep.run(&program).await.expect("sweep again").awards, 0);
    let before = balance_of(&mut client, customer.clone()).await;
    // The certificate pays at most 50% of a receipt; the points at most the friend tier's 7%.
    let quote = client.authorize(authorize("K2", customer.clone(), vec![line(1, "cake", "1", "2000.00")], "")).await.expect("quote");
    let quote = quote.into_inner();
    assert_eq!(quote.max_spend, "1140", "7% = 140 in points + 50% = 1,000 from the certificate: {}", quote.spend_explanation);

    let events = admin
        .read_events(admin_pb::ReadEventsRequest { program_id: PROGRAM.into(), after_seq: 0, limit: 0 })
        .await
        .expect("events")
        .into_inner();
    let kinds: Vec<&str> = events.events.iter().map(|event| event.kind.as_str()).collect();
    // The sweep that issued the 14-day certificate also noticed it expires within 30 days.
    let expected =
        ["bonus_credited", "points_earned", "tier_changed", "tier_changed", "bonus_credited", "certificate_issued", "points_expiring"];
    assert_eq!(kinds, expected);
    let certificate = &events.events[5];
    assert_eq!((certificate.points.as_str(), certificate.rule_ids.clone()), ("2000", vec!["win-back".to_owned()]));
    assert_eq!(before.available, "8750", "5,000 welcome + 1,500 earned - 750 clawed back + 1,000 review + 2,000 certificate");

    // The same request ID for another customer is the caller's request ID reused, said as such.
    let reused = pb::AwardBonusRequest {
        program_id: PROGRAM.into(),
        store_id: STORE.into(),
        till_id: TILL.into(),
        request_id: "review-1".into(),
        customer: card("CAFE0999"),
        event: "review".into(),
    };
    client.accrue(accrue("K0", card("CAFE0999"), vec![line(1, "tea", "1", "100.00")])).await.expect("another customer");
    let status = crate::expect_error(client.award_bonus(reused).await, tonic::Code::AlreadyExists, "IDEMPOTENCY_CONFLICT");
    let info = tonic_types::StatusExt::get_details_error_info(&status).expect("ErrorInfo");
    assert_eq!(
        (info.metadata.get("key_kind").map(String::as_str), info.metadata.get("key").map(String::as_str)),
        (Some("request_id"), Some("review-1"))
    );
    server.stop().await;
}

#[tokio::test]
async fn cafe_referrals_credit_three_levels_up_and_a_refund_takes_their_share_back() {
    let server = server_with("cafe.yaml").await;
    let mut client = server.client().await;
    let phones = ["+77010000911", "+77010000912", "+77010000913", "+77010000914"];
    for (index, phone_number) in phones.iter().enumerate() {
        let mut request = enroll(&format!("ref-{index}"), phone_number, &format!("REF000{index}"));
        if index > 0 {
            request.referrer = phone(phones[index - 1]);
        }
        client.enroll(request).await.expect("enroll");
    }
    let balances = |client: &mut loyalty_tests::Client| {
        let mut client = client.clone();
        async move {
            let mut all = Vec::new();
            for phone_number in phones {
                let balance = balance_of(&mut client, phone(phone_number)).await;
                all.push(balance.balance);
            }
            all
        }
    };
    // The fourth customer buys 10,000: 3% to the third, 1% to the second and the first.
    client.accrue(accrue("REF-R1", phone(phones[3]), vec![line(1, "beans", "1", "10000.00")])).await.expect("accrue");
    let expected = vec!["5100".to_owned(), "5100".to_owned(), "5300".to_owned(), "5500".to_owned()];
    eventually(StdDuration::from_secs(5), "referral credits applied", || balances(&mut client), |all| *all == expected).await;
    let ledger = full_ledger(&mut client, phone(phones[2])).await;
    let reward = ledger.iter().find(|entry| entry.reason.starts_with("referral reward")).expect("reward entry");
    assert_eq!((reward.amount.as_str(), reward.rule_ids.clone()), ("300", vec!["referral".to_owned()]));
    // Returning half the receipt takes half of each reward back.
    client.refund(refund("REF-R1", "REF-R1-1", &[(1, "0.5")])).await.expect("refund");
    let expected = vec!["5050".to_owned(), "5050".to_owned(), "5150".to_owned(), "5250".to_owned()];
    eventually(StdDuration::from_secs(5), "referral clawbacks applied", || balances(&mut client), |all| *all == expected).await;
    assert!(server.store.pending_credits(PROGRAM, 10).await.expect("credits").is_empty(), "every credit applied and forgotten");
    let bad = pb::EnrollRequest { referrer: phone("+77010000999"), ..enroll("ref-x", "+77010000915", "") };
    let status = expect_error(client.enroll(bad).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&status), "referrer");
    server.stop().await;
}

#[tokio::test]
async fn the_sweep_tells_the_outbox_about_points_expiring_within_30_days_once() {
    let server = server_with("supermarket.toml").await;
    let mut client = server.client().await;
    let mut admin = server.admin().await;
    client.accrue(accrue("X1", card("EXP00001"), vec![line(1, "tv", "1", "50000.00")])).await.expect("accrue");
    // A second customer whose points expire the same month gets a notice of their own.
    client.accrue(accrue("X2", card("EXP00002"), vec![line(1, "tv", "1", "100.00")])).await.expect("accrue");
    let program = server.engine.programs().get(PROGRAM).expect("program");
    assert_eq!(server.engine.sweep.run(&program).await.expect("sweep").expiry_notices, 0, "24 months to go");
    // 2026-03-10 + 24 months: the points expire at the end of 2028-03-10; 20 days before, a notice.
    server.clock.advance(Duration::days(731 - 20));
    let report = server.engine.sweep.run(&program).await.expect("sweep");
    assert_eq!((report.accounts, report.expiry_notices), (2, 2), "one notice per customer");
    assert_eq!(server.engine.sweep.run(&program).await.expect("sweep again").expiry_notices, 0, "once");
    let events = admin
        .read_events(admin_pb::ReadEventsRequest { program_id: PROGRAM.into(), after_seq: 0, limit: 10 })
        .await
        .expect("events")
        .into_inner();
    let notices: Vec<_> = events.events.iter().filter(|event| event.kind == "points_expiring").collect();
    assert_eq!(notices.len(), 2, "{notices:?}");
    let notice = notices.iter().find(|event| event.points == "1000").expect("2% of 50,000 expiring");
    let expires = notice.expires_at.as_ref().expect("expiry").seconds;
    assert_eq!(chrono::DateTime::from_timestamp(expires, 0).expect("time").to_rfc3339(), "2028-03-10T19:00:00+00:00");
    server.stop().await;
}
