//! kill -9 of the engine process under load, then a restart on the same data directory: every
//! acknowledged call is present exactly once and every balance equals its ledger.

use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loyalty_proto::v1 as pb;
use loyalty_tests::*;
use rust_decimal::Decimal;
use tokio::process::{Child, Command};

const CUSTOMERS: usize = 20;
const WORKERS: usize = 16;

/// The engine binary's arguments for the data directory: its configuration, data and the test
/// credentials (written there).
fn engine_args(dir: &std::path::Path) -> Vec<OsString> {
    let credentials = dir.join("credentials.toml");
    write_test_credentials(&credentials, &[PROGRAM]);
    let mut args: Vec<OsString> = vec!["--config".into(), dir.join("engine.toml").into(), "--data-dir".into(), dir.join("data").into()];
    args.extend(["--credentials-file".into(), credentials.into()]);
    args
}

/// Starts the engine binary on the data directory and waits for its "listening on" line.
async fn start_engine(dir: &std::path::Path) -> (Child, std::net::SocketAddr) {
    crate::spawn_engine(engine_args(dir)).await
}

// A test's record of acknowledged calls: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Acked {
    Accrue(pb::AccrueRequest, pb::AccrueResponse),
    Redeem(pb::RedeemRequest, pb::RedeemResponse),
}

/// The defaults: the write-ahead journal, the database file written in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_minus_nine_under_load_loses_no_acknowledged_call() {
    kill_minus_nine_under_load("", 300).await;
}

/// The same with the smallest checkpoint: the kill lands after the journal moved to new segments
/// and reused retired ones several times, so recovery reads records across segments, over records
/// a checkpoint already put in the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_minus_nine_with_small_journal_segments_loses_no_acknowledged_call() {
    kill_minus_nine_under_load("[storage]\ncheckpoint_mib = 1\n", 1_500).await;
}

/// Without the journal: every batch a durable commit of the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_minus_nine_without_the_journal_loses_no_acknowledged_call() {
    kill_minus_nine_under_load("[storage]\njournal = false\nquick_repair = false\n", 300).await;
}

