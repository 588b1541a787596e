//! Store failures: the engine answers UNAVAILABLE, acknowledges nothing it could not persist,
//! leaves nothing half-written, and a retry after recovery applies once. Overload is refused with
//! RESOURCE_EXHAUSTED rather than queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use loyalty_core::account::AccountState;
use loyalty_core::identity::IdentityKey;
use loyalty_core::ledger::LedgerEntry;
use loyalty_core::receipt::{CallRecord, ReceiptState};
use loyalty_store::{Commit, CommitOutcome, OutboxRecord, Store, StoreError, StoredRules, Versioned};
use loyalty_tests::*;
use tokio::sync::RwLock;
use tonic::Code;

use crate::expect_error;

/// Wraps a real store: commits fail while `failing` is set, and wait while a test holds `gate`
/// for writing; `waiting` counts commits at the gate.
#[derive(Debug)]
struct FaultyStore {
    inner: Arc<dyn Store>,
    failing: AtomicBool,
    gate: RwLock<()>,
    waiting: AtomicUsize,
    /// Set if the store was shut while a commit was still waiting to be written.
    shut_under_a_commit: AtomicBool,
}

#[async_trait::async_trait]
impl Store for FaultyStore {
    async fn account(&self, program_id: &str, account_id: &str) -> Result<Option<Versioned<AccountState>>, StoreError> {
        self.inner.account(program_id, account_id).await
    }
    async fn identity(&self, program_id: &str, key: &IdentityKey) -> Result<Option<String>, StoreError> {
        self.inner.identity(program_id, key).await
    }
    async fn receipt(&self, program_id: &str, receipt_id: &str) -> Result<Option<Versioned<ReceiptState>>, StoreError> {
        self.inner.receipt(program_id, receipt_id).await
    }
    async fn request(&self, program_id: &str, request_id: &str) -> Result<Option<CallRecord>, StoreError> {
        self.inner.request(program_id, request_id).await
    }
    async fn ledger_page(&self, program_id: &str, account_id: &str, before_seq: u64, limit: usize) -> Result<Vec<LedgerEntry>, StoreError> {
        self.inner.ledger_page(program_id, account_id, before_seq, limit).await
    }
    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _open = self.gate.read().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Io("injected write failure".into()));
        }
        self.inner.commit(commit).await
    }
    async fn latest_rules(&self, program_id: &str) -> Result<Option<StoredRules>, StoreError> {
        self.inner.latest_rules(program_id).await
    }
    async fn rules_version(&self, program_id: &str, version: u64) -> Result<Option<StoredRules>, StoreError> {
        self.inner.rules_version(program_id, version).await
    }
    async fn put_rules(&self, program_id: &str, rules: StoredRules) -> Result<bool, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Io("injected write failure".into()));
        }
        self.inner.put_rules(program_id, rules).await
    }
    async fn figures(&self, program_id: &str) -> Result<Option<loyalty_store::StoredFigures>, StoreError> {
        self.inner.figures(program_id).await
    }
    async fn put_figures(
        &self,
        program_id: &str,
        expected_through: u64,
        figures: loyalty_store::StoredFigures,
    ) -> Result<bool, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Io("injected write failure".into()));
        }
        self.inner.put_figures(program_id, expected_through, figures).await
    }
    async fn rules_head(&self, program_id: &str) -> Result<u64, StoreError> {
        self.inner.rules_head(program_id).await
    }
    async fn account_ids(&self, program_id: &str, after: &str, limit: usize) -> Result<loyalty_store::AccountPage, StoreError> {
        self.inner.account_ids(program_id, after, limit).await
    }
    async fn pending_credits(&self, program_id: &str, limit: usize) -> Result<Vec<loyalty_core::events::PendingCredit>, StoreError> {
        self.inner.pending_credits(program_id, limit).await
    }
    async fn delete_credit(&self, program_id: &str, credit_id: &str) -> Result<(), StoreError> {
        self.inner.delete_credit(program_id, credit_id).await
    }
    async fn outbox_page(&self, program_id: &str, after_seq: u64, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.inner.outbox_page(program_id, after_seq, limit).await
    }
    fn is_writable(&self) -> bool {
        !self.failing.load(Ordering::SeqCst) && self.inner.is_writable()
    }
    async fn shutdown(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.shut_under_a_commit.store(true, Ordering::SeqCst);
        }
        self.inner.shutdown().await
    }
}

async fn faulty_server(configure: impl FnOnce(&mut loyalty_engine::config::Config)) -> (TestServer, Arc<FaultyStore>) {
    let mut handle = None;
    let server = TestServer::start_with(configure, |inner| {
        let faulty = Arc::new(FaultyStore {
            inner,
            failing: AtomicBool::new(false),
            gate: RwLock::new(()),
            waiting: AtomicUsize::new(0),
            shut_under_a_commit: AtomicBool::new(false),
        });
        handle = Some(Arc::clone(&faulty));
        faulty
    })
    .await;
    (server, handle.expect("store wrapped"))
}

