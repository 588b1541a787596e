//! The credentials every engine checks calls against: each program's access document, kept in the
//! store as versions (N+1 written only over N, like rules) and in memory for the per-call check.
//!
//! The store is the source of truth. A change through this engine (create, revoke) is stored, then
//! installed at once; other engines pick it up on their refresh (`rules_refresh_ms`), so a revoked
//! key stops working everywhere within seconds and with no restart. The first version comes from
//! the configured credentials file, or, for a program with none, a generated admin key written to
//! a file only the engine's user can read.
//!
//! The documents are versioned documents (`documents`) under the key `<program>#access`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use dashmap::DashMap;

use crate::auth::caller::RateDefaults;
use crate::auth::credential::{AccessDocument, CREDENTIALS_MAX, Credential};
use crate::documents::{Changed, Documents, Edit, First, VersionNote};
use crate::error::{EngineError, EngineResult};

/// The store key of a program's access document.
pub fn access_key(program_id: &str) -> String {
    format!("{program_id}#access")
}

/// One installed version of a program's credentials.
#[derive(Debug, Default)]
pub struct ProgramAccess {
    pub version: u64,
    pub credentials: HashMap<String, Arc<Credential>>,
}

/// Every program's installed credentials, the rate of credentials that set none, and the stored
/// versions they come from. The gate checks calls against it; the admin API changes it.
#[derive(Debug)]
pub struct Access {
    programs: DashMap<String, Arc<ProgramAccess>>,
    rate_per_second_default: AtomicU32,
    burst_default: AtomicU32,
    documents: Documents,
}

impl Access {
    /// No credentials installed yet (see [`Access::bootstrap`]); the default rates.
    pub fn new(documents: Documents) -> Self {
        let defaults = crate::auth::seed::SecurityConfig::default();
        Access {
            programs: DashMap::new(),
            rate_per_second_default: AtomicU32::new(defaults.rate_per_second_default),
            burst_default: AtomicU32::new(defaults.burst_default),
            documents,
        }
    }

    pub fn set_rate_defaults(&self, defaults: RateDefaults) {
        self.rate_per_second_default.store(defaults.per_second, Ordering::Relaxed);
        self.burst_default.store(defaults.burst, Ordering::Relaxed);
    }

    pub fn rate_defaults(&self) -> RateDefaults {
        RateDefaults { per_second: self.rate_per_second_default.load(Ordering::Relaxed), burst: self.burst_default.load(Ordering::Relaxed) }
    }

    pub fn credential(&self, program_id: &str, credential_id: &str) -> Option<Arc<Credential>> {
        self.programs.get(program_id).and_then(|access| access.credentials.get(credential_id).cloned())
    }

    pub fn version(&self, program_id: &str) -> u64 {
        self.programs.get(program_id).map_or(0, |access| access.version)
    }

    pub fn document(&self, program_id: &str) -> AccessDocument {
        let mut credentials: Vec<Credential> = self
            .programs
            .get(program_id)
            .map(|access| access.credentials.values().map(|credential| (**credential).clone()).collect())
            .unwrap_or_default();
        credentials.sort_by(|a, b| a.id.cmp(&b.id));
        AccessDocument { credentials }
    }

    fn install(&self, program_id: &str, version: u64, document: AccessDocument) {
        let credentials = document.credentials.into_iter().map(|credential| (credential.id.clone(), Arc::new(credential))).collect();
        self.programs.insert(program_id.to_owned(), Arc::new(ProgramAccess { version, credentials }));
    }
}

/// One change to a program's credentials.
#[derive(Clone, Debug)]
pub enum AccessEdit {
    Create(Box<Credential>),
    Revoke { credential_id: String },
}

/// A generated first admin key, for the operator.
#[derive(Debug)]
pub struct BootstrapKey {
    pub program_id: String,
    pub api_key: String,
}

impl Access {
    /// At start: installs each program's latest credentials; a program with none stored gets the
    /// configured ones (`seeds`) as version 1, or, with none configured, a generated admin key,
    /// returned so the caller can hand it to the operator.
    pub async fn bootstrap(
        &self,
        program_ids: &[String],
        seeds: &HashMap<String, Vec<Credential>>,
        now: DateTime<Utc>,
    ) -> EngineResult<Vec<BootstrapKey>> {
        let mut generated = Vec::new();
        for program_id in program_ids {
            let mut bootstrap_key = None;
            let (latest, ours) = self
                .documents
                .bootstrap(&access_key(program_id), now, || {
                    let (credentials, author) = match seeds.get(program_id) {
                        Some(seeded) => (seeded.clone(), "file:credentials".to_owned()),
                        None => {
                            let (credential, api_key) = bootstrap_admin(program_id, now)?;
                            bootstrap_key = Some(api_key);
                            (vec![credential], "system:bootstrap".to_owned())
                        }
                    };
                    Ok(First { document: AccessDocument { credentials }, author, comment: "initial credentials".into() })
                })
                .await?;
            if ours && let Some(api_key) = bootstrap_key {
                generated.push(BootstrapKey { program_id: program_id.clone(), api_key });
            }
            if latest.version != self.version(program_id) {
                self.install(program_id, latest.version, latest.document);
                tracing::info!(program = program_id.as_str(), version = latest.version, "credentials installed");
            }
        }
        Ok(generated)
    }

