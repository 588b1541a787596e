//! The checkout calls: quotes and holds, spending, earning, reversals and refunds, event bonuses,
//! and the reads a till makes (the account, its ledger). Every call that writes runs on one account
//! exactly once, through `Checkout::receipt_call`:
//!
//! it (1) finds the account (by identifier, or by the receipt for refunds and reversals), (2) takes
//! the account's slot, which serialises calls on one account in this process, (3) reads the
//! receipt and answers a replay from its stored first response, (4) runs the domain operation on
//! working copies, (5) commits the account, its ledger entries and the receipt in one conditional
//! write, and only then (6) answers. A lost compare-and-set (another process, or a concurrent
//! claim of the same receipt or card) re-reads and tries again, a bounded number of times
//! (`commit`). Transport, wire formats and status codes are not its business: see `grpc`.

use std::sync::Arc;

use loyalty_core::Origin;
use loyalty_core::account::AccountState;
use loyalty_core::figures::{is_sales_account, sales_account_id};
use loyalty_core::fingerprint::{Fingerprint, fingerprint};
use loyalty_core::identity::{IdentityKey, IdentityKind};
use loyalty_core::ledger::LedgerEntry;
use loyalty_core::ops::{self, AccrueCmd, AuthorizeCmd, BonusCmd, Checkout as Operation, RedeemCmd, RefundCmd, ReverseCmd, SaleCmd};
use loyalty_core::outcome::{
    AccrueOutcome, AuthorizeOutcome, BonusOutcome, RedeemOutcome, RefundOutcome, ReverseOutcome, SaleOutcome, StoredResponse,
};
use loyalty_core::receipt::{CallRecord, OpKind, ReceiptState};
use loyalty_core::rejection::Rejection;
use loyalty_core::txn::Txn;
use loyalty_store::{Commit, ReceiptWrite, Versioned};
use serde::Serialize;

use crate::accounts::dangling;
use crate::campaign_budgets::{CallHolding, Short, Taken, locked};
use crate::commit::{Attempt, commit_of, following_merges, until_committed};
use crate::context::Context;
use crate::error::{EngineError, EngineResult};
use crate::programs::Program;

/// AwardBonus requests are kept as receipts under this prefix and their request ID.
const BONUS_RECEIPT_PREFIX: &str = "bonus/";
/// Rounds of reservations one Accrue makes at most when its receipt wants more of a campaign than
/// it holds; after them it gets what it holds.
const RESERVATIONS_PER_CALL: u32 = 3;
/// Rounds of one Accrue under campaign budgets: the reservations, then the one that takes what
/// the call holds and cannot be short.
const BUDGET_ATTEMPTS_MAX: u32 = RESERVATIONS_PER_CALL + 1;

/// An account as read, with the time it was read at.
#[derive(Clone, Debug)]
pub struct AccountSnapshot {
    pub state: AccountState,
    pub now: chrono::DateTime<chrono::Utc>,
}

/// A page of an account's history for the audit trail: the account (its notes) and ledger entries.
#[derive(Clone, Debug)]
pub struct AuditPage {
    pub account_id: String,
    pub state: AccountState,
    pub entries: Vec<LedgerEntry>,
}

