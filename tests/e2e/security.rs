//! Security over real gRPC: keys (missing, malformed, forged, revoked at run time), scopes, store
//! and operation limits, isolation between programs, customer codes under brute force, per-key
//! rate limits, overload shedding (calls in flight, CPU saturation), oversized and undecodable
//! messages, the audit trail, erasure, and logs and metrics free of personal data.

use std::sync::Arc;
use std::time::Duration;

use loyalty_engine::config::ProgramConfig;
use loyalty_proto::admin as admin_pb;
use loyalty_proto::v1 as pb;
use loyalty_tests::*;
use rust_decimal::Decimal;
use tonic::Code;

use crate::expect_error;

/// A second program with the default spending policy (a phone needs a code).
const CAFE: &str = "cafe";

async fn two_programs() -> TestServer {
    TestServer::start_with(
        |config| {
            config.programs.push(ProgramConfig {
                id: CAFE.into(),
                pending: loyalty_core::program::PendingRule::None,
                ..ProgramConfig::default()
            });
        },
        |store| store,
    )
    .await
}

fn in_program(program: &str, mut request: pb::AccrueRequest) -> pb::AccrueRequest {
    request.program_id = program.into();
    request
}

async fn cafe_client(server: &TestServer) -> Client {
    connect_with(server.addr, Some(&test_key(CAFE))).await
}

async fn create_credential(server: &TestServer, program: &str, request: admin_pb::CreateCredentialRequest) -> (String, u64) {
    let mut admin = admin_with(server.addr, Some(&test_key(program))).await;
    let version =
        admin.list_credentials(admin_pb::ListCredentialsRequest { program_id: program.into() }).await.expect("list").into_inner().version;
    let created = admin
        .create_credential(admin_pb::CreateCredentialRequest { program_id: program.into(), expected_version: version, ..request })
        .await
        .expect("create credential")
        .into_inner();
    (created.api_key, created.version)
}

