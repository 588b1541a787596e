//! Accounts as the engine reads them: identifiers resolved to accounts (remembered, since a claimed
//! identifier never changes hands but through an erasure or a merge), per-account locks and the
//! account cache in one map, and the checks a presented identifier must pass.
//!
//! Each account has a slot: an async mutex around its cached state. Holding the slot serialises all
//! operations on one account in this process (so two tills cannot race on the same points), while
//! different accounts proceed in parallel; `DashMap` shards the map itself so that finding a slot
//! does not become the bottleneck. The cached state is replaced only after the store acknowledged
//! the write, and cleared before a write is sent, so the cache never serves a state older than the
//! last acknowledged write (a call cancelled mid-commit leaves an empty slot, which reloads).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use loyalty_core::account::AccountState;
use loyalty_core::fingerprint::Fingerprint;
use loyalty_core::identity::{IdentityKey, IdentityKind};
use loyalty_core::outcome::StoredResponse;
use loyalty_core::rejection::Rejection;
use loyalty_store::{Store, Versioned};
use tokio::sync::{Mutex, MutexGuard};

use crate::error::{EngineError, EngineResult};

/// One account's lock and cached state.
#[derive(Debug, Default)]
pub struct Slot {
    pub cached: Option<Versioned<AccountState>>,
}

/// All slots, bounded: past `capacity`, idle slots are evicted a quarter at a time.
#[derive(Debug)]
pub struct AccountSlots {
    map: DashMap<String, Arc<Mutex<Slot>>>,
    capacity: usize,
    epoch: AtomicU64,
}

impl AccountSlots {
    pub fn new(capacity: usize) -> Self {
        AccountSlots { map: DashMap::new(), capacity: capacity.max(16), epoch: AtomicU64::new(0) }
    }

    /// The slot of an account, created empty on first use.
    pub fn slot(&self, program_id: &str, account_id: &str) -> Arc<Mutex<Slot>> {
        let key = format!("{program_id}/{account_id}");
        if let Some(slot) = self.map.get(&key) {
            return Arc::clone(slot.value());
        }
        let slot = Arc::clone(self.map.entry(key).or_default().value());
        if self.map.len() > self.capacity {
            self.evict_some();
        }
        slot
    }

    /// Evicts about a quarter of the idle slots. A slot is idle when only the map holds it: the
    /// check runs under the map's shard lock, the same lock `slot` takes to hand out a clone, so a
    /// slot in use is never evicted and two callers never hold two slots of one account.
    fn evict_some(&self) {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed);
        self.map.retain(|key, slot| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut hasher);
            Arc::strong_count(slot) > 1 || !hasher.finish().wrapping_add(epoch).is_multiple_of(4)
        });
        metrics::counter!("loyalty_cache_evictions_total").increment(1);
    }
}

/// The accounts of one store: identifier bindings, slots and cache, and the checked reads every
/// call starts with. The commit that ends a call is in `commit`.
#[derive(Debug)]
pub struct Accounts {
    pub(crate) store: Arc<dyn Store>,
    slots: AccountSlots,
    /// Identifier-to-account mappings kept in memory, at most `identities_max`.
    identities: DashMap<String, String>,
    identities_max: usize,
}

impl Accounts {
    /// At most `cached_max` accounts (and as many identifiers) kept in memory.
    pub fn new(store: Arc<dyn Store>, cached_max: usize) -> Self {
        Accounts { store, slots: AccountSlots::new(cached_max), identities: DashMap::new(), identities_max: cached_max.max(16) }
    }

    /// The account bound to an identifier, from memory or the store.
    pub async fn resolve(&self, program_id: &str, key: &IdentityKey) -> EngineResult<Option<String>> {
        let cache_key = format!("{program_id}/{}", key.storage_key());
        if let Some(account_id) = self.identities.get(&cache_key) {
            return Ok(Some(account_id.clone()));
        }
        let found = self.store.identity(program_id, key).await?;
        if let Some(account_id) = &found {
            if self.identities.len() >= self.identities_max {
                self.identities.clear();
            }
            self.identities.insert(cache_key, account_id.clone());
        }
        Ok(found)
    }

    /// The account bound to an identifier, or CUSTOMER_NOT_FOUND.
    pub async fn resolve_customer(&self, program_id: &str, key: &IdentityKey) -> EngineResult<String> {
        Ok(self.resolve(program_id, key).await?.ok_or(Rejection::CustomerNotFound)?)
    }

    /// Drops a remembered identifier (released by an erasure).
    pub fn forget_identity(&self, program_id: &str, key: &IdentityKey) {
        self.identities.remove(&format!("{program_id}/{}", key.storage_key()));
    }

    /// Remembers that an identifier leads to `target` now (its account was merged into it).
    pub fn moved(&self, program_id: &str, key: &IdentityKey, target: &str) {
        self.identities.insert(format!("{program_id}/{}", key.storage_key()), target.to_owned());
    }

