//! Configuration: a TOML file, overridden by environment variables and command-line flags, with
//! defaults that run a demo program on a local data directory. Everything is validated at start,
//! and every error names its key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use loyalty_core::basket::BasketLimits;
use loyalty_core::identity::PhonePlan;
use loyalty_core::program::{PendingRule, PointsRounding, ProgramPolicy, RefundPolicy};
use loyalty_store::embedded::{Durability, EmbeddedConfig};
use rust_decimal::Decimal;
use serde::Deserialize;

/// A configuration that cannot run, with every reason found.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Prometheus /metrics listen address; `"off"` (in the file, as on the command line) disables
    /// the endpoint.
    #[serde(deserialize_with = "address_or_off")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where the embedded store keeps its file.
    pub data_dir: PathBuf,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    /// TLS and mutual TLS on the gRPC listener; absent: plaintext.
    pub tls: crate::tls::TlsConfig,
    /// Longest wait for in-flight calls to finish after SIGTERM.
    pub shutdown_grace_seconds: u64,
    /// How often each engine checks the store for a newer rules version (another engine's admin
    /// change); changes made through this engine apply at once.
    pub rules_refresh_ms: u64,
    /// How often the daily sweep of schedule rules (birthday and win-back certificates) runs, which
    /// also counts the customers' RFM segments (`ListSegments` is as fresh as this); 0 turns it off
    /// on this engine (with many engines, one sweeping is enough, though any number pays each award
    /// once).
    pub schedule_sweep_minutes: u64,
    pub security: crate::auth::seed::SecurityConfig,
    pub programs: Vec<ProgramConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            data_dir: PathBuf::from("./data"),
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            tls: crate::tls::TlsConfig::default(),
            shutdown_grace_seconds: 20,
            rules_refresh_ms: 2000,
            schedule_sweep_minutes: 60,
            security: crate::auth::seed::SecurityConfig::default(),
            programs: Vec::new(),
        }
    }
}

/// Which store holds the data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// One process, one redb file in `data_dir` (the default).
    #[default]
    Embedded,
    /// Any number of engine processes over one ScyllaDB cluster (`[storage.scylla]`).
    Scylla,
}

/// The storage settings: the backend, the embedded store's settings, and ScyllaDB's.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: Backend,
    pub scylla: ScyllaSection,
    /// `fsync` (default): acknowledged means on disk. `none`: for benchmarks only.
    pub durability: Durability,
    /// Most calls that share one commit and fsync.
    pub group_commit_batch_max: usize,
    /// Calls that may wait for the writer.
    pub group_commit_queue_max: usize,
    pub cache_mib: usize,
    /// Accounts (and as many identifiers) the engine keeps in memory; past it, idle ones are
    /// evicted and read again from the store when next used. With `cache_mib` this bounds the
    /// engine's memory whatever the number of customers in the store.
    pub cached_accounts: usize,
    /// Make reopening after a crash take milliseconds (redb quick-repair), at some cost to each
    /// durable redb commit (with the journal, only the checkpoints, off the calls' path); without
    /// it, reopening after a crash scans the whole file.
    pub quick_repair: bool,
    /// Make batches durable through a write-ahead journal and keep the database file's writes
    /// off the calls' path (applied and checkpointed in the background). Off: every batch is a
    /// durable commit of the file itself.
    pub journal: bool,
    /// Journal size (MiB) after which the database file is made durable (a checkpoint) and the
    /// journal moves to a new segment; bounds the replay after a crash and, times four, the
    /// acknowledged calls held in memory until the file has them.
    pub checkpoint_mib: u64,
    /// Where `BackupStore` (admin API) writes online backups of the embedded store,
    /// `loyalty-<UTC time>.redb`; absent: backups are off. Relative to the working directory, like
    /// `data_dir`. A backup holds every program's data.
    pub backup_dir: Option<PathBuf>,
    /// Backups kept in `backup_dir`; older ones are deleted after each new one (24: a day of hourly).
    pub backups_kept: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: Backend::Embedded,
            scylla: ScyllaSection::default(),
            durability: Durability::Fsync,
            group_commit_batch_max: 256,
            group_commit_queue_max: 4096,
            cache_mib: 256,
            cached_accounts: 1_000_000,
            quick_repair: true,
            journal: true,
            checkpoint_mib: 16,
            backup_dir: None,
            backups_kept: 24,
        }
    }
}

