//! Building valid commits with the engine's own types (a `Txn` does the bookkeeping, exactly as in
//! the engine), and reading back what a store holds.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use loyalty_core::account::AccountState;
use loyalty_core::events::PendingCredit;
use loyalty_core::fingerprint::Fingerprint;
use loyalty_core::identity::{IdentityKey, IdentityKind};
use loyalty_core::ledger::LedgerEntry;
use loyalty_core::outcome::{AccrueOutcome, EnrollOutcome, RedeemOutcome, StoredResponse};
use loyalty_core::program::{PendingRule, ProgramPolicy};
use loyalty_core::receipt::{CallRecord, OpKind, ReceiptState};
use loyalty_core::txn::{Posting, Txn};
use loyalty_core::{Decimal, Origin};
use loyalty_store::{AccountWrite, Commit, CommitOutcome, Conflict, OutboxRecord, ReceiptWrite, RequestWrite, Store, Versioned};
/// Shared with the end-to-end tests.
pub use loyalty_tests::eventually;

/// The program every test writes to (each test has fresh data).
pub const PROGRAM: &str = "p";

/// Longest wait for something a backend delivers asynchronously (ScyllaDB's relay).
pub const DELIVERY: Duration = Duration::from_secs(15);

/// The clock of every commit: a fixed instant, so that nothing expires between commits.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).single().expect("valid time")
}

/// The default program, with earned points spendable at once (so that spends need no clock).
pub fn policy() -> ProgramPolicy {
    let mut policy = ProgramPolicy::with_defaults(PROGRAM);
    policy.pending = PendingRule::None;
    policy
}

pub fn origin() -> Origin {
    Origin { store_id: "store-1".into(), till_id: "till-1".into(), actor: "till-gw".into() }
}

pub fn card(value: &str) -> IdentityKey {
    IdentityKey { kind: IdentityKind::Card, value: value.into() }
}

pub fn phone(value: &str) -> IdentityKey {
    IdentityKey { kind: IdentityKind::Phone, value: value.into() }
}

pub fn points(value: i64) -> Decimal {
    Decimal::from(value)
}

/// An account that does not exist yet: version 0.
pub fn fresh(account_id: &str) -> Versioned<AccountState> {
    Versioned { version: 0, value: AccountState::new(account_id.into(), true, now()) }
}

/// A fingerprint that differs per call.
fn print_of(text: &str) -> Fingerprint {
    let mut print = [0u8; 32];
    for (index, byte) in text.bytes().enumerate() {
        print[index % 32] = print[index % 32].wrapping_mul(31).wrapping_add(byte);
    }
    print
}

#[derive(Clone, Copy, Debug)]
pub enum Move {
    Earn(i64),
    Spend(i64),
}

#[derive(Clone, Debug)]
enum ReceiptBase {
    New(String),
    Existing(Box<Versioned<ReceiptState>>),
}

/// What one commit does, built into a [`Commit`] against a stored account by [`Change::build`].
#[derive(Clone, Debug, Default)]
pub struct Change {
    moves: Vec<Move>,
    receipt: Option<ReceiptBase>,
    identities: Vec<IdentityKey>,
    releases: Vec<IdentityKey>,
    request: Option<String>,
    credits: Vec<PendingCredit>,
}

pub fn change() -> Change {
    Change::default()
}

impl Change {
    pub fn earn(mut self, points: i64) -> Self {
        self.moves.push(Move::Earn(points));
        self
    }

    pub fn spend(mut self, points: i64) -> Self {
        self.moves.push(Move::Spend(points));
        self
    }

    pub fn moves(mut self, moves: &[Move]) -> Self {
        self.moves.extend_from_slice(moves);
        self
    }

    /// A receipt ID first used by this commit (claimed, expected version 0).
    pub fn new_receipt(mut self, receipt_id: &str) -> Self {
        self.receipt = Some(ReceiptBase::New(receipt_id.into()));
        self
    }

    /// A further call on a stored receipt (expected version: the stored one).
    pub fn on_receipt(mut self, stored: &Versioned<ReceiptState>) -> Self {
        self.receipt = Some(ReceiptBase::Existing(Box::new(stored.clone())));
        self
    }

    pub fn claim(mut self, key: IdentityKey) -> Self {
        self.identities.push(key);
        self
    }

    /// An identifier given up by this commit (erasure): it must resolve to nothing afterwards.
    pub fn release(mut self, key: IdentityKey) -> Self {
        self.releases.push(key);
        self
    }

    pub fn request(mut self, request_id: &str) -> Self {
        self.request = Some(request_id.into());
        self
    }

    pub fn credit(mut self, credit_id: &str, to_account: &str, amount: i64) -> Self {
        self.credits.push(PendingCredit {
            credit_id: credit_id.into(),
            account_id: to_account.into(),
            points: points(amount),
            rule_id: "referral".into(),
            reason: format!("{amount} for a referral"),
            transfer: None,
        });
        self
    }

