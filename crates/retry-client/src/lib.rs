//! The client half of idempotency: retries that reuse one `Idempotency-Key`, retry only what is
//! safe, honour the server's `Retry-After` and `RateLimit`, back off with full jitter within a
//! deadline, and cannot amplify an outage (a shared retry budget, optional adaptive throttling).
//!
//! The classic failure — the server created the order but the response never arrived — ends in
//! one order and a success for the caller: the retry carries the same key, and the server replays
//! its first answer.
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use retry_client::{History, Retrier, SafeRetryLayer, RetryPolicy};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let flaky = tower::service_fn(|_req: Request<Full<Bytes>>| async {
//!     let res = Response::builder()
//!         .status(StatusCode::TOO_MANY_REQUESTS)
//!         .header("retry-after", "2")
//!         .body(Full::new(Bytes::new()))
//!         .unwrap();
//!     Ok::<_, std::io::Error>(res)
//! });
//! let client = ServiceBuilder::new()
//!     .layer(SafeRetryLayer::new(Retrier::new(RetryPolicy::default().max_attempts(2))))
//!     .service(flaky);
//! let started = tokio::time::Instant::now();
//! let res = client.oneshot(Request::get("/orders").body(Full::new(Bytes::new())).unwrap()).await.unwrap();
//! assert_eq!(res.status(), 429); // still limited after 2 attempts: the last answer is returned
//! assert_eq!(started.elapsed(), Duration::from_secs(2)); // and the client waited what it was told
//! let history = res.extensions().get::<History>().unwrap();
//! assert_eq!(history.attempts[1].waited, Duration::from_secs(2));
//! # }
//! ```
//!
//! What is retried ([`default_classification`]): a request that never reached the server, any
//! method; a timeout or a broken connection after the request was written, only when the method
//! is idempotent or the request carries an `Idempotency-Key` (the client adds one to POST and
//! PATCH, the same for every attempt); `409` of a keyed request still in flight, `429` and `503`;
//! `500`, `502`, `504` when idempotent or keyed; never `400`, `401`, `403`, `404`, `412`, `413` or
//! `422` — the request must change first.
//!
//! # Features
//! | feature | default | adds |
//! |---|---|---|
//! | `tower` | yes | [`SafeRetryLayer`] for any `Service<http::Request<B>>` client (hyper-util, tonic) |
//! | `reqwest` | no | `RetryMiddleware` for `reqwest-middleware` |
//! | `trace-ctx` | no | a new span id per attempt from the request's `trace_ctx::TraceContext` |
//! | `metrics` | no | `retry_client_attempts_total`, `retry_client_retries_total`, `retry_client_give_ups_total` |
//!
#![cfg_attr(feature = "tower", doc = "[`SafeRetryLayer`]: crate::SafeRetryLayer")]
#![cfg_attr(not(feature = "tower"), doc = "[`SafeRetryLayer`]: crate#features")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod budget;
mod engine;
pub mod hints;
#[cfg(feature = "tower")]
mod middleware;
mod policy;
#[cfg(feature = "reqwest")]
mod reqwest_retry;

pub use budget::{AdaptiveThrottle, RetryBudget};
pub use engine::{classify_error, Attempt, History, Retrier, RetryError, Stop};
#[cfg(feature = "tower")]
pub use middleware::{
    GrpcRetryLayer, GrpcRetryService, SafeRetryLayer, SafeRetryService, ToTransport,
};
pub use policy::{
    default_classification, is_idempotent, Classifier, Failure, KeyFormat, Outcome, Reason,
    RetryPolicy,
};
#[cfg(feature = "reqwest")]
pub use reqwest_retry::RetryMiddleware;
pub use retry_safe_core::{Clock, ManualClock, SystemClock};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
