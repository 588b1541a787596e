//! Test support: starts the real engine on a loopback port with a temporary data directory and a
//! manual clock, and builds requests. Integration tests live in `e2e/`, compiled into one binary.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use loyalty_engine::clock::{Clock, ManualClock, SystemClock};
use loyalty_engine::config::{Config, ProgramConfig};
use loyalty_engine::engine::Engine;
use loyalty_engine::ids::UuidIds;
use loyalty_engine::programs::Programs;
use loyalty_proto::admin::program_admin_client::ProgramAdminClient;
use loyalty_proto::v1 as pb;
use loyalty_proto::v1::loyalty_service_client::LoyaltyServiceClient;
use loyalty_store::Store;
use loyalty_store::embedded::{Durability, EmbeddedStore};
use loyalty_store::scylla::{ScyllaConfig, ScyllaStore};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use pb::customer_ref::Id;

/// The program the tests use: the supermarket defaults (1%, next-day pending, 24 months), with a
/// receipt cap of 50% so that cap and balance limits can both be seen.
pub const PROGRAM: &str = "shop";
pub const STORE: &str = "store-1";
pub const TILL: &str = "till-1";

/// Test engines do not shed on CPU saturation (`limits.scheduling_delay_max_ms` 0): debug builds
/// in a parallel test run saturate two cores, and the tests expect their calls to land. Shedding
/// has its own test, which turns it on.
pub const UNDER_TEST_SCHEDULING_DELAY_MAX_MS: u64 = 0;
/// The same for engine processes: a `[limits]` section for their config files.
pub const UNDER_TEST_LIMITS_TOML: &str = "[limits]\nscheduling_delay_max_ms = 0\n";

/// The secret of the test credential `test-all` (every scope) that every test engine gets for each
/// of its programs. A constant, so engine processes started by tests can be given its digest.
pub const TEST_SECRET: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";

/// The test credential's API key for `program`.
pub fn test_key(program: &str) -> String {
    format!("lk1/{program}/test-all/{TEST_SECRET}")
}

/// The test credential of each program: every scope, no store or operation limits.
pub fn test_credentials(programs: &[String]) -> std::collections::HashMap<String, Vec<loyalty_engine::auth::Credential>> {
    use loyalty_engine::auth::Scope;
    programs
        .iter()
        .map(|program| {
            let credential = loyalty_engine::auth::Credential {
                id: "test-all".into(),
                label: "tests".into(),
                scopes: vec![Scope::Checkout, Scope::ReadOnly, Scope::PartnerIssueCertificates, Scope::CustomerApp, Scope::Admin],
                stores: Vec::new(),
                operations: Vec::new(),
                rate_per_second: 0,
                burst: 0,
                key_sha256: loyalty_engine::auth::keys::digest(&test_key(program)),
                client_cert_sha256: None,
                created_at: start_time(),
                created_by: "tests".into(),
                revoked_at: None,
                revoked_by: None,
            };
            (program.clone(), vec![credential])
        })
        .collect()
}

/// Writes a credentials file with the test credential of each program, for engine processes.
pub fn write_test_credentials(path: &std::path::Path, programs: &[&str]) {
    let text: String = programs
        .iter()
        .map(|program| {
            format!(
                "[[credentials]]\nprogram = \"{program}\"\nid = \"test-all\"\nscopes = [\"checkout\", \"read_only\", \"admin\"]\nkey_sha256 = \"{}\"\n",
                loyalty_engine::auth::keys::digest(&test_key(program))
            )
        })
        .collect();
    std::fs::write(path, text).expect("write the credentials file");
}

/// Adds an API key to every call, as a till integration does.
#[derive(Clone, Debug)]
pub struct ApiKey(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl ApiKey {
    pub fn new(key: Option<&str>) -> Self {
        ApiKey(key.map(|key| format!("Bearer {key}").parse().expect("an ASCII key")))
    }
}

impl tonic::service::Interceptor for ApiKey {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A checkout client that sends an API key.
pub type Client = LoyaltyServiceClient<InterceptedService<Channel, ApiKey>>;
/// An admin client that sends an API key.
pub type Admin = ProgramAdminClient<InterceptedService<Channel, ApiKey>>;

/// 2026-03-10 06:00 UTC, 11:00 in Almaty.
pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 6, 0, 0).single().expect("valid start time")
}

