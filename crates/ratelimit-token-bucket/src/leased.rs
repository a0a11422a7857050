//! Fleet limits off the request path: each server holds a lease of part of a key's fleet budget.

use crate::gcra::{Allowed, Decision, Limited, Quotas};
use crate::limiter::{Error, Limiter};
use crate::redis_limiter::{RedisLimiter, Take};
use crate::{Clock, SystemClock};
use async_trait::async_trait;
use hashbrown::HashTable;
use retry_safe_core::{duration_to_nanos as nanos, Shards};
use std::fmt::Display;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How much of a key's fleet budget one server takes at a time, and for how long it may use it.
///
/// ```
/// use ratelimit_token_bucket::Lease;
/// use std::time::Duration;
///
/// let lease = Lease::new(10).ttl(Duration::from_millis(500));
/// assert_eq!(lease.tokens(), 10);
/// // What one server can hold at once: a lease plus what was left when it renewed.
/// assert_eq!(lease.max_held(), 15);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    tokens: u32,
    ttl: Duration,
}

impl Lease {
    /// Leases of `tokens` units (at least 1), usable for 1 s after each renewal.
    pub fn new(tokens: u32) -> Self {
        Self {
            tokens: tokens.max(1),
            ttl: Duration::from_secs(1),
        }
    }

    /// How long a server may use what it holds after its last renewal (default 1 s); unused
    /// units then lapse. It bounds how long a server keeps deciding alone once Redis is gone.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// Units asked for per renewal.
    pub fn tokens(&self) -> u32 {
        self.tokens
    }

    /// How long held units stay usable after a renewal.
    pub fn lease_ttl(&self) -> Duration {
        self.ttl
    }

    /// A renewal starts in the background when a server holds this many units or fewer.
    pub fn low_water(&self) -> u32 {
        self.tokens / 2
    }

    /// The most units one server holds (or has on the way from Redis) for one key:
    /// `tokens + low_water`. The fleet's overshoot bound is `servers × max_held`.
    pub fn max_held(&self) -> u64 {
        u64::from(self.tokens) + u64::from(self.low_water())
    }
}

/// The fleet rate limiter in leased mode: decisions in memory, Redis in the background.
///
/// A [`RedisLimiter`] in its default, exact mode asks Redis for every decision. A
/// `LeasedLimiter` takes a key's budget from the same Redis bucket a [`Lease`] at a time (one
/// script call takes up to `tokens` units, at most half of what the bucket holds, so servers
/// sharing a nearly empty bucket each get some) and decides locally until the lease runs low;
/// then one renewal goes out in the background while requests keep being decided from what is
/// left. A key's first request, and a request the lease cannot cover, wait for one call. A
/// refusal from Redis is remembered until its `Retry-After`, so a limited client is refused
/// locally too. Idle keys are dropped as their leases lapse.
///
/// **Overshoot bound.** Every unit admitted was taken from the fleet's bucket before it was
/// used, so the only excess is what servers held when a window began: over any window of length
/// `w`, a key is admitted at most `burst + w / interval + servers × lease.max_held()` units,
/// against `burst + w / interval` in exact mode (`max_held = tokens + tokens / 2`). Units held
/// and unused lapse after `ttl`: the fleet then admits less than its limit, never more.
///
/// **When Redis is gone** a server decides from what it holds for at most `ttl`; once that is
/// spent or lapsed, the limiter's [`FailMode`](crate::FailMode) decides: fail-closed reports the
/// outage, fail-open falls back to a local limiter of the same quotas.
///
/// ```no_run
/// use ratelimit_token_bucket::{Lease, Quota, Quotas, RedisLimiter};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let quotas = Quotas::new([Quota::per_second(100).burst(200)])?;
/// let limiter = RedisLimiter::connect("redis://127.0.0.1:6379", quotas)
///     .await?
///     .prefix("orders-api:rl")
///     .leased::<String>(Lease::new(20));
/// let decision = limiter.check(&"user-42".to_owned(), 1).await?;
/// # Ok(()) }
/// ```
pub struct LeasedLimiter<K, C = SystemClock> {
    shared: Arc<Shared<K, C>>,
}

