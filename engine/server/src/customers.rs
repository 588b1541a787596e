//! Calls about the customer rather than a receipt: one-time spending codes, profile and consent
//! changes, card replacement (with the card's fee as points), merging an old anonymous card's
//! account, and the admin's export and erasure of personal data. Each is one compare-and-set on one
//! account, retried like any other commit (a merge is two: the second through a pending credit).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use loyalty_core::Origin;
use loyalty_core::account::{AccountState, Profile};
use loyalty_core::cards::{self, ReplaceCardCmd, ReplaceCardOutcome};
use loyalty_core::events::{Event, EventKind};
use loyalty_core::fingerprint::fingerprint;
use loyalty_core::fingerprint::hex;
use loyalty_core::identity::{IdentityKey, IdentityKind};
use loyalty_core::merge::{self, MergeOutcome};
use loyalty_core::outcome::StoredResponse;
use loyalty_core::presence::CodeChannel;
use loyalty_core::profile::{Consent, Editor, ProfileChange};
use loyalty_core::receipt::{CallRecord, OpKind};
use loyalty_core::rejection::Rejection;
use loyalty_core::txn::Txn;
use loyalty_store::{AccountWrite, Commit, RequestWrite};

use crate::engine::{Attempt, Engine, commit_of};
use crate::error::{EngineError, EngineResult};
use crate::programs::Program;

/// A code just issued: the code itself (only for the app channel) and its expiry.
#[derive(Debug)]
pub struct IssuedCode {
    pub code: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// Six decimal digits, uniform, from the operating system's random source.
fn random_code() -> EngineResult<String> {
    loop {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).map_err(|error| EngineError::Internal(format!("no random source: {error}")))?;
        let value = u32::from_le_bytes(bytes);
        // Below the largest multiple of 10^6, so every code is equally likely.
        if value < 4_294_000_000 {
            return Ok(format!("{:06}", value % 1_000_000));
        }
    }
}

fn random_salt() -> EngineResult<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|error| EngineError::Internal(format!("no random source: {error}")))?;
    Ok(hex(&bytes))
}

/// What one change to an account produces besides the new state.
struct AccountChange<T> {
    value: T,
    events: Vec<Event>,
    releases: Vec<IdentityKey>,
    /// False when the account is as it was: nothing is written.
    write: bool,
}

/// A profile change as applied: the account, the fields that changed, and the consents and tags
/// after it.
#[derive(Debug)]
pub struct ProfileUpdated {
    pub account_id: String,
    pub changed: Vec<String>,
    pub consents: Vec<Consent>,
    pub tags: Vec<String>,
}

impl Engine {
    /// Changes one account (found by identifier) with `change`, retrying lost compare-and-sets.
    /// A replaced card finds its account only for an administrator's change (`by_admin`).
    async fn change_account<T>(
        &self,
        program: &Program,
        customer: &IdentityKey,
        by_admin: bool,
        change: impl Fn(&mut AccountState, DateTime<Utc>) -> Result<AccountChange<T>, Rejection>,
    ) -> EngineResult<T> {
        let program_id = program.policy.program_id.as_str();
        let change = &change;
        self.until_committed(|| async move {
            let account_id = self.resolve_customer(program_id, customer).await?;
            let slot = self.slot(program_id, &account_id);
            let mut guard = slot.lock().await;
            let stored = match by_admin {
                true => self.load_bound(&mut guard, program_id, &account_id, customer).await?,
                false => self.load_checked(&mut guard, program_id, &account_id, customer).await?,
            };
            let mut state = stored.value;
            let now = self.now_in(program_id);
            let AccountChange { value, events, releases, write } = change(&mut state, now)?;
            if !write {
                return Ok(Attempt::Done(value));
            }
            let commit = Commit {
                identity_releases: releases.clone(),
                events,
                ..Commit::new(program_id, AccountWrite { expected_version: stored.version, state })
            };
            if self.commit(&mut guard, commit).await?.is_none() {
                return Ok(Attempt::Again);
            }
            for key in &releases {
                self.forget_identity(program_id, key);
            }
            Ok(Attempt::Done(value))
        })
        .await
    }

