//! One simulated run: many tills and customers make random checkout calls against the engine
//! (new receipts, holds captured or left to expire, spends racing on one customer, refunds,
//! reversals, purchases on anonymous cards later merged into a customer's account, retries and
//! duplicates of earlier calls), while the world injects faults (see
//! `world`), the clock jumps and the engine crashes (its caches dropped, the store kept). After
//! every few steps, and at the end, the oracle checks the store:
//!
//! - every account's ledger has no gap, each entry's running balance is the sum of the entries up
//!   to it, and the sum is what the account says (its buckets less its debt);
//! - every call that was answered (acknowledged) is in its receipt with the very answer the till
//!   got, once (nothing acknowledged lost, nothing applied twice);
//! - a retry or duplicate of an acknowledged call gets that answer again, byte for byte;
//! - at the end, once the credits are applied, each merge moved exactly the points it answered
//!   into the customer's account, once;
//! - and the program's figures (`ReadFigures`), folded from the outbox with faults and crashes on
//!   the way, equal the sums of every ledger by kind, and count every purchase once;
//! - and the launch campaign, whose budget runs out within a run, never gave past it: what its
//!   receipts got equals what the figures say it gave, and that plus what the engine holds is at
//!   most what engines reserved, which is at most the budget (crashed engines strand what they
//!   held, never give it twice).
//!
//! Every choice comes from the seed; the run's trace (each step and its ending) is hashed, so a
//! test can check that a seed replays exactly.

use std::sync::Arc;

use chrono::Duration;
use loyalty_core::identity::{IdentityKey, IdentityKind};
use loyalty_core::ops::{AccrueCmd, AuthorizeCmd, RedeemCmd, RefundCmd, RefundLine, ReverseCmd};
use loyalty_core::outcome::StoredResponse;
use loyalty_core::presence::PresenceProof;
use loyalty_core::receipt::OpKind;
use loyalty_core::rejection::Rejection;
use loyalty_core::{Decimal, Origin, basket::BasketLine};
use loyalty_engine::clock::ManualClock;
use loyalty_engine::config::Config;
use loyalty_engine::engine::Engine;
use loyalty_engine::error::EngineError;
use loyalty_engine::programs::{Program, Programs};
use loyalty_store::Store;
use sha2::Digest;

use crate::world::{FaultCounts, FaultPlan, Faults, FaultyStore, Rng, SimIds};

/// Customers of a run.
const CUSTOMERS: usize = 6;
/// Attempts a till makes before it gives a call up (its outcome then unknown to it).
const TILL_ATTEMPTS: usize = 3;
/// Steps between two checks of the whole store.
const CHECK_EVERY: u64 = 25;

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub steps: u64,
    pub answered: u64,
    pub refused: u64,
    /// Refusals by code (insufficient points, an expired hold...): what the tills met.
    pub refusals: std::collections::BTreeMap<&'static str, u64>,
    pub gave_up: u64,
    pub replays: u64,
    /// Retries told their first answer was removed by retention (`RECEIPT_COMPACTED`).
    pub compacted_replays: u64,
    pub crashes: u64,
    pub clock_jumps: u64,
    pub checks: u64,
    /// Points the launch campaign gave (its budget is `BUDGET`).
    pub budget_given: Decimal,
    /// Runs whose campaign gave its whole budget (1 or 0 for one run).
    pub budgets_spent: u64,
    pub faults: FaultCounts,
    /// SHA-256 of the run's trace: the same for the same seed.
    pub trace: String,
}

/// A call a till makes, whole: a retry sends exactly this again.
#[derive(Clone, Debug)]
enum Call {
    Accrue {
        customer: IdentityKey,
        cmd: AccrueCmd,
    },
    Authorize {
        customer: IdentityKey,
        cmd: AuthorizeCmd,
    },
    Redeem {
        customer: IdentityKey,
        cmd: RedeemCmd,
    },
    Refund(RefundCmd),
    Reverse(ReverseCmd),
    /// An anonymous card's account merged into a registered customer's, by request ID.
    Merge {
        customer: IdentityKey,
        card: IdentityKey,
        request_id: String,
    },
}

impl Call {
    fn receipt_id(&self) -> &str {
        match self {
            Call::Accrue { cmd, .. } => &cmd.receipt_id,
            Call::Authorize { cmd, .. } => &cmd.receipt_id,
            Call::Redeem { cmd, .. } => &cmd.receipt_id,
            Call::Refund(cmd) => &cmd.receipt_id,
            Call::Reverse(cmd) => &cmd.receipt_id,
            Call::Merge { .. } => "",
        }
    }

