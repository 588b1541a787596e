//! The engine on the ScyllaDB backend, end to end: real gRPC, the real `scylla` driver over TCP,
//! the CQL stand-in (`tests/cql-standin`) as the server, and `scylla-proxy` in between to inject
//! faults at the frame level: write timeouts after and before the write, overloaded and
//! unavailable errors, a connection dropped in the middle of a lightweight transaction. Then two
//! engine processes over one keyspace. Each test checks the two things that matter: nothing is
//! applied twice, and nothing is acknowledged that was not stored.
//!
//! The tests without faults (`Rig::shared`) run on a real cluster instead of the stand-in when
//! `LOYALTY_TEST_CQL_NODES` names one (`host:port,...`): CI's three Apache Cassandra nodes
//! (`tests/cassandra/cluster.sh`), with replication factor 3.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cql_standin::StandIn;
use loyalty_core::program::PendingRule;
use loyalty_proto::v1 as pb;
use loyalty_store::Store;
use loyalty_store::scylla::{ScyllaConfig, ScyllaStore};
use loyalty_tests::*;
use rust_decimal::Decimal;
use scylla::errors::{DbError, WriteType};
use scylla::statement::Consistency;
use scylla_proxy::{
    Condition, Node, Reaction, RequestOpcode, RequestReaction, RequestRule, ResponseFrame, ResponseOpcode, ResponseReaction, ResponseRule,
    RunningProxy, ShardAwareness,
};
use tokio::process::Child;
use tonic::Code;

static KEYSPACES: AtomicUsize = AtomicUsize::new(0);

fn schema_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cql")
}

/// A stand-in (optionally behind a proxy) or a real cluster, and a migrated keyspace on it.
pub(crate) struct Rig {
    /// `None` on a real cluster.
    standin: Option<StandIn>,
    proxy: Option<RunningProxy>,
    config: ScyllaConfig,
}

impl Rig {
    async fn new(with_proxy: bool) -> Rig {
        let keyspace = format!("e2e_{}_{}", std::process::id(), KEYSPACES.fetch_add(1, Ordering::SeqCst));
        let (standin, proxy, contact) = if with_proxy {
            // The driver connects to the address the node advertises (rpc_address) at the port it
            // first used: the stand-in advertises the proxy's own loopback IP.
            let proxy_ip: IpAddr = scylla_proxy::get_exclusive_local_address();
            let standin = StandIn::start_advertising("127.0.0.1:0".parse().expect("addr"), proxy_ip).await.expect("stand-in");
            let proxy_addr = SocketAddr::new(proxy_ip, 9042);
            let node = Node::builder()
                .real_address(standin.addr())
                .proxy_address(proxy_addr)
                .shard_awareness(ShardAwareness::Unaware)
                .request_rules(Vec::new())
                .response_rules(Vec::new())
                .build();
            let proxy = scylla_proxy::Proxy::new([node]).run().await.expect("proxy");
            (standin, Some(proxy), proxy_addr)
        } else {
            let standin = StandIn::start("127.0.0.1:0".parse().expect("addr")).await.expect("stand-in");
            let addr = standin.addr();
            (standin, None, addr)
        };
        // Retries of the tests' own calls come from the test, like a till's.
        let config = Rig::migrated(vec![contact.to_string()], keyspace, 1, Duration::from_secs(2)).await;
        Rig { standin: Some(standin), proxy, config }
    }

    /// The tests' settings for a fresh keyspace on `nodes`, migrated.
    async fn migrated(nodes: Vec<String>, keyspace: String, replicas: u32, request_timeout: Duration) -> ScyllaConfig {
        let mut config = ScyllaConfig::new(nodes, &keyspace);
        config.replication = [("datacenter1".to_owned(), replicas)].into_iter().collect();
        config.relay_settle = Duration::from_millis(200);
        config.relay_grace = Duration::from_secs(1);
        config.relay_lookback_minutes = 5;
        config.request_timeout = request_timeout;
        migrate_scylla(&config, &schema_dir()).await.expect("migrate");
        config
    }

    /// The real cluster `LOYALTY_TEST_CQL_NODES` names, else the stand-in without a proxy.
    pub(crate) async fn shared() -> Rig {
        let nodes = std::env::var("LOYALTY_TEST_CQL_NODES").unwrap_or_default();
        let nodes: Vec<String> = nodes.split(',').map(str::trim).filter(|node| !node.is_empty()).map(str::to_owned).collect();
        if nodes.is_empty() {
            return Rig::new(false).await;
        }
        let keyspace = format!("e2e_{}_{}", std::process::id(), KEYSPACES.fetch_add(1, Ordering::SeqCst));
        // Three JVMs share the machine's cores: the server's own timeouts (3 s) answer first.
        let mut config = Rig::migrated(nodes, keyspace, 3, Duration::from_secs(5)).await;
        config.local_dc = Some("datacenter1".to_owned());
        Rig { standin: None, proxy: None, config }
    }

