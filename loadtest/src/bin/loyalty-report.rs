//! `loyalty-report`: turns one benchmark run (the JSON files `bench/run.sh` leaves in a results
//! folder, criterion's estimates, pgbench's results) into `bench/RESULTS.md` and latency plots.
//! It measures nothing itself.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use plotters::prelude::*;
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(name = "loyalty-report", about = "Renders bench/RESULTS.md and plots from a benchmark run")]
struct Args {
    /// Folder with the run's JSON files (written by bench/run.sh).
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
    /// criterion's output folder.
    #[arg(long, default_value = "target/criterion")]
    criterion: PathBuf,
    #[arg(long, default_value = "bench/RESULTS.md")]
    out: PathBuf,
    /// Folder with the scale benchmark's results (bench/scale.sh); its section is left out if absent.
    #[arg(long, default_value = "bench/results-scale")]
    scale: PathBuf,
    /// Folder for the SVG plots (linked relative to the report).
    #[arg(long, default_value = "bench/plots")]
    plots: PathBuf,
}

/// The workloads of the report: (file stem, title, the RPC whose numbers are the workload's).
const WORKLOADS: &[(&str, &str, &str)] = &[
    ("authorize", "Authorize (quote)", "Authorize"),
    ("redeem", "Redeem (direct, durable)", "Redeem"),
    ("accrue", "Accrue (durable)", "Accrue"),
    ("checkout", "Checkout: authorize+hold → redeem → accrue", "Checkout"),
];
const CLIENTS: &[u32] = &[1, 16, 64];

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The numbers of one RPC in one run.
struct Stats {
    rps: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    errors: u64,
    distribution: Vec<(f64, f64)>,
}

fn stats(run: &Value, rpc: &str) -> Option<Stats> {
    let numbers = run.get("rpcs")?.get(rpc)?;
    let us = |key: &str| numbers.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let errors = run
        .get("codes")
        .and_then(Value::as_object)
        .map(|codes| codes.iter().filter(|(code, _)| code.as_str() != "Ok").map(|(_, count)| count.as_u64().unwrap_or(0)).sum())
        .unwrap_or(0);
    let distribution = numbers
        .get("distribution")
        .and_then(Value::as_array)
        .map(|points| points.iter().filter_map(|point| Some((point.get(0)?.as_f64()?, point.get(1)?.as_f64()? / 1000.0))).collect())
        .unwrap_or_default();
    Some(Stats {
        rps: us("rps"),
        p50: us("p50_us") / 1000.0,
        p90: us("p90_us") / 1000.0,
        p99: us("p99_us") / 1000.0,
        p999: us("p999_us") / 1000.0,
        errors,
        distribution,
    })
}

/// The numbers of one ghz run (`ghz -O json`): latencies in nanoseconds, p99.9 not reported.
fn ghz_stats(run: &Value) -> Option<Stats> {
    let percentile = |q: u64| {
        run.get("latencyDistribution")?
            .as_array()?
            .iter()
            .find(|point| point.get("percentage").and_then(Value::as_u64) == Some(q))?
            .get("latency")?
            .as_f64()
            .map(|ns| ns / 1e6)
    };
    Some(Stats {
        rps: run.get("rps")?.as_f64()?,
        p50: percentile(50).unwrap_or(f64::NAN),
        p90: percentile(90).unwrap_or(f64::NAN),
        p99: percentile(99).unwrap_or(f64::NAN),
        p999: f64::NAN,
        errors: ghz_errors(run),
        distribution: Vec::new(),
    })
}

/// Calls a ghz run counted with a status other than OK.
fn ghz_errors(run: &Value) -> u64 {
    run.get("statusCodeDistribution")
        .and_then(Value::as_object)
        .map(|codes| codes.iter().filter(|(code, _)| code.as_str() != "OK").map(|(_, count)| count.as_u64().unwrap_or(0)).sum())
        .unwrap_or(0)
}

fn load_ghz(results: &Path, name: &str) -> Option<Stats> {
    ghz_stats(&read_json(&results.join(format!("{name}.json")))?)
}

fn load(results: &Path, name: &str, rpc: &str) -> Option<Stats> {
    stats(&read_json(&results.join(format!("{name}.json")))?, rpc)
}