    /// The call's kind and key in its receipt's records.
    fn record_key(&self) -> (OpKind, &str) {
        match self {
            Call::Accrue { .. } => (OpKind::Accrue, ""),
            Call::Authorize { .. } => (OpKind::Authorize, ""),
            Call::Redeem { .. } => (OpKind::Redeem, ""),
            Call::Refund(cmd) => (OpKind::Refund, cmd.refund_id.as_str()),
            Call::Reverse(_) => (OpKind::Reverse, ""),
            Call::Merge { .. } => (OpKind::Merge, ""),
        }
    }
}

/// How a till's call ended.
#[derive(Clone, Debug)]
enum Ending {
    Answered(Box<StoredResponse>),
    Refused(Rejection),
    /// Every attempt failed (store faults, contention): the till does not know what happened.
    GaveUp(String),
}

/// The one till all calls come from (a retry must come from the same place to be the same call).
fn origin() -> Origin {
    Origin { store_id: "s1".into(), till_id: "t1".into(), actor: "sim".into() }
}

async fn execute(engine: &Engine, program: &Arc<Program>, call: &Call) -> Result<StoredResponse, EngineError> {
    let origin = origin();
    Ok(match call {
        Call::Accrue { customer, cmd } => StoredResponse::Accrue(engine.checkout.accrue(program, &origin, customer, cmd.clone()).await?),
        Call::Authorize { customer, cmd } => {
            StoredResponse::Authorize(engine.checkout.authorize(program, &origin, customer, cmd.clone()).await?)
        }
        Call::Redeem { customer, cmd } => StoredResponse::Redeem(engine.checkout.redeem(program, &origin, customer, cmd.clone()).await?),
        Call::Refund(cmd) => StoredResponse::Refund(engine.checkout.refund(program, &origin, cmd.clone()).await?),
        Call::Reverse(cmd) => StoredResponse::Reverse(engine.checkout.reverse(program, &origin, cmd.clone()).await?),
        Call::Merge { customer, card, request_id } => {
            StoredResponse::Merge(engine.customers.merge_card(program, &origin, customer, card, request_id).await?)
        }
    })
}

/// A till: sends the call, and sends it again after a failure that is not a refusal (the store
/// failed, the answer was lost, other writers kept winning), up to `TILL_ATTEMPTS` times.
async fn till(engine: Arc<Engine>, program: Arc<Program>, call: Call) -> (Call, Ending) {
    let mut last = String::new();
    for _ in 0..TILL_ATTEMPTS {
        match execute(&engine, &program, &call).await {
            Ok(answer) => return (call, Ending::Answered(Box::new(answer))),
            Err(EngineError::Rejected(rejection)) => return (call, Ending::Refused(rejection)),
            Err(error @ (EngineError::Store(_) | EngineError::Contention { .. })) => last = error.to_string(),
            Err(other) => panic!("{call:?}: an error no till should see: {other}"),
        }
    }
    (call, Ending::GaveUp(last))
}

/// The state of one run.
pub struct Simulation {
    rng: Rng,
    report: Report,
    /// The store as it is: what the oracle reads (no faults).
    store: Arc<dyn Store>,
    /// The same store behind the faults: what the engine uses.
    faulty: Arc<dyn Store>,
    faults: Arc<Faults>,
    clock: Arc<ManualClock>,
    ids: Arc<SimIds>,
    engine: Arc<Engine>,
    program: Arc<Program>,
    customers: Vec<IdentityKey>,
    /// Cards first seen at a till (each an anonymous account), some merged since.
    anonymous: Vec<IdentityKey>,
    /// Calls answered, with the answer the till got.
    answered: Vec<(Call, StoredResponse)>,
    /// Calls whose till gave up: sent again later.
    unknown: Vec<Call>,
    /// Receipts with a hold: (customer, authorize call, hold ID, amount).
    holds: Vec<(IdentityKey, AuthorizeCmd, String, Decimal)>,
    next_receipt: u64,
    trace: sha2::Sha256,
}

/// The program's rules: 1% on every line, and a launch campaign of 5% more on every line with a
/// budget across all customers (`BUDGET`) that runs out within a run, reserved in small chunks so
/// that crashes strand some of it.
const RULES: &str = r#"
[budgets.launch]
points = "20000"
chunk_points = "700"

