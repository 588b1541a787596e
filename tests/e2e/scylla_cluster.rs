//! The ScyllaDB backend on a real cluster losing replicas under load: three Apache Cassandra 5.0
//! nodes started by `tests/cassandra/cluster.sh` (replication factor 3, LOCAL_QUORUM and
//! LOCAL_SERIAL), the engine on them, tills calling it concurrently and retrying as tills do,
//! while the script kills (-9), freezes (SIGSTOP) and restarts nodes; and an engine process killed
//! (-9) in the middle of its commits, its tills' calls retried on another engine. After each
//! scenario every customer's ledger must hold each acknowledged receipt exactly once, nothing else,
//! and sum to the balance.
//!
//! They need the cluster, so they are ignored by default; CI runs them after `cluster.sh up` with
//! `LOYALTY_TEST_CQL_NODES` set: `cargo test -p loyalty-tests --test e2e scylla_cluster -- --ignored
//! --test-threads 1`. Each leaves the cluster with three nodes up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use loyalty_engine::clock::{Clock, SystemClock};
use loyalty_proto::v1 as pb;
use loyalty_tests::*;
use rust_decimal::Decimal;
use tonic::Code;

use crate::scylla::{Rig, checked_ledger, entries_for, start_engine_process};

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
                    // A till's pause before it sends the call again.
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
    let acknowledged: Vec<(String, String, Decimal)> = tills.iter().flat_map(|till| till.acknowledged.iter().cloned()).collect();
    assert_ledgers_hold_exactly(&mut server.client().await, customers, &acknowledged).await;
}

/// The same through any engine's `client`, for acknowledged (receipt, customer, points).
async fn assert_ledgers_hold_exactly(client: &mut Client, customers: &[String], acknowledged: &[(String, String, Decimal)]) {
    for number in customers {
        let ledger = checked_ledger(client, number).await;
        let mine: Vec<&(String, String, Decimal)> = acknowledged.iter().filter(|(_, owner, _)| owner == number).collect();
        for (receipt_id, _, points) in &mine {
            let entries = entries_for(&ledger, receipt_id);
            assert_eq!(entries.len(), 1, "{receipt_id} once in {number}'s ledger");
            assert_eq!(dec(&entries[0].amount), *points, "{receipt_id}'s points");
        }
        assert_eq!(ledger.len(), mine.len(), "{number}'s ledger holds the acknowledged receipts and nothing else");
        let total: Decimal = mine.iter().map(|(_, _, points)| *points).sum();
        assert_eq!(dec(&balance_of(client, phone(number)).await.balance), total, "{number}'s balance");
    }
}

/// Enrols `count` customers and returns their phone numbers.
async fn customers(server: &TestServer, prefix: &str, count: usize) -> Vec<String> {
    enrolled(&mut server.client().await, prefix, count).await
}