    /// The lock and cache of one account.
    pub fn slot(&self, program_id: &str, account_id: &str) -> Arc<Mutex<Slot>> {
        self.slots.slot(program_id, account_id)
    }

    /// The account `account_id` was merged into, if it was.
    pub async fn merged_into(&self, program_id: &str, account_id: &str) -> EngineResult<Option<String>> {
        Ok(self.store.account(program_id, account_id).await?.and_then(|stored| stored.value.merged_into))
    }

    /// The account a customer presented at the till led to: it must still hold that identifier
    /// (an erasure on another engine may have released it since this engine remembered the
    /// binding), and a card must not have been replaced (`CARD_BLOCKED`).
    pub async fn load_checked(
        &self,
        slot: &mut MutexGuard<'_, Slot>,
        program_id: &str,
        account_id: &str,
        key: &IdentityKey,
    ) -> EngineResult<Versioned<AccountState>> {
        self.load_presented(slot, program_id, account_id, key, None).await
    }

    /// [`Accounts::load_checked`] for a sale made at `sold_at` (a late receipt): a card replaced
    /// only after that sale still carries it, as it did at the till then.
    pub async fn load_presented(
        &self,
        slot: &mut MutexGuard<'_, Slot>,
        program_id: &str,
        account_id: &str,
        key: &IdentityKey,
        sold_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> EngineResult<Versioned<AccountState>> {
        let stored = self.load_bound(slot, program_id, account_id, key).await?;
        if key.kind == IdentityKind::Card
            && let Some(blocked) = stored.value.blocked_card(&key.value)
            && sold_at.is_none_or(|sold_at| sold_at >= blocked.blocked_at)
        {
            return Err(Rejection::CardBlocked { replaced_at: blocked.blocked_at }.into());
        }
        Ok(stored)
    }

    /// The account an identifier led to, which must still hold that identifier; a replaced card
    /// still finds its account here (administrators look customers up by old cards too).
    pub async fn load_bound(
        &self,
        slot: &mut MutexGuard<'_, Slot>,
        program_id: &str,
        account_id: &str,
        key: &IdentityKey,
    ) -> EngineResult<Versioned<AccountState>> {
        let stored = self.load(slot, program_id, account_id).await?.ok_or_else(|| dangling(account_id))?;
        // A card merged into a customer's account leads there from now on: remember that, and
        // have the call run again on that account (`until_committed`, `following_merges`).
        if let Some(target) = &stored.value.merged_into {
            self.moved(program_id, key, target);
            return Err(EngineError::AccountMoved);
        }
        if !stored.value.identities.contains(key) {
            self.forget_identity(program_id, key);
            return Err(Rejection::CustomerNotFound.into());
        }
        Ok(stored)
    }

    /// The account's state under its slot: cached, or read from the store and cached.
    pub async fn load(
        &self,
        slot: &mut MutexGuard<'_, Slot>,
        program_id: &str,
        account_id: &str,
    ) -> EngineResult<Option<Versioned<AccountState>>> {
        if let Some(cached) = &slot.cached {
            metrics::counter!("loyalty_cache_hits_total").increment(1);
            return Ok(Some(cached.clone()));
        }
        metrics::counter!("loyalty_cache_misses_total").increment(1);
        let stored = self.store.account(program_id, account_id).await?;
        if self.caches_accounts() {
            slot.cached = stored.clone();
        }
        Ok(stored)
    }

    /// Over a store other processes write too, a cached state may be stale, so none is kept (a
    /// stale version would only cost a lost compare-and-set, but a stale balance would be shown).
    pub(crate) fn caches_accounts(&self) -> bool {
        !self.store.shared()
    }

    /// The stored first answer to a call keyed by request ID (claimed as `key`: the ID itself, or
    /// `<kind>/<ID>`), if it was made before with the same payload; a conflict naming the caller's
    /// `request_id` if it was made with another payload, or is another kind of call.
    pub async fn replayed_request<T: TryFrom<StoredResponse, Error = StoredResponse>>(
        &self,
        program_id: &str,
        key: &str,
        request_id: &str,
        print: &Fingerprint,
    ) -> EngineResult<Option<T>> {
        let Some(record) = self.store.request(program_id, key).await? else {
            return Ok(None);
        };
        match T::try_from(record.response) {
            Ok(outcome) if record.fingerprint == *print => Ok(Some(outcome)),
            _ => Err(Rejection::IdempotencyConflict { kind: "request_id", key: request_id.to_owned() }.into()),
        }
    }
}

/// An identifier bound to an account the store does not have: a bug (or a damaged store).
pub(crate) fn dangling(account_id: &str) -> EngineError {
    EngineError::Internal(format!("identifier bound to missing account {account_id}"))
}