/// The test program's configuration.
/// Spending needs no customer code here, so that the checkout tests can spend by phone; the
/// security tests (`e2e/security.rs`) run the default policy.
pub fn shop_program() -> ProgramConfig {
    ProgramConfig {
        id: PROGRAM.into(),
        redeem_cap_percent: rust_decimal::Decimal::from(50),
        customer_code: loyalty_core::presence::CodeRequirement::None,
        ..ProgramConfig::default()
    }
}

/// A running engine and what a test needs to drive it.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub engine: Arc<Engine>,
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    credits: JoinHandle<()>,
}

impl TestServer {
    /// The engine with the test program, on the embedded store with fsync.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}, |store| store).await
    }

    /// Lets a test change the configuration and wrap the store (to inject faults). A `[tls]`
    /// section set here turns TLS on (then `client` and `admin`, which speak plaintext, do not
    /// connect: the test builds its own TLS channel to `addr`).
    pub async fn start_with(configure: impl FnOnce(&mut Config), wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config { data_dir: dir.path().to_path_buf(), programs: vec![shop_program()], ..Config::default() };
        config.storage.durability = Durability::Fsync;
        config.limits.scheduling_delay_max_ms = UNDER_TEST_SCHEDULING_DELAY_MAX_MS;
        configure(&mut config);
        let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(config.embedded_store()).expect("open store"));
        TestServer::serve(config, dir, wrap(embedded)).await
    }

    /// The engine with the test program on a store the test made (e.g. ScyllaDB through a proxy).
    pub async fn start_on(store: Arc<dyn Store>, configure: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config { data_dir: dir.path().to_path_buf(), programs: vec![shop_program()], ..Config::default() };
        config.limits.scheduling_delay_max_ms = UNDER_TEST_SCHEDULING_DELAY_MAX_MS;
        configure(&mut config);
        TestServer::serve(config, dir, store).await
    }

    async fn serve(config: Config, dir: tempfile::TempDir, store: Arc<dyn Store>) -> TestServer {
        let programs = Programs::from_config(&config).expect("valid test config");
        let clock = Arc::new(ManualClock::new(start_time()));
        let engine = Arc::new(Engine::new(Arc::clone(&store), programs, clock.clone(), Arc::new(UuidIds), 100_000));
        if let Some(dir) = &config.storage.backup_dir {
            engine.set_backups(loyalty_engine::backups::Backups::new(dir.clone(), config.storage.backups_kept));
        }
        engine.bootstrap_rules().await.expect("rules load");
        let programs: Vec<String> = config.programs.iter().map(|program| program.id.clone()).collect();
        engine.bootstrap_access(&test_credentials(&programs)).await.expect("credentials load");
        let credits = loyalty_engine::background::spawn_credit_applier(Arc::clone(&engine), std::time::Duration::from_millis(200));
        let tls = config.tls.server_config().expect("the test's TLS files load");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(loyalty_engine::server::serve(listener, Arc::clone(&engine), config.limits.clone(), stopped, tls));
        TestServer { addr, clock, engine, store, dir, stop: Some(stop), task: Some(task), credits }
    }

    /// A client with the test credential of the test program.
    pub async fn client(&self) -> Client {
        connect(self.addr).await
    }

    pub async fn admin(&self) -> Admin {
        admin_with(self.addr, Some(&test_key(PROGRAM))).await
    }

    /// Stops as the binary does: refuses new calls, stops the server, waits for the calls still
    /// inside the engine, then flushes the store.
    pub async fn stop(mut self) {
        self.engine.calls().close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.credits.abort();
        let left = self.engine.close_after_calls(std::time::Duration::from_secs(30)).await;
        assert_eq!(left, 0, "calls still inside the engine 30 s after the server stopped");
    }
}

/// A client on a fresh connection, with the test program's test credential.
pub async fn connect(addr: SocketAddr) -> Client {
    connect_with(addr, Some(&test_key(PROGRAM))).await
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect to engine")
}

