//! The engine: runs each checkout call against one account, exactly once.
//!
//! For every mutating call it (1) finds the account (by identifier, or by the receipt for refunds
//! and reversals), (2) takes the account's slot, which serialises calls on one account in this
//! process, (3) reads the receipt and answers a replay from its stored first response, (4) runs the
//! domain operation on working copies, (5) commits the account, its ledger entries and the receipt
//! in one conditional write, and only then (6) answers. A lost compare-and-set (another process, or
//! a concurrent claim of the same receipt or card) re-reads and tries again, a bounded number of
//! times. Transport, wire formats and status codes are not its business: see `grpc`.

use std::sync::Arc;

use dashmap::DashMap;
use loyalty_core::Origin;
use loyalty_core::account::AccountState;
use loyalty_core::fingerprint::{Fingerprint, fingerprint};
use loyalty_core::identity::{IdentityKey, IdentityKind};
use loyalty_core::ledger::LedgerEntry;
use loyalty_core::ops::{self, AccrueCmd, AuthorizeCmd, BonusCmd, Checkout, RedeemCmd, RefundCmd, ReverseCmd};
use loyalty_core::outcome::{
    AccrueOutcome, AuthorizeOutcome, BonusOutcome, EnrollOutcome, RedeemOutcome, RefundOutcome, ReverseOutcome, StoredResponse,
};
use loyalty_core::receipt::{CallRecord, OpKind, ReceiptState};
use loyalty_core::rejection::Rejection;
use loyalty_core::txn::{Finished, Txn};
use loyalty_store::{Commit, ReceiptWrite, RequestWrite, Store, Versioned};
use serde::Serialize;
use tokio::sync::MutexGuard;

mod commit_path;

pub(crate) use self::commit_path::{Attempt, commit_of};
use crate::accounts::{AccountSlots, Slot};
use crate::clock::Clock;
use crate::error::{EngineError, EngineResult};
use crate::ids::IdSource;
use crate::programs::{Program, Programs};

/// Merges an identifier may lead through (a merged account is never merged again: one is enough).
const MERGE_HOPS_MAX: usize = 3;
/// AwardBonus requests are kept as receipts under this prefix and their request ID.
const BONUS_RECEIPT_PREFIX: &str = "bonus/";
/// Attempts of one call before it gives up with ABORTED under contention.
const ATTEMPTS_MAX: u32 = 8;

/// An enrolment, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnrollCmd {
    pub request_id: String,
    /// E.164.
    pub phone: String,
    pub card_number: Option<String>,
    pub app_token: Option<String>,
    pub name: Option<String>,
    pub birth_date: Option<chrono::NaiveDate>,
    /// Segment tags ("pensioner", "large_family") that rules may target.
    pub tags: Vec<String>,
    /// The customer who referred this one, if any.
    pub referrer: Option<IdentityKey>,
    /// What the customer paid for the card; credited as points (rounded down).
    pub card_fee: rust_decimal::Decimal,
}

/// An account as read, with the time it was read at.
#[derive(Clone, Debug)]
pub struct AccountSnapshot {
    pub state: AccountState,
    pub now: chrono::DateTime<chrono::Utc>,
}

