//! `loyalty-load`: drives a running engine with checkout workloads and prints a ghz-like summary.
//!
//! Closed model: `--concurrency` workers share `--connections` HTTP/2 connections; each worker sends
//! its next call when the previous one answered. Every mutating call has a unique receipt ID;
//! customers are spread over `--customers` cards with 10% of calls on 10 hot customers. Latency is
//! recorded per RPC in HDR histograms (microsecond resolution) after `--warmup`.
//!
//! Exits non-zero if any call failed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use loyalty_proto::v1 as pb;
use loyalty_proto::v1::loyalty_service_client::LoyaltyServiceClient;
use tonic::transport::Channel;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Earn on a 3-line receipt.
    Accrue,
    /// Quote a 3-line receipt (no side effects).
    Authorize,
    /// Authorize with a hold of 5 points.
    AuthorizeHold,
    /// Spend 1 point directly.
    Redeem,
    /// A whole checkout: authorize with hold -> redeem (capture) -> accrue.
    Checkout,
}

#[derive(Debug, Parser)]
#[command(name = "loyalty-load", about = "Closed-model load driver for loyalty-engine")]
struct Args {
    /// Engine address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: String,
    #[arg(long, default_value = "demo")]
    program: String,
    #[arg(long, value_enum, default_value = "accrue")]
    workload: Workload,
    /// Concurrent workers (clients).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// HTTP/2 connections shared by the workers.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Distinct customers (cards LT0000000000...).
    #[arg(long, default_value_t = 10_000)]
    customers: u64,
    /// Enrol and fund the customers first (1,000 points each, spendable at once only if the
    /// program's pending rule is "none").
    #[arg(long)]
    seed: bool,
    /// Write the summary as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct Tally {
    histograms: BTreeMap<&'static str, Histogram<u64>>,
    codes: BTreeMap<String, u64>,
    calls: u64,
}

impl Tally {
    fn record(&mut self, rpc: &'static str, elapsed: Duration, code: tonic::Code) {
        let histogram =
            self.histograms.entry(rpc).or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"));
        let _ = histogram.record((elapsed.as_micros() as u64).max(1));
        *self.codes.entry(format!("{code:?}")).or_default() += 1;
        self.calls += 1;
    }

    fn merge(&mut self, other: Tally) {
        for (rpc, histogram) in other.histograms {
            match self.histograms.get_mut(rpc) {
                Some(mine) => {
                    let _ = mine.add(&histogram);
                }
                None => {
                    self.histograms.insert(rpc, histogram);
                }
            }
        }
        for (code, count) in other.codes {
            *self.codes.entry(code).or_default() += count;
        }
        self.calls += other.calls;
    }
}

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
    };
    vec![
        line(1, "milk-1l", "2", "450.00", "900.00"),
        line(2, "bread", "1", "250.00", "250.00"),
        line(3, "cheese-200g", "1", "1850.00", "1850.00"),
    ]
}

/// A small xorshift generator: each worker draws its customers without locks.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn customer(&mut self, customers: u64) -> u64 {
        if self.next() % 10 == 0 { self.next() % customers.min(10) } else { self.next() % customers }
    }
}

async fn seed(client: &mut LoyaltyServiceClient<Channel>, args: &Args) -> anyhow::Result<()> {
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
            }],
        };
        client.accrue(fund).await.context("seeding: fund")?;
    }
    eprintln!("seeded {} customers in {:.1}s", args.customers, started.elapsed().as_secs_f64());
    Ok(())
}