    /// Issues the customer's one-time spending code (replacing any earlier one). The app channel
    /// gets the code back; the message channel gets none, and the outbox gets it for delivery.
    pub async fn issue_customer_code(
        &self,
        program: &Program,
        customer: &IdentityKey,
        channel: CodeChannel,
        origin: &Origin,
    ) -> EngineResult<IssuedCode> {
        let code = random_code()?;
        let salt = random_salt()?;
        let policy = &program.policy.presence;
        self.change_account(program, customer, false, |state, now| {
            let expires_at = state.presence.issue(policy, &code, salt.clone(), channel, now)?;
            let events = match channel {
                CodeChannel::App => Vec::new(),
                CodeChannel::Message => vec![Event {
                    kind: EventKind::CustomerCode,
                    account_id: state.account_id.clone(),
                    at: now,
                    points: loyalty_core::Decimal::ZERO,
                    receipt_id: None,
                    rule_ids: Vec::new(),
                    available_from: None,
                    tier_from: None,
                    tier_to: None,
                    expires_at: Some(expires_at),
                    code: Some(code.clone()),
                }],
            };
            tracing::debug!(actor = origin.actor.as_str(), channel = ?channel, "customer code issued");
            let value = IssuedCode { code: (channel == CodeChannel::App).then(|| code.clone()), expires_at };
            Ok(AccountChange { value, events, releases: Vec::new(), write: true })
        })
        .await
    }

    /// Erases the customer's personal data: profile, phone, cards and app tokens (which then find
    /// no account and may be registered anew). The account, its balance and its ledger stay under
    /// the account ID; the erasure is noted in the account's audit trail with who asked and why.
    pub async fn erase_customer(
        &self,
        program: &Program,
        customer: &IdentityKey,
        actor: &str,
        reason: &str,
    ) -> EngineResult<(String, DateTime<Utc>)> {
        self.change_account(program, customer, true, |state, now| {
            let releases = std::mem::take(&mut state.identities);
            state.profile = Profile::default();
            state.consents.clear();
            state.blocked_cards.clear();
            state.erased_at = Some(now);
            state.note(now, actor, format!("personal data erased: {reason}"));
            Ok(AccountChange { value: (state.account_id.clone(), now), events: Vec::new(), releases, write: true })
        })
        .await
    }

    /// Changes the customer's profile and consents ([`ProfileChange::apply`]): one compare-and-set
    /// on the account when something changed, no write when nothing did.
    pub async fn update_profile(
        &self,
        program: &Program,
        customer: &IdentityKey,
        change: &ProfileChange,
        editor: Editor,
        actor: &str,
    ) -> EngineResult<ProfileUpdated> {
        change.check(editor)?;
        self.change_account(program, customer, editor == Editor::Admin, |state, now| {
            let changed = change.apply(state, editor, actor, now)?;
            let write = !changed.is_empty();
            let value = ProfileUpdated {
                account_id: state.account_id.clone(),
                changed,
                consents: state.consents.clone(),
                tags: state.tags.clone(),
            };
            Ok(AccountChange { value, events: Vec::new(), releases: Vec::new(), write })
        })
        .await
    }

    /// Merges the account of an anonymous card into a registered customer's
    /// ([`merge::merge_out`], then [`merge::merge_in`] through the pending credit it writes),
    /// idempotent by request ID (claimed as `merge/<ID>` with the first commit). The second commit
    /// runs at once; if it fails, the credit applier finishes it (the points wait in the credit).
    pub async fn merge_card(
        &self,
        program: &Arc<Program>,
        origin: &Origin,
        customer: &IdentityKey,
        card: &IdentityKey,
        request_id: &str,
    ) -> EngineResult<MergeOutcome> {
        let program_id = program.policy.program_id.as_str();
        let print = &fingerprint(OpKind::Merge, &(origin.place(), customer, card, request_id));
        // Request IDs never contain '/', so this key cannot meet another call's.
        let key = &format!("merge/{request_id}");
        let (outcome, credit) = self
            .until_committed(|| async move {
                if let Some(outcome) = self.replayed_request(program_id, key, request_id, print).await? {
                    return Ok(Attempt::Done((outcome, None)));
                }
                let target_id = self.resolve_customer(program_id, customer).await?;
                {
                    let slot = self.slot(program_id, &target_id);
                    let mut guard = slot.lock().await;
                    if !self.load_checked(&mut guard, program_id, &target_id, customer).await?.value.registered {
                        return Err(Rejection::CardNotRegistered.into());
                    }
                }
                let source_id =
                    self.resolve(program_id, card).await?.ok_or_else(|| Rejection::invalid("card_number", "no account has this card"))?;
                if source_id == target_id {
                    return Err(Rejection::invalid("card_number", "is already this customer's card").into());
                }
                let slot = self.slot(program_id, &source_id);
                let mut guard = slot.lock().await;
                // A retry that waited for this lock behind its first call: the first answer.
                if let Some(outcome) = self.replayed_request(program_id, key, request_id, print).await? {
                    return Ok(Attempt::Done((outcome, None)));
                }
                // Not load_checked: a replaced card may still be merged (it is the card in hand).
                let source = self.load_bound(&mut guard, program_id, &source_id, card).await?;
                let now = self.now_in(program_id);
                let mut txn = Txn::begin(&program.policy, &source.value, now, self.ids().transaction_id(), origin.clone());
                let outcome = merge::merge_out(&mut txn, &target_id, key)?;
                let finished = txn.finish_all()?;
                let credit = finished.credits.iter().find(|credit| credit.credit_id == *key).cloned();
                let record = CallRecord {
                    op: OpKind::Merge,
                    key: key.clone(),
                    fingerprint: *print,
                    response: StoredResponse::Merge(outcome.clone()),
                };
                let commit = Commit {
                    request: Some(RequestWrite { request_id: key.clone(), record }),
                    ..commit_of(program_id, source.version, finished)
                };
                Ok(match self.commit(&mut guard, commit).await? {
                    Some(_) => Attempt::Done((outcome, credit)),
                    None => Attempt::Again,
                })
            })
            .await?;
        if let Some(credit) = credit
            && let Err(error) = self.apply_credit(program, &credit).await
        {
            tracing::warn!(program = program_id, %error, "merge credited later: the credit applier will apply it");
            self.credits_due.notify_one();
        }
        Ok(outcome)
    }

