//! `loyalty-load`: drives a running engine (or, with `--floor`, the echo server) with checkout
//! workloads and prints a ghz-like summary; `--json` writes it with the latency distribution.
//!
//! - Closed model (default): `--concurrency` workers share `--connections` HTTP/2 connections; each
//!   sends its next call when the previous one answered.
//! - Open model (`--rps`): calls start at a fixed rate whatever the answers do; latency is measured
//!   from each call's *intended* start, so a stall shows up in the percentiles instead of silently
//!   slowing the sender (coordinated omission). `--concurrency` bounds the calls in flight.
//! - `--duration` (after `--warmup`) or `--count` ends the run.
//! - Every mutating call has a unique receipt ID; customers are cards `LT0000000000`.. spread over
//!   `--customers`, with 10% of calls on 10 hot customers.
//! - `--floor`: the same workload shapes sent to `loyalty-echo` as `Echo` calls of the same encoded
//!   request and response sizes: what gRPC itself costs here.
//!
//! Exits non-zero if any call failed.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use loyalty_proto::bench::EchoRequest;
use loyalty_proto::bench::echo_client::EchoClient;
use loyalty_proto::v1 as pb;
use loyalty_proto::v1::loyalty_service_client::LoyaltyServiceClient;
use prost::Message;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Earn on a 3-line receipt.
    Accrue,
    /// Quote a 3-line receipt (no side effects).
    Authorize,
    /// Authorize with a hold of 5 points.
    AuthorizeHold,
    /// Spend 1 point directly on a 3-line receipt.
    Redeem,
    /// A whole checkout: authorize with hold -> redeem (capture) -> accrue.
    Checkout,
}

/// Adds the API key to every call, as a till integration does.
#[derive(Clone, Debug)]
struct ApiKey(Option<tonic::metadata::AsciiMetadataValue>);

impl ApiKey {
    fn new(key: Option<&str>) -> anyhow::Result<Self> {
        Ok(ApiKey(key.map(|key| format!("Bearer {key}").parse()).transpose().map_err(|_| anyhow::anyhow!("--api-key: not ASCII"))?))
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

#[derive(Debug, Parser)]
#[command(name = "loyalty-load", about = "Load driver for loyalty-engine: closed or open model, ghz-like summary")]
struct Args {
    /// Engine address (or echo server address with --floor).
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: String,
    #[arg(long, default_value = "demo")]
    program: String,
    /// The API key sent with every call (`authorization: Bearer`); `loyalty-engine keygen` makes one.
    #[arg(long, env = "LOYALTY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[arg(long, value_enum, default_value = "accrue")]
    workload: Workload,
    /// Closed model: concurrent workers. Open model: most calls in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// HTTP/2 connections shared by the workers.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Open model: start this many workload iterations per second, whatever the answers do.
    #[arg(long)]
    rps: Option<f64>,
    /// Measured seconds (ignored with --count).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many workload iterations (after warm-up).
    #[arg(long)]
    count: Option<u64>,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Distinct customers (cards LT0000000000...).
    #[arg(long, default_value_t = 10_000)]
    customers: u64,
    /// Enrol and fund the customers first (1,000 points each; spendable at once only if the
    /// program's pending rule is "none").
    #[arg(long)]
    seed: bool,
    /// Send echo calls of the workload's message sizes to an echo server (`loyalty-echo`).
    #[arg(long)]
    floor: bool,
    /// Write the summary and the latency distribution as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Print the echo request standing for the workload's first call (protobuf JSON, as ghz's
    /// `--data` for `loyalty.bench.v1.Echo/Echo`) and exit: the floor under ghz.
    #[arg(long)]
    echo_request: bool,
    /// Write the `--customers` as a `loyalty-engine import` file (docs/import.md) here and exit:
    /// the scale benchmark's seed. Each has this run's phone and card and `--buckets` buckets of
    /// 100 points, spendable at once, expiring on the first of consecutive months from 2030-01.
    #[arg(long, value_name = "FILE")]
    write_import: Option<std::path::PathBuf>,
    /// Buckets (so ledger entries) per customer in `--write-import`.
    #[arg(long, default_value_t = 10)]
    buckets: u32,
}

// ---------------------------------------------------------------------------------------------
// Requests

fn card(index: u64) -> Option<pb::CustomerRef> {
    Some(pb::CustomerRef { id: Some(pb::customer_ref::Id::CardNumber(format!("LT{index:010}"))) })
}

fn basket() -> Vec<pb::BasketLine> {
    let line = |line_no: u32, sku: &str, quantity: &str, price: &str, total: &str| pb::BasketLine {
        line_no,
        sku: sku.into(),
        category: "grocery".into(),
        quantity: quantity.into(),
        unit_price: price.into(),
        line_total: total.into(),
        excise: false,
        promo_price: false,
        brand: String::new(),
    };
    vec![
        line(1, "milk-1l", "2", "450.00", "900.00"),
        line(2, "bread", "1", "250.00", "250.00"),
        line(3, "cheese-200g", "1", "1850.00", "1850.00"),
    ]
}

/// The requests of one workload iteration for one receipt and customer.
struct Requests<'a> {
    program: &'a str,
    receipt: &'a str,
    customer: Option<pb::CustomerRef>,
}

impl Requests<'_> {
    fn authorize(&self, spend: &str) -> pb::AuthorizeRequest {
        pb::AuthorizeRequest {
            program_id: self.program.into(),
            store_id: "load".into(),
            till_id: "till".into(),
            receipt_id: self.receipt.into(),
            customer: self.customer.clone(),
            lines: basket(),
            spend_points: spend.into(),
            hold_ttl_seconds: 0,
            ..Default::default()
        }
    }

