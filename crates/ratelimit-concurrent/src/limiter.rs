//! The in-memory keyed limiter: permits, bounded waiting, per-key state that disappears when idle.

use crate::adaptive::Vegas;
use crate::Clock;
use hashbrown::HashTable;
use parking_lot::Mutex;
use retry_safe_core::Shards;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const SHARDS: usize = 64;

/// A configuration that cannot be enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A cap of zero requests in flight: nothing could ever run.
    #[error("the cap on requests in flight must be at least 1")]
    ZeroCap,
}

/// Why a request was not given a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The key is at its cap and the limiter does not queue.
    Full,
    /// The key is at its cap and its wait queue is full too.
    QueueFull,
    /// The request waited its maximum time without a permit becoming free.
    TimedOut,
}

/// A request refused because its key has too many requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{in_flight} requests of this key are in flight (cap {max}): {reason:?}")]
#[non_exhaustive]
pub struct Limited {
    /// Why.
    pub reason: Reason,
    /// Requests of the key in flight when it was refused.
    pub in_flight: u32,
    /// The cap at that moment.
    pub max: u32,
    /// When to try again (the limiter's retry hint, for `Retry-After`).
    pub retry_after: Duration,
}

/// Why no permit was given: the key is at its cap, or (a fleet limiter) its backend failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is at its cap (429).
    #[error(transparent)]
    Limited(#[from] Limited),
    /// The shared backend failed: unavailable (503 when failing closed; failing open hands out
    /// a local permit instead), misconfigured or holding unreadable state (500 under any mode).
    #[error("the concurrency limiter's backend failed")]
    Backend(#[from] retry_safe_core::BackendError),
}

/// A per-key cap on requests in flight: "at most 20 requests of one API key at the same time".
///
/// [`try_acquire`](Self::try_acquire) answers at once; [`acquire`](Self::acquire) waits up to the
/// configured bound in a per-key queue of bounded length (never an unbounded queue). A [`Permit`]
/// frees its slot when dropped — when the request completes, fails, panics or is cancelled. A
/// key's state exists only while it has requests in flight or waiting, so memory follows the
/// keys active right now.
///
/// ```
/// use ratelimit_concurrent::ConcurrencyLimiter;
///
/// let limiter = ConcurrencyLimiter::new(2).unwrap();
/// let a = limiter.try_acquire(&"api-key-1").unwrap();
/// let b = limiter.try_acquire(&"api-key-1").unwrap();
/// assert!(limiter.try_acquire(&"api-key-1").is_err()); // a third one in flight: refused
/// assert!(limiter.try_acquire(&"api-key-2").is_ok());  // other keys are independent
/// drop(a);
/// assert!(limiter.try_acquire(&"api-key-1").is_ok());
/// # drop(b);
/// ```
pub struct ConcurrencyLimiter<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for ConcurrencyLimiter<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K> std::fmt::Debug for ConcurrencyLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimiter")
            .field("max_in_flight", &self.inner.cap.load(Ordering::Relaxed))
            .field("max_waiters", &self.inner.max_waiters)
            .field("max_wait", &self.inner.max_wait)
            .finish_non_exhaustive()
    }
}

struct Inner<K> {
    shards: Shards<Shard<K>>,
    hasher: foldhash::fast::RandomState,
    cap: AtomicU32,
    max_waiters: u32,
    max_wait: Duration,
    retry_hint: Duration,
    adaptive: Option<Adaptive>,
}

struct Adaptive {
    vegas: Mutex<Vegas>,
    clock: Box<dyn Clock>,
}

struct Shard<K> {
    table: HashTable<Slot<K>>,
    /// Slot ids: a permit finds its slot again by (hash, id), without keeping a copy of the key.
    next_id: u64,
}

struct Slot<K> {
    key: K,
    hash: u64,
    id: u64,
    in_flight: u32,
    waiters: u32,
    notify: Option<Arc<Notify>>,
}

