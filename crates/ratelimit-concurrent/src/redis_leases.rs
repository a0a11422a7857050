//! Fleet-wide caps on Redis (feature `redis`): leases in a sorted set per key.

use crate::limiter::{ConcurrencyLimiter, Error, Limited, OwnedPermit, Reason};
use crate::{Clock, FailMode};
use redis::{Script, Value};
pub use retry_safe_core::redis::{RedisConnection, RedisRunner, RedisSettings};
use retry_safe_core::{BackendError, Breaker};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ACQUIRE: &str = include_str!("redis_acquire.lua");
const RENEW: &str = include_str!("redis_renew.lua");

/// A per-key cap on requests in flight shared by every server of a fleet.
///
/// Each key is a Redis sorted set of lease ids scored by their expiry. Acquiring is one Lua
/// script (drop expired leases, count, add); releasing is one `ZREM`. A process that crashes
/// never releases its leases, and they expire after the lease time, so a crash costs capacity for
/// at most one lease. A request that runs longer than the lease renews it with
/// [`Lease::renew`]. Time is the Redis server's (`TIME`); keys are `{prefix}:{<key>}`,
/// hash-tagged: `connect_cluster` (feature `cluster`) runs the same
/// scripts, and the releases of dropped leases, on a Redis Cluster. A single-node connection
/// pointed at a cluster node is reported as [`BackendError::Misconfigured`] under any fail mode.
///
/// ```no_run
/// use ratelimit_concurrent::RedisConcurrencyLimiter;
/// use std::time::Duration;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RedisConcurrencyLimiter::connect("redis://127.0.0.1:6379", 20)
///     .await?
///     .lease(Duration::from_secs(30));
/// let lease = limiter.acquire("api-key-1").await?;
/// // ... the request runs ...
/// lease.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisConcurrencyLimiter {
    redis: RedisRunner,
    prefix: Arc<str>,
    max: u32,
    lease: Duration,
    retry_hint: Duration,
    scripts: Arc<(Script, Script)>,
    fail_mode: FailMode,
    fallback: ConcurrencyLimiter<String>,
    fallbacks: Arc<AtomicU64>,
    pinned: Option<Arc<dyn Clock>>,
    ids: Arc<(u64, AtomicU64)>,
}

impl std::fmt::Debug for RedisConcurrencyLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConcurrencyLimiter")
            .field("prefix", &self.prefix)
            .field("max", &self.max)
            .field("lease", &self.lease)
            .field("fail_mode", &self.fail_mode)
            .finish_non_exhaustive()
    }
}

impl RedisConcurrencyLimiter {
    /// Connects with the default [`RedisSettings`] (1 s to connect, 1 s per reply, 2 reconnect
    /// retries); `max` requests per key (at least 1), leases of 30 s, prefix `cl`, fail-closed.
    pub async fn connect(url: &str, max: u32) -> Result<Self, BackendError> {
        let redis = RedisRunner::connect(url, &RedisSettings::default()).await?;
        Ok(Self::with_connection(redis, max))
    }