/// A percentile plot (x: 1/(1-q) on a log scale, as HdrHistogram plots do) of engine and floor.
fn plot(path: &Path, title: &str, series: &[(&str, &Stats, RGBColor)]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let y_max = series.iter().flat_map(|(_, stats, _)| stats.distribution.iter().map(|point| point.1)).fold(0.1_f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d((1.0_f64..10_000.0).log_scale(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| format!("{:.4}", 100.0 * (1.0 - 1.0 / x)).trim_end_matches('0').trim_end_matches('.').to_owned() + "%")
        .draw()?;
    for (label, stats, color) in series {
        let points: Vec<(f64, f64)> = stats
            .distribution
            .iter()
            .filter(|(quantile, _)| *quantile < 0.9999)
            .map(|(quantile, ms)| (1.0 / (1.0 - quantile), *ms))
            .collect();
        let color = *color;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).draw()?;
    root.present()?;
    Ok(())
}

fn ms(value: f64) -> String {
    if value.is_nan() { "–".into() } else { format!("{value:.2}") }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.plots).with_context(|| format!("creating {}", args.plots.display()))?;
    let plots_rel =
        args.plots.strip_prefix(args.out.parent().unwrap_or(Path::new(""))).map(Path::to_path_buf).unwrap_or_else(|_| args.plots.clone());
    let mut md = String::new();
    let machine = std::fs::read_to_string(args.results.join("machine.txt")).unwrap_or_default();
    writeln!(md, "# Benchmark results\n")?;
    writeln!(md, "Regenerate with `bash bench/run.sh` (about 15 minutes). Everything below was measured in one run of it.\n")?;
    writeln!(md, "## Machine and setup\n\n```\n{}```\n", machine)?;
    writeln!(
        md,
        "The engine is the release build on its embedded redb store with `durability = fsync` (every answer \
         waits for the fsync of its group commit). The floor is `loyalty-echo`, a tonic server that only \
         answers, driven by the same driver in the same run with requests and answers of the same encoded \
         sizes (`loyalty-load --floor`). Driver, engine and floor share the machine's cores. Customers, \
         measured seconds and warm-up are in the `run` line above; 10% of calls go to 10 hot customers; \
         4 HTTP/2 connections.\n"
    )?;

    writeln!(md, "## Closed model: N clients, each sending its next call when the last one answered\n")?;
    writeln!(md, "| workload | clients | rps | p50 ms | p90 ms | p99 ms | p99.9 ms | floor rps | floor p99 ms | rps / floor | errors |")?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let mut peaks = Vec::new();
    for (stem, title, rpc) in WORKLOADS {
        let mut peak: f64 = 0.0;
        for clients in CLIENTS {
            let engine = load(&args.results, &format!("{stem}-c{clients}"), rpc);
            let floor = load(&args.results, &format!("floor-{stem}-c{clients}"), rpc);
            if let Some(engine) = &engine {
                peak = peak.max(engine.rps);
                let (floor_rps, floor_p99, ratio) = match &floor {
                    Some(floor) => (format!("{:.0}", floor.rps), ms(floor.p99), format!("{:.0}%", 100.0 * engine.rps / floor.rps)),
                    None => ("–".into(), "–".into(), "–".into()),
                };
                writeln!(
                    md,
                    "| {title} | {clients} | {:.0} | {} | {} | {} | {} | {floor_rps} | {floor_p99} | {ratio} | {} |",
                    engine.rps,
                    ms(engine.p50),
                    ms(engine.p90),
                    ms(engine.p99),
                    ms(engine.p999),
                    engine.errors
                )?;
            }
            if *clients == 16
                && let (Some(engine), Some(floor)) = (&engine, &floor)
            {
                let file = args.plots.join(format!("{stem}-c16.svg"));
                plot(
                    &file,
                    &format!("{title}, 16 clients: latency by percentile"),
                    &[("engine", engine, RED), ("echo floor", floor, BLUE)],
                )?;
            }
        }
        peaks.push((*stem, *title, *rpc, peak));
    }

    writeln!(md, "\n## The same calls driven by ghz\n")?;
    writeln!(
        md,
        "ghz (pinned by `.ci/tools.sh`) sends the `loadtest/ghz/` configs (the same basket and customers, \
         receipts named by UUID) for the same seconds with the same clients (at most 4 connections), \
         after a warm-up run of its own; its floor is the echo server called with the request and answer \
         sizes of `loyalty-load --echo-request`. ghz reports no p99.9. The ratio columns are each driver's \
         engine rps over its own floor rps.\n"
    )?;
    writeln!(
        md,
        "| call | clients | loyalty-load rps | ratio | ghz rps | ghz p50 ms | ghz p90 ms | ghz p99 ms | ghz floor rps | ghz floor p99 ms | ghz ratio | ghz errors |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (stem, title, rpc) in WORKLOADS.iter().filter(|(stem, _, _)| *stem != "checkout") {
        for clients in CLIENTS {
            let Some(ghz) = load_ghz(&args.results, &format!("ghz-{stem}-c{clients}")) else { continue };
            let ghz_floor = load_ghz(&args.results, &format!("ghz-floor-{stem}-c{clients}"));
            let ours = load(&args.results, &format!("{stem}-c{clients}"), rpc);
            let our_floor = load(&args.results, &format!("floor-{stem}-c{clients}"), rpc);
            let ratio = |engine: Option<&Stats>, floor: Option<&Stats>| match (engine, floor) {
                (Some(engine), Some(floor)) => format!("{:.0}%", 100.0 * engine.rps / floor.rps),
                _ => "–".into(),
            };
            writeln!(
                md,
                "| {title} | {clients} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                ours.as_ref().map_or("–".into(), |ours| format!("{:.0}", ours.rps)),
                ratio(ours.as_ref(), our_floor.as_ref()),
                ghz.rps,
                ms(ghz.p50),
                ms(ghz.p90),
                ms(ghz.p99),
                ghz_floor.as_ref().map_or("–".into(), |floor| format!("{:.0}", floor.rps)),
                ghz_floor.as_ref().map_or("–".into(), |floor| ms(floor.p99)),
                ratio(Some(&ghz), ghz_floor.as_ref()),
                ghz.errors
            )?;
        }
    }

    writeln!(md, "\n## Open model: a fixed rate of half the closed-model peak\n")?;
    writeln!(md, "Latency counts from each call's intended start, so stalls cannot hide (no coordinated omission).\n")?;
    writeln!(md, "| workload | rate /s | achieved rps | p50 ms | p90 ms | p99 ms | p99.9 ms | floor p99 ms at the same rate | errors |")?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (stem, title, rpc, peak) in &peaks {
        if let Some(engine) = load(&args.results, &format!("{stem}-open"), rpc) {
            let floor = load(&args.results, &format!("floor-{stem}-open"), rpc);
            writeln!(
                md,
                "| {title} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
                peak / 2.0,
                engine.rps,
                ms(engine.p50),
                ms(engine.p90),
                ms(engine.p99),
                ms(engine.p999),
                floor.as_ref().map_or("–".into(), |floor| ms(floor.p99)),
                engine.errors
            )?;
        }
    }

    writeln!(md, "\n## Targets (16 clients, durable store)\n")?;
    writeln!(md, "| target | measured | verdict |\n|---|---|---|")?;
    let ratio_at_16 = |stem: &str, rpc: &str| -> Option<(f64, f64)> {
        let engine = load(&args.results, &format!("{stem}-c16"), rpc)?;
        let floor = load(&args.results, &format!("floor-{stem}-c16"), rpc)?;
        Some((engine.rps / floor.rps, engine.p99))
    };
    for (stem, rpc, goal, label) in [
        ("accrue", "Accrue", 0.70, "Accrue ≥ 70% of the floor's rps"),
        ("authorize", "Authorize", 0.85, "Authorize ≥ 85% of the floor's rps"),
    ] {
        if let Some((ratio, _)) = ratio_at_16(stem, rpc) {
            writeln!(md, "| {label} | {:.1}% | {} |", 100.0 * ratio, if ratio >= goal { "met" } else { "**missed**" })?;
        }
    }
    for (stem, _, rpc) in WORKLOADS.iter().filter(|(stem, _, _)| *stem != "checkout") {
        if let Some((_, p99)) = ratio_at_16(stem, rpc) {
            writeln!(md, "| {rpc} p99 ≤ 5 ms | {p99:.2} ms | {} |", if p99 <= 5.0 { "met" } else { "**missed**" })?;
        }
    }
    let errors: u64 = std::fs::read_dir(&args.results)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "json") && entry.file_name() != "pg.json")
        .filter_map(|entry| read_json(&entry.path()))
        .map(|run| match run.get("codes").and_then(Value::as_object) {
            Some(codes) => codes.iter().filter(|(code, _)| code.as_str() != "Ok").map(|(_, count)| count.as_u64().unwrap_or(0)).sum(),
            None => ghz_errors(&run),
        })
        .sum();
    writeln!(md, "| no errors | {errors} failed calls in the whole run | {} |", if errors == 0 { "met" } else { "**missed**" })?;

    // The analysis of the last profile (written by hand, kept beside the script) follows the targets.
    if let Ok(analysis) = std::fs::read_to_string(args.out.with_file_name("analysis.md")) {
        writeln!(md, "\n{}", analysis.trim_end())?;
    }

    writeln!(md, "\n## Latency by percentile, 16 clients\n")?;
    for (stem, title, _) in WORKLOADS {
        if args.plots.join(format!("{stem}-c16.svg")).exists() {
            writeln!(md, "![{title}]({}/{stem}-c16.svg)\n", plots_rel.display())?;
        }
    }

    if let Some(pg) = read_json(&args.results.join("pg.json")) {
        writeln!(md, "## Against PostgreSQL\n")?;
        writeln!(
            md,
            "The same accrue and redeem transactions (idempotency row, balance update, ledger row; fsync and \
             synchronous commit on) on PostgreSQL {} driven by pgbench on loopback (`bench/pg/`). pgbench \
             is a C client without gRPC, so transport costs favour PostgreSQL.\n",
            pg.get("postgres_version").and_then(Value::as_str).unwrap_or("?")
        )?;
        writeln!(
            md,
            "| transaction | clients | PostgreSQL tps | PostgreSQL p99 ms | engine rps | engine / PostgreSQL |\n|---|---:|---:|---:|---:|---:|"
        )?;
        for (stem, rpc) in [("accrue", "Accrue"), ("redeem", "Redeem")] {
            for clients in CLIENTS {
                let Some(numbers) =
                    pg.get("workloads").and_then(|workloads| workloads.get(stem)).and_then(|by| by.get(clients.to_string()))
                else {
                    continue;
                };
                let tps = numbers.get("tps").and_then(Value::as_f64).unwrap_or(f64::NAN);
                let p99 = numbers.get("p99_us").and_then(Value::as_f64).unwrap_or(f64::NAN) / 1000.0;
                let engine = load(&args.results, &format!("{stem}-c{clients}"), rpc);
                let (engine_rps, ratio) = match engine {
                    Some(engine) => (format!("{:.0}", engine.rps), format!("{:.2}×", engine.rps / tps)),
                    None => ("–".into(), "–".into()),
                };
                writeln!(md, "| {stem} | {clients} | {tps:.0} | {} | {engine_rps} | {ratio} |", ms(p99))?;
            }
        }
        writeln!(md)?;
    }

    writeln!(md, "## Criterion: hot paths in isolation\n")?;
    writeln!(md, "`cargo bench -p loyalty-bench --bench hot_paths` (mean, 95% interval).\n")?;
    writeln!(md, "| benchmark | mean | interval |\n|---|---:|---:|")?;
    let mut benches: Vec<(String, f64, f64, f64)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&args.criterion) {
        for entry in entries.filter_map(|entry| entry.ok()) {
            let base = entry.path();
            let (Some(estimates), Some(meta)) = (read_json(&base.join("new/estimates.json")), read_json(&base.join("new/benchmark.json")))
            else {
                continue;
            };
            let mean = &estimates["mean"];
            let name = meta.get("full_id").and_then(Value::as_str).unwrap_or_default().to_owned();
            let point = mean["point_estimate"].as_f64().unwrap_or(f64::NAN);
            let low = mean["confidence_interval"]["lower_bound"].as_f64().unwrap_or(f64::NAN);
            let high = mean["confidence_interval"]["upper_bound"].as_f64().unwrap_or(f64::NAN);
            benches.push((name, point, low, high));
        }
    }
    benches.sort_by(|a, b| a.0.cmp(&b.0));
    let human = |ns: f64| {
        if ns >= 1e6 {
            format!("{:.2} ms", ns / 1e6)
        } else if ns >= 1e3 {
            format!("{:.2} µs", ns / 1e3)
        } else {
            format!("{ns:.0} ns")
        }
    };
    for (name, point, low, high) in &benches {
        writeln!(md, "| {name} | {} | {} – {} |", human(*point), human(*low), human(*high))?;
    }

    disk_section(&mut md, &args.results)?;
    scale_section(&mut md, &args.scale, &args.plots, &plots_rel)?;

    let rss = std::fs::read_to_string(args.results.join("rss.txt")).unwrap_or_default();
    writeln!(md, "\n## Memory\n\nPeak resident set size of the engine over the whole run: {}.", rss.trim())?;
    std::fs::write(&args.out, md).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {} and plots in {}", args.out.display(), args.plots.display());
    Ok(())
}