impl<K, C> Clone for LeasedLimiter<K, C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<K, C> {
    fleet: RedisLimiter,
    lease: Lease,
    clock: C,
    hasher: foldhash::fast::RandomState,
    shards: Shards<Shard<K>>,
    calls: AtomicU64,
}

struct Shard<K> {
    table: HashTable<(K, Held)>,
    sweep_at: usize,
    /// Decisions taken from this shard's leases (counted under its lock: no atomic per decision).
    local: u64,
}

/// One key's lease on this server. Times are on the limiter's clock.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    units: u32,
    /// Held units lapse at this time.
    expires: u64,
    /// A call for this key is out (the one renewal, or the one fetch a request waits for).
    renewing: bool,
    /// No renewal before this time (after a refused or failed one).
    renew_after: u64,
    /// Refused locally until this time (Redis said so).
    refused_until: u64,
    /// Figures of the last answer from Redis, for the headers.
    fleet_left: u64,
    interval: u64,
    full_at: u64,
    quota: u32,
}

/// What a request finds in its key's lease.
enum Local {
    /// Decided here; `renew` says this request starts the key's background renewal.
    Decided { decision: Decision, renew: bool },
    /// Nothing held covers it; `fetch` says whether this request makes the key's one call.
    Ask { fetch: bool },
}

/// Keys a shard holds before it first sweeps lapsed leases.
const FIRST_SWEEP: usize = 1024;

