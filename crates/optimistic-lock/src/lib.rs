//! No lost updates over HTTP: versions rendered as strong ETags, `If-Match` → `412`, `428` when a
//! write must be conditional, `304` for `If-None-Match` on reads — RFC 9110 §13 and RFC 6585 §3 —
//! and the compare-and-set that makes the write itself safe.
//!
//! Two clients read an order at version 3 and both change it. With this crate the second write
//! is refused (`412` with the current `ETag`) instead of silently erasing the first:
//!
//! ```
//! use optimistic_lock::{Expected, Version, VersionedMap};
//!
//! let orders: VersionedMap<String, u32> = VersionedMap::new();
//! let v1 = orders.compare_and_set("ord_1", &Expected::Absent, 2).unwrap(); // created: "1"
//!
//! // Alice and Bob both read version 1 (ETag "1") and send If-Match: "1".
//! let alice = orders.compare_and_set("ord_1", &Expected::Version(v1.clone()), 3);
//! let bob = orders.compare_and_set("ord_1", &Expected::Version(v1), 5);
//! assert_eq!(alice, Ok(Version::number(2)));
//! assert_eq!(bob.unwrap_err().current, Some(Version::number(2))); // → 412, ETag: "2"
//! assert_eq!(orders.get("ord_1").unwrap().0, 3);
//! ```
//!
//! The pieces:
//! - [`Version`] (a row version number, an update timestamp or a hash of the representation)
//!   and [`ETag`] / [`TagList`], the RFC 9110 §8.8.3 grammar with strong and weak comparison;
//! - [`Conditions`] and [`evaluate`]: the §13.2.2 evaluation order as plain code;
//! - [`VersionSource`]: where the layer reads a target's current version; [`VersionedMap`] is the
//!   in-memory table with [`VersionedMap::compare_and_set`], and [`PgVersioned`] (feature
//!   `postgres`) the guarded `UPDATE … WHERE version = $expected` on PostgreSQL;
//! - [`OptimisticLockLayer`] (feature `tower`): 428 / 412 / 304 / 400 problem+json, `ETag` on
//!   reads, and the [`Expected`] version in the request's extensions for the handler's write. A
//!   write that loses the race after the check answers with [`Conflict::into_response`], the same
//!   `412`.
//!
//! With an idempotency layer, put this layer **inside** it: a retried write (same
//! `Idempotency-Key`, same `If-Match`) then gets its first attempt's stored response instead of a
//! `412` caused by its own success.
//!
//! # With axum
//! ```
//! use axum::{extract::Path, response::Response, routing::get, Extension, Router};
//! use optimistic_lock::{Expected, OptimisticLockLayer, VersionedMap};
//!
//! let orders: VersionedMap<String, u32> = VersionedMap::new();
//! let writes = orders.clone();
//! let patch = move |Path(id): Path<String>, Extension(expected): Extension<Expected>| async move {
//!     match writes.compare_and_set(id, &expected, 3) {
//!         Ok(v) => Response::builder()
//!             .header("etag", v.etag().to_header_value())
//!             .body(axum::body::Body::from("updated"))
//!             .unwrap(),
//!         Err(conflict) => conflict.into_response(), // lost the race after the check: 412
//!     }
//! };
//! let source = orders.source(|parts| parts.uri.path().strip_prefix("/orders/").map(str::to_owned));
//! let app: Router = Router::new()
//!     .route("/orders/{id}", get(|| async { "{}" }).patch(patch))
//!     .layer(OptimisticLockLayer::new(source));
//! ```
//!
//! # Features
//! | feature | default | adds |
//! |---|---|---|
//! | `tower` | yes | [`OptimisticLockLayer`] |
//! | `postgres` | no | [`PgVersioned`], the compare-and-set on PostgreSQL (sqlx) |
//!
#![cfg_attr(
    feature = "tower",
    doc = "[`OptimisticLockLayer`]: crate::OptimisticLockLayer"
)]
#![cfg_attr(
    not(feature = "tower"),
    doc = "[`OptimisticLockLayer`]: crate#features"
)]
#![cfg_attr(feature = "postgres", doc = "[`PgVersioned`]: crate::PgVersioned")]
#![cfg_attr(not(feature = "postgres"), doc = "[`PgVersioned`]: crate#features")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod etag;
#[cfg(feature = "tower")]
mod middleware;
#[cfg(feature = "postgres")]
mod postgres;
mod precondition;
mod store;

pub use etag::{ETag, ETagError, TagList, Version, MAX_TAGS};
#[cfg(feature = "tower")]
pub use middleware::{OptimisticLockFuture, OptimisticLockLayer, OptimisticLockService};
#[cfg(feature = "postgres")]
pub use postgres::{CasError, InvalidIdentifier, PgVersioned};
pub use precondition::{evaluate, Conditions, Current, Evaluation, Expected, PreconditionError};
pub use retry_safe_core::{BoxError, Clock, ManualClock, SystemClock};
/// The `sqlx` this crate's PostgreSQL helper is built on (feature `postgres`).
#[cfg(feature = "postgres")]
pub use sqlx;
pub use store::{precondition_failed, Conflict, MapSource, VersionSource, VersionedMap};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