    /// The commit of this change on `account` as stored (its version is the expected one).
    pub fn build(&self, account: &Versioned<AccountState>) -> Commit {
        self.try_build(account).unwrap_or_else(|why| panic!("cannot build {self:?} on {}: {why}", account.value.account_id))
    }

    /// As [`Change::build`]; an error when a spend exceeds the spendable balance.
    pub fn try_build(&self, account: &Versioned<AccountState>) -> Result<Commit, String> {
        let policy = policy();
        let account_id = account.value.account_id.clone();
        let receipt_id = match &self.receipt {
            Some(ReceiptBase::New(id)) => Some(id.clone()),
            Some(ReceiptBase::Existing(stored)) => Some(stored.value.receipt_id.clone()),
            None => None,
        };
        let tx_id = format!("tx/{account_id}/{}/{}", account.version + 1, receipt_id.as_deref().unwrap_or("-"));
        let mut txn = Txn::begin(&policy, &account.value, now(), tx_id.clone(), origin());
        let posting = Posting { receipt_id: receipt_id.as_deref(), refund_id: None };
        let (mut earned, mut spent) = (Decimal::ZERO, Decimal::ZERO);
        for step in &self.moves {
            match *step {
                Move::Earn(amount) => {
                    txn.earn(points(amount), posting, format!("earn {amount}"), vec!["base".into()]);
                    earned += points(amount);
                }
                Move::Spend(amount) => {
                    txn.spend(points(amount), posting, format!("spend {amount}"), &[]).map_err(|rejection| format!("{rejection:?}"))?;
                    spent += points(amount);
                }
            }
        }
        for credit in &self.credits {
            txn.owe(credit.clone());
        }
        let finished = txn.finish_all().map_err(|broken| broken.to_string())?;
        let balance = finished.account.balance_at(now());
        let receipt = self.receipt.as_ref().map(|base| {
            let (expected_version, mut state) = match base {
                ReceiptBase::New(id) => (0, ReceiptState::new(id.clone(), account_id.clone(), now(), origin())),
                ReceiptBase::Existing(stored) => (stored.version, stored.value.clone()),
            };
            state.program_version = Some(1);
            let response = if spent > Decimal::ZERO {
                state.spent += spent;
                StoredResponse::Redeem(RedeemOutcome {
                    tx_id: tx_id.clone(),
                    account_id: account_id.clone(),
                    redeemed: spent,
                    released: Decimal::ZERO,
                    balance: balance.clone(),
                })
            } else {
                StoredResponse::Accrue(AccrueOutcome {
                    tx_id: tx_id.clone(),
                    account_id: account_id.clone(),
                    lines: Vec::new(),
                    earned,
                    rules: Vec::new(),
                    tier: "base".into(),
                    program_version: 1,
                    paid_amount: earned * Decimal::ONE_HUNDRED,
                    points_spent: Decimal::ZERO,
                    available_from: None,
                    expires_at: None,
                    balance: balance.clone(),
                    hold_released: Decimal::ZERO,
                    change_points: Decimal::ZERO,
                })
            };
            let op = if spent > Decimal::ZERO { OpKind::Redeem } else { OpKind::Accrue };
            state.calls.push(CallRecord { op, key: String::new(), fingerprint: print_of(&tx_id), response });
            ReceiptWrite { expected_version, state }
        });
        let request = self.request.as_ref().map(|request_id| RequestWrite {
            request_id: request_id.clone(),
            record: CallRecord {
                op: OpKind::Enroll,
                key: request_id.clone(),
                fingerprint: print_of(&tx_id),
                response: StoredResponse::Enroll(EnrollOutcome {
                    account_id: account_id.clone(),
                    card_number: format!("card-of-{tx_id}"),
                    created: account.version == 0,
                    balance: balance.clone(),
                    bonuses: Vec::new(),
                    fee_points: Decimal::ZERO,
                }),
            },
        });
        let mut state = finished.account;
        for key in &self.identities {
            if !state.identities.contains(key) {
                state.identities.push(key.clone());
            }
        }
        state.identities.retain(|key| !self.releases.contains(key));
        Ok(Commit {
            program_id: PROGRAM.into(),
            account: AccountWrite { expected_version: account.version, state },
            ledger: finished.entries,
            receipt,
            identity_claims: self.identities.clone(),
            identity_releases: self.releases.clone(),
            request,
            events: finished.events,
            credits: finished.credits,
        })
    }
}

/// The account as the commit will leave it.
pub fn after(commit: &Commit) -> Versioned<AccountState> {
    Versioned { version: commit.account.expected_version + 1, value: commit.account.state.clone() }
}

