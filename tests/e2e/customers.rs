//! The customer's life after enrolment, over gRPC: profile and consent changes from the till, the
//! app and the admin, audited by field name, seen by rules from the next call.

use loyalty_proto::admin as admin_pb;
use loyalty_proto::v1 as pb;
use loyalty_tests::*;
use tonic::Code;

use crate::{bad_field, expect_error};

/// A key of the test program with only `scopes`.
async fn key_with(server: &TestServer, id: &str, scopes: &[admin_pb::Scope]) -> Client {
    let mut admin = server.admin().await;
    let version =
        admin.list_credentials(admin_pb::ListCredentialsRequest { program_id: PROGRAM.into() }).await.expect("list").into_inner().version;
    let created = admin
        .create_credential(admin_pb::CreateCredentialRequest {
            program_id: PROGRAM.into(),
            expected_version: version,
            credential_id: id.into(),
            scopes: scopes.iter().map(|scope| *scope as i32).collect(),
            ..Default::default()
        })
        .await
        .expect("create credential")
        .into_inner();
    connect_with(server.addr, Some(&created.api_key)).await
}

fn update(customer: Option<pb::CustomerRef>) -> pb::UpdateProfileRequest {
    pb::UpdateProfileRequest { program_id: PROGRAM.into(), store_id: STORE.into(), till_id: TILL.into(), customer, ..Default::default() }
}

fn consent(channel: pb::ConsentChannel, granted: bool) -> pb::Consent {
    pb::Consent { channel: channel as i32, granted, changed_at: None }
}

