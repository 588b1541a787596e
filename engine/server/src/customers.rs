//! Calls about the customer rather than a receipt: enrolment, a customer imported from another
//! platform, one-time spending codes, profile and consent changes, card replacement (with the
//! card's fee as points), merging an old anonymous card's account, and the erasure of personal
//! data. Each is one compare-and-set on one account, retried like any other commit (a merge is two:
//! the second through a pending credit). What each means for the account is the domain's
//! (`loyalty_core::enrolment`, `cards`, `merge`, `profile`, `import`); finding the account,
//! claiming and releasing identifiers and committing are here.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use loyalty_core::Origin;
use loyalty_core::account::AccountState;
use loyalty_core::cards::{self, ReplaceCardCmd, ReplaceCardOutcome};
use loyalty_core::enrolment::{self, EnrollCmd, Enrolled};
use loyalty_core::events::{Event, EventKind};
use loyalty_core::fingerprint::fingerprint;
use loyalty_core::fingerprint::hex;
use loyalty_core::identity::{IdentityKey, IdentityKind};
use loyalty_core::import::{self, ImportOutcome, Opening};
use loyalty_core::merge::{self, MergeOutcome};
use loyalty_core::outcome::{EnrollOutcome, StoredResponse};
use loyalty_core::presence::CodeChannel;
use loyalty_core::profile::{Consent, Editor, ProfileChange};
use loyalty_core::receipt::{CallRecord, OpKind};
use loyalty_core::rejection::Rejection;
use loyalty_core::txn::Txn;
use loyalty_store::{AccountWrite, Commit, RequestWrite};

use crate::accounts::dangling;
use crate::commit::{Attempt, commit_of, until_committed};
use crate::context::Context;
use crate::credits::Credits;
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

/// The customer calls (see the module documentation).
#[derive(Clone, Debug)]
pub struct Customers {
    ctx: Arc<Context>,
    credits: Credits,
}

impl Customers {
    pub fn new(ctx: Arc<Context>, credits: Credits) -> Self {
        Customers { ctx, credits }
    }

    /// Registers a customer by phone, creating an account or registering the card's anonymous one
    /// ([`enrolment::enroll`]), idempotent by request ID.
    pub async fn enroll(&self, program: &Program, origin: &Origin, cmd: EnrollCmd) -> EngineResult<EnrollOutcome> {
        let program_id = program.policy.program_id.as_str();
        let print = fingerprint(OpKind::Enroll, &(origin.place(), &cmd));
        let (ctx, accounts) = (&self.ctx, &self.ctx.accounts);
        let (cmd, phone, token) = (&cmd, &cmd.phone_key(), &cmd.app_token_key());
        until_committed(|| async move {
            if let Some(outcome) = accounts.replayed_request(program_id, &cmd.request_id, &cmd.request_id, &print).await? {
                return Ok(Attempt::Done(outcome));
            }
            if accounts.resolve(program_id, phone).await?.is_some() {
                return Err(Rejection::PhoneAlreadyRegistered.into());
            }
            if let Some(token) = token
                && accounts.resolve(program_id, token).await?.is_some()
            {
                return Err(Rejection::IdentifierTaken { kind: "app token" }.into());
            }
            let referral_chain = match &cmd.referrer {
                Some(referrer) => self.referral_chain(program, referrer).await?,
                None => Vec::new(),
            };
            let origin_key = format!("enroll/{program_id}/{}", cmd.request_id);
            let card_number = cmd.card_number.clone().unwrap_or_else(|| ctx.ids.virtual_card_number(&origin_key));
            let card = IdentityKey { kind: IdentityKind::Card, value: card_number.clone() };
            let existing = match &cmd.card_number {
                Some(_) => accounts.resolve(program_id, &card).await?,
                None => None,
            };
            let account_id = existing.clone().unwrap_or_else(|| ctx.ids.account_id(&origin_key));
            let slot = accounts.slot(program_id, &account_id);
            let mut guard = slot.lock().await;
            let now = ctx.now_in(program_id);
            let (version, state) = match &existing {
                Some(_) => {
                    let stored = accounts.load(&mut guard, program_id, &account_id).await?.ok_or_else(|| dangling(&account_id))?;
                    (stored.version, stored.value)
                }
                // Registered by the enrolment itself.
                None => (0, AccountState::new(account_id.clone(), false, now)),
            };
            let tx_id = ctx.ids.transaction_id();
            let Enrolled { txn, claims, bonuses, fee_points } =
                enrolment::enroll(&program.checkout(), state, cmd, card, referral_chain, now, tx_id, origin.clone())?;
            let finished = txn.finish_all()?;
            let outcome = EnrollOutcome {
                account_id: account_id.clone(),
                card_number,
                created: existing.is_none(),
                balance: finished.account.balance_at(now),
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
                ..commit_of(program_id, version, finished)
            };
            Ok(match accounts.commit(&mut guard, commit).await? {
                Some(_) => Attempt::Done(outcome),
                None => Attempt::Again,
            })
        })
        .await
    }