    fn accrue(&self) -> pb::AccrueRequest {
        pb::AccrueRequest {
            program_id: self.program.into(),
            store_id: "load".into(),
            till_id: "till".into(),
            receipt_id: self.receipt.into(),
            customer: self.customer.clone(),
            lines: basket(),
            ..Default::default()
        }
    }

    fn redeem(&self, hold_id: &str) -> pb::RedeemRequest {
        pb::RedeemRequest {
            program_id: self.program.into(),
            store_id: "load".into(),
            till_id: "till".into(),
            receipt_id: self.receipt.into(),
            customer: self.customer.clone(),
            points: if hold_id.is_empty() { "1".into() } else { "5".into() },
            hold_id: hold_id.into(),
            lines: if hold_id.is_empty() { basket() } else { Vec::new() },
            customer_code: String::new(),
        }
    }
}

/// Encoded sizes of typical answers, for the echo floor. Built like the engine's answers to the
/// workload's requests (36-character IDs, a 3-line basket, a full balance).
fn typical_response_bytes(rpc: &str) -> u32 {
    let id = "0".repeat(36);
    let balance = Some(pb::Balance {
        available: "1234".into(),
        held: "5".into(),
        spendable: "1229".into(),
        pending: "0".into(),
        debt: "0".into(),
        balance: "1234".into(),
        currency: "KZT".into(),
    });
    let rule = |points: &str| pb::RulePoints { rule_id: "base".into(), label: "cashback 1%".into(), points: points.into() };
    let lines: Vec<pb::LineEarn> = (1..=3)
        .map(|line_no| pb::LineEarn {
            line_no,
            base: "900.00".into(),
            points: "9".into(),
            reason: "cashback 1%".into(),
            applied: vec![rule("9")],
        })
        .collect();
    let at = Some(prost_types_timestamp());
    let bytes = match rpc {
        "Authorize" => pb::AuthorizeResponse {
            account_id: id.clone(),
            lines,
            earn_total: "30".into(),
            max_spend: "1229".into(),
            max_spend_limit: 2,
            balance,
            hold: Some(pb::Hold { hold_id: id.clone(), amount: "5".into(), expires_at: at }),
            transaction_id: id,
            rules: vec![rule("30")],
            spend_cap_percent: "100".into(),
            spend_eligible_amount: "3000.00".into(),
            spend_explanation: "the customer's 1229 spendable points".into(),
            tier: "base".into(),
            program_version: 1,
        }
        .encoded_len(),
        "Redeem" => pb::RedeemResponse { transaction_id: id.clone(), account_id: id, redeemed: "5".into(), released: "0".into(), balance }
            .encoded_len(),
        _ => pb::AccrueResponse {
            transaction_id: id.clone(),
            account_id: id,
            lines,
            earned: "30".into(),
            paid_amount: "3000.00".into(),
            points_spent: "0".into(),
            available_from: at,
            expires_at: at,
            balance,
            hold_released: "0".into(),
            rules: vec![rule("30")],
            tier: "base".into(),
            program_version: 1,
            change_points: "0".into(),
        }
        .encoded_len(),
    };
    bytes as u32
}

