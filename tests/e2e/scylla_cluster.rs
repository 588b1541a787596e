//! The ScyllaDB backend on a real cluster losing replicas under load: three Apache Cassandra 5.0
//! nodes started by `tests/cassandra/cluster.sh` (replication factor 3, LOCAL_QUORUM and
//! LOCAL_SERIAL), the engine on them, tills calling it concurrently and retrying as tills do,
//! while the script kills (-9), freezes (SIGSTOP) and restarts nodes. After each scenario every
//! customer's ledger must hold each acknowledged receipt exactly once, nothing else, and sum to
//! the balance.
//!
//! They need the cluster, so they are ignored by default; CI runs them after `cluster.sh up` with
//! `LOYALTY_TEST_CQL_NODES` set: `cargo test -p loyalty-tests --test e2e scylla_cluster -- --ignored
//! --test-threads 1`. Each leaves the cluster with three nodes up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use loyalty_tests::*;
use rust_decimal::Decimal;
use tonic::Code;

use crate::scylla::{Rig, checked_ledger, entries_for};

/// Runs `cluster.sh ARGS` and waits for it (a restart waits until the node answers CQL).
async fn cluster(args: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cassandra/cluster.sh");
    let started = Instant::now();
    let status = tokio::process::Command::new("bash").arg(&script).args(args).status().await.expect("run cluster.sh");
    assert!(status.success(), "cluster.sh {args:?} failed");
    eprintln!("cluster.sh {args:?}: {:.1} s", started.elapsed().as_secs_f64());
}

/// What one till saw: receipts acknowledged (with their points), calls refused along the way by
/// code, and the slowest answered call.
#[derive(Debug, Default)]
struct Till {
    acknowledged: Vec<(String, String, Decimal)>,
    refused: BTreeMap<String, usize>,
    slowest: Duration,
}

