//! One limit per key, in memory.

use crate::gcra::{CostExceedsBurst, Decision, Quotas};
use crate::quota::MAX_QUOTAS;
use crate::{Clock, SystemClock};
use hashbrown::HashTable;
use parking_lot::Mutex;
use retry_safe_core::Shards;
use std::hash::{BuildHasher, Hash};

/// Shards of a [`KeyedLimiter`] unless told otherwise.
pub(crate) const DEFAULT_SHARDS: usize = 64;

/// A shard sweeps its idle keys when it grows past this many keys (and then past twice the keys
/// that stayed).
const FIRST_SWEEP: usize = 1024;

/// A limiter with one limit per key: a user id, an API key, a client IP.
///
/// Keys live in a sharded hash map; each key holds one TAT per quota (8 bytes each). A key whose
/// every TAT has passed is exactly a full bucket, so it is dropped: a shard sweeps its idle keys
/// whenever it has doubled since its last sweep (amortized, inside `check`), and
/// [`retain_recent`](Self::retain_recent) sweeps every shard and gives the memory back, for a
/// periodic task. Memory therefore follows the keys active within one burst window, not every key
/// ever seen.
///
/// ```
/// use ratelimit_token_bucket::{ManualClock, KeyedLimiter, Quota, Quotas};
///
/// let limiter = KeyedLimiter::with_clock(Quotas::new([Quota::per_minute(2)]).unwrap(), ManualClock::new());
/// assert!(limiter.check(&"alice", 1).unwrap().is_allowed());
/// assert!(limiter.check(&"alice", 1).unwrap().is_allowed());
/// assert!(!limiter.check(&"alice", 1).unwrap().is_allowed());
/// assert!(limiter.check(&"bob", 1).unwrap().is_allowed()); // every key has its own bucket
/// ```
pub struct KeyedLimiter<K, C = SystemClock> {
    quotas: Quotas,
    clock: C,
    hasher: foldhash::fast::RandomState,
    shards: Shards<Shard<K>>,
}

struct Shard<K> {
    table: HashTable<(K, [u64; MAX_QUOTAS])>,
    sweep_at: usize,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K, SystemClock> {
    /// A limiter on the monotonic clock.
    pub fn new(quotas: Quotas) -> Self {
        Self::with_clock(quotas, SystemClock::new())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedLimiter<K, C> {
    /// A limiter on `clock`, with 64 shards.
    pub fn with_clock(quotas: Quotas, clock: C) -> Self {
        Self::with_shards(quotas, clock, DEFAULT_SHARDS)
    }

    /// A limiter on `clock` with `shards` shards (rounded up to a power of two, at least 1).
    pub fn with_shards(quotas: Quotas, clock: C, shards: usize) -> Self {
        let shards = Shards::new(shards, || Shard {
            table: HashTable::new(),
            sweep_at: FIRST_SWEEP,
        });
        Self {
            quotas,
            clock,
            hasher: foldhash::fast::RandomState::default(),
            shards,
        }
    }

    /// The quotas enforced per key.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// The limiter's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Decides one request of `cost` for `key` now, counting it if it passes.
    #[inline]
    pub fn check(&self, key: &K, cost: u32) -> Result<Decision, CostExceedsBurst> {
        let now = self.clock.now_nanos();
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard(hash).lock();
        if let Some((_, tats)) = shard.table.find_mut(hash, |(k, _)| k == key) {
            return self.quotas.decide(&mut tats[..], now, cost);
        }
        let mut tats = [0; MAX_QUOTAS];
        let decision = self.quotas.decide(&mut tats[..], now, cost)?;
        if decision.is_allowed() && tats.iter().any(|&t| t > now) {
            if shard.table.len() >= shard.sweep_at {
                shard.sweep(now, &self.hasher);
            }
            let hasher = &self.hasher;
            shard
                .table
                .insert_unique(hash, (key.clone(), tats), |(k, _)| hasher.hash_one(k));
        }
        Ok(decision)
    }

    /// Drops every idle key (one whose bucket is full again) and returns unused memory to the
    /// allocator. Cheap to call from a periodic task; `check` does the same shard by shard as
    /// shards grow.
    pub fn retain_recent(&self) {
        let now = self.clock.now_nanos();
        for shard in self.shards.iter() {
            shard.lock().sweep(now, &self.hasher);
        }
    }

    /// Keys currently held (idle keys not yet swept included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().table.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Mutex<Shard<K>> {
        self.shards.of(hash)
    }
}

impl<K: Hash> Shard<K> {
    fn sweep(&mut self, now: u64, hasher: &foldhash::fast::RandomState) {
        self.table.retain(|(_, tats)| tats.iter().any(|&t| t > now));
        self.table.shrink_to_fit(|(k, _)| hasher.hash_one(k));
        self.sweep_at = (self.table.len() * 2).max(FIRST_SWEEP);
    }
}

impl<K, C> std::fmt::Debug for KeyedLimiter<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("quotas", &self.quotas)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}