[[rules]]
id = "base"
effect = { kind = "percent_of_lines", percent = "1" }

[[rules]]
id = "launch"
campaign = "launch"
priority = 10
stacking = "always"
effect = { kind = "percent_of_lines", percent = "5" }
"#;
pub const BUDGET: i64 = 20_000;

fn programs() -> Programs {
    let rules = std::env::temp_dir().join(format!("loyalty-simulation-{}.toml", std::process::id()));
    std::fs::write(&rules, RULES).expect("write the simulation's rules");
    let program = loyalty_engine::config::ProgramConfig { rules_file: Some(rules), ..loyalty_tests::shop_program() };
    let config = Config { programs: vec![program], ..Config::default() };
    Programs::from_config(&config).expect("the test program's configuration is valid")
}

async fn start_engine(store: &Arc<dyn Store>, clock: &Arc<ManualClock>, ids: &Arc<SimIds>) -> (Arc<Engine>, Arc<Program>) {
    let engine = Arc::new(Engine::new(Arc::clone(store), programs(), clock.clone(), ids.clone(), 1_000));
    engine.bootstrap_rules().await.expect("rules load");
    let program = engine.program(loyalty_tests::PROGRAM).expect("the test program");
    (engine, program)
}

impl Simulation {
    /// A world for `seed` over `store` (empty), with `plan`'s faults and `CUSTOMERS` enrolled.
    pub async fn new(seed: u64, store: Arc<dyn Store>, plan: FaultPlan) -> Simulation {
        let faults = Faults::new(plan, seed);
        let faulty: Arc<dyn Store> = Arc::new(FaultyStore { inner: Arc::clone(&store), faults: Arc::clone(&faults) });
        let clock = Arc::new(ManualClock::new(loyalty_tests::start_time()));
        let ids = Arc::new(SimIds::default());
        faults.enable(false);
        let (engine, program) = start_engine(&faulty, &clock, &ids).await;
        let mut customers = Vec::new();
        for index in 0..CUSTOMERS {
            let phone = loyalty_core::identity::normalize_phone("phone", &format!("+7 701 000 00 {index:02}"), &program.policy.phone_plan)
                .expect("a valid phone");
            let cmd = loyalty_core::enrolment::EnrollCmd {
                request_id: format!("enrol-{index}"),
                phone,
                card_number: None,
                app_token: None,
                name: None,
                birth_date: None,
                tags: Vec::new(),
                referrer: None,
                card_fee: Decimal::ZERO,
            };
            let enrolled = engine.customers.enroll(&program, &origin(), cmd).await.expect("enrolment");
            customers.push(IdentityKey { kind: IdentityKind::Card, value: enrolled.card_number });
        }
        faults.enable(true);
        Simulation {
            rng: Rng::new(seed),
            report: Report { seed, ..Report::default() },
            store,
            faulty,
            faults,
            clock,
            ids,
            engine,
            program,
            customers,
            anonymous: Vec::new(),
            answered: Vec::new(),
            unknown: Vec::new(),
            holds: Vec::new(),
            next_receipt: 0,
            trace: sha2::Sha256::new(),
        }
    }

    /// Runs `steps` random steps, checking the store every `CHECK_EVERY` and at the end.
    pub async fn run(mut self, steps: u64) -> Report {
        for step in 1..=steps {
            self.report.steps = step;
            self.step().await;
            if step % CHECK_EVERY == 0 {
                self.check().await;
            }
        }
        self.check().await;
        self.replay_all().await;
        self.settle_unknown().await;
        self.check_merges().await;
        self.check_figures().await;
        self.report.faults = self.faults.counts();
        self.report.trace = loyalty_core::fingerprint::hex(&self.trace.clone().finalize());
        self.report
    }

