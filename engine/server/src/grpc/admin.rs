//! `loyalty.admin.v1.ProgramAdmin`: rules and campaigns, manual adjustments, the event outbox,
//! the figures and the customers' RFM segments.
//! Calls go through the same guard as checkout calls (the gate, in-flight limit, metrics, one error
//! mapping) and need the admin scope; every change is recorded with the calling credential.

use std::sync::Arc;
use std::time::Duration;

use loyalty_core::Origin;
use loyalty_core::account::AccountState;
use loyalty_core::ops::{self, AuthorizeCmd, BonusCmd, Checkout};
use loyalty_core::rejection::Rejection;
use loyalty_core::rules::definition::{Effect, Stacking, Trigger};
use loyalty_core::rules::{DocumentFormat, Rule, RuleSet, parse_rule, parse_rule_set};
use loyalty_proto::admin as pb;
use loyalty_proto::admin::program_admin_server::ProgramAdmin;
use tonic::{Request, Response, Status};

use crate::auth::registry::AccessEdit;
use crate::auth::{Credential, keys};
use crate::error::{EngineError, EngineResult};
use crate::grpc::convert;
use crate::grpc::security;
use crate::grpc::service::{ADMIN, Call, CallContext, CallIds, LoyaltyApi};
use crate::grpc::status::to_status;
use crate::rule_admin::{RuleChange, RuleEdit};
use crate::whatif::{Scan, Update};

/// Largest rule document accepted (a program of 5,000 rules with long SKU lists fits).
const DOCUMENT_BYTES_MAX: usize = 16 << 20;
/// Page size of ReadEvents when the request leaves it at 0, and its largest page.
const EVENTS_PAGE_DEFAULT: u32 = 100;
const EVENTS_PAGE_MAX: u32 = 1000;
/// Longest period of a figures report: ten years of days.
const FIGURES_DAYS_MAX: i64 = 3660;
/// A what-if's receipts when the request leaves it at 0, and the most a request may ask for.
const WHATIF_RECEIPTS_DEFAULT: u64 = 1_000_000;
const WHATIF_RECEIPTS_MAX: u64 = 10_000_000;
/// A what-if's seconds when the request leaves it at 0, and the most a request may ask for.
const WHATIF_SECONDS_DEFAULT: u32 = 60;
const WHATIF_SECONDS_MAX: u32 = 600;

/// What a WhatIf call answers: the scan's messages on the wire, ending with the report (or the
/// status of a failure).
pub type WhatIfStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::WhatIfProgress, Status>> + Send>>;

/// A bound the request may set: `default` for 0, refused above `max`.
fn bound<T: PartialOrd + Default + std::fmt::Display>(field: &str, value: T, default: T, max: T) -> Result<T, Rejection> {
    if value == T::default() {
        Ok(default)
    } else if value > max {
        Err(Rejection::invalid(field, format!("at most {max}")))
    } else {
        Ok(value)
    }
}

/// The admin service; shares the checkout service's call guard and engine.
#[derive(Debug, Clone)]
pub struct AdminApi {
    api: LoyaltyApi,
}

impl AdminApi {
    pub fn new(api: LoyaltyApi) -> Self {
        AdminApi { api }
    }
}

fn format(raw: i32) -> DocumentFormat {
    match pb::DocumentFormat::try_from(raw) {
        Ok(pb::DocumentFormat::Yaml) => DocumentFormat::Yaml,
        Ok(pb::DocumentFormat::Json) => DocumentFormat::Json,
        _ => DocumentFormat::Toml,
    }
}

fn document(field: &str, raw: &str) -> Result<(), Rejection> {
    if raw.trim().is_empty() {
        return Err(Rejection::invalid(field, "required"));
    }
    if raw.len() > DOCUMENT_BYTES_MAX {
        return Err(Rejection::invalid(field, format!("at most {DOCUMENT_BYTES_MAX} bytes")));
    }
    Ok(())
}

/// Writes a rule set or a rule in a document format.
fn render<T: serde::Serialize>(value: &T, format: DocumentFormat) -> EngineResult<String> {
    loyalty_core::rules::compile::render(value, format).map_err(|error| EngineError::Internal(format!("rendering rules: {error}")))
}

