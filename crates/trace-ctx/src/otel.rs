//! Interoperation with OpenTelemetry (feature `opentelemetry`).

use crate::{SpanId, TraceContext, TraceFlags, TraceId, TraceParent};
use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, TraceFlags as OtelFlags, TraceId as OtelTraceId,
    TraceState as OtelTraceState,
};

impl From<TraceId> for OtelTraceId {
    fn from(id: TraceId) -> Self {
        OtelTraceId::from_bytes(id.to_bytes())
    }
}

impl From<SpanId> for OtelSpanId {
    fn from(id: SpanId) -> Self {
        OtelSpanId::from_bytes(id.to_bytes())
    }
}

impl TraceContext {
    /// This request's span as an OpenTelemetry `SpanContext` (remote = false: it is this
    /// server's span), with the `tracestate` carried over.
    pub fn to_span_context(&self) -> SpanContext {
        let state = OtelTraceState::from_key_value(
            self.tracestate()
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .unwrap_or_default();
        SpanContext::new(
            self.trace_id().into(),
            self.span_id().into(),
            OtelFlags::new(self.traceparent().flags.bits()),
            false,
            state,
        )
    }
}

impl TraceParent {
    /// The `traceparent` of an OpenTelemetry span (None for an invalid span context).
    pub fn from_span_context(cx: &SpanContext) -> Option<Self> {
        Some(Self {
            version: 0,
            trace_id: TraceId::from_bytes(cx.trace_id().to_bytes())?,
            parent_id: SpanId::from_bytes(cx.span_id().to_bytes())?,
            flags: TraceFlags::new(cx.trace_flags().to_u8()),
        })
    }
}
