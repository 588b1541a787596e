//! One operation's working copy of one account.
//!
//! Every balance change goes through a [`Txn`]: it posts a ledger entry for each change, so the
//! running ledger sum and the buckets can never disagree, and [`Txn::finish`] checks the account's
//! invariants before the new state may be written. An operation that fails simply drops its `Txn`:
//! nothing half-done escapes.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::Origin;
use crate::account::{AccountState, Bucket, Certificate, Hold};
use crate::events::{Event, EventKind, PendingCredit};
use crate::ledger::{EntryKind, LedgerEntry};
use crate::program::{ProgramPolicy, RefundPolicy};
use crate::receipt::Slice;
use crate::rejection::Rejection;

/// A broken invariant: a bug. The engine refuses to write and reports an internal error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invariant broken on account {account_id}: {detail}")]
pub struct InvariantBroken {
    pub account_id: String,
    pub detail: String,
}

/// Where a new bucket's points become spendable and expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketTerms {
    pub id: u64,
    pub available_from: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The ledger context of one posting.
#[derive(Clone, Copy, Debug)]
pub struct Posting<'a> {
    pub receipt_id: Option<&'a str>,
    pub refund_id: Option<&'a str>,
}

/// A working copy of an account for one operation.
#[derive(Debug)]
pub struct Txn<'p> {
    program: &'p ProgramPolicy,
    now: DateTime<Utc>,
    tx_id: String,
    origin: Origin,
    account: AccountState,
    entries: Vec<LedgerEntry>,
    /// Recorded on earn and bonus entries: the program version whose rules gave the points.
    program_version: Option<u64>,
    /// For the outbox, committed with the entries.
    events: Vec<Event>,
    /// Owed to other accounts, committed with the entries.
    credits: Vec<PendingCredit>,
    /// On an account merged into another (`merge`): what returns gave back (positive) and
    /// claw-backs took (negative), owed to that account instead of changing this empty one.
    owed_to_merged: Decimal,
    /// The purchase this operation recorded, for the program's figures.
    sale: Option<crate::figures::Sale>,
    /// Whether this operation registered the customer, for the program's figures.
    enrolled: bool,
    /// A sale without a customer this operation recorded (the money paid), for the program's figures.
    unidentified_sale: Option<Decimal>,
    /// What budgeted campaigns gave on this operation's receipt, for the program's figures.
    campaigns: Vec<(String, Decimal)>,
    /// The account's points by expiry as stored, before this operation (and its settling of
    /// expired buckets): the program's liability by expiry counts what the commit changes.
    held_before: Vec<(DateTime<Utc>, Decimal)>,
}

/// What a finished operation hands to the store.
#[derive(Debug)]
pub struct Finished {
    pub account: AccountState,
    pub entries: Vec<LedgerEntry>,
    pub events: Vec<Event>,
    pub credits: Vec<PendingCredit>,
}

