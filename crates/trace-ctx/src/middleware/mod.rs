//! The tower layer (feature `tower`): [`TraceLayer`].
//!
//! Placed outermost, for each request it:
//! 1. reads the trace context and request id ([`TraceContext::from_headers`](crate::TraceContext::from_headers); never fails) and
//!    inserts the [`TraceContext`](crate::TraceContext) into the request's extensions for handlers and inner layers;
//! 2. runs the inner service inside a `tracing` span `request` carrying `request_id`, `trace_id`,
//!    `span_id`, method and path;
//! 3. echoes `X-Request-Id` on the response;
//! 4. measures the latency and, when the response is `application/problem+json` (up to
//!    [`max_problem_bytes`](TraceLayer::max_problem_bytes)), adds `request_id`, `trace_id`,
//!    `latency_ms`, `error_code` and `instance` to its body (see [`crate::problem::enrich`]).
//!    Other responses stream through untouched.

mod future;
mod layer;
mod service;

pub use self::future::TraceFuture;
pub use self::layer::TraceLayer;
pub use self::service::TraceService;
