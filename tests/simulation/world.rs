//! The simulated world the engine runs in: a random source from one seed, IDs minted from
//! counters, and a store that injects faults (a commit that fails before it applies, one that
//! applies and then loses its answer, a failed read, a slow commit that lets other calls run
//! first). Everything is driven by the seed and by the order of calls on one thread, so a seed
//! replays exactly.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use loyalty_core::account::AccountState;
use loyalty_core::events::PendingCredit;
use loyalty_core::identity::IdentityKey;
use loyalty_core::ledger::LedgerEntry;
use loyalty_core::receipt::{CallRecord, ReceiptState};
use loyalty_engine::ids::{IdSource, UuidIds};
use loyalty_store::{AccountPage, Commit, CommitOutcome, OutboxRecord, Store, StoreError, StoredRules, Versioned};

/// SplitMix64: small, fast, and the same sequence for the same seed on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items`, if there are any.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

/// How often each fault strikes, in percent of the operations it can strike.
#[derive(Clone, Copy, Debug)]
pub struct FaultPlan {
    /// A commit fails before it applies: nothing written, the call fails.
    pub commit_fails: u64,
    /// A commit applies, then its answer is lost: written, the call fails anyway.
    pub answer_lost: u64,
    /// A read fails.
    pub read_fails: u64,
    /// A commit (or read) is slow: other calls' tasks run before it goes on.
    pub slow: u64,
}

/// What the faults did, for the run's report.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultCounts {
    pub commits_failed: u64,
    pub answers_lost: u64,
    pub reads_failed: u64,
    pub slow: u64,
}

/// The faults of one run: their plan, their own random source (from the run's seed), and a
/// switch, off while the simulation checks the store.
#[derive(Debug)]
pub struct Faults {
    plan: FaultPlan,
    state: Mutex<(Rng, bool, FaultCounts)>,
}

impl Faults {
    pub fn new(plan: FaultPlan, seed: u64) -> Arc<Self> {
        Arc::new(Faults { plan, state: Mutex::new((Rng::new(seed ^ 0x5eed_fa17), true, FaultCounts::default())) })
    }

    /// Turns injection on or off (off while the oracle reads the store).
    pub fn enable(&self, on: bool) {
        self.state.lock().expect("faults lock").1 = on;
    }

    pub fn counts(&self) -> FaultCounts {
        self.state.lock().expect("faults lock").2
    }

    /// Whether a fault of `percent` strikes now, counted by `count`.
    fn strikes(&self, percent: u64, count: impl FnOnce(&mut FaultCounts)) -> bool {
        let mut state = self.state.lock().expect("faults lock");
        let (rng, on, counts) = &mut *state;
        let struck = *on && rng.chance(percent);
        if struck {
            count(counts);
        }
        struck
    }

    /// How many times a slow operation lets other tasks run first (0: not slow).
    fn slowness(&self) -> u64 {
        let mut state = self.state.lock().expect("faults lock");
        let (rng, on, counts) = &mut *state;
        if *on && rng.chance(self.plan.slow) {
            counts.slow += 1;
            rng.between(1, 8)
        } else {
            0
        }
    }

    async fn slow(&self) {
        for _ in 0..self.slowness() {
            tokio::task::yield_now().await;
        }
    }

    async fn read(&self) -> Result<(), StoreError> {
        self.slow().await;
        if self.strikes(self.plan.read_fails, |counts| counts.reads_failed += 1) {
            return Err(StoreError::Io("injected: read failed".into()));
        }
        Ok(())
    }
}