fn summary(rule: &Rule, format: DocumentFormat) -> EngineResult<pb::RuleSummary> {
    let stacking = match rule.stacking {
        Stacking::Exclusive => "exclusive",
        Stacking::Stackable => "stackable",
        Stacking::Always => "always",
    };
    let trigger = match rule.trigger {
        Trigger::Purchase => "purchase",
        Trigger::Enrollment => "enrollment",
        Trigger::Event => "event",
        Trigger::Schedule => "schedule",
    };
    let effect = match rule.effect {
        Effect::PercentOfLines { .. } => "percent_of_lines",
        Effect::PercentOfReceipt { .. } => "percent_of_receipt",
        Effect::FixedPoints { .. } => "fixed_points",
        Effect::Multiplier { .. } => "multiplier",
        Effect::TierPercent => "tier_percent",
        Effect::IssueCertificate { .. } => "issue_certificate",
        Effect::Referral { .. } => "referral",
        Effect::ChangeToPoints { .. } => "change_to_points",
    };
    Ok(pb::RuleSummary {
        id: rule.id.clone(),
        name: rule.name.clone(),
        campaign: rule.campaign.clone().unwrap_or_default(),
        active: rule.active,
        priority: rule.priority,
        stacking: stacking.to_owned(),
        trigger: trigger.to_owned(),
        effect: effect.to_owned(),
        document: render(rule, format)?,
    })
}

impl AdminApi {
    /// Stores one change to the call's program's rules, made against `expected_version`.
    async fn change(&self, call: &Call<'_>, expected_version: u64, edit: RuleEdit, comment: &str) -> EngineResult<pb::RulesChanged> {
        let program = &call.program;
        let comment = convert::reason(comment)?;
        let engine = self.api.engine();
        let change =
            RuleChange { program_id: program.id().to_owned(), expected_version, edit, author: call.caller.credential.id.clone(), comment };
        let changed = engine.rules().change(change, engine.now_in(program.id())).await?;
        Ok(pb::RulesChanged {
            program_id: changed.id().to_owned(),
            version: changed.rules.version(),
            active_rules: u32::try_from(changed.rules.active_rule_ids().count()).unwrap_or(u32::MAX),
        })
    }
}

