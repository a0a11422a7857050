//! Redis decisions next to a raw `EVALSHA` of a trivial script on the same connection.
//!
//! Run: `cargo xtask bench ratelimit-redis` (or
//! `cargo bench -p ratelimit-token-bucket --features redis --bench redis_limiter`).
//! One client, each call awaited before the next: the figures are round-trip latencies, their
//! inverse the decisions per second of one connection. `decide` is a passing decision on one of
//! 1000 keys (read, decide, write with expiry) under 100/s with a burst of 10^6, so every decision
//! passes and writes; the floor is `EVALSHA` of `return 1`, bare and with the decision's key and
//! arguments.

use criterion::{criterion_group, criterion_main, Criterion};
use ratelimit_token_bucket::{KeyedLimiter, Lease, LeasedLimiter, Quota, Quotas, RedisLimiter};
use std::time::{Duration, Instant};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("bench:rl:{}", std::process::id());
    let quotas = Quotas::new([Quota::per_second(100).burst(1_000_000)]).unwrap();
    let limiter = rt
        .block_on(RedisLimiter::connect(&url, quotas))
        .expect("Redis reachable (cargo xtask bench starts it)")
        .prefix(&prefix);
    let trivial = redis::Script::new("return 1");

    let mut group = c.benchmark_group("redis_limiter");
    group.bench_function("raw_evalsha_return_1", |b| {
        let mut conn = limiter.connection();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let one: i64 = trivial.invoke_async(&mut conn).await.unwrap();
                    assert_eq!(one, 1);
                }
                start.elapsed()
            })
        })
    });
    // The same trivial script carrying the decision's key and arguments: what passing them costs.
    group.bench_function("raw_evalsha_return_1_with_args", |b| {
        let mut conn = limiter.connection();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let one: i64 = trivial
                        .key(format!("{prefix}:{{{}}}", i % 1000))
                        .arg("")
                        .arg("")
                        .arg(1)
                        .arg(10_000_000u64)
                        .arg(10_000_000_000_000u64)
                        .invoke_async(&mut conn)
                        .await
                        .unwrap();
                    assert_eq!(one, 1);
                }
                start.elapsed()
            })
        })
    });
    let mut k = 0u64;
    group.bench_function("decide", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    k = (k + 1) % 1000;
                    let d = limiter.check(&k, 1).await.unwrap();
                    assert!(d.is_allowed());
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

/// A leased limiter's decision (from the held lease; renewals run on a worker thread) next to
/// the in-memory keyed limiter's, both on 1000 `String` keys: the decision cost of leased mode.
fn leased_vs_memory(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let quotas = Quotas::new([Quota::per_second(1_000_000).burst(1_000_000_000)]).unwrap();
    let leased: LeasedLimiter<String> = rt
        .block_on(RedisLimiter::connect(&url, quotas.clone()))
        .expect("Redis reachable (cargo xtask bench starts it)")
        .prefix(&format!("bench:leased:{}", std::process::id()))
        .leased(Lease::new(100_000).ttl(Duration::from_secs(60)));
    let memory = KeyedLimiter::new(quotas);
    let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    for key in &keys {
        rt.block_on(leased.check(key, 1)).unwrap();
    }
    let mut group = c.benchmark_group("leased_vs_memory");
    let mut i = 0;
    group.bench_function("memory", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            memory.check(&keys[i], 1).unwrap().is_allowed()
        })
    });
    group.bench_function("leased", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let decision = leased.check_local(&keys[i], 1).expect("held").unwrap();
            decision.is_allowed()
        })
    });
    group.finish();
}

criterion_group!(benches, bench, leased_vs_memory);
criterion_main!(benches);
