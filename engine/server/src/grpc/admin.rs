//! `loyalty.admin.v1.ProgramAdmin`: rules and campaigns, manual adjustments, the event outbox.
//! Calls go through the same guard as checkout calls (in-flight limit, metrics, one error
//! mapping); who may call them is the security issue's business.

use loyalty_core::Origin;
use loyalty_core::account::AccountState;
use loyalty_core::ops::{self, AuthorizeCmd, BonusCmd, Checkout};
use loyalty_core::rejection::Rejection;
use loyalty_core::rules::definition::{Effect, Stacking, Trigger};
use loyalty_core::rules::{DocumentFormat, Rule, RuleSet, parse_rule, parse_rule_set};
use loyalty_proto::admin as pb;
use loyalty_proto::admin::program_admin_server::ProgramAdmin;
use tonic::{Request, Response, Status};

use crate::error::{EngineError, EngineResult};
use crate::grpc::convert;
use crate::grpc::service::{CallIds, LoyaltyApi};
use crate::rule_admin::{RuleChange, RuleEdit};

/// Largest rule document accepted (a program of 5,000 rules with long SKU lists fits).
const DOCUMENT_BYTES_MAX: usize = 16 << 20;
/// Page size of ReadEvents when the request leaves it at 0, and its largest page.
const EVENTS_PAGE_DEFAULT: u32 = 100;
const EVENTS_PAGE_MAX: u32 = 1000;

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
    async fn change(&self, program_id: &str, expected_version: u64, edit: RuleEdit, comment: &str) -> EngineResult<pb::RulesChanged> {
        let program = self.api.program(program_id)?;
        let comment = convert::reason(comment)?;
        let changed = self
            .api
            .engine()
            .change_rules(RuleChange {
                program_id: program.id().to_owned(),
                expected_version,
                edit,
                // The security issue replaces this with the calling credential.
                author: "admin-api".to_owned(),
                comment,
            })
            .await?;
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
        let req = request.into_inner();
        self.api
            .handle("ListRules", CallIds::program(&req.program_id), async {
                let program = self.api.program(&req.program_id)?;
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
        let req = request.into_inner();
        self.api
            .handle("ApplyRules", CallIds::program(&req.program_id), async {
                document("document", &req.document)?;
                let rule_set = parse_rule_set(&req.document, format(req.format)).map_err(EngineError::RulesInvalid)?;
                self.change(&req.program_id, req.expected_version, RuleEdit::Replace(Box::new(rule_set)), &req.comment).await
            })
            .await
    }

    async fn upsert_rule(&self, request: Request<pb::UpsertRuleRequest>) -> Result<Response<pb::RulesChanged>, Status> {
        let req = request.into_inner();
        self.api
            .handle("UpsertRule", CallIds::program(&req.program_id), async {
                document("document", &req.document)?;
                let rule = parse_rule(&req.document, format(req.format)).map_err(EngineError::RulesInvalid)?;
                self.change(&req.program_id, req.expected_version, RuleEdit::Upsert(Box::new(rule)), &req.comment).await
            })
            .await
    }

    async fn set_rule_active(&self, request: Request<pb::SetRuleActiveRequest>) -> Result<Response<pb::RulesChanged>, Status> {
        let req = request.into_inner();
        self.api
            .handle("SetRuleActive", CallIds::program(&req.program_id), async {
                let edit = match (req.rule_id.is_empty(), req.campaign.is_empty()) {
                    (false, true) => RuleEdit::SetActive { rule_id: convert::id("rule_id", &req.rule_id, 64)?, active: req.active },
                    (true, false) => {
                        RuleEdit::SetCampaignActive { campaign: convert::id("campaign", &req.campaign, 64)?, active: req.active }
                    }
                    _ => return Err(Rejection::invalid("rule_id", "give exactly one of rule_id and campaign").into()),
                };
                self.change(&req.program_id, req.expected_version, edit, &req.comment).await
            })
            .await
    }

    async fn dry_run(&self, request: Request<pb::DryRunRequest>) -> Result<Response<pb::DryRunResponse>, Status> {
        let req = request.into_inner();
        self.api
            .handle("DryRun", CallIds::program(&req.program_id), async {
                let program = self.api.program(&req.program_id)?;
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
                let at = match req.at {
                    Some(at) => chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or(0))
                        .ok_or_else(|| Rejection::invalid("at", "not a valid time"))?,
                    None => engine.now(),
                };
                let account = match req.customer.as_ref() {
                    Some(customer) => {
                        let key = convert::customer(Some(customer), policy)?;
                        engine.get_account(&program, &key).await?.state
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
                };
                let cmd = AuthorizeCmd {
                    receipt_id: "dry-run".to_owned(),
                    lines: convert::lines(&req.lines, limits.basket_lines_max)?,
                    spend: loyalty_core::Decimal::ZERO,
                    hold_ttl_seconds: 0,
                    sale: convert::sale(&req.channel, &req.coupon_codes)?,
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

    async fn adjust_points(
        &self,
        request: Request<pb::AdjustPointsRequest>,
    ) -> Result<Response<loyalty_proto::v1::AwardBonusResponse>, Status> {
        let req = request.into_inner();
        self.api
            .handle("AdjustPoints", CallIds::program(&req.program_id), async {
                let program = self.api.program(&req.program_id)?;
                let limits = self.api.limits();
                let customer = convert::customer(req.customer.as_ref(), &program.policy)?;
                let request_id = convert::id("request_id", &req.request_id, limits.id_len_max)?;
                let points = convert::decimal("points", &req.points)?;
                if points.abs() > limits.amount_max {
                    return Err(Rejection::invalid("points", format!("at most {} either way", limits.amount_max)).into());
                }
                let reason = convert::reason(&req.reason)?;
                let origin = Origin { store_id: "admin".to_owned(), till_id: "admin".to_owned() };
                let outcome =
                    self.api.engine().bonus(&program, &origin, &customer, &request_id, BonusCmd::Manual { points, reason }).await?;
                Ok(convert::bonus(&program.policy, &outcome))
            })
            .await
    }

    async fn read_events(&self, request: Request<pb::ReadEventsRequest>) -> Result<Response<pb::ReadEventsResponse>, Status> {
        let req = request.into_inner();
        self.api
            .handle("ReadEvents", CallIds::program(&req.program_id), async {
                let program = self.api.program(&req.program_id)?;
                let limit = match req.limit {
                    0 => EVENTS_PAGE_DEFAULT,
                    limit if limit <= EVENTS_PAGE_MAX => limit,
                    _ => return Err(Rejection::invalid("limit", format!("at most {EVENTS_PAGE_MAX}")).into()),
                };
                let records = self.api.engine().store().outbox_page(program.id(), req.after_seq, limit as usize).await?;
                let policy = &program.policy;
                Ok(pb::ReadEventsResponse {
                    last_seq: records.last().map_or(req.after_seq, |record| record.seq),
                    events: records
                        .into_iter()
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
                            }
                        })
                        .collect(),
                })
            })
            .await
    }
}
