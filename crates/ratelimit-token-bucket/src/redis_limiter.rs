//! The fleet-wide limiter on Redis (feature `redis`).

use crate::gcra::{Decision, Quotas};
use crate::keyed::KeyedLimiter;
use crate::limiter::{Error, Limiter};
use crate::Clock;
use crate::FailMode;
use async_trait::async_trait;
use redis::{Script, Value};
pub use retry_safe_core::redis::{RedisConnection, RedisRunner, RedisSettings};
use retry_safe_core::{BackendError, Breaker};
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The decision script (see `redis_decide.lua` in the crate's sources).
const DECIDE: &str = include_str!("redis_decide.lua");

/// A rate limiter whose state lives in Redis, so every server of a fleet shares one limit.
///
/// Each decision is one `EVALSHA` of a Lua script (re-sent on `NOSCRIPT`) that reads the key's
/// TATs, decides on the Redis server's clock (`TIME`, so the app servers' clocks do not matter),
/// and writes the new TATs with a `PX` expiry equal to the time until the bucket is full — an
/// expired key is a full bucket. One Redis key per limited key, `{prefix}:{<key>}`, hash-tagged so
/// it can live on any Redis Cluster node: `connect_cluster` (feature
/// `cluster`) runs the same script on a cluster. A single-node connection pointed at a cluster
/// node gets `MOVED` for most keys: that is [`BackendError::Misconfigured`] under any fail mode,
/// never a local decision. Which failures count as an outage is the workspace's one rule
/// ([`retry_safe_core::redis`]).
///
/// ```no_run
/// use ratelimit_token_bucket::{FailMode, Quota, Quotas, RedisLimiter};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let quotas = Quotas::new([Quota::per_second(10).burst(20)])?;
/// let limiter = RedisLimiter::connect("redis://127.0.0.1:6379", quotas)
///     .await?
///     .prefix("orders-api:rl")
///     .fail_mode(FailMode::Open);
/// let decision = limiter.check("user-42", 1).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisLimiter {
    redis: RedisRunner,
    prefix: Arc<str>,
    quotas: Arc<Quotas>,
    script: Arc<Script>,
    fail_mode: FailMode,
    fallback: Arc<KeyedLimiter<String>>,
    fallbacks: Arc<AtomicU64>,
    pinned: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .field("quotas", &self.quotas)
            .field("fail_mode", &self.fail_mode)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Connects to the Redis at `url` with the default [`RedisSettings`] (1 s to connect, 1 s
    /// per reply, 2 reconnect retries). Keys are prefixed `rl`; fail-closed.
    pub async fn connect(url: &str, quotas: Quotas) -> Result<Self, BackendError> {
        let redis = RedisRunner::connect(url, &RedisSettings::default()).await?;
        Ok(Self::with_connection(redis, quotas))
    }

    /// Connects to the Redis Cluster of which `nodes` are members, with the same settings; the
    /// decision of a key runs on the master owning its slot.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster<T: redis::IntoConnectionInfo>(
        nodes: impl IntoIterator<Item = T>,
        quotas: Quotas,
    ) -> Result<Self, BackendError> {
        let redis = RedisRunner::connect_cluster(nodes, &RedisSettings::default()).await?;
        Ok(Self::with_connection(redis, quotas))
    }

    /// A limiter over an existing connection: a [`RedisRunner`], a [`RedisConnection`], a
    /// `ConnectionManager` or a cluster connection.
    pub fn with_connection(redis: impl Into<RedisRunner>, quotas: Quotas) -> Self {
        Self {
            redis: redis.into(),
            prefix: Arc::from("rl"),
            fallback: Arc::new(KeyedLimiter::new(quotas.clone())),
            quotas: Arc::new(quotas),
            script: Arc::new(Script::new(DECIDE)),
            fail_mode: FailMode::Closed,
            fallbacks: Arc::default(),
            pinned: None,
        }
    }

    /// The key prefix (default `rl`): one per application, environment or limit.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// What to do when Redis does not answer (default [`FailMode::Closed`]).
    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.fail_mode = mode;
        self
    }

    /// Decides at `clock`'s time (nanoseconds, as if since the Unix epoch) instead of the server's
    /// `TIME`: for tests and simulations that must compare decisions at exact times.
    pub fn pin_time(mut self, clock: impl Clock) -> Self {
        self.pinned = Some(Arc::new(clock));
        self
    }

    /// The quotas enforced per key.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// The circuit breaker (default [`Breaker::for_backend`]: 3 consecutive calls without a
    /// reply open it for 1 s; one per master on a cluster). While it is open a decision does not
    /// wait for Redis: fail-closed reports `Unavailable` at once, fail-open decides locally at
    /// once; one probe per cool-down finds out when Redis is back.
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.redis = self.redis.with_breaker(breaker);
        self
    }

    /// Decisions taken by the local fallback while Redis was unreachable (fail-open).
    pub fn fallback_decisions(&self) -> u64 {
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

    /// The Redis key holding `key`'s state.
    pub fn state_key(&self, key: &(impl Display + ?Sized)) -> String {
        format!("{}:{{{}}}", self.prefix, key)
    }

    /// Decides one request of `cost` for `key`, counting it if it passes.
    pub async fn check(&self, key: &(impl Display + ?Sized), cost: u32) -> Result<Decision, Error> {
        self.quotas.check_cost(cost)?;
        match self.take(&self.state_key(key), cost, cost).await {
            Ok(take) => Ok(take.decision),
            Err(e) => self.backend_failed(key, cost, e),
        }
    }

    /// One script call on `state_key`: takes `want` units, or fewer but at least `least` (a
    /// lease takes at most half of what is left); `decision` is for the units taken.
    pub(crate) async fn take(
        &self,
        state_key: &str,
        want: u32,
        least: u32,
    ) -> Result<Take, BackendError> {
        let mut invocation = self.script.key(state_key);
        match &self.pinned {
            Some(clock) => {
                let now = clock.now_nanos();
                invocation.arg(now / 1_000_000_000).arg(now % 1_000_000_000)
            }
            None => invocation.arg("").arg(""),
        };
        invocation.arg(want).arg(least);
        for i in 0..self.quotas.len() {
            let (interval, tolerance) = self.quotas.params(i);
            invocation.arg(interval).arg(tolerance);
        }
        let reply: Vec<Value> = self.redis.eval(&invocation, state_key).await?;
        self.decode(&reply, want, least)
    }

    /// A failed call: an outage goes to the fail mode, anything else is the caller's error.
    pub(crate) fn backend_failed(
        &self,
        key: &(impl Display + ?Sized),
        cost: u32,
        e: BackendError,
    ) -> Result<Decision, Error> {
        if e.is_unavailable() {
            return self.fail(key, cost, e);
        }
        #[cfg(feature = "metrics")]
        metrics::counter!("ratelimit_backend_failures_total", "reason" => e.label()).increment(1);
        Err(e.into())
    }

    fn fail(
        &self,
        key: &(impl Display + ?Sized),
        cost: u32,
        e: BackendError,
    ) -> Result<Decision, Error> {
        match self.fail_mode {
            FailMode::Closed => Err(e.into()),
            FailMode::Open => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "metrics")]
                metrics::counter!("ratelimit_fail_open_total").increment(1);
                Ok(KeyedLimiter::check(&self.fallback, &key.to_string(), cost)?)
            }
        }
    }

    fn decode(&self, reply: &[Value], want: u32, least: u32) -> Result<Take, BackendError> {
        let n = self.quotas.len();
        let int = |v: &Value| match v {
            Value::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        };
        let malformed =
            || BackendError::corrupt("the decision script returned an unexpected reply");
        if reply.len() != n + 2 {
            return Err(malformed());
        }
        let allowed = int(&reply[0]).ok_or_else(malformed)? == 1;
        let mut offsets = [0u64; crate::quota::MAX_QUOTAS];
        for i in 0..n {
            offsets[i] = int(&reply[i + 1]).ok_or_else(malformed)?;
        }
        let taken = int(&reply[n + 1])
            .and_then(|t| u32::try_from(t).ok())
            .filter(|&t| {
                if allowed {
                    (least..=want).contains(&t)
                } else {
                    t == 0
                }
            })
            .ok_or_else(malformed)?;
        let decision = self
            .quotas
            .decide_offsets(&offsets[..n], if allowed { taken } else { least })
            .map_err(|_| malformed())?;
        if decision.is_allowed() != allowed {
            return Err(BackendError::corrupt(
                "the script and the client disagree on a decision",
            ));
        }
        Ok(Take { decision, taken })
    }
}

/// What one script call took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Take {
    /// The decision for the units taken (or, when refused, for the least asked).
    pub(crate) decision: Decision,
    /// Units taken: 0 when refused.
    pub(crate) taken: u32,
}

#[async_trait]
impl<K: Display + ?Sized + Sync> Limiter<K> for RedisLimiter {
    async fn check(&self, key: &K, cost: u32) -> Result<Decision, Error> {
        RedisLimiter::check(self, key, cost).await
    }

    fn quotas(&self) -> &Quotas {
        &self.quotas
    }
}