#[tokio::test]
async fn calls_without_a_valid_key_are_refused_before_anything_happens() {
    let server = TestServer::start().await;
    let request = || accrue("R1", card("CARD0001"), vec![line(1, "milk", "1", "100.00")]);
    let mut none = connect_with(server.addr, None).await;
    expect_error(none.accrue(request()).await, Code::Unauthenticated, "API_KEY_MISSING");
    let mut malformed = connect_with(server.addr, Some("let-me-in")).await;
    expect_error(malformed.accrue(request()).await, Code::Unauthenticated, "API_KEY_MALFORMED");
    let forged = format!("lk1/{PROGRAM}/test-all/{}", "0".repeat(64));
    let mut forged = connect_with(server.addr, Some(&forged)).await;
    expect_error(forged.accrue(request()).await, Code::Unauthenticated, "API_KEY_INVALID");
    let unknown = format!("lk1/{PROGRAM}/nobody/{TEST_SECRET}");
    let mut unknown = connect_with(server.addr, Some(&unknown)).await;
    expect_error(unknown.accrue(request()).await, Code::Unauthenticated, "API_KEY_INVALID");
    let mut admin = admin_with(server.addr, None).await;
    expect_error(
        admin.list_credentials(admin_pb::ListCredentialsRequest { program_id: PROGRAM.into() }).await,
        Code::Unauthenticated,
        "API_KEY_MISSING",
    );
    // Nothing was written by any of them.
    let mut client = server.client().await;
    expect_error(client.get_account(get_account(card("CARD0001"))).await, Code::NotFound, "CUSTOMER_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn a_key_of_one_program_never_reaches_another() {
    let server = two_programs().await;
    let mut shop = server.client().await;
    let mut cafe = cafe_client(&server).await;
    // The same receipt ID and card in both programs are two receipts and two accounts.
    let shop_earn = shop.accrue(accrue("R1", card("CARD0001"), vec![line(1, "milk", "1", "1000.00")])).await.expect("shop").into_inner();
    let cafe_earn = cafe
        .accrue(in_program(CAFE, accrue("R1", card("CARD0001"), vec![line(1, "latte", "1", "500.00")])))
        .await
        .expect("cafe")
        .into_inner();
    assert_ne!(shop_earn.account_id, cafe_earn.account_id);
    assert_eq!((shop_earn.earned.as_str(), cafe_earn.earned.as_str()), ("10", "5"));
    // The shop's key naming the cafe: refused, whatever it asks, and nothing changes there.
    let mut read = get_account(card("CARD0001"));
    read.program_id = CAFE.into();
    expect_error(shop.get_account(read.clone()).await, Code::PermissionDenied, "PERMISSION_DENIED");
    expect_error(
        shop.accrue(in_program(CAFE, accrue("R2", card("CARD0001"), vec![line(1, "x", "1", "100.00")]))).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let mut reverse_there = reverse("R1");
    reverse_there.program_id = CAFE.into();
    expect_error(shop.reverse(reverse_there).await, Code::PermissionDenied, "PERMISSION_DENIED");
    let mut admin = admin_with(server.addr, Some(&test_key(PROGRAM))).await;
    expect_error(
        admin.read_events(admin_pb::ReadEventsRequest { program_id: CAFE.into(), after_seq: 0, limit: 10 }).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    // The cafe's account is as the cafe left it.
    let balance = cafe.get_account(read).await.expect("cafe reads its own").into_inner().balance.expect("balance");
    assert_eq!(balance.balance, "5");
    server.stop().await;
}

#[tokio::test]
async fn scopes_stores_and_operations_confine_a_credential() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.accrue(accrue("R1", card("CARD0001"), vec![line(1, "milk", "1", "1000.00")])).await.expect("funded");
    let (reader_key, _) = create_credential(
        &server,
        PROGRAM,
        admin_pb::CreateCredentialRequest {
            credential_id: "reader".into(),
            scopes: vec![admin_pb::Scope::ReadOnly as i32],
            ..Default::default()
        },
    )
    .await;
    let mut reader = connect_with(server.addr, Some(&reader_key)).await;
    reader.get_account(get_account(card("CARD0001"))).await.expect("read-only reads");
    reader.authorize(authorize("Q1", card("CARD0001"), vec![line(1, "milk", "1", "100.00")], "")).await.expect("and quotes");
    expect_error(
        reader.authorize(authorize("Q2", card("CARD0001"), vec![line(1, "milk", "1", "100.00")], "5")).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    expect_error(
        reader.accrue(accrue("R2", card("CARD0001"), vec![line(1, "milk", "1", "1.00")])).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let mut reader_admin = admin_with(server.addr, Some(&reader_key)).await;
    expect_error(
        reader_admin.list_credentials(admin_pb::ListCredentialsRequest { program_id: PROGRAM.into() }).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    let (partner_key, _) = create_credential(
        &server,
        PROGRAM,
        admin_pb::CreateCredentialRequest {
            credential_id: "partner-cinema".into(),
            scopes: vec![admin_pb::Scope::PartnerIssueCertificates as i32, admin_pb::Scope::Checkout as i32],
            stores: vec!["cinema-1".into()],
            operations: vec!["AwardBonus".into()],
            ..Default::default()
        },
    )
    .await;
    let mut partner = connect_with(server.addr, Some(&partner_key)).await;
    let mut award = pb::AwardBonusRequest {
        program_id: PROGRAM.into(),
        store_id: STORE.into(),
        till_id: TILL.into(),
        request_id: "b1".into(),
        customer: card("CARD0001"),
        event: "review".into(),
    };
    expect_error(partner.award_bonus(award.clone()).await, Code::PermissionDenied, "PERMISSION_DENIED");
    award.store_id = "cinema-1".into();
    // Allowed through the gate; the program simply pays nothing for an unknown event.
    expect_error(partner.award_bonus(award).await, Code::NotFound, "UNKNOWN_EVENT");
    let mut accrue_there = accrue("R3", card("CARD0001"), vec![line(1, "popcorn", "1", "10.00")]);
    accrue_there.store_id = "cinema-1".into();
    expect_error(partner.accrue(accrue_there).await, Code::PermissionDenied, "PERMISSION_DENIED");
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_key_stops_working_without_a_restart_and_is_audited() {
    let server = TestServer::start().await;
    let (key, version) = create_credential(
        &server,
        PROGRAM,
        admin_pb::CreateCredentialRequest {
            credential_id: "till-gw-7".into(),
            scopes: vec![admin_pb::Scope::Checkout as i32],
            ..Default::default()
        },
    )
    .await;
    let mut till = connect_with(server.addr, Some(&key)).await;
    let earned = till.accrue(accrue("R1", card("CARD0001"), vec![line(1, "milk", "1", "1000.00")])).await.expect("accrue").into_inner();
    let mut admin = server.admin().await;
    let listed = admin.list_credentials(admin_pb::ListCredentialsRequest { program_id: PROGRAM.into() }).await.expect("list").into_inner();
    let listed_debug = format!("{listed:?}");
    assert!(!listed_debug.contains(&key[key.len() - 64..]), "the key's secret is never shown again");
    admin
        .revoke_credential(admin_pb::RevokeCredentialRequest {
            program_id: PROGRAM.into(),
            credential_id: "till-gw-7".into(),
            expected_version: version,
            reason: "till stolen".into(),
        })
        .await
        .expect("revoke");
    expect_error(
        till.accrue(accrue("R2", card("CARD0001"), vec![line(1, "milk", "1", "1.00")])).await,
        Code::Unauthenticated,
        "API_KEY_REVOKED",
    );
    // A stale version is refused, so two admins never overwrite each other.
    let stale = admin
        .revoke_credential(admin_pb::RevokeCredentialRequest {
            program_id: PROGRAM.into(),
            credential_id: "till-gw-7".into(),
            expected_version: version,
            reason: String::new(),
        })
        .await;
    expect_error(stale, Code::Aborted, "ACCESS_VERSION_CONFLICT");
    // The ledger says which credential earned the points; the program's audit says who revoked it.
    let ledger = full_ledger(&mut server.client().await, card("CARD0001")).await;
    assert_eq!(ledger.iter().map(|entry| entry.actor.as_str()).collect::<Vec<_>>(), ["till-gw-7"]);
    let audit = admin
        .read_audit(admin_pb::ReadAuditRequest { program_id: PROGRAM.into(), account_id: earned.account_id, ..Default::default() })
        .await
        .expect("account audit")
        .into_inner();
    assert_eq!(audit.records.len(), 1);
    assert_eq!((audit.records[0].actor.as_str(), audit.records[0].kind.as_str()), ("till-gw-7", "ledger"));
    let program_audit = admin
        .read_audit(admin_pb::ReadAuditRequest { program_id: PROGRAM.into(), ..Default::default() })
        .await
        .expect("program audit")
        .into_inner();
    let access: Vec<_> = program_audit
        .records
        .iter()
        .filter(|record| record.kind == "access_version")
        .map(|record| (record.actor.as_str(), record.what.as_str()))
        .collect();
    assert!(access.contains(&("test-all", "version 3: revoked till-gw-7")), "{access:?}");
    assert!(access.contains(&("test-all", "version 2: created till-gw-7 (checkout)")), "{access:?}");
    server.stop().await;
}

/// Enrols a customer of the cafe by phone and gives them 500 points.
async fn cafe_customer(server: &TestServer, phone_number: &str, card_number: &str) -> Client {
    let mut cafe = cafe_client(server).await;
    let mut enrolment = enroll(&format!("e-{card_number}"), phone_number, card_number);
    enrolment.program_id = CAFE.into();
    cafe.enroll(enrolment).await.expect("enrol");
    cafe.accrue(in_program(CAFE, accrue(&format!("fund-{card_number}"), card(card_number), vec![line(1, "beans", "1", "50000.00")])))
        .await
        .expect("fund");
    cafe
}

fn cafe_spend(receipt: &str, customer: Option<pb::CustomerRef>, code: &str) -> pb::AuthorizeRequest {
    let mut request = authorize(receipt, customer, vec![line(1, "latte", "1", "1000.00")], "100");
    request.program_id = CAFE.into();
    request.customer_code = code.into();
    request
}

async fn issue(
    client: &mut Client,
    customer: Option<pb::CustomerRef>,
    channel: pb::CodeChannel,
) -> Result<tonic::Response<pb::IssueCustomerCodeResponse>, tonic::Status> {
    client
        .issue_customer_code(pb::IssueCustomerCodeRequest {
            program_id: CAFE.into(),
            customer,
            channel: channel as i32,
            store_id: STORE.into(),
            till_id: TILL.into(),
        })
        .await
}

#[tokio::test]
async fn spending_by_phone_needs_the_customers_code_and_guessing_locks_it() {
    let server = two_programs().await;
    let mut cafe = cafe_customer(&server, "+77010000001", "CARD0001").await;
    let by_phone = || phone("+77010000001");
    expect_error(cafe.authorize(cafe_spend("S1", by_phone(), "")).await, Code::FailedPrecondition, "CUSTOMER_CODE_REQUIRED");
    // The app shows a code; the till passes it on; it spends once.
    let code = issue(&mut cafe, by_phone(), pb::CodeChannel::App).await.expect("issue").into_inner().code;
    assert_eq!(code.len(), 6);
    cafe.authorize(cafe_spend("S1", by_phone(), &code)).await.expect("held with the code");
    expect_error(cafe.authorize(cafe_spend("S2", by_phone(), &code)).await, Code::PermissionDenied, "CUSTOMER_CODE_INVALID");
    // Brute force: every wrong guess counts, then spending locks, even for the right code.
    let code = issue(&mut cafe, by_phone(), pb::CodeChannel::App).await.expect("issue").into_inner().code;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for attempt in 2..5 {
        let status = expect_error(
            cafe.authorize(cafe_spend(&format!("G{attempt}"), by_phone(), wrong)).await,
            Code::PermissionDenied,
            "CUSTOMER_CODE_INVALID",
        );
        let info = tonic_types::StatusExt::get_details_error_info(&status).expect("info");
        assert_eq!(info.metadata.get("attempts_left"), Some(&(5 - attempt).to_string()));
    }
    expect_error(cafe.authorize(cafe_spend("G5", by_phone(), wrong)).await, Code::PermissionDenied, "CUSTOMER_LOCKED");
    expect_error(cafe.authorize(cafe_spend("G6", by_phone(), &code)).await, Code::PermissionDenied, "CUSTOMER_LOCKED");
    expect_error(issue(&mut cafe, by_phone(), pb::CodeChannel::App).await, Code::PermissionDenied, "CUSTOMER_LOCKED");
    // Earning goes on, and a scanned card is presence under the default policy.
    cafe.accrue(in_program(CAFE, accrue("E1", by_phone(), vec![line(1, "latte", "1", "1000.00")]))).await.expect("earning is not locked");
    cafe.authorize(cafe_spend("C1", card("CARD0001"), "")).await.expect("the card spends");
    // After the lock-out, a code sent by message (read from the outbox, as the messaging would) works.
    server.clock.advance(chrono::Duration::minutes(31));
    issue(&mut cafe, by_phone(), pb::CodeChannel::Message).await.expect("issue by message");
    let mut admin = admin_with(server.addr, Some(&test_key(CAFE))).await;
    let events = admin
        .read_events(admin_pb::ReadEventsRequest { program_id: CAFE.into(), after_seq: 0, limit: 1000 })
        .await
        .expect("events")
        .into_inner();
    let sent = events.events.iter().rev().find(|event| event.kind == "customer_code").expect("a code event").code.clone();
    cafe.authorize(cafe_spend("S9", by_phone(), &sent)).await.expect("the messaged code spends");
    server.stop().await;
}

#[tokio::test]
async fn a_credential_over_its_rate_is_told_to_back_off() {
    let server = TestServer::start().await;
    let (key, _) = create_credential(
        &server,
        PROGRAM,
        admin_pb::CreateCredentialRequest {
            credential_id: "slow-partner".into(),
            scopes: vec![admin_pb::Scope::ReadOnly as i32],
            rate_per_second: 1,
            burst: 3,
            ..Default::default()
        },
    )
    .await;
    let mut slow = connect_with(server.addr, Some(&key)).await;
    for _ in 0..3 {
        expect_error(slow.get_account(get_account(card("CARD0001"))).await, Code::NotFound, "CUSTOMER_NOT_FOUND");
    }
    let status = expect_error(slow.get_account(get_account(card("CARD0001"))).await, Code::ResourceExhausted, "RATE_LIMITED");
    let info = tonic_types::StatusExt::get_details_error_info(&status).expect("info");
    assert!(info.metadata.contains_key("retry_after_ms"), "{info:?}");
    // Other credentials are not slowed down.
    expect_error(server.client().await.get_account(get_account(card("CARD0001"))).await, Code::NotFound, "CUSTOMER_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn overload_is_shed_at_once_and_admitted_calls_complete() {
    let server = TestServer::start_with(
        |config| {
            config.limits.in_flight_max = 2;
            config.limits.admission_wait_ms = 0;
        },
        |store| store,
    )
    .await;
    let calls = (0..64).map(|i| {
        let addr = server.addr;
        tokio::spawn(async move {
            let mut client = connect(addr).await;
            client.accrue(accrue(&format!("R{i}"), card(&format!("CARD{i:04}")), vec![line(1, "milk", "1", "100.00")])).await
        })
    });
    let (mut served, mut shed) = (0, 0);
    for call in calls.collect::<Vec<_>>() {
        match call.await.expect("task") {
            Ok(_) => served += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                shed += 1;
            }
        }
    }
    assert!(served >= 2 && shed > 0, "served {served}, shed {shed}");
    server.stop().await;
}

/// Tasks that hold the test runtime's worker threads (a blocking sleep between yields), so that
/// every other task of the engine runs late: what a saturated CPU looks like from inside.
struct Blockers {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Blockers {
    /// Four blockers, running for 100 ms before this returns (the lag average has moved by then).
    async fn start() -> Blockers {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..4)
            .map(|_| {
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // Real CPU time held: what the engine's lag probe measures.
                        std::thread::sleep(Duration::from_millis(5));
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        // Real time: the probe's average only moves as its wake-ups run late, one a millisecond.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Blockers { stop, tasks }
    }

    async fn release(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("blocker");
        }
    }
}

/// With the CPU saturated (tasks hold both worker threads), the engine's own work runs late and a
/// new call is refused at once with OVERLOADED, writing nothing; once the load is gone the same
/// receipt is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_engine_refuses_new_calls_and_recovers() {
    // Lateness alone sheds here (the blockers stand for the engine's own work).
    let server = TestServer::start_with(
        |config| {
            config.limits.scheduling_delay_max_ms = 2;
            config.limits.shed_in_flight_min = 0;
        },
        |store| store,
    )
    .await;
    let mut client = server.client().await;
    let basket = || vec![line(1, "milk", "1", "100.00")];
    // Other tests share the machine: a call that should be served may meet a moment of saturation
    // they cause (or the probe's average still coming down after one), so it is retried for a while.
    async fn served_eventually(client: &mut Client, request: pb::AccrueRequest) -> pb::AccrueResponse {
        let answer = eventually(
            Duration::from_secs(5),
            "the call served once the engine is not saturated",
            || {
                let (mut client, request) = (client.clone(), request.clone());
                async move { client.accrue(request).await }
            },
            |answer| !matches!(answer, Err(status) if status.code() == Code::ResourceExhausted),
        )
        .await;
        answer.unwrap_or_else(|status| panic!("{status:?}")).into_inner()
    }
    served_eventually(&mut client, accrue("R0", card("CARD0001"), basket())).await;
    let blockers = Blockers::start().await;
    let refused = expect_error(client.accrue(accrue("R1", card("CARD0001"), basket())).await, Code::ResourceExhausted, "OVERLOADED");
    assert!(refused.message().contains("saturated"), "{refused:?}");
    blockers.release().await;
    let served = served_eventually(&mut client, accrue("R1", card("CARD0001"), basket())).await;
    // 1 point each for R0 and R1: the refused call wrote nothing.
    assert_eq!(served.balance.map(|balance| balance.balance), Some("2".to_owned()), "R0 and R1, once each");
    server.stop().await;
}

/// Late tasks with few calls in flight (another process has the CPU) are not overload: with the
/// default floor of calls in flight, the same saturation that sheds writes above (floor 0) refuses
/// no write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_tasks_with_few_calls_in_flight_shed_nothing() {
    let server = TestServer::start_with(|config| config.limits.scheduling_delay_max_ms = 2, |store| store).await;
    let mut client = server.client().await;
    let blockers = Blockers::start().await;
    for index in 0..5 {
        client.accrue(accrue(&format!("L{index}"), card("CARD0001"), vec![line(1, "milk", "1", "100.00")])).await.expect("served");
    }
    blockers.release().await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_messages_are_refused_before_the_handler() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut big = line(1, "milk", "1", "1.00");
    big.sku = "x".repeat(2 << 20);
    let status = client.accrue(accrue("R1", card("CARD0001"), vec![big])).await.expect_err("too big");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    expect_error(client.get_account(get_account(card("CARD0001"))).await, Code::NotFound, "CUSTOMER_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn erasure_removes_personal_data_and_keeps_the_ledger() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut enrolment = enroll("e1", "+77010000001", "CARD0001");
    enrolment.name = "Aigerim".into();
    let account_id = client.enroll(enrolment).await.expect("enrol").into_inner().account_id;
    client.accrue(accrue("R1", phone("+77010000001"), vec![line(1, "milk", "1", "1000.00")])).await.expect("accrue");
    let mut admin = server.admin().await;
    let export = admin
        .export_customer(admin_pb::ExportCustomerRequest { program_id: PROGRAM.into(), customer: phone("+77010000001") })
        .await
        .expect("export")
        .into_inner();
    assert_eq!(
        (export.phone.as_str(), export.name.as_str(), export.card_numbers.clone()),
        ("+77010000001", "Aigerim", vec!["CARD0001".to_owned()])
    );
    let missing_reason = admin
        .erase_customer(admin_pb::EraseCustomerRequest {
            program_id: PROGRAM.into(),
            customer: phone("+77010000001"),
            reason: String::new(),
        })
        .await;
    expect_error(missing_reason, Code::InvalidArgument, "INVALID_ARGUMENT");
    admin
        .erase_customer(admin_pb::EraseCustomerRequest {
            program_id: PROGRAM.into(),
            customer: phone("+77010000001"),
            reason: "customer request #12".into(),
        })
        .await
        .expect("erase");
    expect_error(client.get_account(get_account(phone("+77010000001"))).await, Code::NotFound, "CUSTOMER_NOT_FOUND");
    expect_error(client.get_account(get_account(card("CARD0001"))).await, Code::NotFound, "CUSTOMER_NOT_FOUND");
    // The ledger stays under the account ID, with the erasure in the account's audit trail.
    let audit = admin
        .read_audit(admin_pb::ReadAuditRequest { program_id: PROGRAM.into(), account_id: account_id.clone(), ..Default::default() })
        .await
        .expect("audit")
        .into_inner();
    assert_eq!(audit.records[0].kind, "account");
    assert_eq!(audit.records[0].actor, "test-all");
    assert!(audit.records.iter().any(|record| record.kind == "ledger"), "{audit:?}");
    assert!(!format!("{audit:?}").contains("Aigerim") && !format!("{audit:?}").contains("77010000001"));
    // The phone may be registered again, as a new customer.
    let again = client.enroll(enroll("e2", "+77010000001", "")).await.expect("re-enrol").into_inner();
    assert_ne!(again.account_id, account_id);
    server.stop().await;
}

/// Reads the engine's Prometheus page over plain HTTP/1.0.
async fn metrics_page(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to metrics");
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.expect("send");
    let mut page = String::new();
    stream.read_to_string(&mut page).await.expect("read metrics");
    page
}

/// The engine binary at debug level, JSON logs and text logs: enrolment with a phone and a name,
/// earning and spending by phone, refused calls that carry the phone (unknown, malformed, taken,
/// without a code), code issuing and erasure. Neither the logs nor the metrics page ever contain
/// the phone number or the name.
#[tokio::test]
async fn phone_numbers_and_names_never_reach_logs_or_metrics() {
    const PHONE: &str = "+77019876543";
    const NAME: &str = "Zhanar Sultanbekova";
    // The logs are searched for parts of the numbers too; the metrics page (with its long float
    // sums) for the whole numbers only.
    const SECRETS: [&str; 6] = ["9876543", "Zhanar", "Sultanbekova", "5550123", "12345678901234", "Bolat"];
    const SECRETS_ON_METRICS: [&str; 6] = ["77019876543", "Zhanar", "Sultanbekova", "77015550123", "12345678901234", "Bolat"];
    for format in ["json", "text"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (config, credentials, log) =
            (dir.path().join("engine.toml"), dir.path().join("credentials.toml"), dir.path().join("engine.log"));
        std::fs::write(&config, format!("[[programs]]\nid = \"{PROGRAM}\"\npending = \"none\"\n{UNDER_TEST_LIMITS_TOML}"))
            .expect("write config");
        write_test_credentials(&credentials, &[PROGRAM]);
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address");
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        for (flag, value) in [
            ("--config", config.into_os_string()),
            ("--data-dir", dir.path().join("data").into_os_string()),
            ("--credentials-file", credentials.into_os_string()),
            ("--log", "debug".into()),
            ("--log-format", format.into()),
            ("--metrics-listen", metrics.to_string().into()),
        ] {
            args.extend([flag.into(), value]);
        }
        let (mut child, addr) = crate::spawn_engine_with(args, std::fs::File::create(&log).expect("log file").into()).await;
        let mut client = connect(addr).await;
        let mut enrolment = enroll("e1", PHONE, "CARD7001");
        enrolment.name = NAME.into();
        enrolment.birth_date = "1990-04-02".into();
        client.enroll(enrolment.clone()).await.expect("enrol");
        client.enroll(enrolment).await.expect("enrolment replayed");
        let mut taken = enroll("e2", PHONE, "");
        taken.name = "Bolat".into();
        assert!(client.enroll(taken).await.is_err(), "the phone is taken");
        assert!(client.enroll(enroll("e3", "+7701234567890123456789", "")).await.is_err(), "a malformed phone");
        client.accrue(accrue("R1", phone(PHONE), vec![line(1, "milk", "1", "1000.00")])).await.expect("accrue by phone");
        let spend = client.authorize(authorize("R2", phone(PHONE), vec![line(1, "milk", "1", "500.00")], "10")).await;
        expect_error(spend, Code::FailedPrecondition, "CUSTOMER_CODE_REQUIRED");
        expect_error(client.get_account(get_account(phone("+77015550123"))).await, Code::NotFound, "CUSTOMER_NOT_FOUND");
        assert!(client.get_account(get_account(phone("12345678901234"))).await.is_err(), "nobody has this number");
        client.get_account(get_account(phone(PHONE))).await.expect("balance by phone");
        full_ledger(&mut client, phone(PHONE)).await;
        client
            .issue_customer_code(pb::IssueCustomerCodeRequest {
                program_id: PROGRAM.into(),
                customer: phone(PHONE),
                channel: pb::CodeChannel::Message as i32,
                store_id: STORE.into(),
                till_id: TILL.into(),
            })
            .await
            .expect("a code by message");
        let mut admin = admin_with(addr, Some(&test_key(PROGRAM))).await;
        admin
            .erase_customer(admin_pb::EraseCustomerRequest { program_id: PROGRAM.into(), customer: phone(PHONE), reason: "request".into() })
            .await
            .expect("erase");
        let page = metrics_page(metrics).await;
        assert!(page.contains("loyalty_rpc_requests_total"), "the metrics page: {page}");
        child.kill().await.expect("stop the engine");
        let logs = std::fs::read_to_string(&log).expect("read the logs");
        assert!(logs.to_lowercase().contains("debug"), "{format} logs at debug level were written: {logs}");
        for secret in SECRETS {
            assert!(!logs.contains(secret), "{format} logs contain {secret:?}:\n{logs}");
        }
        for secret in SECRETS_ON_METRICS {
            assert!(!page.contains(secret), "metrics contain {secret:?}");
        }
    }
}

/// Sends and receives bodies as they are, to put undecodable bytes on the wire.
#[derive(Debug, Default, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: bytes::Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<bytes::Bytes>, tonic::Status> {
        let remaining = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, remaining)))
    }
}

/// One Accrue call with `body` as its protobuf bytes.
async fn raw_accrue(addr: std::net::SocketAddr, body: Vec<u8>) -> Result<tonic::Response<bytes::Bytes>, tonic::Status> {
    let channel = tonic::transport::Endpoint::new(format!("http://{addr}")).expect("endpoint").connect().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(bytes::Bytes::from(body));
    let key = format!("Bearer {}", test_key(PROGRAM)).parse().expect("ASCII");
    request.metadata_mut().insert("authorization", key);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/loyalty.v1.LoyaltyService/Accrue");
    grpc.unary(request, path, RawCodec).await
}

/// Truncated, mis-typed, non-UTF-8 and random bodies get INVALID_ARGUMENT MALFORMED_MESSAGE before
/// any handler runs, and leave nothing behind: the receipt IDs they carried are still free.
#[tokio::test]
async fn malformed_protobuf_is_refused_and_writes_nothing() {
    use prost::Message;
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let body = |receipt: &str| accrue(receipt, card("CARD0001"), vec![line(1, "milk", "1", "1000.00")]).encode_to_vec();
    // The raw path itself works: a well-formed body is served and its answer decodes.
    let served = raw_accrue(server.addr, body("R1")).await.expect("a well-formed body").into_inner();
    let earned = pb::AccrueResponse::decode(served).expect("the answer decodes").earned;
    assert!(dec(&earned) > Decimal::ZERO, "earned {earned}");

    let whole = body("R2");
    let truncated = whole[..whole.len() - 3].to_vec();
    let mut not_utf8 = whole.clone();
    let sku = whole.windows(4).position(|window| window == b"milk").expect("the SKU in the body");
    not_utf8[sku..sku + 2].copy_from_slice(&[0xff, 0xfe]);
    let mut wrong_wire_type = whole.clone();
    wrong_wire_type.extend_from_slice(&[0x0f, 0x01]);
    let random: Vec<u8> = (0..64_u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for (what, bad) in [("truncated", truncated), ("not UTF-8", not_utf8), ("wire type 7", wrong_wire_type), ("random", random)] {
        let status = raw_accrue(server.addr, bad).await.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        let info = tonic_types::StatusExt::get_details_error_info(&status).unwrap_or_else(|| panic!("{what}: no ErrorInfo in {status:?}"));
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("MALFORMED_MESSAGE", "loyalty.v1"), "{what}");
        assert!(status.message().contains("does not decode"), "{what}: {status:?}");
        if what == "not UTF-8" {
            assert!(status.message().contains("sku"), "the field is named: {status:?}");
        }
    }
    // Only R1 earned; R2 was never half-written, so it is served now as a first call.
    assert_eq!(full_ledger(&mut client, card("CARD0001")).await.len(), 1);
    let again = client.accrue(accrue("R2", card("CARD0001"), vec![line(1, "milk", "1", "1000.00")])).await.expect("R2 is free");
    assert_eq!(again.into_inner().earned, earned);
    server.stop().await;
}