fn prost_types_timestamp() -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: 1_800_000_000, nanos: 0 }
}

// ---------------------------------------------------------------------------------------------
// Tallies

#[derive(Default)]
struct Tally {
    /// Latency of the calls that succeeded, per RPC.
    histograms: BTreeMap<&'static str, Histogram<u64>>,
    /// Latency of the calls that failed (shed, rate-limited, refused), kept apart so that overload
    /// runs show what the admitted calls got.
    refused: BTreeMap<&'static str, Histogram<u64>>,
    codes: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, rpc: &'static str, elapsed: Duration, code: tonic::Code) {
        let histograms = if code == tonic::Code::Ok { &mut self.histograms } else { &mut self.refused };
        let histogram = histograms.entry(rpc).or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"));
        let _ = histogram.record((elapsed.as_micros() as u64).max(1));
        *self.codes.entry(format!("{code:?}")).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        fn add(into: &mut BTreeMap<&'static str, Histogram<u64>>, from: BTreeMap<&'static str, Histogram<u64>>) {
            for (rpc, histogram) in from {
                match into.get_mut(rpc) {
                    Some(mine) => {
                        let _ = mine.add(&histogram);
                    }
                    None => {
                        into.insert(rpc, histogram);
                    }
                }
            }
        }
        add(&mut self.histograms, other.histograms);
        add(&mut self.refused, other.refused);
        for (code, count) in other.codes {
            *self.codes.entry(code).or_default() += count;
        }
    }

    fn failed(&self) -> u64 {
        self.codes.iter().filter(|(code, _)| code.as_str() != "Ok").map(|(_, count)| count).sum()
    }
}

/// Live counters for the progress line.
#[derive(Default)]
struct Progress {
    calls: AtomicU64,
    errors: AtomicU64,
}

// ---------------------------------------------------------------------------------------------
// Calls

#[derive(Clone)]
enum Client {
    Engine(LoyaltyServiceClient<InterceptedService<Channel, ApiKey>>),
    Floor(EchoClient<Channel>),
}

/// One workload iteration. `started` is when it should have started (the open model's intended
/// time, or now); every RPC is timed, and a checkout also as a whole.
async fn iteration(client: &mut Client, workload: Workload, requests: &Requests<'_>, started: Instant, tally: Option<&mut Tally>) -> bool {
    let mut local = Tally::default();
    let ok = match client {
        Client::Engine(engine) => engine_iteration(engine, workload, requests, started, &mut local).await,
        Client::Floor(echo) => floor_iteration(echo, workload, requests, started, &mut local).await,
    };
    if let Some(tally) = tally {
        tally.merge(local);
    }
    ok
}

