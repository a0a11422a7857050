//! Extract + inject of `traceparent` and `tracestate` against OpenTelemetry's
//! `TraceContextPropagator`, in one run.
//!
//! Run: `cargo xtask bench trace` (or `cargo bench -p trace-ctx --bench propagation`).
//! Both read the same incoming headers from a `HashMap<String, String>` carrier (OpenTelemetry's
//! built-in carrier) and write a `traceparent` and `tracestate` for an outgoing call into a fresh
//! carrier. `traceparent only`: the same with no `tracestate`.

use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use std::hint::black_box;
use trace_ctx::{TraceParent, TraceState};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

fn carrier(with_state: bool) -> HashMap<String, String> {
    let mut c = HashMap::new();
    c.insert("traceparent".to_owned(), TRACEPARENT.to_owned());
    if with_state {
        c.insert("tracestate".to_owned(), TRACESTATE.to_owned());
    }
    c
}

fn ours(incoming: &HashMap<String, String>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Some(tp) = incoming
        .get("traceparent")
        .and_then(|v| TraceParent::parse(v.as_bytes()).ok())
    else {
        return out;
    };
    let state = incoming
        .get("tracestate")
        .and_then(|v| TraceState::parse([v.as_bytes()]).ok())
        .unwrap_or_default();
    let child = tp.with_parent(trace_ctx::SpanId::random());
    out.insert(
        "traceparent".to_owned(),
        String::from_utf8(child.to_bytes().to_vec()).unwrap(),
    );
    if !state.is_empty() {
        out.insert("tracestate".to_owned(), state.to_string());
    }
    out
}

fn bench(c: &mut Criterion) {
    let propagator = TraceContextPropagator::new();
    let mut group = c.benchmark_group("propagation");
    for (name, with_state) in [
        ("traceparent+tracestate", true),
        ("traceparent only", false),
    ] {
        let incoming = carrier(with_state);
        group.bench_function(format!("ours/{name}"), |b| {
            b.iter(|| black_box(ours(black_box(&incoming))))
        });
        group.bench_function(format!("opentelemetry/{name}"), |b| {
            b.iter(|| {
                let cx = propagator.extract(black_box(&incoming));
                assert!(cx.span().span_context().is_valid());
                let mut out = HashMap::new();
                propagator.inject_context(&cx, &mut out);
                black_box(out)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
