//! Sandbox programs with test clocks: an integrator runs the café's time rules end to end over
//! gRPC (pending points, birthday and win-back certificates, their expiry, 24-month expiry) in
//! seconds, while a production program beside it keeps the engine's time and refuses the call.

use chrono::Duration;
use loyalty_engine::config::{Config, ProgramConfig};
use loyalty_proto::admin as admin_pb;
use loyalty_proto::v1 as pb;
use loyalty_tests::*;
use tonic::Code;

use crate::expect_error;

const PRODUCTION: &str = "prod";

/// The test program as a sandbox running the café's rules, and a production program beside it.
fn sandbox_cafe(config: &mut Config) {
    let cafe = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/programs/cafe.yaml");
    config.programs[0].rules_file = Some(cafe);
    config.programs[0].sandbox = true;
    config.programs.push(ProgramConfig { id: PRODUCTION.into(), ..ProgramConfig::default() });
}

fn advance(request_id: &str, by: Duration) -> admin_pb::AdvanceClockRequest {
    admin_pb::AdvanceClockRequest { program_id: PROGRAM.into(), request_id: request_id.into(), seconds: by.num_seconds() }
}

async fn balance(client: &mut Client, customer: Option<pb::CustomerRef>) -> pb::Balance {
    client.get_account(get_account(customer)).await.expect("account").into_inner().balance.expect("balance")
}

async fn the_cafe_time_rules_run_end_to_end_on_a_sandbox_clock(server: TestServer) {
    let mut client = server.client().await;
    let mut admin = server.admin().await;
    // Registered on 10 March (program time), born on 15 March; 10,000 of coffee at the friend tier.
    let enrolment = pb::EnrollRequest { birth_date: "1990-03-15".into(), ..enroll("e-sbx", "+77010000801", "SBOX0001") };
    client.enroll(enrolment).await.expect("enroll");
    let customer = card("SBOX0001");
    let earned = client.accrue(accrue("SB1", customer.clone(), vec![line(1, "beans", "1", "10000.00")])).await.expect("accrue");
    assert_eq!(earned.into_inner().earned, "500");
    let now = balance(&mut client, customer.clone()).await;
    assert_eq!((now.available.as_str(), now.pending.as_str()), ("5000", "500"), "welcome at once, the purchase pending");

    // The next day: the purchase's points are spendable. A retry of the same request moves nothing.
    let day = admin.advance_clock(advance("a1", Duration::days(1))).await.expect("advance").into_inner();
    assert_eq!(day.offset_seconds, Duration::days(1).num_seconds());
    assert_eq!(admin.advance_clock(advance("a1", Duration::days(1))).await.expect("retry").into_inner().offset_seconds, day.offset_seconds);
    let next_day = balance(&mut client, customer.clone()).await;
    assert_eq!((next_day.available.as_str(), next_day.pending.as_str()), ("5500", "0"));

    // 15 March: the birthday certificate (1,000, good for 15 days), issued by the sweep the call runs.
    let birthday = admin.advance_clock(advance("a2", Duration::days(4))).await.expect("birthday").into_inner();
    assert_eq!(birthday.awards, 1, "{birthday:?}");
    assert_eq!(balance(&mut client, customer.clone()).await.available, "6500");
    // 26 March, 16 days without a purchase: the win-back certificate (2,000, good for 14 days).
    let absent = admin.advance_clock(advance("a3", Duration::days(11))).await.expect("win-back").into_inner();
    assert_eq!(absent.awards, 1, "{absent:?}");
    assert_eq!(balance(&mut client, customer.clone()).await.available, "8500");
    // 10 April: both certificates have expired; the welcome and earned points have not.
    admin.advance_clock(advance("a4", Duration::days(15))).await.expect("certificates expire");
    assert_eq!(balance(&mut client, customer.clone()).await.available, "5500");
    // Two years on, past 10 March 2028: every point has expired; the account's next change (a
    // purchase) writes the expiry into the ledger.
    admin.advance_clock(advance("a5", Duration::days(730))).await.expect("two years");
    let expired = balance(&mut client, customer.clone()).await;
    assert_eq!((expired.available.as_str(), expired.balance.as_str()), ("0", "0"), "{expired:?}");
    client.accrue(accrue("SB2", customer.clone(), vec![line(1, "beans", "1", "100.00")])).await.expect("a purchase two years on");
    let ledger = full_ledger(&mut client, customer.clone()).await;
    let expired: Vec<(&str, &str)> = ledger
        .iter()
        .filter(|entry| entry.kind == pb::EntryKind::Expire as i32)
        .map(|entry| (entry.amount.as_str(), entry.reason.as_str()))
        .collect();
    assert_eq!(
        expired,
        [
            ("-500", "500 points expired on 2028-03-10"),
            ("-5000", "5000 points expired on 2028-03-10"),
            ("-2000", "2000 points expired on 2026-04-08"),
            ("-1000", "1000 points expired on 2026-03-29"),
        ],
        "newest first: the purchase and the welcome 24 months on, the certificates after their 14 and 15 days"
    );

    // The production program beside it keeps the engine's time and refuses a test clock.
    let mut production = connect_with(server.addr, Some(&test_key(PRODUCTION))).await;
    let mut production_admin = admin_with(server.addr, Some(&test_key(PRODUCTION))).await;
    let request = admin_pb::AdvanceClockRequest { program_id: PRODUCTION.into(), request_id: "p1".into(), seconds: 86_400 };
    expect_error(production_admin.advance_clock(request.clone()).await, Code::FailedPrecondition, "NOT_A_SANDBOX");
    // The sandbox's key reaches no other program.
    expect_error(admin.advance_clock(request).await, Code::PermissionDenied, "PERMISSION_DENIED");
    let enrolment = pb::EnrollRequest { program_id: PRODUCTION.into(), ..enroll("e-prod", "+77010000802", "PROD0001") };
    production.enroll(enrolment).await.expect("production enrolment");
    let receipt =
        pb::AccrueRequest { program_id: PRODUCTION.into(), ..accrue("P1", card("PROD0001"), vec![line(1, "milk", "1", "10000.00")]) };
    production.accrue(receipt).await.expect("production accrue");
    let account = production
        .get_account(pb::GetAccountRequest { program_id: PRODUCTION.into(), customer: card("PROD0001") })
        .await
        .expect("production account")
        .into_inner();
    assert_eq!(account.balance.expect("balance").pending, "100", "pending until tomorrow by the engine's clock, not the sandbox's");
    server.stop().await;
}

#[tokio::test]
async fn the_cafe_time_rules_run_end_to_end_on_a_sandbox_clock_on_the_embedded_store() {
    the_cafe_time_rules_run_end_to_end_on_a_sandbox_clock(TestServer::start_with(sandbox_cafe, |store| store).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cafe_time_rules_run_end_to_end_on_a_sandbox_clock_on_scylla() {
    let rig = crate::scylla::Rig::shared().await;
    the_cafe_time_rules_run_end_to_end_on_a_sandbox_clock(rig.engine_with(sandbox_cafe).await).await;
}