impl RedisLimiter {
    /// This limiter in leased mode (see [`LeasedLimiter`]), on the monotonic clock.
    pub fn leased<K: Hash + Eq + Clone>(self, lease: Lease) -> LeasedLimiter<K> {
        LeasedLimiter::with_clock(self, lease, SystemClock::new())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> LeasedLimiter<K, C> {
    /// `fleet` in leased mode, leases timed on `clock` (a test pins the Redis limiter's time to
    /// the same clock with [`RedisLimiter::pin_time`]).
    pub fn with_clock(fleet: RedisLimiter, lease: Lease, clock: C) -> Self {
        Self {
            shared: Arc::new(Shared {
                fleet,
                lease,
                clock,
                hasher: foldhash::fast::RandomState::default(),
                shards: Shards::new(crate::keyed::DEFAULT_SHARDS, || Shard {
                    table: HashTable::new(),
                    sweep_at: FIRST_SWEEP,
                    local: 0,
                }),
                calls: AtomicU64::new(0),
            }),
        }
    }

    /// The lease settings.
    pub fn lease(&self) -> Lease {
        self.shared.lease
    }

    /// The exact limiter underneath (its connection, prefix and fail mode).
    pub fn fleet(&self) -> &RedisLimiter {
        &self.shared.fleet
    }

    /// The quotas enforced per key.
    pub fn quotas(&self) -> &Quotas {
        self.shared.fleet.quotas()
    }

    /// Decisions taken without Redis: from a held lease or a remembered refusal.
    pub fn local_decisions(&self) -> u64 {
        self.shared.shards.iter().map(|s| s.lock().local).sum()
    }

    /// Calls made to Redis (renewals in the background and the calls requests waited for).
    pub fn redis_calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    /// Units this server holds for `key` now (lapsed units excluded).
    pub fn held(&self, key: &K) -> u32 {
        let now = self.shared.clock.now_nanos();
        let hash = self.shared.hasher.hash_one(key);
        let shard = self.shared.shards.of(hash).lock();
        shard
            .table
            .find(hash, |(k, _)| k == key)
            .map_or(0, |(_, h)| if h.expires > now { h.units } else { 0 })
    }
}

impl<K, C> LeasedLimiter<K, C>
where
    K: Hash + Eq + Clone + Display + Send + Sync + 'static,
    C: Clock,
{
    /// Decides one request of `cost` for `key`, counting it if it passes: from the held lease
    /// when it covers the request, else after one call to Redis.
    pub async fn check(&self, key: &K, cost: u32) -> Result<Decision, Error> {
        self.quotas().check_cost(cost)?;
        match self.shared.local(key, cost, true) {
            Local::Decided { decision, renew } => {
                self.shared.renew_in_background(key, renew);
                Ok(decision)
            }
            Local::Ask { fetch } => self.shared.ask(key, cost, fetch).await,
        }
    }

    /// The decision when the held lease covers it (or Redis's last refusal still stands);
    /// `None` when it needs a call to Redis.
    pub fn check_local(&self, key: &K, cost: u32) -> Option<Result<Decision, Error>> {
        if let Err(e) = self.quotas().check_cost(cost) {
            return Some(Err(e.into()));
        }
        match self.shared.local(key, cost, false) {
            Local::Decided { decision, renew } => {
                self.shared.renew_in_background(key, renew);
                Some(Ok(decision))
            }
            Local::Ask { .. } => None,
        }
    }
}

impl<K, C> Shared<K, C>
where
    K: Hash + Eq + Clone + Display + Send + Sync + 'static,
    C: Clock,
{
    /// Decides from the held lease under the shard's lock, or says a call is needed; with
    /// `claim`, the caller will make it and may become the key's one fetch.
    fn local(&self, key: &K, cost: u32, claim: bool) -> Local {
        let now = self.clock.now_nanos();
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shards.of(hash).lock();
        let Some((_, held)) = shard.table.find_mut(hash, |(k, _)| k == key) else {
            if claim {
                self.insert(&mut shard, hash, key, now);
            }
            return Local::Ask { fetch: claim };
        };
        if held.refused_until > now {
            let limited = Limited::new(
                held.refused_until - now,
                held.full_at.saturating_sub(now),
                held.quota,
            );
            shard.local += 1;
            return Local::Decided {
                decision: Decision::Limited(limited),
                renew: false,
            };
        }
        if held.expires <= now {
            held.units = 0;
        }
        if held.units >= cost {
            held.units -= cost;
            let renew =
                !held.renewing && held.renew_after <= now && held.units <= self.lease.low_water();
            held.renewing |= renew;
            let decision = Decision::Allowed(held.allowed(now));
            shard.local += 1;
            return Local::Decided { decision, renew };
        }
        let fetch = claim && !held.renewing && cost <= self.lease.tokens;
        held.renewing |= fetch;
        Local::Ask { fetch }
    }

    /// A new key's entry, marked as fetching (its first request makes the call).
    fn insert(&self, shard: &mut Shard<K>, hash: u64, key: &K, now: u64) {
        if shard.table.len() >= shard.sweep_at {
            shard.sweep(now, &self.hasher);
        }
        let held = Held {
            renewing: true,
            ..Held::default()
        };
        let hasher = &self.hasher;
        shard
            .table
            .insert_unique(hash, (key.clone(), held), |(k, _)| hasher.hash_one(k));
    }

    /// Starts the key's renewal (marked as out by [`local`](Self::local)) on the current
    /// runtime; without one the mark is lifted and the next request that needs a call makes it.
    #[inline]
    fn renew_in_background(self: &Arc<Self>, key: &K, renew: bool) {
        if renew {
            self.spawn_renewal(key);
        }
    }

    #[cold]
    fn spawn_renewal(self: &Arc<Self>, key: &K) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let (shared, key) = (self.clone(), key.clone());
                runtime.spawn(async move { shared.renew(&key).await });
            }
            Err(_) => self.update(key, |held| held.renewing = false),
        }
    }

    /// The background renewal: one call for a lease, added to what is held.
    async fn renew(&self, key: &K) {
        let result = self.call(key, self.lease.tokens, 1).await;
        let now = self.clock.now_nanos();
        self.update(key, |held| {
            held.renewing = false;
            match result {
                Ok(take) if take.taken > 0 => held.grant(take, 0, now, self.lease.ttl),
                Ok(take) => held.renew_after = now + retry_nanos(&take.decision),
                Err(_) => held.renew_after = now + nanos(self.lease.ttl) / 10,
            }
        });
    }

    /// A request the lease does not cover: the key's one fetch (a lease, of which it uses
    /// `cost`), or, while another call is out, an exact decision of its own.
    async fn ask(&self, key: &K, cost: u32, fetch: bool) -> Result<Decision, Error> {
        let want = if fetch { self.lease.tokens } else { cost };
        let result = self.call(key, want, cost).await;
        let now = self.clock.now_nanos();
        let mut local = None;
        self.update(key, |held| {
            held.renewing &= !fetch;
            if let Ok(take) = &result {
                match take.decision {
                    Decision::Allowed(_) => {
                        held.grant(*take, cost, now, self.lease.ttl);
                        local = Some(Decision::Allowed(held.allowed(now)));
                    }
                    Decision::Limited(l) => held.refuse(l, now),
                }
            }
        });
        match result {
            Ok(take) => Ok(local.unwrap_or(take.decision)),
            Err(e) => self.fleet.backend_failed(key, cost, e),
        }
    }

    async fn call(
        &self,
        key: &K,
        want: u32,
        least: u32,
    ) -> Result<Take, retry_safe_core::BackendError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.fleet
            .take(&self.fleet.state_key(key), want, least)
            .await
    }

    /// Runs `f` on the key's entry, if it is still there.
    fn update(&self, key: &K, f: impl FnOnce(&mut Held)) {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shards.of(hash).lock();
        if let Some((_, held)) = shard.table.find_mut(hash, |(k, _)| k == key) {
            f(held);
        }
    }
}