/// Bytes written per acknowledged Accrue and bytes on disk per customer and per ledger entry, from
/// `disk.txt` (key=value pairs written by bench/run.sh) and the `verify` line.
fn disk_section(md: &mut String, results: &Path) -> anyhow::Result<()> {
    let disk = std::fs::read_to_string(results.join("disk.txt")).unwrap_or_default();
    let value =
        |key: &str| -> Option<f64> { disk.split_whitespace().find_map(|pair| pair.strip_prefix(key)?.strip_prefix('=')?.parse().ok()) };
    let verify = std::fs::read_to_string(results.join("verify.txt")).unwrap_or_default();
    // "ok: 2000 accounts, 752052 ledger entries agree with their balances"
    let numbers: Vec<f64> = verify.split(|c: char| !c.is_ascii_digit()).filter_map(|word| word.parse().ok()).collect();
    writeln!(md, "\n## Disk\n")?;
    if let (Some(calls), Some(written)) = (value("accrue_c16_calls"), value("accrue_c16_write_bytes")) {
        writeln!(
            md,
            "Accrue at 16 clients: {calls:.0} acknowledged calls, {written:.0} bytes written by the engine process \
             (`/proc/PID/io` `write_bytes`, which counts a page each time it is dirtied again after writeback): \
             **{:.0} bytes per acknowledged Accrue**.",
            written / calls.max(1.0)
        )?;
    }
    if let (Some(bytes), [accounts, entries, ..]) = (value("data_dir_bytes"), numbers.as_slice()) {
        writeln!(
            md,
            "\nAfter a clean stop the data directory holds {bytes:.0} bytes (of which journal {:.0} bytes: a clean \
             stop leaves none) for {accounts:.0} customers and {entries:.0} ledger entries, each entry one receipt's call: \
             **{:.0} bytes per customer** and **{:.0} bytes per ledger entry** all told.",
            value("journal_bytes").unwrap_or(0.0),
            bytes / accounts.max(1.0),
            bytes / entries.max(1.0)
        )?;
    }
    Ok(())
}