    async fn store(&self) -> Arc<ScyllaStore> {
        connect_scylla(self.config.clone()).await.expect("connect")
    }

    /// The engine with spendable-at-once points, on this rig's keyspace.
    pub(crate) async fn engine(&self) -> TestServer {
        self.engine_with(|config| config.programs[0].pending = PendingRule::None).await
    }

    /// The engine configured by `configure`, on this rig's keyspace.
    pub(crate) async fn engine_with(&self, configure: impl FnOnce(&mut loyalty_engine::config::Config)) -> TestServer {
        let store = self.store().await;
        assert!(store.token_aware(), "statements are routed by token to their replicas");
        let store: Arc<dyn Store> = store;
        TestServer::start_on(store, configure).await
    }

    fn proxy(&mut self) -> &mut RunningProxy {
        self.proxy.as_mut().expect("rig with a proxy")
    }

    fn on_requests(&mut self, rules: Vec<RequestRule>) {
        self.proxy().running_nodes[0].change_request_rules(Some(rules));
    }

    fn on_responses(&mut self, rules: Vec<ResponseRule>) {
        self.proxy().running_nodes[0].change_response_rules(Some(rules));
    }

    fn clear_rules(&mut self) {
        self.proxy().turn_off_rules();
    }
}

/// What ScyllaDB answers when a lightweight transaction's outcome is unknown.
fn cas_write_timeout() -> DbError {
    DbError::WriteTimeout { consistency: Consistency::LocalSerial, received: 0, required: 1, write_type: WriteType::Cas }
}

/// The response to the commit batch of an account: an LWT result (`[applied]`) on the accounts
/// table (the claims and rules results name their own tables).
fn commit_result() -> Condition {
    Condition::ResponseOpcode(ResponseOpcode::Result)
        .and(Condition::BodyContainsCaseSensitive(Box::from(&b"[applied]"[..])))
        .and(Condition::BodyContainsCaseSensitive(Box::from(&b"accounts"[..])))
}

/// Replaces a response with an error: the request reached the store, the answer did not.
fn answer_lost(error: fn() -> DbError) -> ResponseReaction {
    ResponseReaction::transform_frame(Arc::new(move |frame: ResponseFrame| {
        ResponseFrame::forged_error(frame.params, error(), Some("injected by the test proxy")).expect("forge error frame")
    }))
}

/// Calls `accrue` like a till does: again and again until it is answered. The bound is as high as
/// the redeem loop's: under the overload test's injected faults one call makes several requests,
/// each failing about one time in five, so 40 failures in a row did happen (about once in a few
/// hundred runs) with nothing wrong.
async fn accrue_until_answered(client: &mut loyalty_tests::Client, request: &pb::AccrueRequest) -> (pb::AccrueResponse, usize) {
    let mut failures = 0;
    loop {
        match client.accrue(request.clone()).await {
            Ok(response) => return (response.into_inner(), failures),
            Err(status) if matches!(status.code(), Code::Unavailable | Code::Aborted | Code::DeadlineExceeded) && failures < 200 => {
                failures += 1;
            }
            Err(status) => panic!("accrue {} failed for good: {status:?}", request.receipt_id),
        }
    }
}

/// Every ledger entry of a customer, and a check that they sum to the balance and never went
/// below zero.
pub(crate) async fn checked_ledger(client: &mut loyalty_tests::Client, number: &str) -> Vec<pb::LedgerEntry> {
    let ledger = full_ledger(client, phone(number)).await;
    let sum: Decimal = ledger.iter().map(|entry| dec(&entry.amount)).sum();
    assert_eq!(sum, dec(&balance_of(client, phone(number)).await.balance), "balance of {number} equals its ledger");
    assert!(ledger.iter().all(|entry| dec(&entry.balance_after) >= Decimal::ZERO), "{number} never went below zero: {ledger:?}");
    ledger
}

/// The customer's ledger holds the receipt exactly once, and the balance is exactly its points.
async fn assert_accrued_once(client: &mut loyalty_tests::Client, number: &str, receipt_id: &str, points: i64) {
    let ledger = checked_ledger(client, number).await;
    assert_eq!(entries_for(&ledger, receipt_id).len(), 1, "{receipt_id} once in the ledger: {ledger:?}");
    assert_eq!(dec(&balance_of(client, phone(number)).await.balance), Decimal::from(points));
}

