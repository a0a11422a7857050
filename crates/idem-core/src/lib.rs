//! `Idempotency-Key` for HTTP APIs: a retried or double-clicked request runs once, and every
//! retry gets the first response back, byte for byte.
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use idem_core::{IdempotencyLayer, IdempotencyPolicy, MemoryStore};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let orders = Arc::new(AtomicU32::new(0));
//! let counter = orders.clone();
//! let mut api = ServiceBuilder::new()
//!     .layer(IdempotencyLayer::new(MemoryStore::new(), IdempotencyPolicy::default().require_key(true)))
//!     .service_fn(move |_req: Request<Full<Bytes>>| {
//!         let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
//!         async move {
//!             let mut res = Response::new(Full::new(Bytes::from(format!("order {n}"))));
//!             *res.status_mut() = StatusCode::CREATED;
//!             Ok::<_, std::convert::Infallible>(res)
//!         }
//!     });
//!
//! let post = || {
//!     Request::post("/orders")
//!         .header("idempotency-key", "8e03978e-40d5-43e8-bc93-6894a57f9324")
//!         .body(Full::new(Bytes::from_static(b"{\"sku\":\"tea\"}")))
//!         .unwrap()
//! };
//! let first = api.ready().await.unwrap().call(post()).await.unwrap();
//! let retry = api.ready().await.unwrap().call(post()).await.unwrap();
//!
//! assert_eq!(orders.load(Ordering::SeqCst), 1); // one order, however often the client retries
//! assert_eq!(retry.status(), StatusCode::CREATED);
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! assert_eq!(
//!     first.into_body().collect().await.unwrap().to_bytes(),
//!     retry.into_body().collect().await.unwrap().to_bytes(),
//! );
//! # });
//! ```
//!
//! The pieces:
//! - [`IdempotencyKey`] parses and validates the header; [`Fingerprint`] hashes the request.
//! - [`IdempotencyStore`] is the contract every backend implements (`begin`, `complete`,
//!   `release`, `purge_expired`); [`MemoryStore`] is the embedded backend, and
//!   `idem-store-redis` / `idem-store-postgres` are the fleet-wide ones.
//! - [`IdempotencyPolicy`] says what the layer does; [`IdempotencyLayer`] (feature `tower`, on by
//!   default) applies it to any tower/axum/hyper service.
//! - [`conformance`] (feature `conformance`) is the test suite every store passes.
//!
//! # Features
//! | feature | default | adds |
//! |---|---|---|
//! | `tower` | yes | [`IdempotencyLayer`], the tower/axum middleware |
//! | `conformance` | no | the store [`conformance`] suite and reference model, for store crates' tests |
//! | `metrics` | no | `idempotency_requests_total` and friends through the `metrics` facade |
//!
//! # With axum
//! ```
//! use axum::{routing::post, Router};
//! use idem_core::{IdempotencyLayer, IdempotencyPolicy, MemoryStore};
//!
//! let policy = IdempotencyPolicy::default()
//!     .require_key(true) // a POST without a key → 400
//!     .scope_with(|parts| {
//!         parts.headers.get("x-tenant").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
//!     });
//! let app: Router = Router::new()
//!     .route("/orders", post(|| async { "created" }))
//!     .layer(IdempotencyLayer::new(MemoryStore::new(), policy));
//! ```
//!
#![cfg_attr(
    feature = "tower",
    doc = "[`IdempotencyLayer`]: crate::IdempotencyLayer"
)]
#![cfg_attr(not(feature = "tower"), doc = "[`IdempotencyLayer`]: crate#features")]
#![cfg_attr(feature = "conformance", doc = "[`conformance`]: crate::conformance")]
#![cfg_attr(not(feature = "conformance"), doc = "[`conformance`]: crate#features")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod attempt;
#[cfg(feature = "conformance")]
pub mod conformance;
mod fingerprint;
mod key;
mod memory;
#[cfg(feature = "tower")]
mod middleware;
mod policy;
mod store;

pub use attempt::{handler_completed, CompletedByHandler, IdempotencyAttempt, PendingAttempt};
pub use fingerprint::Fingerprint;
pub use key::{IdempotencyKey, KeyError, IDEMPOTENCY_KEY, MAX_KEY_LEN};
pub use memory::{MemoryStore, MemoryStoreConfig};
#[cfg(feature = "tower")]
pub use middleware::{
    IdempotencyBody, IdempotencyFuture, IdempotencyLayer, IdempotencyService, MetricsSnapshot,
    IDEMPOTENT_REPLAYED,
};
pub use policy::{IdempotencyPolicy, ScopeFn};
#[cfg(feature = "tower")]
pub use retry_safe_core::TokioClock;
pub use retry_safe_core::{BoxError, Clock, FailMode, ManualClock, Problem, SystemClock};
pub use store::{
    BackendError, BeginOutcome, DecodeError, Fence, IdempotencyStore, StoreError, StoredResponse,
    TimeOffset,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
