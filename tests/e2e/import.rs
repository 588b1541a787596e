//! `loyalty-engine import`: a chain's customers brought from its old platform, on both stores. The
//! balances the till then sees are the file's to the point, each bucket keeps its expiry, every
//! row is imported or listed with its reason, and a rerun after a crash halfway imports each row
//! once.

use std::ffi::OsStr;
use std::sync::Arc;

use loyalty_engine::import::{ImportReport, import_file};
use loyalty_proto::v1 as pb;
use loyalty_tests::*;
use rust_decimal::Decimal;

/// The file, with `tag` (a digit) in every identifier so that runs on a shared cluster do not meet. Rows:
/// a registered customer with three buckets (one still pending), a card-only customer, one with an
/// app token and no points, then three bad rows.
fn rows(tag: &str) -> Vec<String> {
    vec![
        format!(
            r#"{{"id":"{tag}-1","phone":"+7701{tag}000001","cards":["IMP{tag}01"],"name":"Aigerim","gender":"female","purchases":12,"last_purchase_at":"2026-03-01T10:00:00Z","buckets":[{{"points":"1250","expires_at":"2026-04-30T18:00:00Z"}},{{"points":"430","expires_at":"2027-02-28T18:00:00Z"}},{{"points":"90","available_from":"2026-03-20T18:00:00Z","expires_at":"2027-03-20T18:00:00Z"}}]}}"#
        ),
        format!(r#"{{"id":"{tag}-2","cards":["IMP{tag}02"],"buckets":[{{"points":"75","expires_at":"2026-09-15T18:00:00Z"}}]}}"#),
        format!(r#"{{"id":"{tag}-3","phone":"+7701{tag}000003","app_tokens":["app-token-{tag}-000003"],"tags":["pensioner"]}}"#),
        format!(r#"{{"id":"{tag}-4","phone":"+7701{tag}000001"}}"#),
        format!(r#"{{"id":"{tag}-5","phone":"+7701{tag}000005","buckets":[{{"points":"10","expires_at":"2026-03-01T00:00:00Z"}}]}}"#),
        r#"{"id":"x","phone":12}"#.to_owned(),
    ]
}

async fn run(server: &TestServer, file: &std::path::Path, rejects: &std::path::Path) -> ImportReport {
    import_file(Arc::clone(&server.engine), PROGRAM, file, rejects, 4).await.expect("the import runs")
}

async fn customers_are_imported_exactly_once(server: TestServer, tag: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (half, file, rejects) = (dir.path().join("half.jsonl"), dir.path().join("all.jsonl"), dir.path().join("rejects.jsonl"));
    let rows = rows(tag);
    std::fs::write(&half, rows[..2].join("\n")).expect("write");
    std::fs::write(&file, rows.join("\n") + "\n").expect("write");

    // A first run that stopped after two rows (as if it crashed), then the whole file: each row
    // is imported once, and the report accounts for every row.
    let first = run(&server, &half, &rejects).await;
    assert_eq!((first.rows, first.imported, first.rejected), (2, 2, 0));
    assert_eq!(first.points, Decimal::from(1250 + 430 + 90 + 75), "the points opened by the run");
    let whole = run(&server, &file, &rejects).await;
    assert_eq!((whole.rows, whole.imported, whole.already, whole.rejected), (6, 1, 2, 3), "{whole:?}");
    assert_eq!(whole.points, Decimal::ZERO, "the third row opens an account without points");
    let again = run(&server, &file, &rejects).await;
    assert_eq!((again.imported, again.already, again.rejected), (0, 3, 3));

    let rejected: Vec<serde_json::Value> =
        std::fs::read_to_string(&rejects).expect("rejects").lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect();
    // Rows finish out of order (several are in flight at once); each names its line.
    let mut summary: Vec<(u64, &str, &str)> = rejected
        .iter()
        .map(|row| (row["line"].as_u64().expect("line"), row["code"].as_str().expect("code"), row["field"].as_str().unwrap_or("")))
        .collect();
    summary.sort();
    assert_eq!(
        summary,
        [(4, "PHONE_ALREADY_REGISTERED", "phone"), (5, "INVALID_ARGUMENT", "buckets[0].expires_at"), (6, "INVALID_ARGUMENT", "phone")]
    );

    // What the till sees: the file's balances, each bucket with its terms, explained by OPENING
    // entries.
    let mut client = server.client().await;
    let anna = phone(&format!("+7701{tag}000001"));
    let account = client.get_account(get_account(anna.clone())).await.expect("by phone").into_inner();
    assert!(account.registered);
    let balance = account.balance.expect("balance");
    assert_eq!((dec(&balance.available), dec(&balance.pending), dec(&balance.balance)), (dec("1680"), dec("90"), dec("1770")));
    assert_eq!(account.next_expiry_at.map(|at| at.seconds), Some(1_777_572_000), "the first bucket's expiry, 2026-04-30 18:00 UTC");
    let by_card = balance_of(&mut client, card(&format!("IMP{tag}01"))).await;
    assert_eq!(dec(&by_card.balance), dec("1770"));
    let ledger = full_ledger(&mut client, anna.clone()).await;
    assert_eq!(ledger.len(), 3);
    assert!(ledger.iter().all(|entry| entry.kind == pb::EntryKind::Opening as i32 && entry.expires_at.is_some()));
    assert_eq!(ledger.iter().map(|entry| dec(&entry.amount)).sum::<Decimal>(), dec("1770"));

    // The card-only customer is anonymous: earns, cannot spend until registered.
    let anonymous = client.get_account(get_account(card(&format!("IMP{tag}02")))).await.expect("by card").into_inner();
    assert!(!anonymous.registered);
    assert_eq!(dec(&anonymous.balance.expect("balance").available), dec("75"));

    // The imported points are spent like any other, oldest expiry first, pending ones not yet.
    let receipt = format!("imp-{tag}-r1");
    let redeemed = client
        .redeem(redeem(&receipt, anna.clone(), "1300", "", vec![line(1, "milk", "1", "3000.00")]))
        .await
        .expect("spend imported points")
        .into_inner();
    assert_eq!(dec(&redeemed.balance.expect("balance").available), dec("380"));
    let too_much = client.redeem(redeem(&format!("imp-{tag}-r2"), anna.clone(), "400", "", vec![line(1, "milk", "1", "3000.00")])).await;
    crate::expect_error(too_much, tonic::Code::FailedPrecondition, "INSUFFICIENT_POINTS");

    // A rerun after a bucket of an imported row expired: still "imported before", never rejected;
    // a row ID imported before with other content is refused by its ID.
    server.clock.set(start_time() + chrono::Duration::days(60));
    let later = run(&server, &file, &rejects).await;
    assert_eq!((later.imported, later.already, later.rejected), (0, 3, 3), "{later:?}");
    let changed = dir.path().join("changed.jsonl");
    std::fs::write(
        &changed,
        format!(r#"{{"id":"{tag}-2","cards":["IMP{tag}02"],"buckets":[{{"points":"76","expires_at":"2026-09-15T18:00:00Z"}}]}}"#),
    )
    .expect("write");
    let conflict = run(&server, &changed, &rejects).await;
    assert_eq!((conflict.imported, conflict.already, conflict.rejected), (0, 0, 1));
    let refused = std::fs::read_to_string(&rejects).expect("rejects");
    assert!(refused.contains(r#""code":"IDEMPOTENCY_CONFLICT","field":"id""#), "{refused}");
    server.stop().await;
}

#[tokio::test]
async fn customers_are_imported_exactly_once_on_the_embedded_store() {
    customers_are_imported_exactly_once(TestServer::start().await, "1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customers_are_imported_exactly_once_on_scylla() {
    let rig = crate::scylla::Rig::shared().await;
    customers_are_imported_exactly_once(rig.engine().await, "2").await;
}

/// The command itself: `loyalty-engine import` on a stopped engine's data directory, then the
/// engine serves the imported customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_command_loads_a_file_the_engine_then_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, data, credentials, file) =
        (dir.path().join("engine.toml"), dir.path().join("data"), dir.path().join("credentials.toml"), dir.path().join("customers.jsonl"));
    let cafe = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/programs/cafe.yaml");
    std::fs::write(
        &config,
        format!(
            "[[programs]]\nid = \"{PROGRAM}\"\ncustomer_code = \"none\"\n[[programs]]\nid = \"coffee\"\nrules_file = \"{cafe}\"\n{UNDER_TEST_LIMITS_TOML}"
        ),
    )
    .expect("config");
    write_test_credentials(&credentials, &[PROGRAM]);
    // Real time here: buckets that expire long after it.
    let lines = [
        r#"{"id":"c-1","phone":"+77013000001","buckets":[{"points":"1700","expires_at":"2098-01-01T00:00:00Z"},{"points":"70","expires_at":"2099-01-01T00:00:00Z"}]}"#,
        r#"{"id":"c-2","phone":"+77013000001"}"#,
        r#"{"id":"c-3","cards":["IMP302"]}"#,
    ];
    std::fs::write(&file, lines.join("\n")).expect("write");
    let common =
        [OsStr::new("--config"), config.as_os_str(), OsStr::new("--data-dir"), data.as_os_str(), OsStr::new("--log"), OsStr::new("warn")];
    let import = tokio::process::Command::new(env!("CARGO_BIN_EXE_loyalty-engine-under-test"))
        .args(common)
        // One row at a time: c-2 finds the phone c-1 took (with rows in flight at once, either may).
        .args([
            OsStr::new("import"),
            OsStr::new("--concurrency"),
            OsStr::new("1"),
            OsStr::new("--program"),
            OsStr::new(PROGRAM),
            file.as_os_str(),
        ])
        .output()
        .await
        .expect("run import");
    let stdout = String::from_utf8_lossy(&import.stdout);
    assert!(import.status.success(), "import failed: {}", String::from_utf8_lossy(&import.stderr));
    assert!(stdout.contains("3 rows") && stdout.contains("2 imported") && stdout.contains("1 rejected"), "{stdout}");
    let rejects = std::fs::read_to_string(dir.path().join("customers.jsonl.rejects.jsonl")).expect("the rejects file beside the input");
    assert!(rejects.starts_with(r#"{"line":2,"id":"c-2","code":"PHONE_ALREADY_REGISTERED""#), "{rejects}");

    // The example file of the docs loads as it says.
    // (With its expiry years moved on, so that the test does not depend on today's date.)
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/import-example.jsonl")).expect("the example");
    let example_copy = dir.path().join("example.jsonl");
    std::fs::write(&example_copy, example.replace("\"2029-", "\"2099-")).expect("write");
    let import = tokio::process::Command::new(env!("CARGO_BIN_EXE_loyalty-engine-under-test"))
        .args(common)
        .args(["import", "--program", "coffee", "--rejects"])
        .arg(dir.path().join("example.rejects.jsonl"))
        .arg(&example_copy)
        .output()
        .await
        .expect("run import");
    let stdout = String::from_utf8_lossy(&import.stdout);
    assert!(stdout.contains("4 rows") && stdout.contains("4 imported") && stdout.contains("2145 points"), "{stdout}");

    let (mut child, addr) =
        crate::spawn_engine([OsStr::new("--credentials-file"), credentials.as_os_str()].into_iter().chain(common.into_iter().take(4)))
            .await;
    let mut client = connect(addr).await;
    assert_eq!(dec(&balance_of(&mut client, phone("+77013000001")).await.balance), dec("1770"));
    child.kill().await.expect("stop the engine");
}
