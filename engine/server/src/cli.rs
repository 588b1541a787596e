//! The `loyalty-engine` command line: flags and environment variables over the config file, then
//! `serve` (the default), `verify` (check every ledger in the data directory), `import`, `restore`,
//! `migrate`, `keygen` or `check-config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use loyalty_store::Store;
use loyalty_store::embedded::{Durability, EmbeddedStore};

use crate::clock::{Clock, SystemClock};
use crate::config::{Backend, Config, LogFormat};
use crate::engine::Engine;
use crate::ids::UuidIds;
use crate::programs::Programs;

#[derive(Debug, Parser)]
#[command(
    name = "loyalty-engine",
    version,
    about = "Loyalty transaction engine: the gRPC checkout API (loyalty.v1) over an embedded durable store."
)]
pub struct Cli {
    /// TOML configuration file (see deploy/loyalty.toml); flags and environment override it.
    #[arg(long, env = "LOYALTY_CONFIG", value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051]. Port 0 picks a free port (printed on start).
    #[arg(long, env = "LOYALTY_LISTEN", value_name = "HOST:PORT", global = true)]
    pub listen: Option<SocketAddr>,
    /// Prometheus /metrics listen address, or "off" [default: 127.0.0.1:9464].
    #[arg(long, env = "LOYALTY_METRICS_LISTEN", value_name = "HOST:PORT|off", global = true)]
    pub metrics_listen: Option<String>,
    /// Directory of the embedded store [default: ./data].
    #[arg(long, env = "LOYALTY_DATA_DIR", value_name = "PATH", global = true)]
    pub data_dir: Option<PathBuf>,
    /// fsync (acknowledged = on disk; default) or none (benchmarks only).
    #[arg(long, env = "LOYALTY_DURABILITY", value_enum, global = true)]
    pub durability: Option<DurabilityArg>,
    /// Storage backend: embedded (default) or scylla.
    #[arg(long, env = "LOYALTY_STORAGE_BACKEND", value_enum, global = true)]
    pub storage_backend: Option<Backend>,
    /// ScyllaDB contact points, comma-separated host:port.
    #[arg(long, env = "LOYALTY_SCYLLA_NODES", value_name = "HOST:PORT,...", value_delimiter = ',', global = true)]
    pub scylla_nodes: Option<Vec<String>>,
    /// ScyllaDB data center this engine runs in.
    #[arg(long, env = "LOYALTY_SCYLLA_LOCAL_DC", value_name = "DC", global = true)]
    pub scylla_local_dc: Option<String>,
    /// ScyllaDB keyspace [default: loyalty].
    #[arg(long, env = "LOYALTY_SCYLLA_KEYSPACE", value_name = "NAME", global = true)]
    pub scylla_keyspace: Option<String>,
    /// ScyllaDB user (PasswordAuthenticator).
    #[arg(long, env = "LOYALTY_SCYLLA_USERNAME", value_name = "USER", global = true)]
    pub scylla_username: Option<String>,
    /// Credentials (key digests) seeding programs that have none stored yet.
    #[arg(long, env = "LOYALTY_CREDENTIALS_FILE", value_name = "PATH", global = true)]
    pub credentials_file: Option<PathBuf>,
    /// ScyllaDB password: only from the environment, never a flag (flags show in `ps`).
    #[arg(skip)]
    pub scylla_password: Option<String>,
    /// Log filter, e.g. info or loyalty_engine=debug [default: info].
    #[arg(long, env = "LOYALTY_LOG", value_name = "FILTER", global = true)]
    pub log: Option<String>,
    /// Log format [default: text].
    #[arg(long, env = "LOYALTY_LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API (the default).
    Serve,
    /// Check every account in the data directory against its ledger, then exit: names every
    /// account that is damaged (a record that does not read, a ledger that does not add up) and
    /// exits non-zero if any is; the others are readable.
    Verify {
        /// Also write every account, a line each: `program<TAB>account<TAB>ok` or `damaged: why`.
        #[arg(long, value_name = "FILE")]
        list: Option<PathBuf>,
    },
    /// Validate the configuration and print it, then exit.
    CheckConfig,
    /// Make an API key for a credential: prints the key (for the integration, once) and the entry
    /// for `security.credentials_file` (its digest), then exits. Nothing is stored.
    Keygen {
        #[arg(long)]
        program: String,
        /// 3 to 40 of a-z, 0-9 and '-'.
        #[arg(long)]
        id: String,
        /// Comma-separated: checkout, read_only, partner_issue_certificates, customer_app, admin.
        #[arg(long, value_delimiter = ',', default_value = "checkout")]
        scopes: Vec<String>,
    },
    /// Put a backup (from the admin API's `BackupStore`) in place of the data directory's store,
    /// the engine stopped: every ledger of the backup is verified first; the replaced file stays
    /// beside it as `loyalty.redb.replaced`. Calls acknowledged after the backup are lost.
    Restore {
        /// The backup file.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
    /// Import a chain's customers from the platform it moves from (JSON lines; docs/import.md):
    /// one account per row with its balances to the point, idempotent by row ID (a rerun after a
    /// crash imports each row once). Rows refused go to the rejects file with the reason. On the
    /// embedded store the engine must be stopped; over ScyllaDB engines may serve meanwhile.
    Import {
        /// The program the customers join.
        #[arg(long)]
        program: String,
        /// The file: one JSON object per line.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Where refused rows are written [default: FILE.rejects.jsonl].
        #[arg(long, value_name = "FILE")]
        rejects: Option<PathBuf>,
        /// Rows in flight at once (they share group commits).
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
    /// Print a program's figures over a period (docs/reports.md): points earned, spent, expired,
    /// the rates, purchases, customers, the points outstanding. Folds the outbox's new events into
    /// the stored figures first. On the embedded store the engine must be stopped.
    Report {
        #[arg(long)]
        program: String,
        /// First day, the program's local date (YYYY-MM-DD).
        #[arg(long)]
        from: String,
        /// Last day, included.
        #[arg(long)]
        to: String,
        /// One store's figures [default: every store].
        #[arg(long)]
        store: Option<String>,
        /// A table for people, or JSON or CSV for a spreadsheet.
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
    },
    /// Create the ScyllaDB keyspace and apply the schema migrations not applied yet, then exit.
    Migrate {
        /// The versioned CQL files.
        #[arg(long, env = "LOYALTY_SCHEMA_DIR", value_name = "PATH", default_value = "deploy/cql")]
        schema_dir: PathBuf,
    },
}

/// How `report` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DurabilityArg {
    Fsync,
    None,
}

impl Cli {
    /// The configuration: file (if any), then flags and environment on top, validated.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(metrics) = &self.metrics_listen {
            config.metrics_listen = match metrics.as_str() {
                "off" | "" => None,
                addr => Some(addr.parse().with_context(|| format!("--metrics-listen: '{addr}' is not HOST:PORT or off"))?),
            };
        }
        if let Some(path) = &self.credentials_file {
            config.security.credentials_file = Some(path.clone());
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(durability) = self.durability {
            config.storage.durability = match durability {
                DurabilityArg::Fsync => Durability::Fsync,
                DurabilityArg::None => Durability::None,
            };
        }
        if let Some(backend) = self.storage_backend {
            config.storage.backend = backend;
        }
        let scylla = &mut config.storage.scylla;
        if let Some(nodes) = &self.scylla_nodes {
            scylla.nodes = nodes.iter().map(|node| node.trim().to_owned()).filter(|node| !node.is_empty()).collect();
        }
        if let Some(dc) = &self.scylla_local_dc {
            scylla.local_dc = dc.clone();
        }
        if let Some(keyspace) = &self.scylla_keyspace {
            scylla.keyspace = keyspace.clone();
        }
        if let Some(user) = &self.scylla_username {
            scylla.username = user.clone();
        }
        scylla.password = self.scylla_password.clone().or_else(|| std::env::var("LOYALTY_SCYLLA_PASSWORD").ok());
        if let Some(filter) = &self.log {
            config.log.filter = filter.clone();
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs the command line; the binary's whole `main`.
pub fn main_with_args(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            // Reads and compiles every rule file too, so a bad rule fails here, not at start; the
            // same for the TLS certificate and key files.
            let programs = Programs::from_config(&config)?;
            config.tls.server_config().context("loading the [tls] files")?;
            if let Some(path) = &config.security.credentials_file {
                crate::auth::seed::load(path, &programs.ids(), SystemClock.now())
                    .map_err(|problems| anyhow::anyhow!("invalid credentials file:\n  {}", problems.join("\n  ")))?;
            }
            println!("{config:#?}");
            println!("tls: {}", config.tls.describe());
            for program_id in programs.ids() {
                if let Some(program) = programs.get(&program_id) {
                    println!("program {program_id}: {} active rules", program.rules.active_rule_ids().count());
                }
            }
            Ok(())
        }
        Command::Migrate { schema_dir } => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let applied = runtime.block_on(loyalty_store::scylla::migrate(&config.scylla_store(), &schema_dir, &SystemClock))?;
            let keyspace = &config.storage.scylla.keyspace;
            if applied.is_empty() {
                println!("keyspace {keyspace} is up to date");
            } else {
                println!("keyspace {keyspace}: applied {}", applied.join(", "));
            }
            Ok(())
        }
        Command::Keygen { program, id, scopes } => {
            anyhow::ensure!(crate::auth::keys::is_credential_id(&id), "--id: 3 to 40 of a-z, 0-9 and '-'");
            anyhow::ensure!(crate::config::is_valid_id(&program, 64), "--program: not a program ID");
            for scope in &scopes {
                serde_json::from_value::<crate::auth::Scope>(serde_json::Value::String(scope.clone()))
                    .map_err(|_| anyhow::anyhow!("--scopes: unknown scope {scope}"))?;
            }
            let key = crate::auth::keys::generate(&program, &id)?;
            println!("{key}");
            println!();
            println!("[[credentials]]");
            println!("program = \"{program}\"");
            println!("id = \"{id}\"");
            println!("scopes = [{}]", scopes.iter().map(|scope| format!("\"{scope}\"")).collect::<Vec<_>>().join(", "));
            println!("key_sha256 = \"{}\"", crate::auth::keys::digest(&key));
            Ok(())
        }
        Command::Verify { list } => {
            anyhow::ensure!(config.storage.backend == Backend::Embedded, "verify reads the embedded store's file; it has no ScyllaDB mode");
            let store = EmbeddedStore::open(config.embedded_store())?;
            let mut lines = match &list {
                Some(path) => {
                    Some(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?))
                }
                None => None,
            };
            let mut written: std::io::Result<()> = Ok(());
            // The internal accounts of sales without a customer are checked like every account
            // (their ledgers are empty) but are nobody's: counted apart, left out of the list.
            let mut sales_accounts = 0u64;
            let verification = store.verify_accounts(|check| {
                if loyalty_core::figures::is_sales_account(&check.account_id) && check.outcome.is_ok() {
                    sales_accounts += 1;
                    return;
                }
                if let Some(lines) = lines.as_mut() {
                    use std::io::Write;
                    let outcome = match &check.outcome {
                        Ok(_) => "ok".to_owned(),
                        Err(why) => format!("damaged: {why}"),
                    };
                    if written.is_ok() {
                        written = writeln!(lines, "{}\t{}\t{outcome}", check.program_id, check.account_id);
                    }
                }
            })?;
            if let Some(mut lines) = lines {
                use std::io::Write;
                written.and_then(|()| lines.flush()).context("writing the account list")?;
            }
            let (accounts, entries) = (verification.accounts.saturating_sub(sales_accounts), verification.entries);
            if verification.damaged.is_empty() {
                println!(
                    "ok: {accounts} accounts, {entries} ledger entries agree with their balances \
                     ({sales_accounts} internal accounts of sales without a customer checked too)"
                );
                // What the file's bytes are: per table, and per ledger entry (about one a call).
                println!(
                    "{:<12} {:>12} {:>14} {:>14} {:>14} {:>10}",
                    "table", "rows", "stored bytes", "B-tree bytes", "free in pages", "per entry"
                );
                for table in store.table_sizes()? {
                    let per_entry = (table.stored_bytes + table.metadata_bytes + table.fragmented_bytes) as f64 / entries.max(1) as f64;
                    println!(
                        "{:<12} {:>12} {:>14} {:>14} {:>14} {:>10.0}",
                        table.name, table.rows, table.stored_bytes, table.metadata_bytes, table.fragmented_bytes, per_entry
                    );
                }
                return Ok(());
            }
            for damaged in &verification.damaged {
                println!("damaged: program {} account {}: {}", damaged.program_id, damaged.account_id, damaged.what);
            }
            anyhow::bail!(
                "{} accounts damaged (listed above); {accounts} accounts ({entries} ledger entries) read and agree with their balances. \
                 Keep this file for analysis and restore the newest backup (README, Backups); the readable accounts' balances are as listed{}",
                verification.damaged.len(),
                list.as_ref().map_or(String::new(), |path| format!(" in {}", path.display()))
            )
        }
        Command::Restore { from } => {
            anyhow::ensure!(
                config.storage.backend == Backend::Embedded,
                "restore puts back the embedded store's file; ScyllaDB restores from its own snapshots"
            );
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (accounts, entries) = runtime
                .block_on(EmbeddedStore::restore(&from, &config.embedded_store()))
                .with_context(|| format!("restoring {}", from.display()))?;
            println!("restored {}: {accounts} accounts, {entries} ledger entries agree with their balances", from.display());
            Ok(())
        }
        Command::Import { program, file, rejects, concurrency } => {
            crate::telemetry::init_tracing(&config.log)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("import").build()?;
            runtime.block_on(import(config, &program, &file, rejects, concurrency))
        }
        Command::Report { program, from, to, store, format } => {
            crate::telemetry::init_tracing(&config.log)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("report").build()?;
            runtime.block_on(report(config, &program, (&from, &to), store.as_deref(), format))
        }
        Command::Serve => {
            crate::telemetry::init_tracing(&config.log)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("engine").build()?;
            runtime.block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if let Some(metrics) = config.metrics_listen {
        crate::telemetry::init_metrics(metrics)?;
    }
    let programs = Programs::from_config(&config)?;
    // Before the store opens: a bad certificate or key file is a start-up error naming the file.
    let tls = config.tls.server_config().context("loading the [tls] files")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&config, Arc::clone(&clock)).await?;
    let engine = Arc::new(Engine::new(Arc::clone(&store), programs, clock, Arc::new(UuidIds), config.storage.cached_accounts));
    if let Some(dir) = &config.storage.backup_dir {
        engine.set_backups(crate::backups::Backups::new(dir.clone(), config.storage.backups_kept));
    }
    engine.bootstrap_rules().await.context("loading the programs' rules")?;
    let seeds = match &config.security.credentials_file {
        Some(path) => crate::auth::seed::load(path, &engine.programs().ids(), engine.now())
            .map_err(|problems| anyhow::anyhow!("invalid credentials file:\n  {}", problems.join("\n  ")))?,
        None => Default::default(),
    };
    engine.access.set_rate_defaults(crate::auth::RateDefaults {
        per_second: config.security.rate_per_second_default,
        burst: config.security.burst_default,
    });
    for generated in engine.bootstrap_access(&seeds).await.context("loading the programs' credentials")? {
        let path = crate::auth::seed::write_bootstrap_key(&config.data_dir, &generated.program_id, &generated.api_key)
            .context("writing the generated admin key")?;
        // The path, never the key: logs are read by more people than the key is meant for.
        tracing::warn!(program = generated.program_id.as_str(), path = %path.display(), "no credentials configured: an admin key was generated");
        println!("loyalty-engine admin key for program {} written to {}", generated.program_id, path.display());
    }
    let refresh = crate::background::spawn_refresh(Arc::clone(&engine), Duration::from_millis(config.rules_refresh_ms));
    let credits = crate::background::spawn_credit_applier(Arc::clone(&engine), Duration::from_millis(config.rules_refresh_ms));
    let relay = crate::background::spawn_relay_recovery(Arc::clone(&engine), Duration::from_secs(10));
    let figures = crate::background::spawn_figures(Arc::clone(&engine), Duration::from_millis(config.rules_refresh_ms));
    let sweep = (config.schedule_sweep_minutes > 0)
        .then(|| crate::background::spawn_schedule_sweep(Arc::clone(&engine), Duration::from_secs(config.schedule_sweep_minutes * 60)));
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, store = ?store, tls = config.tls.describe(), "loyalty engine started");
    if !config.tls.is_enabled() && !local.ip().is_loopback() {
        tracing::warn!(listen = %local, "TLS is off on a non-loopback address: API keys and customer data cross the network in plaintext");
    }
    println!("loyalty-engine tls: {}", config.tls.describe());
    // A line on stdout that scripts and tests wait for (it carries the port when --listen used :0).
    println!("loyalty-engine listening on {local}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    let stop = async move {
        let _ = stop_rx.await;
    };
    let mut server = tokio::spawn(crate::server::serve(listener, Arc::clone(&engine), config.limits.clone(), stop, tls));
    // The grace counts from the signal, over both waits: the connections, then the calls.
    let mut grace_ends = None;
    let outcome = tokio::select! {
        () = shutdown_signal() => {
            grace_ends = Some(tokio::time::Instant::now() + grace);
            tracing::info!("shutting down: refusing new calls, draining in-flight calls");
            engine.calls().close();
            let _ = stop_tx.send(());
            match tokio::time::timeout(grace, &mut server).await {
                Ok(Ok(Ok(()))) => {
                    tracing::info!("connections closed");
                    Ok(())
                }
                Ok(Ok(Err(error))) => Err(anyhow::anyhow!("server stopped with an error: {error}")),
                Ok(Err(error)) => Err(anyhow::anyhow!("server task failed: {error}")),
                Err(_) => {
                    tracing::warn!(grace_seconds = grace.as_secs(), "connections still open after the grace period");
                    Ok(())
                }
            }
        }
        // The server should only stop when told to; if it stops by itself, flush and exit non-zero.
        stopped = &mut server => Err(match stopped {
            Ok(Ok(())) => anyhow::anyhow!("server stopped unexpectedly"),
            Ok(Err(error)) => anyhow::anyhow!("server failed: {error}"),
            Err(error) => anyhow::anyhow!("server task failed: {error}"),
        }),
    };
    refresh.abort();
    credits.abort();
    relay.abort();
    figures.abort();
    if let Some(sweep) = sweep {
        sweep.abort();
    }
    // The server returning does not mean its calls have: a stream's task can outlive its
    // connection. The store is shut only after the last call inside the engine has its answer.
    let grace_left = grace_ends.map_or(grace, |ends| ends.saturating_duration_since(tokio::time::Instant::now()));
    let left = engine.close_after_calls(grace_left).await;
    if left == 0 {
        tracing::info!("all calls drained; store flushed");
    } else {
        tracing::warn!(calls = left, "calls still inside the engine after the grace period; store flushed without them");
    }
    outcome
}