/// The ScyllaDB backend's settings (`[storage.scylla]`); see `deploy/loyalty-scylla.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaSection {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// This engine's data center: requests stay in it (LOCAL_QUORUM, LOCAL_SERIAL).
    pub local_dc: String,
    pub keyspace: String,
    /// Replicas per data center, for `migrate`.
    pub replication: std::collections::BTreeMap<String, u32>,
    /// With several data centers: true if engines write from one of them only (active-passive),
    /// which keeps lightweight transactions at LOCAL_SERIAL; otherwise they run at SERIAL.
    pub single_writer_dc: bool,
    /// `migrate` creates the keyspace with tablets on (true) or off (false); absent: the server's
    /// default (servers before 6.0 reject the option). Lightweight transactions need them off on
    /// ScyllaDB 2025.x.
    pub tablets: Option<bool>,
    /// PasswordAuthenticator user; the password comes from LOYALTY_SCYLLA_PASSWORD.
    pub username: String,
    #[serde(skip)]
    pub password: Option<String>,
    /// PEM CA bundle; non-empty turns TLS on.
    pub tls_ca_file: Option<PathBuf>,
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// A read not answered after this long is also sent to a second replica; 0: never.
    pub speculative_delay_ms: u64,
    /// Outbox events become readable this long after their relay.
    pub relay_settle_ms: u64,
    /// How long a commit's own relay may take before the recovery pass relays for it.
    pub relay_grace_ms: u64,
    /// Apply `deploy/cql` migrations at start (otherwise `loyalty-engine migrate` does).
    pub migrate_on_start: bool,
}

impl Default for ScyllaSection {
    fn default() -> Self {
        ScyllaSection {
            nodes: vec!["127.0.0.1:9042".into()],
            local_dc: "datacenter1".into(),
            keyspace: "loyalty".into(),
            replication: std::collections::BTreeMap::from([("datacenter1".to_owned(), 3)]),
            single_writer_dc: false,
            tablets: None,
            username: String::new(),
            password: None,
            tls_ca_file: None,
            request_timeout_ms: 1000,
            connect_timeout_ms: 5000,
            speculative_delay_ms: 20,
            relay_settle_ms: 5000,
            relay_grace_ms: 30_000,
            migrate_on_start: false,
        }
    }
}

/// Bounds on every request.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest encoded request.
    pub message_bytes_max: usize,
    /// Calls being served at once. A call beyond it waits at most `admission_wait_ms` for a
    /// place (never past its deadline), then is refused with RESOURCE_EXHAUSTED: a short wait
    /// absorbs bursts, and shedding the rest keeps the admitted calls fast under overload.
    pub in_flight_max: usize,
    pub admission_wait_ms: u64,
    /// When the engine's own tasks run this much later than asked (a moving average measured
    /// every millisecond, `grpc::runtime_lag`), the CPU is saturated and new calls are refused
    /// with RESOURCE_EXHAUSTED at once; 0 turns this off.
    pub scheduling_delay_max_ms: u64,
    /// ... calls that write only while at least this many calls are being served: late tasks with
    /// few calls in flight mean another process has the CPU, not that this engine's queues grow,
    /// and refusing then would shed an idle engine's calls. Above `in_flight_max` it counts as
    /// `in_flight_max` (all places taken). Reads
    /// (GetAccount, quotes, history) are shed at twice the delay whatever is in flight: they are
    /// the last thing shed.
    pub shed_in_flight_min: usize,
    pub basket_lines_max: usize,
    /// Longest receipt, store, till, refund or request ID.
    pub id_len_max: usize,
    /// Largest money amount in any field.
    pub amount_max: Decimal,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            message_bytes_max: 1 << 20,
            // Measured (loadtest/overload.sh, loadtest/OVERLOAD.md): at twice the sustainable rate
            // these kept the admitted calls' p99 near 20 ms, where 1024 in flight, 20 ms and no
            // CPU shedding let it reach hundreds of milliseconds or seconds; 256 in flight still
            // covers a ScyllaDB backend's round trips.
            in_flight_max: 256,
            admission_wait_ms: 2,
            scheduling_delay_max_ms: 3,
            shed_in_flight_min: 16,
            basket_lines_max: 500,
            id_len_max: 64,
            amount_max: Decimal::from(1_000_000_000_i64),
        }
    }
}

