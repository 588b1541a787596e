//! A till's bad day: receipts sold offline and sent later with the time of the sale, evaluated as
//! of that time against the rules version in force then, within the program's bound.

use chrono::{DateTime, Duration, TimeZone, Utc};
use loyalty_engine::clock::Clock;
use loyalty_proto::admin as admin_pb;
use loyalty_proto::v1 as pb;
use loyalty_tests::*;
use tonic::Code;

use crate::{bad_field, expect_error};

fn at(time: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: time.timestamp(), nanos: 0 })
}

fn time_of(timestamp: Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let timestamp = timestamp.expect("a time");
    DateTime::from_timestamp(timestamp.seconds, 0).expect("valid")
}

fn rule_ids(response: &pb::AccrueResponse) -> Vec<String> {
    response.rules.iter().map(|rule| rule.rule_id.clone()).collect()
}

async fn offline_receipts_are_evaluated_as_of_their_sale(server: TestServer) {
    let mut client = server.client().await;
    let mut admin = server.admin().await;
    client.enroll(enroll("e-off", "+77010000701", "OFFL0001")).await.expect("enroll");
    let customer = card("OFFL0001");
    let rules_before = admin.list_rules(admin_pb::ListRulesRequest { program_id: PROGRAM.into(), ..Default::default() }).await;
    let version_before = rules_before.expect("rules").into_inner().version;

    // Three days on, the program adds a campaign; the till was offline the day after the start.
    server.clock.advance(Duration::days(3));
    let now = server.clock.now();
    let changed = admin
        .upsert_rule(admin_pb::UpsertRuleRequest {
            program_id: PROGRAM.into(),
            expected_version: version_before,
            format: admin_pb::DocumentFormat::Toml as i32,
            document: "id = \"spring\"\neffect = { kind = \"percent_of_lines\", percent = \"5\" }\n".into(),
            comment: "spring campaign".into(),
        })
        .await
        .expect("campaign")
        .into_inner();
    let sold_at = now - Duration::days(2);
    let offline =
        pb::AccrueRequest { occurred_at: at(sold_at), ..accrue("OFF-1", customer.clone(), vec![line(1, "milk", "1", "10000.00")]) };
    let late = client.accrue(offline.clone()).await.expect("late receipt").into_inner();
    assert_eq!(late.program_version, version_before, "evaluated against the version in force at the sale");
    assert!(!rule_ids(&late).contains(&"spring".to_owned()), "{late:?}");
    // Points count from the sale: good through the same local day 24 months on, already spendable.
    let almaty = chrono_tz::Asia::Almaty;
    let day_after_expiry = almaty.with_ymd_and_hms(2028, 3, 12, 0, 0, 0).single().expect("local midnight").with_timezone(&Utc);
    assert_eq!(time_of(late.expires_at), day_after_expiry, "sold on 11 March 2026 (local): good through 11 March 2028");
    assert!(time_of(late.available_from) <= now);
    let balance = late.balance.clone().expect("balance");
    assert_eq!((balance.available.as_str(), balance.pending.as_str()), (late.earned.as_str(), "0"), "{balance:?}");
    assert_eq!(client.accrue(offline.clone()).await.expect("replay").into_inner(), late, "a replay answers the first answer");
    let moved = pb::AccrueRequest { occurred_at: at(sold_at - Duration::hours(1)), ..offline };
    expect_error(client.accrue(moved).await, Code::AlreadyExists, "IDEMPOTENCY_CONFLICT");

    // A receipt sent now is evaluated by the current version.
    let online = client.accrue(accrue("ON-1", customer.clone(), vec![line(1, "milk", "1", "10000.00")])).await.expect("now").into_inner();
    assert_eq!(online.program_version, changed.version);
    assert!(rule_ids(&online).contains(&"spring".to_owned()), "{online:?}");

    // Too late, or from the future: refused, naming the field, nothing written.
    for (receipt, sold) in [("OFF-OLD", now - Duration::days(8)), ("OFF-FUTURE", now + Duration::hours(1))] {
        let request =
            pb::AccrueRequest { occurred_at: at(sold), ..accrue(receipt, customer.clone(), vec![line(1, "milk", "1", "100.00")]) };
        let status = expect_error(client.accrue(request).await, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(bad_field(&status), "occurred_at", "{status:?}");
    }
    let account = client.get_account(get_account(customer.clone())).await.expect("account").into_inner();
    assert_eq!(dec(&account.balance.expect("balance").balance), dec(&late.earned) + dec(&online.earned));

    // A return made offline too, an hour ago; one older than the bound is refused.
    let returned = pb::RefundRequest { occurred_at: at(now - Duration::hours(1)), ..refund("OFF-1", "OFF-1-r1", &[(1, "1")]) };
    let refunded = client.refund(returned).await.expect("late refund").into_inner();
    assert_eq!(refunded.earn_clawed_back, late.earned);
    let stale = pb::RefundRequest { occurred_at: at(now - Duration::days(9)), ..refund("ON-1", "ON-1-r1", &[(1, "1")]) };
    let status = expect_error(client.refund(stale).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(bad_field(&status), "occurred_at");

    // The card is lost and replaced now: a sale it made offline before that still counts on it,
    // while a sale made on it after the replacement is refused.
    client.replace_card(replace("rc-offline", customer.clone(), "OFFL0002", "OFFL0001", "")).await.expect("replaced");
    let before_replacement = pb::AccrueRequest {
        occurred_at: at(now - Duration::hours(2)),
        ..accrue("OFF-2", customer.clone(), vec![line(1, "milk", "1", "100.00")])
    };
    client.accrue(before_replacement).await.expect("a sale made before the card was replaced");
    let after_replacement = accrue("OFF-3", customer.clone(), vec![line(1, "milk", "1", "100.00")]);
    expect_error(client.accrue(after_replacement).await, Code::FailedPrecondition, "CARD_BLOCKED");
    server.stop().await;
}

#[tokio::test]
async fn offline_receipts_are_evaluated_as_of_their_sale_on_the_embedded_store() {
    offline_receipts_are_evaluated_as_of_their_sale(TestServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_receipts_are_evaluated_as_of_their_sale_on_scylla() {
    let rig = crate::scylla::Rig::shared().await;
    offline_receipts_are_evaluated_as_of_their_sale(rig.engine().await).await;
}