impl Held {
    /// Adds a grant of which the asking request uses `used` units.
    fn grant(&mut self, take: Take, used: u32, now: u64, ttl: Duration) {
        if self.expires <= now {
            self.units = 0;
        }
        self.units += take.taken - used;
        self.expires = now + nanos(ttl);
        self.refused_until = 0;
        if let Decision::Allowed(a) = take.decision {
            self.fleet_left = a.remaining();
            self.interval = a.interval();
            self.full_at = now + nanos(a.reset_after());
            self.quota = a.quota() as u32;
        }
    }

    fn refuse(&mut self, limited: Limited, now: u64) {
        self.refused_until = now + nanos(limited.retry_after());
        self.full_at = now + nanos(limited.reset_after());
        self.quota = limited.quota() as u32;
    }

    /// A local pass: what this server holds plus what the fleet had left at the last renewal.
    #[inline]
    fn allowed(&self, now: u64) -> Allowed {
        let interval = self.interval.max(1);
        let left = u64::from(self.units) + self.fleet_left;
        Allowed::new(
            left.saturating_mul(interval),
            interval,
            self.full_at.saturating_sub(now),
            self.quota,
        )
    }

    /// Nothing held, nothing out, nothing remembered: the entry can go.
    fn idle(&self, now: u64) -> bool {
        !self.renewing && self.refused_until <= now && (self.units == 0 || self.expires <= now)
    }
}

impl<K: Hash> Shard<K> {
    fn sweep(&mut self, now: u64, hasher: &foldhash::fast::RandomState) {
        self.table.retain(|(_, held)| !held.idle(now));
        self.table.shrink_to_fit(|(k, _)| hasher.hash_one(k));
        self.sweep_at = (self.table.len() * 2).max(FIRST_SWEEP);
    }
}

fn retry_nanos(decision: &Decision) -> u64 {
    match decision {
        Decision::Limited(l) => nanos(l.retry_after()),
        Decision::Allowed(_) => 0,
    }
}

#[async_trait]
impl<K, C> Limiter<K> for LeasedLimiter<K, C>
where
    K: Hash + Eq + Clone + Display + Send + Sync + 'static,
    C: Clock,
{
    async fn check(&self, key: &K, cost: u32) -> Result<Decision, Error> {
        LeasedLimiter::check(self, key, cost).await
    }

    fn check_now(&self, key: &K, cost: u32) -> Option<Result<Decision, Error>> {
        self.check_local(key, cost)
    }

    fn quotas(&self) -> &Quotas {
        LeasedLimiter::quotas(self)
    }
}

impl<K, C> std::fmt::Debug for LeasedLimiter<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedLimiter")
            .field("fleet", &self.shared.fleet)
            .field("lease", &self.shared.lease)
            .finish_non_exhaustive()
    }
}