#[tokio::test]
async fn a_failed_write_is_unavailable_and_leaves_nothing_behind() {
    let (server, store) = faulty_server(|_| {}).await;
    let mut client = server.client().await;
    client.enroll(enroll("e", "+77010000400", "")).await.expect("enroll");
    let customer = phone("+77010000400");
    client.accrue(accrue("R1", customer.clone(), vec![line(1, "x", "1", "10000.00")])).await.expect("accrue");

    store.failing.store(true, Ordering::SeqCst);
    let request = accrue("R2", customer.clone(), vec![line(1, "x", "1", "50000.00")]);
    expect_error(client.accrue(request.clone()).await, Code::Unavailable, "STORE_UNAVAILABLE");
    // Reads still work, and show nothing of the failed call (the cache was not updated either).
    let balance = balance_of(&mut client, customer.clone()).await;
    assert_eq!(balance.pending, "100");
    assert_eq!(full_ledger(&mut client, customer.clone()).await.len(), 1);

    // The till retries after the store is back: applied once.
    store.failing.store(false, Ordering::SeqCst);
    let applied = client.accrue(request.clone()).await.expect("retry").into_inner();
    assert_eq!(applied.earned, "500");
    assert_eq!(client.accrue(request).await.expect("replay").into_inner(), applied);
    assert_eq!(full_ledger(&mut client, customer).await.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn calls_beyond_the_in_flight_limit_are_refused_not_queued() {
    let (server, store) = faulty_server(|config| config.limits.in_flight_max = 4).await;
    // Close the gate: every commit waits, so four accrues stay in flight.
    let closed = store.gate.write().await;
    let mut waiting = Vec::new();
    for index in 0..4 {
        let mut client = server.client().await;
        let request = accrue(&format!("W{index}"), card(&format!("77770000{index}")), vec![line(1, "x", "1", "100.00")]);
        waiting.push(tokio::spawn(async move { client.accrue(request).await }));
    }
    wait_for_commits_at_the_gate(&store, 4).await;
    let mut client = server.client().await;
    let status = expect_error(
        client.accrue(accrue("X", card("88880000"), vec![line(1, "x", "1", "100.00")])).await,
        Code::ResourceExhausted,
        "OVERLOADED",
    );
    assert!(status.message().contains("in flight"), "{}", status.message());
    drop(closed);
    for call in waiting {
        call.await.expect("task").expect("the admitted calls complete");
    }
    // With the load gone, the refused call goes through.
    client.accrue(accrue("X", card("88880000"), vec![line(1, "x", "1", "100.00")])).await.expect("admitted now");
    server.stop().await;
}

#[tokio::test]
async fn health_follows_the_store() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let (server, store) = faulty_server(|_| {}).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr)).expect("uri").connect().await.expect("connect");
    let mut health = HealthClient::new(channel);
    let status = |service: &str| HealthCheckRequest { service: service.into() };
    let serving = ServingStatus::Serving as i32;
    for service in ["", "loyalty.v1.LoyaltyService", "loyalty.admin.v1.ProgramAdmin"] {
        assert_eq!(health.check(status(service)).await.expect("check").into_inner().status, serving, "{service}");
    }

    store.failing.store(true, Ordering::SeqCst);
    let checks = || {
        let mut health = health.clone();
        async move { health.check(status("")).await.expect("check").into_inner().status }
    };
    let seen = eventually(std::time::Duration::from_secs(5), "health follows the store", checks, |now| *now != serving).await;
    assert_eq!(seen, ServingStatus::NotServing as i32, "health turns NOT_SERVING when the store refuses writes");
    for service in ["loyalty.v1.LoyaltyService", "loyalty.admin.v1.ProgramAdmin"] {
        assert_eq!(health.check(status(service)).await.expect("check").into_inner().status, ServingStatus::NotServing as i32, "{service}");
    }
    store.failing.store(false, Ordering::SeqCst);
    server.stop().await;
}

/// Waits (at most 5 s) until `count` commits wait at the store's gate.
async fn wait_for_commits_at_the_gate(store: &FaultyStore, count: usize) {
    let waiting = || async { store.waiting.load(Ordering::SeqCst) };
    eventually(std::time::Duration::from_secs(5), "commits at the gate", waiting, |waiting| *waiting == count).await;
}

/// A stopping engine shuts its store only after the last call inside it: hyper runs each stream as
/// a task of its own, so a call can still be committing when the server has returned (as seen under
/// SIGTERM: "all calls drained", then "the store is shut down" for calls already in the ledger).
#[tokio::test]
async fn the_store_outlives_a_call_still_inside_the_engine_when_the_server_has_returned() {
    let (server, store) = faulty_server(|_| {}).await;
    let mut client = server.client().await;
    let customer = card("66660001");
    let closed = store.gate.write().await;
    let mut till = server.client().await;
    let held = tokio::spawn({
        let customer = customer.clone();
        async move { till.accrue(accrue("S1", customer, vec![line(1, "x", "1", "10000.00")])).await }
    });
    wait_for_commits_at_the_gate(&store, 1).await;
    assert_eq!(server.engine.calls().count(), 1, "the held call is inside the engine");

    // What the binary does once its server has returned: close, wait for the calls, shut the store.
    let mut stopping = tokio::spawn({
        let engine = Arc::clone(&server.engine);
        async move { engine.close_after_calls(std::time::Duration::from_secs(30)).await }
    });
    while !server.engine.calls().is_closed() {
        tokio::task::yield_now().await;
    }
    let refused = expect_error(client.get_account(get_account(customer.clone())).await, Code::Unavailable, "SHUTTING_DOWN");
    assert!(refused.message().contains("shutting down"), "{refused:?}");
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), &mut stopping).await.is_err(),
        "the store is not shut while a call is inside the engine"
    );
    assert!(!store.shut_under_a_commit.load(Ordering::SeqCst));

    drop(closed);
    let answer = held.await.expect("task").expect("the held call commits and is answered").into_inner();
    assert_eq!(answer.earned, "100");
    assert_eq!(stopping.await.expect("stop task"), 0, "no call left behind");
    assert!(!store.shut_under_a_commit.load(Ordering::SeqCst), "the store was shut only after the commit");
    server.stop().await;
}
