//! [`MemoryStore`]: the embedded store, a sharded in-process map.

use crate::store::{BeginOutcome, Fence, IdempotencyStore, StoreError, StoredResponse};
use crate::{Clock, Fingerprint, IdempotencyKey, SystemClock};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::fmt::Write;
use std::hash::BuildHasher;
use std::time::Duration;

/// Limits of a [`MemoryStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemoryStoreConfig {
    /// Number of independently locked shards (rounded up to a power of two, at least 1).
    pub shards: usize,
    /// Most records held at once; `begin` on a new key past it answers
    /// [`StoreError::CapacityExceeded`] (which the layer turns into a 503) instead of growing.
    pub max_records: usize,
    /// How often, at most, each shard sweeps out its expired records during normal operations.
    pub sweep_interval: Duration,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self {
            shards: 64,
            max_records: 1_000_000,
            sweep_interval: Duration::from_secs(1),
        }
    }
}

/// The in-memory store: a real backend for a single process, not a test double.
///
/// Records live in sharded hash maps, each behind a `parking_lot` mutex, so `begin` on one key is
/// atomic and keys on different shards never contend. Memory is bounded: expired records are swept
/// out as the shards are used (and by [`purge_expired`](IdempotencyStore::purge_expired)), and the
/// number of live records is capped by [`MemoryStoreConfig::max_records`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use idem_core::{BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, MemoryStore, StoredResponse};
/// use std::time::Duration;
///
/// let store = MemoryStore::new();
/// let key = IdempotencyKey::parse(b"k1").unwrap();
/// let fp = Fingerprint::of_request("POST", "/orders", b"{}");
/// let BeginOutcome::Acquired { fence } = store.begin("tenant-a", &key, &fp, Duration::from_secs(30)).await.unwrap()
/// else { unreachable!() };
/// let response = StoredResponse { status: 201, headers: vec![], body: "created".into() };
/// store.complete("tenant-a", &key, fence, &response, Duration::from_secs(86_400)).await.unwrap();
/// assert_eq!(
///     store.begin("tenant-a", &key, &fp, Duration::from_secs(30)).await.unwrap(),
///     BeginOutcome::Completed(response),
/// );
/// # });
/// ```
pub struct MemoryStore<C: Clock = SystemClock> {
    shards: Box<[Mutex<Shard>]>,
    per_shard_cap: usize,
    sweep_interval: Duration,
    hasher: RandomState,
    clock: C,
}

#[derive(Default)]
struct Shard {
    records: HashMap<String, Record>,
    /// Last fence handed out in this shard; a key always maps to one shard, so fences of a key
    /// strictly increase for the life of the store.
    last_fence: u64,
    next_sweep: Duration,
}

struct Record {
    fingerprint: Fingerprint,
    fence: u64,
    state: State,
}

enum State {
    InFlight {
        lease_until: Duration,
    },
    Completed {
        response: StoredResponse,
        expires_at: Duration,
    },
}

impl Record {
    fn expired(&self, now: Duration) -> bool {
        match self.state {
            State::InFlight { lease_until } => lease_until <= now,
            State::Completed { expires_at, .. } => expires_at <= now,
        }
    }
}

impl Shard {
    fn sweep(&mut self, now: Duration) -> u64 {
        let before = self.records.len();
        self.records.retain(|_, r| !r.expired(now));
        (before - self.records.len()) as u64
    }

    fn maybe_sweep(&mut self, now: Duration, interval: Duration) {
        if now >= self.next_sweep {
            self.sweep(now);
            self.next_sweep = now + interval;
        }
    }

    /// The record of `id` if `fence` holds its live lease.
    fn held(&mut self, id: &str, fence: Fence, now: Duration) -> Result<&mut Record, StoreError> {
        match self.records.get_mut(id) {
            Some(r)
                if r.fence == fence.0
                    && matches!(r.state, State::InFlight { lease_until } if lease_until > now) =>
            {
                Ok(r)
            }
            _ => Err(StoreError::StaleFence { fence }),
        }
    }
}

