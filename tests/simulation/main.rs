//! A deterministic simulation of the engine (TigerBeetle's VOPR is the model): tills and customers
//! make random checkout calls, with retries, duplicates, racing spends, refunds and holds left to
//! expire, against the engine over an in-memory store that injects faults (a commit that fails
//! before or after it applies, a lost answer, a failed read, a slow commit), with clock jumps and
//! crashes that drop every cache; an oracle checks after every few steps that each ledger adds up
//! to its account, that nothing acknowledged is lost or applied twice, and that every retry gets
//! its first answer (`run`). Everything comes from one seed, on one thread, so a failing seed
//! replays exactly.
//!
//! - `SIM_SEED=<seed>` runs that seed alone (with `SIM_STEPS`, as many steps as the failure
//!   printed), to replay a failure; `SIM_TRACE=1` prints each step and how it ended.
//! - Otherwise fresh seeds run for `SIM_SECONDS` (default 60), `SIM_STEPS` steps each (default
//!   400); each seed is printed before it runs.
//! - The same simulation also runs over the ScyllaDB backend on the CQL stand-in (a fresh seed,
//!   `SIM_SCYLLA_STEPS` steps, default 400). Its network and the driver's tasks are not the seed's,
//!   so a seed there finds what it finds but does not replay exactly.

mod run;
mod world;

use std::sync::Arc;
use std::time::{Duration, Instant};

use loyalty_store::memory::MemoryStore;

use crate::run::{Report, Simulation};
use crate::world::FaultPlan;

/// Faults as often as a bad day would never have them: every kind, often enough that a few
/// hundred steps meet each several times.
const PLAN: FaultPlan = FaultPlan { commit_fails: 4, answer_lost: 4, read_fails: 2, slow: 15 };

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| value.parse().unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")))
}

/// One seed's run, on a runtime of its own with one thread (the order of tasks is the seed's).
fn simulate(seed: u64, steps: u64) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    runtime.block_on(async move {
        let store: Arc<dyn loyalty_store::Store> = Arc::new(MemoryStore::new());
        Simulation::new(seed, store, PLAN).await.run(steps).await
    })
}

/// A seed no earlier run used: the time, mixed.
fn fresh_seed(index: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64);
    crate::world::Rng::new(nanos ^ index.rotate_left(32)).next()
}

#[test]
fn fresh_seeds_keep_every_invariant() {
    let steps = env_u64("SIM_STEPS").unwrap_or(400);
    if let Some(seed) = env_u64("SIM_SEED") {
        let report = simulate(seed, steps);
        println!("{report:?}");
        return;
    }
    let budget = Duration::from_secs(env_u64("SIM_SECONDS").unwrap_or(60));
    let started = Instant::now();
    let (mut seeds, mut total) = (0u64, Report::default());
    while started.elapsed() < budget {
        let seed = fresh_seed(seeds);
        println!("simulation seed {seed} ({steps} steps)");
        let report = simulate(seed, steps);
        seeds += 1;
        total.steps += report.steps;
        total.answered += report.answered;
        total.refused += report.refused;
        for (code, count) in report.refusals {
            *total.refusals.entry(code).or_default() += count;
        }
        total.gave_up += report.gave_up;
        total.replays += report.replays;
        total.compacted_replays += report.compacted_replays;
        total.crashes += report.crashes;
        total.clock_jumps += report.clock_jumps;
        total.checks += report.checks;
        total.budget_given += report.budget_given;
        total.budgets_spent += report.budgets_spent;
        total.faults.commits_failed += report.faults.commits_failed;
        total.faults.answers_lost += report.faults.answers_lost;
        total.faults.reads_failed += report.faults.reads_failed;
        total.faults.slow += report.faults.slow;
    }
    println!(
        "simulation: {seeds} seeds, {} steps in {:.1} s: {} calls answered, {} refused {:?}, {} given up by their till; {} replays ({} told their answer was compacted); {} crashes; {} clock jumps; {} store checks; campaign budgets: {} points given, {} of {seeds} runs spent theirs; faults: {:?}",
        total.steps,
        started.elapsed().as_secs_f64(),
        total.answered,
        total.refused,
        total.refusals,
        total.gave_up,
        total.replays,
        total.compacted_replays,
        total.crashes,
        total.clock_jumps,
        total.checks,
        total.budget_given,
        total.budgets_spent,
        total.faults
    );
    assert!(seeds > 0 && total.answered > 0, "the simulation ran nothing");
    assert!(total.faults.answers_lost > 0 && total.faults.commits_failed > 0, "no fault was injected: {:?}", total.faults);
}

#[test]
fn the_scylla_backend_over_the_stand_in_keeps_every_invariant() {
    let steps = env_u64("SIM_SCYLLA_STEPS").unwrap_or(400);
    let seed = env_u64("SIM_SEED").unwrap_or_else(|| fresh_seed(u64::MAX));
    println!("simulation over the ScyllaDB backend: seed {seed} ({steps} steps)");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let report = runtime.block_on(async move {
        let standin = cql_standin::StandIn::start("127.0.0.1:0".parse().expect("an address")).await.expect("the CQL stand-in");
        let mut config = loyalty_store::scylla::ScyllaConfig::new(vec![standin.addr().to_string()], &format!("sim_{}", std::process::id()));
        config.replication = [("datacenter1".to_owned(), 1)].into_iter().collect();
        // The relay shows an event once it settled: soon, for the figures check at the end.
        config.relay_settle = Duration::from_millis(100);
        let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cql");
        loyalty_tests::migrate_scylla(&config, &schema).await.expect("the schema");
        let store: Arc<dyn loyalty_store::Store> = loyalty_tests::connect_scylla(config).await.expect("connect");
        let report = Simulation::new(seed, store, PLAN).await.run(steps).await;
        drop(standin);
        report
    });
    println!("{report:?}");
    assert!(report.answered > 0 && report.faults.answers_lost + report.faults.commits_failed > 0, "{report:?}");
}

#[test]
fn a_seed_replays_exactly() {
    let first = simulate(20_261_207, 300);
    let second = simulate(20_261_207, 300);
    assert_eq!(first.trace, second.trace, "the same seed took another path: the simulation is not deterministic");
    assert!(first.answered > 50 && first.faults.answers_lost > 0, "{first:?}");
    let other = simulate(20_261_208, 300);
    assert_ne!(first.trace, other.trace, "another seed took the same path: the trace does not see the run");
}