async fn kill_minus_nine_under_load(storage: &str, acked_before_kill: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let programs = r#"
        [[programs]]
        id = "shop"
        pending = "none"
        redeem_cap_percent = "50"
        customer_code = "none"
        "#;
    std::fs::write(dir.path().join("engine.toml"), format!("{programs}\n{UNDER_TEST_LIMITS_TOML}{storage}")).expect("config");
    let (mut child, addr) = start_engine(dir.path()).await;
    let mut client = connect(addr).await;
    let phones: Vec<String> = (0..CUSTOMERS).map(|index| format!("+7701555{index:04}")).collect();
    for (index, number) in phones.iter().enumerate() {
        client.enroll(enroll(&format!("e{index}"), number, "")).await.expect("enroll");
        client.accrue(accrue(&format!("fund{index}"), phone(number), vec![line(1, "gold", "1", "100000.00")])).await.expect("fund");
    }

    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let acked = Arc::clone(&acked);
        let phones = phones.clone();
        let mut client = connect(addr).await;
        workers.push(tokio::spawn(async move {
            for n in 0.. {
                let customer = phone(&phones[(worker * 7 + n) % CUSTOMERS]);
                let receipt = format!("w{worker}-{n}");
                let outcome = if n % 3 == 2 {
                    let request = redeem(&receipt, customer, "1", "", vec![line(1, "coffee", "1", "100.00")]);
                    client.redeem(request.clone()).await.map(|response| Acked::Redeem(request, response.into_inner()))
                } else {
                    let request = accrue(&receipt, customer, vec![line(1, "milk", "1", &format!("{}.00", 100 + n))]);
                    client.accrue(request.clone()).await.map(|response| Acked::Accrue(request, response.into_inner()))
                };
                match outcome {
                    Ok(call) => acked.lock().expect("acked").push(call),
                    // The process died under us: unacknowledged calls may or may not have landed.
                    Err(_) => return,
                }
            }
        }));
    }
    eventually(
        Duration::from_secs(60),
        "calls acknowledged before the kill",
        || std::future::ready(acked.lock().expect("acked").len()),
        |count| *count >= acked_before_kill,
    )
    .await;
    child.start_kill().expect("kill -9");
    child.wait().await.expect("reap");
    for worker in workers {
        worker.await.expect("worker");
    }
    let acked = acked.lock().expect("acked").clone();
    assert!(acked.len() >= acked_before_kill, "only {} calls acknowledged before the kill", acked.len());

    // Offline check of every account against its ledger.
    let verify = Command::new(env!("CARGO_BIN_EXE_loyalty-engine-under-test"))
        .arg("--config")
        .arg(dir.path().join("engine.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("verify")
        .output()
        .await
        .expect("run verify");
    assert!(verify.status.success(), "verify failed: {}", String::from_utf8_lossy(&verify.stderr));
    // It also says what the file's bytes are, table by table: the ledger holds an entry per call.
    let said = String::from_utf8_lossy(&verify.stdout);
    let ledger_rows: u64 = said
        .lines()
        .find_map(|line| line.strip_prefix("ledger "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|rows| rows.parse().ok())
        .unwrap_or_else(|| panic!("no ledger table in: {said}"));
    assert!(ledger_rows >= acked_before_kill as u64, "{said}");

    let (mut child, addr) = start_engine(dir.path()).await;
    let mut client = connect(addr).await;
    // Every acknowledged call replays to exactly its first answer.
    for call in &acked {
        match call {
            Acked::Accrue(request, response) => {
                assert_eq!(&client.accrue(request.clone()).await.expect("replay accrue").into_inner(), response)
            }
            Acked::Redeem(request, response) => {
                assert_eq!(&client.redeem(request.clone()).await.expect("replay redeem").into_inner(), response)
            }
        }
    }
    // And each is in its ledger exactly once; every balance equals its ledger.
    let mut ledgers = std::collections::HashMap::new();
    for number in &phones {
        let ledger = full_ledger(&mut client, phone(number)).await;
        let sum: Decimal = ledger.iter().map(|entry| dec(&entry.amount)).sum();
        assert_eq!(sum, dec(&balance_of(&mut client, phone(number)).await.balance), "balance of {number}");
        for entry in ledger {
            *ledgers.entry(entry.transaction_id).or_insert(0) += 1;
        }
    }
    for call in &acked {
        let tx_id = match call {
            Acked::Accrue(_, response) => &response.transaction_id,
            Acked::Redeem(_, response) => &response.transaction_id,
        };
        assert_eq!(ledgers.get(tx_id), Some(&1), "transaction {tx_id} in the ledger exactly once");
    }
    child.start_kill().expect("stop");
    let _ = child.wait().await;
}

/// Starts the engine binary on the data directory with its info logs in `log`.
async fn start_logged(dir: &std::path::Path, log: &std::path::Path) -> Child {
    let mut args = engine_args(dir);
    args.extend(["--metrics-listen", "off", "--log", "info"].map(OsString::from));
    let logs = std::fs::File::create(log).expect("log file");
    crate::spawn_engine_with(args, logs.into()).await.0
}

/// An engine started after kill -9 without quick-repair says what it is doing while redb
/// repairs the file (it reads the whole file, so this grows with it), and how long that took;
/// one started after a clean stop or on a new file says nothing of a repair.
#[tokio::test]
async fn a_restart_after_kill_minus_nine_says_it_repairs_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("engine.toml"),
        format!("[[programs]]\nid = \"shop\"\npending = \"none\"\n{UNDER_TEST_LIMITS_TOML}\n[storage]\nquick_repair = false\n"),
    )
    .expect("config");
    let first_log = dir.path().join("first.log");
    let mut child = start_logged(dir.path(), &first_log).await;
    let first = std::fs::read_to_string(&first_log).expect("first log");
    assert!(first.contains("opening the store") && first.contains("store open"), "{first}");
    assert!(!first.contains("repair"), "a new file needs no repair: {first}");

    child.start_kill().expect("kill -9");
    child.wait().await.expect("reap");
    let second_log = dir.path().join("second.log");
    let mut child = start_logged(dir.path(), &second_log).await;
    let second = std::fs::read_to_string(&second_log).expect("second log");
    assert!(second.contains("the store was not closed cleanly: repairing it"), "{second}");
    assert!(second.contains("store repaired after an unclean stop"), "{second}");
    child.start_kill().expect("stop");
    child.wait().await.expect("reap");
}