impl<K: Hash + Eq + Clone + Send + 'static> ConcurrencyLimiter<K> {
    /// A limiter allowing `max_in_flight` requests per key at once, refusing the excess at once.
    pub fn new(max_in_flight: u32) -> Result<Self, ConfigError> {
        if max_in_flight == 0 {
            return Err(ConfigError::ZeroCap);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                shards: Shards::new(SHARDS, || Shard {
                    table: HashTable::new(),
                    next_id: 0,
                }),
                hasher: foldhash::fast::RandomState::default(),
                cap: AtomicU32::new(max_in_flight),
                max_waiters: 0,
                max_wait: Duration::ZERO,
                retry_hint: Duration::from_secs(1),
                adaptive: None,
            }),
        })
    }

    /// Lets [`acquire`](Self::acquire) wait up to `max_wait` for a permit, with at most
    /// `max_waiters` requests of one key waiting (the next one is refused at once).
    pub fn queue(mut self, max_waiters: u32, max_wait: Duration) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("configure the limiter before cloning it");
        inner.max_waiters = max_waiters;
        inner.max_wait = max_wait;
        self
    }

    /// The `retry_after` hint given with refusals (default 1 s).
    pub fn retry_hint(mut self, after: Duration) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("configure the limiter before cloning it");
        inner.retry_hint = after;
        self
    }

    /// Adapts the cap (shared by every key) from observed latency with `vegas`, timing each
    /// permit on `clock` from acquisition to release. The starting cap is the controller's.
    pub fn adaptive(mut self, vegas: Vegas, clock: impl Clock) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("configure the limiter before cloning it");
        inner.cap.store(vegas.limit(), Ordering::Relaxed);
        inner.adaptive = Some(Adaptive {
            vegas: Mutex::new(vegas),
            clock: Box::new(clock),
        });
        self
    }

    /// The cap on requests in flight per key, as it is now.
    pub fn max_in_flight(&self) -> u32 {
        self.inner.cap.load(Ordering::Relaxed)
    }

    /// Requests of `key` in flight now.
    pub fn in_flight(&self, key: &K) -> u32 {
        let hash = self.inner.hasher.hash_one(key);
        let shard = self.inner.shard(hash).lock();
        shard
            .table
            .find(hash, |s| s.key == *key)
            .map_or(0, |s| s.in_flight)
    }

    /// Keys with requests in flight or waiting (the limiter holds state for these only).
    pub fn active_keys(&self) -> usize {
        self.inner.shards.iter().map(|s| s.lock().table.len()).sum()
    }

    /// Whether a full key's requests wait in a queue (see [`queue`](Self::queue)).
    #[inline]
    pub(crate) fn queues(&self) -> bool {
        self.inner.max_waiters > 0 && !self.inner.max_wait.is_zero()
    }

    /// A permit for `key` if it is below its cap, else [`Limited`] at once.
    #[inline]
    pub fn try_acquire(&self, key: &K) -> Result<Permit<'_, K>, Limited> {
        let hash = self.inner.hasher.hash_one(key);
        match self.inner.acquire_or_enqueue(key, hash, false) {
            Ok((id, in_flight)) => Ok(self.permit(hash, id, in_flight)),
            Err(Enqueue::Refused(limited)) => Err(limited),
            Err(Enqueue::Queued(..)) => unreachable!("no queueing was asked for"),
        }
    }

    /// A permit for `key`, waiting for one up to the configured bound (see
    /// [`queue`](Self::queue)); without a queue it answers as [`try_acquire`](Self::try_acquire).
    /// Waiting runs on tokio's clock, so paused time drives it in tests. Dropping the future
    /// leaves the queue.
    pub async fn acquire(&self, key: &K) -> Result<Permit<'_, K>, Limited> {
        let hash = self.inner.hasher.hash_one(key);
        let (id, notify) = match self.inner.acquire_or_enqueue(key, hash, self.queues()) {
            Ok((id, in_flight)) => return Ok(self.permit(hash, id, in_flight)),
            Err(Enqueue::Refused(limited)) => return Err(limited),
            Err(Enqueue::Queued(id, notify)) => (id, notify),
        };
        let deadline = tokio::time::Instant::now() + self.inner.max_wait;
        let mut waiter = Waiter {
            inner: &self.inner,
            hash,
            id,
            done: false,
        };
        loop {
            // Created before the check: a release in between leaves its wake-up for this future.
            let notified = notify.notified();
            if let Some(in_flight) = self.inner.take_as_waiter(hash, id) {
                waiter.done = true;
                return Ok(self.permit(hash, id, in_flight));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let (in_flight, max) = self.inner.load(hash, id);
                return Err(Limited {
                    reason: Reason::TimedOut,
                    in_flight,
                    max,
                    retry_after: self.inner.retry_hint,
                });
            }
        }
    }

    /// [`try_acquire`](Self::try_acquire) with a permit that owns a handle to the limiter (for
    /// permits kept beyond the limiter's borrow: spawned tasks, other structs).
    pub fn try_acquire_owned(&self, key: &K) -> Result<OwnedPermit<K>, Limited> {
        self.try_acquire(key).map(Permit::into_owned)
    }

    /// [`acquire`](Self::acquire) with an [`OwnedPermit`].
    pub async fn acquire_owned(&self, key: &K) -> Result<OwnedPermit<K>, Limited> {
        self.acquire(key).await.map(Permit::into_owned)
    }

    #[inline]
    fn permit(&self, hash: u64, id: u64, in_flight: u32) -> Permit<'_, K> {
        let started = self
            .inner
            .adaptive
            .as_ref()
            .map(|a| (a.clock.now_nanos(), in_flight));
        Permit {
            inner: &self.inner,
            slot: SlotRef { hash, id, started },
        }
    }
}