/// Prints a program's figures (see `Command::Report`).
async fn report(
    config: Config,
    program_id: &str,
    (from, to): (&str, &str),
    store: Option<&str>,
    format: ReportFormat,
) -> anyhow::Result<()> {
    let (from, to) = crate::grpc::convert::period(from, to, 3660).map_err(|rejection| anyhow::anyhow!("{rejection}"))?;
    let programs = Programs::from_config(&config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store_handle = open_store(&config, Arc::clone(&clock)).await?;
    let engine = Engine::new(store_handle, programs, clock, Arc::new(UuidIds), 16);
    engine.bootstrap_rules().await.context("loading the programs' rules")?;
    let program = engine.program(program_id).map_err(|error| anyhow::anyhow!("program {program_id}: {error}"))?;
    let folded = engine.reports.catch_up(program_id).await.context("folding the outbox into the figures")?;
    let (report, through_seq) = engine.reports.report(&program, from, to, store).await.context("reading the figures")?;
    engine.close_after_calls(Duration::from_secs(5)).await;
    let wire = crate::grpc::convert::figures(&program.policy, &report, through_seq);
    let rows = figure_rows(&wire);
    match format {
        ReportFormat::Json => {
            let object: serde_json::Map<String, serde_json::Value> =
                rows.iter().map(|(name, value)| ((*name).to_owned(), serde_json::Value::String(value.clone()))).collect();
            println!("{}", serde_json::to_string_pretty(&object)?);
        }
        ReportFormat::Csv => {
            println!("{}", rows.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(","));
            println!("{}", rows.iter().map(|(_, value)| value.as_str()).collect::<Vec<_>>().join(","));
        }
        ReportFormat::Table => {
            println!(
                "program {program_id}, {from} to {to}, {} ({folded} new outbox events folded)",
                store.map_or("every store".to_owned(), |store| format!("store {store}"))
            );
            for (name, value) in &rows {
                println!("  {name:<30} {value}");
            }
        }
    }
    Ok(())
}

/// A report's figures by name, in the order the table, JSON and CSV show them.
fn figure_rows(report: &loyalty_proto::admin::ReadFiguresResponse) -> Vec<(&'static str, String)> {
    let points = report.points.clone().unwrap_or_default();
    vec![
        ("from", report.from.clone()),
        ("to", report.to.clone()),
        ("store_id", report.store_id.clone()),
        ("points_earned", points.earned),
        ("points_bonus", points.bonus),
        ("points_spent", points.spent),
        ("points_expired", points.expired),
        ("points_returned", points.returned),
        ("points_clawed_back", points.clawed_back),
        ("points_adjusted", points.adjusted),
        ("points_merged", points.merged),
        ("points_opened", points.opened),
        ("outstanding", report.outstanding.clone()),
        ("redemption_rate", report.redemption_rate.clone()),
        ("breakage_rate", report.breakage_rate.clone()),
        ("effective_discount", report.effective_discount.clone()),
        ("purchases", report.purchases.to_string()),
        ("paid", report.paid.clone()),
        ("average_receipt", report.average_receipt.clone()),
        ("active_customers", report.active_customers.to_string()),
        ("repeat_customers", report.repeat_customers.to_string()),
        ("repeat_rate", report.repeat_rate.clone()),
        ("purchases_per_customer", report.purchases_per_customer.clone()),
        ("days_between_purchases", report.days_between_purchases.clone()),
        ("enrolled", report.enrolled.to_string()),
        ("unidentified_purchases", report.unidentified_purchases.to_string()),
        ("unidentified_paid", report.unidentified_paid.clone()),
        ("unidentified_average_receipt", report.unidentified_average_receipt.clone()),
        ("identified_uplift", report.identified_uplift.clone()),
        ("expiring_30d", report.expiring_30d.clone()),
        ("expiring_90d", report.expiring_90d.clone()),
        ("never_expiring", report.never_expiring.clone()),
        ("through_seq", report.through_seq.to_string()),
    ]
}

/// Accounts an import keeps in memory: it writes each once and never reads it again.
const IMPORT_CACHED_ACCOUNTS: usize = 4096;

async fn import(
    config: Config,
    program_id: &str,
    file: &std::path::Path,
    rejects: Option<PathBuf>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let programs = Programs::from_config(&config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&config, Arc::clone(&clock)).await?;
    let engine = Arc::new(Engine::new(Arc::clone(&store), programs, clock, Arc::new(UuidIds), IMPORT_CACHED_ACCOUNTS));
    engine.bootstrap_rules().await.context("loading the programs' rules")?;
    let rejects = rejects.unwrap_or_else(|| crate::import::default_rejects_path(file));
    let started = std::time::Instant::now();
    let report = crate::import::import_file(Arc::clone(&engine), program_id, file, &rejects, concurrency).await;
    engine.close_after_calls(Duration::from_secs(5)).await;
    let report = report?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}: {} rows in {seconds:.1} s ({:.0} rows/s): {} imported, {} imported before, {} rejected; {} points opened",
        file.display(),
        report.rows,
        report.rows as f64 / seconds.max(1e-9),
        report.imported,
        report.already,
        report.rejected,
        report.points
    );
    if report.rejected > 0 {
        println!("rejected rows, with line and reason: {}", rejects.display());
    }
    Ok(())
}

/// The configured store: the embedded file, or a ScyllaDB session (migrated first if configured)
/// that tells the time by the engine's `clock`.
pub async fn open_store(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn Store>> {
    match config.storage.backend {
        Backend::Embedded => {
            let store_config = config.embedded_store();
            let store = EmbeddedStore::open(store_config.clone()).with_context(|| format!("opening {}", store_config.path.display()))?;
            Ok(Arc::new(store))
        }
        Backend::Scylla => {
            let scylla = config.scylla_store();
            if config.storage.scylla.migrate_on_start {
                let dir = std::env::var_os("LOYALTY_SCHEMA_DIR").map_or_else(|| PathBuf::from("deploy/cql"), PathBuf::from);
                loyalty_store::scylla::migrate(&scylla, &dir, clock.as_ref()).await.context("migrating the ScyllaDB schema")?;
            }
            let store = loyalty_store::scylla::ScyllaStore::connect(scylla, clock)
                .await
                .with_context(|| format!("connecting to ScyllaDB at {}", config.storage.scylla.nodes.join(",")))?;
            Ok(store)
        }
    }
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "no SIGTERM handler");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
