//! Credentials and what they allow. A credential belongs to exactly one program; its scopes say
//! which calls it may make, and a partner's may be narrowed to some stores and operations. The
//! program's credentials form one versioned document (the "access document"), stored like rules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a credential may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A till integration: every checkout call, and codes sent by message.
    Checkout,
    /// Balances, ledgers and quotes; changes nothing.
    ReadOnly,
    /// A partner issuing certificates and event bonuses (AwardBonus).
    PartnerIssueCertificates,
    /// The program's app: balances, ledgers, codes shown to the customer.
    CustomerApp,
    /// The admin service.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Checkout => "checkout",
            Scope::ReadOnly => "read_only",
            Scope::PartnerIssueCertificates => "partner_issue_certificates",
            Scope::CustomerApp => "customer_app",
            Scope::Admin => "admin",
        }
    }
}

/// One credential, as stored (the key only as its digest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub id: String,
    #[serde(default)]
    pub label: String,
    pub scopes: Vec<Scope>,
    /// Stores it may act for; empty: all.
    #[serde(default)]
    pub stores: Vec<String>,
    /// RPC names it may call within its scopes; empty: all its scopes allow.
    #[serde(default)]
    pub operations: Vec<String>,
    /// Calls per second and burst; 0: the engine's defaults.
    #[serde(default)]
    pub rate_per_second: u32,
    #[serde(default)]
    pub burst: u32,
    /// Hex SHA-256 of the API key (see `keys::digest`).
    pub key_sha256: String,
    /// Hex SHA-256 of the client certificate the key must arrive with (mutual TLS).
    #[serde(default)]
    pub client_cert_sha256: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked_by: Option<String>,
}

impl Credential {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// A program's credentials: one stored document, versioned like rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessDocument {
    pub credentials: Vec<Credential>,
}

/// Most credentials in one program: the document is read whole by every engine.
pub const CREDENTIALS_MAX: usize = 5_000;

impl AccessDocument {
    pub fn get(&self, credential_id: &str) -> Option<&Credential> {
        self.credentials.iter().find(|credential| credential.id == credential_id)
    }
}