/// Enrols `count` customers through `client` and returns their phone numbers.
async fn enrolled(client: &mut Client, prefix: &str, count: usize) -> Vec<String> {
    let mut numbers = Vec::new();
    for index in 0..count {
        let number = format!("+770155{prefix}{index:03}");
        let mut attempts = 0;
        loop {
            attempts += 1;
            match client.enroll(enroll(&format!("enrol-{prefix}-{index}"), &number, "")).await {
                Ok(_) => break,
                // A till's pause before it sends the call again.
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
    // Real time on a real cluster: the tills are under way for a second before the kill, and call
    // on for 8 s with the node gone (the driver marks it down, hints pile up).
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
            // A till's pause before it sends the call again.
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
    // Real time on a real cluster: the tills are under way for a second before the node freezes.
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

/// A till's call, sent unchanged to whichever engine answers it.
#[derive(Clone, Debug)]
enum Call {
    Accrue(pb::AccrueRequest),
    Redeem(pb::RedeemRequest),
}

/// An engine's answer to a [`Call`].
#[derive(Clone, Debug, PartialEq)]
enum Answer {
    Accrued(pb::AccrueResponse),
    Redeemed(pb::RedeemResponse),
}

/// What a till retries (on the same engine or another): UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED.
fn retried(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Aborted | Code::DeadlineExceeded)
}

impl Call {
    /// A till's `n`th call: every third spends 5 points, the others earn 10.
    fn nth(receipt_id: &str, number: &str, n: usize) -> Call {
        if n % 3 == 2 {
            Call::Redeem(redeem(receipt_id, phone(number), "5", "", vec![line(1, "coffee", "1", "100.00")]))
        } else {
            Call::Accrue(accrue(receipt_id, phone(number), vec![line(1, "milk", "1", "1000.00")]))
        }
    }

    fn receipt_id(&self) -> &str {
        match self {
            Call::Accrue(request) => &request.receipt_id,
            Call::Redeem(request) => &request.receipt_id,
        }
    }

    async fn send(&self, client: &mut Client) -> Result<Answer, tonic::Status> {
        match self {
            Call::Accrue(request) => client.accrue(request.clone()).await.map(|answer| Answer::Accrued(answer.into_inner())),
            Call::Redeem(request) => client.redeem(request.clone()).await.map(|answer| Answer::Redeemed(answer.into_inner())),
        }
    }

    /// Sends the call until it is answered, retrying (after 100 ms) what a till retries.
    async fn until_answered(&self, client: &mut Client) -> Answer {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.send(client).await {
                Ok(answer) => return answer,
                // A till's pause before it sends the call again.
                Err(status) if retried(status.code()) && attempts < 300 => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(status) => panic!("{}: no answer after {attempts} attempts: {status:?}", self.receipt_id()),
            }
        }
    }
}

impl Answer {
    /// What the call added to the customer's balance: a spend is negative.
    fn points(&self) -> Decimal {
        match self {
            Answer::Accrued(answer) => dec(&answer.earned),
            Answer::Redeemed(answer) => -dec(&answer.redeemed),
        }
    }

    fn transaction_id(&self) -> &str {
        match self {
            Answer::Accrued(answer) => &answer.transaction_id,
            Answer::Redeemed(answer) => &answer.transaction_id,
        }
    }
}

/// The two engine processes of the kill test: A is killed, B answers the retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    A,
    B,
}

/// An acknowledged call: the customer, what was sent, which engine answered, and its answer.
#[derive(Debug)]
struct Acked {
    number: String,
    call: Call,
    by: Engine,
    answer: Answer,
}

/// The kill as the tills see it: the calls acknowledged so far (the kill waits for some, so that
/// every till is well under way) and when A was killed (a call sent to A before then that failed
/// was in flight at the kill).
#[derive(Debug, Default)]
struct Kill {
    acknowledged: AtomicUsize,
    /// On this process's monotonic clock, and on the wall clock the engine processes write entries by.
    at: OnceLock<(Instant, DateTime<Utc>)>,
}

/// What one till saw across the kill: its acknowledged calls, and the calls in flight on A when it
/// was killed (receipt, the code the call failed with).
#[derive(Debug, Default)]
struct KillTill {
    acknowledged: Vec<Acked>,
    in_flight: Vec<(String, Code)>,
}

/// A till with a connection to each engine: `calls` calls, each sent to A while A lives and, when
/// A fails it, sent again unchanged to B until answered (a till's retry through another engine).
async fn till_across_the_kill(engines: [SocketAddr; 2], till: usize, customers: Vec<String>, calls: usize, kill: Arc<Kill>) -> KillTill {
    let (mut a, mut b) = (connect(engines[0]).await, connect(engines[1]).await);
    let mut seen = KillTill::default();
    for n in 0..calls {
        // The tills start on different customers: their calls meet the kill more than each other.
        let number = customers[(till + n) % customers.len()].clone();
        let call = Call::nth(&format!("kill-t{till}-{n}"), &number, n);
        let sent = Instant::now();
        let first = if kill.at.get().is_none() { Some(call.send(&mut a).await) } else { None };
        let (by, answer) = match first {
            Some(Ok(answer)) => (Engine::A, answer),
            Some(Err(status)) => {
                match kill.at.get() {
                    Some((killed, _)) if sent < *killed => seen.in_flight.push((call.receipt_id().to_owned(), status.code())),
                    Some(_) => {}
                    None => assert!(retried(status.code()), "{}: refused for good by A: {status:?}", call.receipt_id()),
                }
                (Engine::B, call.until_answered(&mut b).await)
            }
            None => (Engine::B, call.until_answered(&mut b).await),
        };
        kill.acknowledged.fetch_add(1, Ordering::SeqCst);
        seen.acknowledged.push(Acked { number, call, by, answer });
    }
    seen
}

/// Every acknowledged call sent again to B is answered with its first answer, whichever engine
/// gave it: a stored answer, not a new evaluation (which would differ, in its transaction ID and
/// balance at least).
async fn assert_replays_are_first_answers(b: &mut Client, acknowledged: &[Acked]) {
    for acked in acknowledged {
        let replayed = acked.call.until_answered(b).await;
        assert_eq!(replayed, acked.answer, "{} replayed on B: the first answer, given by {:?}", acked.call.receipt_id(), acked.by);
    }
}

/// Every acknowledged answer is its ledger entry's (the same transaction ID), whichever engine
/// gave it. Returns when each receipt's entry was made: by A before the kill, or by B after it.
async fn assert_answers_name_their_entries(
    b: &mut Client,
    customers: &[String],
    acknowledged: &[Acked],
) -> BTreeMap<String, DateTime<Utc>> {
    let mut made = BTreeMap::new();
    for number in customers {
        let ledger = checked_ledger(b, number).await;
        for acked in acknowledged.iter().filter(|acked| &acked.number == number) {
            let receipt_id = acked.call.receipt_id();
            let entry = entries_for(&ledger, receipt_id)[0];
            assert_eq!(entry.transaction_id, acked.answer.transaction_id(), "{receipt_id}: the answer is its entry's");
            let at = entry.at.expect("entry time");
            let at = DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).expect("nanos")).expect("an entry time chrono can hold");
            made.insert(receipt_id.to_owned(), at);
        }
    }
    made
}

