//! The trace context of one request: extracted from its headers, handed to handlers, propagated
//! to outgoing calls.

use crate::ids::SpanId;
use crate::request_id::{RequestId, X_REQUEST_ID};
use crate::traceparent::{TraceParent, TraceParentError};
use crate::tracestate::{Dropped, TraceState};
use crate::TraceId;
use http::HeaderMap;

/// The `traceparent` header.
pub use retry_safe_core::headers::TRACEPARENT;
/// The `tracestate` header.
pub use retry_safe_core::headers::TRACESTATE;

/// One request's place in its trace, and its request id (a request extension under the layer).
///
/// ```
/// use trace_ctx::TraceContext;
///
/// let mut incoming = http::HeaderMap::new();
/// incoming.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// incoming.insert("x-request-id", "req-123".parse().unwrap());
/// let ctx = TraceContext::from_headers(&incoming);
/// assert_eq!(ctx.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(ctx.request_id().as_str(), "req-123");
///
/// // An outgoing call: same trace, a new child span, the request id passed on.
/// let mut outgoing = http::HeaderMap::new();
/// let child = ctx.inject(&mut outgoing);
/// let sent = outgoing["traceparent"].to_str().unwrap();
/// assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
/// assert!(sent.contains(&child.to_string()));
/// assert_eq!(outgoing["x-request-id"], "req-123");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// This request's span in the trace: `parent_id` is this server's span id.
    current: TraceParent,
    /// The caller's span, when a valid `traceparent` came in.
    caller: Option<SpanId>,
    tracestate: TraceState,
    request_id: RequestId,
    /// Why an incoming `traceparent` was not used, when one was sent.
    rejected: Option<TraceParentError>,
    /// The received `tracestate` members that were left out, with the reasons.
    dropped: Vec<Dropped>,
}

impl TraceContext {
    /// Reads `traceparent`, `tracestate` and `X-Request-Id`. Never fails: an absent or invalid
    /// `traceparent` starts a new trace (sampled) and its `tracestate` is ignored; invalid or
    /// repeated `tracestate` members are dropped one by one and the valid ones kept (see
    /// [`TraceState::parse_lossy`] and [`dropped_tracestate`](Self::dropped_tracestate)); an absent
    /// or unsafe request id is replaced by a generated one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let request_id = headers
            .get(X_REQUEST_ID)
            .and_then(|v| RequestId::parse(v.as_bytes()))
            .unwrap_or_else(RequestId::generate);
        let mut fields = headers.get_all(TRACEPARENT).iter();
        let parsed = match (fields.next(), fields.next()) {
            (None, _) => None,
            (Some(one), None) => Some(TraceParent::parse(one.as_bytes())),
            // Several traceparent fields: ambiguous, so invalid.
            (Some(_), Some(_)) => Some(Err(TraceParentError::Malformed)),
        };
        match parsed {
            Some(Ok(parent)) => {
                let (tracestate, dropped) = TraceState::parse_lossy(
                    headers.get_all(TRACESTATE).iter().map(|v| v.as_bytes()),
                );
                Self {
                    current: parent.with_parent(SpanId::random()),
                    caller: Some(parent.parent_id),
                    tracestate,
                    request_id,
                    rejected: None,
                    dropped,
                }
            }
            Some(Err(e)) => Self::root(request_id, Some(e)),
            None => Self::root(request_id, None),
        }
    }

    /// A new trace (no caller).
    pub fn new_root() -> Self {
        Self::root(RequestId::generate(), None)
    }

    fn root(request_id: RequestId, rejected: Option<TraceParentError>) -> Self {
        Self {
            current: TraceParent::new_root(true),
            caller: None,
            tracestate: TraceState::new(),
            request_id,
            rejected,
            dropped: Vec::new(),
        }
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.current.trace_id
    }

    /// This server's span id for the request.
    pub fn span_id(&self) -> SpanId {
        self.current.parent_id
    }

    /// The caller's span id, if the request came with a valid `traceparent`.
    pub fn caller_span_id(&self) -> Option<SpanId> {
        self.caller
    }

    /// The received `tracestate` members that were left out, with the reasons (for logging).
    pub fn dropped_tracestate(&self) -> &[Dropped] {
        &self.dropped
    }

    /// Why the incoming `traceparent` was not used, when one was sent and was invalid.
    pub fn rejected_traceparent(&self) -> Option<TraceParentError> {
        self.rejected
    }

    /// The `traceparent` naming this request's span (for a `traceresponse` or logs).
    pub fn traceparent(&self) -> TraceParent {
        self.current
    }

    /// The `tracestate` (received, or changed with [`tracestate_mut`](Self::tracestate_mut)).
    pub fn tracestate(&self) -> &TraceState {
        &self.tracestate
    }

    /// The `tracestate`, to set this vendor's member before calls go out.
    pub fn tracestate_mut(&mut self) -> &mut TraceState {
        &mut self.tracestate
    }

    /// The request id.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// A `traceparent` for an outgoing call: same trace, a new child span id.
    pub fn child(&self) -> TraceParent {
        self.current.with_parent(SpanId::random())
    }

    /// Writes `traceparent` (a new child span), `tracestate` (when not empty) and `X-Request-Id`
    /// into the headers of an outgoing request — from reqwest, hyper or any `http` client — and
    /// returns the child span id.
    pub fn inject(&self, headers: &mut HeaderMap) -> SpanId {
        let span = self.inject_trace(headers);
        headers.insert(X_REQUEST_ID, self.request_id.to_header_value());
        span
    }

    /// As [`inject`](Self::inject), without `X-Request-Id`: for calls to third parties, who
    /// should see the trace but not this service's request ids.
    pub fn inject_trace(&self, headers: &mut HeaderMap) -> SpanId {
        let child = self.child();
        headers.insert(TRACEPARENT, child.to_header_value());
        match self.tracestate.to_header_value() {
            Some(v) => headers.insert(TRACESTATE, v),
            None => headers.remove(TRACESTATE),
        };
        child.parent_id
    }
}
