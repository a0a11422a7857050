//! The per-request decision: classify + admit + release, with and without the controller.
//!
//! Run: `cargo xtask bench loadshed-decision` (or `cargo bench -p loadshed-fleet --bench admit`).
//! Goal: under 100 ns per request.

use criterion::{criterion_group, criterion_main, Criterion};
use loadshed_fleet::SystemClock;
use loadshed_fleet::{Class, Classify, ControllerConfig, DefaultClassifier, Shedder};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("loadshed");
    let plain = Shedder::new(1024).unwrap();
    group.bench_function("admit+release", |b| {
        b.iter(|| drop(black_box(plain.admit(black_box(Class::Write)).unwrap())))
    });
    let controlled = Shedder::new(1024)
        .unwrap()
        .controller(ControllerConfig::default(), SystemClock::new());
    group.bench_function("admit+release with controller", |b| {
        b.iter(|| {
            drop(black_box(
                controlled.admit(black_box(Class::Write)).unwrap(),
            ))
        })
    });
    let classifier = DefaultClassifier::new().critical(http::Method::POST, "/v1/payments/");
    let (parts, ()) = http::Request::post("/v1/orders")
        .header("authorization", "Bearer sk_live_123")
        .body(())
        .unwrap()
        .into_parts();
    group.bench_function("classify+admit+release with controller", |b| {
        b.iter(|| {
            let class = classifier.classify(black_box(&parts));
            drop(black_box(controlled.admit(class).unwrap()))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