/// A client on a fresh connection that sends `key` (or none).
pub async fn connect_with(addr: SocketAddr, key: Option<&str>) -> Client {
    LoyaltyServiceClient::with_interceptor(channel(addr).await, ApiKey::new(key))
}

/// An admin client on a fresh connection that sends `key` (or none).
pub async fn admin_with(addr: SocketAddr, key: Option<&str>) -> Admin {
    ProgramAdminClient::with_interceptor(channel(addr).await, ApiKey::new(key))
}

pub fn card(number: &str) -> Option<pb::CustomerRef> {
    Some(pb::CustomerRef { id: Some(Id::CardNumber(number.into())) })
}

pub fn phone(number: &str) -> Option<pb::CustomerRef> {
    Some(pb::CustomerRef { id: Some(Id::Phone(number.into())) })
}

/// A basket line of `quantity` at `unit_price`, totalled exactly.
pub fn line(line_no: u32, sku: &str, quantity: &str, unit_price: &str) -> pb::BasketLine {
    let quantity_value: rust_decimal::Decimal = quantity.parse().expect("quantity");
    let price: rust_decimal::Decimal = unit_price.parse().expect("price");
    let mut total = quantity_value * price;
    total.rescale(2);
    pb::BasketLine {
        line_no,
        sku: sku.into(),
        category: "grocery".into(),
        quantity: quantity.into(),
        unit_price: unit_price.into(),
        line_total: total.to_string(),
        excise: false,
        promo_price: false,
        brand: String::new(),
    }
}

pub fn excise(mut line: pb::BasketLine) -> pb::BasketLine {
    line.excise = true;
    line
}

pub fn promo(mut line: pb::BasketLine) -> pb::BasketLine {
    line.promo_price = true;
    line
}

pub fn enroll(request_id: &str, phone_number: &str, card_number: &str) -> pb::EnrollRequest {
    pb::EnrollRequest {
        program_id: PROGRAM.into(),
        store_id: STORE.into(),
        till_id: TILL.into(),
        request_id: request_id.into(),
        phone: phone_number.into(),
        card_number: card_number.into(),
        ..Default::default()
    }
}

pub fn accrue(receipt_id: &str, customer: Option<pb::CustomerRef>, lines: Vec<pb::BasketLine>) -> pb::AccrueRequest {
    pb::AccrueRequest {
        program_id: PROGRAM.into(),
        store_id: STORE.into(),
        till_id: TILL.into(),
        receipt_id: receipt_id.into(),
        customer,
        lines,
        ..Default::default()
    }
}

pub fn authorize(receipt_id: &str, customer: Option<pb::CustomerRef>, lines: Vec<pb::BasketLine>, spend: &str) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        program_id: PROGRAM.into(),
        store_id: STORE.into(),
        till_id: TILL.into(),
        receipt_id: receipt_id.into(),
        customer,
        lines,
        spend_points: spend.into(),
        hold_ttl_seconds: 0,
        ..Default::default()
    }
}

pub fn redeem(
    receipt_id: &str,
    customer: Option<pb::CustomerRef>,
    points: &str,
    hold_id: &str,
    lines: Vec<pb::BasketLine>,
) -> pb::RedeemRequest {
    pb::RedeemRequest {
        program_id: PROGRAM.into(),
        store_id: STORE.into(),
        till_id: TILL.into(),
        receipt_id: receipt_id.into(),
        customer,
        points: points.into(),
        hold_id: hold_id.into(),
        lines,
        customer_code: String::new(),
    }
}

pub fn refund(receipt_id: &str, refund_id: &str, lines: &[(u32, &str)]) -> pb::RefundRequest {
    pb::RefundRequest {
        program_id: PROGRAM.into(),
        store_id: STORE.into(),
        till_id: TILL.into(),
        receipt_id: receipt_id.into(),
        refund_id: refund_id.into(),
        lines: lines.iter().map(|(line_no, quantity)| pb::RefundLine { line_no: *line_no, quantity: (*quantity).into() }).collect(),
        reason: String::new(),
        occurred_at: None,
    }
}

