//! Fleet-wide acquire + release on the real Redis of `REDIS_URL`.
//!
//! Run: `cargo xtask bench concurrency-redis` (or
//! `cargo bench -p ratelimit-concurrent --features redis --bench redis_leases`). One connection,
//! each call awaited: `acquire+release` is two round trips (the acquire script, then `ZREM`);
//! `raw ZADD+ZREM` is the same two round trips as plain commands, the floor.

use criterion::{criterion_group, criterion_main, Criterion};
use ratelimit_concurrent::RedisConcurrencyLimiter;
use std::time::Instant;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("bench:cl:{}", std::process::id());
    let limiter = rt
        .block_on(RedisConcurrencyLimiter::connect(&url, 100))
        .expect("Redis reachable (cargo xtask bench starts it)")
        .prefix(&prefix);

    let mut group = c.benchmark_group("redis_leases");
    group.bench_function("raw ZADD+ZREM", |b| {
        let mut conn = limiter.connection();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let key = format!("{prefix}:raw:{{{}}}", i % 1000);
                    let _: () = redis::cmd("ZADD")
                        .arg(&key)
                        .arg(1)
                        .arg("lease")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    let _: () = redis::cmd("ZREM")
                        .arg(&key)
                        .arg("lease")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("acquire+release", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let key = (i % 1000).to_string();
                    let lease = limiter.acquire(&key).await.unwrap();
                    lease.release().await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