/// How a receipt call finds its account.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Route<'a> {
    /// By the customer's identifier; an unknown card may be created as an anonymous account.
    /// `sold_at`: a late receipt's sale, which a card replaced after it may still carry.
    Customer { key: &'a IdentityKey, create_unknown_card: bool, sold_at: Option<chrono::DateTime<chrono::Utc>> },
    /// By the receipt (refunds and reversals).
    Receipt,
    /// By the account itself (the daily sweep).
    Account(&'a str),
}

/// The engine. Shared by all gRPC handlers.
#[derive(Debug)]
pub struct Engine {
    store: Arc<dyn Store>,
    programs: Arc<Programs>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    accounts: AccountSlots,
    /// Identifier-to-account mappings kept in memory (they never change once claimed), at most
    /// `identities_max`.
    identities: DashMap<String, String>,
    identities_max: usize,
    access: crate::auth::registry::Access,
    /// Woken when a commit wrote credits owed to other accounts (see `credits`).
    pub(crate) credits_due: tokio::sync::Notify,
    /// The calls inside the engine: the store is shut only after the last (see `drain`).
    calls: crate::drain::InFlight,
    /// The test clocks of sandbox programs (see `sandbox`).
    sandbox_clocks: crate::sandbox::SandboxClocks,
    /// Online backups, when configured (see `backups`).
    backups: std::sync::OnceLock<crate::backups::Backups>,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        programs: Programs,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        cached_accounts_max: usize,
    ) -> Self {
        Engine {
            store,
            programs: Arc::new(programs),
            clock,
            ids,
            accounts: AccountSlots::new(cached_accounts_max),
            identities: DashMap::new(),
            identities_max: cached_accounts_max.max(16),
            access: crate::auth::registry::Access::default(),
            credits_due: tokio::sync::Notify::new(),
            calls: crate::drain::InFlight::default(),
            sandbox_clocks: crate::sandbox::SandboxClocks::default(),
            backups: std::sync::OnceLock::new(),
        }
    }

    /// Turns online backups on (`storage.backup_dir`); a second call changes nothing.
    pub fn set_backups(&self, backups: crate::backups::Backups) {
        let _ = self.backups.set(backups);
    }

    pub(crate) fn backups(&self) -> Option<&crate::backups::Backups> {
        self.backups.get()
    }

    pub(crate) fn sandbox_clocks(&self) -> &crate::sandbox::SandboxClocks {
        &self.sandbox_clocks
    }

    /// The calls inside the engine. Each gRPC call holds a place from admission to its answer.
    pub fn calls(&self) -> &crate::drain::InFlight {
        &self.calls
    }

    /// Stops taking calls, waits (at most `grace`) for the calls inside to finish, then shuts the
    /// store: every call that reached the store is committed and answered before it closes.
    /// Returns how many calls were still inside when the grace ran out (they then meet a closed
    /// store and fail UNAVAILABLE, nothing acknowledged).
    pub async fn close_after_calls(&self, grace: std::time::Duration) -> usize {
        let left = self.calls.close_and_drain(grace).await;
        self.store.shutdown().await;
        left
    }

    /// The source of the IDs the engine mints.
    pub(crate) fn ids(&self) -> &dyn IdSource {
        self.ids.as_ref()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// The credentials calls are checked against.
    pub fn access(&self) -> &crate::auth::registry::Access {
        &self.access
    }

    pub fn programs(&self) -> &Arc<Programs> {
        &self.programs
    }

    pub fn program(&self, program_id: &str) -> EngineResult<Arc<Program>> {
        self.programs.get(program_id).ok_or_else(|| EngineError::ProgramNotFound(program_id.to_owned()))
    }

    /// The account bound to an identifier, from memory or the store.
    pub(crate) async fn resolve(&self, program_id: &str, key: &IdentityKey) -> EngineResult<Option<String>> {
        let cache_key = format!("{program_id}/{}", key.storage_key());
        if let Some(account_id) = self.identities.get(&cache_key) {
            return Ok(Some(account_id.clone()));
        }
        let found = self.store.identity(program_id, key).await?;
        if let Some(account_id) = &found {
            if self.identities.len() >= self.identities_max {
                self.identities.clear();
            }
            self.identities.insert(cache_key, account_id.clone());
        }
        Ok(found)
    }

    /// The account `account_id` was merged into, if it was.
    async fn merged_into(&self, program_id: &str, account_id: &str) -> EngineResult<Option<String>> {
        Ok(self.store.account(program_id, account_id).await?.and_then(|stored| stored.value.merged_into))
    }

    /// The account bound to an identifier, or CUSTOMER_NOT_FOUND.
    pub(crate) async fn resolve_customer(&self, program_id: &str, key: &IdentityKey) -> EngineResult<String> {
        Ok(self.resolve(program_id, key).await?.ok_or(Rejection::CustomerNotFound)?)
    }

    /// Drops a remembered identifier (released by an erasure).
    pub(crate) fn forget_identity(&self, program_id: &str, key: &IdentityKey) {
        self.identities.remove(&format!("{program_id}/{}", key.storage_key()));
    }

    pub(crate) fn slot(&self, program_id: &str, account_id: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        self.accounts.slot(program_id, account_id)
    }

    /// The account a customer presented at the till led to: it must still hold that identifier
    /// (an erasure on another engine may have released it since this engine remembered the
    /// binding), and a card must not have been replaced (`CARD_BLOCKED`).
    pub(crate) async fn load_checked(
        &self,
        slot: &mut MutexGuard<'_, Slot>,
        program_id: &str,
        account_id: &str,
        key: &IdentityKey,
    ) -> EngineResult<Versioned<AccountState>> {
        self.load_presented(slot, program_id, account_id, key, None).await
    }

    /// [`Engine::load_checked`] for a sale made at `sold_at` (a late receipt): a card replaced
    /// only after that sale still carries it, as it did at the till then.
    pub(crate) async fn load_presented(
        &self,
        slot: &mut MutexGuard<'_, Slot>,
        program_id: &str,
        account_id: &str,
        key: &IdentityKey,
        sold_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> EngineResult<Versioned<AccountState>> {
        let stored = self.load_bound(slot, program_id, account_id, key).await?;
        if key.kind == IdentityKind::Card
            && let Some(blocked) = stored.value.blocked_card(&key.value)
            && sold_at.is_none_or(|sold_at| sold_at >= blocked.blocked_at)
        {
            return Err(Rejection::CardBlocked { replaced_at: blocked.blocked_at }.into());
        }
        Ok(stored)
    }

    /// The account an identifier led to, which must still hold that identifier; a replaced card
    /// still finds its account here (administrators look customers up by old cards too).
    pub(crate) async fn load_bound(
        &self,
        slot: &mut MutexGuard<'_, Slot>,
        program_id: &str,
        account_id: &str,
        key: &IdentityKey,
    ) -> EngineResult<Versioned<AccountState>> {
        let stored = self.load(slot, program_id, account_id).await?.ok_or_else(|| dangling(account_id))?;
        // A card merged into a customer's account leads there from now on: remember that, and
        // have the call run again on that account (`until_committed`, `following_merges`).
        if let Some(target) = &stored.value.merged_into {
            self.identities.insert(format!("{program_id}/{}", key.storage_key()), target.clone());
            return Err(EngineError::AccountMoved);
        }
        if !stored.value.identities.contains(key) {
            self.forget_identity(program_id, key);
            return Err(Rejection::CustomerNotFound.into());
        }
        Ok(stored)
    }

    /// The account's state under its slot: cached, or read from the store and cached.
    async fn load(
        &self,
        slot: &mut MutexGuard<'_, Slot>,
        program_id: &str,
        account_id: &str,
    ) -> EngineResult<Option<Versioned<AccountState>>> {
        if let Some(cached) = &slot.cached {
            metrics::counter!("loyalty_cache_hits_total").increment(1);
            return Ok(Some(cached.clone()));
        }
        metrics::counter!("loyalty_cache_misses_total").increment(1);
        let stored = self.store.account(program_id, account_id).await?;
        if self.caches_accounts() {
            slot.cached = stored.clone();
        }
        Ok(stored)
    }

    /// Over a store other processes write too, a cached state may be stale, so none is kept (a
    /// stale version would only cost a lost compare-and-set, but a stale balance would be shown).
    fn caches_accounts(&self) -> bool {
        !self.store.shared()
    }

    /// Reads an account by the identifier a till presented (a replaced card is `CARD_BLOCKED`).
    pub async fn get_account(&self, program: &Program, customer: &IdentityKey) -> EngineResult<AccountSnapshot> {
        self.following_merges(|| self.read_account(program, customer, false)).await
    }

    /// Runs a read again when the identifier's account turned out to be merged into another
    /// (`EngineError::AccountMoved`); calls that write go through `until_committed`, which does too.
    pub(crate) async fn following_merges<T, F, Fut>(&self, mut read: F) -> EngineResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = EngineResult<T>>,
    {
        for _ in 0..MERGE_HOPS_MAX {
            match read().await {
                Err(EngineError::AccountMoved) => continue,
                other => return other,
            }
        }
        Err(EngineError::Contention { attempts: MERGE_HOPS_MAX as u32 })
    }

    /// Reads an account for an administrator: a replaced card still finds its customer.
    pub async fn find_account(&self, program: &Program, customer: &IdentityKey) -> EngineResult<AccountSnapshot> {
        self.following_merges(|| self.read_account(program, customer, true)).await
    }

    async fn read_account(&self, program: &Program, customer: &IdentityKey, blocked_ok: bool) -> EngineResult<AccountSnapshot> {
        let program_id = program.policy.program_id.as_str();
        let account_id = self.resolve(program_id, customer).await?.ok_or(Rejection::CustomerNotFound)?;
        let slot = self.accounts.slot(program_id, &account_id);
        let mut guard = slot.lock().await;
        let state = match blocked_ok {
            true => self.load_bound(&mut guard, program_id, &account_id, customer).await?,
            false => self.load_checked(&mut guard, program_id, &account_id, customer).await?,
        };
        Ok(AccountSnapshot { state: state.value, now: self.now_in(program_id) })
    }

    /// A page of an account's ledger, newest first, and the seq to continue before (if any).
    pub async fn list_transactions(
        &self,
        program: &Program,
        customer: &IdentityKey,
        before_seq: u64,
        limit: usize,
    ) -> EngineResult<(Vec<LedgerEntry>, Option<u64>)> {
        self.following_merges(|| self.ledger_page(program, customer, before_seq, limit)).await
    }

    async fn ledger_page(
        &self,
        program: &Program,
        customer: &IdentityKey,
        before_seq: u64,
        limit: usize,
    ) -> EngineResult<(Vec<LedgerEntry>, Option<u64>)> {
        let program_id = program.policy.program_id.as_str();
        let account_id = self.resolve(program_id, customer).await?.ok_or(Rejection::CustomerNotFound)?;
        // The binding may have been released by an erasure on another engine.
        self.load_checked(&mut self.accounts.slot(program_id, &account_id).lock().await, program_id, &account_id, customer).await?;
        let entries = self.store.ledger_page(program_id, &account_id, before_seq, limit).await?;
        let next = match entries.last() {
            Some(last) if entries.len() == limit && last.seq > 1 => Some(last.seq),
            _ => None,
        };
        Ok((entries, next))
    }

    /// Authorize: a quote without spending (no side effects), or a quote and a hold.
    pub async fn authorize(
        &self,
        program: &Arc<Program>,
        origin: &Origin,
        customer: &IdentityKey,
        cmd: AuthorizeCmd,
    ) -> EngineResult<AuthorizeOutcome> {
        if cmd.spend.is_zero() {
            return self.following_merges(|| self.quote(program, origin, customer, &cmd)).await;
        }
        let hold_id = self.ids.hold_id();
        let route = Route::Customer { key: customer, create_unknown_card: false, sold_at: None };
        let response = self
            .receipt_call(program, origin, route, &cmd.receipt_id, OpKind::Authorize, "", &cmd, |checkout, txn, receipt| {
                ops::authorize(checkout, txn, receipt, &cmd, hold_id.clone()).map(StoredResponse::Authorize)
            })
            .await?;
        stored_as(OpKind::Authorize, response)
    }

    async fn quote(
        &self,
        program: &Program,
        origin: &Origin,
        customer: &IdentityKey,
        cmd: &AuthorizeCmd,
    ) -> EngineResult<AuthorizeOutcome> {
        let program_id = program.policy.program_id.as_str();
        let now = self.now_in(program_id);
        let state = match self.resolve(program_id, customer).await? {
            Some(account_id) => {
                let slot = self.accounts.slot(program_id, &account_id);
                let mut guard = slot.lock().await;
                self.load_checked(&mut guard, program_id, &account_id, customer).await?.value
            }
            // An unknown card earns from its first purchase: quote it as a new, empty account.
            None if customer.kind == IdentityKind::Card => AccountState::new(String::new(), false, now),
            None => return Err(Rejection::CustomerNotFound.into()),
        };
        Ok(ops::quote(&program.checkout(), &state, cmd, now, origin)?)
    }

    pub async fn redeem(
        &self,
        program: &Arc<Program>,
        origin: &Origin,
        customer: &IdentityKey,
        cmd: RedeemCmd,
    ) -> EngineResult<RedeemOutcome> {
        let route = Route::Customer { key: customer, create_unknown_card: false, sold_at: None };
        let response = self
            .receipt_call(program, origin, route, &cmd.receipt_id, OpKind::Redeem, "", &cmd, |checkout, txn, receipt| {
                ops::redeem(checkout, txn, receipt, &cmd).map(StoredResponse::Redeem)
            })
            .await?;
        stored_as(OpKind::Redeem, response)
    }

    pub async fn accrue(
        &self,
        program: &Arc<Program>,
        origin: &Origin,
        customer: &IdentityKey,
        cmd: AccrueCmd,
    ) -> EngineResult<AccrueOutcome> {
        let route = Route::Customer { key: customer, create_unknown_card: true, sold_at: cmd.occurred_at };
        // A late receipt's first call is evaluated against the version in force when it was made.
        let program = &match cmd.occurred_at {
            Some(at) => self.version_in_force(program, at).await?,
            None => Arc::clone(program),
        };
        let response = self
            .receipt_call(program, origin, route, &cmd.receipt_id, OpKind::Accrue, "", &cmd, |checkout, txn, receipt| {
                ops::accrue(checkout, txn, receipt, &cmd).map(StoredResponse::Accrue)
            })
            .await?;
        stored_as(OpKind::Accrue, response)
    }

    pub async fn reverse(&self, program: &Arc<Program>, origin: &Origin, cmd: ReverseCmd) -> EngineResult<ReverseOutcome> {
        let response = self
            .receipt_call(program, origin, Route::Receipt, &cmd.receipt_id, OpKind::Reverse, "", &cmd, |checkout, txn, receipt| {
                ops::reverse(checkout, txn, receipt, &cmd).map(StoredResponse::Reverse)
            })
            .await?;
        stored_as(OpKind::Reverse, response)
    }

    pub async fn refund(&self, program: &Arc<Program>, origin: &Origin, cmd: RefundCmd) -> EngineResult<RefundOutcome> {
        let key = cmd.refund_id.clone();
        let response = self
            .receipt_call(program, origin, Route::Receipt, &cmd.receipt_id, OpKind::Refund, &key, &cmd, |checkout, txn, receipt| {
                ops::refund(checkout, txn, receipt, &cmd).map(StoredResponse::Refund)
            })
            .await?;
        stored_as(OpKind::Refund, response)
    }

    /// An event bonus or a manual adjustment, idempotent by its request ID.
    pub async fn bonus(
        &self,
        program: &Arc<Program>,
        origin: &Origin,
        customer: &IdentityKey,
        request_id: &str,
        cmd: BonusCmd,
    ) -> EngineResult<BonusOutcome> {
        let route = Route::Customer { key: customer, create_unknown_card: false, sold_at: None };
        // Request IDs never contain '/', so these keys cannot meet a till's receipt ID.
        let key = format!("{BONUS_RECEIPT_PREFIX}{request_id}");
        let response = self
            .receipt_call(program, origin, route, &key, OpKind::Bonus, "", &cmd, |checkout, txn, _receipt| {
                ops::bonus(checkout, txn, &cmd).map(StoredResponse::Bonus)
            })
            .await?;
        stored_as(OpKind::Bonus, response)
    }

    /// The referral chain a new customer referred by `referrer` gets: the referrer's account, then
    /// the referrer's own chain, up to the most levels any chain keeps.
    async fn referral_chain(&self, program: &Program, referrer: &IdentityKey) -> EngineResult<Vec<String>> {
        let program_id = program.policy.program_id.as_str();
        let referrer_id = self.resolve(program_id, referrer).await?.ok_or_else(|| Rejection::invalid("referrer", "no such customer"))?;
        let stored = self.store.account(program_id, &referrer_id).await?.ok_or_else(|| dangling(&referrer_id))?;
        if !stored.value.registered {
            return Err(Rejection::invalid("referrer", "only a registered customer can refer another").into());
        }
        let mut chain = vec![referrer_id];
        chain.extend(stored.value.referral_chain.iter().take(loyalty_core::account::REFERRAL_LEVELS_MAX - 1).cloned());
        Ok(chain)
    }

    /// Runs one mutating call on a receipt exactly once (see the module documentation).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn receipt_call<C: Serialize>(
        &self,
        program: &Arc<Program>,
        origin: &Origin,
        route: Route<'_>,
        receipt_id: &str,
        op: OpKind,
        key: &str,
        cmd: &C,
        apply: impl Fn(&Checkout<'_>, &mut Txn<'_>, &mut ReceiptState) -> Result<StoredResponse, Rejection>,
    ) -> EngineResult<StoredResponse> {
        let program_id = program.policy.program_id.as_str();
        let print = fingerprint(op, &(origin.place(), cmd));
        let apply = &apply;
        self.until_committed(|| async move {
            let (account_id, create_card) = match route {
                Route::Customer { key: customer, create_unknown_card, .. } => match self.resolve(program_id, customer).await? {
                    Some(account_id) => (account_id, None),
                    None if create_unknown_card && customer.kind == IdentityKind::Card => {
                        (self.ids.account_id(&format!("card/{program_id}/{}", customer.value)), Some(customer.clone()))
                    }
                    None => return Err(Rejection::CustomerNotFound.into()),
                },
                Route::Receipt => match self.store.receipt(program_id, receipt_id).await? {
                    Some(receipt) => (receipt.value.account_id, None),
                    None => return Err(Rejection::ReceiptNotFound { receipt_id: receipt_id.to_owned() }.into()),
                },
                Route::Account(account_id) => (account_id.to_owned(), None),
            };
            let slot = self.accounts.slot(program_id, &account_id);
            let mut guard = slot.lock().await;
            // Read the receipt under the account's slot: calls on one receipt are serialised here.
            let receipt = self.store.receipt(program_id, receipt_id).await?;
            if let Some(stored) = &receipt {
                if stored.value.account_id != account_id {
                    // Begun on a card merged into this account since: a retry of a call made then
                    // is answered as always; anything new on it is refused (the card's account
                    // holds nothing now).
                    if self.merged_into(program_id, &stored.value.account_id).await?.as_deref() == Some(account_id.as_str()) {
                        if let Some(answer) = replay(&stored.value, op, key, &print)? {
                            return Ok(Attempt::Done(answer));
                        }
                        return Err(Rejection::invalid(
                            "receipt_id",
                            "was begun on a card merged into this customer's account since; start a new receipt",
                        )
                        .into());
                    }
                    let (kind, key) = conflict_key(receipt_id);
                    return Err(Rejection::IdempotencyConflict { kind, key }.into());
                }
                if let Some(answer) = replay(&stored.value, op, key, &print)? {
                    metrics::counter!("loyalty_replays_total", "op" => op.as_str()).increment(1);
                    return Ok(Attempt::Done(answer));
                }
            }
            let now = self.now_in(program_id);
            let (account_version, account) = match &create_card {
                Some(card) => {
                    let mut fresh = AccountState::new(account_id.clone(), false, now);
                    fresh.identities.push(card.clone());
                    (0, fresh)
                }
                None => {
                    let stored = match route {
                        Route::Customer { key: customer, sold_at, .. } => {
                            self.load_presented(&mut guard, program_id, &account_id, customer, sold_at).await?
                        }
                        _ => self.load(&mut guard, program_id, &account_id).await?.ok_or_else(|| dangling(&account_id))?,
                    };
                    (stored.version, stored.value)
                }
            };
            let mut txn = Txn::begin(&program.policy, &account, now, self.ids.transaction_id(), origin.clone());
            let (receipt_version, mut receipt_state) = match receipt {
                Some(stored) => (stored.version, stored.value),
                None => (0, ReceiptState::new(receipt_id.to_owned(), account_id.clone(), now, origin.clone())),
            };
            // A receipt is evaluated against the version its first call used, start to end.
            let version = match receipt_state.program_version {
                Some(version) => self.pinned(program, version).await?,
                None => Arc::clone(program),
            };
            receipt_state.program_version = Some(version.rules.version());
            let response = match apply(&version.checkout(), &mut txn, &mut receipt_state) {
                Ok(response) => response,
                // A counted code attempt is stored although the call is refused (the receipt is not).
                Err(rejection) if rejection.records_attempt() => {
                    let commit = commit_of(program_id, account_version, txn.finish_all()?);
                    return match self.commit(&mut guard, commit).await? {
                        Some(_) => Err(rejection.into()),
                        None => Ok(Attempt::Again),
                    };
                }
                Err(rejection) => return Err(rejection.into()),
            };
            receipt_state.calls.push(CallRecord { op, key: key.to_owned(), fingerprint: print, response: response.clone() });
            let finished = txn.finish_all()?;
            receipt_state.check_invariants().map_err(EngineError::Internal)?;
            let owes_credits = !finished.credits.is_empty();
            let commit = Commit {
                receipt: Some(ReceiptWrite { expected_version: receipt_version, state: receipt_state }),
                identity_claims: create_card.into_iter().collect(),
                ..commit_of(program_id, account_version, finished)
            };
            if self.commit(&mut guard, commit).await?.is_none() {
                return Ok(Attempt::Again);
            }
            if owes_credits {
                self.credits_due.notify_one();
            }
            Ok(Attempt::Done(response))
        })
        .await
    }

    /// Registers a customer by phone, creating an account or registering the card's anonymous one.
    pub async fn enroll(&self, program: &Program, origin: &Origin, cmd: EnrollCmd) -> EngineResult<EnrollOutcome> {
        let program_id = program.policy.program_id.as_str();
        let print = fingerprint(OpKind::Enroll, &(origin.place(), &cmd));
        let phone = IdentityKey { kind: IdentityKind::Phone, value: cmd.phone.clone() };
        let token = &cmd.app_token.clone().map(|value| IdentityKey { kind: IdentityKind::AppToken, value });
        let (cmd, phone) = (&cmd, &phone);
        self.until_committed(|| async move {
            if let Some(outcome) = self.replayed_request(program_id, &cmd.request_id, &cmd.request_id, &print).await? {
                return Ok(Attempt::Done(outcome));
            }
            if self.resolve(program_id, phone).await?.is_some() {
                return Err(Rejection::PhoneAlreadyRegistered.into());
            }
            if let Some(token) = &token
                && self.resolve(program_id, token).await?.is_some()
            {
                return Err(Rejection::IdentifierTaken { kind: "app token" }.into());
            }
            let referral_chain = match &cmd.referrer {
                Some(referrer) => self.referral_chain(program, referrer).await?,
                None => Vec::new(),
            };
            let origin_key = format!("enroll/{program_id}/{}", cmd.request_id);
            let card_number = cmd.card_number.clone().unwrap_or_else(|| self.ids.virtual_card_number(&origin_key));
            let card = IdentityKey { kind: IdentityKind::Card, value: card_number.clone() };
            let existing = match &cmd.card_number {
                Some(_) => self.resolve(program_id, &card).await?,
                None => None,
            };
            let account_id = existing.clone().unwrap_or_else(|| self.ids.account_id(&origin_key));
            let slot = self.accounts.slot(program_id, &account_id);
            let mut guard = slot.lock().await;
            let now = self.now_in(program_id);
            let (version, mut state) = match &existing {
                Some(_) => {
                    let stored = self.load(&mut guard, program_id, &account_id).await?.ok_or_else(|| dangling(&account_id))?;
                    if stored.value.registered {
                        return Err(Rejection::IdentifierTaken { kind: "card" }.into());
                    }
                    (stored.version, stored.value)
                }
                None => {
                    let mut fresh = AccountState::new(account_id.clone(), true, now);
                    fresh.identities.push(card.clone());
                    (0, fresh)
                }
            };
            state.registered = true;
            state.profile.phone = Some(cmd.phone.clone());
            state.profile.name = cmd.name.clone();
            state.profile.birth_date = cmd.birth_date;
            if state.referral_chain.is_empty() && !referral_chain.contains(&account_id) {
                state.referral_chain = referral_chain.clone();
            }
            for tag in &cmd.tags {
                if !state.tags.contains(tag) {
                    state.tags.push(tag.clone());
                }
            }
            let mut claims = vec![phone.clone(), card.clone()];
            state.identities.push(phone.clone());
            if let Some(token) = &token {
                state.identities.push(token.clone());
                claims.push(token.clone());
            }
            // Welcome bonuses of the program's enrolment rules, in the same commit.
            let mut txn = Txn::begin(&program.policy, &state, now, self.ids.transaction_id(), origin.clone());
            let bonuses = ops::enrollment_bonuses(&program.checkout(), &mut txn);
            let fee_points = program.policy.floor_points(cmd.card_fee);
            loyalty_core::cards::credit_card_fee(&mut txn, fee_points);
            let finished = txn.finish_all()?;
            let state = finished.account;
            let outcome = EnrollOutcome {
                account_id: account_id.clone(),
                card_number,
                created: existing.is_none(),
                balance: state.balance_at(now),
                bonuses,
                fee_points,
            };
            let record = CallRecord {
                op: OpKind::Enroll,
                key: cmd.request_id.clone(),
                fingerprint: print,
                response: StoredResponse::Enroll(outcome.clone()),
            };
            let commit = Commit {
                identity_claims: claims,
                request: Some(RequestWrite { request_id: cmd.request_id.clone(), record }),
                ..commit_of(program_id, version, Finished { account: state, ..finished })
            };
            Ok(match self.commit(&mut guard, commit).await? {
                Some(_) => Attempt::Done(outcome),
                None => Attempt::Again,
            })
        })
        .await
    }
}

impl Engine {
    /// The stored first answer to a call keyed by request ID (claimed as `key`: the ID itself, or
    /// `<kind>/<ID>`), if it was made before with the same payload; a conflict naming the caller's
    /// `request_id` if it was made with another payload, or is another kind of call.
    pub(crate) async fn replayed_request<T: TryFrom<StoredResponse, Error = StoredResponse>>(
        &self,
        program_id: &str,
        key: &str,
        request_id: &str,
        print: &Fingerprint,
    ) -> EngineResult<Option<T>> {
        let Some(record) = self.store.request(program_id, key).await? else {
            return Ok(None);
        };
        match T::try_from(record.response) {
            Ok(outcome) if record.fingerprint == *print => Ok(Some(outcome)),
            _ => Err(Rejection::IdempotencyConflict { kind: "request_id", key: request_id.to_owned() }.into()),
        }
    }
}

/// The stored first answer to this call, if it was made before with the same payload; a conflict
/// if it was made with another payload.
fn replay(receipt: &ReceiptState, op: OpKind, key: &str, print: &Fingerprint) -> EngineResult<Option<StoredResponse>> {
    match receipt.call(op, key) {
        Some(call) if call.fingerprint == *print => Ok(Some(call.response.clone())),
        Some(_) => {
            let (kind, key) = if key.is_empty() { conflict_key(&receipt.receipt_id) } else { ("refund_id", key.to_owned()) };
            Err(Rejection::IdempotencyConflict { kind, key }.into())
        }
        None => Ok(None),
    }
}

/// How a conflict on a receipt key is reported to the caller: an AwardBonus request is kept as the
/// receipt `bonus/<request ID>`, but the caller sent a request ID.
fn conflict_key(receipt_id: &str) -> (&'static str, String) {
    match receipt_id.strip_prefix(BONUS_RECEIPT_PREFIX) {
        Some(request_id) => ("request_id", request_id.to_owned()),
        None => ("receipt_id", receipt_id.to_owned()),
    }
}

fn dangling(account_id: &str) -> EngineError {
    EngineError::Internal(format!("identifier bound to missing account {account_id}"))
}

/// The outcome of `op` out of its stored answer; another kind of answer is a bug.
fn stored_as<T: TryFrom<StoredResponse, Error = StoredResponse>>(op: OpKind, response: StoredResponse) -> EngineResult<T> {
    T::try_from(response).map_err(|other| {
        let kind = match other {
            StoredResponse::Authorize(_) => "authorize",
            StoredResponse::Redeem(_) => "redeem",
            StoredResponse::Accrue(_) => "accrue",
            StoredResponse::Reverse(_) => "reverse",
            StoredResponse::Refund(_) => "refund",
            StoredResponse::Enroll(_) => "enroll",
            StoredResponse::Bonus(_) => "bonus",
            StoredResponse::ReplaceCard(_) => "replace_card",
            StoredResponse::Merge(_) => "merge",
            StoredResponse::Import(_) => "import",
        };
        EngineError::Internal(format!("{} call answered with a stored {kind} response", op.as_str()))
    })
}