impl LimitsConfig {
    pub fn basket(&self) -> BasketLimits {
        BasketLimits { lines_max: self.basket_lines_max, amount_max: self.amount_max, ..BasketLimits::default() }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `loyalty_engine=debug`.
    pub filter: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { filter: "info".into(), format: LogFormat::Text }
    }
}

/// One program (tenant). Defaults are those of the supermarket chain in domain.md.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgramConfig {
    pub id: String,
    pub currency: String,
    /// IANA name, e.g. `Asia/Almaty`.
    pub time_zone: String,
    /// Cashback on eligible lines, percent (excise and promo-price lines earn nothing).
    pub cashback_percent: Decimal,
    pub points_scale: u32,
    pub rounding: PointsRounding,
    pub money_scale: u32,
    pub pending: PendingRule,
    pub expiry_months: u32,
    pub hold_ttl_seconds: u32,
    pub hold_ttl_max_seconds: u32,
    /// Share of a receipt points may pay, percent.
    pub redeem_cap_percent: Decimal,
    /// `allow_negative` (debt) or `reject`.
    pub refund_policy: RefundPolicy,
    pub phone_country_code: String,
    pub phone_national_digits: usize,
    pub phone_trunk_prefix: String,
    /// The program's rules (TOML, YAML or JSON, by extension): the first rules version when the
    /// store has none. Without it, the program starts with `cashback_percent` on every line
    /// except excise and promo-price goods. A relative path is read from the configuration file's
    /// folder.
    pub rules_file: Option<PathBuf>,
    /// When spending needs the customer's one-time code: `for_phone` (default: a customer named by
    /// phone number needs one; a scanned card or app token is presence), `always`, or `none`.
    pub customer_code: loyalty_core::presence::CodeRequirement,
    pub customer_code_ttl_seconds: u32,
    /// Wrong codes in a row that lock spending, and for how long.
    pub customer_code_attempts_max: u32,
    pub customer_code_lockout_minutes: u32,
    /// Codes one customer may be issued per hour (each may be a paid message).
    pub customer_codes_per_hour_max: u32,
    /// How many days late a till that was offline may send a receipt (`occurred_at` on Accrue and
    /// Refund): 0 to 28 (the shortest expiry, one month, must outlive the latest receipt).
    pub offline_days_max: u32,
    /// Retention: receipts' stored first answers (what a retry is answered with) older than this
    /// many days are removed by the sweep, keeping what refunds need; a retry after that is told
    /// `RECEIPT_COMPACTED`. 0 keeps them for ever; else 30 to 3650.
    pub answers_kept_days: u32,
    /// A test program for integrators: its clock is the engine's plus an offset that the admin call
    /// `AdvanceClock` moves forward (pending points, expiry, win-back and birthday funnels tested
    /// in minutes). Production programs refuse that call. Off by default.
    pub sandbox: bool,
}

/// Reads a rule file; the error names the file and the problem.
pub fn read_rule_file(path: &std::path::Path) -> Result<loyalty_core::rules::RuleSet, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let format = loyalty_core::rules::compile::format_of_path(&path.to_string_lossy())
        .ok_or_else(|| format!("{}: use a .toml, .yaml, .yml or .json file", path.display()))?;
    loyalty_core::rules::parse_rule_set(&text, format).map_err(|error| format!("{}: {error}", path.display()))
}

