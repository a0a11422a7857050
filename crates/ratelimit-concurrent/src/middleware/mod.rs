//! The tower integration (feature `tower`): [`KeyedConcurrencyLimitLayer`].
use crate::{ConcurrencyLimiter, Error};
use std::future::Future;
use std::hash::Hash;

mod future;
mod layer;
mod service;

pub use self::future::KeyedConcurrencyLimitFuture;
pub use self::layer::KeyedConcurrencyLimitLayer;
pub use self::service::KeyedConcurrencyLimitService;

/// Where a [`KeyedConcurrencyLimitLayer`] takes its permits: a permit is held while the request runs
/// and frees its slot when dropped.
pub trait PermitSource<K>: Clone + Send + Sync + 'static {
    /// The slot held while a request runs.
    type Permit: Send + 'static;

    /// A permit for `key`, or why there is none.
    fn acquire_permit(&self, key: &K) -> impl Future<Output = Result<Self::Permit, Error>> + Send;

    /// The same answer when it needs no waiting and no I/O (an in-memory limiter with a free slot,
    /// or one without a queue), so the layer neither boxes a future nor clones its inner service
    /// for it; `None` (the default) when it must be awaited through
    /// [`acquire_permit`](PermitSource::acquire_permit).
    fn acquire_now(&self, key: &K) -> Option<Result<Self::Permit, Error>> {
        let _ = key;
        None
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> PermitSource<K> for ConcurrencyLimiter<K> {
    type Permit = crate::OwnedPermit<K>;

    async fn acquire_permit(&self, key: &K) -> Result<Self::Permit, Error> {
        self.acquire_owned(key).await.map_err(Error::Limited)
    }

    #[inline]
    fn acquire_now(&self, key: &K) -> Option<Result<Self::Permit, Error>> {
        match self.try_acquire_owned(key) {
            Ok(permit) => Some(Ok(permit)),
            // A full key may still get a slot by waiting in the queue.
            Err(_) if self.queues() => None,
            Err(limited) => Some(Err(Error::Limited(limited))),
        }
    }
}

#[cfg(feature = "redis")]
impl<K: std::fmt::Display + Sync> PermitSource<K> for crate::RedisConcurrencyLimiter {
    type Permit = crate::Lease;

    async fn acquire_permit(&self, key: &K) -> Result<Self::Permit, Error> {
        self.acquire(&key.to_string()).await
    }
}

/// A cap on requests in flight chosen at run time: per server ([`ConcurrencyLimiter`]) or
/// fleet-wide on Redis ([`RedisConcurrencyLimiter`](crate::RedisConcurrencyLimiter)).
///
/// ```
/// use ratelimit_concurrent::{Caps, ConcurrencyLimiter, KeyedConcurrencyLimitLayer};
///
/// let caps: Caps<u64> = Caps::Local(ConcurrencyLimiter::new(8).unwrap());
/// let _layer = KeyedConcurrencyLimitLayer::new(caps, |_: &http::request::Parts| Some(1u64));
/// ```
#[cfg(feature = "redis")]
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Caps<K> {
    /// This server's own count.
    Local(ConcurrencyLimiter<K>),
    /// The fleet's count, on Redis or a Redis Cluster.
    Fleet(crate::RedisConcurrencyLimiter),
}

/// A slot of [`Caps`], released when dropped.
#[cfg(feature = "redis")]
#[derive(Debug)]
#[non_exhaustive]
pub enum CapsPermit<K> {
    /// A slot of this server's count.
    Local(crate::OwnedPermit<K>),
    /// A lease on the fleet's count.
    Fleet(crate::Lease),
}

#[cfg(feature = "redis")]
impl<K> PermitSource<K> for Caps<K>
where
    K: Hash + Eq + Clone + std::fmt::Display + Send + Sync + 'static,
{
    type Permit = CapsPermit<K>;

    async fn acquire_permit(&self, key: &K) -> Result<Self::Permit, Error> {
        match self {
            Caps::Local(l) => l.acquire_permit(key).await.map(CapsPermit::Local),
            Caps::Fleet(l) => l.acquire_permit(key).await.map(CapsPermit::Fleet),
        }
    }

    fn acquire_now(&self, key: &K) -> Option<Result<Self::Permit, Error>> {
        match self {
            Caps::Local(l) => l.acquire_now(key).map(|r| r.map(CapsPermit::Local)),
            Caps::Fleet(_) => None, // asked over the network
        }
    }
}