#[tokio::test]
async fn a_till_updates_profile_and_consents_audited_by_name_and_rules_see_the_new_tags() {
    profile_and_consents_are_updated_audited_and_seen_by_rules(TestServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn profile_and_consents_are_updated_on_scylla() {
    let rig = crate::scylla::Rig::shared().await;
    profile_and_consents_are_updated_audited_and_seen_by_rules(rig.engine().await).await;
}

async fn profile_and_consents_are_updated_audited_and_seen_by_rules(server: TestServer) {
    let mut client = server.client().await;
    let mut admin = server.admin().await;
    let mut till = key_with(&server, "till-1", &[admin_pb::Scope::Checkout]).await;
    let enrolled = client.enroll(enroll("e1", "+77010000501", "PROF0001")).await.expect("enroll").into_inner();
    let customer = phone("+77010000501");

    // A rule for pensioners: 5% more on every line.
    let version = admin.list_rules(admin_pb::ListRulesRequest { program_id: PROGRAM.into(), ..Default::default() }).await;
    let version = version.expect("rules").into_inner().version;
    admin
        .upsert_rule(admin_pb::UpsertRuleRequest {
            program_id: PROGRAM.into(),
            expected_version: version,
            format: admin_pb::DocumentFormat::Toml as i32,
            document: "id = \"pensioner\"\nwhen.customer = { tags_any = [\"pensioner\"] }\neffect = { kind = \"percent_of_lines\", percent = \"5\" }\n"
                .into(),
            comment: "pensioner offer".into(),
        })
        .await
        .expect("pensioner rule");
    let rules_of = |response: &pb::AccrueResponse| response.rules.iter().map(|rule| rule.rule_id.clone()).collect::<Vec<_>>();
    let before = till.accrue(accrue("P1", customer.clone(), vec![line(1, "bread", "1", "1000.00")])).await.expect("accrue").into_inner();
    assert!(!rules_of(&before).contains(&"pensioner".to_owned()), "{before:?}");

    let request = pb::UpdateProfileRequest {
        name: Some("Aigerim Sadykova".into()),
        birth_date: Some("1958-03-12".into()),
        gender: Some(pb::Gender::Female as i32),
        tags: Some(pb::TagList { tags: vec!["pensioner".into()] }),
        consents: vec![consent(pb::ConsentChannel::Sms, true), consent(pb::ConsentChannel::Email, false)],
        ..update(customer.clone())
    };
    let updated = till.update_profile(request.clone()).await.expect("update").into_inner();
    assert_eq!(updated.account_id, enrolled.account_id);
    assert_eq!(updated.changed, ["name", "birth_date", "gender", "tags", "consent.sms=granted", "consent.email=withdrawn"]);
    assert_eq!(updated.tags, ["pensioner"]);
    let channels: Vec<(i32, bool)> = updated.consents.iter().map(|consent| (consent.channel, consent.granted)).collect();
    assert_eq!(channels, [(pb::ConsentChannel::Sms as i32, true), (pb::ConsentChannel::Email as i32, false)]);
    assert!(updated.consents.iter().all(|consent| consent.changed_at.is_some()));

    // The same change again: nothing changes, nothing is written.
    let again = till.update_profile(request).await.expect("again").into_inner();
    assert!(again.changed.is_empty(), "{again:?}");

    // Rules see the tag from the next call.
    let after = till.accrue(accrue("P2", customer.clone(), vec![line(1, "bread", "1", "1000.00")])).await.expect("accrue").into_inner();
    assert!(rules_of(&after).contains(&"pensioner".to_owned()), "{after:?}");

    let export = admin
        .export_customer(admin_pb::ExportCustomerRequest { program_id: PROGRAM.into(), customer: customer.clone() })
        .await
        .expect("export")
        .into_inner();
    assert_eq!((export.name.as_str(), export.birth_date.as_str()), ("Aigerim Sadykova", "1958-03-12"));
    assert_eq!((export.gender, export.tags.clone()), (pb::Gender::Female as i32, vec!["pensioner".to_owned()]));
    assert_eq!(export.consents.len(), 2);

    // Audited once, by field names and credential, never by value.
    let audit = admin
        .read_audit(admin_pb::ReadAuditRequest {
            program_id: PROGRAM.into(),
            account_id: enrolled.account_id.clone(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner();
    let notes: Vec<&admin_pb::AuditRecord> = audit.records.iter().filter(|record| record.kind == "account").collect();
    assert_eq!(notes.len(), 1, "{audit:?}");
    assert_eq!(notes[0].actor, "till-1");
    assert!(notes[0].what.contains("birth_date") && notes[0].what.contains("consent.sms=granted"), "{}", notes[0].what);
    let text = format!("{audit:?}");
    assert!(!text.contains("Aigerim") && !text.contains("1958"), "no personal values in the audit trail");

    // Clearing: an empty name and GENDER_UNSPECIFIED; fields not named stay.
    let cleared = till
        .update_profile(pb::UpdateProfileRequest {
            name: Some(String::new()),
            gender: Some(pb::Gender::Unspecified as i32),
            ..update(card("PROF0001"))
        })
        .await
        .expect("clear")
        .into_inner();
    assert_eq!(cleared.changed, ["name", "gender"]);
    assert_eq!(cleared.tags, ["pensioner"]);
    server.stop().await;
}

#[tokio::test]
async fn the_app_may_not_tag_its_customer_nor_move_a_set_birth_date_and_bad_input_names_the_field() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut app = key_with(&server, "app-1", &[admin_pb::Scope::CustomerApp]).await;
    let mut reader = key_with(&server, "reader-1", &[admin_pb::Scope::ReadOnly]).await;
    client.enroll(enroll("e1", "+77010000502", "")).await.expect("enroll");
    let customer = phone("+77010000502");

    let tagged = pb::UpdateProfileRequest { tags: Some(pb::TagList { tags: vec!["veteran".into()] }), ..update(customer.clone()) };
    let status = expect_error(app.update_profile(tagged).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&status), "tags");
    let born = pb::UpdateProfileRequest { birth_date: Some("1990-03-12".into()), ..update(customer.clone()) };
    assert_eq!(app.update_profile(born).await.expect("the app sets the first birth date").into_inner().changed, ["birth_date"]);
    let moved = pb::UpdateProfileRequest { birth_date: Some("1990-06-01".into()), ..update(customer.clone()) };
    let status = expect_error(app.update_profile(moved.clone()).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&status), "birth_date");
    expect_error(reader.update_profile(moved.clone()).await, Code::PermissionDenied, "PERMISSION_DENIED");
    assert_eq!(client.update_profile(moved).await.expect("an admin may").into_inner().changed, ["birth_date"]);

    let cases = [
        (
            pb::UpdateProfileRequest { consents: vec![consent(pb::ConsentChannel::Unspecified, true)], ..update(customer.clone()) },
            "consents[0].channel",
        ),
        (
            pb::UpdateProfileRequest {
                consents: vec![consent(pb::ConsentChannel::Push, true), consent(pb::ConsentChannel::Push, false)],
                ..update(customer.clone())
            },
            "consents[1].channel",
        ),
        (pb::UpdateProfileRequest { birth_date: Some("2999-01-01".into()), ..update(customer.clone()) }, "birth_date"),
        (pb::UpdateProfileRequest { gender: Some(9), ..update(customer.clone()) }, "gender"),
        (pb::UpdateProfileRequest { tags: Some(pb::TagList { tags: vec!["bad tag".into()] }), ..update(customer.clone()) }, "tags.tags[0]"),
        (pb::UpdateProfileRequest { name: Some("x".repeat(500)), ..update(customer.clone()) }, "name"),
    ];
    for (request, field) in cases {
        let status = expect_error(client.update_profile(request).await, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(bad_field(&status), field, "{status:?}");
    }
    expect_error(client.update_profile(update(phone("+77010000599"))).await, Code::NotFound, "CUSTOMER_NOT_FOUND");
    server.stop().await;
}

/// A registered customer loses a card: the new one carries the account, the old one is blocked
/// at the till and still found by administrators; the fee is credited; replays answer alike.
async fn a_lost_card_is_replaced(server: TestServer) {
    let mut client = server.client().await;
    let mut admin = server.admin().await;
    // The card was sold for 2.50: 2 points at once (rounded down), replayed alike.
    let enrolment = pb::EnrollRequest { card_fee: "2.50".into(), ..enroll("e-lost", "+77010000601", "LOST0001") };
    let enrolled = client.enroll(enrolment.clone()).await.expect("enroll").into_inner();
    assert_eq!((enrolled.fee_points.as_str(), enrolled.balance.clone().expect("balance").spendable.as_str()), ("2", "2"));
    assert_eq!(client.enroll(enrolment).await.expect("replay").into_inner(), enrolled);
    client.accrue(accrue("L1", card("LOST0001"), vec![line(1, "milk", "1", "10000.00")])).await.expect("accrue");
    let before = client.get_account(get_account(card("LOST0001"))).await.expect("account").into_inner();

    let request = replace("rc-1", phone("+77010000601"), "NEWC0001", "LOST0001", "2.00");
    let replaced = client.replace_card(request.clone()).await.expect("replace").into_inner();
    assert_eq!((replaced.account_id.as_str(), replaced.card_number.as_str()), (enrolled.account_id.as_str(), "NEWC0001"));
    assert_eq!((replaced.blocked_cards.clone(), replaced.fee_points.as_str()), (vec!["LOST0001".to_owned()], "2"));
    assert_eq!(client.replace_card(request).await.expect("replay").into_inner(), replaced, "a replay answers the first answer");
    let other = replace("rc-1", phone("+77010000601"), "NEWC0002", "", "");
    let status = expect_error(client.replace_card(other).await, Code::AlreadyExists, "IDEMPOTENCY_CONFLICT");
    let info = tonic_types::StatusExt::get_details_error_info(&status).expect("ErrorInfo");
    assert_eq!(info.metadata.get("key_kind").map(String::as_str), Some("request_id"));
    assert_eq!(info.metadata.get("key").map(String::as_str), Some("rc-1"));

    // Points, tier and history follow the new card; the fee is spendable at once.
    let after = client.get_account(get_account(card("NEWC0001"))).await.expect("new card").into_inner();
    assert_eq!(after.account_id, enrolled.account_id);
    let (before, after_balance) = (before.balance.expect("balance"), after.balance.expect("balance"));
    assert_eq!(dec(&after_balance.balance) - dec(&before.balance), dec("2"), "{after_balance:?}");
    assert_eq!(dec(&after_balance.available) - dec(&before.available), dec("2"));
    // The old card is blocked at the till and says when.
    let blocked = expect_error(
        client.accrue(accrue("L2", card("LOST0001"), vec![line(1, "milk", "1", "100.00")])).await,
        Code::FailedPrecondition,
        "CARD_BLOCKED",
    );
    let info = tonic_types::StatusExt::get_details_error_info(&blocked).expect("ErrorInfo");
    assert!(info.metadata.contains_key("replaced_at"), "{info:?}");
    expect_error(client.get_account(get_account(card("LOST0001"))).await, Code::FailedPrecondition, "CARD_BLOCKED");
    // Administrators still find the customer by the old card.
    let export = admin
        .export_customer(admin_pb::ExportCustomerRequest { program_id: PROGRAM.into(), customer: card("LOST0001") })
        .await
        .expect("export by the old card")
        .into_inner();
    assert_eq!(export.account_id, enrolled.account_id);
    assert_eq!(export.blocked_cards, ["LOST0001"]);

    // Refusals: an anonymous card, another customer's card, a blocked card, a card not the customer's.
    client.accrue(accrue("A1", card("ANON0001"), vec![line(1, "milk", "1", "100.00")])).await.expect("anonymous card earns");
    expect_error(
        client.replace_card(replace("rc-2", card("ANON0001"), "NEWC0003", "", "")).await,
        Code::FailedPrecondition,
        "CARD_NOT_REGISTERED",
    );
    expect_error(
        client.replace_card(replace("rc-3", phone("+77010000601"), "ANON0001", "", "")).await,
        Code::AlreadyExists,
        "IDENTIFIER_TAKEN",
    );
    expect_error(
        client.replace_card(replace("rc-4", phone("+77010000601"), "LOST0001", "", "")).await,
        Code::FailedPrecondition,
        "CARD_BLOCKED",
    );
    let status = expect_error(
        client.replace_card(replace("rc-5", phone("+77010000601"), "NEWC0004", "ANON0001", "")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(bad_field(&status), "old_card_number");
    let status = expect_error(
        client.replace_card(replace("rc-6", phone("+77010000601"), "NEWC0004", "", "-1")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(bad_field(&status), "card_fee");
    // Without an old card, every other card is blocked.
    let again = client.replace_card(replace("rc-7", card("NEWC0001"), "NEWC0005", "", "")).await.expect("replace again").into_inner();
    assert_eq!((again.blocked_cards, again.fee_points.as_str()), (vec!["NEWC0001".to_owned()], "0"));
    expect_error(client.get_account(get_account(card("NEWC0001"))).await, Code::FailedPrecondition, "CARD_BLOCKED");
    client.get_account(get_account(card("NEWC0005"))).await.expect("the newest card works");
    server.stop().await;
}

/// Named by phone, a customer proves it is them with their one-time code, as for spending:
/// otherwise anyone who knows the number could bind their own card to the account.
#[tokio::test]
async fn replacing_a_card_by_phone_needs_the_customers_code_where_spending_does() {
    let server = TestServer::start_with(
        |config| config.programs[0].customer_code = loyalty_core::presence::CodeRequirement::ForPhone,
        |store| store,
    )
    .await;
    let mut client = server.client().await;
    client.enroll(enroll("e-code", "+77010000611", "CODE0001")).await.expect("enroll");
    let request = replace("rc-code", phone("+77010000611"), "CODE0002", "CODE0001", "");
    expect_error(client.replace_card(request.clone()).await, Code::FailedPrecondition, "CUSTOMER_CODE_REQUIRED");
    let wrong = pb::ReplaceCardRequest { customer_code: "000000".into(), ..request.clone() };
    expect_error(client.replace_card(wrong).await, Code::PermissionDenied, "CUSTOMER_CODE_INVALID");
    let issued = client
        .issue_customer_code(pb::IssueCustomerCodeRequest {
            program_id: PROGRAM.into(),
            customer: phone("+77010000611"),
            channel: pb::CodeChannel::App as i32,
            store_id: String::new(),
            till_id: String::new(),
        })
        .await
        .expect("a code for the app")
        .into_inner();
    let right = pb::ReplaceCardRequest { customer_code: issued.code.clone(), ..request };
    let replaced = client.replace_card(right.clone()).await.expect("replaced with the code").into_inner();
    assert_eq!(replaced.blocked_cards, ["CODE0001"]);
    assert_eq!(client.replace_card(right).await.expect("a retry").into_inner(), replaced, "a retry replays, the used code notwithstanding");
    // Presented by the card itself, the card is the proof.
    let by_card = replace("rc-code-2", card("CODE0002"), "CODE0003", "", "");
    client.replace_card(by_card).await.expect("by the card");
    server.stop().await;
}

#[tokio::test]
async fn a_lost_card_is_replaced_on_the_embedded_store() {
    a_lost_card_is_replaced(TestServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_card_is_replaced_on_scylla() {
    let rig = crate::scylla::Rig::shared().await;
    a_lost_card_is_replaced(rig.engine().await).await;
}

fn merge(request_id: &str, customer: Option<pb::CustomerRef>, card_number: &str) -> pb::MergeCardRequest {
    pb::MergeCardRequest {
        program_id: PROGRAM.into(),
        store_id: STORE.into(),
        till_id: TILL.into(),
        request_id: request_id.into(),
        customer,
        card_number: card_number.into(),
    }
}

/// A customer enrolled by phone turns up with an old anonymous card that earned points: its
/// buckets move with their own terms, once; the card leads to the customer from then on; a later
/// refund of one of the card's receipts settles on the customer's account.
async fn an_old_anonymous_card_is_merged_into_the_customer(server: TestServer) {
    let mut client = server.client().await;
    let mut admin = server.admin().await;
    let old_card = card("MERG0001");
    // Two days of purchases on the anonymous card: two buckets with different terms.
    let first = client.accrue(accrue("M1", old_card.clone(), vec![line(1, "milk", "1", "10000.00")])).await.expect("day one").into_inner();
    server.clock.advance(chrono::Duration::days(1));
    client.accrue(accrue("M2", old_card.clone(), vec![line(1, "milk", "1", "5000.00")])).await.expect("day two");
    let before = client.get_account(get_account(old_card.clone())).await.expect("card account").into_inner();
    let enrolled = client.enroll(enroll("e-merge", "+77010000901", "")).await.expect("enroll by phone").into_inner();
    let customer = phone("+77010000901");
    client.accrue(accrue("M3", customer.clone(), vec![line(1, "milk", "1", "2000.00")])).await.expect("customer's own");
    let own = client.get_account(get_account(customer.clone())).await.expect("customer").into_inner().balance.expect("balance");

    let request = merge("mg-1", customer.clone(), "MERG0001");
    let merged = client.merge_card(request.clone()).await.expect("merge").into_inner();
    assert_eq!((merged.account_id.as_str(), merged.merged_account_id.as_str()), (enrolled.account_id.as_str(), before.account_id.as_str()));
    assert_eq!((merged.points.as_str(), merged.buckets), ("150", 2));
    assert_eq!(client.merge_card(request).await.expect("replay").into_inner(), merged, "a replay answers the first answer");
    let again =
        expect_error(client.merge_card(merge("mg-2", customer.clone(), "MERG0001")).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&again), "card_number", "merged once only");

    // Balances add up, each bucket kept its own terms, and the card leads to the customer.
    let after = client.get_account(get_account(customer.clone())).await.expect("customer").into_inner().balance.expect("balance");
    let card_before = before.balance.expect("balance");
    assert_eq!(dec(&after.balance), dec(&own.balance) + dec(&card_before.balance));
    assert_eq!(dec(&after.pending), dec(&own.pending) + dec(&card_before.pending));
    assert_eq!(dec(&after.available), dec(&own.available) + dec(&card_before.available));
    let by_card = client.get_account(get_account(old_card.clone())).await.expect("the old card").into_inner();
    assert_eq!(by_card.account_id, enrolled.account_id);
    let ledger = full_ledger(&mut client, customer.clone()).await;
    let moved: Vec<_> = ledger.iter().filter(|entry| entry.kind == pb::EntryKind::Merge as i32).collect();
    assert_eq!(moved.len(), 2, "{ledger:?}");
    assert_ne!(moved[0].expires_at, moved[1].expires_at, "each bucket keeps its own expiry");
    let earned =
        client.accrue(accrue("M4", old_card.clone(), vec![line(1, "milk", "1", "1000.00")])).await.expect("card at the till").into_inner();
    assert_eq!(earned.account_id, enrolled.account_id);
    // A retry of a call made on the card before the merge is answered as always.
    let retried = client.accrue(accrue("M1", old_card.clone(), vec![line(1, "milk", "1", "10000.00")])).await.expect("a retry");
    assert_eq!(retried.into_inner(), first);
    // So are both on an engine with nothing in memory (a restart, another process), where the
    // card's own row still names its emptied account (found by the simulation).
    let fresh = TestServer::start_on(std::sync::Arc::clone(&server.store), |_| {}).await;
    let mut fresh_client = fresh.client().await;
    let again = fresh_client.accrue(accrue("M4", old_card.clone(), vec![line(1, "milk", "1", "1000.00")])).await;
    assert_eq!(again.expect("a retry of a call made after the merge, on a fresh engine").into_inner(), earned);
    let again = fresh_client.accrue(accrue("M1", old_card.clone(), vec![line(1, "milk", "1", "10000.00")])).await;
    assert_eq!(again.expect("a retry of a call made before the merge, on a fresh engine").into_inner(), first);
    // Administrators find the customer by the merged card.
    let export = admin
        .export_customer(admin_pb::ExportCustomerRequest { program_id: PROGRAM.into(), customer: old_card.clone() })
        .await
        .expect("export by the merged card")
        .into_inner();
    assert_eq!(export.account_id, enrolled.account_id);

    // A return of the card's first receipt takes its 100 points back from the customer's account.
    let before_refund =
        dec(&client.get_account(get_account(customer.clone())).await.expect("customer").into_inner().balance.expect("b").balance);
    let refunded = client.refund(refund("M1", "M1-r1", &[(1, "1")])).await.expect("refund of an old receipt").into_inner();
    assert_eq!(refunded.earn_clawed_back, "100");
    let balance = || {
        let (mut client, customer) = (client.clone(), customer.clone());
        async move { dec(&balance_of(&mut client, customer).await.balance) }
    };
    eventually(std::time::Duration::from_secs(5), "the clawback reaches the customer's account", balance, |balance| {
        *balance == before_refund - dec("100")
    })
    .await;

    // Audited on both accounts.
    for account_id in [&enrolled.account_id, &before.account_id] {
        let audit = admin
            .read_audit(admin_pb::ReadAuditRequest { program_id: PROGRAM.into(), account_id: account_id.clone(), ..Default::default() })
            .await
            .expect("audit")
            .into_inner();
        assert!(audit.records.iter().any(|record| record.kind == "account" && record.what.contains("merge")), "{audit:?}");
    }

    // Refusals: a registered customer's card, the customer's own card, no such card.
    client.enroll(enroll("e-other", "+77010000902", "MERG0002")).await.expect("another customer");
    expect_error(client.merge_card(merge("mg-3", customer.clone(), "MERG0002")).await, Code::AlreadyExists, "IDENTIFIER_TAKEN");
    let status = expect_error(
        client.merge_card(merge("mg-4", customer.clone(), &enrolled.card_number)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(bad_field(&status), "card_number");
    expect_error(client.merge_card(merge("mg-5", customer.clone(), "NOSUCH01")).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    server.stop().await;
}

#[tokio::test]
async fn an_old_anonymous_card_is_merged_on_the_embedded_store() {
    an_old_anonymous_card_is_merged_into_the_customer(TestServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_anonymous_card_is_merged_on_scylla() {
    let rig = crate::scylla::Rig::shared().await;
    an_old_anonymous_card_is_merged_into_the_customer(rig.engine().await).await;
}