impl Default for ProgramConfig {
    fn default() -> Self {
        let policy = ProgramPolicy::with_defaults("demo");
        ProgramConfig {
            id: policy.program_id,
            currency: policy.currency,
            time_zone: policy.time_zone.name().to_owned(),
            cashback_percent: Decimal::ONE,
            points_scale: policy.points_scale,
            rounding: policy.rounding,
            money_scale: policy.money_scale,
            pending: policy.pending,
            expiry_months: policy.expiry_months,
            hold_ttl_seconds: policy.hold_ttl_seconds,
            hold_ttl_max_seconds: policy.hold_ttl_max_seconds,
            redeem_cap_percent: policy.redeem_cap_percent,
            refund_policy: policy.refund_policy,
            phone_country_code: policy.phone_plan.country_code,
            phone_national_digits: policy.phone_plan.national_digits,
            phone_trunk_prefix: policy.phone_plan.trunk_prefix,
            rules_file: None,
            customer_code: loyalty_core::presence::CodeRequirement::ForPhone,
            customer_code_ttl_seconds: policy.presence.code_ttl_seconds,
            customer_code_attempts_max: policy.presence.attempts_max,
            customer_code_lockout_minutes: policy.presence.lockout_seconds / 60,
            customer_codes_per_hour_max: policy.presence.codes_per_hour_max,
            offline_days_max: policy.offline_days_max,
            answers_kept_days: policy.answers_kept_days,
            sandbox: false,
        }
    }
}

/// Whether a string is a valid ID: 1 to `max` of ASCII letters, digits, `.`, `_`, `:` and `-`.
pub fn is_valid_id(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

impl ProgramConfig {
    /// The domain policy, or the problems found (prefixed with `at`).
    pub fn policy(&self, at: &str) -> Result<ProgramPolicy, Vec<String>> {
        let mut problems = Vec::new();
        if !is_valid_id(&self.id, 64) {
            problems.push(format!("{at}.id: 1 to 64 letters, digits, '.', '_', ':' or '-'"));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            problems.push(format!("{at}.currency: an ISO 4217 code such as KZT"));
        }
        let time_zone = chrono_tz::Tz::from_str(&self.time_zone)
            .map_err(|_| problems.push(format!("{at}.time_zone: unknown time zone '{}'", self.time_zone)))
            .ok();
        let percent = |name: &str, value: Decimal, problems: &mut Vec<String>| {
            if value < Decimal::ZERO || value > Decimal::ONE_HUNDRED {
                problems.push(format!("{at}.{name}: a percentage from 0 to 100, not {value}"));
            }
        };
        percent("cashback_percent", self.cashback_percent, &mut problems);
        percent("redeem_cap_percent", self.redeem_cap_percent, &mut problems);
        if self.points_scale > 4 {
            problems.push(format!("{at}.points_scale: at most 4 decimal places"));
        }
        if self.money_scale > 4 {
            problems.push(format!("{at}.money_scale: at most 4 decimal places"));
        }
        if !(1..=240).contains(&self.expiry_months) {
            problems.push(format!("{at}.expiry_months: 1 to 240"));
        }
        if self.hold_ttl_seconds == 0 || self.hold_ttl_seconds > self.hold_ttl_max_seconds || self.hold_ttl_max_seconds > 86_400 {
            problems.push(format!("{at}.hold_ttl_seconds: above 0 and at most hold_ttl_max_seconds (itself at most 86400)"));
        }
        if self.phone_country_code.is_empty() || !self.phone_country_code.bytes().all(|b| b.is_ascii_digit()) {
            problems.push(format!("{at}.phone_country_code: digits, e.g. \"7\""));
        }
        if !(4..=14).contains(&self.phone_national_digits) {
            problems.push(format!("{at}.phone_national_digits: 4 to 14"));
        }
        if !self.phone_trunk_prefix.bytes().all(|b| b.is_ascii_digit()) {
            problems.push(format!("{at}.phone_trunk_prefix: digits or empty"));
        }
        if !(30..=900).contains(&self.customer_code_ttl_seconds) {
            problems.push(format!("{at}.customer_code_ttl_seconds: 30 to 900"));
        }
        if !(1..=20).contains(&self.customer_code_attempts_max) {
            problems.push(format!("{at}.customer_code_attempts_max: 1 to 20"));
        }
        if !(1..=1440).contains(&self.customer_code_lockout_minutes) {
            problems.push(format!("{at}.customer_code_lockout_minutes: 1 to 1440"));
        }
        if !(1..=60).contains(&self.customer_codes_per_hour_max) {
            problems.push(format!("{at}.customer_codes_per_hour_max: 1 to 60"));
        }
        if self.offline_days_max > 28 {
            problems.push(format!("{at}.offline_days_max: 0 to 28"));
        }
        if self.answers_kept_days != 0 && !(30..=3650).contains(&self.answers_kept_days) {
            problems.push(format!("{at}.answers_kept_days: 0 (for ever) or 30 to 3650"));
        }
        match (problems.is_empty(), time_zone) {
            (true, Some(time_zone)) => Ok(ProgramPolicy {
                program_id: self.id.clone(),
                currency: self.currency.clone(),
                time_zone,
                points_scale: self.points_scale,
                rounding: self.rounding,
                money_scale: self.money_scale,
                pending: self.pending,
                expiry_months: self.expiry_months,
                hold_ttl_seconds: self.hold_ttl_seconds,
                hold_ttl_max_seconds: self.hold_ttl_max_seconds,
                redeem_cap_percent: self.redeem_cap_percent,
                refund_policy: self.refund_policy,
                phone_plan: PhonePlan {
                    country_code: self.phone_country_code.clone(),
                    national_digits: self.phone_national_digits,
                    trunk_prefix: self.phone_trunk_prefix.clone(),
                },
                presence: loyalty_core::presence::PresencePolicy {
                    requirement: self.customer_code,
                    code_ttl_seconds: self.customer_code_ttl_seconds,
                    attempts_max: self.customer_code_attempts_max,
                    lockout_seconds: self.customer_code_lockout_minutes * 60,
                    codes_per_hour_max: self.customer_codes_per_hour_max,
                },
                offline_days_max: self.offline_days_max,
                answers_kept_days: self.answers_kept_days,
            }),
            _ => Err(problems),
        }
    }
}

/// `"HOST:PORT"`, or `"off"` (or empty) for none.
fn address_or_off<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    let raw = String::deserialize(deserializer)?;
    match raw.as_str() {
        "off" | "" => Ok(None),
        address => address.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("'{address}' is not HOST:PORT or \"off\""))),
    }
}

