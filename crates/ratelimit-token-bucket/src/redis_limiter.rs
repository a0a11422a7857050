//! The fleet-wide limiter on Redis (feature `redis`).

use crate::gcra::{Decision, Quotas};
use crate::keyed::KeyedLimiter;
use crate::limiter::{Error, Limiter};
use crate::Clock;
use crate::{BoxError, FailMode};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{Script, Value};
pub use retry_safe_core::redis::{Misrouted, RedisConnection};
use retry_safe_core::{Breaker, BreakerOpen};
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
/// node gets `MOVED` for most keys: that is [`Error::Misconfigured`] under any fail mode, never a
/// local decision.
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
    conn: RedisConnection,
    prefix: Arc<str>,
    quotas: Arc<Quotas>,
    script: Arc<Script>,
    fail_mode: FailMode,
    fallback: Arc<KeyedLimiter<String>>,
    fallbacks: Arc<AtomicU64>,
    pinned: Option<Arc<dyn Clock>>,
    breaker: Breaker,
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
    /// Connects to the Redis at `url` with request-path settings: 1 s to connect, 1 s per reply,
    /// 2 reconnect retries at most 500 ms apart. Keys are prefixed `rl`; fail-closed.
    pub async fn connect(url: &str, quotas: Quotas) -> Result<Self, redis::RedisError> {
        let config = retry_safe_core::redis::request_path_config();
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self::with_connection(conn, quotas))
    }

    /// Connects to the Redis Cluster of which `nodes` are members, with the same request-path
    /// settings; the decision of a key runs on the master owning its slot.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster<T: redis::IntoConnectionInfo>(
        nodes: impl IntoIterator<Item = T>,
        quotas: Quotas,
    ) -> Result<Self, redis::RedisError> {
        let conn = RedisConnection::connect_cluster(nodes).await?;
        Ok(Self::with_connection(conn, quotas))
    }

    /// A limiter over an existing connection: a [`ConnectionManager`], a cluster connection or a
    /// [`RedisConnection`].
    pub fn with_connection(conn: impl Into<RedisConnection>, quotas: Quotas) -> Self {
        Self {
            conn: conn.into(),
            prefix: Arc::from("rl"),
            fallback: Arc::new(KeyedLimiter::new(quotas.clone())),
            quotas: Arc::new(quotas),
            script: Arc::new(Script::new(DECIDE)),
            fail_mode: FailMode::Closed,
            fallbacks: Arc::default(),
            breaker: Breaker::for_backend(),
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

    /// The circuit breaker (default: 3 consecutive unreachable replies open it for 1 s). While
    /// it is open a decision does not wait for Redis: fail-closed reports `Unavailable` at once,
    /// fail-open decides locally at once; one probe per cool-down finds out when Redis is back.
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = breaker;
        self
    }

    /// Decisions taken by the local fallback while Redis was unreachable (fail-open).
    pub fn fallback_decisions(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// The connection, for administration and tests.
    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }

    /// The Redis key holding `key`'s state.
    pub fn state_key(&self, key: &(impl Display + ?Sized)) -> String {
        format!("{}:{{{}}}", self.prefix, key)
    }

    /// Decides one request of `cost` for `key`, counting it if it passes.
    pub async fn check(&self, key: &(impl Display + ?Sized), cost: u32) -> Result<Decision, Error> {
        self.quotas.check_cost(cost)?;
        let mut invocation = self.script.key(self.state_key(key));
        match &self.pinned {
            Some(clock) => {
                let now = clock.now_nanos();
                invocation.arg(now / 1_000_000_000).arg(now % 1_000_000_000)
            }
            None => invocation.arg("").arg(""),
        };
        invocation.arg(cost);
        for i in 0..self.quotas.len() {
            let (interval, tolerance) = self.quotas.params(i);
            invocation.arg(interval).arg(tolerance);
        }
        let Some(permit) = self.breaker.try_acquire() else {
            return self.fail(key, cost, Box::new(BreakerOpen));
        };
        let mut conn = self.conn.clone();
        let result = invocation.invoke_async::<Vec<Value>>(&mut conn).await;
        // A reply with an error code came from Redis: it is up. No code: it was not reached.
        let reached = match &result {
            Ok(_) => true,
            Err(e) => e.code().is_some(),
        };
        self.breaker.record(permit, reached);
        let reply = match result {
            Ok(reply) => reply,
            Err(e) if matches!(e.code(), Some("WRONGTYPE" | "CORRUPT")) => {
                return Err(Error::Corrupt(format!(
                    "{} holds something other than rate-limit state",
                    self.state_key(key)
                )))
            }
            Err(e) => {
                if let Some(misrouted) = self.conn.misrouting(&e) {
                    #[cfg(feature = "metrics")]
                    metrics::counter!("ratelimit_misconfigured_total").increment(1);
                    return Err(Error::Misconfigured(Box::new(misrouted)));
                }
                return self.fail(key, cost, Box::new(e));
            }
        };
        self.decode(&reply, cost)
    }

    fn fail(
        &self,
        key: &(impl Display + ?Sized),
        cost: u32,
        e: BoxError,
    ) -> Result<Decision, Error> {
        match self.fail_mode {
            FailMode::Closed => Err(Error::Unavailable(e)),
            FailMode::Open => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "metrics")]
                metrics::counter!("ratelimit_fail_open_total").increment(1);
                Ok(KeyedLimiter::check(&self.fallback, &key.to_string(), cost)?)
            }
        }
    }

    fn decode(&self, reply: &[Value], cost: u32) -> Result<Decision, Error> {
        let n = self.quotas.len();
        let int = |v: &Value| match v {
            Value::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        };
        let malformed =
            || Error::Corrupt("the decision script returned an unexpected reply".into());
        if reply.len() != n + 1 {
            return Err(malformed());
        }
        let allowed = int(&reply[0]).ok_or_else(malformed)? == 1;
        let mut offsets = [0u64; crate::quota::MAX_QUOTAS];
        for i in 0..n {
            offsets[i] = int(&reply[i + 1]).ok_or_else(malformed)?;
        }
        let decision = self.quotas.decide_offsets(&offsets[..n], cost)?;
        if decision.is_allowed() != allowed {
            return Err(Error::Corrupt(
                "the script and the client disagree on a decision".into(),
            ));
        }
        Ok(decision)
    }
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