    /// Connects to the Redis Cluster of which `nodes` are members, with the same settings and
    /// defaults; each key's leases live on the master owning its slot.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster<T: redis::IntoConnectionInfo>(
        nodes: impl IntoIterator<Item = T>,
        max: u32,
    ) -> Result<Self, BackendError> {
        let redis = RedisRunner::connect_cluster(nodes, &RedisSettings::default()).await?;
        Ok(Self::with_connection(redis, max))
    }

    /// A limiter over an existing connection: a [`RedisRunner`], a [`RedisConnection`], a
    /// `ConnectionManager` or a cluster connection.
    pub fn with_connection(redis: impl Into<RedisRunner>, max: u32) -> Self {
        let max = max.max(1);
        let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        Self {
            redis: redis.into(),
            prefix: Arc::from("cl"),
            max,
            lease: Duration::from_secs(30),
            retry_hint: Duration::from_secs(1),
            scripts: Arc::new((Script::new(ACQUIRE), Script::new(RENEW))),
            fail_mode: FailMode::Closed,
            fallback: ConcurrencyLimiter::new(max).expect("max is at least 1"),
            fallbacks: Arc::default(),
            pinned: None,
            ids: Arc::new((seed, AtomicU64::new(0))),
        }
    }

    /// The key prefix (default `cl`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// How long a lease lives without renewal (default 30 s; at least 1 ms).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(1));
        self
    }

    /// The longest `retry_after` hint given with refusals (default 1 s, as the local
    /// limiter's): the hint is the sooner of this and the first lease's expiry. A held lease
    /// usually ends with its request, long before it would expire, so the expiry alone (up to
    /// the whole lease time) would send clients away for far longer than the slot stays taken.
    pub fn retry_hint(mut self, at_most: Duration) -> Self {
        self.retry_hint = at_most.max(Duration::from_millis(1));
        self
    }

    /// What to do when Redis does not answer (default [`FailMode::Closed`]; `Open` takes the
    /// permit from a local limiter with the same cap, counted by
    /// [`fallback_permits`](Self::fallback_permits)).
    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.fail_mode = mode;
        self
    }

    /// Uses `clock`'s reading (nanoseconds, as if since the Unix epoch) instead of the server's
    /// `TIME`: for tests that expire leases without waiting.
    pub fn pin_time(mut self, clock: impl Clock) -> Self {
        self.pinned = Some(Arc::new(clock));
        self
    }

    /// The cap per key.
    pub fn max_in_flight(&self) -> u32 {
        self.max
    }

    /// Permits given by the local fallback while Redis was unreachable (fail-open).
    pub fn fallback_permits(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// The connection, for administration and tests.
    pub fn connection(&self) -> RedisConnection {
        self.redis.connection().clone()
    }

    /// The runner: the connection with its breakers.
    pub fn runner(&self) -> &RedisRunner {
        &self.redis
    }

    /// The Redis key of `key`'s leases.
    pub fn leases_key(&self, key: &str) -> String {
        format!("{}:{{{}}}", self.prefix, key)
    }

    fn now_arg(&self) -> String {
        self.pinned
            .as_ref()
            .map(|c| (c.now_nanos() / 1000).to_string())
            .unwrap_or_default()
    }

    fn lease_micros(&self) -> u64 {
        retry_safe_core::duration_to_micros(self.lease)
    }

    /// The circuit breaker of `acquire` (default [`Breaker::for_backend`]: 3 consecutive calls
    /// without a reply open it for 1 s; one per master on a cluster): while open, fail-closed
    /// reports `Unavailable` at once and fail-open hands out a local permit at once; releases
    /// always try.
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.redis = self.redis.with_breaker(breaker);
        self
    }

    /// A lease for `key` if it has fewer than the cap in flight fleet-wide.
    pub async fn acquire(&self, key: &str) -> Result<Lease, Error> {
        self.acquire_within(key, self.max).await
    }

    /// A lease for `key` if it has fewer than `max` in flight fleet-wide: one set of leases
    /// shared by callers with different caps (the fleet shedder's classes). Failing open, the
    /// local fallback applies this limiter's own cap.
    pub async fn acquire_within(&self, key: &str, max: u32) -> Result<Lease, Error> {
        let n = self.ids.1.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}.{:x}.{n:x}", std::process::id(), self.ids.0);
        let redis_key = self.leases_key(key);
        let mut invocation = self.scripts.0.key(&redis_key);
        invocation
            .arg(self.now_arg())
            .arg(self.lease_micros())
            .arg(max)
            .arg(&id);
        let reply: Vec<Value> = match self.redis.eval(&invocation, &redis_key).await {
            Ok(reply) => reply,
            Err(e) if e.is_unavailable() => {
                self.forget_unanswered(&e, &redis_key, &id);
                return self.fail(key, e);
            }
            Err(e) => {
                #[cfg(feature = "metrics")]
                metrics::counter!("concurrency_backend_failures_total", "reason" => e.label())
                    .increment(1);
                return Err(e.into());
            }
        };
        let int = |i: usize| match reply.get(i) {
            Some(Value::Int(v)) => Ok(*v),
            _ => Err(Error::from(BackendError::corrupt(
                "the acquire script returned an unexpected reply",
            ))),
        };
        let holders = u32::try_from(int(1)?).unwrap_or(u32::MAX);
        if int(0)? == 1 {
            return Ok(Lease {
                inner: LeaseInner::Redis {
                    limiter: self.clone(),
                    key: redis_key,
                    id,
                    done: false,
                },
            });
        }
        let wait = Duration::from_micros(u64::try_from(int(2)?).unwrap_or(0));
        Err(Error::Limited(Limited {
            reason: Reason::Full,
            in_flight: holders,
            max,
            retry_after: wait.min(self.retry_hint).max(Duration::from_millis(1)),
        }))
    }

    /// An acquire that got no answer may still run: a stalled Redis (a paused process, a full
    /// socket buffer) executes it when it resumes, and a lease nobody holds would take a slot
    /// for the whole lease time. Removes `id` in the background, after the acquire on the same
    /// connection, retried each second within the lease time. Not when the breaker refused the
    /// call (it was never sent).
    fn forget_unanswered(&self, e: &BackendError, key: &str, id: &str) {
        if e.cause::<retry_safe_core::BreakerOpen>().is_some() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let redis = self.redis.clone();
        let tries = self.lease.as_secs().max(1);
        let zrem = removal(key, id);
        rt.spawn(async move {
            for _ in 0..tries {
                if redis.query::<()>(&zrem).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    fn fail(&self, key: &str, e: BackendError) -> Result<Lease, Error> {
        match self.fail_mode {
            FailMode::Closed => Err(e.into()),
            FailMode::Open => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "metrics")]
                metrics::counter!("concurrency_fail_open_total").increment(1);
                let permit = self.fallback.try_acquire_owned(&key.to_owned())?;
                Ok(Lease {
                    inner: LeaseInner::Local(permit),
                })
            }
        }
    }
}