impl Config {
    /// Reads a TOML file. The files it names (rules, credentials, TLS certificates and keys, the
    /// ScyllaDB CA) are read from the file's own folder when relative, so a configuration and the
    /// files beside it move together; `data_dir` stays relative to the working directory, like the
    /// `--data-dir` flag.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError { problems: vec![format!("{}: {error}", path.display())] })?;
        let mut config: Config =
            toml::from_str(&text).map_err(|error| ConfigError { problems: vec![format!("{}: {error}", path.display())] })?;
        config.resolve_files_from(path.parent().unwrap_or(std::path::Path::new("")));
        Ok(config)
    }

    /// Makes every relative file name in the configuration relative to `folder` instead.
    fn resolve_files_from(&mut self, folder: &std::path::Path) {
        let rebase = |file: &mut Option<PathBuf>| {
            if let Some(path) = file.as_mut().filter(|path| path.is_relative() && !path.as_os_str().is_empty()) {
                *path = folder.join(&*path);
            }
        };
        for program in &mut self.programs {
            rebase(&mut program.rules_file);
        }
        rebase(&mut self.security.credentials_file);
        rebase(&mut self.tls.cert_file);
        rebase(&mut self.tls.key_file);
        rebase(&mut self.tls.client_ca_file);
        rebase(&mut self.storage.scylla.tls_ca_file);
    }

    /// The programs to serve: the configured ones, or the demo program when none is configured.
    pub fn effective_programs(&self) -> Vec<ProgramConfig> {
        if self.programs.is_empty() { vec![ProgramConfig::default()] } else { self.programs.clone() }
    }

    /// Checks everything; returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for (index, program) in self.effective_programs().iter().enumerate() {
            if let Err(found) = program.policy(&format!("programs[{index}]")) {
                problems.extend(found);
            }
            if !ids.insert(program.id.clone()) {
                problems.push(format!("programs[{index}].id: '{}' appears twice", program.id));
            }
        }
        let storage = &self.storage;
        if !(1..=10_000).contains(&storage.backups_kept) {
            problems.push("storage.backups_kept: 1 to 10000".into());
        }
        if !(1..=4096).contains(&storage.checkpoint_mib) {
            problems.push("storage.checkpoint_mib: 1 to 4096".into());
        }
        if !(1..=10_000).contains(&storage.group_commit_batch_max) {
            problems.push("storage.group_commit_batch_max: 1 to 10000".into());
        }
        if !(1..=1_000_000).contains(&storage.group_commit_queue_max) {
            problems.push("storage.group_commit_queue_max: 1 to 1000000".into());
        }
        let limits = &self.limits;
        if !(1024..=64 << 20).contains(&limits.message_bytes_max) {
            problems.push("limits.message_bytes_max: 1 KiB to 64 MiB".into());
        }
        if !(1..=1_000_000).contains(&limits.in_flight_max) {
            problems.push("limits.in_flight_max: 1 to 1000000".into());
        }
        if limits.admission_wait_ms > 10_000 {
            problems.push("limits.admission_wait_ms: 0 to 10000".into());
        }
        if limits.scheduling_delay_max_ms > 10_000 {
            problems.push("limits.scheduling_delay_max_ms: 0 to 10000 (0 is off)".into());
        }
        if self.security.rate_per_second_default == 0 || self.security.burst_default == 0 {
            problems.push("security.rate_per_second_default, security.burst_default: above 0".into());
        }
        if !(1..=10_000).contains(&limits.basket_lines_max) {
            problems.push("limits.basket_lines_max: 1 to 10000".into());
        }
        if !(8..=256).contains(&limits.id_len_max) {
            problems.push("limits.id_len_max: 8 to 256".into());
        }
        if limits.amount_max <= Decimal::ZERO || limits.amount_max > Decimal::from(1_000_000_000_000_i64) {
            problems.push("limits.amount_max: above 0 and at most 1000000000000".into());
        }
        if self.schedule_sweep_minutes > 24 * 60 {
            problems.push("schedule_sweep_minutes: 0 (off) to 1440".into());
        }
        if !(100..=600_000).contains(&self.rules_refresh_ms) {
            problems.push("rules_refresh_ms: 100 to 600000".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir: required".into());
        }
        self.tls.validate(&mut problems);
        if self.storage.backend == Backend::Scylla {
            let scylla = &self.storage.scylla;
            if scylla.nodes.is_empty() || scylla.nodes.iter().any(|node| !node.contains(':')) {
                problems.push("storage.scylla.nodes: one or more host:port".into());
            }
            let keyspace_ok = scylla.keyspace.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && scylla.keyspace.len() <= 48
                && scylla.keyspace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !keyspace_ok {
                problems.push("storage.scylla.keyspace: a letter, then up to 47 letters, digits or '_'".into());
            }
            if scylla.replication.is_empty() || scylla.replication.values().any(|count| !(1..=9).contains(count)) {
                problems.push("storage.scylla.replication: 1 to 9 replicas for each data center".into());
            }
            if !(10..=60_000).contains(&scylla.request_timeout_ms) {
                problems.push("storage.scylla.request_timeout_ms: 10 to 60000".into());
            }
            if !(100..=600_000).contains(&scylla.relay_settle_ms) {
                problems.push("storage.scylla.relay_settle_ms: 100 to 600000 (relays that take half of it write again)".into());
            }
            if !(1000..=3_600_000).contains(&scylla.relay_grace_ms) {
                problems.push("storage.scylla.relay_grace_ms: 1000 to 3600000".into());
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError { problems }) }
    }

    /// The ScyllaDB backend's settings.
    pub fn scylla_store(&self) -> loyalty_store::scylla::ScyllaConfig {
        use std::time::Duration;
        let section = &self.storage.scylla;
        let mut config = loyalty_store::scylla::ScyllaConfig::new(section.nodes.clone(), &section.keyspace);
        config.local_dc = (!section.local_dc.is_empty()).then(|| section.local_dc.clone());
        config.replication = section.replication.clone();
        config.single_writer_dc = section.single_writer_dc;
        config.tablets = section.tablets;
        config.username = (!section.username.is_empty()).then(|| section.username.clone());
        config.password = section.password.clone();
        config.tls_ca_file = section.tls_ca_file.clone().filter(|path| !path.as_os_str().is_empty());
        config.request_timeout = Duration::from_millis(section.request_timeout_ms);
        config.connect_timeout = Duration::from_millis(section.connect_timeout_ms);
        config.speculative_delay = (section.speculative_delay_ms > 0).then(|| Duration::from_millis(section.speculative_delay_ms));
        config.relay_settle = Duration::from_millis(section.relay_settle_ms);
        config.relay_grace = Duration::from_millis(section.relay_grace_ms);
        config
    }

    /// The embedded store's settings.
    pub fn embedded_store(&self) -> EmbeddedConfig {
        EmbeddedConfig {
            durability: self.storage.durability,
            batch_max: self.storage.group_commit_batch_max,
            queue_max: self.storage.group_commit_queue_max,
            cache_bytes: self.storage.cache_mib << 20,
            quick_repair: self.storage.quick_repair,
            journal: self.storage.journal,
            checkpoint_bytes: self.storage.checkpoint_mib << 20,
            ..EmbeddedConfig::in_dir(&self.data_dir)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_serve_the_demo_program() {
        let config = Config::default();
        assert!(config.validate().is_ok());
        assert_eq!(config.effective_programs()[0].id, "demo");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let config: Config = toml::from_str(
            r#"
            [[programs]]
            id = "shop"
            time_zone = "Mars/Olympus"
            cashback_percent = "150"
            [limits]
            in_flight_max = 0
            "#,
        )
        .expect("parses");
        let error = config.validate().expect_err("invalid");
        let text = error.to_string();
        assert!(text.contains("programs[0].time_zone"), "{text}");
        assert!(text.contains("programs[0].cashback_percent"), "{text}");
        assert!(text.contains("limits.in_flight_max"), "{text}");
    }

    #[test]
    fn metrics_can_be_turned_off_in_the_file_and_a_bad_address_names_its_key() {
        let config: Config = toml::from_str("metrics_listen = \"off\"").expect("off parses");
        assert_eq!(config.metrics_listen, None);
        let config: Config = toml::from_str("metrics_listen = \"0.0.0.0:9500\"").expect("an address parses");
        assert_eq!(config.metrics_listen, Some(SocketAddr::from(([0, 0, 0, 0], 9500))));
        assert_eq!(Config::default().metrics_listen, Some(SocketAddr::from(([127, 0, 0, 1], 9464))), "absent: the default");
        let error = toml::from_str::<Config>("metrics_listen = \"nine\"").expect_err("refused").to_string();
        assert!(error.contains("metrics_listen") && error.contains("'nine' is not HOST:PORT or \"off\""), "{error}");
    }

    #[test]
    fn files_named_in_a_config_file_are_read_from_its_folder_and_data_dir_from_the_working_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("programs")).expect("programs folder");
        std::fs::write(
            dir.path().join("programs/shop.toml"),
            "[[rules]]\nid = \"base\"\neffect = { kind = \"percent_of_lines\", percent = \"2\" }\n",
        )
        .expect("rules file");
        let file = dir.path().join("loyalty.toml");
        let text = "data_dir = \"./data\"\n[security]\ncredentials_file = \"keys.toml\"\n[tls]\ncert_file = \"/etc/loyalty/server.pem\"\n\
                    key_file = \"tls/server.key\"\n[[programs]]\nid = \"shop\"\nrules_file = \"programs/shop.toml\"\n";
        std::fs::write(&file, text).expect("config file");
        let config = Config::from_file(&file).expect("reads");
        assert_eq!(config.programs[0].rules_file.as_deref(), Some(dir.path().join("programs/shop.toml").as_path()));
        assert_eq!(config.security.credentials_file.as_deref(), Some(dir.path().join("keys.toml").as_path()));
        assert_eq!(config.tls.key_file.as_deref(), Some(dir.path().join("tls/server.key").as_path()));
        assert_eq!(config.tls.cert_file.as_deref(), Some(std::path::Path::new("/etc/loyalty/server.pem")), "absolute: as written");
        assert_eq!(config.data_dir, PathBuf::from("./data"), "data_dir: as written");
        crate::programs::Programs::from_config(&config).expect("the rules file is found from any working directory");
    }

    #[test]
    fn the_shipped_example_configuration_validates_with_its_rules_files() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/loyalty.toml");
        let config = Config::from_file(&file).expect("deploy/loyalty.toml reads");
        for program in &config.programs {
            let rules = program.rules_file.as_ref().expect("each example program names its rules file");
            assert!(rules.is_file(), "{} exists", rules.display());
        }
        crate::programs::Programs::from_config(&config).expect("deploy/loyalty.toml and its rules files are valid");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("listen_port = 1").is_err());
    }
}
