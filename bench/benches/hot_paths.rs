//! Hot paths of one checkout call, each measured alone: ledger apply (the domain; rule evaluation
//! has its own bench, `rules`), the idempotency fingerprint, the stored-record codec, proto encoding, and a durable
//! group commit of the embedded store.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use loyalty_core::Origin;
use loyalty_core::account::AccountState;
use loyalty_core::basket::{BasketLimits, BasketLine};
use loyalty_core::fingerprint::fingerprint;
use loyalty_core::ops::{self, AccrueCmd, Checkout, SaleContext};
use loyalty_core::program::ProgramPolicy;
use loyalty_core::receipt::{OpKind, ReceiptState};
use loyalty_core::rules::{compile, flat_cashback};
use loyalty_core::txn::{Posting, Txn};
use loyalty_store::embedded::{Durability, EmbeddedConfig, EmbeddedStore};
use loyalty_store::{AccountWrite, Commit, ReceiptWrite, Store};
use prost::Message;
use rust_decimal::Decimal;

fn basket(lines: u32) -> Vec<BasketLine> {
    (1..=lines)
        .map(|line_no| BasketLine {
            line_no,
            sku: format!("sku-{line_no}"),
            category: "grocery".into(),
            brand: String::new(),
            quantity: Decimal::from(2),
            unit_price: Decimal::new(45_050, 2),
            line_total: Decimal::new(90_100, 2),
            excise: line_no % 7 == 0,
            promo_price: line_no % 5 == 0,
        })
        .collect()
}

/// An account that earned on `days` different days: one bucket per day.
fn account_with_buckets(program: &ProgramPolicy, days: i64) -> AccountState {
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 8, 0, 0).single().expect("time");
    let mut account = AccountState::new("acc-bench".into(), true, start);
    for day in 0..days {
        let mut txn = Txn::begin(program, &account, start + Duration::days(day), format!("tx{day}"), Origin::default());
        txn.earn(Decimal::from(10), Posting { receipt_id: Some("r"), refund_id: None }, "seed".into(), Vec::new());
        account = txn.finish().expect("invariants").0;
    }
    account
}

fn domain(c: &mut Criterion) {
    let program = ProgramPolicy::with_defaults("p");
    let rules = compile(&flat_cashback(Decimal::ONE), 1, program.points_scale).expect("flat cashback compiles");
    let limits = BasketLimits::default();
    let checkout = Checkout { program: &program, rules: &rules, limits: &limits };
    let now = Utc.with_ymd_and_hms(2026, 6, 1, 8, 0, 0).single().expect("time");
    for (lines, buckets) in [(3, 1), (20, 100), (200, 100)] {
        let account = account_with_buckets(&program, buckets);
        let cmd = AccrueCmd {
            occurred_at: None,
            receipt_id: "R".into(),
            lines: basket(lines),
            sale: SaleContext::default(),
            change: Decimal::ZERO,
        };
        c.bench_function(&format!("ledger_apply/accrue_{lines}_lines_{buckets}_buckets"), |b| {
            b.iter(|| {
                let mut txn = Txn::begin(&program, &account, now, "tx".into(), Origin::default());
                let mut receipt = ReceiptState::new("R".into(), "acc-bench".into(), now, Origin::default());
                let outcome = ops::accrue(&checkout, &mut txn, &mut receipt, &cmd).expect("accrue");
                (outcome, txn.finish().expect("invariants"))
            })
        });
    }
    let cmd =
        AccrueCmd { occurred_at: None, receipt_id: "R".into(), lines: basket(20), sale: SaleContext::default(), change: Decimal::ZERO };
    c.bench_function("idempotency/fingerprint_accrue_20_lines", |b| {
        b.iter(|| fingerprint(OpKind::Accrue, &(Origin::default().place(), &cmd)))
    });
    let account = account_with_buckets(&program, 100);
    c.bench_function("codec/encode_account_100_buckets", |b| {
        b.iter(|| loyalty_store::codec::encode_versioned(7, &account).expect("encode"))
    });
    let bytes = loyalty_store::codec::encode_versioned(7, &account).expect("encode");
    c.bench_function("codec/decode_account_100_buckets", |b| {
        b.iter(|| loyalty_store::codec::decode_versioned::<AccountState>("account", &bytes).expect("decode"))
    });
}

fn proto(c: &mut Criterion) {
    use loyalty_proto::v1 as pb;
    let request = pb::AccrueRequest {
        program_id: "demo".into(),
        store_id: "store-1".into(),
        till_id: "till-1".into(),
        receipt_id: "R-000123".into(),
        customer: Some(pb::CustomerRef { id: Some(pb::customer_ref::Id::CardNumber("LT0000000042".into())) }),
        lines: (1..=20)
            .map(|line_no| pb::BasketLine {
                line_no,
                sku: format!("sku-{line_no}"),
                category: "grocery".into(),
                quantity: "2".into(),
                unit_price: "450.50".into(),
                line_total: "901.00".into(),
                excise: false,
                promo_price: false,
                brand: String::new(),
            })
            .collect(),
        ..Default::default()
    };
    c.bench_function("proto/encode_accrue_20_lines", |b| b.iter(|| request.encode_to_vec()));
    let bytes = request.encode_to_vec();
    c.bench_function("proto/decode_accrue_20_lines", |b| b.iter(|| pb::AccrueRequest::decode(bytes.as_slice()).expect("decode")));
}