impl MemoryStore<SystemClock> {
    /// A store with default limits on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::new(), MemoryStoreConfig::default())
    }
}

impl Default for MemoryStore<SystemClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> MemoryStore<C> {
    /// A store on `clock` with the limits of `config`.
    pub fn with_clock(clock: C, config: MemoryStoreConfig) -> Self {
        let shards = config.shards.max(1).next_power_of_two();
        Self {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard_cap: config.max_records.div_ceil(shards).max(1),
            sweep_interval: config.sweep_interval,
            hasher: RandomState::new(),
            clock,
        }
    }

    /// The number of records held, live or expired but not yet swept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().records.len()).sum()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The clock the store reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    fn locate(&self, scope: &str, key: &IdempotencyKey) -> (String, &Mutex<Shard>) {
        // Length-prefixing the scope keeps ("a", "bc") and ("ab", "c") apart.
        let mut id = String::with_capacity(scope.len() + key.as_str().len() + 8);
        let _ = write!(id, "{}:{scope}", scope.len());
        id.push_str(key.as_str());
        let shard = self.hasher.hash_one(&id) as usize & (self.shards.len() - 1);
        (id, &self.shards[shard])
    }
}

#[async_trait]
impl<C: Clock> IdempotencyStore for MemoryStore<C> {
    async fn begin(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<BeginOutcome, StoreError> {
        let (id, shard) = self.locate(scope, key);
        let now = self.clock.now();
        let mut shard = shard.lock();
        shard.maybe_sweep(now, self.sweep_interval);
        let at_cap = shard.records.len() >= self.per_shard_cap;
        let fence = shard.last_fence + 1;
        let fresh = Record {
            fingerprint: *fingerprint,
            fence,
            state: State::InFlight {
                lease_until: now.saturating_add(lease),
            },
        };
        match shard.records.entry(id) {
            Entry::Occupied(mut e) => {
                let r = e.get();
                if r.expired(now) {
                    e.insert(fresh);
                } else if r.fingerprint != *fingerprint {
                    return Ok(BeginOutcome::Mismatch);
                } else {
                    return Ok(match &r.state {
                        State::InFlight { lease_until } => BeginOutcome::InFlight {
                            retry_after: *lease_until - now,
                        },
                        State::Completed { response, .. } => {
                            BeginOutcome::Completed(response.clone())
                        }
                    });
                }
            }
            Entry::Vacant(e) => {
                if at_cap {
                    let id = e.into_key();
                    if shard.sweep(now) == 0 {
                        return Err(StoreError::CapacityExceeded);
                    }
                    shard.records.insert(id, fresh);
                } else {
                    e.insert(fresh);
                }
            }
        }
        shard.last_fence = fence;
        Ok(BeginOutcome::Acquired {
            fence: Fence(fence),
        })
    }

    async fn complete(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        response: &StoredResponse,
        retention: Duration,
    ) -> Result<(), StoreError> {
        let (id, shard) = self.locate(scope, key);
        let now = self.clock.now();
        let mut shard = shard.lock();
        let record = shard.held(&id, fence, now)?;
        record.state = State::Completed {
            response: response.clone(),
            expires_at: now.saturating_add(retention),
        };
        Ok(())
    }

    async fn release(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
    ) -> Result<(), StoreError> {
        let (id, shard) = self.locate(scope, key);
        let now = self.clock.now();
        let mut shard = shard.lock();
        shard.held(&id, fence, now)?;
        shard.records.remove(&id);
        Ok(())
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        Ok(self.shards.iter().map(|s| s.lock().sweep(now)).sum())
    }
}

impl<C: Clock> std::fmt::Debug for MemoryStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("per_shard_cap", &self.per_shard_cap)
            .finish_non_exhaustive()
    }
}
