//! Wire conversions of the admin service's security calls: credentials, the audit trail and the
//! export of a customer's personal data.

use loyalty_core::account::AccountState;
use loyalty_core::identity::IdentityKind;
use loyalty_core::program::ProgramPolicy;
use loyalty_core::rejection::Rejection;
use loyalty_proto::admin as pb;

use crate::auth::{Credential, Scope};
use crate::engine::Engine;
use crate::error::EngineResult;
use crate::grpc::convert;
use crate::programs::Program;

/// Every call a credential's `operations` may name.
pub const OPERATIONS: &[&str] = &[
    "Enroll",
    "GetAccount",
    "ListTransactions",
    "Authorize",
    "Redeem",
    "Accrue",
    "Reverse",
    "Refund",
    "AwardBonus",
    "IssueCustomerCode",
    "UpdateProfile",
    "ReplaceCard",
    "MergeCard",
    "RecordSale",
];

const AUDIT_PAGE_DEFAULT: u32 = 50;
const AUDIT_PAGE_MAX: u32 = 200;

pub fn scopes(raw: &[i32]) -> Result<Vec<Scope>, Rejection> {
    if raw.is_empty() {
        return Err(Rejection::invalid("scopes", "at least one"));
    }
    raw.iter()
        .enumerate()
        .map(|(i, scope)| match pb::Scope::try_from(*scope) {
            Ok(pb::Scope::Checkout) => Ok(Scope::Checkout),
            Ok(pb::Scope::ReadOnly) => Ok(Scope::ReadOnly),
            Ok(pb::Scope::PartnerIssueCertificates) => Ok(Scope::PartnerIssueCertificates),
            Ok(pb::Scope::CustomerApp) => Ok(Scope::CustomerApp),
            Ok(pb::Scope::Admin) => Ok(Scope::Admin),
            _ => Err(Rejection::invalid(format!("scopes[{i}]"), "not a scope")),
        })
        .collect()
}

pub fn operations(raw: &[String]) -> Result<Vec<String>, Rejection> {
    raw.iter()
        .enumerate()
        .map(|(i, operation)| {
            if OPERATIONS.contains(&operation.as_str()) {
                Ok(operation.clone())
            } else {
                Err(Rejection::invalid(format!("operations[{i}]"), format!("one of {}", OPERATIONS.join(", "))))
            }
        })
        .collect()
}

fn scope(scope: Scope) -> pb::Scope {
    match scope {
        Scope::Checkout => pb::Scope::Checkout,
        Scope::ReadOnly => pb::Scope::ReadOnly,
        Scope::PartnerIssueCertificates => pb::Scope::PartnerIssueCertificates,
        Scope::CustomerApp => pb::Scope::CustomerApp,
        Scope::Admin => pb::Scope::Admin,
    }
}

/// A credential on the wire: never its key digest.
pub fn credential(program_id: &str, credential: &Credential) -> pb::Credential {
    pb::Credential {
        credential_id: credential.id.clone(),
        program_id: program_id.to_owned(),
        label: credential.label.clone(),
        scopes: credential.scopes.iter().map(|s| scope(*s) as i32).collect(),
        stores: credential.stores.clone(),
        operations: credential.operations.clone(),
        rate_per_second: credential.rate_per_second,
        burst: credential.burst,
        client_cert_sha256: credential.client_cert_sha256.clone().unwrap_or_default(),
        created_at: Some(convert::timestamp(credential.created_at)),
        created_by: credential.created_by.clone(),
        revoked_at: credential.revoked_at.map(convert::timestamp),
        revoked_by: credential.revoked_by.clone().unwrap_or_default(),
    }
}

pub fn export(policy: &ProgramPolicy, state: &AccountState, now: chrono::DateTime<chrono::Utc>) -> pb::ExportCustomerResponse {
    let of_kind = |kind: IdentityKind| state.identities.iter().filter(move |key| key.kind == kind);
    pb::ExportCustomerResponse {
        account_id: state.account_id.clone(),
        phone: state.profile.phone.clone().unwrap_or_default(),
        name: state.profile.name.clone().unwrap_or_default(),
        birth_date: state.profile.birth_date.map(|date| date.to_string()).unwrap_or_default(),
        card_numbers: of_kind(IdentityKind::Card).map(|key| key.value.clone()).collect(),
        app_tokens: u32::try_from(of_kind(IdentityKind::AppToken).count()).unwrap_or(u32::MAX),
        tags: state.tags.clone(),
        registered: state.registered,
        created_at: Some(convert::timestamp(state.created_at)),
        balance: Some(convert::balance(policy, &state.balance_at(now))),
        ledger_entries: state.ledger_seq,
        erased_at: state.erased_at.map(convert::timestamp),
        gender: convert::gender(state.profile.gender).into(),
        consents: state.consents.iter().map(convert::consent).collect(),
        blocked_cards: state.blocked_cards.iter().map(|blocked| blocked.number.clone()).collect(),
    }
}