enum Enqueue {
    Refused(Limited),
    Queued(u64, Arc<Notify>),
}

impl<K> Inner<K> {
    #[inline]
    fn shard(&self, hash: u64) -> &Mutex<Shard<K>> {
        self.shards.of(hash)
    }
}

impl<K: Hash + Eq + Clone> Inner<K> {
    /// Takes a slot of `key` (its slot id), or joins its queue, or refuses.
    #[inline]
    fn acquire_or_enqueue(&self, key: &K, hash: u64, queue: bool) -> Result<(u64, u32), Enqueue> {
        let cap = self.cap.load(Ordering::Relaxed);
        let mut guard = self.shard(hash).lock();
        let shard = &mut *guard;
        let slot = match shard.table.entry(hash, |s| s.key == *key, |s| s.hash) {
            hashbrown::hash_table::Entry::Occupied(entry) => entry.into_mut(),
            hashbrown::hash_table::Entry::Vacant(entry) => {
                let id = shard.next_id;
                shard.next_id += 1;
                entry.insert(Slot {
                    key: key.clone(),
                    hash,
                    id,
                    in_flight: 1,
                    waiters: 0,
                    notify: None,
                });
                return Ok((id, 1));
            }
        };
        if slot.in_flight < cap && slot.waiters == 0 {
            slot.in_flight += 1;
            return Ok((slot.id, slot.in_flight));
        }
        let reason = if !queue {
            Reason::Full
        } else if slot.waiters >= self.max_waiters {
            Reason::QueueFull
        } else {
            slot.waiters += 1;
            let notify = slot.notify.get_or_insert_with(Arc::default).clone();
            return Err(Enqueue::Queued(slot.id, notify));
        };
        Err(Enqueue::Refused(Limited {
            reason,
            in_flight: slot.in_flight,
            max: cap,
            retry_after: self.retry_hint,
        }))
    }
}

