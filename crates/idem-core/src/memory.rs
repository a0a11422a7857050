//! [`MemoryStore`]: the embedded store, a sharded in-process map.

use crate::store::{BeginOutcome, Fence, IdempotencyStore, StoreError, StoredResponse};
use crate::{Clock, Fingerprint, IdempotencyKey, SystemClock};
use async_trait::async_trait;
use foldhash::fast::RandomState;
use hashbrown::HashTable;
use parking_lot::Mutex;
use retry_safe_core::Shards;
use std::collections::HashMap;
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
    /// Most bytes held (keys, scopes and stored responses: status, headers, body); `begin` on a
    /// new key past it answers [`StoreError::CapacityExceeded`]. A completion may pass it by at
    /// most one response (bounded by the layer's `max_response_bytes`).
    pub max_bytes: usize,
    /// Most records one scope (tenant) may hold; its new keys past it get
    /// [`StoreError::ScopeFull`] (the layer answers that tenant 429) while other scopes keep
    /// working. `None` (the default): no share — right for one tenant, wrong for many: a
    /// multi-tenant service sets it so one tenant's flood cannot fill the store for everyone.
    pub max_records_per_scope: Option<usize>,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self {
            shards: 64,
            max_records: 1_000_000,
            sweep_interval: Duration::from_secs(1),
            max_bytes: 512 << 20,
            max_records_per_scope: None,
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
/// let response = StoredResponse { status: 201, headers: vec![], body: "created".into(), trailers: vec![] };
/// store.complete("tenant-a", &key, fence, &response, Duration::from_secs(86_400)).await.unwrap();
/// assert_eq!(
///     store.begin("tenant-a", &key, &fp, Duration::from_secs(30)).await.unwrap(),
///     BeginOutcome::Completed(response),
/// );
/// # });
/// ```
pub struct MemoryStore<C: Clock = SystemClock> {
    shards: Shards<Shard>,
    per_shard_cap: usize,
    per_shard_bytes: usize,
    per_shard_scope_cap: Option<usize>,
    sweep_interval: Duration,
    hasher: RandomState,
    clock: C,
}

#[derive(Default)]
struct Shard {
    /// Records by id (`<len>:<scope><key>`, always UTF-8 as built from two `&str`; kept as bytes
    /// so a lookup never re-validates it), placed by the id's hash that also chose the shard: an
    /// id is hashed once per operation.
    records: HashTable<Entry>,
    /// Bytes held by `records`.
    bytes: usize,
    /// Records per scope, when scopes have a share.
    per_scope: HashMap<Box<[u8]>, usize, RandomState>,
    /// Last fence handed out in this shard; a key always maps to one shard, so fences of a key
    /// strictly increase for the life of the store.
    last_fence: u64,
    next_sweep: Duration,
}

struct Entry {
    id: Box<[u8]>,
    record: Record,
}

struct Record {
    fingerprint: Fingerprint,
    fence: u64,
    state: State,
    /// The length of the scope inside the record's id (`<len>:<scope><key>`).
    scope_len: usize,
}

/// The scope of a record id (`<len>:<scope><key>`).
fn scope_of(id: &[u8], scope_len: usize) -> &[u8] {
    let start = id.iter().position(|&b| b == b':').map_or(0, |i| i + 1);
    id.get(start..start + scope_len).unwrap_or_default()
}

fn response_bytes(response: &StoredResponse) -> usize {
    response.body.len()
        + response
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>()
        + 16
}

impl Record {
    /// The bytes this record holds beside its id.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Record>()
            + match &self.state {
                State::InFlight { .. } => 0,
                State::Completed { response, .. } => response_bytes(response),
            }
    }
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
    /// Whether `fence` holds this record's live lease.
    fn held_by(&self, fence: Fence, now: Duration) -> bool {
        self.fence == fence.0
            && matches!(self.state, State::InFlight { lease_until } if lease_until > now)
    }

    fn expired(&self, now: Duration) -> bool {
        match self.state {
            State::InFlight { lease_until } => lease_until <= now,
            State::Completed { expires_at, .. } => expires_at <= now,
        }
    }

    /// What a `begin` with `fingerprint` finds in this live record.
    fn outcome_for(&self, fingerprint: &Fingerprint, now: Duration) -> BeginOutcome {
        if self.fingerprint != *fingerprint {
            return BeginOutcome::Mismatch;
        }
        match &self.state {
            State::InFlight { lease_until } => BeginOutcome::InFlight {
                retry_after: *lease_until - now,
            },
            State::Completed { response, .. } => BeginOutcome::Completed(response.clone()),
        }
    }
}

