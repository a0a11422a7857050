//! The Redis-backed crates on one Redis node vs on a Redis Cluster, in one run.
//!
//! For each operation — idempotency `begin` + `complete`, a rate-limit decision, a concurrency
//! lease acquire + release, a fleet-shedder admit + release, a raw `INCR` + `DECR` pair (the
//! floor of admit + release) — the same number of sequential operations (one client, each
//! awaited) runs on the single node (`REDIS_URL`) and on the cluster (`REDIS_CLUSTER_URLS`),
//! alternating, for several rounds; and on the cluster, the fleet shedder against the raw pair and
//! durable completion (`WAIT` 1 replica) against the plain one. Printed per comparison: the median
//! per-operation latency of each side, and the median and spread of the per-round ratios.
//!
//! Run: `cargo xtask bench cluster` (it starts a private cluster), or
//! `taskset -c 1 cargo bench -p benchmarks --bench redis_fleet` with both variables set. Without
//! `--bench` (under `cargo test --all-targets`) one short round runs as a smoke test.

use idem_core::{BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, StoredResponse};
use idem_store_redis::{redis, RedisConnection, RedisStore};
use loadshed_fleet::{Class, FleetShedder, Shares};
use ratelimit_concurrent::RedisConcurrencyLimiter;
use ratelimit_token_bucket::{Quota, Quotas, RedisLimiter};
use std::time::{Duration, Instant};

struct Target {
    name: &'static str,
    conn: RedisConnection,
}

async fn op_time(kind: &str, target: &Target, n: usize, round: usize) -> Duration {
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("bench:{kind}:{}:{round}:{run}:{nanos}", target.name);
    let conn = target.conn.clone();
    let started;
    match kind {
        "idem" | "idem-durable" => {
            let mut store = RedisStore::with_connection(conn).prefix(&prefix);
            if kind == "idem-durable" {
                store = store.durable_completion(1, Duration::from_millis(100));
            }
            let fp = Fingerprint::of_request("POST", "/orders", b"{}");
            let response = StoredResponse {
                status: 201,
                headers: vec![],
                body: "created".into(),
                trailers: Vec::new(),
            };
            started = Instant::now();
            for i in 0..n {
                let key = IdempotencyKey::parse(format!("k{i}").as_bytes()).unwrap();
                let BeginOutcome::Acquired { fence } = store
                    .begin("t", &key, &fp, Duration::from_secs(30))
                    .await
                    .unwrap()
                else {
                    panic!("a new key")
                };
                // Durable completion runs on the cluster only, whose masters have a replica each.
                let _ = store
                    .complete("t", &key, fence, &response, Duration::from_secs(60))
                    .await;
            }
        }
        "ratelimit" => {
            let limiter = RedisLimiter::with_connection(
                conn,
                Quotas::new([Quota::per_second(1_000_000)]).unwrap(),
            )
            .prefix(&prefix);
            started = Instant::now();
            for i in 0..n {
                limiter.check(&(i % 100), 1).await.unwrap();
            }
        }
        "concurrency" => {
            let limiter = RedisConcurrencyLimiter::with_connection(conn, 1_000).prefix(&prefix);
            started = Instant::now();
            for i in 0..n {
                let lease = limiter.acquire(&format!("k{}", i % 100)).await.unwrap();
                lease.release().await.unwrap();
            }
        }
        "fleet" => {
            let fleet = FleetShedder::with_connection(conn, 1_000_000, Shares::default())
                .unwrap()
                .prefix(&prefix);
            started = Instant::now();
            for _ in 0..n {
                fleet.admit(Class::Write).await.unwrap().release().await;
            }
        }
        "incr-decr" => {
            let mut conn = conn;
            let key = format!("{prefix}:{{counter}}");
            started = Instant::now();
            for _ in 0..n {
                let _: i64 = redis::cmd("INCR")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let _: i64 = redis::cmd("DECR")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
        other => unreachable!("{other}"),
    }
    started.elapsed() / u32::try_from(n).unwrap()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, n) = if full { (21, 300) } else { (1, 50) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let single_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let cluster_urls = std::env::var("REDIS_CLUSTER_URLS").expect(
            "REDIS_CLUSTER_URLS is not set: run `cargo xtask bench cluster` (or `cargo xtask test`), which start a private Redis Cluster",
        );
        let single = Target { name: "single", conn: RedisConnection::connect(&single_url, &Default::default()).await.expect("Redis reachable") };
        let cluster = Target {
            name: "cluster",
            conn: RedisConnection::connect_cluster(cluster_urls.split(','), &Default::default()).await.expect("the Redis Cluster reachable"),
        };
        // (row, A, B): the ratio is B / A.
        let rows = [
            ("idem begin+complete", ("idem", &single), ("idem", &cluster)),
            ("rate-limit decision", ("ratelimit", &single), ("ratelimit", &cluster)),
            ("concurrency acquire+release", ("concurrency", &single), ("concurrency", &cluster)),
            ("fleet shedder admit+release", ("fleet", &single), ("fleet", &cluster)),
            ("raw INCR+DECR", ("incr-decr", &single), ("incr-decr", &cluster)),
            ("fleet shedder vs INCR+DECR, single", ("incr-decr", &single), ("fleet", &single)),
            ("fleet shedder vs INCR+DECR, cluster", ("incr-decr", &cluster), ("fleet", &cluster)),
            ("durable vs plain completion, cluster", ("idem", &cluster), ("idem-durable", &cluster)),
        ];
        let mut table = Vec::new();
        for (row, (kind_a, a), (kind_b, b)) in rows {
            let mut ratios = Vec::new();
            let (mut xs, mut ys) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                // Interleaved: A, B, A, B…
                let x = op_time(kind_a, a, n, round).await;
                let y = op_time(kind_b, b, n, round).await;
                xs.push(x);
                ys.push(y);
                ratios.push(y.as_secs_f64() / x.as_secs_f64());
            }
            ratios.sort_by(f64::total_cmp);
            xs.sort();
            ys.sort();
            table.push((row, xs[xs.len() / 2], ys[ys.len() / 2], ratios));
        }
        if full {
            println!("| comparison | A (median µs) | B (median µs) | B / A: median (spread) |");
            println!("|---|---|---|---|");
            for (row, s, c, r) in &table {
                println!(
                    "| {row} | {:.1} | {:.1} | {:.2}× ({:.2}–{:.2}) |",
                    s.as_secs_f64() * 1e6,
                    c.as_secs_f64() * 1e6,
                    r[r.len() / 2],
                    r[0],
                    r[r.len() - 1]
                );
            }
        }
    });
}