/// How many calls are acknowledged before engine A is killed (of 6 tills x 24 calls).
const KILL_AFTER: usize = 36;

/// Two engine processes on one keyspace; tills call A until it is killed (-9) with a call of each
/// in flight (read, claims or batch sent, answer not yet back), then retry on B. A call A committed
/// before dying must be answered by B from the store, one it did not must be applied once by B,
/// and every later replay on B is the first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the Cassandra cluster of tests/cassandra/cluster.sh (CI runs it)"]
async fn an_engine_killed_mid_commit_leaves_its_calls_to_another_engine_and_each_counts_once() {
    let rig = Rig::shared().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config_file = dir.path().join("engine.toml");
    let program = "[[programs]]\nid = \"shop\"\npending = \"none\"\nredeem_cap_percent = \"100\"\ncustomer_code = \"none\"\n";
    std::fs::write(&config_file, format!("{program}{UNDER_TEST_LIMITS_TOML}")).expect("config");
    let (mut first, first_addr) = start_engine_process(&config_file, &rig).await;
    let (mut second, second_addr) = start_engine_process(&config_file, &rig).await;
    let mut a = connect(first_addr).await;
    let customers = enrolled(&mut a, "4", 6).await;
    // 100 points each, so that every spend of the tills is affordable.
    let mut acknowledged = Vec::new();
    for (index, number) in customers.iter().enumerate() {
        let call = Call::Accrue(accrue(&format!("kill-fund-{index}"), phone(number), vec![line(1, "gold", "1", "10000.00")]));
        let answer = call.until_answered(&mut a).await;
        acknowledged.push(Acked { number: number.clone(), call, by: Engine::A, answer });
    }

    let kill = Arc::new(Kill::default());
    let tills: Vec<_> = (0..6)
        .map(|till| tokio::spawn(till_across_the_kill([first_addr, second_addr], till, customers.clone(), 24, Arc::clone(&kill))))
        .collect();
    eventually(
        Duration::from_secs(300),
        "calls acknowledged before the kill",
        || std::future::ready(kill.acknowledged.load(Ordering::SeqCst)),
        |count| *count >= KILL_AFTER,
    )
    .await;
    // The engine processes stamp entries with their `SystemClock`: the same clock here.
    kill.at.set((Instant::now(), SystemClock.now())).expect("one kill");
    // SIGKILL: no draining, no answer for the calls it was serving.
    first.start_kill().expect("kill -9 engine A");
    let _ = first.wait().await;
    let mut in_flight = Vec::new();
    for till in tills {
        let seen = till.await.expect("till task");
        acknowledged.extend(seen.acknowledged);
        in_flight.extend(seen.in_flight);
    }

    let mut b = connect(second_addr).await;
    assert_replays_are_first_answers(&mut b, &acknowledged).await;
    let points: Vec<(String, String, Decimal)> =
        acknowledged.iter().map(|acked| (acked.call.receipt_id().to_owned(), acked.number.clone(), acked.answer.points())).collect();
    assert_ledgers_hold_exactly(&mut b, &customers, &points).await;
    let made = assert_answers_name_their_entries(&mut b, &customers, &acknowledged).await;
    // An in-flight call whose entry is older than the kill was committed by A: B's answer to its
    // retry is the one A stored.
    let killed = kill.at.get().expect("killed").1;
    let committed = in_flight.iter().filter(|(receipt_id, _)| made[receipt_id] < killed).count();
    let by_a = acknowledged.iter().filter(|acked| acked.by == Engine::A).count();
    eprintln!(
        "kill: {by_a} of {} calls answered by A, {} in flight at the kill {:?}: {committed} committed by A before it died, answered by B from the store",
        acknowledged.len(),
        in_flight.len(),
        in_flight.iter().map(|(_, code)| *code).collect::<Vec<_>>()
    );
    assert!(!in_flight.is_empty(), "some calls were in flight on A when it was killed");
    second.start_kill().expect("stop engine B");
    let _ = second.wait().await;
}