async fn one_call(
    client: &mut LoyaltyServiceClient<Channel>,
    workload: Workload,
    program: &str,
    receipt: &str,
    customer: Option<pb::CustomerRef>,
    tally: &mut Option<&mut Tally>,
) -> bool {
    macro_rules! timed {
        ($rpc:literal, $call:expr) => {{
            let started = Instant::now();
            let result = $call.await;
            let code = match &result {
                Ok(_) => tonic::Code::Ok,
                Err(status) => status.code(),
            };
            if let Some(tally) = tally.as_deref_mut() {
                tally.record($rpc, started.elapsed(), code);
            }
            result.ok().map(|response| response.into_inner())
        }};
    }
    let authorize = |spend: &str| pb::AuthorizeRequest {
        program_id: program.into(),
        store_id: "load".into(),
        till_id: "till".into(),
        receipt_id: receipt.into(),
        customer: customer.clone(),
        lines: basket(),
        spend_points: spend.into(),
        hold_ttl_seconds: 0,
    };
    let accrue = || pb::AccrueRequest {
        program_id: program.into(),
        store_id: "load".into(),
        till_id: "till".into(),
        receipt_id: receipt.into(),
        customer: customer.clone(),
        lines: basket(),
    };
    let redeem = |hold_id: &str, lines: Vec<pb::BasketLine>| pb::RedeemRequest {
        program_id: program.into(),
        store_id: "load".into(),
        till_id: "till".into(),
        receipt_id: receipt.into(),
        customer: customer.clone(),
        points: if hold_id.is_empty() { "1".into() } else { "5".into() },
        hold_id: hold_id.into(),
        lines,
    };
    match workload {
        Workload::Accrue => timed!("Accrue", client.accrue(accrue())).is_some(),
        Workload::Authorize => timed!("Authorize", client.authorize(authorize(""))).is_some(),
        Workload::AuthorizeHold => timed!("Authorize", client.authorize(authorize("5"))).is_some(),
        Workload::Redeem => timed!("Redeem", client.redeem(redeem("", basket()))).is_some(),
        Workload::Checkout => {
            let started = Instant::now();
            let Some(authorized) = timed!("Authorize", client.authorize(authorize("5"))) else { return false };
            let hold_id = authorized.hold.map(|hold| hold.hold_id).unwrap_or_default();
            if timed!("Redeem", client.redeem(redeem(&hold_id, vec![]))).is_none() {
                return false;
            }
            let done = timed!("Accrue", client.accrue(accrue())).is_some();
            if let Some(tally) = tally.as_deref_mut() {
                tally.record("Checkout", started.elapsed(), if done { tonic::Code::Ok } else { tonic::Code::Unknown });
            }
            done
        }
    }
}

fn summary(tally: &Tally, measured: Duration, args: &Args) -> String {
    let mut out = String::new();
    let seconds = measured.as_secs_f64();
    out.push_str(&format!(
        "Summary: workload {:?}, concurrency {}, connections {}, {:.1}s measured\n",
        args.workload, args.concurrency, args.connections, seconds
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
            format!(
                "\"{rpc}\":{{\"count\":{},\"rps\":{:.1},\"avg_us\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
                histogram.len(),
                histogram.len() as f64 / measured.as_secs_f64(),
                histogram.mean(),
                us(0.5),
                us(0.9),
                us(0.99),
                us(0.999),
                histogram.max()
            )
        })
        .collect();
    let codes: Vec<String> = tally.codes.iter().map(|(code, count)| format!("\"{code}\":{count}")).collect();
    format!(
        "{{\"workload\":\"{:?}\",\"concurrency\":{},\"connections\":{},\"seconds\":{:.3},\"rpcs\":{{{}}},\"codes\":{{{}}}}}\n",
        args.workload,
        args.concurrency,
        args.connections,
        measured.as_secs_f64(),
        rpcs.join(","),
        codes.join(",")
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.concurrency > 0 && args.connections > 0 && args.customers > 0,
        "concurrency, connections and customers must be above 0"
    );
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let channel = Channel::from_shared(format!("http://{}", args.target))?.tcp_nodelay(true).connect().await.context("connecting")?;
        channels.push(LoyaltyServiceClient::new(channel));
    }
    if args.seed {
        seed(&mut channels[0].clone(), &args).await?;
    }
    let run = format!("{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis());
    let started = Instant::now();
    let warmup_end = started + Duration::from_secs_f64(args.warmup);
    let end = warmup_end + Duration::from_secs_f64(args.duration);
    let total = Arc::new(Mutex::new(Tally::default()));
    let mut workers = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let mut client = channels[worker % args.connections].clone();
        let (program, workload, customers, run, total) =
            (args.program.clone(), args.workload, args.customers, run.clone(), Arc::clone(&total));
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
            let mut tally = Tally::default();
            let mut n = 0u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let receipt = format!("ld-{run}-{worker}-{n}");
                n += 1;
                let customer = card(rng.customer(customers));
                let mut measured = (now >= warmup_end).then_some(&mut tally);
                one_call(&mut client, workload, &program, &receipt, customer, &mut measured).await;
            }
            if let Ok(mut total) = total.lock() {
                total.merge(tally);
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let measured = Instant::now().saturating_duration_since(warmup_end);
    let tally = total.lock().map_err(|_| anyhow::anyhow!("tally poisoned"))?;
    print!("{}", summary(&tally, measured, &args));
    if let Some(path) = &args.json {
        std::fs::write(path, json(&tally, measured, &args)).with_context(|| format!("writing {}", path.display()))?;
    }
    let failed: u64 = tally.codes.iter().filter(|(code, _)| code.as_str() != "Ok").map(|(_, count)| count).sum();
    anyhow::ensure!(failed == 0, "{failed} calls failed");
    Ok(())
}
