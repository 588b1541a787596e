//! The credentials every engine checks calls against: each program's access document, kept in the
//! store as versions (N+1 written only over N, like rules) and in memory for the per-call check.
//!
//! The store is the source of truth. A change through this engine (create, revoke) is stored, then
//! installed at once; other engines pick it up on their refresh (`rules_refresh_ms`), so a revoked
//! key stops working everywhere within seconds and with no restart. The first version comes from
//! the configured credentials file, or, for a program with none, a generated admin key written to
//! a file only the engine's user can read.
//!
//! The documents live in the store's versioned-document rows under the key `<program>#access`:
//! `#` is not allowed in program IDs, so it can never meet a program's rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use dashmap::DashMap;
use loyalty_store::StoredRules;

use crate::auth::credential::{AccessDocument, CREDENTIALS_MAX, Credential};
use crate::auth::gate::RateDefaults;
use crate::engine::Engine;
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

/// Every program's installed credentials, and the rate of credentials that set none.
#[derive(Debug)]
pub struct Access {
    programs: DashMap<String, Arc<ProgramAccess>>,
    rate_per_second_default: AtomicU32,
    burst_default: AtomicU32,
}

impl Default for Access {
    fn default() -> Self {
        let defaults = crate::auth::seed::SecurityConfig::default();
        Access {
            programs: DashMap::new(),
            rate_per_second_default: AtomicU32::new(defaults.rate_per_second_default),
            burst_default: AtomicU32::new(defaults.burst_default),
        }
    }
}

impl Access {
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

fn decode(program_id: &str, stored: &StoredRules) -> EngineResult<AccessDocument> {
    serde_json::from_str(&stored.document).map_err(|error| {
        EngineError::Internal(format!("program {program_id}: stored access version {} unreadable: {error}", stored.version))
    })
}

fn encode(document: &AccessDocument) -> EngineResult<String> {
    serde_json::to_string(document).map_err(|error| EngineError::Internal(error.to_string()))
}

impl Engine {
    /// At start: installs each program's latest credentials; a program with none stored gets the
    /// configured ones (`seeds`) as version 1, or, with none configured, a generated admin key,
    /// returned so the caller can hand it to the operator.
    pub async fn bootstrap_access(&self, seeds: &HashMap<String, Vec<Credential>>) -> EngineResult<Vec<BootstrapKey>> {
        let mut generated = Vec::new();
        for program_id in self.programs().ids() {
            let key = access_key(&program_id);
            if self.store().latest_rules(&key).await?.is_none() {
                let (credentials, author, bootstrap) = match seeds.get(&program_id) {
                    Some(seeded) => (seeded.clone(), "file:credentials".to_owned(), None),
                    None => {
                        let api_key = crate::auth::keys::generate(&program_id, "bootstrap-admin")
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
                            created_at: self.now(),
                            created_by: "system:bootstrap".into(),
                            revoked_at: None,
                            revoked_by: None,
                        };
                        (vec![credential], "system:bootstrap".to_owned(), Some(api_key))
                    }
                };
                let first = StoredRules {
                    version: 1,
                    document: encode(&AccessDocument { credentials })?,
                    created_at: self.now(),
                    author,
                    comment: "initial credentials".into(),
                };
                // Another engine starting at the same time may store version 1 first: use theirs.
                if self.store().put_rules(&key, first).await?
                    && let Some(api_key) = bootstrap
                {
                    generated.push(BootstrapKey { program_id: program_id.clone(), api_key });
                }
            }
            self.refresh_program_access(&program_id).await?;
        }
        Ok(generated)
    }

    async fn refresh_program_access(&self, program_id: &str) -> EngineResult<bool> {
        let key = access_key(program_id);
        let head = self.store().rules_head(&key).await?;
        if head == self.access().version(program_id) {
            return Ok(false);
        }
        let stored = self.store().latest_rules(&key).await?.ok_or_else(|| EngineError::Internal("access document vanished".into()))?;
        self.access().install(program_id, stored.version, decode(program_id, &stored)?);
        tracing::info!(program = program_id, version = stored.version, "credentials installed");
        Ok(true)
    }

    /// Brings in credential versions other engines stored (a revocation, say). Returns how many
    /// programs changed.
    pub async fn refresh_access(&self) -> EngineResult<usize> {
        let mut changed = 0;
        for program_id in self.programs().ids() {
            changed += usize::from(self.refresh_program_access(&program_id).await?);
        }
        Ok(changed)
    }

    /// Stores a change to a program's credentials as the next version, if `expected_version` is
    /// still the latest, and installs it.
    pub async fn change_access(&self, program_id: &str, expected_version: u64, edit: AccessEdit, author: &str) -> EngineResult<u64> {
        let key = access_key(program_id);
        let stored = self.store().latest_rules(&key).await?;
        let current = stored.as_ref().map_or(0, |stored| stored.version);
        if current != expected_version {
            return Err(EngineError::AccessVersionConflict { program_id: program_id.to_owned(), current });
        }
        let mut document = match &stored {
            Some(stored) => decode(program_id, stored)?,
            None => AccessDocument::default(),
        };
        let comment = match edit {
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
                comment
            }
            AccessEdit::Revoke { credential_id } => {
                let now = self.now();
                let credential = document
                    .credentials
                    .iter_mut()
                    .find(|credential| credential.id == credential_id)
                    .ok_or_else(|| EngineError::CredentialNotFound(credential_id.clone()))?;
                if credential.revoked_at.is_none() {
                    credential.revoked_at = Some(now);
                    credential.revoked_by = Some(author.to_owned());
                }
                format!("revoked {credential_id}")
            }
        };
        let next =
            StoredRules { version: current + 1, document: encode(&document)?, created_at: self.now(), author: author.to_owned(), comment };
        if !self.store().put_rules(&key, next).await? {
            let current = self.store().rules_head(&key).await?;
            return Err(EngineError::AccessVersionConflict { program_id: program_id.to_owned(), current });
        }
        self.access().install(program_id, current + 1, document);
        Ok(current + 1)
    }
}

fn scope_list(credential: &Credential) -> String {
    credential.scopes.iter().map(|scope| scope.as_str()).collect::<Vec<_>>().join(", ")
}
