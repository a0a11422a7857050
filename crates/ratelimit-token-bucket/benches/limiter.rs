//! Decisions per second against the `governor` crate, in one run.
//!
//! Run: `cargo xtask bench ratelimit` (or `cargo bench -p ratelimit-token-bucket --bench limiter`).
//!
//! Both limiters get the same quota, 10^9 per second with a burst of 10^9, so every decision passes
//! and writes its state (the costlier path), each on its default clock. `single`: one limit, no key
//! (`DirectLimiter` vs `governor::RateLimiter::direct`). `keyed`: 10 000 keys visited round-robin,
//! already present (`KeyedLimiter<u64>` vs `governor::RateLimiter::keyed`, a `DashMap`).
//! `2 threads`: both threads hammer the same limiter; the time is per decision of the pair.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use governor::{Quota as GQuota, RateLimiter as GLimiter};
use ratelimit_token_bucket::{DirectLimiter, KeyedLimiter, Quota, Quotas};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const RATE: u32 = 1_000_000_000;
const KEYS: u64 = 10_000;

fn quotas() -> Quotas {
    Quotas::new([Quota::per_second(u64::from(RATE))]).unwrap()
}

fn gquota() -> GQuota {
    GQuota::per_second(NonZeroU32::new(RATE).unwrap())
}

/// Runs `iters` calls of `op` split over `threads` threads; returns the wall time.
fn parallel(threads: u64, iters: u64, op: &(dyn Fn(u64) + Sync)) -> Duration {
    let barrier = Barrier::new(threads as usize + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                let mut i = t * 7919;
                for _ in 0..iters / threads {
                    op(i);
                    i = i.wrapping_add(1);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit");
    group.throughput(Throughput::Elements(1));

    for threads in [1u64, 2] {
        let ours = DirectLimiter::new(quotas());
        group.bench_function(BenchmarkId::new("single/ours", threads), |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, &|_| {
                    black_box(ours.check(1).unwrap());
                })
            })
        });
        let theirs = GLimiter::direct(gquota());
        group.bench_function(BenchmarkId::new("single/governor", threads), |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, &|_| {
                    let _ = black_box(theirs.check());
                })
            })
        });

        let ours = KeyedLimiter::<u64>::new(quotas());
        let theirs = GLimiter::keyed(gquota());
        for k in 0..KEYS {
            ours.check(&k, 1).unwrap();
            let _ = theirs.check_key(&k);
        }
        group.bench_function(BenchmarkId::new("keyed/ours", threads), |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, &|i| {
                    black_box(ours.check(&(i % KEYS), 1).unwrap());
                })
            })
        });
        group.bench_function(BenchmarkId::new("keyed/governor", threads), |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, &|i| {
                    let _ = black_box(theirs.check_key(&(i % KEYS)));
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