/// A till: `calls` accruals for the customers in turn, each retried (after 100 ms) until
/// answered, as a till retries a call that failed with UNAVAILABLE, ABORTED or DEADLINE_EXCEEDED.
async fn till(server_addr: std::net::SocketAddr, name: String, customers: Vec<String>, calls: usize) -> Till {
    let mut client = connect(server_addr).await;
    let mut seen = Till::default();
    for n in 0..calls {
        let number = &customers[n % customers.len()];
        let receipt_id = format!("{name}-{n}");
        let request = accrue(&receipt_id, phone(number), vec![line(1, "milk", "1", "1000.00")]);
        let started = Instant::now();
        let mut attempts = 0;
        let answer = loop {
            attempts += 1;
            match client.accrue(request.clone()).await {
                Ok(answer) => break answer.into_inner(),
                Err(status) if matches!(status.code(), Code::Unavailable | Code::Aborted | Code::DeadlineExceeded) => {
                    *seen.refused.entry(format!("{:?}", status.code())).or_default() += 1;
                    assert!(attempts < 600, "{receipt_id}: no answer after {attempts} attempts: {status:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("{receipt_id}: refused for good: {status:?}"),
            }
        };
        seen.slowest = seen.slowest.max(started.elapsed());
        seen.acknowledged.push((receipt_id, number.clone(), dec(&answer.earned)));
    }
    seen
}

/// Every customer's ledger holds each acknowledged receipt once with its points, nothing else,
/// and sums to the balance (checked by `checked_ledger`).
async fn assert_exactly_the_acknowledged(server: &TestServer, customers: &[String], tills: &[Till]) {
    let mut client = server.client().await;
    for number in customers {
        let ledger = checked_ledger(&mut client, number).await;
        let mine: Vec<&(String, String, Decimal)> =
            tills.iter().flat_map(|till| &till.acknowledged).filter(|(_, owner, _)| owner == number).collect();
        for (receipt_id, _, points) in &mine {
            let entries = entries_for(&ledger, receipt_id);
            assert_eq!(entries.len(), 1, "{receipt_id} once in {number}'s ledger");
            assert_eq!(dec(&entries[0].amount), *points, "{receipt_id}'s points");
        }
        assert_eq!(ledger.len(), mine.len(), "{number}'s ledger holds the acknowledged receipts and nothing else");
        let total: Decimal = mine.iter().map(|(_, _, points)| *points).sum();
        assert_eq!(dec(&balance_of(&mut client, phone(number)).await.balance), total, "{number}'s balance");
    }
}

/// Enrols `count` customers and returns their phone numbers.
async fn customers(server: &TestServer, prefix: &str, count: usize) -> Vec<String> {
    let mut client = server.client().await;
    let mut numbers = Vec::new();
    for index in 0..count {
        let number = format!("+770155{prefix}{index:03}");
        let mut attempts = 0;
        loop {
            attempts += 1;
            match client.enroll(enroll(&format!("enrol-{prefix}-{index}"), &number, "")).await {
                Ok(_) => break,
                Err(status) if status.code() == Code::Unavailable && attempts < 50 => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(status) => panic!("enrol {number}: {status:?}"),
            }
        }
        numbers.push(number);
    }
    numbers
}

/// Runs tills on `customers` while `fault` happens, and reports what they saw.
async fn load_during(server: &TestServer, name: &str, customers: &[String], fault: impl std::future::Future<Output = ()>) -> Vec<Till> {
    let tasks: Vec<_> = (0..4).map(|index| tokio::spawn(till(server.addr, format!("{name}-t{index}"), customers.to_vec(), 40))).collect();
    fault.await;
    let mut tills = Vec::new();
    for task in tasks {
        tills.push(task.await.expect("till task"));
    }
    for (index, seen) in tills.iter().enumerate() {
        eprintln!(
            "{name} till {index}: {} acknowledged, refused on the way {:?}, slowest {:?}",
            seen.acknowledged.len(),
            seen.refused,
            seen.slowest
        );
    }
    tills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the Cassandra cluster of tests/cassandra/cluster.sh (CI runs it)"]
async fn one_node_killed_under_load_calls_go_on_and_nothing_acknowledged_is_lost() {
    let rig = Rig::shared().await;
    let server = rig.engine().await;
    let customers = customers(&server, "1", 6).await;
    let tills = load_during(&server, "kill1", &customers, async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster(&["kill", "2"]).await;
        tokio::time::sleep(Duration::from_secs(8)).await;
    })
    .await;
    assert_exactly_the_acknowledged(&server, &customers, &tills).await;
    // Restarted on its data, it replays its commit log and catches up (hints, then reads at quorum).
    cluster(&["restart", "2"]).await;
    cluster(&["check"]).await;
    assert_exactly_the_acknowledged(&server, &customers, &tills).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the Cassandra cluster of tests/cassandra/cluster.sh (CI runs it)"]
async fn two_nodes_lost_nothing_is_acknowledged_and_retries_apply_once_after_restart() {
    let rig = Rig::shared().await;
    let server = rig.engine().await;
    let customers = customers(&server, "2", 2).await;
    let mut client = server.client().await;
    cluster(&["kill", "2"]).await;
    cluster(&["kill", "3"]).await;
    // No quorum: every attempt fails, none is acknowledged.
    let request = accrue("no-quorum-1", phone(&customers[0]), vec![line(1, "milk", "1", "1000.00")]);
    for _ in 0..3 {
        let status = client.accrue(request.clone()).await.expect_err("never acknowledged without a quorum");
        assert!(matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded), "{status:?}");
    }
    cluster(&["restart", "2"]).await;
    cluster(&["restart", "3"]).await;
    cluster(&["check"]).await;
    // The till's retry applies it once.
    let tills = load_during(&server, "after2", &customers[..1], async {}).await;
    let answer = loop {
        match client.accrue(request.clone()).await {
            Ok(answer) => break answer.into_inner(),
            Err(status) if matches!(status.code(), Code::Unavailable | Code::Aborted) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(status) => panic!("retry after restart: {status:?}"),
        }
    };
    let mut all = tills;
    all.push(Till { acknowledged: vec![("no-quorum-1".into(), customers[0].clone(), dec(&answer.earned))], ..Till::default() });
    assert_exactly_the_acknowledged(&server, &customers[..1], &all).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the Cassandra cluster of tests/cassandra/cluster.sh (CI runs it)"]
async fn a_node_frozen_longer_than_the_request_timeout_then_thawed_loses_and_doubles_nothing() {
    let rig = Rig::shared().await;
    let server = rig.engine().await;
    let customers = customers(&server, "3", 6).await;
    let tills = load_during(&server, "stop3", &customers, async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster(&["stop", "3"]).await;
        // Longer than the driver's request timeout (5 s here) and the nodes' own (3 s).
        tokio::time::sleep(Duration::from_secs(8)).await;
        cluster(&["cont", "3"]).await;
    })
    .await;
    cluster(&["check"]).await;
    assert_exactly_the_acknowledged(&server, &customers, &tills).await;
    server.stop().await;
}
