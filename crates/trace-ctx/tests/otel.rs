//! The `opentelemetry` feature: a TraceContext and an OpenTelemetry SpanContext describe the same
//! span, and OpenTelemetry's own propagator reads what `inject` writes.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use trace_ctx::{TraceContext, TraceParent};

#[test]
fn span_contexts_convert_both_ways() {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    headers.insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
    let ctx = TraceContext::from_headers(&headers);
    let sc = ctx.to_span_context();
    assert_eq!(
        sc.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(sc.span_id().to_string(), ctx.span_id().to_string());
    assert!(sc.is_sampled());
    assert_eq!(sc.trace_state().get("congo"), Some("t61rcWkgMzE"));
    let back = TraceParent::from_span_context(&sc).unwrap();
    assert_eq!(back.trace_id, ctx.trace_id());
    assert_eq!(back.parent_id, ctx.span_id());
}

#[test]
fn opentelemetry_extracts_what_inject_wrote() {
    let ctx = TraceContext::new_root();
    let mut headers = http::HeaderMap::new();
    let child = ctx.inject(&mut headers);
    let carrier: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let extracted = TraceContextPropagator::new().extract(&carrier);
    let span = extracted.span().span_context().clone();
    assert!(span.is_valid() && span.is_remote());
    assert_eq!(span.trace_id().to_string(), ctx.trace_id().to_string());
    assert_eq!(span.span_id().to_string(), child.to_string());
}
