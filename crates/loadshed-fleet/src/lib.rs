//! Priority-aware load shedding: when a server is too busy, drop the least important work first
//! and keep capacity for the requests that matter.
//!
//! Requests fall into four [`Class`]es, lowest first: test-mode, read, write, critical. Two
//! mechanisms protect the higher ones:
//!
//! - **Reserved capacity** ([`Shedder`], [`Shares`]): each class may fill only its share of the
//!   server's slots (by default test-mode 50 %, read 70 %, write 80 %, critical 100 %), so the top
//!   of the capacity is always free for more important work.
//! - **The fleet usage shedder** (`FleetShedder`, feature `redis`): the same shares applied to
//!   the requests in flight of the whole fleet, counted in Redis with expiring leases — the top of
//!   the *fleet's* capacity stays free for critical work even when every server is busy.
//! - **The overload controller** ([`Controller`]): when admitted requests get slower than a target,
//!   it raises a *pressure* that sheds a growing fraction of test-mode traffic, then of reads, then
//!   of writes — never critical requests — and lowers it slowly once latency is back, with a
//!   hysteresis band so a steady load does not oscillate.
//!
//! ```
//! use loadshed_fleet::{Class, ControllerConfig, Shedder, ShedReason};
//! use loadshed_fleet::ManualClock;
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let shedder = Shedder::with_shares(100, Default::default())?
//!     .controller(ControllerConfig::default(), clock.clone());
//! // Two seconds of requests that take 80 ms (the target is 50 ms): the pressure climbs.
//! for _ in 0..20 {
//!     let guard = shedder.admit(Class::Critical)?;
//!     clock.advance(Duration::from_millis(80));
//!     drop(guard);
//!     clock.advance(Duration::from_millis(20));
//! }
//! shedder.tick();
//! assert!(shedder.pressure() > 1.0); // all test-mode traffic is shed now
//! assert_eq!(shedder.admit(Class::TestMode).unwrap_err().reason, ShedReason::Overload);
//! assert!(shedder.admit(Class::Critical).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # With axum
//! ```
//! use axum::{routing::{get, post}, Router};
//! use http::Method;
//! use loadshed_fleet::{DefaultClassifier, PriorityShedLayer, Shedder};
//!
//! // POSTs under /payments/ are critical: shed last, with capacity kept for them.
//! let classifier = DefaultClassifier::new().critical(Method::POST, "/payments/");
//! let app: Router = Router::new()
//!     .route("/orders", get(|| async { "[]" }))
//!     .route("/payments/{id}/capture", post(|| async { "captured" }))
//!     .layer(PriorityShedLayer::new(Shedder::new(64)?, classifier));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//! | feature | default | adds |
//! |---|---|---|
//! | `tower` | yes | `PriorityShedLayer` |
//! | `redis` | no | `FleetShedder`: the fleet usage shedder, the fleet's requests in flight counted in Redis with shares reserved per class |
//! | `cluster` | no | `FleetShedder::connect_cluster` (Redis Cluster) |
//! | `metrics` | no | `loadshed_requests_total`, `loadshed_level`, `loadshed_fleet_fallback_total` through the `metrics` facade |
#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod class;
mod controller;
#[cfg(feature = "redis")]
mod fleet;
#[cfg(feature = "tower")]
mod middleware;
mod shedder;

pub use class::{Class, Classify, DefaultClassifier};
pub use controller::{shed_probability, Controller, ControllerConfig, Step};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use fleet::{FleetError, FleetGuard, FleetShedder};
#[cfg(feature = "tower")]
pub use middleware::{PriorityShedFuture, PriorityShedLayer, PriorityShedService};
#[cfg(feature = "redis")]
pub use ratelimit_concurrent::{FailMode, RedisConnection, RedisRunner, RedisSettings};
#[cfg(feature = "redis")]
pub use retry_safe_core::{BackendError, Breaker};
pub use retry_safe_core::{Clock, ManualClock, SystemClock};
pub use shedder::{ConfigError, Guard, OwnedGuard, Shares, Shed, ShedReason, Shedder, Snapshot};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