    /// Replaces a registered customer's card ([`cards::replace_card`]), idempotent by request ID
    /// (claimed as `replace-card/<ID>`): the new card is claimed for the account in the same commit
    /// as the block of the old one and the fee's points.
    pub async fn replace_card(
        &self,
        program: &Program,
        origin: &Origin,
        customer: &IdentityKey,
        cmd: &ReplaceCardCmd,
    ) -> EngineResult<ReplaceCardOutcome> {
        let program_id = program.policy.program_id.as_str();
        let print = fingerprint(OpKind::ReplaceCard, &(origin.place(), customer, cmd));
        // Request IDs never contain '/', so this key cannot meet an enrolment's.
        let key = &format!("replace-card/{}", cmd.request_id);
        let new_card = &IdentityKey { kind: IdentityKind::Card, value: cmd.new_card.clone() };
        let print = &print;
        self.until_committed(|| async move {
            if let Some(outcome) = self.replayed_request(program_id, key, &cmd.request_id, print).await? {
                return Ok(Attempt::Done(outcome));
            }
            let account_id = self.resolve_customer(program_id, customer).await?;
            if self.resolve(program_id, new_card).await?.is_some_and(|holder| holder != account_id) {
                return Err(Rejection::IdentifierTaken { kind: "card" }.into());
            }
            let slot = self.slot(program_id, &account_id);
            let mut guard = slot.lock().await;
            // A retry that waited for this lock behind its first call: the first answer.
            if let Some(outcome) = self.replayed_request(program_id, key, &cmd.request_id, print).await? {
                return Ok(Attempt::Done(outcome));
            }
            let stored = self.load_checked(&mut guard, program_id, &account_id, customer).await?;
            let now = self.now_in(program_id);
            let mut txn = Txn::begin(&program.policy, &stored.value, now, self.ids().transaction_id(), origin.clone());
            let outcome = match cards::replace_card(&mut txn, &program.policy.presence, cmd, program.policy.floor_points(cmd.card_fee)) {
                Ok(outcome) => outcome,
                // A counted wrong code is stored although the call is refused.
                Err(rejection) if rejection.records_attempt() => {
                    let commit = commit_of(program_id, stored.version, txn.finish_all()?);
                    return match self.commit(&mut guard, commit).await? {
                        Some(_) => Err(rejection.into()),
                        None => Ok(Attempt::Again),
                    };
                }
                Err(rejection) => return Err(rejection.into()),
            };
            let record = CallRecord {
                op: OpKind::ReplaceCard,
                key: key.clone(),
                fingerprint: *print,
                response: StoredResponse::ReplaceCard(outcome.clone()),
            };
            let commit = Commit {
                identity_claims: vec![new_card.clone()],
                request: Some(RequestWrite { request_id: key.clone(), record }),
                ..commit_of(program_id, stored.version, txn.finish_all()?)
            };
            Ok(match self.commit(&mut guard, commit).await? {
                Some(_) => Attempt::Done(outcome),
                None => Attempt::Again,
            })
        })
        .await
    }
}