pub(crate) fn entries_for<'a>(ledger: &'a [pb::LedgerEntry], receipt_id: &str) -> Vec<&'a pb::LedgerEntry> {
    ledger.iter().filter(|entry| entry.receipt_id == receipt_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkout_runs_on_scylla_with_replays_and_a_second_engine_sees_it() {
    let rig = Rig::shared().await;
    let server = rig.engine().await;
    let mut client = server.client().await;
    client.enroll(enroll("enrol-1", "+77015550101", "")).await.expect("enroll");
    // A retried enrolment is answered from its stored first answer.
    let first = client.enroll(enroll("enrol-1", "+77015550101", "")).await.expect("enroll replay").into_inner();
    assert!(!first.card_number.is_empty());
    let request = accrue("r-1", phone("+77015550101"), vec![line(1, "milk", "1", "10000.00")]);
    let earned = client.accrue(request.clone()).await.expect("accrue").into_inner();
    assert_eq!(dec(&earned.earned), Decimal::from(100));
    assert_eq!(client.accrue(request).await.expect("replay").into_inner(), earned, "a replay returns the first answer");

    let quote = client
        .authorize(authorize("r-2", phone("+77015550101"), vec![line(1, "bread", "1", "100.00")], "30"))
        .await
        .expect("authorize")
        .into_inner();
    let hold = quote.hold.expect("hold");
    let redeemed = client
        .redeem(redeem("r-2", phone("+77015550101"), "30", &hold.hold_id, vec![line(1, "bread", "1", "100.00")]))
        .await
        .expect("redeem")
        .into_inner();
    assert_eq!(dec(&redeemed.redeemed), Decimal::from(30));
    let ledger = checked_ledger(&mut client, "+77015550101").await;
    assert_eq!(dec(&balance_of(&mut client, phone("+77015550101")).await.balance), Decimal::from(70), "{ledger:?}");

    // A second engine on the same keyspace: a retry landing there gets the same first answer.
    let other = rig.engine().await;
    let mut elsewhere = other.client().await;
    let replayed = elsewhere
        .redeem(redeem("r-2", phone("+77015550101"), "30", &hold.hold_id, vec![line(1, "bread", "1", "100.00")]))
        .await
        .expect("redeem replay on the other engine")
        .into_inner();
    assert_eq!(replayed, redeemed);
    assert_eq!(dec(&balance_of(&mut elsewhere, phone("+77015550101")).await.balance), Decimal::from(70));
    // The outbox got the events, relayed out of the account's partition.
    eventually(
        Duration::from_secs(10),
        "the accrual's event in the outbox",
        || server.store.outbox_page(PROGRAM, 0, 100),
        |events| events.as_ref().is_ok_and(|events| events.iter().any(|record| record.event.receipt_id.as_deref() == Some("r-1"))),
    )
    .await
    .expect("outbox");
    if let Some(standin) = &rig.standin {
        assert!(standin.stats().lwt > 0, "commits went through lightweight transactions");
    }
    other.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_whose_answer_is_lost_is_settled_by_a_serial_read_and_applied_once() {
    let mut rig = Rig::new(true).await;
    let server = rig.engine().await;
    let mut client = server.client().await;
    client.enroll(enroll("enrol-1", "+77015550102", "")).await.expect("enroll");
    // The batch reaches the store and applies; its answer becomes a CAS write timeout. The store
    // reads the partition at SERIAL, finds its own receipt and answers the call as applied.
    rig.on_responses(vec![ResponseRule(commit_result().and(Condition::TrueForLimitedTimes(1)), answer_lost(cas_write_timeout))]);
    let request = accrue("lost-1", phone("+77015550102"), vec![line(1, "milk", "1", "5000.00")]);
    let first = client.accrue(request.clone()).await.expect("settled: the batch applied").into_inner();
    rig.clear_rules();
    assert_eq!(client.accrue(request).await.expect("replay").into_inner(), first, "the replay is the first answer");
    assert_accrued_once(&mut client, "+77015550102", "lost-1", 50).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_refused_before_the_store_saw_it_is_sent_again_and_applied_once() {
    let mut rig = Rig::new(true).await;
    let server = rig.engine().await;
    let mut client = server.client().await;
    client.enroll(enroll("enrol-1", "+77015550103", "")).await.expect("enroll");
    // The first batch never reaches the store: the SERIAL read finds the account unchanged, so the
    // store sends the batch again, and the call is answered.
    rig.on_requests(vec![RequestRule(
        Condition::RequestOpcode(RequestOpcode::Batch).and(Condition::TrueForLimitedTimes(1)),
        RequestReaction::forge_with_error(cas_write_timeout()),
    )]);
    let request = accrue("refused-1", phone("+77015550103"), vec![line(1, "milk", "1", "5000.00")]);
    client.accrue(request.clone()).await.expect("sent again and applied");
    rig.clear_rules();
    client.accrue(request).await.expect("replay");
    assert_accrued_once(&mut client, "+77015550103", "refused-1", 50).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_the_store_keeps_timing_out_is_unavailable_and_its_retry_applies_once() {
    let mut rig = Rig::new(true).await;
    let server = rig.engine().await;
    let mut client = server.client().await;
    client.enroll(enroll("enrol-1", "+77015550104", "")).await.expect("enroll");
    // Every send of the batch times out: the store gives up after its sends and nothing is
    // acknowledged. The till's retry, once the cluster answers again, applies it once.
    rig.on_requests(vec![RequestRule(
        Condition::RequestOpcode(RequestOpcode::Batch),
        RequestReaction::forge_with_error(cas_write_timeout()),
    )]);
    let request = accrue("stuck-1", phone("+77015550104"), vec![line(1, "milk", "1", "5000.00")]);
    let status = client.accrue(request.clone()).await.expect_err("never acknowledged without an applied batch");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    rig.clear_rules();
    let retried = client.accrue(request.clone()).await.expect("retry").into_inner();
    assert_eq!(client.accrue(request).await.expect("replay").into_inner(), retried);
    assert_accrued_once(&mut client, "+77015550104", "stuck-1", 50).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_dropped_in_the_middle_of_a_commit_never_applies_it_twice() {
    let mut rig = Rig::new(true).await;
    let server = rig.engine().await;
    let mut client = server.client().await;
    client.enroll(enroll("enrol-1", "+77015550104", "")).await.expect("enroll");
    // The batch is applied by the store; the connection dies before its answer gets back.
    rig.on_responses(vec![ResponseRule(commit_result().and(Condition::TrueForLimitedTimes(1)), ResponseReaction::drop_connection())]);
    let request = accrue("dropped-1", phone("+77015550104"), vec![line(1, "milk", "1", "5000.00")]);
    // The driver may retry the batch on a new connection (it is idempotent: the repeat fails its
    // condition and the engine finds its own stored call) or give up (UNAVAILABLE).
    let (answer, _) = accrue_until_answered(&mut client, &request).await;
    rig.clear_rules();
    assert_eq!(client.accrue(request).await.expect("replay").into_inner(), answer);
    assert_accrued_once(&mut client, "+77015550104", "dropped-1", 50).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_random_overload_unavailable_and_timeout_errors_every_receipt_counts_once() {
    let mut rig = Rig::new(true).await;
    let server = rig.engine().await;
    let mut client = server.client().await;
    let phones: Vec<String> = (0..4).map(|index| format!("+7701556{index:04}")).collect();
    for (index, number) in phones.iter().enumerate() {
        client.enroll(enroll(&format!("e{index}"), number, "")).await.expect("enroll");
        client.accrue(accrue(&format!("fund{index}"), phone(number), vec![line(1, "gold", "1", "10000.00")])).await.expect("fund");
    }
    let data_requests = Condition::RequestOpcode(RequestOpcode::Execute).or(Condition::RequestOpcode(RequestOpcode::Batch));
    rig.on_requests(vec![
        RequestRule(
            data_requests.clone().and(Condition::RandomWithProbability(0.08)),
            RequestReaction::forge_with_error(DbError::Overloaded),
        ),
        RequestRule(
            data_requests.clone().and(Condition::RandomWithProbability(0.08)),
            RequestReaction::forge_with_error(DbError::Unavailable { consistency: Consistency::LocalQuorum, required: 2, alive: 1 }),
        ),
        RequestRule(data_requests.and(Condition::RandomWithProbability(0.05)), RequestReaction::forge_with_error(cas_write_timeout())),
    ]);
    rig.on_responses(vec![ResponseRule(commit_result().and(Condition::RandomWithProbability(0.15)), answer_lost(cas_write_timeout))]);

    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let phones = phones.clone();
        let acked = Arc::clone(&acked);
        let mut client = server.client().await;
        workers.push(tokio::spawn(async move {
            let mut failures = 0;
            for n in 0..15 {
                let number = &phones[(worker + n) % phones.len()];
                let receipt = format!("w{worker}-{n}");
                let response = if n % 3 == 2 {
                    let request = redeem(&receipt, phone(number), "7", "", vec![line(1, "coffee", "1", "100.00")]);
                    loop {
                        match client.redeem(request.clone()).await {
                            Ok(response) => break -dec(&response.into_inner().redeemed),
                            Err(status) if matches!(status.code(), Code::Unavailable | Code::Aborted) && failures < 200 => failures += 1,
                            Err(status) => panic!("redeem {receipt}: {status:?}"),
                        }
                    }
                } else {
                    let request = accrue(&receipt, phone(number), vec![line(1, "milk", "1", "1000.00")]);
                    let (response, failed) = accrue_until_answered(&mut client, &request).await;
                    failures += failed;
                    dec(&response.earned)
                };
                acked.lock().expect("acked").push((number.clone(), receipt, response));
            }
            failures
        }));
    }
    let mut failures = 0;
    for worker in workers {
        failures += worker.await.expect("worker");
    }
    rig.clear_rules();
    assert!(failures > 0, "the proxy injected no failure the engine reported");
    let acked = acked.lock().expect("acked").clone();
    for number in &phones {
        let ledger = checked_ledger(&mut client, number).await;
        let mine: Vec<_> = acked.iter().filter(|(owner, _, _)| owner == number).collect();
        for (_, receipt, _) in &mine {
            assert_eq!(entries_for(&ledger, receipt).len(), 1, "receipt {receipt} once in {number}'s ledger");
        }
        let expected = Decimal::from(100) + mine.iter().map(|(_, _, points)| *points).sum::<Decimal>();
        assert_eq!(dec(&balance_of(&mut client, phone(number)).await.balance), expected, "{number}: funding plus acknowledged calls");
    }
    server.stop().await;
}

/// Makes a call until it is answered or refused for good, retrying what a till retries: ABORTED
/// (the engine gave up under contention) and UNAVAILABLE.
async fn until_answered<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut attempts = 0;
    loop {
        match call().await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if matches!(status.code(), Code::Aborted | Code::Unavailable) && attempts < 50 => attempts += 1,
            Err(status) => return Err(status),
        }
    }
}

/// Starts the engine binary on the ScyllaDB backend and waits for its "listening on" line.
pub(crate) async fn start_engine_process(config_file: &std::path::Path, rig: &Rig) -> (Child, SocketAddr) {
    let nodes = rig.config.nodes.join(",");
    let credentials = config_file.with_extension("credentials.toml");
    loyalty_tests::write_test_credentials(&credentials, &[loyalty_tests::PROGRAM]);
    let args = [
        OsStr::new("--credentials-file"),
        credentials.as_os_str(),
        OsStr::new("--config"),
        config_file.as_os_str(),
        OsStr::new("--storage-backend"),
        OsStr::new("scylla"),
        OsStr::new("--scylla-local-dc"),
        OsStr::new("datacenter1"),
        OsStr::new("--scylla-nodes"),
        OsStr::new(&nodes),
        OsStr::new("--scylla-keyspace"),
        OsStr::new(&rig.config.keyspace),
    ];
    crate::spawn_engine(args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engine_processes_hammering_the_same_accounts_add_up_exactly() {
    let rig = Rig::shared().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config_file = dir.path().join("engine.toml");
    std::fs::write(
        &config_file,
        format!("[[programs]]\nid = \"shop\"\npending = \"none\"\nredeem_cap_percent = \"100\"\ncustomer_code = \"none\"\n{UNDER_TEST_LIMITS_TOML}"),
    )
    .expect("config");
    let (mut first, first_addr) = start_engine_process(&config_file, &rig).await;
    let (mut second, second_addr) = start_engine_process(&config_file, &rig).await;
    let engines = [first_addr, second_addr];
    let phones: Vec<String> = (0..3).map(|index| format!("+7701557{index:04}")).collect();
    let mut client = connect(first_addr).await;
    for (index, number) in phones.iter().enumerate() {
        client.enroll(enroll(&format!("e{index}"), number, "")).await.expect("enroll");
        // 100 points each: a worker's spend of 9 fails for lack of points long before the end.
        client.accrue(accrue(&format!("fund{index}"), phone(number), vec![line(1, "gold", "1", "10000.00")])).await.expect("fund");
    }

    // Every call goes to both engines at once (a till's retry racing its first attempt on
    // another engine): both must give the same answer, and it must count once.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..6 {
        let phones = phones.clone();
        let acked = Arc::clone(&acked);
        let refused = Arc::clone(&refused);
        let clients = [connect(engines[0]).await, connect(engines[1]).await];
        workers.push(tokio::spawn(async move {
            for n in 0..20 {
                let number = phones[(worker + n) % phones.len()].clone();
                let receipt = format!("w{worker}-{n}");
                let [a, b] = &clients;
                if n % 2 == 0 {
                    let request = redeem(&receipt, phone(&number), "9", "", vec![line(1, "coffee", "1", "100.00")]);
                    let (left, right) = tokio::join!(
                        until_answered(|| {
                            let (mut a, request) = (a.clone(), request.clone());
                            async move { a.redeem(request).await }
                        }),
                        until_answered(|| {
                            let (mut b, request) = (b.clone(), request.clone());
                            async move { b.redeem(request).await }
                        }),
                    );
                    match (left, right) {
                        (Ok(left), Ok(right)) => {
                            assert_eq!(left, right, "both engines answer {receipt} alike");
                            acked.lock().expect("acked").push((number, receipt, -dec(&left.redeemed)));
                        }
                        (Err(left), Err(right)) if left.code() == Code::FailedPrecondition && right.code() == Code::FailedPrecondition => {
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        // A refusal is not stored (nothing was written), so the other engine may
                        // have evaluated the receipt after an accrual made it affordable.
                        (Ok(answer), Err(refusal)) | (Err(refusal), Ok(answer)) if refusal.code() == Code::FailedPrecondition => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            acked.lock().expect("acked").push((number, receipt, -dec(&answer.redeemed)));
                        }
                        (left, right) => panic!("engines disagree on {receipt}: {left:?} / {right:?}"),
                    }
                } else {
                    let request = accrue(&receipt, phone(&number), vec![line(1, "milk", "1", "300.00")]);
                    let (left, right) = tokio::join!(
                        until_answered(|| {
                            let (mut a, request) = (a.clone(), request.clone());
                            async move { a.accrue(request).await }
                        }),
                        until_answered(|| {
                            let (mut b, request) = (b.clone(), request.clone());
                            async move { b.accrue(request).await }
                        }),
                    );
                    let (left, right) = (left.expect("accrue on engine 1"), right.expect("accrue on engine 2"));
                    assert_eq!(left, right, "both engines answer {receipt} alike");
                    acked.lock().expect("acked").push((number, receipt, dec(&left.earned)));
                }
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    let acked = acked.lock().expect("acked").clone();
    assert!(refused.load(Ordering::SeqCst) > 0, "some spend ran out of points: the overdraft check was exercised");
    let mut other = connect(second_addr).await;
    for number in &phones {
        let ledger = checked_ledger(&mut client, number).await;
        let mine: Vec<_> = acked.iter().filter(|(owner, _, _)| owner == number).collect();
        for (_, receipt, _) in &mine {
            assert_eq!(entries_for(&ledger, receipt).len(), 1, "receipt {receipt} once in {number}'s ledger");
        }
        let expected = Decimal::from(100) + mine.iter().map(|(_, _, points)| *points).sum::<Decimal>();
        let balance = dec(&balance_of(&mut client, phone(number)).await.balance);
        assert_eq!(balance, expected, "{number}: funding plus acknowledged calls");
        assert_eq!(dec(&balance_of(&mut other, phone(number)).await.balance), balance, "both engines read the same balance");
    }
    first.start_kill().expect("stop");
    second.start_kill().expect("stop");
    let _ = first.wait().await;
    let _ = second.wait().await;
}

/// Another engine process, reduced to what matters here: before each of our commits it commits a
/// newer version of the same account first (while `active`), so ours loses the compare-and-set
/// for real, in the store.
#[derive(Debug)]
struct Rival {
    inner: Arc<ScyllaStore>,
    active: std::sync::atomic::AtomicBool,
    lost: AtomicUsize,
}

#[async_trait::async_trait]
impl Store for Rival {
    async fn account(
        &self,
        program_id: &str,
        account_id: &str,
    ) -> Result<Option<loyalty_store::Versioned<loyalty_core::account::AccountState>>, loyalty_store::StoreError> {
        self.inner.account(program_id, account_id).await
    }
    async fn identity(
        &self,
        program_id: &str,
        key: &loyalty_core::identity::IdentityKey,
    ) -> Result<Option<String>, loyalty_store::StoreError> {
        self.inner.identity(program_id, key).await
    }
    async fn receipt(
        &self,
        program_id: &str,
        receipt_id: &str,
    ) -> Result<Option<loyalty_store::Versioned<loyalty_core::receipt::ReceiptState>>, loyalty_store::StoreError> {
        self.inner.receipt(program_id, receipt_id).await
    }
    async fn request(
        &self,
        program_id: &str,
        request_id: &str,
    ) -> Result<Option<loyalty_core::receipt::CallRecord>, loyalty_store::StoreError> {
        self.inner.request(program_id, request_id).await
    }
    async fn ledger_page(
        &self,
        program_id: &str,
        account_id: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<loyalty_core::ledger::LedgerEntry>, loyalty_store::StoreError> {
        self.inner.ledger_page(program_id, account_id, before_seq, limit).await
    }
    async fn commit(&self, commit: loyalty_store::Commit) -> Result<loyalty_store::CommitOutcome, loyalty_store::StoreError> {
        if self.active.load(Ordering::SeqCst)
            && let Some(current) = self.inner.account(&commit.program_id, &commit.account.state.account_id).await?
        {
            let bump = loyalty_store::Commit::new(
                &commit.program_id,
                loyalty_store::AccountWrite { expected_version: current.version, state: current.value },
            );
            let outcome = self.inner.commit(bump).await?;
            assert!(matches!(outcome, loyalty_store::CommitOutcome::Applied { .. }), "the rival's commit applies: {outcome:?}");
        }
        let outcome = self.inner.commit(commit).await?;
        if matches!(outcome, loyalty_store::CommitOutcome::Conflict(_)) {
            self.lost.fetch_add(1, Ordering::SeqCst);
        }
        Ok(outcome)
    }
    async fn latest_rules(&self, program_id: &str) -> Result<Option<loyalty_store::StoredRules>, loyalty_store::StoreError> {
        self.inner.latest_rules(program_id).await
    }
    async fn rules_head(&self, program_id: &str) -> Result<u64, loyalty_store::StoreError> {
        self.inner.rules_head(program_id).await
    }
    async fn rules_version(&self, program_id: &str, version: u64) -> Result<Option<loyalty_store::StoredRules>, loyalty_store::StoreError> {
        self.inner.rules_version(program_id, version).await
    }
    async fn put_rules(&self, program_id: &str, rules: loyalty_store::StoredRules) -> Result<bool, loyalty_store::StoreError> {
        self.inner.put_rules(program_id, rules).await
    }
    async fn figures(&self, program_id: &str) -> Result<Option<loyalty_store::StoredFigures>, loyalty_store::StoreError> {
        self.inner.figures(program_id).await
    }
    async fn put_figures(
        &self,
        program_id: &str,
        expected_through: u64,
        figures: loyalty_store::StoredFigures,
    ) -> Result<bool, loyalty_store::StoreError> {
        self.inner.put_figures(program_id, expected_through, figures).await
    }
    async fn account_ids(
        &self,
        program_id: &str,
        cursor: &str,
        limit: usize,
    ) -> Result<loyalty_store::AccountPage, loyalty_store::StoreError> {
        self.inner.account_ids(program_id, cursor, limit).await
    }
    async fn pending_credits(
        &self,
        program_id: &str,
        limit: usize,
    ) -> Result<Vec<loyalty_core::events::PendingCredit>, loyalty_store::StoreError> {
        self.inner.pending_credits(program_id, limit).await
    }
    async fn delete_credit(&self, program_id: &str, credit_id: &str) -> Result<(), loyalty_store::StoreError> {
        self.inner.delete_credit(program_id, credit_id).await
    }
    async fn outbox_page(
        &self,
        program_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<loyalty_store::OutboxRecord>, loyalty_store::StoreError> {
        self.inner.outbox_page(program_id, after_seq, limit).await
    }
    fn is_writable(&self) -> bool {
        self.inner.is_writable()
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    fn outbox_repeats_events(&self) -> bool {
        self.inner.outbox_repeats_events()
    }
    async fn shutdown(&self) {
        self.inner.shutdown().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_that_keeps_losing_the_compare_and_set_gives_up_with_aborted_and_writes_nothing() {
    let rig = Rig::new(false).await;
    let rival = Arc::new(Rival { inner: rig.store().await, active: std::sync::atomic::AtomicBool::new(false), lost: AtomicUsize::new(0) });
    let store: Arc<dyn Store> = Arc::clone(&rival) as Arc<dyn Store>;
    let server = TestServer::start_on(store, |config| config.programs[0].pending = PendingRule::None).await;
    let mut client = server.client().await;
    client.enroll(enroll("enrol-1", "+77015550105", "")).await.expect("enroll");
    rival.active.store(true, Ordering::SeqCst);
    let request = accrue("contended-1", phone("+77015550105"), vec![line(1, "milk", "1", "5000.00")]);
    let status = client.accrue(request.clone()).await.expect_err("every attempt loses");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("contention") || format!("{status:?}").contains("CONTENTION"), "{status:?}");
    assert_eq!(rival.lost.load(Ordering::SeqCst), 8, "a bounded number of attempts, each re-reading");
    assert!(entries_for(&checked_ledger(&mut client, "+77015550105").await, "contended-1").is_empty(), "nothing written");
    rival.active.store(false, Ordering::SeqCst);
    client.accrue(request).await.expect("once the rival stops, the retry applies");
    assert_eq!(entries_for(&checked_ledger(&mut client, "+77015550105").await, "contended-1").len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enrolment_whose_claims_were_taken_over_mid_commit_cannot_apply_after_all() {
    use loyalty_engine::ids::IdSource;
    let mut rig = Rig::new(true).await;
    let server = rig.engine().await;
    // The first commit batch through the proxy is held back for 1.5 s: enrolment E1 has claimed the
    // phone (and its card and request) but its batch has not reached the store. The proxy says
    // when it holds the batch: E2 starts then, without guessing how long E1 takes to get there.
    let (held, mut batch_held) = tokio::sync::mpsc::unbounded_channel();
    rig.on_requests(vec![RequestRule(
        Condition::RequestOpcode(RequestOpcode::Batch).and(Condition::TrueForLimitedTimes(1)),
        RequestReaction::delay(Duration::from_millis(1500)).with_feedback_when_performed(held),
    )]);
    let mut first_client = server.client().await;
    let first = tokio::spawn(async move { first_client.enroll(enroll("E1", "+77015550106", "")).await });
    batch_held.recv().await.expect("E1's batch reaches the proxy");
    // E2, another request for the same phone, finds E1's claim unused, fences E1 off and takes it.
    let mut client = server.client().await;
    let second = client.enroll(enroll("E2", "+77015550106", "")).await.expect("E2 takes the phone over").into_inner();
    // E1's batch arrives: its fence condition fails, so it never applies; E1 then finds the phone taken.
    let status = first.await.expect("E1 task").expect_err("E1 cannot apply after being fenced off");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    rig.clear_rules();
    let owner = client.get_account(get_account(phone("+77015550106"))).await.expect("account").into_inner();
    assert_eq!(owner.account_id, second.account_id);
    let e1_account = loyalty_engine::ids::UuidIds.account_id(&format!("enroll/{PROGRAM}/E1"));
    assert_eq!(server.store.account(PROGRAM, &e1_account).await.expect("read"), None, "E1's account was never created");
    server.stop().await;
}

/// A self-signed CA certificate in PEM, for TLS settings.
#[cfg(feature = "scylla-tls")]
fn self_signed_ca_pem() -> Vec<u8> {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa key")).expect("key");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "loyalty test CA").expect("cn");
    let name = name.build();
    let mut cert = X509Builder::new().expect("builder");
    cert.set_version(2).expect("version");
    cert.set_subject_name(&name).expect("subject");
    cert.set_issuer_name(&name).expect("issuer");
    cert.set_pubkey(&key).expect("pubkey");
    cert.set_not_before(&Asn1Time::days_from_now(0).expect("time")).expect("not before");
    cert.set_not_after(&Asn1Time::days_from_now(1).expect("time")).expect("not after");
    cert.sign(&key, MessageDigest::sha256()).expect("sign");
    cert.build().to_pem().expect("pem")
}

#[cfg(feature = "scylla-tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_tls_configured_the_store_never_talks_in_clear() {
    let rig = Rig::new(false).await;
    let mut config = rig.config.clone();
    config.connect_timeout = Duration::from_secs(2);
    config.tls_ca_file = Some("/nonexistent/loyalty-ca.pem".into());
    let missing = connect_scylla(config.clone()).await.expect_err("no CA file, no connection");
    assert!(missing.to_string().contains("does not exist"), "{missing}");
    // A valid CA against a server that speaks no TLS: the handshake fails; nothing goes in clear.
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, self_signed_ca_pem()).expect("write CA");
    config.tls_ca_file = Some(ca);
    let requests_before = rig.standin.as_ref().expect("a rig on the stand-in").stats().requests;
    let refused = connect_scylla(config).await.expect_err("a plaintext server is not accepted");
    assert!(refused.to_string().contains("connect to ScyllaDB"), "{refused}");
    assert_eq!(
        rig.standin.as_ref().expect("a rig on the stand-in").stats().requests,
        requests_before,
        "no CQL request reached the server in clear"
    );
}

#[cfg(not(feature = "scylla-tls"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_tls_feature_a_tls_setting_is_refused_not_ignored() {
    let rig = Rig::new(false).await;
    let mut config = rig.config.clone();
    config.tls_ca_file = Some("/etc/loyalty/ca.pem".into());
    let refused = connect_scylla(config).await.expect_err("no silent plaintext");
    assert!(refused.to_string().contains("--features scylla-tls"), "{refused}");
}