    fn note(&mut self, line: String) {
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("{line}");
        }
        self.trace.update(line.as_bytes());
        self.trace.update(b"\n");
    }

    /// Fails the run, naming its seed and step, so that it can be replayed exactly.
    fn fail(&self, what: String) -> ! {
        panic!(
            "simulation seed {} failed at step {}: {what}\nreplay it: SIM_SEED={} SIM_STEPS={} cargo test -p loyalty-tests --test simulation -- --nocapture",
            self.report.seed, self.report.steps, self.report.seed, self.report.steps
        )
    }

    async fn step(&mut self) {
        match self.rng.below(100) {
            0..30 => {
                let call = self.new_accrue();
                self.send(call).await;
            }
            30..42 => self.hold().await,
            42..52 => self.capture().await,
            52..60 => {
                let call = self.new_redeem();
                self.send(call).await;
            }
            60..68 => self.refund().await,
            68..71 => self.reverse().await,
            71..81 => self.duplicate().await,
            81..86 => self.racing_spends().await,
            86..90 => self.late_retry().await,
            90..93 => self.merge().await,
            93..95 => self.jump_clock(),
            95..97 => self.crash().await,
            _ => self.background().await,
        }
    }

    fn receipt_id(&mut self) -> String {
        self.next_receipt += 1;
        format!("r-{:06}", self.next_receipt)
    }

    fn customer(&mut self) -> IdentityKey {
        self.rng.pick(&self.customers).expect("customers").clone()
    }

    fn basket(&mut self) -> Vec<BasketLine> {
        (1..=self.rng.between(1, 3) as u32)
            .map(|line_no| {
                let quantity = Decimal::from(self.rng.between(1, 3));
                let unit_price = Decimal::new(self.rng.between(50, 500_000) as i64, 2);
                BasketLine {
                    line_no,
                    sku: format!("sku-{}", self.rng.below(40)),
                    category: "grocery".into(),
                    brand: String::new(),
                    quantity,
                    unit_price,
                    line_total: quantity * unit_price,
                    excise: self.rng.chance(5),
                    promo_price: self.rng.chance(5),
                }
            })
            .collect()
    }

    fn presence() -> PresenceProof {
        PresenceProof { identified_by: Some(IdentityKind::Card), code: None }
    }

    fn new_accrue(&mut self) -> Call {
        // Now and then a card the engine has never seen (a new anonymous account), or one it has.
        let customer = match self.rng.below(10) {
            0 => {
                let card = IdentityKey { kind: IdentityKind::Card, value: format!("70000000{:08}", self.anonymous.len()) };
                self.anonymous.push(card.clone());
                card
            }
            1 => self.rng.pick(&self.anonymous).cloned().unwrap_or_else(|| self.customer()),
            _ => self.customer(),
        };
        let (receipt_id, lines) = (self.receipt_id(), self.basket());
        Call::Accrue { customer, cmd: AccrueCmd { receipt_id, lines, sale: Default::default(), change: Decimal::ZERO, occurred_at: None } }
    }

    fn new_redeem(&mut self) -> Call {
        let (customer, receipt_id, lines) = (self.customer(), self.receipt_id(), self.basket());
        let points = Decimal::from(self.rng.between(1, 30));
        Call::Redeem { customer, cmd: RedeemCmd { receipt_id, points, hold_id: None, lines, presence: Self::presence() } }
    }

    /// Sends one call from a till, and records how it ended.
    async fn send(&mut self, call: Call) -> Ending {
        let (call, ending) = till(Arc::clone(&self.engine), Arc::clone(&self.program), call).await;
        self.record(call, ending).await
    }

    async fn record(&mut self, call: Call, ending: Ending) -> Ending {
        self.note(format!("{} {call:?} -> {ending:?}", self.report.steps));
        match &ending {
            Ending::Answered(answer) => {
                self.report.answered += 1;
                if let Some((_, first)) = self.answered.iter().find(|(earlier, _)| same_call(earlier, &call)) {
                    if first != answer.as_ref() {
                        self.fail(format!("{call:?} answered {answer:?}, but its first answer was {first:?}"));
                    }
                } else {
                    self.answered.push((call, answer.as_ref().clone()));
                }
            }
            // Retention removed the first answer of a call made long enough ago (the horizon is
            // checked against the store in `check`): the call was applied once, a retry is told so.
            Ending::Refused(Rejection::ReceiptCompacted { .. }) => {
                self.report.compacted_replays += 1;
            }
            Ending::Refused(rejection) => {
                if let Some((_, first)) = self.answered.iter().find(|(earlier, _)| same_call(earlier, &call)) {
                    self.fail(format!("{call:?} was answered {first:?}, and sent again it is refused: {rejection:?}"));
                }
                self.report.refused += 1;
                *self.report.refusals.entry(rejection.code()).or_default() += 1;
            }
            Ending::GaveUp(why) => {
                self.report.gave_up += 1;
                let why = why.clone();
                self.note(format!("{} the till gave up: {why}", self.report.steps));
                self.unknown.push(call);
            }
        }
        ending
    }

    /// Authorize with a hold on a new receipt.
    async fn hold(&mut self) {
        let (customer, receipt_id, lines) = (self.customer(), self.receipt_id(), self.basket());
        let ttl = if self.rng.chance(50) { 0 } else { self.rng.between(60, 3_600) as u32 };
        let cmd = AuthorizeCmd {
            receipt_id,
            lines,
            spend: Decimal::from(self.rng.between(1, 40)),
            hold_ttl_seconds: ttl,
            sale: Default::default(),
            presence: Self::presence(),
        };
        let ending = self.send(Call::Authorize { customer: customer.clone(), cmd: cmd.clone() }).await;
        if let Ending::Answered(answer) = ending
            && let StoredResponse::Authorize(outcome) = *answer
            && let Some(hold) = outcome.hold
        {
            self.holds.push((customer, cmd, hold.hold_id, hold.amount));
        }
    }

    /// Spends (part of) a held receipt's hold, then accrues the receipt: the rest of a checkout.
    async fn capture(&mut self) {
        if self.holds.is_empty() {
            return;
        }
        let (customer, authorize, hold_id, amount) = self.holds.remove(self.rng.below(self.holds.len() as u64) as usize);
        let points = Decimal::from(self.rng.between(1, amount.max(Decimal::ONE).try_into().unwrap_or(1)));
        let redeem = RedeemCmd {
            receipt_id: authorize.receipt_id.clone(),
            points,
            hold_id: Some(hold_id),
            lines: authorize.lines.clone(),
            presence: Self::presence(),
        };
        self.send(Call::Redeem { customer: customer.clone(), cmd: redeem }).await;
        let accrue = AccrueCmd {
            receipt_id: authorize.receipt_id,
            lines: authorize.lines,
            sale: Default::default(),
            change: Decimal::ZERO,
            occurred_at: None,
        };
        self.send(Call::Accrue { customer, cmd: accrue }).await;
    }

    /// Returns part of an accrued receipt.
    async fn refund(&mut self) {
        let accrued: Vec<AccrueCmd> = self
            .answered
            .iter()
            .filter_map(|(call, _)| match call {
                Call::Accrue { cmd, .. } => Some(cmd.clone()),
                _ => None,
            })
            .collect();
        let Some(receipt) = self.rng.pick(&accrued).cloned() else { return };
        let line = self.rng.pick(&receipt.lines).expect("a receipt has lines").clone();
        let quantity = Decimal::from(self.rng.between(1, line.quantity.try_into().unwrap_or(1)));
        let refund_id = format!("{}-refund-{}", receipt.receipt_id, self.rng.below(1_000));
        let cmd = RefundCmd {
            receipt_id: receipt.receipt_id,
            refund_id,
            lines: vec![RefundLine { line_no: line.line_no, quantity }],
            reason: "returned".into(),
            occurred_at: None,
        };
        self.send(Call::Refund(cmd)).await;
    }

    /// Reverses a receipt that was answered.
    async fn reverse(&mut self) {
        let receipts: Vec<String> =
            self.answered.iter().map(|(call, _)| call.receipt_id().to_owned()).filter(|receipt_id| !receipt_id.is_empty()).collect();
        let Some(receipt_id) = self.rng.pick(&receipts).cloned() else { return };
        self.send(Call::Reverse(ReverseCmd { receipt_id, reason: "voided".into() })).await;
    }

    /// A customer shows an anonymous card at the till: its account is merged into theirs.
    async fn merge(&mut self) {
        let Some(card) = self.rng.pick(&self.anonymous).cloned() else { return };
        let customer = self.customer();
        self.next_receipt += 1;
        let request_id = format!("m-{:06}", self.next_receipt);
        self.send(Call::Merge { customer, card, request_id }).await;
    }

    /// Sends an answered call again, exactly: it must get its first answer.
    async fn duplicate(&mut self) {
        let Some((call, _)) = self.rng.pick(&self.answered).cloned() else { return };
        self.report.replays += 1;
        self.send(call).await;
    }

    /// Several tills spend one customer's points at once, each on its own receipt.
    async fn racing_spends(&mut self) {
        let customer = self.customer();
        let calls: Vec<Call> = (0..self.rng.between(2, 6))
            .map(|_| {
                let receipt_id = self.receipt_id();
                let lines = self.basket();
                let points = Decimal::from(self.rng.between(1, 40));
                Call::Redeem {
                    customer: customer.clone(),
                    cmd: RedeemCmd { receipt_id, points, hold_id: None, lines, presence: Self::presence() },
                }
            })
            .collect();
        let tasks: Vec<_> =
            calls.into_iter().map(|call| tokio::spawn(till(Arc::clone(&self.engine), Arc::clone(&self.program), call))).collect();
        for task in tasks {
            let (call, ending) = task.await.expect("a till's task");
            self.record(call, ending).await;
        }
    }

    /// A till sends a call it gave up on again (it may have been applied: then this is a replay).
    async fn late_retry(&mut self) {
        if self.unknown.is_empty() {
            return;
        }
        let call = self.unknown.remove(self.rng.below(self.unknown.len() as u64) as usize);
        self.send(call).await;
    }

    fn jump_clock(&mut self) {
        let minutes = match self.rng.below(4) {
            0 => self.rng.between(1, 59),
            1 => self.rng.between(60, 24 * 60),
            2 => self.rng.between(24 * 60, 10 * 24 * 60),
            _ => self.rng.between(10 * 24 * 60, 120 * 24 * 60),
        };
        self.clock.advance(Duration::minutes(minutes as i64));
        self.report.clock_jumps += 1;
        self.note(format!("{} clock +{minutes} min", self.report.steps));
    }

    /// The engine crashes and starts again over the same store: every cache is gone.
    async fn crash(&mut self) {
        self.faults.enable(false);
        let (engine, program) = start_engine(&self.faulty, &self.clock, &self.ids).await;
        self.faults.enable(true);
        (self.engine, self.program) = (engine, program);
        self.report.crashes += 1;
        self.note(format!("{} crash", self.report.steps));
    }

    /// The engine's background work: credits owed between accounts, the schedule sweep. A
    /// failure (an injected fault) is retried at the next round, as the engine does.
    async fn background(&mut self) {
        let credits = self.engine.credits.apply_pending().await.map_err(|error| error.to_string());
        let sweep = self.engine.sweep.run(&self.program).await.map(|report| report.accounts).map_err(|error| error.to_string());
        let figures = self.engine.reports.catch_up(self.program.id()).await.map_err(|error| error.to_string());
        self.note(format!("{} background credits={credits:?} sweep={sweep:?} figures={figures:?}", self.report.steps));
    }

    /// Sends every call whose till gave up once more, without faults: each is answered (a replay,
    /// if it was applied) or refused, so that the figures can be checked against the answers.
    async fn settle_unknown(&mut self) {
        self.faults.enable(false);
        for call in std::mem::take(&mut self.unknown) {
            if let Ending::GaveUp(why) = self.send(call.clone()).await {
                self.fail(format!("{call:?} still fails without faults: {why}"));
            }
        }
    }

    /// The program's figures over all time against the ledgers: points by kind and what is
    /// outstanding equal the sums of every entry, and each answered purchase counts once.
    async fn check_figures(&mut self) {
        let program_id = self.program.id().to_owned();
        let mut sums = loyalty_core::figures::Points::default();
        let mut cursor = String::new();
        loop {
            let page = self.store.account_ids(&program_id, &cursor, 100).await.expect("account IDs");
            for account_id in &page.ids {
                let mut before = u64::MAX;
                loop {
                    let entries = self.store.ledger_page(&program_id, account_id, before, 200).await.expect("ledger read");
                    for entry in &entries {
                        sums.post(entry.kind, entry.amount);
                    }
                    match entries.last() {
                        Some(last) if entries.len() == 200 => before = last.seq,
                        _ => break,
                    }
                }
            }
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        self.check_budget().await;
        let (from, to) = (chrono::NaiveDate::MIN, chrono::NaiveDate::MAX);
        let purchases = self.answered.iter().filter(|(call, _)| matches!(call, Call::Accrue { .. })).count() as u64;
        let mut report = self.engine.reports.report(&self.program, from, to, None).await.expect("figures").0;
        // Over ScyllaDB the relay moves a commit's events to the outbox after it, and the outbox
        // shows them once they settled: wait for that (a store the seed does not drive).
        for _ in 0..100 {
            if !self.store.shared() || (report.points == sums && report.purchases == purchases) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            report = self.engine.reports.report(&self.program, from, to, None).await.expect("figures").0;
        }
        if report.points != sums || report.outstanding != sums.net() || report.purchases != purchases {
            self.fail(format!(
                "the figures say {:?}, {} outstanding, {} purchases; the ledgers sum to {sums:?} ({}), {purchases} purchases were answered",
                report.points,
                report.outstanding,
                report.purchases,
                sums.net()
            ));
        }
    }

    /// The launch campaign's budget: what its receipts got (summed from every receipt the ledgers
    /// name) is what the figures say it gave, and given + what this engine holds <= reserved <=
    /// the budget (engines that crashed stranded what they held: never given twice).
    async fn check_budget(&mut self) {
        let program_id = self.program.id().to_owned();
        let mut given = Decimal::ZERO;
        let mut receipts = std::collections::BTreeSet::new();
        let mut cursor = String::new();
        loop {
            let page = self.store.account_ids(&program_id, &cursor, 100).await.expect("account IDs");
            for account_id in &page.ids {
                let entries = self.store.ledger_page(&program_id, account_id, u64::MAX, usize::MAX).await.expect("ledger read");
                for receipt_id in entries.iter().filter_map(|entry| entry.receipt_id.clone()) {
                    if !receipts.insert(receipt_id.clone()) {
                        continue;
                    }
                    let receipt = self.store.receipt(&program_id, &receipt_id).await.expect("receipt read");
                    let accrual = receipt.and_then(|receipt| receipt.value.accrual);
                    given += accrual.iter().flat_map(|accrual| &accrual.campaigns).map(|used| used.given).sum::<Decimal>();
                }
            }
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        let read = self.engine.campaign_budgets(&self.program).await.expect("budgets read");
        let [launch] = read.as_slice() else { self.fail(format!("one budget expected: {read:?}")) };
        self.note(format!("budget given={given} reserved={} held={} figures={}", launch.reserved, launch.held_here, launch.given));
        self.report.budget_given = given;
        self.report.budgets_spent = u64::from(given == Decimal::from(BUDGET));
        if launch.given != given || given + launch.held_here > launch.reserved || launch.reserved > Decimal::from(BUDGET) {
            self.fail(format!("the launch budget of {BUDGET}: receipts got {given}; the engine reads {launch:?}"));
        }
    }

    /// The oracle (see the module documentation), on the store as it is.
    async fn check(&mut self) {
        self.report.checks += 1;
        let program_id = self.program.id().to_owned();
        let mut cursor = String::new();
        loop {
            let page = self.store.account_ids(&program_id, &cursor, 100).await.expect("account IDs");
            for account_id in &page.ids {
                self.check_account(&program_id, account_id).await;
            }
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        for (call, answer) in &self.answered {
            if let Call::Merge { request_id, .. } = call {
                let record = self.store.request(&program_id, &format!("merge/{request_id}")).await.expect("request read");
                match record {
                    Some(record) if record.response == *answer => {}
                    Some(record) => self.fail(format!("{call:?} was answered {answer:?}, the store keeps {:?}", record.response)),
                    None => self.fail(format!("{call:?} was answered, but its request is not in the store: lost")),
                }
                continue;
            }
            let receipt = self.store.receipt(&program_id, call.receipt_id()).await.expect("receipt read");
            let Some(receipt) = receipt else { self.fail(format!("{call:?} was answered, but its receipt is not in the store")) };
            let (op, key) = call.record_key();
            let records: Vec<_> = receipt.value.calls.iter().filter(|record| record.op == op && record.key == key).collect();
            match records.as_slice() {
                [record] if record.response == *answer => {}
                [record] if let StoredResponse::Compacted(compacted) = &record.response => {
                    // Retention may remove it only past the horizon (from the receipt's last call
                    // then, which a later call on the receipt may have moved since: the receipt's
                    // first call is the bound the oracle can check).
                    let horizon = Duration::days(i64::from(self.program.policy.answers_kept_days));
                    if self.program.policy.answers_kept_days == 0 || compacted.at < receipt.value.created_at + horizon {
                        self.fail(format!("{call:?}: its answer was compacted at {} before the horizon", compacted.at));
                    }
                }
                [record] => self.fail(format!("{call:?} was answered {answer:?}, the store keeps {:?}", record.response)),
                [] => self.fail(format!("{call:?} was answered, but its receipt does not record it: lost")),
                _ => self.fail(format!("{call:?} is recorded {} times in its receipt: applied twice", records.len())),
            }
        }
    }

    async fn check_account(&self, program_id: &str, account_id: &str) {
        let state = self.store.account(program_id, account_id).await.expect("account read").expect("a listed account").value;
        let mut entries = Vec::new();
        let mut before = u64::MAX;
        loop {
            let page = self.store.ledger_page(program_id, account_id, before, 200).await.expect("ledger read");
            let Some(last) = page.last() else { break };
            before = last.seq;
            let full = page.len() == 200;
            entries.extend(page);
            if !full {
                break;
            }
        }
        entries.reverse();
        let mut sum = Decimal::ZERO;
        for (index, entry) in entries.iter().enumerate() {
            if entry.seq != index as u64 + 1 {
                self.fail(format!("account {account_id}: ledger entry {} where {} was due", entry.seq, index + 1));
            }
            sum += entry.amount;
            if entry.balance_after != sum {
                self.fail(format!(
                    "account {account_id}: entry {} says {} after, the entries sum to {sum}",
                    entry.seq, entry.balance_after
                ));
            }
        }
        if entries.len() as u64 != state.ledger_seq || sum != state.ledger_sum || sum != state.booked_balance() {
            self.fail(format!(
                "account {account_id}: ledger sums to {sum} over {} entries; the account says {} over {} (buckets less debt {})",
                entries.len(),
                state.ledger_sum,
                state.ledger_seq,
                state.booked_balance()
            ));
        }
        if state.debt < Decimal::ZERO || state.buckets.iter().any(|bucket| bucket.remaining <= Decimal::ZERO) {
            self.fail(format!("account {account_id}: a negative debt or an empty bucket: {state:?}"));
        }
    }

    /// Applies every credit still owed (the engine's background work, without faults), then
    /// checks that each answered merge moved exactly the points it answered into the customer's
    /// account, once: the ledger entries posted under the merge's credit sum to its points.
    async fn check_merges(&mut self) {
        self.faults.enable(false);
        let program_id = self.program.id().to_owned();
        while !self.store.pending_credits(&program_id, 1).await.expect("credits read").is_empty() {
            let applied = self.engine.credits.apply_pending().await.expect("credits apply without faults");
            if applied == 0 {
                self.fail("credits are owed and none applies".into());
            }
        }
        for (call, answer) in &self.answered {
            let (Call::Merge { request_id, .. }, StoredResponse::Merge(outcome)) = (call, answer) else { continue };
            // The credit is applied as a call on its own receipt in the customer's account.
            let credit_id = format!("merge/{request_id}");
            let receipt = self.store.receipt(&program_id, &credit_id).await.expect("receipt read");
            let applied: Vec<_> = receipt.iter().flat_map(|receipt| receipt.value.calls.iter()).collect();
            let [record] = applied.as_slice() else {
                self.fail(format!("{call:?}: its credit was applied {} times", applied.len()));
            };
            let StoredResponse::Bonus(credited) = &record.response else { self.fail(format!("{call:?}: its credit answered {record:?}")) };
            let mut moved = Decimal::ZERO;
            let mut before = u64::MAX;
            loop {
                let page = self.store.ledger_page(&program_id, &outcome.account_id, before, 200).await.expect("ledger read");
                moved += page.iter().filter(|entry| entry.tx_id == credited.tx_id).map(|entry| entry.amount).sum::<Decimal>();
                match page.last() {
                    Some(last) if page.len() == 200 => before = last.seq,
                    _ => break,
                }
            }
            if credited.account_id != outcome.account_id || moved != outcome.points {
                self.fail(format!(
                    "{call:?} answered {} points moved to {}; {} got {moved} under the credit",
                    outcome.points, outcome.account_id, credited.account_id
                ));
            }
        }
    }

    /// Every answered call, sent once more: each gets its first answer (checked in `record`).
    async fn replay_all(&mut self) {
        self.faults.enable(false);
        let calls: Vec<Call> = self.answered.iter().map(|(call, _)| call.clone()).collect();
        for call in calls {
            self.report.replays += 1;
            match self.send(call.clone()).await {
                Ending::Answered(_) | Ending::Refused(Rejection::ReceiptCompacted { .. }) => {}
                other => self.fail(format!("{call:?}, answered before, now ends {other:?}")),
            }
        }
        self.check().await;
    }
}

/// The same call: the same kind on the same receipt (and refund), with the same payload.
fn same_call(a: &Call, b: &Call) -> bool {
    format!("{a:?}") == format!("{b:?}")
}