/// One durable commit (fsync) carrying `batch` concurrent account writes: the cost group commit
/// shares among the calls of a batch.
fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(
        EmbeddedStore::open(EmbeddedConfig { durability: Durability::Fsync, ..EmbeddedConfig::in_dir(dir.path()) }).expect("open store"),
    );
    let program = ProgramPolicy::with_defaults("p");
    let now = Utc.with_ymd_and_hms(2026, 6, 1, 8, 0, 0).single().expect("time");
    let mut counter = 0u64;
    for batch in [1usize, 16, 64] {
        c.bench_function(&format!("group_commit/{batch}_accounts_per_fsync"), |b| {
            b.to_async(&runtime).iter_batched(
                || {
                    (0..batch)
                        .map(|_| {
                            counter += 1;
                            let account = AccountState::new(format!("a{counter}"), true, now);
                            let mut txn = Txn::begin(&program, &account, now, format!("tx{counter}"), Origin::default());
                            txn.earn(Decimal::from(10), Posting { receipt_id: Some("r"), refund_id: None }, "bench".into(), Vec::new());
                            let (state, ledger) = txn.finish().expect("invariants");
                            let receipt = ReceiptState::new(format!("r{counter}"), state.account_id.clone(), now, Origin::default());
                            Commit {
                                program_id: "p".into(),
                                account: AccountWrite { expected_version: 0, state },
                                ledger,
                                receipt: Some(ReceiptWrite { expected_version: 0, state: receipt }),
                                identity_claims: Vec::new(),
                                identity_releases: Vec::new(),
                                request: None,
                                events: Vec::new(),
                                credits: Vec::new(),
                            }
                        })
                        .collect::<Vec<_>>()
                },
                |commits| {
                    // Spawned, so that all of them wait for the writer at once and share a batch.
                    let calls: Vec<_> = commits
                        .into_iter()
                        .map(|commit| {
                            let store = Arc::clone(&store);
                            tokio::spawn(async move { store.commit(commit).await })
                        })
                        .collect();
                    async move {
                        for call in calls {
                            call.await.expect("task").expect("commit");
                        }
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
}

/// The idempotency check of a replayed call: read the receipt from the store and find its answer.
fn idempotency_lookup(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let store = EmbeddedStore::open(EmbeddedConfig::in_dir(dir.path())).expect("open store");
    let program = ProgramPolicy::with_defaults("p");
    let rules = compile(&flat_cashback(Decimal::ONE), 1, program.points_scale).expect("flat cashback compiles");
    let limits = BasketLimits::default();
    let checkout = Checkout { program: &program, rules: &rules, limits: &limits };
    let now = Utc.with_ymd_and_hms(2026, 6, 1, 8, 0, 0).single().expect("time");
    let cmd =
        AccrueCmd { occurred_at: None, receipt_id: "R".into(), lines: basket(3), sale: SaleContext::default(), change: Decimal::ZERO };
    let print = fingerprint(OpKind::Accrue, &(Origin::default().place(), &cmd));
    let account = AccountState::new("acc".into(), true, now);
    let mut txn = Txn::begin(&program, &account, now, "tx".into(), Origin::default());
    let mut receipt = ReceiptState::new("R".into(), "acc".into(), now, Origin::default());
    let outcome = ops::accrue(&checkout, &mut txn, &mut receipt, &cmd).expect("accrue");
    receipt.calls.push(loyalty_core::receipt::CallRecord {
        op: OpKind::Accrue,
        key: String::new(),
        fingerprint: print,
        response: loyalty_core::outcome::StoredResponse::Accrue(outcome),
    });
    let (state, ledger) = txn.finish().expect("invariants");
    let commit = Commit {
        program_id: "p".into(),
        account: AccountWrite { expected_version: 0, state },
        ledger,
        receipt: Some(ReceiptWrite { expected_version: 0, state: receipt }),
        identity_claims: Vec::new(),
        identity_releases: Vec::new(),
        request: None,
        events: Vec::new(),
        credits: Vec::new(),
    };
    runtime.block_on(store.commit(commit)).expect("commit");
    c.bench_function("idempotency/receipt_lookup_and_replay_check", |b| {
        b.iter(|| {
            let stored = runtime.block_on(store.receipt("p", "R")).expect("read").expect("receipt");
            stored.value.call(OpKind::Accrue, "").is_some_and(|call| call.fingerprint == print)
        })
    });
    runtime.block_on(store.shutdown());
}

criterion_group!(benches, domain, proto, group_commit, idempotency_lookup);
criterion_main!(benches);
