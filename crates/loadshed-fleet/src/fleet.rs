//! The fleet usage shedder (feature `redis`): the fleet's requests in flight counted in Redis,
//! with a share of the *fleet's* capacity reserved for the more important classes.
//!
//! Every admitted request holds a lease in one Redis sorted set shared by the fleet (scored by
//! expiry, so the slots of a server that crashed come back when their leases run out). A request
//! of class `c` is admitted only while the fleet's requests in flight are below
//! `capacity × share(c)`: with the default shares the top 20 % of the fleet is kept for critical
//! requests, and so on. One round trip to admit (a Lua script: drop expired leases, count, add),
//! one to release (`ZREM`; in the background when the guard is dropped). The lease script is
//! `ratelimit-concurrent`'s, so fleet caps and the fleet shedder behave alike on one Redis or a
//! Redis Cluster (the set's key is hash-tagged).
//!
//! The per-server [`Shedder`](crate::Shedder) stays the last line of defence: the layer asks the
//! fleet first, then the server. When Redis cannot be reached the fleet shedder, by default,
//! lets the server decide alone ([`FleetGuard::is_fallback`], counted, metered as
//! `loadshed_fleet_fallback_total`); `FailMode::Closed` sheds instead. A misconfigured
//! connection (a single-node client on a cluster node) is never a fallback.

use crate::{Class, ConfigError, Shares, Shed, ShedReason};
use ratelimit_concurrent::{
    Error, FailMode, Lease, RedisConcurrencyLimiter, RedisConnection, RedisRunner, RedisSettings,
};
use retry_safe_core::{BackendError, Breaker, Clock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The default lease of a fleet slot: a request that runs longer loses its slot (the fleet may
/// then admit one more); a crashed server's slots come back after it.
pub(crate) const DEFAULT_FLEET_LEASE: Duration = Duration::from_secs(30);

/// Why the fleet shedder gave no slot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The request is shed: its class's share of the fleet is in use.
    #[error(transparent)]
    Shed(Shed),
    /// Redis failed: unavailable while the shedder fails closed, or misconfigured / corrupt
    /// (never treated as an outage).
    #[error("the fleet shedder's backend failed")]
    Backend(#[from] BackendError),
    /// The capacity or shares are invalid (from the `connect` functions).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A fleet slot, or the note that the fleet could not be asked. Dropping it frees the slot.
#[derive(Debug)]
pub struct FleetGuard {
    lease: Option<Lease>,
}

impl FleetGuard {
    /// Whether Redis could not be asked and the request was admitted on the server's own
    /// judgement (fail-open fallback).
    pub fn is_fallback(&self) -> bool {
        self.lease.is_none()
    }

    /// Frees the slot now (one `ZREM`), rather than in the background on drop.
    pub async fn release(mut self) {
        if let Some(lease) = self.lease.take() {
            // A failed release is harmless: the lease expires on its own.
            let _ = lease.release().await;
        }
    }
}

/// Priority-aware admission for a whole fleet, on Redis.
///
/// ```no_run
/// use loadshed_fleet::{Class, FleetShedder};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// // 200 requests in flight across the fleet; the top 20 % kept for critical ones.
/// let fleet = FleetShedder::connect("redis://127.0.0.1:6379", 200).await?.prefix("orders-api:fleet");
/// match fleet.admit(Class::Write).await {
///     Ok(guard) => { /* run the request; drop the guard after it */ drop(guard) }
///     Err(shed) => { /* 503 */ let _ = shed; }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FleetShedder {
    /// The leases of the fleet's one set; each class acquires within its own cap.
    limiter: RedisConcurrencyLimiter,
    /// The fleet's name: its set is `lsf:{<name>}`, on the slot of the name.
    name: Arc<str>,
    capacity: u32,
    limits: [u32; 4],
    fail_mode: FailMode,
    retry_after: Duration,
    fallbacks: Arc<AtomicU64>,
}

impl std::fmt::Debug for FleetShedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetShedder")
            .field("capacity", &self.capacity)
            .field("limits", &self.limits)
            .field("fail_mode", &self.fail_mode)
            .finish_non_exhaustive()
    }
}

impl FleetShedder {
    /// Connects to the Redis at `url` (request-path settings); `capacity` requests in flight
    /// across the fleet, the default shares, fleet name `fleet`, leases of 30 s, falling back to the
    /// server's own shedder when Redis is down.
    pub async fn connect(url: &str, capacity: u32) -> Result<Self, FleetError> {
        let redis = RedisRunner::connect(url, &RedisSettings::default()).await?;
        Self::with_connection(redis, capacity, Shares::default()).map_err(FleetError::Config)
    }

