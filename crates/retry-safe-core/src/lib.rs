//! The shared seams of the retry-safe crates.
//!
//! Every crate of the workspace builds on these few pieces instead of its own copy, and re-exports
//! the ones its API mentions, so users rarely name this crate directly:
//!
//! - [`Clock`]: monotonic and wall time, injected ([`SystemClock`], [`ManualClock`], and
//!   [`TokioClock`] with the `tokio` feature);
//! - [`FailMode`]: fail closed or open when a backend is unreachable; [`BoxError`]; [`Breaker`],
//!   which fails calls at once while a backend is known down;
//! - [`Problem`]: RFC 9457 problem details with a stable `code`, `Retry-After` and the conversion
//!   into an [`http::Response`]; [`PROBLEM_JSON`], [`retry_after_secs`], [`is_problem`];
//! - [`grpc`]: the gRPC status of a rejection (one mapping table for every layer) and the
//!   trailers-only response sent to gRPC requests ([`Problem::into_response_for`]);
//! - [`headers`]: the header names the layers share;
//! - [`ClientIp`]: the client's address for limits keyed by source, from the peer or — behind
//!   trusted proxies only — the right-most untrusted `Forwarded` / `X-Forwarded-For` entry.
//!
//! No I/O happens here.
//!
//! ```
//! use retry_safe_core::{Clock, ManualClock, Problem};
//! use http::StatusCode;
//! use std::time::Duration;
//!
//! // A lease that expires after 5 s of (manual) time…
//! let clock = ManualClock::new();
//! let expires = clock.now() + Duration::from_secs(5);
//! clock.advance(Duration::from_secs(2));
//!
//! // …and the answer to a request that found it still held.
//! let res: http::Response<bytes::Bytes> =
//!     Problem::new(StatusCode::CONFLICT, "idempotency_request_in_flight", "Request in progress")
//!         .with_retry_after(expires - clock.now())
//!         .into_response();
//! assert_eq!(res.status(), 409);
//! assert_eq!(res.headers()["retry-after"], "3");
//! ```
//!
//! # Features
//! | feature | adds |
//! |---|---|
//! | `body` | `body::read_body`: a request body read whole within a size and a time limit, as every body-reading layer does |
//! | `tokio` | [`TokioClock`], which follows `tokio::time::pause` / `advance` |
//! | `axum` | `axum_core::response::IntoResponse` for [`Problem`] |
//! | `redis` | `redis::RedisRunner`: the connection, breakers and failure rule every Redis-backed crate shares; [`BackendError`] is always there |
//! | `cluster` | the same runner on a Redis Cluster, a breaker per master |
//!
//! # With axum
//! ```
//! use axum::{response::Response, routing::get, Router};
//! use http::StatusCode;
//! use retry_safe_core::Problem;
//!
//! async fn order() -> Response {
//!     Problem::new(StatusCode::NOT_FOUND, "order_not_found", "Order not found")
//!         .with_detail("no order ord_404")
//!         .into_response()
//! }
//! let app: Router = Router::new().route("/orders/{id}", get(order));
//! ```
//!
#![cfg_attr(feature = "tokio", doc = "[`TokioClock`]: crate::TokioClock")]
#![cfg_attr(not(feature = "tokio"), doc = "[`TokioClock`]: crate#features")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
#[cfg(feature = "body")]
#[cfg_attr(docsrs, doc(cfg(feature = "body")))]
pub mod body;
mod breaker;
mod client_ip;
mod clock;
mod fail;
pub mod future;
pub mod grpc;
pub mod headers;
mod problem;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod shards;
mod stable_hash;

/// The time of a PostgreSQL statement, as SQL text: the `$pinned` parameter (µs since the Unix
/// epoch) when it is not `NULL`, else the database's `clock_timestamp()` plus the `$offset`
/// parameter (µs). One clock — the database's — for every server of a fleet, movable by tests.
/// Used by the PostgreSQL stores of the workspace.
///
/// ```
/// const NOW: &str = retry_safe_core::postgres_now!("$5", "$6");
/// assert!(NOW.starts_with("COALESCE(timestamptz 'epoch' + $5::bigint"));
/// ```
#[macro_export]
macro_rules! postgres_now {
    ($pinned:literal, $offset:literal) => {
        concat!(
            "COALESCE(timestamptz 'epoch' + ",
            $pinned,
            "::bigint * interval '1 microsecond', clock_timestamp() + ",
            $offset,
            "::bigint * interval '1 microsecond')"
        )
    };
}

pub use backend::{BackendCodes, BackendError};
pub use breaker::{Breaker, BreakerOpen, BreakerPermit, BreakerState};
pub use client_ip::{ClientIp, PeerFn};
#[cfg(feature = "tokio")]
pub use clock::TokioClock;
pub use clock::{
    duration_to_micros, duration_to_micros_i64, duration_to_nanos, Clock, ManualClock, SystemClock,
    TimeOffset,
};
pub use fail::{BoxError, FailMode};
pub use ipnet::IpNet;
pub use problem::{
    ceil_secs, is_problem, retry_after_secs, Problem, PROBLEM_JSON, RESERVED_MEMBERS,
};
pub use shards::Shards;
pub use stable_hash::stable_hash;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