    /// Brings in credential versions other engines stored (a revocation, say). Returns how many
    /// programs changed.
    pub async fn refresh(&self, program_ids: &[String]) -> EngineResult<usize> {
        let mut changed = 0;
        for program_id in program_ids {
            if let Some(latest) = self.documents.newer::<AccessDocument>(&access_key(program_id), self.version(program_id)).await? {
                self.install(program_id, latest.version, latest.document);
                tracing::info!(program = program_id.as_str(), version = latest.version, "credentials installed");
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Stores a change to a program's credentials as the next version, if `expected_version` is
    /// still the latest, and installs it.
    pub async fn change(
        &self,
        program_id: &str,
        expected_version: u64,
        edit: AccessEdit,
        author: &str,
        now: DateTime<Utc>,
    ) -> EngineResult<u64> {
        let changed = self
            .documents
            .change(&access_key(program_id), Some(expected_version), author, now, |document: Option<AccessDocument>| {
                let mut document = document.unwrap_or_default();
                let comment = apply(&mut document, edit, author, now)?;
                Ok(Edit::Write { document, comment, value: () })
            })
            .await?;
        match changed {
            Changed::Stored { version, document, .. } => {
                self.install(program_id, version, document);
                Ok(version)
            }
            Changed::Kept(()) => Ok(expected_version),
            Changed::Conflict { current } => Err(EngineError::AccessVersionConflict { program_id: program_id.to_owned(), current }),
        }
    }

    /// The notes of a program's credential versions below `before`, newest first (the audit
    /// trail), and the version to continue below.
    pub async fn history(&self, program_id: &str, before: u64, limit: usize) -> EngineResult<(Vec<VersionNote>, u64)> {
        self.documents.history(&access_key(program_id), before, limit).await
    }
}

/// A generated admin credential for a program with none configured, and its key.
fn bootstrap_admin(program_id: &str, now: DateTime<Utc>) -> EngineResult<(Credential, String)> {
    let api_key = crate::auth::keys::generate(program_id, "bootstrap-admin")
        .map_err(|error| EngineError::Internal(format!("no random source: {error}")))?;
    let credential = Credential {
        id: "bootstrap-admin".into(),
        label: "generated at first start".into(),
        scopes: vec![crate::auth::Scope::Admin],
        stores: Vec::new(),
        operations: Vec::new(),
        rate_per_second: 0,
        burst: 0,
        key_sha256: crate::auth::keys::digest(&api_key),
        client_cert_sha256: None,
        created_at: now,
        created_by: "system:bootstrap".into(),
        revoked_at: None,
        revoked_by: None,
    };
    Ok((credential, api_key))
}

/// Applies one edit to a document; returns the version's comment.
fn apply(document: &mut AccessDocument, edit: AccessEdit, author: &str, now: DateTime<Utc>) -> EngineResult<String> {
    match edit {
        AccessEdit::Create(credential) => {
            if document.get(&credential.id).is_some() {
                return Err(loyalty_core::rejection::Rejection::invalid("credential_id", "already exists in this program").into());
            }
            if document.credentials.len() >= CREDENTIALS_MAX {
                return Err(loyalty_core::rejection::Rejection::invalid(
                    "credential_id",
                    format!("a program has at most {CREDENTIALS_MAX} credentials; revoke unused ones"),
                )
                .into());
            }
            let comment = format!("created {} ({})", credential.id, scope_list(&credential));
            document.credentials.push(*credential);
            Ok(comment)
        }
        AccessEdit::Revoke { credential_id } => {
            let credential = document
                .credentials
                .iter_mut()
                .find(|credential| credential.id == credential_id)
                .ok_or_else(|| EngineError::CredentialNotFound(credential_id.clone()))?;
            if credential.revoked_at.is_none() {
                credential.revoked_at = Some(now);
                credential.revoked_by = Some(author.to_owned());
            }
            Ok(format!("revoked {credential_id}"))
        }
    }
}

fn scope_list(credential: &Credential) -> String {
    credential.scopes.iter().map(|scope| scope.as_str()).collect::<Vec<_>>().join(", ")
}