    /// Connects to the Redis Cluster of which `nodes` are members; otherwise as
    /// [`connect`](Self::connect).
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster<T: redis::IntoConnectionInfo>(
        nodes: impl IntoIterator<Item = T>,
        capacity: u32,
    ) -> Result<Self, FleetError> {
        let redis = RedisRunner::connect_cluster(nodes, &RedisSettings::default()).await?;
        Self::with_connection(redis, capacity, Shares::default()).map_err(FleetError::Config)
    }

    /// A fleet shedder over an existing connection (a [`RedisRunner`], a [`RedisConnection`],
    /// a `ConnectionManager` or a cluster connection), with `capacity` fleet slots and `shares`.
    pub fn with_connection(
        redis: impl Into<RedisRunner>,
        capacity: u32,
        shares: Shares,
    ) -> Result<Self, ConfigError> {
        let limits = crate::shedder::limits_of(capacity, shares)?;
        let limiter = RedisConcurrencyLimiter::with_connection(redis, capacity.max(1))
            .prefix("lsf")
            .lease(DEFAULT_FLEET_LEASE)
            .fail_mode(FailMode::Closed);
        Ok(Self {
            limiter,
            name: Arc::from("fleet"),
            capacity,
            limits,
            fail_mode: FailMode::Open,
            retry_after: Duration::from_secs(1),
            fallbacks: Arc::default(),
        })
    }

    /// The fleet's name (default `fleet`): one per fleet sharing a Redis. Its leases are the
    /// sorted set `lsf:{<name>}`, hash-tagged by the name (on a cluster, each fleet's set lives
    /// on the master of its name's slot).
    pub fn prefix(mut self, name: &str) -> Self {
        self.name = Arc::from(name);
        self
    }

    /// How long a slot is held without release before it comes back (default 30 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.limiter = self.limiter.lease(lease);
        self
    }

    /// The circuit breaker of admissions (default [`Breaker::for_backend`]; one per master on a
    /// cluster): while it is open the fleet is not asked and the fail mode decides at once.
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.limiter = self.limiter.breaker(breaker);
        self
    }

    /// The connection, for administration and tests.
    pub fn connection(&self) -> RedisConnection {
        self.limiter.connection()
    }

    /// The Redis key of the fleet's leases (a sorted set).
    pub fn leases_key(&self) -> String {
        self.limiter.leases_key(&self.name)
    }

    /// What to do when Redis cannot be reached: [`FailMode::Open`] (default) admits on the
    /// server's own shedder alone; [`FailMode::Closed`] sheds.
    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.fail_mode = mode;
        self
    }

    /// Measures leases at `clock`'s time instead of Redis' `TIME` (tests, simulations).
    pub fn pin_time(mut self, clock: impl Clock) -> Self {
        self.limiter = self.limiter.pin_time(clock);
        self
    }

    /// The `Retry-After` of shed requests (default 1 s).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The fleet's slots.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The fleet slots `class` may fill.
    pub fn limit(&self, class: Class) -> u32 {
        self.limits[class.index()]
    }

    /// Admissions made without Redis (fail-open fallback to the server's shedder).
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Admits a request of `class` if the fleet has room for it, or sheds it.
    pub async fn admit(&self, class: Class) -> Result<FleetGuard, FleetError> {
        let limit = self.limits[class.index()];
        match self.limiter.acquire_within(&self.name, limit).await {
            Ok(lease) => Ok(FleetGuard { lease: Some(lease) }),
            Err(Error::Limited(_)) => Err(FleetError::Shed(Shed {
                class,
                reason: ShedReason::FleetCapacity,
                retry_after: self.retry_after,
            })),
            Err(Error::Backend(e)) if e.is_unavailable() => self.unavailable(e),
            Err(Error::Backend(e)) => Err(FleetError::Backend(e)),
            Err(other) => self.unavailable(BackendError::Unavailable(Box::new(other))),
        }
    }

    fn unavailable(&self, e: BackendError) -> Result<FleetGuard, FleetError> {
        match self.fail_mode {
            FailMode::Closed => Err(FleetError::Backend(e)),
            _ => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "metrics")]
                metrics::counter!("loadshed_fleet_fallback_total").increment(1);
                Ok(FleetGuard { lease: None })
            }
        }
    }
}