/// One size of the scale run: `disk-N.txt` (key=value lines from bench/scale.sh) and the runs.
struct ScaleRun {
    customers: f64,
    facts: std::collections::HashMap<String, f64>,
    /// (stem, engine, floor) per workload.
    workloads: Vec<(&'static str, Stats, Stats)>,
}

fn scale_runs(dir: &Path) -> Vec<ScaleRun> {
    let mut runs = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return runs;
    };
    for entry in entries.filter_map(|entry| entry.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(size) = name.strip_prefix("disk-").and_then(|rest| rest.strip_suffix(".txt")) else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let facts: std::collections::HashMap<String, f64> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .filter_map(|(key, value)| Some((key.trim().to_owned(), value.trim().parse().ok()?)))
            .collect();
        let workloads = WORKLOADS
            .iter()
            .filter_map(|(stem, _, rpc)| {
                Some((*stem, load(dir, &format!("{stem}-{size}"), rpc)?, load(dir, &format!("floor-{stem}-{size}"), rpc)?))
            })
            .collect();
        if let Some(customers) = facts.get("customers").copied() {
            runs.push(ScaleRun { customers, facts, workloads });
        }
    }
    runs.sort_by(|a, b| a.customers.total_cmp(&b.customers));
    runs
}

/// The scale table (throughput, p99, memory, disk, recovery against the customers in the store)
/// and its plots.
fn scale_section(md: &mut String, dir: &Path, plots: &Path, plots_rel: &Path) -> anyhow::Result<()> {
    let runs = scale_runs(dir);
    if runs.is_empty() {
        return Ok(());
    }
    let machine = std::fs::read_to_string(dir.join("machine.txt")).unwrap_or_default();
    writeln!(md, "\n## Scale: the same calls with up to 1,000,000 customers in the store\n")?;
    writeln!(
        md,
        "`bash bench/scale.sh`: for each size a fresh data directory is loaded by `loyalty-engine import` \
         (every customer with 10 buckets, so 10 opening ledger entries: 10,000,000 at a million customers), \
         then the release engine (embedded store, fsync) serves each workload at 16 clients for the measured \
         seconds, beside the echo floor in the same run; customers are picked uniformly from all of them \
         (10% of calls on 10 hot ones), so most calls read an account the cache has not seen. Then the \
         engine is killed with -9 two seconds into an Accrue run and restarted: *recovery* is the time \
         from the restart to its \"listening\" line.\n\n```\n{}```\n",
        machine
    )?;
    let value = |run: &ScaleRun, key: &str| run.facts.get(key).copied().unwrap_or(f64::NAN);
    writeln!(
        md,
        "| customers | ledger entries | import s (rows/s) | bytes on disk / customer | engine peak RSS MiB | restart after clean stop s | recovery after kill -9 s |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|")?;
    for run in &runs {
        let import = value(run, "import_seconds");
        writeln!(
            md,
            "| {:.0} | {:.0} | {import:.1} ({:.0}) | {:.0} | {:.0} | {:.2} | {:.2} |",
            run.customers,
            value(run, "ledger_entries_imported"),
            run.customers / import,
            value(run, "bytes_after_import") / run.customers,
            value(run, "rss_peak_kib") / 1024.0,
            value(run, "open_seconds"),
            value(run, "recovery_seconds"),
        )?;
    }
    writeln!(
        md,
        "\n| workload (16 clients) | customers | rps | floor rps | rps / floor | p50 ms | p99 ms | errors | bytes written per call |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (stem, title, _) in WORKLOADS {
        for run in &runs {
            let Some((_, engine, floor)) = run.workloads.iter().find(|(name, _, _)| name == stem) else {
                continue;
            };
            let written = value(run, &format!("{stem}_write_bytes"));
            let calls = engine.rps * run.facts.get("load_seconds").copied().unwrap_or(f64::NAN);
            let per_call = if calls.is_nan() { "–".to_owned() } else { format!("{:.0}", written / calls) };
            writeln!(
                md,
                "| {title} | {:.0} | {:.0} | {:.0} | {:.0}% | {} | {} | {} | {per_call} |",
                run.customers,
                engine.rps,
                floor.rps,
                100.0 * engine.rps / floor.rps,
                ms(engine.p50),
                ms(engine.p99),
                engine.errors
            )?;
        }
    }
    if let (Some(first), Some(last)) = (runs.first(), runs.last())
        && runs.len() > 1
    {
        writeln!(md, "\nAt {:.0} customers against {:.0}:", last.customers, first.customers)?;
        for (stem, title, _) in WORKLOADS {
            let rps = |run: &ScaleRun| run.workloads.iter().find(|(name, _, _)| name == stem).map(|(_, engine, _)| engine.rps);
            if let (Some(small), Some(large)) = (rps(first), rps(last)) {
                let change = 100.0 * (large / small - 1.0);
                let verdict = if change >= -20.0 { "within 20%" } else { "**more than 20% slower**" };
                writeln!(md, "- {title}: {change:+.1}% calls/s ({verdict}).")?;
            }
        }
    }
    scale_plot(&plots.join("scale-rps.svg"), "Calls per second at 16 clients", "calls/s", &runs, |engine| engine.rps)?;
    scale_plot(&plots.join("scale-p99.svg"), "p99 latency at 16 clients", "p99 (ms)", &runs, |engine| engine.p99)?;
    writeln!(md, "\n![calls per second against customers]({}/scale-rps.svg)\n", plots_rel.display())?;
    writeln!(md, "![p99 against customers]({}/scale-p99.svg)", plots_rel.display())?;
    Ok(())
}

/// One line per workload of `measure` against the customers in the store (log scale).
fn scale_plot(path: &Path, title: &str, y_desc: &str, runs: &[ScaleRun], measure: impl Fn(&Stats) -> f64) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let values = runs.iter().flat_map(|run| run.workloads.iter().map(|(_, engine, _)| measure(engine)));
    let y_max = values.fold(0.1_f64, f64::max) * 1.15;
    let x_min = runs.first().map_or(1.0, |run| run.customers) / 2.0;
    let x_max = runs.last().map_or(10.0, |run| run.customers) * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..y_max)?;
    chart.configure_mesh().x_desc("customers in the store").y_desc(y_desc).x_label_formatter(&|x| format!("{x:.0}")).draw()?;
    let colors = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
    for ((stem, title, _), color) in WORKLOADS.iter().zip(colors) {
        let points: Vec<(f64, f64)> = runs
            .iter()
            .filter_map(|run| run.workloads.iter().find(|(name, _, _)| name == stem).map(|(_, engine, _)| (run.customers, measure(engine))))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(*title)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|point| Circle::new(point, 3, color.filled())))?;
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).draw()?;
    root.present()?;
    Ok(())
}
