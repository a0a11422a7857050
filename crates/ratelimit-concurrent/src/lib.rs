//! Per-key caps on requests in flight: "each API key may have at most 20 requests in progress".
//!
//! Rate limits bound how often a client may start requests; they do not bound how much work it has
//! running, and slow, resource-hungry endpoints are where that matters. A [`ConcurrencyLimiter`]
//! hands out one [`Permit`] per request in flight; dropping the permit (the request finished,
//! failed, panicked or was cancelled) frees the slot.
//!
//! ```
//! use ratelimit_concurrent::{ConcurrencyLimiter, Reason};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // 20 in flight per key; the 21st waits up to 100 ms in a queue of at most 10.
//! let limiter = ConcurrencyLimiter::new(20).unwrap().queue(10, Duration::from_millis(100));
//! let permits: Vec<_> = (0..20).map(|_| limiter.try_acquire(&"key-1").unwrap()).collect();
//! let refused = limiter.acquire(&"key-1").await.unwrap_err();
//! assert_eq!(refused.reason, Reason::TimedOut);
//! drop(permits);
//! assert_eq!(limiter.active_keys(), 0); // no state is kept for idle keys
//! # }
//! ```
//!
//! | type | state | use |
//! |---|---|---|
//! | [`ConcurrencyLimiter`] | sharded map of keys with requests in flight or waiting | one server |
//! | `RedisConcurrencyLimiter` (feature `redis`) | a sorted set of leases per key | a whole fleet |
//! | [`Vegas`] | pure controller | a cap that follows the service's latency |
//! | `KeyedConcurrencyLimitLayer` (feature `tower`) | — | 429 + `Retry-After` + problem+json |
//!
//! # With axum
//! ```
//! use axum::{routing::get, Router};
//! use ratelimit_concurrent::{KeyedConcurrencyLimitLayer, ConcurrencyLimiter};
//!
//! // At most 8 requests in flight per API key; requests without one are not limited.
//! let by_api_key = |parts: &http::request::Parts| {
//!     parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned)
//! };
//! let app: Router = Router::new()
//!     .route("/reports", get(|| async { "report" }))
//!     .layer(KeyedConcurrencyLimitLayer::new(ConcurrencyLimiter::new(8)?, by_api_key));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//! | feature | default | adds |
//! |---|---|---|
//! | `tower` | yes | `KeyedConcurrencyLimitLayer` |
//! | `redis` | no | `RedisConcurrencyLimiter`: leases shared by a fleet |
//! | `metrics` | no | `concurrency_permits_total`, `concurrency_queue_wait_seconds` through the `metrics` facade |
#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod adaptive;
mod limiter;
#[cfg(feature = "tower")]
mod middleware;
#[cfg(feature = "redis")]
mod redis_leases;

pub use adaptive::Vegas;
pub use limiter::{ConcurrencyLimiter, ConfigError, Error, Limited, OwnedPermit, Permit, Reason};
#[cfg(all(feature = "tower", feature = "redis"))]
pub use middleware::{Caps, CapsPermit};
#[cfg(feature = "tower")]
pub use middleware::{
    KeyedConcurrencyLimitFuture, KeyedConcurrencyLimitLayer, KeyedConcurrencyLimitService,
    PermitSource,
};
#[cfg(feature = "redis")]
pub use redis_leases::{
    Lease, RedisConcurrencyLimiter, RedisConnection, RedisRunner, RedisSettings,
};
pub use retry_safe_core::{
    BackendError, BoxError, Breaker, ClientIp, Clock, FailMode, IpNet, ManualClock, SystemClock,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
