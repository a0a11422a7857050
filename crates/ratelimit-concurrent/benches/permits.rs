//! Acquire + release of one permit, in one run, against tokio's `Semaphore` and tower's
//! `ConcurrencyLimit`.
//!
//! Run: `cargo xtask bench concurrency` (or `cargo bench -p ratelimit-concurrent --bench permits`).
//! `ours/1 key`: `ConcurrencyLimiter::try_acquire` + drop on one key; `ours/10k keys`: the same
//! round-robin over 10 000 keys (each acquisition creates the key's state, each release removes
//! it). `tokio Semaphore`: `try_acquire` + drop on one semaphore (no key: the floor of any permit).
//! `tower ConcurrencyLimit`: `poll_ready` + `call` + poll of the response future, around a service
//! that answers at once. `map of tokio Semaphores`: the keyed limiter one writes by hand — a
//! mutex-guarded `HashMap<key, Arc<Semaphore>>` (which never frees a key) + `try_acquire_owned`.

use criterion::{criterion_group, criterion_main, Criterion};
use ratelimit_concurrent::ConcurrencyLimiter;
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use tokio::sync::Semaphore;
use tower::Service;

fn noop_waker() -> Waker {
    const VTABLE: RawWakerVTable = RawWakerVTable::new(
        |_| RawWaker::new(std::ptr::null(), &VTABLE),
        |_| {},
        |_| {},
        |_| {},
    );
    // SAFETY: every vtable function ignores the (null) data pointer.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("concurrency");

    let ours = ConcurrencyLimiter::new(64).unwrap();
    group.bench_function("ours/1 key", |b| {
        b.iter(|| drop(black_box(ours.try_acquire(&7u64).unwrap())))
    });
    let mut k = 0u64;
    group.bench_function("ours/10k keys", |b| {
        b.iter(|| {
            k = (k + 1) % 10_000;
            drop(black_box(ours.try_acquire(&k).unwrap()))
        })
    });

    // What one writes by hand for per-key caps: a map of semaphores (never shrinks).
    let by_hand: parking_lot::Mutex<std::collections::HashMap<u64, Arc<Semaphore>>> =
        Default::default();
    let mut k = 0u64;
    group.bench_function("map of tokio Semaphores/10k keys", |b| {
        b.iter(|| {
            k = (k + 1) % 10_000;
            let semaphore = by_hand
                .lock()
                .entry(k)
                .or_insert_with(|| Arc::new(Semaphore::new(64)))
                .clone();
            drop(black_box(semaphore.try_acquire_owned().unwrap()))
        })
    });

    let semaphore = tokio::sync::Semaphore::new(64);
    group.bench_function("tokio Semaphore", |b| {
        b.iter(|| drop(black_box(semaphore.try_acquire().unwrap())))
    });

    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut limited = tower::limit::ConcurrencyLimit::new(
        tower::service_fn(|x: u64| std::future::ready(Ok::<_, Infallible>(x))),
        64,
    );
    group.bench_function("tower ConcurrencyLimit", |b| {
        b.iter(|| {
            assert!(limited.poll_ready(&mut cx).is_ready());
            let mut fut = pin!(limited.call(black_box(1)));
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(r) => black_box(r.unwrap()),
                Poll::Pending => unreachable!("the inner service answers at once"),
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