#[tonic::async_trait]
impl ProgramAdmin for AdminApi {
    async fn list_rules(&self, request: Request<pb::ListRulesRequest>) -> Result<Response<pb::ListRulesResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("ListRules", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = &call.program;
                let format = format(req.format);
                let source: &RuleSet = program.rules.source();
                Ok(pb::ListRulesResponse {
                    program_id: program.id().to_owned(),
                    version: program.rules.version(),
                    rules: source.rules.iter().map(|rule| summary(rule, format)).collect::<EngineResult<_>>()?,
                    document: render(source, format)?,
                })
            })
            .await
    }

    async fn apply_rules(&self, request: Request<pb::ApplyRulesRequest>) -> Result<Response<pb::RulesChanged>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("ApplyRules", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                document("document", &req.document)?;
                let rule_set = parse_rule_set(&req.document, format(req.format)).map_err(EngineError::RulesInvalid)?;
                self.change(&call, req.expected_version, RuleEdit::Replace(Box::new(rule_set)), &req.comment).await
            })
            .await
    }

    async fn upsert_rule(&self, request: Request<pb::UpsertRuleRequest>) -> Result<Response<pb::RulesChanged>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("UpsertRule", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                document("document", &req.document)?;
                let rule = parse_rule(&req.document, format(req.format)).map_err(EngineError::RulesInvalid)?;
                self.change(&call, req.expected_version, RuleEdit::Upsert(Box::new(rule)), &req.comment).await
            })
            .await
    }

    async fn set_rule_active(&self, request: Request<pb::SetRuleActiveRequest>) -> Result<Response<pb::RulesChanged>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("SetRuleActive", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let edit = match (req.rule_id.is_empty(), req.campaign.is_empty()) {
                    (false, true) => RuleEdit::SetActive { rule_id: convert::id("rule_id", &req.rule_id, 64)?, active: req.active },
                    (true, false) => {
                        RuleEdit::SetCampaignActive { campaign: convert::id("campaign", &req.campaign, 64)?, active: req.active }
                    }
                    _ => return Err(Rejection::invalid("rule_id", "give exactly one of rule_id and campaign").into()),
                };
                self.change(&call, req.expected_version, edit, &req.comment).await
            })
            .await
    }

    async fn dry_run(&self, request: Request<pb::DryRunRequest>) -> Result<Response<pb::DryRunResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("DryRun", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = &call.program;
                let policy = &program.policy;
                let engine = self.api.engine();
                let candidate = match req.document.as_str() {
                    "" => None,
                    text => {
                        document("document", text)?;
                        let rule_set = parse_rule_set(text, format(req.format)).map_err(EngineError::RulesInvalid)?;
                        let compiled = engine
                            .programs()
                            .compile(program.id(), &rule_set, 0)
                            .ok_or_else(|| EngineError::ProgramNotFound(program.id().to_owned()))?
                            .map_err(EngineError::RulesInvalid)?;
                        Some(compiled)
                    }
                };
                let rules = candidate.as_ref().unwrap_or(&program.rules);
                let at = convert::time("at", req.at.as_ref())?.unwrap_or_else(|| engine.now_in(program.id()));
                let account = match req.customer.as_ref() {
                    Some(customer) => {
                        let key = convert::customer(Some(customer), policy)?;
                        engine.checkout.find_account(program, &key).await?.state
                    }
                    None => {
                        let mut account = AccountState::new(String::new(), true, at);
                        account.tags = convert::tags("tags", &req.tags)?;
                        account
                    }
                };
                let limits = self.api.limits();
                let origin = Origin {
                    store_id: if req.store_id.is_empty() {
                        String::new()
                    } else {
                        convert::id("store_id", &req.store_id, limits.id_len_max)?
                    },
                    till_id: if req.till_id.is_empty() { String::new() } else { convert::id("till_id", &req.till_id, limits.id_len_max)? },
                    actor: call.caller.credential.id.clone(),
                };
                let cmd = AuthorizeCmd {
                    receipt_id: "dry-run".to_owned(),
                    lines: convert::lines(&req.lines, limits.basket_lines_max)?,
                    spend: loyalty_core::Decimal::ZERO,
                    hold_ttl_seconds: 0,
                    sale: convert::sale(&req.channel, &req.coupon_codes)?,
                    presence: Default::default(),
                };
                let checkout = Checkout { program: policy, rules, limits: &program.limits };
                let outcome = ops::quote(&checkout, &account, &cmd, at, &origin)?;
                Ok(pb::DryRunResponse {
                    version: candidate.as_ref().map_or(program.rules.version(), |_| 0),
                    lines: convert::line_earns(policy, &outcome.lines),
                    earn_total: convert::points(policy, outcome.earn_total),
                    rules: convert::rule_points(policy, &outcome.rules),
                    max_spend: convert::points(policy, outcome.spend.max),
                    max_spend_limit: convert::spend_limit(outcome.spend.limit) as i32,
                    spend_explanation: outcome.spend.explanation,
                    tier: outcome.tier,
                })
            })
            .await
    }

    type WhatIfStream = WhatIfStream;

    async fn what_if(&self, request: Request<pb::WhatIfRequest>) -> Result<Response<WhatIfStream>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("WhatIf", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = Arc::clone(&call.program);
                let engine = self.api.engine();
                document("document", &req.document)?;
                let days_max = loyalty_core::whatif::DAYS_MAX;
                if req.days == 0 || req.days > days_max {
                    return Err(Rejection::invalid("days", format!("1 to {days_max}")).into());
                }
                let store_id = match req.store_id.as_str() {
                    "" => None,
                    raw => Some(convert::id("store_id", raw, self.api.limits().id_len_max)?),
                };
                let max_receipts = bound("max_receipts", req.max_receipts, WHATIF_RECEIPTS_DEFAULT, WHATIF_RECEIPTS_MAX)?;
                let max_seconds = bound("max_seconds", req.max_seconds, WHATIF_SECONDS_DEFAULT, WHATIF_SECONDS_MAX)?;
                let rule_set = parse_rule_set(&req.document, format(req.format)).map_err(EngineError::RulesInvalid)?;
                let candidate = engine
                    .programs()
                    .compile(program.id(), &rule_set, 0)
                    .ok_or_else(|| EngineError::ProgramNotFound(program.id().to_owned()))?
                    .map_err(EngineError::RulesInvalid)?;
                let scan = Scan {
                    candidate: Arc::new(candidate),
                    days: req.days,
                    store_id,
                    max_receipts,
                    max_duration: Duration::from_secs(u64::from(max_seconds)),
                };
                let updates = engine.whatif.start(Arc::clone(&program), scan)?;
                let stream =
                    tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(updates), move |update| match update {
                        Update::Progress(progress) => Ok(convert::whatif_progress(&progress)),
                        Update::Done(report) => Ok(convert::whatif_report(&program.policy, &report)),
                        Update::Failed(error) => Err(to_status(&error)),
                    });
                Ok(Box::pin(stream) as WhatIfStream)
            })
            .await
    }

    async fn adjust_points(
        &self,
        request: Request<pb::AdjustPointsRequest>,
    ) -> Result<Response<loyalty_proto::v1::AwardBonusResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("AdjustPoints", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = &call.program;
                let limits = self.api.limits();
                let customer = convert::customer(req.customer.as_ref(), &program.policy)?;
                let request_id = convert::id("request_id", &req.request_id, limits.id_len_max)?;
                let points = convert::decimal("points", &req.points)?;
                if points.abs() > limits.amount_max {
                    return Err(Rejection::invalid("points", format!("at most {} either way", limits.amount_max)).into());
                }
                let reason = convert::reason(&req.reason)?;
                let origin = Origin { store_id: "admin".to_owned(), till_id: "admin".to_owned(), actor: call.caller.credential.id.clone() };
                let outcome =
                    self.api.engine().checkout.bonus(program, &origin, &customer, &request_id, BonusCmd::Manual { points, reason }).await?;
                Ok(convert::bonus(&program.policy, &outcome))
            })
            .await
    }

    async fn backup_store(&self, request: Request<pb::BackupStoreRequest>) -> Result<Response<pb::BackupStoreResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("BackupStore", &ctx, ADMIN, CallIds::program(&req.program_id), |_call| async move {
                let started = std::time::Instant::now();
                let report = self.api.engine().backup_store().await?;
                Ok(pb::BackupStoreResponse {
                    path: report.path.display().to_string(),
                    bytes: report.bytes,
                    accounts: report.accounts,
                    ledger_entries: report.ledger_entries,
                    took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                })
            })
            .await
    }

    async fn advance_clock(&self, request: Request<pb::AdvanceClockRequest>) -> Result<Response<pb::AdvanceClockResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("AdvanceClock", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = &call.program;
                let request_id = convert::id("request_id", &req.request_id, self.api.limits().id_len_max)?;
                if req.seconds <= 0 || req.seconds > crate::sandbox::OFFSET_MAX.num_seconds() {
                    return Err(Rejection::invalid("seconds", "above 0 and at most ten years").into());
                }
                let by = chrono::Duration::seconds(req.seconds);
                let advanced = self.api.engine().advance_clock(program, &request_id, by, &call.caller.credential.id).await?;
                let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                Ok(pb::AdvanceClockResponse {
                    now: Some(convert::timestamp(advanced.now)),
                    offset_seconds: advanced.offset.num_seconds(),
                    accounts_swept: count(advanced.sweep.accounts),
                    awards: count(advanced.sweep.awards),
                    expiry_notices: count(advanced.sweep.expiry_notices),
                })
            })
            .await
    }

    async fn read_figures(&self, request: Request<pb::ReadFiguresRequest>) -> Result<Response<pb::ReadFiguresResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("ReadFigures", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = &call.program;
                let (from, to) = convert::period(&req.from, &req.to, FIGURES_DAYS_MAX)?;
                let store = match req.store_id.as_str() {
                    "" => None,
                    raw => Some(convert::id("store_id", raw, self.api.limits().id_len_max)?),
                };
                let (report, through_seq) = self.api.engine().reports.report(program, from, to, store.as_deref()).await?;
                Ok(convert::figures(&program.policy, &report, through_seq))
            })
            .await
    }

    async fn list_segments(&self, request: Request<pb::ListSegmentsRequest>) -> Result<Response<pb::ListSegmentsResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("ListSegments", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let segments = &self.api.engine().segments;
                let program_id = call.program.id();
                let latest = segments.latest_version(program_id).await?;
                if req.version > latest {
                    let reason = format!("no sweep stored version {}: the latest is {latest}", req.version);
                    return Err(Rejection::invalid("version", reason).into());
                }
                Ok(convert::segments(segments.read(program_id, req.version).await?, latest))
            })
            .await
    }

    async fn read_budgets(&self, request: Request<pb::ReadBudgetsRequest>) -> Result<Response<pb::ReadBudgetsResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("ReadBudgets", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = &call.program;
                let budgets = self.api.engine().campaign_budgets(program).await?;
                let policy = &program.policy;
                Ok(pb::ReadBudgetsResponse {
                    budgets: budgets
                        .into_iter()
                        .map(|budget| pb::CampaignBudget {
                            points: convert::points(policy, budget.points),
                            reserved: convert::points(policy, budget.reserved),
                            unreserved: convert::points(policy, (budget.points - budget.reserved).max(loyalty_core::Decimal::ZERO)),
                            held_here: convert::points(policy, budget.held_here),
                            given: convert::points(policy, budget.given),
                            version: budget.version,
                            campaign: budget.campaign,
                        })
                        .collect(),
                })
            })
            .await
    }

    async fn read_events(&self, request: Request<pb::ReadEventsRequest>) -> Result<Response<pb::ReadEventsResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("ReadEvents", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = &call.program;
                let limit = match req.limit {
                    0 => EVENTS_PAGE_DEFAULT,
                    limit if limit <= EVENTS_PAGE_MAX => limit,
                    _ => return Err(Rejection::invalid("limit", format!("at most {EVENTS_PAGE_MAX}")).into()),
                };
                let records = self.api.engine().outbox_page(program.id(), req.after_seq, limit as usize).await?;
                let policy = &program.policy;
                Ok(pb::ReadEventsResponse {
                    last_seq: records.last().map_or(req.after_seq, |record| record.seq),
                    // The engine's own figures events are not for integrations (`reports`).
                    events: records
                        .into_iter()
                        .filter(|record| record.event.kind != loyalty_core::events::EventKind::Figures)
                        .map(|record| {
                            let event = record.event;
                            pb::Event {
                                seq: record.seq,
                                kind: event.kind.as_str().to_owned(),
                                account_id: event.account_id,
                                at: Some(convert::timestamp(event.at)),
                                points: convert::points(policy, event.points),
                                receipt_id: event.receipt_id.unwrap_or_default(),
                                rule_ids: event.rule_ids,
                                available_from: event.available_from.map(convert::timestamp),
                                tier_from: event.tier_from.unwrap_or_default(),
                                tier_to: event.tier_to.unwrap_or_default(),
                                expires_at: event.expires_at.map(convert::timestamp),
                                event_id: record.event_id,
                                code: event.code.unwrap_or_default(),
                            }
                        })
                        .collect(),
                })
            })
            .await
    }

    async fn create_credential(
        &self,
        request: Request<pb::CreateCredentialRequest>,
    ) -> Result<Response<pb::CreateCredentialResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("CreateCredential", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = &call.program;
                let credential_id = req.credential_id.as_str();
                if !keys::is_credential_id(credential_id) {
                    return Err(Rejection::invalid("credential_id", "3 to 40 of a-z, 0-9 and '-'").into());
                }
                let scopes = security::scopes(&req.scopes)?;
                let limits = self.api.limits();
                let stores = req
                    .stores
                    .iter()
                    .enumerate()
                    .map(|(i, store)| convert::id(&format!("stores[{i}]"), store, limits.id_len_max))
                    .collect::<Result<Vec<_>, _>>()?;
                let operations = security::operations(&req.operations)?;
                let client_cert_sha256 = match req.client_cert_sha256.to_ascii_lowercase() {
                    cert if cert.is_empty() => None,
                    cert if crate::auth::seed::is_sha256_hex(&cert) => Some(cert),
                    _ => return Err(Rejection::invalid("client_cert_sha256", "64 hex digits: SHA-256 of the certificate's DER").into()),
                };
                let api_key = keys::generate(program.id(), credential_id)
                    .map_err(|error| EngineError::Internal(format!("no random source: {error}")))?;
                let credential = Credential {
                    id: credential_id.to_owned(),
                    label: convert::text("label", &req.label, 200)?,
                    scopes,
                    stores,
                    operations,
                    rate_per_second: req.rate_per_second,
                    burst: req.burst,
                    key_sha256: keys::digest(&api_key),
                    client_cert_sha256,
                    created_at: self.api.engine().now(),
                    created_by: call.caller.credential.id.clone(),
                    revoked_at: None,
                    revoked_by: None,
                };
                let engine = self.api.engine();
                let edit = AccessEdit::Create(Box::new(credential.clone()));
                let version =
                    engine.access.change(program.id(), req.expected_version, edit, &call.caller.credential.id, engine.now()).await?;
                Ok(pb::CreateCredentialResponse { credential: Some(security::credential(program.id(), &credential)), api_key, version })
            })
            .await
    }

    async fn revoke_credential(&self, request: Request<pb::RevokeCredentialRequest>) -> Result<Response<pb::CredentialsChanged>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("RevokeCredential", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = &call.program;
                let edit = AccessEdit::Revoke { credential_id: req.credential_id.clone() };
                let engine = self.api.engine();
                let version =
                    engine.access.change(program.id(), req.expected_version, edit, &call.caller.credential.id, engine.now()).await?;
                Ok(pb::CredentialsChanged { version })
            })
            .await
    }

    async fn list_credentials(
        &self,
        request: Request<pb::ListCredentialsRequest>,
    ) -> Result<Response<pb::ListCredentialsResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("ListCredentials", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = &call.program;
                let access = &self.api.engine().access;
                Ok(pb::ListCredentialsResponse {
                    version: access.version(program.id()),
                    credentials: access
                        .document(program.id())
                        .credentials
                        .iter()
                        .map(|credential| security::credential(program.id(), credential))
                        .collect(),
                })
            })
            .await
    }

    async fn read_audit(&self, request: Request<pb::ReadAuditRequest>) -> Result<Response<pb::ReadAuditResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("ReadAudit", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = &call.program;
                security::read_audit(self.api.engine(), program, req).await
            })
            .await
    }

    async fn export_customer(&self, request: Request<pb::ExportCustomerRequest>) -> Result<Response<pb::ExportCustomerResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("ExportCustomer", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = &call.program;
                let customer = convert::customer(req.customer.as_ref(), &program.policy)?;
                let snapshot = self.api.engine().checkout.find_account(program, &customer).await?;
                // Who exported whose data goes to the log by IDs only.
                tracing::info!(
                    credential = call.caller.credential.id.as_str(),
                    account = snapshot.state.account_id.as_str(),
                    "customer data exported"
                );
                Ok(security::export(&program.policy, &snapshot.state, snapshot.now))
            })
            .await
    }

    async fn erase_customer(&self, request: Request<pb::EraseCustomerRequest>) -> Result<Response<pb::EraseCustomerResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        self.api
            .handle("EraseCustomer", &ctx, ADMIN, CallIds::program(&req.program_id), |call| async move {
                let program = &call.program;
                let customer = convert::customer(req.customer.as_ref(), &program.policy)?;
                let reason = convert::reason(&req.reason)?;
                if reason.trim().is_empty() {
                    return Err(Rejection::invalid("reason", "required: kept in the account's audit trail").into());
                }
                let (account_id, erased_at) =
                    self.api.engine().customers.erase_customer(program, &customer, &call.caller.credential.id, &reason).await?;
                tracing::info!(credential = call.caller.credential.id.as_str(), account = account_id.as_str(), "customer data erased");
                Ok(pb::EraseCustomerResponse { account_id, erased_at: Some(convert::timestamp(erased_at)) })
            })
            .await
    }
}