impl<K> Inner<K> {
    /// A queued request takes a free slot, if there is one.
    fn take_as_waiter(&self, hash: u64, id: u64) -> Option<u32> {
        let cap = self.cap.load(Ordering::Relaxed);
        let mut shard = self.shard(hash).lock();
        let slot = shard.table.find_mut(hash, |s| s.id == id)?;
        if slot.in_flight < cap {
            slot.in_flight += 1;
            slot.waiters -= 1;
            Some(slot.in_flight)
        } else {
            None
        }
    }

    fn load(&self, hash: u64, id: u64) -> (u32, u32) {
        let shard = self.shard(hash).lock();
        let in_flight = shard
            .table
            .find(hash, |s| s.id == id)
            .map_or(0, |s| s.in_flight);
        (in_flight, self.cap.load(Ordering::Relaxed))
    }

    /// Updates slot (hash, id) by `f` and drops it once nothing is in flight or waiting; wakes a
    /// waiter when a slot is free.
    fn update(&self, hash: u64, id: u64, f: impl FnOnce(&mut Slot<K>)) {
        let cap = self.cap.load(Ordering::Relaxed);
        let mut shard = self.shard(hash).lock();
        let Ok(mut entry) = shard.table.find_entry(hash, |s| s.id == id) else {
            return;
        };
        let slot = entry.get_mut();
        f(slot);
        if slot.in_flight == 0 && slot.waiters == 0 {
            entry.remove();
        } else if slot.waiters > 0 && slot.in_flight < cap {
            if let Some(notify) = &slot.notify {
                notify.notify_one();
            }
        }
    }
}

/// Leaves the queue when a waiting `acquire` times out or is dropped.
struct Waiter<'a, K> {
    inner: &'a Inner<K>,
    hash: u64,
    id: u64,
    done: bool,
}

impl<K> Drop for Waiter<'_, K> {
    fn drop(&mut self) {
        if !self.done {
            // Passes on a wake-up this waiter may have taken without using it.
            self.inner.update(self.hash, self.id, |s| s.waiters -= 1);
        }
    }
}

/// Where a permit's slot is, and what the adaptive cap needs to know when it is released.
#[derive(Clone, Copy)]
struct SlotRef {
    hash: u64,
    id: u64,
    /// Acquisition time and requests in flight then (this one included), when the cap is
    /// adaptive.
    started: Option<(u64, u32)>,
}

impl<K> Inner<K> {
    #[inline]
    fn release(&self, slot: SlotRef) {
        self.update(slot.hash, slot.id, |s| s.in_flight -= 1);
        if let (Some((started, in_flight)), Some(adaptive)) = (slot.started, &self.adaptive) {
            let rtt = adaptive.clock.now_nanos().saturating_sub(started);
            let limit = adaptive
                .vegas
                .lock()
                .sample(Duration::from_nanos(rtt), in_flight);
            self.cap.store(limit, Ordering::Relaxed);
        }
    }
}

/// One request's slot, borrowed from its limiter; dropping it frees the slot (also on panic and
/// cancellation).
pub struct Permit<'a, K> {
    inner: &'a Arc<Inner<K>>,
    slot: SlotRef,
}

impl<'a, K> Permit<'a, K> {
    /// The same permit, owning a handle to its limiter.
    pub fn into_owned(self) -> OwnedPermit<K> {
        let owned = OwnedPermit {
            inner: self.inner.clone(),
            slot: self.slot,
        };
        std::mem::forget(self);
        owned
    }
}

impl<K> std::fmt::Debug for Permit<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl<K> Drop for Permit<'_, K> {
    #[inline]
    fn drop(&mut self) {
        self.inner.release(self.slot);
    }
}

/// A [`Permit`] that owns a handle to its limiter, so it can outlive the borrow.
pub struct OwnedPermit<K> {
    inner: Arc<Inner<K>>,
    slot: SlotRef,
}

impl<K> std::fmt::Debug for OwnedPermit<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedPermit").finish_non_exhaustive()
    }
}

impl<K> Drop for OwnedPermit<K> {
    fn drop(&mut self) {
        self.inner.release(self.slot);
    }
}