impl<'p> Txn<'p> {
    /// Starts an operation on a copy of `account`. Holds and buckets that expired by `now` are
    /// settled first, so the operation and its ledger see exactly what the clock says.
    pub fn begin(program: &'p ProgramPolicy, account: &AccountState, now: DateTime<Utc>, tx_id: String, origin: Origin) -> Self {
        let mut txn = Txn {
            program,
            now,
            tx_id,
            origin,
            account: account.clone(),
            entries: Vec::new(),
            program_version: None,
            events: Vec::new(),
            credits: Vec::new(),
            owed_to_merged: Decimal::ZERO,
            sale: None,
            enrolled: false,
            unidentified_sale: None,
            campaigns: Vec::new(),
            held_before: crate::figures::held_by_expiry(&account.buckets),
        };
        txn.settle_expired();
        txn
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    pub fn tx_id(&self) -> &str {
        &self.tx_id
    }

    pub fn account(&self) -> &AccountState {
        &self.account
    }

    /// The account for changes that are not balances (tier progress, budgets, purchase count):
    /// balances change only through postings, and [`Txn::finish`] checks that they still add up.
    pub fn account_mut(&mut self) -> &mut AccountState {
        &mut self.account
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Records the purchase this operation makes (an accrued receipt), for the program's figures.
    pub fn record_sale(&mut self, sale: crate::figures::Sale) {
        self.sale = Some(sale);
    }

    /// Records that this operation registers the customer, for the program's figures.
    pub fn record_enrolment(&mut self) {
        self.enrolled = true;
    }

    /// Records a sale without a customer (`paid`: the money paid), for the program's figures.
    /// Records what budgeted campaigns gave on the receipt, for the program's figures.
    pub fn record_campaigns(&mut self, uses: &[crate::rules::campaigns::CampaignUse]) {
        self.campaigns.extend(uses.iter().filter(|used| !used.given.is_zero()).map(|used| (used.campaign.clone(), used.given)));
    }

    pub fn record_unidentified_sale(&mut self, paid: Decimal) {
        self.unidentified_sale = Some(paid);
    }

    /// Records which program version the operation evaluated, on the entries that credit points.
    pub fn set_program_version(&mut self, version: u64) {
        self.program_version = Some(version);
    }

    /// Drops expired holds and records each expired bucket's remaining points in the ledger.
    fn settle_expired(&mut self) {
        let now = self.now;
        self.account.holds.retain(|hold| hold.is_active(now));
        let (expired, live): (Vec<Bucket>, Vec<Bucket>) =
            std::mem::take(&mut self.account.buckets).into_iter().partition(|bucket| bucket.is_expired(now));
        self.account.buckets = live;
        for bucket in expired {
            let reason = format!("{} points expired on {}", bucket.remaining, bucket.expires_at.format("%Y-%m-%d"));
            self.post(
                EntryKind::Expire,
                -bucket.remaining,
                Posting { receipt_id: bucket.receipt_id.as_deref(), refund_id: None },
                reason,
                None,
                Vec::new(),
            );
        }
    }

    fn post(
        &mut self,
        kind: EntryKind,
        amount: Decimal,
        posting: Posting<'_>,
        reason: String,
        terms: Option<BucketTerms>,
        rule_ids: Vec<String>,
    ) {
        let program_version = if rule_ids.is_empty() { None } else { self.program_version };
        self.account.ledger_seq += 1;
        self.account.ledger_sum += amount;
        self.entries.push(LedgerEntry {
            seq: self.account.ledger_seq,
            tx_id: self.tx_id.clone(),
            kind,
            amount,
            balance_after: self.account.ledger_sum,
            at: self.now,
            receipt_id: posting.receipt_id.map(str::to_owned),
            refund_id: posting.refund_id.map(str::to_owned),
            store_id: self.origin.store_id.clone(),
            till_id: self.origin.till_id.clone(),
            reason,
            available_from: terms.map(|terms| terms.available_from),
            expires_at: terms.map(|terms| terms.expires_at),
            rule_ids,
            program_version,
            actor: self.origin.actor.clone(),
        });
    }

    /// Puts `amount` into the bucket described by `terms` after paying off debt first. Points for a
    /// bucket already past its expiry pay off nothing: they are restored only to expire again in
    /// [`Txn::finish`], because expired points are worth nothing.
    fn credit_bucket(&mut self, amount: Decimal, terms: BucketTerms, bucket_receipt_id: Option<&str>, certificate: Option<&Certificate>) {
        let repay = if self.now >= terms.expires_at { Decimal::ZERO } else { amount.min(self.account.debt) };
        self.account.debt -= repay;
        let rest = amount - repay;
        if rest <= Decimal::ZERO {
            return;
        }
        if let Some(bucket) = self.account.buckets.iter_mut().find(|bucket| bucket.id == terms.id) {
            bucket.remaining += rest;
            return;
        }
        let bucket = Bucket {
            id: terms.id,
            receipt_id: bucket_receipt_id.map(str::to_owned),
            available_from: terms.available_from,
            expires_at: terms.expires_at,
            remaining: rest,
            certificate: certificate.cloned(),
        };
        let at = self.account.buckets.partition_point(|other| (other.expires_at, other.id) < (bucket.expires_at, bucket.id));
        self.account.buckets.insert(at, bucket);
    }

    /// Earns `amount` points with the program's pending period and expiry. Points with the same
    /// terms as an existing bucket join it (all of one day's earnings, typically), so an account
    /// holds at most one bucket per day of purchases. Returns the bucket's terms, or `None` for a
    /// zero amount (no entry is written).
    pub fn earn(&mut self, amount: Decimal, posting: Posting<'_>, reason: String, rule_ids: Vec<String>) -> Option<BucketTerms> {
        self.earn_as_of(self.now, amount, posting, reason, rule_ids)
    }

    /// Earns as [`Txn::earn`] does, for a sale made at `sold_at` (a late receipt from an offline
    /// till): the pending period and the expiry count from the sale, while the entry is posted now.
    pub fn earn_as_of(
        &mut self,
        sold_at: DateTime<Utc>,
        amount: Decimal,
        posting: Posting<'_>,
        reason: String,
        rule_ids: Vec<String>,
    ) -> Option<BucketTerms> {
        let available_from = self.program.available_from(sold_at);
        let expires_at = self.program.expires_at(sold_at);
        self.credit(EntryKind::Earn, amount, available_from, expires_at, posting, reason, rule_ids)
    }

    /// Credits a bonus (welcome, event) or a positive manual adjustment: spendable at once, with
    /// the program's expiry.
    pub fn bonus(
        &mut self,
        kind: EntryKind,
        amount: Decimal,
        posting: Posting<'_>,
        reason: String,
        rule_ids: Vec<String>,
    ) -> Option<BucketTerms> {
        assert!(matches!(kind, EntryKind::Bonus | EntryKind::Adjustment | EntryKind::Merge), "bonus of kind {kind:?}");
        let expires_at = self.program.expires_at(self.now);
        self.credit(kind, amount, self.now, expires_at, posting, reason, rule_ids)
    }

    #[allow(clippy::too_many_arguments)]
    fn credit(
        &mut self,
        kind: EntryKind,
        amount: Decimal,
        available_from: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        posting: Posting<'_>,
        reason: String,
        rule_ids: Vec<String>,
    ) -> Option<BucketTerms> {
        assert!(amount >= Decimal::ZERO, "credit of {amount}");
        if amount.is_zero() {
            return None;
        }
        let now = self.now;
        // Buckets already spendable differ only in a past available_from: that no longer matters.
        let same_terms = |bucket: &Bucket| {
            bucket.certificate.is_none()
                && bucket.expires_at == expires_at
                && (bucket.available_from == available_from || (bucket.available_from <= now && available_from <= now))
        };
        let terms = match self.account.buckets.iter_mut().find(|bucket| same_terms(bucket)) {
            Some(bucket) => {
                if bucket.receipt_id.as_deref() != posting.receipt_id {
                    bucket.receipt_id = None;
                }
                // The entry states this earn's own terms; the bucket keeps its (equivalent) ones.
                BucketTerms { id: bucket.id, available_from, expires_at }
            }
            None => {
                let id = self.account.next_bucket_id;
                self.account.next_bucket_id += 1;
                BucketTerms { id, available_from, expires_at }
            }
        };
        self.credit_bucket(amount, terms, posting.receipt_id, None);
        let event_kind = if kind == EntryKind::Earn { EventKind::PointsEarned } else { EventKind::BonusCredited };
        self.events.push(Event {
            kind: event_kind,
            account_id: self.account.account_id.clone(),
            at: now,
            points: amount,
            receipt_id: posting.receipt_id.map(str::to_owned),
            rule_ids: rule_ids.clone(),
            available_from: Some(available_from),
            tier_from: None,
            tier_to: None,
            expires_at: Some(expires_at),
            code: None,
            figures: None,
        });
        self.post(kind, amount, posting, reason, Some(terms), rule_ids);
        Some(terms)
    }

    /// Spends `amount` of the spendable points (available less held), taking the buckets that
    /// expire first. Returns what it took from each bucket.
    ///
    /// Certificates pay first, each up to its limit in `certificate_limits` (its cap on this
    /// receipt), then ordinary points; certificates without a limit pay only if nothing else is
    /// left (another receipt's capture took the points its quote counted on).
    pub fn spend(
        &mut self,
        amount: Decimal,
        posting: Posting<'_>,
        reason: String,
        certificate_limits: &[(u64, Decimal)],
    ) -> Result<Vec<Slice>, Rejection> {
        self.take_spendable(EntryKind::Spend, amount, posting, reason, certificate_limits)
    }

    /// A manual adjustment down: takes spendable points like a spend, never into debt.
    pub fn adjust_down(&mut self, amount: Decimal, posting: Posting<'_>, reason: String) -> Result<(), Rejection> {
        self.take_spendable(EntryKind::Adjustment, amount, posting, reason, &[]).map(drop)
    }

    fn take_spendable(
        &mut self,
        kind: EntryKind,
        amount: Decimal,
        posting: Posting<'_>,
        reason: String,
        certificate_limits: &[(u64, Decimal)],
    ) -> Result<Vec<Slice>, Rejection> {
        assert!(amount > Decimal::ZERO, "spend of {amount}");
        let spendable = self.account.balance_at(self.now).spendable;
        if amount > spendable {
            return Err(Rejection::InsufficientPoints { requested: amount, spendable });
        }
        let now = self.now;
        let mut left = amount;
        let mut slices = Vec::new();
        // Three passes: certificates within their limits, ordinary points, then anything left.
        for pass in 0..3 {
            for bucket in self.account.buckets.iter_mut().filter(|bucket| bucket.is_available(now)) {
                if left.is_zero() {
                    break;
                }
                let limit = match (pass, &bucket.certificate) {
                    (0, Some(_)) => certificate_limits.iter().find(|(id, _)| *id == bucket.id).map_or(Decimal::ZERO, |(_, max)| *max),
                    (1, None) | (2, _) => bucket.remaining,
                    _ => Decimal::ZERO,
                };
                let take = left.min(bucket.remaining).min(limit);
                if take.is_zero() {
                    continue;
                }
                bucket.remaining -= take;
                left -= take;
                slices.push(Slice {
                    bucket_id: bucket.id,
                    bucket_receipt_id: bucket.receipt_id.clone(),
                    available_from: bucket.available_from,
                    expires_at: bucket.expires_at,
                    amount: take,
                    certificate: bucket.certificate.clone(),
                });
            }
        }
        assert!(left.is_zero(), "spendable {spendable} did not cover {amount}");
        self.account.buckets.retain(|bucket| bucket.remaining > Decimal::ZERO);
        self.post(kind, -amount, posting, reason, None, Vec::new());
        Ok(slices)
    }

    /// Gives back `amount` spent points into the buckets they came from. `slices` is everything the
    /// receipt spent and `already_returned` what earlier returns gave back; returns give back the
    /// latest-expiring points first, the order most favourable to the customer.
    pub fn return_spent(&mut self, slices: &[Slice], already_returned: Decimal, amount: Decimal, posting: Posting<'_>, reason: String) {
        if amount.is_zero() {
            return;
        }
        if self.account.merged_into.is_some() {
            self.owed_to_merged += amount;
            return;
        }
        let mut order: Vec<&Slice> = slices.iter().collect();
        order.sort_by_key(|slice| std::cmp::Reverse((slice.expires_at, slice.bucket_id)));
        let mut skip = already_returned;
        let mut left = amount;
        for slice in order {
            let unreturned = slice.amount - skip.min(slice.amount);
            skip -= skip.min(slice.amount);
            let give = unreturned.min(left);
            if give.is_zero() {
                continue;
            }
            let terms = BucketTerms { id: slice.bucket_id, available_from: slice.available_from, expires_at: slice.expires_at };
            self.credit_bucket(give, terms, slice.bucket_receipt_id.as_deref(), slice.certificate.as_ref());
            left -= give;
        }
        assert!(left.is_zero(), "returned more than the receipt spent ({left} left)");
        self.post(EntryKind::ReturnSpent, amount, posting, reason, None, Vec::new());
    }

    /// Takes back `amount` earned points: first from pending buckets (the receipt's own bucket first),
    /// then from spendable points, expiring-first. What cannot be covered becomes debt under the
    /// allow-negative policy, or refuses the operation under the reject policy. Held points are
    /// never taken: another till was promised them. Returns the debt created.
    pub fn clawback(
        &mut self,
        amount: Decimal,
        posting: Posting<'_>,
        own_bucket: Option<u64>,
        reason: String,
    ) -> Result<Decimal, Rejection> {
        if amount.is_zero() {
            return Ok(Decimal::ZERO);
        }
        // A merged account holds nothing: the account it was merged into gives the points back,
        // through a credit (what its points cannot cover becomes debt there).
        if self.account.merged_into.is_some() {
            self.owed_to_merged -= amount;
            return Ok(Decimal::ZERO);
        }
        self.take_back(amount, posting, own_bucket, reason, EntryKind::Clawback, self.program.refund_policy)
    }

    /// Takes back `amount` as [`Txn::clawback`] does, except that what cannot be covered always
    /// becomes debt: for what a merged card's refund owes the account it was merged into, which
    /// that account's reject policy can no longer refuse (the refund was taken). Returns the debt.
    pub fn clawback_into_debt(&mut self, amount: Decimal, posting: Posting<'_>, reason: String) -> Decimal {
        if amount.is_zero() {
            return Decimal::ZERO;
        }
        self.take_back(amount, posting, None, reason, EntryKind::Clawback, RefundPolicy::AllowNegative).unwrap_or(Decimal::ZERO)
    }

    /// Takes `amount` from pending buckets (`own_bucket` first), then from spendable points, and
    /// posts one `kind` entry; what is left becomes debt, or refuses under `policy`.
    fn take_back(
        &mut self,
        amount: Decimal,
        posting: Posting<'_>,
        own_bucket: Option<u64>,
        reason: String,
        kind: EntryKind,
        policy: RefundPolicy,
    ) -> Result<Decimal, Rejection> {
        let now = self.now;
        let mut left = amount;
        let mut order: Vec<usize> = (0..self.account.buckets.len()).filter(|&i| self.account.buckets[i].is_pending(now)).collect();
        order.sort_by_key(|&i| Some(self.account.buckets[i].id) != own_bucket);
        for i in order {
            let bucket = &mut self.account.buckets[i];
            let take = left.min(bucket.remaining);
            bucket.remaining -= take;
            left -= take;
        }
        let mut spendable = self.account.balance_at(now).spendable;
        for bucket in self.account.buckets.iter_mut().filter(|bucket| bucket.is_available(now)) {
            let take = left.min(bucket.remaining).min(spendable);
            bucket.remaining -= take;
            spendable -= take;
            left -= take;
        }
        self.account.buckets.retain(|bucket| bucket.remaining > Decimal::ZERO);
        if left > Decimal::ZERO {
            match policy {
                RefundPolicy::AllowNegative => self.account.debt += left,
                RefundPolicy::Reject => {
                    return Err(Rejection::ClawbackExceedsBalance { needed: amount, coverable: amount - left });
                }
            }
        }
        self.post(kind, -amount, posting, reason, None, Vec::new());
        Ok(left)
    }

    /// Reserves points for a receipt. The caller has checked [`AccountState::holdable_at`].
    pub fn place_hold(&mut self, hold: Hold) {
        assert!(hold.amount > Decimal::ZERO, "hold of {}", hold.amount);
        self.account.holds.push(hold);
    }

    /// Releases a hold; returns the points it still reserved (zero if it had expired).
    pub fn release_hold(&mut self, hold_id: &str) -> Decimal {
        let now = self.now;
        let mut released = Decimal::ZERO;
        self.account.holds.retain(|hold| {
            if hold.hold_id == hold_id {
                if hold.is_active(now) {
                    released += hold.amount;
                }
                false
            } else {
                true
            }
        });
        released
    }

    /// Issues a certificate: a bucket of its own (never merged), spendable at once, expiring at the
    /// start of the local day `valid_days` after today (so it is good for `valid_days` days).
    pub fn issue_certificate(&mut self, value: Decimal, valid_days: u32, certificate: Certificate, posting: Posting<'_>, reason: String) {
        assert!(value > Decimal::ZERO, "certificate of {value}");
        let now = self.now;
        let expires_at = self.program.start_of_day_after(now, valid_days);
        let id = self.account.next_bucket_id;
        self.account.next_bucket_id += 1;
        let terms = BucketTerms { id, available_from: now, expires_at };
        let rule_ids = vec![certificate.rule_id.clone()];
        self.events.push(Event {
            kind: EventKind::CertificateIssued,
            account_id: self.account.account_id.clone(),
            at: now,
            points: value,
            receipt_id: posting.receipt_id.map(str::to_owned),
            rule_ids: rule_ids.clone(),
            available_from: Some(now),
            tier_from: None,
            tier_to: None,
            expires_at: Some(expires_at),
            code: None,
            figures: None,
        });
        // Debt is paid from certificates too: they are points like any other.
        self.credit_bucket(value, terms, posting.receipt_id, Some(&certificate));
        self.post(EntryKind::Bonus, value, posting, reason, Some(terms), rule_ids);
    }

    /// Reports a tier change to the outbox.
    pub fn tier_changed(&mut self, change: crate::rules::tiers::TierChange) {
        self.events.push(Event {
            kind: EventKind::TierChanged,
            account_id: self.account.account_id.clone(),
            at: self.now,
            points: Decimal::ZERO,
            receipt_id: None,
            rule_ids: Vec::new(),
            available_from: None,
            tier_from: Some(change.from),
            tier_to: Some(change.to),
            expires_at: None,
            code: None,
            figures: None,
        });
    }

    /// Reports points expiring within `window_days` to the outbox; returns how many (no change
    /// to the balance: the notice is only an event).
    pub fn expiry_notice(&mut self, window_days: u32) -> Decimal {
        let (amount, next) = self.account.expiring_within(self.now, chrono::Duration::days(i64::from(window_days)));
        if amount > Decimal::ZERO {
            self.events.push(Event {
                kind: EventKind::PointsExpiring,
                account_id: self.account.account_id.clone(),
                at: self.now,
                points: amount,
                receipt_id: None,
                rule_ids: Vec::new(),
                available_from: None,
                tier_from: None,
                tier_to: None,
                expires_at: next,
                code: None,
                figures: None,
            });
        }
        amount
    }

    /// Records points owed to another account (see [`PendingCredit`]).
    pub fn owe(&mut self, credit: PendingCredit) {
        self.credits.push(credit);
    }

    /// Moves everything out of the account for a merge: one `Merge` entry per bucket (each with
    /// its terms) and one for the debt. Returns the buckets and the debt, which the receiving
    /// account takes with [`Txn::transfer_in`]. Holds must have been released.
    pub fn transfer_out(&mut self, reason: &str) -> (Vec<Bucket>, Decimal) {
        assert!(self.account.holds.iter().all(|hold| !hold.is_active(self.now)), "transfer with an active hold");
        let posting = Posting { receipt_id: None, refund_id: None };
        let buckets = std::mem::take(&mut self.account.buckets);
        for bucket in &buckets {
            let terms = BucketTerms { id: bucket.id, available_from: bucket.available_from, expires_at: bucket.expires_at };
            self.post(EntryKind::Merge, -bucket.remaining, posting, reason.to_owned(), Some(terms), Vec::new());
        }
        let debt = std::mem::take(&mut self.account.debt);
        if debt > Decimal::ZERO {
            self.post(EntryKind::Merge, debt, posting, format!("{reason} (debt)"), None, Vec::new());
        }
        (buckets, debt)
    }

    /// Takes in what [`Txn::transfer_out`] moved out of another account: each bucket keeps its
    /// pending period, expiry and certificate terms (under a new ID here); the debt becomes this
    /// account's.
    pub fn transfer_in(&mut self, buckets: &[Bucket], debt: Decimal, reason: &str) {
        let posting = Posting { receipt_id: None, refund_id: None };
        for bucket in buckets {
            let id = self.account.next_bucket_id;
            self.account.next_bucket_id += 1;
            let terms = BucketTerms { id, available_from: bucket.available_from, expires_at: bucket.expires_at };
            self.credit_bucket(bucket.remaining, terms, None, bucket.certificate.as_ref());
            self.post(EntryKind::Merge, bucket.remaining, posting, reason.to_owned(), Some(terms), Vec::new());
        }
        // The debt comes off this account's points first, as a claw-back would: debt never stands
        // beside points that could pay it.
        if debt > Decimal::ZERO {
            let _ = self.take_back(debt, posting, None, format!("{reason} (debt)"), EntryKind::Merge, RefundPolicy::AllowNegative);
        }
    }

    /// Opens a bucket brought from another platform (`import`): its own terms, an `Opening` entry,
    /// no event (the customer was not given anything new).
    pub fn opening(&mut self, amount: Decimal, available_from: DateTime<Utc>, expires_at: DateTime<Utc>, reason: String) {
        assert!(amount > Decimal::ZERO, "opening balance of {amount}");
        let id = self.account.next_bucket_id;
        self.account.next_bucket_id += 1;
        let terms = BucketTerms { id, available_from, expires_at };
        self.credit_bucket(amount, terms, None, None);
        self.post(EntryKind::Opening, amount, Posting { receipt_id: None, refund_id: None }, reason, Some(terms), Vec::new());
    }

    /// [`Txn::finish_all`] without the events and credits.
    pub fn finish(self) -> Result<(AccountState, Vec<LedgerEntry>), InvariantBroken> {
        self.finish_all().map(|finished| (finished.account, finished.entries))
    }

    /// Ends the operation: settles anything that expired by now (a returned spend can restore points
    /// into a bucket past its expiry), checks the invariants and hands back the new state and the
    /// entries to append.
    pub fn finish_all(mut self) -> Result<Finished, InvariantBroken> {
        if let Some(target) = self.account.merged_into.clone()
            && !self.owed_to_merged.is_zero()
        {
            self.credits.push(PendingCredit {
                credit_id: format!("merged/{}", self.tx_id),
                account_id: target,
                points: self.owed_to_merged,
                rule_id: crate::events::MERGE_RULE_ID.to_owned(),
                reason: format!("settled for merged account {}", self.account.account_id),
                transfer: None,
            });
        }
        self.settle_expired();
        self.account
            .check_invariants(self.now)
            .map_err(|detail| InvariantBroken { account_id: self.account.account_id.clone(), detail })?;
        let zone = self.program.time_zone;
        let day = self.now.with_timezone(&zone).date_naive();
        let held_after = crate::figures::held_by_expiry(&self.account.buckets);
        let recorded = crate::figures::Recorded {
            sale: self.sale.take(),
            unidentified_sale: self.unidentified_sale.take(),
            campaigns: std::mem::take(&mut self.campaigns),
            enrolled: self.enrolled,
            expiry: crate::figures::ExpiryChange::between(&self.held_before, &held_after, zone),
        };
        if let Some(delta) = crate::figures::Delta::of(day, &self.origin.store_id, &self.entries, recorded) {
            self.events.push(Event::figures(self.account.account_id.clone(), self.now, delta));
        }
        Ok(Finished { account: self.account, entries: self.entries, events: self.events, credits: self.credits })
    }
}