pub fn reverse(receipt_id: &str) -> pb::ReverseRequest {
    pb::ReverseRequest {
        program_id: PROGRAM.into(),
        store_id: STORE.into(),
        till_id: TILL.into(),
        receipt_id: receipt_id.into(),
        reason: String::new(),
    }
}

pub fn get_account(customer: Option<pb::CustomerRef>) -> pb::GetAccountRequest {
    pb::GetAccountRequest { program_id: PROGRAM.into(), customer }
}

/// Reads every ledger entry of a customer, newest first, following page tokens.
pub async fn full_ledger(client: &mut Client, customer: Option<pb::CustomerRef>) -> Vec<pb::LedgerEntry> {
    let mut entries = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_transactions(pb::ListTransactionsRequest {
                program_id: PROGRAM.into(),
                customer: customer.clone(),
                page_size: 7,
                page_token: token,
            })
            .await
            .expect("list transactions")
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return entries;
        }
        token = page.next_page_token;
    }
}

/// Parses a decimal from a response.
pub fn dec(value: &str) -> rust_decimal::Decimal {
    value.parse().unwrap_or_else(|_| panic!("response decimal {value:?}"))
}

/// The balance part of a GetAccount response.
pub async fn balance_of(client: &mut Client, customer: Option<pb::CustomerRef>) -> pb::Balance {
    client.get_account(get_account(customer)).await.expect("get account").into_inner().balance.expect("balance")
}

/// The wall clock, put ahead by hand: the clock of the ScyllaDB stores the tests connect.
///
/// The engine's own clock in tests is a [`ManualClock`] at a fixed date, which a ScyllaDB store
/// cannot use: the cluster compares the store's delete timestamps with its own clock, and relay
/// marks and outbox seqs order what other engines wrote. So the store follows real time, and a test
/// puts this clock ahead instead of sleeping: past `relay_settle` to read every event relayed so
/// far, past `relay_grace` for a recovery pass to see a minute of relay marks as over.
#[derive(Debug, Default)]
pub struct AheadClock {
    ahead: Mutex<chrono::Duration>,
}

impl AheadClock {
    /// The wall clock itself, until put ahead.
    pub fn new() -> Self {
        AheadClock::default()
    }

    /// Puts the clock `by` further ahead of the wall clock.
    pub fn advance(&self, by: std::time::Duration) {
        let by = chrono::Duration::from_std(by).expect("a test's step fits a chrono duration");
        *self.ahead.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += by;
    }
}

impl Clock for AheadClock {
    fn now(&self) -> DateTime<Utc> {
        SystemClock.now() + *self.ahead.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Connects a ScyllaDB store on `config` that tells the time by the wall clock.
pub async fn connect_scylla(config: ScyllaConfig) -> Result<Arc<ScyllaStore>, loyalty_store::StoreError> {
    ScyllaStore::connect(config, Arc::new(SystemClock)).await
}

/// Migrates `config`'s keyspace with the schema files in `dir`, recorded at the wall clock's time.
pub async fn migrate_scylla(config: &ScyllaConfig, dir: &std::path::Path) -> Result<Vec<String>, loyalty_store::StoreError> {
    loyalty_store::scylla::migrate(config, dir, &SystemClock).await
}

/// Polls `read` every 25 ms until `done` holds of its result; panics after `within`.
pub async fn eventually<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    within: std::time::Duration,
    what: &str,
    mut read: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        let value = read().await;
        if done(&value) {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: not within {within:?}; last seen: {value:?}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// A ReplaceCard of the test program at the test till (no customer code).
pub fn replace(request_id: &str, customer: Option<pb::CustomerRef>, new_card: &str, old_card: &str, fee: &str) -> pb::ReplaceCardRequest {
    pb::ReplaceCardRequest {
        program_id: PROGRAM.into(),
        store_id: STORE.into(),
        till_id: TILL.into(),
        request_id: request_id.into(),
        customer,
        new_card_number: new_card.into(),
        old_card_number: old_card.into(),
        card_fee: fee.into(),
        customer_code: String::new(),
    }
}
