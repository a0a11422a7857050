//! Store operations on the real Redis of `REDIS_URL`, next to one raw `SET NX PX` on the same
//! connection: each store operation is one round trip too, so the raw command is its floor.
//!
//! Run: `cargo xtask bench redis` (or `cargo bench -p idem-store-redis --bench redis_store`).
//! Each iteration is one operation awaited to completion (one client, no pipelining): the figure
//! is round-trip latency, and its inverse the operations per second of one connection.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use idem_core::{
    BeginOutcome, Fence, Fingerprint, IdempotencyKey, IdempotencyStore, StoredResponse,
};
use idem_store_redis::RedisStore;
use std::time::{Duration, Instant};

const LEASE: Duration = Duration::from_secs(30);
const RETENTION: Duration = Duration::from_secs(60);

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("bench:{}", std::process::id());
    let store = rt
        .block_on(RedisStore::connect(&url))
        .expect("Redis reachable (cargo xtask bench starts it)")
        .prefix(&prefix);
    let fp = Fingerprint::of_request("POST", "/v1/orders", br#"{"sku":"tea","qty":2}"#);
    let response = StoredResponse {
        status: 201,
        headers: vec![(
            "content-type".into(),
            Bytes::from_static(b"application/json"),
        )],
        body: Bytes::from_static(br#"{"id":"ord_123","status":"created"}"#),
        trailers: Vec::new(),
    };
    let mut n = 0u64;
    let mut next_key = move || {
        n += 1;
        IdempotencyKey::parse(format!("order-{n:012}").as_bytes()).unwrap()
    };

    // Criterion calls each routine several times: the raw keys' counter lives outside, so every
    // raw write is a new key, as every measured `begin` is.
    let mut i = 0u64;
    let mut group = c.benchmark_group("redis_store");
    group.bench_function("raw_set_nx_px", |b| {
        let mut conn = store.connection();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    i += 1;
                    let _: Option<String> = redis::cmd("SET")
                        .arg(format!("{prefix}:raw:{i}"))
                        .arg("1")
                        .arg("NX")
                        .arg("PX")
                        .arg(30_000)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
                start.elapsed()
            })
        })
    });
    // The floor of any script: EVALSHA of `return 1` (what Lua costs before the script does
    // anything).
    let noop = redis::Script::new("return 1");
    group.bench_function("noop_script", |b| {
        let mut conn = store.connection();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let _: i64 = noop.invoke_async(&mut conn).await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("begin_acquire", |b| {
        b.iter_custom(|iters| {
            let keys: Vec<_> = (0..iters).map(|_| next_key()).collect();
            rt.block_on(async {
                let start = Instant::now();
                for k in &keys {
                    let out = store.begin("bench", k, &fp, LEASE).await.unwrap();
                    assert!(matches!(out, BeginOutcome::Acquired { .. }));
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("complete", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut held: Vec<(IdempotencyKey, Fence)> = Vec::new();
                for _ in 0..iters {
                    let k = next_key();
                    let BeginOutcome::Acquired { fence } =
                        store.begin("bench", &k, &fp, LEASE).await.unwrap()
                    else {
                        unreachable!()
                    };
                    held.push((k, fence));
                }
                let start = Instant::now();
                for (k, fence) in &held {
                    store
                        .complete("bench", k, *fence, &response, RETENTION)
                        .await
                        .unwrap();
                }
                start.elapsed()
            })
        })
    });
    let done = next_key();
    rt.block_on(async {
        let BeginOutcome::Acquired { fence } =
            store.begin("bench", &done, &fp, LEASE).await.unwrap()
        else {
            unreachable!()
        };
        store
            .complete("bench", &done, fence, &response, RETENTION)
            .await
            .unwrap();
    });
    group.bench_function("begin_replay", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let out = store.begin("bench", &done, &fp, LEASE).await.unwrap();
                    assert!(matches!(out, BeginOutcome::Completed(_)));
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