impl Shard {
    fn sweep(&mut self, now: Duration) -> u64 {
        let before = self.records.len();
        let (mut freed, per_scope) = (0, &mut self.per_scope);
        self.records.retain(|Entry { id, record: r }| {
            if !r.expired(now) {
                return true;
            }
            freed += id.len() + r.bytes();
            forget_scope(per_scope, scope_of(id, r.scope_len));
            false
        });
        self.bytes = self.bytes.saturating_sub(freed);
        (before - self.records.len()) as u64
    }

    /// Accounts for a record that leaves the shard (released, replaced).
    fn forget(&mut self, id: &[u8], record: &Record) {
        self.bytes = self.bytes.saturating_sub(id.len() + record.bytes());
        forget_scope(&mut self.per_scope, scope_of(id, record.scope_len));
    }

    fn maybe_sweep(&mut self, now: Duration, interval: Duration) {
        if now >= self.next_sweep {
            self.sweep(now);
            self.next_sweep = now + interval;
        }
    }

    fn scope_count(&self, scope: &[u8]) -> usize {
        self.per_scope.get(scope).copied().unwrap_or(0)
    }

    /// The record of `id` if `fence` holds its live lease.
    fn held(
        &mut self,
        id: &[u8],
        hash: u64,
        fence: Fence,
        now: Duration,
    ) -> Result<&mut Record, StoreError> {
        match self.records.find_mut(hash, |e| *e.id == *id) {
            Some(Entry { record: r, .. }) if r.held_by(fence, now) => Ok(r),
            _ => Err(StoreError::StaleFence { fence }),
        }
    }
}

