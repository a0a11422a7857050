//! The seam between the tower layer and a limiter backend.

use crate::gcra::{CostExceedsBurst, Decision, Quotas};
use crate::keyed::KeyedLimiter;
use crate::Clock;
use async_trait::async_trait;
use retry_safe_core::BackendError;
use std::hash::Hash;

/// What a limiter can fail with (a limited request is a [`Decision`], not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request's cost is larger than a quota's burst: it would never pass.
    #[error(transparent)]
    CostExceedsBurst(#[from] CostExceedsBurst),
    /// The shared backend (Redis) failed: unavailable (fail-closed limiters report it),
    /// misconfigured (a single-node connection on a Redis Cluster node; no fail mode turns it
    /// into a local decision) or holding state this release cannot read.
    #[error("the rate-limit backend failed")]
    Backend(#[from] BackendError),
}

/// A keyed rate limiter the [`KeyedRateLimitLayer`] can ask.
///
/// Implemented by [`KeyedLimiter`] (in memory) and, with the `redis` feature, by
/// `RedisLimiter` (fleet-wide).
///
#[cfg_attr(
    feature = "tower",
    doc = "[`KeyedRateLimitLayer`]: crate::KeyedRateLimitLayer"
)]
#[cfg_attr(
    not(feature = "tower"),
    doc = "[`KeyedRateLimitLayer`]: crate#features"
)]
#[async_trait]
pub trait Limiter<K: ?Sized + Sync>: Send + Sync + 'static {
    /// Decides one request of `cost` for `key`, counting it if it passes.
    async fn check(&self, key: &K, cost: u32) -> Result<Decision, Error>;

    /// The same decision when it needs no I/O (an in-memory limiter decides in place), so the
    /// layer neither boxes a future nor clones its inner service for it; `None` (the default)
    /// when it must be awaited through [`check`](Limiter::check).
    fn check_now(&self, key: &K, cost: u32) -> Option<Result<Decision, Error>> {
        let _ = (key, cost);
        None
    }

    /// The quotas enforced (for the `RateLimit-Policy` header).
    fn quotas(&self) -> &Quotas;
}

#[async_trait]
impl<K, C> Limiter<K> for KeyedLimiter<K, C>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    C: Clock,
{
    async fn check(&self, key: &K, cost: u32) -> Result<Decision, Error> {
        Ok(KeyedLimiter::check(self, key, cost)?)
    }

    fn check_now(&self, key: &K, cost: u32) -> Option<Result<Decision, Error>> {
        Some(KeyedLimiter::check(self, key, cost).map_err(Error::from))
    }

    fn quotas(&self) -> &Quotas {
        KeyedLimiter::quotas(self)
    }
}

#[async_trait]
impl<K: ?Sized + Sync, L: Limiter<K> + ?Sized> Limiter<K> for std::sync::Arc<L> {
    async fn check(&self, key: &K, cost: u32) -> Result<Decision, Error> {
        (**self).check(key, cost).await
    }

    fn check_now(&self, key: &K, cost: u32) -> Option<Result<Decision, Error>> {
        (**self).check_now(key, cost)
    }

    fn quotas(&self) -> &Quotas {
        (**self).quotas()
    }
}