async fn timed<T>(
    local: &mut Tally,
    rpc: &'static str,
    since: Instant,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Option<T> {
    let result = call.await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    local.record(rpc, since.elapsed(), code);
    result.ok().map(tonic::Response::into_inner)
}

async fn engine_iteration(
    client: &mut LoyaltyServiceClient<InterceptedService<Channel, ApiKey>>,
    workload: Workload,
    requests: &Requests<'_>,
    started: Instant,
    local: &mut Tally,
) -> bool {
    match workload {
        Workload::Accrue => timed(local, "Accrue", started, client.accrue(requests.accrue())).await.is_some(),
        Workload::Authorize => timed(local, "Authorize", started, client.authorize(requests.authorize(""))).await.is_some(),
        Workload::AuthorizeHold => timed(local, "Authorize", started, client.authorize(requests.authorize("5"))).await.is_some(),
        Workload::Redeem => timed(local, "Redeem", started, client.redeem(requests.redeem(""))).await.is_some(),
        Workload::Checkout => {
            let Some(authorized) = timed(local, "Authorize", started, client.authorize(requests.authorize("5"))).await else {
                return false;
            };
            let hold_id = authorized.hold.map(|hold| hold.hold_id).unwrap_or_default();
            let step = Instant::now();
            if timed(local, "Redeem", step, client.redeem(requests.redeem(&hold_id))).await.is_none() {
                return false;
            }
            let step = Instant::now();
            let done = timed(local, "Accrue", step, client.accrue(requests.accrue())).await.is_some();
            local.record("Checkout", started.elapsed(), if done { tonic::Code::Ok } else { tonic::Code::Unknown });
            done
        }
    }
}

/// The echo call that stands for `rpc` sent with a request of `request_bytes` (encoded).
fn echo(request_bytes: usize, rpc: &str) -> EchoRequest {
    EchoRequest { payload: vec![0x5a; request_bytes], response_bytes: typical_response_bytes(rpc) }
}

/// `--echo-request`: the echo call standing for the workload's first call, as the protobuf JSON
/// ghz takes for its `data` (bytes in base64), so ghz measures the floor with the same sizes.
fn echo_request_json(workload: Workload, program: &str) -> String {
    use base64::Engine as _;
    let requests = Requests { program, receipt: &format!("ld-{}-0-0", "0".repeat(13)), customer: card(0) };
    let request = match workload {
        Workload::Accrue => echo(requests.accrue().encoded_len(), "Accrue"),
        Workload::Authorize | Workload::AuthorizeHold | Workload::Checkout => echo(requests.authorize("5").encoded_len(), "Authorize"),
        Workload::Redeem => echo(requests.redeem("").encoded_len(), "Redeem"),
    };
    format!(
        "{{\"payload\":\"{}\",\"response_bytes\":{}}}",
        base64::engine::general_purpose::STANDARD.encode(&request.payload),
        request.response_bytes
    )
}

async fn floor_iteration(
    client: &mut EchoClient<Channel>,
    workload: Workload,
    requests: &Requests<'_>,
    started: Instant,
    local: &mut Tally,
) -> bool {
    match workload {
        Workload::Accrue => timed(local, "Accrue", started, client.echo(echo(requests.accrue().encoded_len(), "Accrue"))).await.is_some(),
        Workload::Authorize | Workload::AuthorizeHold => {
            timed(local, "Authorize", started, client.echo(echo(requests.authorize("5").encoded_len(), "Authorize"))).await.is_some()
        }
        Workload::Redeem => timed(local, "Redeem", started, client.echo(echo(requests.redeem("").encoded_len(), "Redeem"))).await.is_some(),
        Workload::Checkout => {
            let steps = [
                ("Authorize", requests.authorize("5").encoded_len()),
                ("Redeem", requests.redeem(&"0".repeat(41)).encoded_len()),
                ("Accrue", requests.accrue().encoded_len()),
            ];
            let mut step = started;
            for (rpc, size) in steps {
                if timed(local, rpc, step, client.echo(echo(size, rpc))).await.is_none() {
                    return false;
                }
                step = Instant::now();
            }
            local.record("Checkout", started.elapsed(), tonic::Code::Ok);
            true
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seeding

/// The customers `--seed` enrols, as an import file: the same phones and cards, `buckets` buckets
/// of 100 points each (one `Opening` ledger entry each).
fn write_import(path: &std::path::Path, customers: u64, buckets: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let buckets: Vec<String> = (0..buckets)
        .map(|month| format!(r#"{{"points":"100","expires_at":"{}-{:02}-01T00:00:00Z"}}"#, 2030 + month / 12, month % 12 + 1))
        .collect();
    let buckets = buckets.join(",");
    for index in 0..customers {
        writeln!(out, r#"{{"id":"lt-{index}","phone":"+7700{index:07}","cards":["LT{index:010}"],"purchases":10,"buckets":[{buckets}]}}"#)?;
    }
    out.flush()?;
    Ok(())
}

async fn seed(client: &mut LoyaltyServiceClient<InterceptedService<Channel, ApiKey>>, args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    for index in 0..args.customers {
        let enroll = pb::EnrollRequest {
            program_id: args.program.clone(),
            store_id: "load".into(),
            till_id: "seed".into(),
            request_id: format!("seed-enroll-{index}"),
            phone: format!("+7700{index:07}"),
            card_number: format!("LT{index:010}"),
            ..Default::default()
        };
        match client.enroll(enroll).await {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::AlreadyExists => {}
            Err(status) => return Err(status).context("seeding: enroll"),
        }
        let fund = pb::AccrueRequest {
            program_id: args.program.clone(),
            store_id: "load".into(),
            till_id: "seed".into(),
            receipt_id: format!("seed-fund-{index}"),
            customer: card(index),
            lines: vec![pb::BasketLine {
                line_no: 1,
                sku: "fund".into(),
                category: "seed".into(),
                quantity: "1".into(),
                unit_price: "100000.00".into(),
                line_total: "100000.00".into(),
                excise: false,
                promo_price: false,
                brand: String::new(),
            }],
            ..Default::default()
        };
        client.accrue(fund).await.context("seeding: fund")?;
    }
    eprintln!("seeded {} customers in {:.1}s", args.customers, started.elapsed().as_secs_f64());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Customers

/// A small xorshift generator: each worker draws its customers without locks.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// 10% of draws on the 10 hot customers, the rest uniform.
    fn customer(&mut self, customers: u64) -> u64 {
        if self.next().is_multiple_of(10) { self.next() % customers.min(10) } else { self.next() % customers }
    }
}

// ---------------------------------------------------------------------------------------------
// Runs

struct Plan {
    warmup_end: Instant,
    end: Instant,
    count: Option<u64>,
    issued: AtomicU64,
    stop: AtomicBool,
}

impl Plan {
    /// Claims the next iteration; `None` when the run is over. The flag says whether it is measured.
    fn next(&self, now: Instant) -> Option<bool> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let measured = now >= self.warmup_end;
        if measured {
            match self.count {
                Some(count) if self.issued.fetch_add(1, Ordering::Relaxed) >= count => {
                    self.stop.store(true, Ordering::Relaxed);
                    return None;
                }
                Some(_) => {}
                None if now >= self.end => return None,
                None => {}
            }
        }
        Some(measured)
    }
}

async fn closed(args: &Args, clients: &[Client], plan: Arc<Plan>, run: &str, progress: Arc<Progress>) -> anyhow::Result<Tally> {
    let total = Arc::new(Mutex::new(Tally::default()));
    let mut workers = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let mut client = clients[worker % clients.len()].clone();
        let (program, workload, customers, run) = (args.program.clone(), args.workload, args.customers, run.to_owned());
        let (plan, total, progress) = (Arc::clone(&plan), Arc::clone(&total), Arc::clone(&progress));
        workers.push(tokio::spawn(async move {
            let mut rng = Rng::new(worker as u64);
            let mut tally = Tally::default();
            let mut n = 0u64;
            while let Some(measured) = plan.next(Instant::now()) {
                let receipt = format!("ld-{run}-{worker}-{n}");
                n += 1;
                let requests = Requests { program: &program, receipt: &receipt, customer: card(rng.customer(customers)) };
                let ok = iteration(&mut client, workload, &requests, Instant::now(), measured.then_some(&mut tally)).await;
                progress.calls.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Ok(mut total) = total.lock() {
                total.merge(tally);
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let tally = std::mem::take(&mut *total.lock().map_err(|_| anyhow::anyhow!("tally poisoned"))?);
    Ok(tally)
}

async fn open(args: &Args, clients: &[Client], plan: Arc<Plan>, run: &str, rate: f64, progress: Arc<Progress>) -> anyhow::Result<Tally> {
    anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rps must be above 0");
    let total = Arc::new(Mutex::new(Tally::default()));
    let slots = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let runtime = tokio::runtime::Handle::current();
    let (clients, program, workload, customers, run) =
        (clients.to_vec(), args.program.clone(), args.workload, args.customers, run.to_owned());
    // The sender runs on its own OS thread: the tokio timer wakes at millisecond granularity, which
    // would add up to a millisecond of false latency to every call; a thread sleep is far finer.
    let sender = std::thread::spawn(move || {
        let start = Instant::now();
        let mut rng = Rng::new(7);
        let mut calls = Vec::new();
        for n in 0u64.. {
            // The intended start of call n; latency counts from here, not from when it got a slot.
            let intended = start + interval.mul_f64(n as f64);
            std::thread::sleep(intended.saturating_duration_since(Instant::now()));
            let Some(measured) = plan.next(intended) else { break };
            let mut client = clients[n as usize % clients.len()].clone();
            let (program, total, progress, slots) = (program.clone(), Arc::clone(&total), Arc::clone(&progress), Arc::clone(&slots));
            let receipt = format!("ld-{run}-o-{n}");
            let customer = card(rng.customer(customers));
            calls.push(runtime.spawn(async move {
                let Ok(_slot) = slots.acquire_owned().await else { return };
                let requests = Requests { program: &program, receipt: &receipt, customer };
                let mut tally = Tally::default();
                let ok = iteration(&mut client, workload, &requests, intended, measured.then_some(&mut tally)).await;
                progress.calls.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut total) = total.lock() {
                    total.merge(tally);
                }
            }));
        }
        (calls, total)
    });
    let (calls, total) =
        tokio::task::spawn_blocking(move || sender.join()).await?.map_err(|_| anyhow::anyhow!("the sender thread panicked"))?;
    for call in calls {
        call.await?;
    }
    let tally = std::mem::take(&mut *total.lock().map_err(|_| anyhow::anyhow!("tally poisoned"))?);
    Ok(tally)
}

// ---------------------------------------------------------------------------------------------
// Output

fn model(args: &Args) -> String {
    match args.rps {
        Some(rate) => format!("open {rate:.0}/s"),
        None => "closed".into(),
    }
}

fn summary(tally: &Tally, measured: Duration, args: &Args) -> String {
    let mut out = String::new();
    let seconds = measured.as_secs_f64();
    out.push_str(&format!(
        "Summary: {:?}{}, {} model, concurrency {}, connections {}, {:.1}s measured\n",
        args.workload,
        if args.floor { " (echo floor)" } else { "" },
        model(args),
        args.concurrency,
        args.connections,
        seconds
    ));
    for (rpc, histogram) in &tally.histograms {
        let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        out.push_str(&format!(
            "  {rpc:<10} count {:>8}  rps {:>9.1}  avg {:>7.3} ms  p50 {:>7.3}  p90 {:>7.3}  p99 {:>7.3}  p99.9 {:>7.3}  max {:>8.3} ms\n",
            histogram.len(),
            histogram.len() as f64 / seconds,
            histogram.mean() / 1000.0,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            histogram.max() as f64 / 1000.0
        ));
    }
    for (rpc, histogram) in &tally.refused {
        let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        out.push_str(&format!(
            "  {rpc:<10} failed {:>7}  (not in the line above)        p50 {:>7.3}  p90 {:>7.3}  p99 {:>7.3}  p99.9 {:>7.3}  max {:>8.3} ms\n",
            histogram.len(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            histogram.max() as f64 / 1000.0
        ));
    }
    out.push_str("  Status codes:");
    for (code, count) in &tally.codes {
        out.push_str(&format!(" [{code} {count}]"));
    }
    out.push('\n');
    out
}

fn json(tally: &Tally, measured: Duration, args: &Args) -> String {
    let rpcs: Vec<String> = tally
        .histograms
        .iter()
        .map(|(rpc, histogram)| {
            let us = |quantile: f64| histogram.value_at_quantile(quantile);
            let distribution: Vec<String> =
                histogram.iter_quantiles(2).map(|step| format!("[{:.6},{}]", step.quantile_iterated_to(), step.value_iterated_to())).collect();
            format!(
                "\"{rpc}\":{{\"count\":{},\"rps\":{:.1},\"avg_us\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"distribution\":[{}]}}",
                histogram.len(),
                histogram.len() as f64 / measured.as_secs_f64(),
                histogram.mean(),
                us(0.5),
                us(0.9),
                us(0.99),
                us(0.999),
                histogram.max(),
                distribution.join(",")
            )
        })
        .collect();
    let refused: Vec<String> = tally
        .refused
        .iter()
        .map(|(rpc, histogram)| {
            let us = |quantile: f64| histogram.value_at_quantile(quantile);
            format!(
                "\"{rpc}\":{{\"count\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
                histogram.len(),
                us(0.5),
                us(0.99),
                histogram.max()
            )
        })
        .collect();
    let codes: Vec<String> = tally.codes.iter().map(|(code, count)| format!("\"{code}\":{count}")).collect();
    format!(
        "{{\"workload\":\"{:?}\",\"floor\":{},\"model\":\"{}\",\"rps_target\":{},\"concurrency\":{},\"connections\":{},\"seconds\":{:.3},\"rpcs\":{{{}}},\"failed\":{{{}}},\"codes\":{{{}}}}}\n",
        args.workload,
        args.floor,
        if args.rps.is_some() { "open" } else { "closed" },
        args.rps.map_or("null".to_owned(), |rate| format!("{rate:.1}")),
        args.concurrency,
        args.connections,
        measured.as_secs_f64(),
        rpcs.join(","),
        refused.join(","),
        codes.join(",")
    )
}

/// A live line on a terminal: elapsed, calls, current rate, errors.
fn spawn_progress(progress: Arc<Progress>) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        let started = Instant::now();
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let calls = progress.calls.load(Ordering::Relaxed);
            eprint!(
                "\r{:>5.0}s  {calls:>9} calls  {:>8} /s  {} errors   ",
                started.elapsed().as_secs_f64(),
                calls - last,
                progress.errors.load(Ordering::Relaxed)
            );
            last = calls;
        }
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.echo_request {
        println!("{}", echo_request_json(args.workload, &args.program));
        return Ok(());
    }
    if let Some(path) = &args.write_import {
        write_import(path, args.customers, args.buckets)?;
        eprintln!("wrote {} customers with {} buckets each to {}", args.customers, args.buckets, path.display());
        return Ok(());
    }
    anyhow::ensure!(
        args.concurrency > 0 && args.connections > 0 && args.customers > 0,
        "concurrency, connections and customers must be above 0"
    );
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let channel = Channel::from_shared(format!("http://{}", args.target))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {}", args.target))?;
        clients.push(if args.floor {
            Client::Floor(EchoClient::new(channel))
        } else {
            Client::Engine(LoyaltyServiceClient::with_interceptor(channel, ApiKey::new(args.api_key.as_deref())?))
        });
    }
    if args.seed {
        anyhow::ensure!(!args.floor, "--seed needs the engine, not the echo floor");
        if let Client::Engine(client) = &clients[0] {
            seed(&mut client.clone(), &args).await?;
        }
    }
    let run = format!("{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis());
    let started = Instant::now();
    let warmup_end = started + Duration::from_secs_f64(args.warmup);
    let plan = Arc::new(Plan {
        warmup_end,
        end: warmup_end + Duration::from_secs_f64(args.duration),
        count: args.count,
        issued: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let progress = Arc::new(Progress::default());
    let ticker = spawn_progress(Arc::clone(&progress));
    let tally = match args.rps {
        Some(rate) => open(&args, &clients, plan, &run, rate, Arc::clone(&progress)).await?,
        None => closed(&args, &clients, plan, &run, Arc::clone(&progress)).await?,
    };
    if let Some(ticker) = ticker {
        ticker.abort();
        eprintln!();
    }
    let measured = Instant::now().saturating_duration_since(warmup_end);
    print!("{}", summary(&tally, measured, &args));
    if let Some(path) = &args.json {
        std::fs::write(path, json(&tally, measured, &args)).with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = tally.failed();
    anyhow::ensure!(failed == 0, "{failed} calls failed");
    Ok(())
}