    /// The referral chain a new customer referred by `referrer` gets ([`enrolment::referral_chain`]).
    async fn referral_chain(&self, program: &Program, referrer: &IdentityKey) -> EngineResult<Vec<String>> {
        let program_id = program.policy.program_id.as_str();
        let accounts = &self.ctx.accounts;
        let referrer_id =
            accounts.resolve(program_id, referrer).await?.ok_or_else(|| Rejection::invalid("referrer", "no such customer"))?;
        let stored = accounts.store.account(program_id, &referrer_id).await?.ok_or_else(|| dangling(&referrer_id))?;
        Ok(enrolment::referral_chain(&stored.value)?)
    }

    /// Opens the account of one imported customer, once: idempotent by the row's ID (claimed as
    /// `import/<id>`); the same ID with other content is an idempotency conflict. A customer whose
    /// phone, card or app token another account holds is refused, never merged.
    pub async fn import(&self, program: &Program, origin: &Origin, opening: &Opening) -> EngineResult<(ImportOutcome, bool)> {
        let program_id = program.policy.program_id.as_str();
        // The row alone: a rerun from another machine or till is the same import.
        let print = &fingerprint(OpKind::Import, opening);
        let key = &format!("import/{}", opening.id);
        let identities = &opening.identities();
        let (ctx, accounts) = (&self.ctx, &self.ctx.accounts);
        until_committed(|| async move {
            if let Some(outcome) = accounts.replayed_request(program_id, key, &opening.id, print).await? {
                return Ok(Attempt::Done((outcome, false)));
            }
            // After the replay: a row imported before stays "imported before" when a bucket of it
            // has expired since.
            opening.check(&program.policy, ctx.now_in(program_id))?;
            for identity in identities {
                if accounts.resolve(program_id, identity).await?.is_some() {
                    return Err(taken(identity).into());
                }
            }
            let account_id = ctx.ids.account_id(&format!("import/{program_id}/{}", opening.id));
            let slot = accounts.slot(program_id, &account_id);
            let mut guard = slot.lock().await;
            let now = ctx.now_in(program_id);
            let fresh = loyalty_core::account::AccountState::new(account_id, false, now);
            let mut txn = Txn::begin(&program.policy, &fresh, now, ctx.ids.transaction_id(), origin.clone());
            let outcome = import::open_account(&program.checkout(), &mut txn, opening)?;
            let record =
                CallRecord { op: OpKind::Import, key: key.clone(), fingerprint: *print, response: StoredResponse::Import(outcome.clone()) };
            let commit = Commit {
                identity_claims: identities.clone(),
                request: Some(RequestWrite { request_id: key.clone(), record }),
                ..commit_of(program_id, 0, txn.finish_all()?)
            };
            Ok(match accounts.commit(&mut guard, commit).await? {
                Some(_) => Attempt::Done((outcome, true)),
                None => Attempt::Again,
            })
        })
        .await
    }

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
        let (ctx, accounts) = (&self.ctx, &self.ctx.accounts);
        until_committed(|| async move {
            let account_id = accounts.resolve_customer(program_id, customer).await?;
            let slot = accounts.slot(program_id, &account_id);
            let mut guard = slot.lock().await;
            let stored = match by_admin {
                true => accounts.load_bound(&mut guard, program_id, &account_id, customer).await?,
                false => accounts.load_checked(&mut guard, program_id, &account_id, customer).await?,
            };
            let mut state = stored.value;
            let now = ctx.now_in(program_id);
            let AccountChange { value, events, releases, write } = change(&mut state, now)?;
            if !write {
                return Ok(Attempt::Done(value));
            }
            let commit = Commit {
                identity_releases: releases.clone(),
                events,
                ..Commit::new(program_id, AccountWrite { expected_version: stored.version, state })
            };
            if accounts.commit(&mut guard, commit).await?.is_none() {
                return Ok(Attempt::Again);
            }
            for key in &releases {
                accounts.forget_identity(program_id, key);
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
                    figures: None,
                }],
            };
            tracing::debug!(actor = origin.actor.as_str(), channel = ?channel, "customer code issued");
            let value = IssuedCode { code: (channel == CodeChannel::App).then(|| code.clone()), expires_at };
            Ok(AccountChange { value, events, releases: Vec::new(), write: true })
        })
        .await
    }

    /// Erases the customer's personal data ([`enrolment::erase`]); the identifiers it releases find
    /// no account from then on and may be registered anew.
    pub async fn erase_customer(
        &self,
        program: &Program,
        customer: &IdentityKey,
        actor: &str,
        reason: &str,
    ) -> EngineResult<(String, DateTime<Utc>)> {
        self.change_account(program, customer, true, |state, now| {
            let releases = enrolment::erase(state, now, actor, reason);
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
        let (ctx, accounts) = (&self.ctx, &self.ctx.accounts);
        let (outcome, credit) = until_committed(|| async move {
            if let Some(outcome) = accounts.replayed_request(program_id, key, request_id, print).await? {
                return Ok(Attempt::Done((outcome, None)));
            }
            let target_id = accounts.resolve_customer(program_id, customer).await?;
            {
                let slot = accounts.slot(program_id, &target_id);
                let mut guard = slot.lock().await;
                if !accounts.load_checked(&mut guard, program_id, &target_id, customer).await?.value.registered {
                    return Err(Rejection::CardNotRegistered.into());
                }
            }
            let source_id =
                accounts.resolve(program_id, card).await?.ok_or_else(|| Rejection::invalid("card_number", "no account has this card"))?;
            if source_id == target_id {
                return Err(Rejection::invalid("card_number", "is already this customer's card").into());
            }
            let slot = accounts.slot(program_id, &source_id);
            let mut guard = slot.lock().await;
            // A retry that waited for this lock behind its first call: the first answer.
            if let Some(outcome) = accounts.replayed_request(program_id, key, request_id, print).await? {
                return Ok(Attempt::Done((outcome, None)));
            }
            // Not load_checked: a replaced card may still be merged (it is the card in hand).
            let source = accounts.load_bound(&mut guard, program_id, &source_id, card).await?;
            let now = ctx.now_in(program_id);
            let mut txn = Txn::begin(&program.policy, &source.value, now, ctx.ids.transaction_id(), origin.clone());
            let outcome = merge::merge_out(&mut txn, &target_id, key)?;
            let finished = txn.finish_all()?;
            let credit = finished.credits.iter().find(|credit| credit.credit_id == *key).cloned();
            let record =
                CallRecord { op: OpKind::Merge, key: key.clone(), fingerprint: *print, response: StoredResponse::Merge(outcome.clone()) };
            let commit = Commit {
                request: Some(RequestWrite { request_id: key.clone(), record }),
                ..commit_of(program_id, source.version, finished)
            };
            Ok(match accounts.commit(&mut guard, commit).await? {
                Some(_) => Attempt::Done((outcome, credit)),
                None => Attempt::Again,
            })
        })
        .await?;
        if let Some(credit) = credit
            && let Err(error) = self.credits.apply(program, &credit).await
        {
            tracing::warn!(program = program_id, %error, "merge credited later: the credit applier will apply it");
            ctx.credits_due.notify_one();
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
        let (ctx, accounts) = (&self.ctx, &self.ctx.accounts);
        until_committed(|| async move {
            if let Some(outcome) = accounts.replayed_request(program_id, key, &cmd.request_id, print).await? {
                return Ok(Attempt::Done(outcome));
            }
            let account_id = accounts.resolve_customer(program_id, customer).await?;
            if accounts.resolve(program_id, new_card).await?.is_some_and(|holder| holder != account_id) {
                return Err(Rejection::IdentifierTaken { kind: "card" }.into());
            }
            let slot = accounts.slot(program_id, &account_id);
            let mut guard = slot.lock().await;
            // A retry that waited for this lock behind its first call: the first answer.
            if let Some(outcome) = accounts.replayed_request(program_id, key, &cmd.request_id, print).await? {
                return Ok(Attempt::Done(outcome));
            }
            let stored = accounts.load_checked(&mut guard, program_id, &account_id, customer).await?;
            let now = ctx.now_in(program_id);
            let mut txn = Txn::begin(&program.policy, &stored.value, now, ctx.ids.transaction_id(), origin.clone());
            let outcome = match cards::replace_card(&mut txn, &program.policy.presence, cmd, program.policy.floor_points(cmd.card_fee)) {
                Ok(outcome) => outcome,
                // A counted wrong code is stored although the call is refused.
                Err(rejection) if rejection.records_attempt() => {
                    let commit = commit_of(program_id, stored.version, txn.finish_all()?);
                    return match accounts.commit(&mut guard, commit).await? {
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
            Ok(match accounts.commit(&mut guard, commit).await? {
                Some(_) => Attempt::Done(outcome),
                None => Attempt::Again,
            })
        })
        .await
    }
}

/// The refusal of an imported customer whose identifier another account holds.
fn taken(identity: &IdentityKey) -> Rejection {
    match identity.kind {
        IdentityKind::Phone => Rejection::PhoneAlreadyRegistered,
        IdentityKind::Card => Rejection::IdentifierTaken { kind: "card" },
        IdentityKind::AppToken => Rejection::IdentifierTaken { kind: "app token" },
    }
}