/// The audit trail: an account's (ledger with actors, then its admin notes on the first page), or
/// the program's admin changes (rules and credential versions, newest first).
pub async fn read_audit(engine: &Engine, program: &Program, req: &pb::ReadAuditRequest) -> EngineResult<pb::ReadAuditResponse> {
    let page_size = match req.page_size {
        0 => AUDIT_PAGE_DEFAULT,
        size if size <= AUDIT_PAGE_MAX => size,
        _ => return Err(Rejection::invalid("page_size", format!("at most {AUDIT_PAGE_MAX}")).into()),
    } as usize;
    let customer = req.customer.as_ref().map(|customer| convert::customer(Some(customer), &program.policy)).transpose()?;
    let account_id = match (&customer, req.account_id.as_str()) {
        (Some(_), _) => String::new(),
        (None, "") => return program_audit(engine, program.id(), &req.page_token, page_size).await,
        (None, raw) => convert::id("account_id", raw, 128)?,
    };
    let before = convert::page_token("page_token", &req.page_token)?;
    let (page, next) = engine.checkout.audit_page(program, customer.as_ref(), &account_id, before, page_size).await?;
    let mut records = Vec::new();
    if before == u64::MAX {
        records.extend(page.state.audit.iter().rev().map(|note| pb::AuditRecord {
            at: Some(convert::timestamp(note.at)),
            actor: note.actor.clone(),
            kind: "account".into(),
            what: note.what.clone(),
            entry: None,
        }));
    }
    records.extend(page.entries.iter().map(|entry| pb::AuditRecord {
        at: Some(convert::timestamp(entry.at)),
        actor: entry.actor.clone(),
        kind: "ledger".into(),
        what: format!("{:?} {} ({})", entry.kind, entry.amount, entry.reason),
        entry: Some(convert::ledger_entry(&program.policy, entry)),
    }));
    Ok(pb::ReadAuditResponse { records, account_id: page.account_id, next_page_token: convert::next_page_token(next) })
}

/// Rules and access versions, newest first; the token is `r<rules before>a<access before>`.
async fn program_audit(engine: &Engine, program_id: &str, token: &str, page_size: usize) -> EngineResult<pb::ReadAuditResponse> {
    let (rules_before, access_before) = match token {
        "" => (u64::MAX, u64::MAX),
        token => token
            .strip_prefix('r')
            .and_then(|rest| rest.split_once('a'))
            .and_then(|(rules, access)| Some((rules.parse().ok()?, access.parse().ok()?)))
            .ok_or_else(|| Rejection::invalid("page_token", "not a token from a previous page"))?,
    };
    let (rules, rules_next) = engine.rules().history(program_id, rules_before, page_size).await?;
    let (access, access_next) = engine.access.history(program_id, access_before, page_size).await?;
    let mut records: Vec<pb::AuditRecord> = [("rules_version", rules), ("access_version", access)]
        .into_iter()
        .flat_map(|(kind, notes)| {
            notes.into_iter().map(move |note| pb::AuditRecord {
                at: Some(convert::timestamp(note.created_at)),
                actor: note.author,
                kind: kind.into(),
                what: format!("version {}: {}", note.version, note.comment),
                entry: None,
            })
        })
        .collect();
    records.sort_by(|a, b| b.at.as_ref().map(|t| (t.seconds, t.nanos)).cmp(&a.at.as_ref().map(|t| (t.seconds, t.nanos))));
    let next_page_token = if rules_next > 1 || access_next > 1 { format!("r{rules_next}a{access_next}") } else { String::new() };
    Ok(pb::ReadAuditResponse { records, account_id: String::new(), next_page_token })
}
