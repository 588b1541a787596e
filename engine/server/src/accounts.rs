//! Per-account locks and the account cache, in one map.
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
use loyalty_store::Versioned;
use tokio::sync::Mutex;

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
