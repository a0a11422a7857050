//! Store operations on the real PostgreSQL of `DATABASE_URL`, next to one raw single-row
//! `INSERT … ON CONFLICT` on the same connection (a pool of one): each store operation is one
//! statement too, so the raw insert is its floor.
//!
//! Run: `cargo xtask bench postgres` (or `cargo bench -p idem-store-postgres --bench postgres_store`).
//! Each iteration is one statement awaited to completion (one client): the figure is round-trip
//! latency, its inverse the operations per second of one connection.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use idem_core::{
    BeginOutcome, Fence, Fingerprint, IdempotencyKey, IdempotencyStore, StoredResponse,
};
use idem_store_postgres::sqlx::{self, postgres::PgConnectOptions, postgres::PgPoolOptions};
use idem_store_postgres::PostgresStore;
use std::str::FromStr;
use std::time::{Duration, Instant};

const LEASE: Duration = Duration::from_secs(30);
const RETENTION: Duration = Duration::from_secs(60);

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("bench_{}", std::process::id());
    let store = rt.block_on(async {
        let admin = sqlx::PgPool::connect(&url)
            .await
            .expect("PostgreSQL reachable (cargo xtask bench starts it)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        // One connection, configured as `PostgresStore::connect` configures its pool.
        let options = PgConnectOptions::from_str(&url).unwrap().options([
            ("search_path", schema.as_str()),
            ("plan_cache_mode", "force_generic_plan"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .unwrap();
        let store = PostgresStore::with_pool(pool);
        store.migrate().await.unwrap();
        sqlx::query("CREATE TABLE raw_keys (k text PRIMARY KEY, v bytea)")
            .execute(store.pool())
            .await
            .unwrap();
        store
    });
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
    let mut group = c.benchmark_group("postgres_store");
    group.bench_function("raw_insert_on_conflict", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    i += 1;
                    sqlx::query(
                        "INSERT INTO raw_keys (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING",
                    )
                    .bind(format!("raw-{i}"))
                    .bind(&fp.as_bytes()[..])
                    .execute(store.pool())
                    .await
                    .unwrap();
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
    rt.block_on(async {
        store.pool().close().await;
        let admin = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await
            .unwrap();
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