/// How a receipt call finds its account.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Route<'a> {
    /// By the customer's identifier; an unknown card may be created as an anonymous account.
    /// `sold_at`: a late receipt's sale, which a card replaced after it may still carry.
    Customer { key: &'a IdentityKey, create_unknown_card: bool, sold_at: Option<chrono::DateTime<chrono::Utc>> },
    /// By the receipt (refunds and reversals).
    Receipt,
    /// By the account itself (the daily sweep, credits owed to an account).
    Account(&'a str),
    /// One of the program's internal accounts of sales without a customer
    /// (`figures::sales_account_id`), made by the first sale on it.
    Sales(&'a str),
}

/// The checkout calls (see the module documentation).
#[derive(Clone, Debug)]
pub struct Checkout {
    ctx: Arc<Context>,
}

impl Checkout {
    pub fn new(ctx: Arc<Context>) -> Self {
        Checkout { ctx }
    }

    /// Reads an account by the identifier a till presented (a replaced card is `CARD_BLOCKED`).
    pub async fn get_account(&self, program: &Program, customer: &IdentityKey) -> EngineResult<AccountSnapshot> {
        following_merges(|| self.read_account(program, customer, false)).await
    }

    /// Reads an account for an administrator: a replaced card still finds its customer.
    pub async fn find_account(&self, program: &Program, customer: &IdentityKey) -> EngineResult<AccountSnapshot> {
        following_merges(|| self.read_account(program, customer, true)).await
    }

    async fn read_account(&self, program: &Program, customer: &IdentityKey, blocked_ok: bool) -> EngineResult<AccountSnapshot> {
        let accounts = &self.ctx.accounts;
        let program_id = program.policy.program_id.as_str();
        let account_id = accounts.resolve_customer(program_id, customer).await?;
        let slot = accounts.slot(program_id, &account_id);
        let mut guard = slot.lock().await;
        let state = match blocked_ok {
            true => accounts.load_bound(&mut guard, program_id, &account_id, customer).await?,
            false => accounts.load_checked(&mut guard, program_id, &account_id, customer).await?,
        };
        Ok(AccountSnapshot { state: state.value, now: self.ctx.now_in(program_id) })
    }

    /// A page of an account's ledger, newest first, and the seq to continue before (if any).
    pub async fn list_transactions(
        &self,
        program: &Program,
        customer: &IdentityKey,
        before_seq: u64,
        limit: usize,
    ) -> EngineResult<(Vec<LedgerEntry>, Option<u64>)> {
        following_merges(|| async {
            let program_id = program.policy.program_id.as_str();
            let account_id = self.ctx.accounts.resolve_customer(program_id, customer).await?;
            // The binding may have been released by an erasure on another engine.
            let slot = self.ctx.accounts.slot(program_id, &account_id);
            self.ctx.accounts.load_checked(&mut slot.lock().await, program_id, &account_id, customer).await?;
            let entries = self.ctx.accounts.store.ledger_page(program_id, &account_id, before_seq, limit).await?;
            Ok((next_seq(&entries, limit), entries))
        })
        .await
        .map(|(next, entries)| (entries, next))
    }

    /// A page of an account's history for an administrator, found by a customer's identifier
    /// (which must still lead there: an erasure releases it; a replaced card still does) or by
    /// the account ID (an erased customer's account keeps its history): its ledger entries
    /// before `before_seq`, newest first, and the seq to continue before (if any).
    pub async fn audit_page(
        &self,
        program: &Program,
        customer: Option<&IdentityKey>,
        account_id: &str,
        before_seq: u64,
        limit: usize,
    ) -> EngineResult<(AuditPage, Option<u64>)> {
        let program_id = program.policy.program_id.as_str();
        let accounts = &self.ctx.accounts;
        following_merges(|| async {
            let (account_id, state) = match customer {
                Some(customer) => {
                    let account_id = accounts.resolve_customer(program_id, customer).await?;
                    let slot = accounts.slot(program_id, &account_id);
                    let state = accounts.load_bound(&mut slot.lock().await, program_id, &account_id, customer).await?.value;
                    (account_id, state)
                }
                // The internal accounts of sales without a customer are nobody's.
                None if is_sales_account(account_id) => return Err(Rejection::CustomerNotFound.into()),
                None => {
                    let slot = accounts.slot(program_id, account_id);
                    let state = accounts.load(&mut slot.lock().await, program_id, account_id).await?.ok_or(Rejection::CustomerNotFound)?;
                    (account_id.to_owned(), state.value)
                }
            };
            let entries = accounts.store.ledger_page(program_id, &account_id, before_seq, limit).await?;
            let next = next_seq(&entries, limit);
            Ok((AuditPage { account_id, state, entries }, next))
        })
        .await
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
            return following_merges(|| self.quote(program, origin, customer, &cmd)).await;
        }
        let hold_id = self.ctx.ids.hold_id();
        let route = Route::Customer { key: customer, create_unknown_card: false, sold_at: None };
        let response = self
            .receipt_call(program, origin, route, &cmd.receipt_id, OpKind::Authorize, "", &cmd, |checkout, txn, receipt| {
                let allowance = self.ctx.campaigns.quote_allowance(program.id(), checkout.rules);
                ops::authorize_within(checkout, txn, receipt, &cmd, hold_id.clone(), &allowance).map(StoredResponse::Authorize)
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
        let now = self.ctx.now_in(program_id);
        let state = match self.ctx.accounts.resolve(program_id, customer).await? {
            Some(account_id) => {
                let slot = self.ctx.accounts.slot(program_id, &account_id);
                let mut guard = slot.lock().await;
                self.ctx.accounts.load_checked(&mut guard, program_id, &account_id, customer).await?.value
            }
            // An unknown card earns from its first purchase: quote it as a new, empty account.
            None if customer.kind == IdentityKind::Card => AccountState::new(String::new(), false, now),
            None => return Err(Rejection::CustomerNotFound.into()),
        };
        let allowance = self.ctx.campaigns.quote_allowance(program_id, &program.rules);
        Ok(ops::quote_within(&program.checkout(), &state, cmd, now, origin, &allowance)?)
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
            Some(at) => self.ctx.rules.version_in_force(program, at).await?,
            None => Arc::clone(program),
        };
        self.accrue_budgeted(program, origin, route, &cmd).await
    }

    /// Accrue, paying budgeted campaigns only out of reserved points (`campaign_budgets`): the
    /// receipt is evaluated against what the call and this engine hold of each budget and takes
    /// what it gives; an attempt that does not commit gives it back; a receipt that wants more
    /// than is held reserves more (set aside for this call) and runs again. After
    /// `RESERVATIONS_PER_CALL` rounds of reservations it gets what the call holds. Every Accrue
    /// goes through here: the receipt's pinned rules version decides whether a budget applies.
    async fn accrue_budgeted(
        &self,
        program: &Arc<Program>,
        origin: &Origin,
        route: Route<'_>,
        cmd: &AccrueCmd,
    ) -> EngineResult<AccrueOutcome> {
        let program_id = program.id();
        let budgets = &self.ctx.campaigns;
        let own = CallHolding::new(budgets, program_id);
        // What the latest attempt took, with its transaction: the one that commits keeps it.
        let taken: std::sync::Mutex<Option<(String, Taken)>> = std::sync::Mutex::new(None);
        let short: std::sync::Mutex<Vec<Short>> = std::sync::Mutex::new(Vec::new());
        let pending = || locked(&taken).take();
        for round in 0..BUDGET_ATTEMPTS_MAX {
            let accept_cut = round >= RESERVATIONS_PER_CALL;
            let result = self
                .receipt_call(program, origin, route, &cmd.receipt_id, OpKind::Accrue, "", cmd, |checkout, txn, receipt| {
                    let mut mine = own.lock();
                    // An earlier attempt of this call that did not commit gives back what it took.
                    if let Some((_, points)) = pending() {
                        mine.merge(points);
                    }
                    let allowance = budgets.allowance(program_id, checkout.rules, &mine, accept_cut);
                    let outcome = ops::accrue_within(checkout, txn, receipt, cmd, &allowance)?;
                    let uses = receipt.accrual.as_ref().map_or(&[][..], |accrual| accrual.campaigns.as_slice());
                    match budgets.take(program_id, checkout.rules, uses, &mut mine, accept_cut, self.ctx.now()) {
                        Ok(points) => {
                            *locked(&taken) = Some((outcome.tx_id.clone(), points));
                        }
                        Err(found) => {
                            *locked(&short) = found;
                            return Err(EngineError::CampaignBudgetShort);
                        }
                    }
                    Ok(StoredResponse::Accrue(outcome))
                })
                .await;
            match result {
                Ok(response) => {
                    let outcome: AccrueOutcome = stored_as(OpKind::Accrue, response)?;
                    // A replay answered a later attempt: what an earlier one took was not given.
                    if let Some((tx_id, points)) = pending()
                        && tx_id != outcome.tx_id
                    {
                        own.lock().merge(points);
                    }
                    return Ok(outcome);
                }
                Err(EngineError::CampaignBudgetShort) => {
                    let found = std::mem::take(&mut *locked(&short));
                    // The budget is the lower of the receipt's version and the latest stored.
                    self.ctx.rules.refresh().await?;
                    let current = self.ctx.program(program_id)?;
                    for found in found {
                        let latest = current.rules.budgets().get(&found.campaign).map_or(found.budget.points, |budget| budget.points);
                        let points = budgets.reserve(program_id, &found, found.budget.points.min(latest), self.ctx.now()).await?;
                        own.lock().merge(points);
                    }
                }
                Err(error) => {
                    // After a store failure the commit may have applied: what it took stays
                    // taken (never given twice). Any other failure wrote nothing.
                    if let Some((_, points)) = pending().filter(|_| !matches!(error, EngineError::Store(_))) {
                        own.lock().merge(points);
                    }
                    return Err(error);
                }
            }
        }
        Err(EngineError::Contention { attempts: BUDGET_ATTEMPTS_MAX })
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

    /// A sale without a customer (`RecordSale`), idempotent by its receipt ID: committed on the
    /// store's sales account for the receipt (`figures::sales_account_id`, one of
    /// `SALES_SHARDS_PER_STORE`), whose commit carries it to the figures. It reads no customer and
    /// runs no rules; it claims the receipt ID as every receipt does, so that the receipt counts
    /// once, with or without a customer, and a retry finds its first answer.
    pub async fn record_sale(&self, program: &Arc<Program>, origin: &Origin, cmd: SaleCmd) -> EngineResult<SaleOutcome> {
        // A retry finds the account its receipt is on (it may be an earlier month's); a new sale
        // goes to this month's shard.
        let account_id = match self.ctx.accounts.store.receipt(program.id(), &cmd.receipt_id).await? {
            Some(receipt) if is_sales_account(&receipt.value.account_id) => receipt.value.account_id,
            _ => {
                let month = self.ctx.now_in(program.id()).with_timezone(&program.policy.time_zone).format("%Y-%m").to_string();
                sales_account_id(&origin.store_id, &month, &cmd.receipt_id)
            }
        };
        let route = Route::Sales(&account_id);
        let response = self
            .receipt_call(program, origin, route, &cmd.receipt_id, OpKind::Sale, "", &cmd, |checkout, txn, receipt| {
                ops::record_sale(checkout, txn, receipt, &cmd).map(StoredResponse::Sale)
            })
            .await?;
        stored_as(OpKind::Sale, response)
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

    /// Runs one mutating call on a receipt exactly once (see the module documentation).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn receipt_call<C: Serialize, E: Into<EngineError>>(
        &self,
        program: &Arc<Program>,
        origin: &Origin,
        route: Route<'_>,
        receipt_id: &str,
        op: OpKind,
        key: &str,
        cmd: &C,
        apply: impl Fn(&Operation<'_>, &mut Txn<'_>, &mut ReceiptState) -> Result<StoredResponse, E>,
    ) -> EngineResult<StoredResponse> {
        let program_id = program.policy.program_id.as_str();
        let print = fingerprint(op, &(origin.place(), cmd));
        let apply = &apply;
        let (ctx, accounts) = (&self.ctx, &self.ctx.accounts);
        until_committed(|| async move {
            let (account_id, create_card) = match route {
                Route::Customer { key: customer, create_unknown_card, .. } => match accounts.resolve(program_id, customer).await? {
                    Some(account_id) => (account_id, None),
                    None if create_unknown_card && customer.kind == IdentityKind::Card => {
                        (ctx.ids.account_id(&format!("card/{program_id}/{}", customer.value)), Some(customer.clone()))
                    }
                    None => return Err(Rejection::CustomerNotFound.into()),
                },
                Route::Receipt => match accounts.store.receipt(program_id, receipt_id).await? {
                    // A sale without a customer moved no points: nothing to give back or take.
                    Some(receipt) if is_sales_account(&receipt.value.account_id) => {
                        return Err(Rejection::invalid(
                            "receipt_id",
                            "was recorded by RecordSale, without a customer: it has no points to reverse or refund",
                        )
                        .into());
                    }
                    Some(receipt) => (receipt.value.account_id, None),
                    None => return Err(Rejection::ReceiptNotFound { receipt_id: receipt_id.to_owned() }.into()),
                },
                Route::Account(account_id) | Route::Sales(account_id) => (account_id.to_owned(), None),
            };
            let slot = accounts.slot(program_id, &account_id);
            let mut guard = slot.lock().await;
            // Read the receipt under the account's slot: calls on one receipt are serialised here.
            let receipt = accounts.store.receipt(program_id, receipt_id).await?;
            if let Some(stored) = &receipt {
                if stored.value.account_id != account_id {
                    // The card led to its own account, merged since into the one this receipt is
                    // on (a binding read from the store after a restart: merging leaves the card's
                    // row pointing at the emptied account): run again on the account it leads to.
                    if let Route::Customer { key: customer, .. } = route
                        && let Some(target) = accounts.merged_into(program_id, &account_id).await?
                    {
                        accounts.moved(program_id, customer, &target);
                        return Err(EngineError::AccountMoved);
                    }
                    // Begun on a card merged into this account since: a retry of a call made then
                    // is answered as always; anything new on it is refused (the card's account
                    // holds nothing now).
                    if accounts.merged_into(program_id, &stored.value.account_id).await?.as_deref() == Some(account_id.as_str()) {
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
            let now = ctx.now_in(program_id);
            let (account_version, account) = match &create_card {
                Some(card) => {
                    let mut fresh = AccountState::new(account_id.clone(), false, now);
                    fresh.identities.push(card.clone());
                    (0, fresh)
                }
                None => {
                    let stored = match route {
                        Route::Customer { key: customer, sold_at, .. } => {
                            accounts.load_presented(&mut guard, program_id, &account_id, customer, sold_at).await?
                        }
                        // The first sale on a sales account makes it.
                        Route::Sales(_) => accounts
                            .load(&mut guard, program_id, &account_id)
                            .await?
                            .unwrap_or_else(|| Versioned { version: 0, value: AccountState::new(account_id.clone(), false, now) }),
                        _ => accounts.load(&mut guard, program_id, &account_id).await?.ok_or_else(|| dangling(&account_id))?,
                    };
                    (stored.version, stored.value)
                }
            };
            let mut txn = Txn::begin(&program.policy, &account, now, ctx.ids.transaction_id(), origin.clone());
            let (receipt_version, mut receipt_state) = match receipt {
                Some(stored) => (stored.version, stored.value),
                None => (0, ReceiptState::new(receipt_id.to_owned(), account_id.clone(), now, origin.clone())),
            };
            // A receipt is evaluated against the version its first call used, start to end.
            let version = match receipt_state.program_version {
                Some(version) => ctx.rules.pinned(program, version).await?,
                None => Arc::clone(program),
            };
            receipt_state.program_version = Some(version.rules.version());
            let response = match apply(&version.checkout(), &mut txn, &mut receipt_state).map_err(Into::into) {
                Ok(response) => response,
                // A counted code attempt is stored although the call is refused (the receipt is not).
                Err(EngineError::Rejected(rejection)) if rejection.records_attempt() => {
                    let commit = commit_of(program_id, account_version, txn.finish_all()?);
                    return match accounts.commit(&mut guard, commit).await? {
                        Some(_) => Err(rejection.into()),
                        None => Ok(Attempt::Again),
                    };
                }
                Err(error) => return Err(error),
            };
            receipt_state.calls.push(CallRecord { op, key: key.to_owned(), fingerprint: print, response: response.clone() });
            receipt_state.last_call_at = Some(now);
            let finished = txn.finish_all()?;
            receipt_state
                .check_invariants()
                .map_err(|detail| EngineError::Invariant(loyalty_core::txn::InvariantBroken { account_id: account_id.clone(), detail }))?;
            let owes_credits = !finished.credits.is_empty();
            let commit = Commit {
                receipt: Some(ReceiptWrite { expected_version: receipt_version, state: receipt_state }),
                identity_claims: create_card.into_iter().collect(),
                ..commit_of(program_id, account_version, finished)
            };
            if accounts.commit(&mut guard, commit).await?.is_none() {
                return Ok(Attempt::Again);
            }
            if owes_credits {
                ctx.credits_due.notify_one();
            }
            Ok(Attempt::Done(response))
        })
        .await
    }
}

/// The seq a ledger page continues before, when the page is full and older entries remain.
fn next_seq(entries: &[LedgerEntry], limit: usize) -> Option<u64> {
    match entries.last() {
        Some(last) if entries.len() == limit && last.seq > 1 => Some(last.seq),
        _ => None,
    }
}

/// The stored first answer to this call, if it was made before with the same payload; a conflict
/// if it was made with another payload.
fn replay(receipt: &ReceiptState, op: OpKind, key: &str, print: &Fingerprint) -> EngineResult<Option<StoredResponse>> {
    match receipt.call(op, key) {
        Some(call) if call.fingerprint == *print => match &call.response {
            StoredResponse::Compacted(compacted) => {
                Err(Rejection::ReceiptCompacted { receipt_id: receipt.receipt_id.clone(), at: compacted.at }.into())
            }
            response => Ok(Some(response.clone())),
        },
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
            StoredResponse::Sale(_) => "record_sale",
            StoredResponse::Compacted(_) => "compacted",
        };
        EngineError::Internal(format!("{} call answered with a stored {kind} response", op.as_str()))
    })
}
