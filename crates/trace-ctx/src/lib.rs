//! W3C Trace Context, request ids and the problem+json error envelope.
//!
//! "Attach request ids, trace ids, latency and error tags so teams can debug distributed systems
//! quickly": the [`TraceContextLayer`], outermost in a service, gives every request a
//! [`TraceContext`] (its trace from `traceparent`/`tracestate`, or a new one; its request id from
//! `X-Request-Id`, or a new one), echoes the request id, and turns every RFC 9457 problem body
//! produced inside it into the envelope below. Outgoing calls carry the trace on with
//! [`TraceContext::inject`].
//!
//! ```
//! use trace_ctx::{TraceParent, TraceState};
//!
//! let tp = TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")?;
//! assert!(tp.flags.sampled());
//! assert_eq!(tp.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//!
//! // Invalid input is a typed error (the layer then starts a new trace, never fails a request).
//! assert!(TraceParent::parse(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_err());
//!
//! let mut state = TraceState::parse([&b"congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"[..]])?;
//! state.insert("rojo", "00f067aa0ba902b8")?; // an updated member moves to the front
//! assert_eq!(state.to_string(), "rojo=00f067aa0ba902b8,congo=t61rcWkgMzE");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The envelope (RFC 9457 members plus extensions):
//! `{"type", "title", "status", "detail", "instance", "error_code", "request_id", "trace_id",
//! "latency_ms"}` — see [`problem`].
//!
//! # With axum
//! ```
//! use axum::{response::Response, routing::get, Router};
//! use http::StatusCode;
//! use trace_ctx::{Problem, TraceContextLayer};
//!
//! async fn charge() -> Response {
//!     Problem::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "Upstream timed out")
//!         .with_detail("the payment provider did not answer within 1 s")
//!         .into_response()
//! }
//! // Outermost: every problem body inside gets request_id, trace_id and latency_ms.
//! let app: Router = Router::new().route("/charges", get(charge)).layer(TraceContextLayer::new());
//! ```
//!
//! # Features
//! | feature | default | adds |
//! |---|---|---|
//! | `tower` | yes | [`TraceContextLayer`] |
//! | `opentelemetry` | no | conversions to and from OpenTelemetry's `SpanContext` |
//!
#![cfg_attr(
    feature = "tower",
    doc = "[`TraceContextLayer`]: crate::TraceContextLayer"
)]
#![cfg_attr(not(feature = "tower"), doc = "[`TraceContextLayer`]: crate#features")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod context;
mod ids;
#[cfg(feature = "tower")]
mod middleware;
#[cfg(feature = "opentelemetry")]
mod otel;
pub mod problem;
pub mod request_id;
mod traceparent;
mod tracestate;

pub use context::{TraceContext, TRACEPARENT, TRACESTATE};
pub use ids::{SpanId, TraceId};
#[cfg(feature = "tower")]
pub use middleware::{TraceContextFuture, TraceContextLayer, TraceContextService};
pub use problem::{is_problem, Problem, PROBLEM_JSON};
pub use request_id::{RequestId, X_REQUEST_ID};
pub use traceparent::{TraceFlags, TraceParent, TraceParentError};
pub use tracestate::{
    valid_tracestate_key, valid_tracestate_value, Dropped, TraceState, TraceStateError,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
