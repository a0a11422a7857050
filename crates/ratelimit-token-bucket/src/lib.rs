//! Per-key request rate limits with burst, in memory or shared by a fleet on Redis.
//!
//! "Each user may make 10 requests per second, with bursts of 20, and 1000 per hour": a
//! [`Quota`] is one such limit, [`Quotas`] a set checked all-or-nothing, and the decision is
//! GCRA — a token bucket kept as one timestamp per key, in integer nanoseconds, on an injected
//! [`Clock`].
//!
//! ```
//! use ratelimit_token_bucket::{Decision, ManualClock, KeyedLimiter, Quota, Quotas};
//! use std::time::Duration;
//!
//! let quotas = Quotas::new([
//!     Quota::per_second(10).burst(20).named("per-second"),
//!     Quota::per_hour(1000).named("per-hour"),
//! ])?;
//! let clock = ManualClock::new();
//! let limiter = KeyedLimiter::with_clock(quotas, clock.clone());
//!
//! // A burst of 20 passes at once, the 21st waits exactly one emission interval.
//! for _ in 0..20 {
//!     assert!(limiter.check(&"user-42", 1)?.is_allowed());
//! }
//! let Decision::Limited(limited) = limiter.check(&"user-42", 1)? else { unreachable!() };
//! assert_eq!(limited.retry_after(), Duration::from_millis(100));
//!
//! // A request that costs more than the burst could never pass: a typed error, not a 429.
//! assert!(limiter.check(&"user-42", 21).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! | type | state | use |
//! |---|---|---|
//! | [`DirectLimiter`] | one atomic TAT | one global limit |
//! | [`KeyedLimiter`] | sharded map, idle keys dropped | per user, per IP, per API key |
//! | `RedisLimiter` (feature `redis`) | one Redis key per limited key, one Lua script per decision | one limit for a whole fleet, exact |
//! | `LeasedLimiter` (feature `redis`) | a lease of each key's fleet budget per server, renewed in the background | one limit for a whole fleet, decided in memory, overshoot bounded |
//! | `KeyedRateLimitLayer` (feature `tower`) | — | 429 + `Retry-After` + `RateLimit` headers |
//!
//! The algorithm is described in [`gcra`]; the HTTP behaviour in the `middleware` module.
//!
//! # With axum
//! ```
//! use axum::{routing::get, Router};
//! use ratelimit_token_bucket::{KeyedLimiter, Quota, Quotas, KeyedRateLimitLayer};
//!
//! let quotas = Quotas::new([Quota::per_second(20).burst(40)])?;
//! let by_api_key = |parts: &http::request::Parts| {
//!     parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned)
//! };
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "ok" }))
//!     .layer(KeyedRateLimitLayer::new(KeyedLimiter::new(quotas), by_api_key));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//! | feature | default | adds |
//! |---|---|---|
//! | `tower` | yes | `KeyedRateLimitLayer`: 429 + `Retry-After` + `RateLimit` headers + problem+json |
//! | `redis` | no | `RedisLimiter` and `LeasedLimiter`: one limit for a whole fleet |
//! | `metrics` | no | `ratelimit_requests_total`, `ratelimit_fail_open_total` through the `metrics` facade |
#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod direct;
pub mod gcra;
mod keyed;
mod limiter;
mod quota;

#[cfg(feature = "redis")]
mod leased;
#[cfg(feature = "tower")]
mod middleware;
#[cfg(feature = "redis")]
mod redis_limiter;

pub use direct::DirectLimiter;
pub use gcra::{Allowed, CostExceedsBurst, Decision, Limited, Quotas};
pub use keyed::KeyedLimiter;
pub use limiter::{Error, Limiter};
pub use quota::{Quota, QuotaError, MAX_QUOTAS, MAX_WINDOW};
pub use retry_safe_core::{
    BackendError, BoxError, Breaker, ClientIp, Clock, FailMode, IpNet, ManualClock, SystemClock,
};

#[cfg(feature = "redis")]
pub use leased::{Lease, LeasedLimiter};
#[cfg(feature = "tower")]
pub use middleware::{
    KeyedRateLimitFuture, KeyedRateLimitLayer, KeyedRateLimitService, MetricsSnapshot,
};
#[cfg(feature = "redis")]
pub use redis_limiter::{RedisConnection, RedisLimiter, RedisRunner, RedisSettings};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