/// A store that injects the run's faults in front of a real one.
#[derive(Debug)]
pub struct FaultyStore {
    pub inner: Arc<dyn Store>,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl Store for FaultyStore {
    async fn account(&self, program_id: &str, account_id: &str) -> Result<Option<Versioned<AccountState>>, StoreError> {
        self.faults.read().await?;
        self.inner.account(program_id, account_id).await
    }

    async fn identity(&self, program_id: &str, key: &IdentityKey) -> Result<Option<String>, StoreError> {
        self.faults.read().await?;
        self.inner.identity(program_id, key).await
    }

    async fn receipt(&self, program_id: &str, receipt_id: &str) -> Result<Option<Versioned<ReceiptState>>, StoreError> {
        self.faults.read().await?;
        self.inner.receipt(program_id, receipt_id).await
    }

    async fn request(&self, program_id: &str, request_id: &str) -> Result<Option<CallRecord>, StoreError> {
        self.faults.read().await?;
        self.inner.request(program_id, request_id).await
    }

    async fn ledger_page(&self, program_id: &str, account_id: &str, before_seq: u64, limit: usize) -> Result<Vec<LedgerEntry>, StoreError> {
        self.faults.read().await?;
        self.inner.ledger_page(program_id, account_id, before_seq, limit).await
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        self.faults.slow().await;
        if self.faults.strikes(self.faults.plan.commit_fails, |counts| counts.commits_failed += 1) {
            return Err(StoreError::Io("injected: commit failed before it applied".into()));
        }
        let outcome = self.inner.commit(commit).await?;
        if self.faults.strikes(self.faults.plan.answer_lost, |counts| counts.answers_lost += 1) {
            return Err(StoreError::Io("injected: commit applied, its answer lost".into()));
        }
        Ok(outcome)
    }

    async fn latest_rules(&self, program_id: &str) -> Result<Option<StoredRules>, StoreError> {
        self.inner.latest_rules(program_id).await
    }

    async fn rules_head(&self, program_id: &str) -> Result<u64, StoreError> {
        self.inner.rules_head(program_id).await
    }

    async fn rules_version(&self, program_id: &str, version: u64) -> Result<Option<StoredRules>, StoreError> {
        self.inner.rules_version(program_id, version).await
    }

    async fn put_rules(&self, program_id: &str, rules: StoredRules) -> Result<bool, StoreError> {
        self.inner.put_rules(program_id, rules).await
    }

    async fn figures(&self, program_id: &str) -> Result<Option<loyalty_store::StoredFigures>, StoreError> {
        self.faults.read().await?;
        self.inner.figures(program_id).await
    }

    async fn put_figures(
        &self,
        program_id: &str,
        expected_through: u64,
        figures: loyalty_store::StoredFigures,
    ) -> Result<bool, StoreError> {
        // Like a commit: it may fail before it is written, or be written and its answer lost.
        if self.faults.strikes(self.faults.plan.commit_fails, |counts| counts.commits_failed += 1) {
            return Err(StoreError::Io("injected: figures not written".into()));
        }
        let stored = self.inner.put_figures(program_id, expected_through, figures).await?;
        if self.faults.strikes(self.faults.plan.answer_lost, |counts| counts.answers_lost += 1) {
            return Err(StoreError::Io("injected: figures written, the answer lost".into()));
        }
        Ok(stored)
    }

    async fn account_ids(&self, program_id: &str, cursor: &str, limit: usize) -> Result<AccountPage, StoreError> {
        self.faults.read().await?;
        self.inner.account_ids(program_id, cursor, limit).await
    }

    async fn pending_credits(&self, program_id: &str, limit: usize) -> Result<Vec<PendingCredit>, StoreError> {
        self.faults.read().await?;
        self.inner.pending_credits(program_id, limit).await
    }

    async fn delete_credit(&self, program_id: &str, credit_id: &str) -> Result<(), StoreError> {
        self.faults.read().await?;
        self.inner.delete_credit(program_id, credit_id).await
    }

    async fn outbox_page(&self, program_id: &str, after_seq: u64, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.inner.outbox_page(program_id, after_seq, limit).await
    }

    fn is_writable(&self) -> bool {
        self.inner.is_writable()
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn outbox_repeats_events(&self) -> bool {
        self.inner.outbox_repeats_events()
    }

    async fn relay(&self, program_id: &str) -> Result<usize, StoreError> {
        self.inner.relay(program_id).await
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}

/// IDs from counters (transactions, holds) and from their origin (accounts, virtual cards, as in
/// production), so that a seed mints the same IDs every time.
#[derive(Debug, Default)]
pub struct SimIds {
    next: Mutex<u64>,
}

impl SimIds {
    fn mint(&self, prefix: &str) -> String {
        let mut next = self.next.lock().expect("ids lock");
        *next += 1;
        format!("{prefix}-{:08}", *next)
    }
}

impl IdSource for SimIds {
    fn transaction_id(&self) -> String {
        self.mint("tx")
    }

    fn account_id(&self, origin: &str) -> String {
        UuidIds.account_id(origin)
    }

    fn hold_id(&self) -> String {
        self.mint("hold")
    }

    fn virtual_card_number(&self, origin: &str) -> String {
        UuidIds.virtual_card_number(origin)
    }
}