fn forget_scope(per_scope: &mut HashMap<Box<[u8]>, usize, RandomState>, scope: &[u8]) {
    if let Some(n) = per_scope.get_mut(scope) {
        *n -= 1;
        if *n == 0 {
            per_scope.remove(scope);
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
        let shards = Shards::new(config.shards, Shard::default);
        let n = shards.len();
        Self {
            shards,
            per_shard_cap: config.max_records.div_ceil(n).max(1),
            per_shard_bytes: config.max_bytes.div_ceil(n).max(1),
            per_shard_scope_cap: config
                .max_records_per_scope
                .map(|cap| cap.div_ceil(n).max(1)),
            sweep_interval: config.sweep_interval,
            hasher: RandomState::default(),
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

    /// The record id of (`scope`, `key`) and its shard. Length-prefixing the scope keeps
    /// ("a", "bc") and ("ab", "c") apart. The id is written into `buf` when it fits (no
    /// allocation), else into `spill`; a new record takes an owned copy.
    fn locate<'a>(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        buf: &'a mut [u8; 256],
        spill: &'a mut Vec<u8>,
    ) -> (&'a [u8], u64, &Mutex<Shard>) {
        let mut digits = itoa::Buffer::new();
        let parts = [digits.format(scope.len()), ":", scope, key.as_str()];
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let id: &[u8] = if total <= buf.len() {
            let mut at = 0;
            for part in parts {
                buf[at..at + part.len()].copy_from_slice(part.as_bytes());
                at += part.len();
            }
            &buf[..total]
        } else {
            parts
                .iter()
                .for_each(|p| spill.extend_from_slice(p.as_bytes()));
            spill
        };
        let hash = self.hasher.hash_one(id);
        (id, hash, self.shards.of(hash))
    }

    fn rehash(&self) -> impl Fn(&Entry) -> u64 + '_ {
        move |e| self.hasher.hash_one(&*e.id)
    }

    /// [`begin`](IdempotencyStore::begin), in place: the store never waits for I/O, so the
    /// layer calls this through [`IdempotencyStore::begin_now`] without boxing a future.
    fn begin_sync(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<BeginOutcome, StoreError> {
        let (mut buf, mut spill) = ([0u8; 256], Vec::new());
        let (id, hash, shard) = self.locate(scope, key, &mut buf, &mut spill);
        let now = self.clock.now();
        let mut shard = shard.lock();
        shard.maybe_sweep(now, self.sweep_interval);
        let fence = shard.last_fence + 1;
        let fresh = Record {
            fingerprint: *fingerprint,
            fence,
            state: State::InFlight {
                lease_until: now.saturating_add(lease),
            },
            scope_len: scope.len(),
        };
        let shard = &mut *shard;
        if let Some(Entry { record: r, .. }) = shard.records.find_mut(hash, |e| *e.id == *id) {
            if !r.expired(now) {
                return Ok(r.outcome_for(fingerprint, now));
            }
            // An expired record of this key: taken over in place (its id, its scope's count
            // and its slot in the map stay; only what it held beside them goes).
            shard.bytes = shard.bytes.saturating_sub(r.bytes()) + fresh.bytes();
            *r = fresh;
            shard.last_fence = fence;
            return Ok(BeginOutcome::Acquired {
                fence: Fence(fence),
            });
        }
        self.make_room(shard, scope, now)?;
        shard.bytes += id.len() + fresh.bytes();
        if self.per_shard_scope_cap.is_some() {
            match shard.per_scope.get_mut(scope.as_bytes()) {
                Some(n) => *n += 1,
                None => {
                    shard.per_scope.insert(scope.as_bytes().into(), 1);
                }
            }
        }
        shard.records.insert_unique(
            hash,
            Entry {
                id: id.into(),
                record: fresh,
            },
            self.rehash(),
        );
        shard.last_fence = fence;
        Ok(BeginOutcome::Acquired {
            fence: Fence(fence),
        })
    }

    /// Room for a new record of `scope` in `shard`: within the shard's count and bytes and the
    /// scope's share, sweeping expired records first when it is not.
    fn make_room(&self, shard: &mut Shard, scope: &str, now: Duration) -> Result<(), StoreError> {
        let full =
            |s: &Shard| s.records.len() >= self.per_shard_cap || s.bytes >= self.per_shard_bytes;
        if full(shard) && (shard.sweep(now) == 0 || full(shard)) {
            return Err(StoreError::CapacityExceeded);
        }
        if let Some(cap) = self.per_shard_scope_cap {
            if shard.scope_count(scope.as_bytes()) >= cap {
                shard.sweep(now);
                if shard.scope_count(scope.as_bytes()) >= cap {
                    return Err(StoreError::ScopeFull);
                }
            }
        }
        Ok(())
    }

    /// [`complete`](IdempotencyStore::complete), in place (see [`begin_sync`](Self::begin_sync)).
    fn complete_sync(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        response: &StoredResponse,
        retention: Duration,
    ) -> Result<(), StoreError> {
        let (mut buf, mut spill) = ([0u8; 256], Vec::new());
        let (id, hash, shard) = self.locate(scope, key, &mut buf, &mut spill);
        let now = self.clock.now();
        let mut shard = shard.lock();
        let record = shard.held(id, hash, fence, now)?;
        record.state = State::Completed {
            response: response.clone(),
            expires_at: now.saturating_add(retention),
        };
        shard.bytes += response_bytes(response);
        Ok(())
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
        self.begin_sync(scope, key, fingerprint, lease)
    }

    fn begin_now(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Option<Result<BeginOutcome, StoreError>> {
        Some(self.begin_sync(scope, key, fingerprint, lease))
    }

    async fn complete(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        response: &StoredResponse,
        retention: Duration,
    ) -> Result<(), StoreError> {
        self.complete_sync(scope, key, fence, response, retention)
    }

    fn complete_now(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        response: &StoredResponse,
        retention: Duration,
    ) -> Option<Result<(), StoreError>> {
        Some(self.complete_sync(scope, key, fence, response, retention))
    }

    async fn release(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
    ) -> Result<(), StoreError> {
        let (mut buf, mut spill) = ([0u8; 256], Vec::new());
        let (id, hash, shard) = self.locate(scope, key, &mut buf, &mut spill);
        let now = self.clock.now();
        let mut shard = shard.lock();
        // One probe: the entry found is checked and removed in place.
        match shard.records.find_entry(hash, |e| *e.id == *id) {
            Ok(found) if found.get().record.held_by(fence, now) => {
                let (old, _) = found.remove();
                shard.forget(&old.id, &old.record);
                Ok(())
            }
            _ => Err(StoreError::StaleFence { fence }),
        }
    }

    async fn renew(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let (mut buf, mut spill) = ([0u8; 256], Vec::new());
        let (id, hash, shard) = self.locate(scope, key, &mut buf, &mut spill);
        let now = self.clock.now();
        let mut shard = shard.lock();
        let record = shard.held(id, hash, fence, now)?;
        record.state = State::InFlight {
            lease_until: now.saturating_add(lease),
        };
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
