//! Versioned documents: a program's rules, its credentials and a sandbox program's test clock are
//! each a JSON document kept in the store's versioned rows under its own key (`<program>`,
//! `<program>#access`, `<program>#clock`; `#` is not allowed in program IDs). Version N+1 is
//! written only over N (a compare-and-set in the store), so two engines changing one document at
//! once never lose a change: one wins, the other re-reads. The store is the source of truth and
//! memory follows it: each owner installs what it reads here, at start and on every refresh.
//!
//! This is the one implementation of reading, bootstrapping, refreshing and changing them; what a
//! document holds and what a change means is its owner's (`rule_admin`, `auth::registry`,
//! `sandbox`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use loyalty_store::{Store, StoredRules};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{EngineError, EngineResult};

/// The versioned documents of one store.
#[derive(Clone, Debug)]
pub struct Documents {
    store: Arc<dyn Store>,
}

/// One stored version, decoded.
#[derive(Clone, Debug)]
pub struct Version<D> {
    pub version: u64,
    pub document: D,
    pub created_at: DateTime<Utc>,
    pub author: String,
    pub comment: String,
}

/// A version as the audit trail lists it: who stored it, when and why (not its document).
#[derive(Clone, Debug)]
pub struct VersionNote {
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub author: String,
    pub comment: String,
}

/// What a change makes of the latest version.
#[derive(Debug)]
pub enum Edit<D, T> {
    /// Store `document` as the next version, noted with `comment`, and answer `value`.
    Write { document: D, comment: String, value: T },
    /// Store nothing (a retry of a change already made, say) and answer `value`.
    Keep(T),
}

/// How a change ended.
#[derive(Debug)]
pub enum Changed<D, T> {
    /// Stored as `version`.
    Stored { version: u64, document: D, value: T },
    /// Nothing to store.
    Kept(T),
    /// The latest version is `current`, not the one the change was made against: re-read, retry.
    Conflict { current: u64 },
}

/// The first version of a document, for a key with none.
#[derive(Debug)]
pub struct First<D> {
    pub document: D,
    pub author: String,
    pub comment: String,
}

impl Documents {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Documents { store }
    }

    /// The latest version's number (0: none), without the document: what refreshes poll.
    pub async fn head(&self, key: &str) -> EngineResult<u64> {
        Ok(self.store.rules_head(key).await?)
    }

    /// The latest version, decoded.
    pub async fn latest<D: DeserializeOwned>(&self, key: &str) -> EngineResult<Option<Version<D>>> {
        self.store.latest_rules(key).await?.map(|stored| decode(key, stored)).transpose()
    }

    /// One version, decoded.
    pub async fn at<D: DeserializeOwned>(&self, key: &str, version: u64) -> EngineResult<Option<Version<D>>> {
        self.store.rules_version(key, version).await?.map(|stored| decode(key, stored)).transpose()
    }

    /// One version's note (who, when, why), without decoding its document.
    pub async fn note_at(&self, key: &str, version: u64) -> EngineResult<Option<VersionNote>> {
        Ok(self.store.rules_version(key, version).await?.map(|stored| VersionNote {
            version: stored.version,
            created_at: stored.created_at,
            author: stored.author,
            comment: stored.comment,
        }))
    }

    /// The latest version if it is newer than `installed` (the document is read only then).
    pub async fn newer<D: DeserializeOwned>(&self, key: &str, installed: u64) -> EngineResult<Option<Version<D>>> {
        if self.head(key).await? <= installed {
            return Ok(None);
        }
        Ok(self.latest(key).await?.filter(|latest| latest.version > installed))
    }

    /// The latest version, storing `first()` as version 1 when the key has none. True when this
    /// call stored version 1 (another engine starting at the same time may have stored its own
    /// first: then false, and the latest is theirs).
    pub async fn bootstrap<D: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        now: DateTime<Utc>,
        first: impl FnOnce() -> EngineResult<First<D>>,
    ) -> EngineResult<(Version<D>, bool)> {
        let mut ours = false;
        if self.head(key).await? == 0 {
            let First { document, author, comment } = first()?;
            ours = self
                .store
                .put_rules(key, StoredRules { version: 1, document: encode(&document)?, created_at: now, author, comment })
                .await?;
        }
        let latest =
            self.latest(key).await?.ok_or_else(|| EngineError::Internal(format!("document {key} vanished after its first version")))?;
        Ok((latest, ours))
    }

    /// Reads the latest version, lets `edit` decide on it (`None`: none stored yet), and stores
    /// what it writes as the next version if no other version was stored meanwhile. With
    /// `expected`, a change made against another version than the latest is a conflict at once.
    pub async fn change<D, T>(
        &self,
        key: &str,
        expected: Option<u64>,
        author: &str,
        now: DateTime<Utc>,
        edit: impl FnOnce(Option<D>) -> EngineResult<Edit<D, T>>,
    ) -> EngineResult<Changed<D, T>>
    where
        D: Serialize + DeserializeOwned,
    {
        let latest = self.latest::<D>(key).await?;
        let current = latest.as_ref().map_or(0, |latest| latest.version);
        if expected.is_some_and(|expected| expected != current) {
            return Ok(Changed::Conflict { current });
        }
        let (document, comment, value) = match edit(latest.map(|latest| latest.document))? {
            Edit::Keep(value) => return Ok(Changed::Kept(value)),
            Edit::Write { document, comment, value } => (document, comment, value),
        };
        let next = StoredRules { version: current + 1, document: encode(&document)?, created_at: now, author: author.to_owned(), comment };
        if !self.store.put_rules(key, next).await? {
            return Ok(Changed::Conflict { current: self.head(key).await? });
        }
        Ok(Changed::Stored { version: current + 1, document, value })
    }

    /// Up to `limit` versions' notes below version `before`, newest first, and the version to
    /// continue below (1 or less: none left).
    pub async fn history(&self, key: &str, before: u64, limit: usize) -> EngineResult<(Vec<VersionNote>, u64)> {
        let mut version = self.head(key).await?.min(before.saturating_sub(1));
        let mut notes = Vec::new();
        let mut taken = 0;
        while version >= 1 && taken < limit {
            notes.extend(self.note_at(key, version).await?);
            taken += 1;
            version -= 1;
        }
        Ok((notes, version + 1))
    }
}

fn decode<D: DeserializeOwned>(key: &str, stored: StoredRules) -> EngineResult<Version<D>> {
    let document = serde_json::from_str(&stored.document)
        .map_err(|error| EngineError::Internal(format!("stored document {key} version {} unreadable: {error}", stored.version)))?;
    Ok(Version { version: stored.version, document, created_at: stored.created_at, author: stored.author, comment: stored.comment })
}

fn encode<D: Serialize>(document: &D) -> EngineResult<String> {
    serde_json::to_string(document).map_err(|error| EngineError::Internal(error.to_string()))
}