/// Commits and insists that it applied. A store error (a timeout on a loaded cluster) leaves the
/// outcome unknown, as it does for the engine: the account is read back, and the commit counts as
/// applied if the account is exactly what it wrote, or is sent again if the account is unchanged.
pub async fn apply(store: &dyn Store, commit: &Commit) -> Versioned<AccountState> {
    let mut attempts = 0;
    let outcome = loop {
        attempts += 1;
        match store.commit(commit.clone()).await {
            Ok(outcome) => break outcome,
            Err(error) => {
                assert!(attempts < 10, "commit reaches the store: {error:?}");
                eprintln!("commit on {}: attempt {attempts} failed: {error}", commit.account.state.account_id);
                let Ok(stored) = store.account(&commit.program_id, &commit.account.state.account_id).await else { continue };
                let version = stored.as_ref().map_or(0, |stored| stored.version);
                if version == commit.account.expected_version + 1 && stored.is_some_and(|stored| stored.value == commit.account.state) {
                    break CommitOutcome::Applied { account_version: version };
                }
                assert_eq!(
                    version, commit.account.expected_version,
                    "a failed commit on {} left another state",
                    commit.account.state.account_id
                );
            }
        }
    };
    assert_eq!(
        outcome,
        CommitOutcome::Applied { account_version: commit.account.expected_version + 1 },
        "commit on {} at version {}",
        commit.account.state.account_id,
        commit.account.expected_version
    );
    after(commit)
}

/// Commits and insists that it was refused with a conflict; returns the conflict.
pub async fn refused(store: &dyn Store, commit: &Commit) -> Conflict {
    match store.commit(commit.clone()).await.expect("commit reaches the store") {
        CommitOutcome::Conflict(conflict) => conflict,
        applied => panic!("commit on {} should have been refused, got {applied:?}", commit.account.state.account_id),
    }
}

pub async fn account(store: &dyn Store, account_id: &str) -> Option<Versioned<AccountState>> {
    store.account(PROGRAM, account_id).await.expect("read account")
}

/// Every ledger entry of an account, oldest first, read in pages of an odd size.
pub async fn whole_ledger(store: &dyn Store, account_id: &str) -> Vec<LedgerEntry> {
    let mut newest_first = Vec::new();
    let mut before = u64::MAX;
    loop {
        let page = store.ledger_page(PROGRAM, account_id, before, 37).await.expect("read ledger page");
        let Some(last) = page.last() else { break };
        assert!(last.seq < before, "ledger page before {before} ends at {}", last.seq);
        before = last.seq;
        newest_first.extend(page);
    }
    newest_first.reverse();
    newest_first
}

/// Reads an account and its ledger and checks they agree: seqs 1..=n without a gap, each entry's
/// running balance right, the sum equal to the account's ledger sum and booked balance.
pub async fn checked_ledger(store: &dyn Store, account_id: &str) -> (Versioned<AccountState>, Vec<LedgerEntry>) {
    let stored = account(store, account_id).await.unwrap_or_else(|| panic!("account {account_id} exists"));
    let entries = whole_ledger(store, account_id).await;
    let mut sum = Decimal::ZERO;
    for (index, entry) in entries.iter().enumerate() {
        assert_eq!(
            entry.seq,
            index as u64 + 1,
            "account {account_id}: ledger seqs {:?}",
            entries.iter().map(|e| e.seq).collect::<Vec<_>>()
        );
        sum += entry.amount;
        assert_eq!(entry.balance_after, sum, "account {account_id}: running balance of entry {}", entry.seq);
    }
    assert_eq!(stored.value.ledger_seq, entries.len() as u64, "account {account_id}: ledger_seq against the stored entries");
    assert_eq!(stored.value.ledger_sum, sum, "account {account_id}: ledger_sum against the stored entries");
    assert_eq!(stored.value.booked_balance(), sum, "account {account_id}: booked balance against the stored entries");
    (stored, entries)
}

/// The whole outbox of the program as readable now, in reading order, paged by `limit`.
pub async fn outbox(store: &dyn Store, limit: usize) -> Vec<OutboxRecord> {
    let mut records = Vec::new();
    let mut after = 0;
    for _ in 0..100_000 {
        let page = store.outbox_page(PROGRAM, after, limit).await.expect("read outbox page");
        let Some(last) = page.last().map(|record| record.seq) else { return records };
        assert!(last > after, "outbox page after {after} ends at {last}");
        assert!(page.windows(2).all(|pair| pair[0].seq <= pair[1].seq), "outbox page out of seq order: {page:?}");
        after = last;
        records.extend(page);
    }
    panic!("outbox paging does not end");
}

/// The first copy of each event (ScyllaDB's relay delivers at least once).
pub fn first_copies(records: &[OutboxRecord]) -> Vec<OutboxRecord> {
    let mut seen = HashSet::new();
    records.iter().filter(|record| seen.insert(record.event_id.clone())).cloned().collect()
}

/// An account's events in outbox order, as (receipt, points).
pub fn events_of(records: &[OutboxRecord], account_id: &str) -> Vec<(Option<String>, Decimal)> {
    records
        .iter()
        .filter(|record| record.event.account_id == account_id)
        .map(|record| (record.event.receipt_id.clone(), record.event.points))
        .collect()
}

/// The events a commit writes, as (receipt, points).
pub fn events_in(commit: &Commit) -> Vec<(Option<String>, Decimal)> {
    commit.events.iter().map(|event| (event.receipt_id.clone(), event.points)).collect()
}