/// A fleet-wide slot. Release it with [`release`](Self::release); dropping it releases it in the
/// background (on the current tokio runtime), and a lease never released expires on its own.
#[derive(Debug)]
pub struct Lease {
    inner: LeaseInner,
}

#[derive(Debug)]
enum LeaseInner {
    Redis {
        limiter: RedisConcurrencyLimiter,
        key: String,
        id: String,
        done: bool,
    },
    /// Taken from the local fallback while Redis was down.
    Local(#[allow(dead_code)] OwnedPermit<String>),
}

impl Lease {
    /// Whether this lease came from the local fallback (fail-open while Redis was down).
    pub fn is_local(&self) -> bool {
        matches!(self.inner, LeaseInner::Local(_))
    }

    /// Extends the lease by its full length from now; `Ok(false)` if it had already expired (its
    /// slot may be someone else's by now: the request should stop).
    pub async fn renew(&self) -> Result<bool, Error> {
        let LeaseInner::Redis {
            limiter, key, id, ..
        } = &self.inner
        else {
            return Ok(true);
        };
        let mut invocation = limiter.scripts.1.key(key);
        invocation
            .arg(limiter.now_arg())
            .arg(limiter.lease_micros())
            .arg("")
            .arg(id);
        let renewed: i64 = limiter.redis.eval_always(&invocation).await?;
        Ok(renewed == 1)
    }

    /// Frees the slot now.
    pub async fn release(mut self) -> Result<(), Error> {
        if let LeaseInner::Redis {
            limiter,
            key,
            id,
            done,
        } = &mut self.inner
        {
            *done = true;
            limiter.redis.query::<()>(&removal(key, id)).await?;
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let LeaseInner::Redis {
            limiter,
            key,
            id,
            done,
        } = &mut self.inner
        else {
            return;
        };
        if *done {
            return;
        }
        // Best effort: without a runtime the lease simply expires.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let redis = limiter.redis.clone();
            let zrem = removal(key, id);
            rt.spawn(async move {
                let _ = redis.query::<()>(&zrem).await;
            });
        }
    }
}

/// The command that removes lease `id` from the set `key`: a release, a dropped lease, an
/// acquire that got no answer.
fn removal(key: &str, id: &str) -> redis::Cmd {
    let mut zrem = redis::cmd("ZREM");
    zrem.arg(key).arg(id);
    zrem
}
