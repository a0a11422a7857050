//! End-to-end load on loopback: the orders API with every layer vs the same handlers bare.
//!
//! Run: `cargo xtask bench e2e` (or `cargo bench -p benchmarks --bench e2e`); `E2E_SECONDS`
//! (default 5) sets each run's length. A Rust load generator opens 32 keep-alive HTTP/1.1
//! connections (one principal each) and sends, back to back, 80 % `GET /orders/ord_1` and 20 %
//! `POST /orders` with a fresh `Idempotency-Key`; it reports requests per second and the p50/p99
//! of the request latencies. Server and load generator share this machine's cores. The layered
//! API runs on the in-memory stores, then with its idempotency store on Redis and on PostgreSQL
//! (`REDIS_URL`, `DATABASE_URL`; `cargo xtask bench e2e` starts them when needed); the limiters
//! stay in memory.

use axum::Router;
use examples::{Limits, OrdersApi};
use ratelimit_token_bucket::Quota;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 32;

/// This process's run id: idempotency records of earlier runs (PostgreSQL keeps them) never
/// answer this run's keys.
static RUN: std::sync::LazyLock<u128> = std::sync::LazyLock::new(|| {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
});

fn limits() -> Limits {
    // Limits far above the offered load: the run measures the layers' cost, not their refusals.
    Limits {
        rate: Quota::per_second(1_000_000),
        in_flight: 1024,
        in_flight_per_ip: 1_000,
        capacity: 4096,
    }
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// One keep-alive connection sending requests until `until`; returns latencies in µs.
async fn client(addr: SocketAddr, conn: usize, until: Instant, run: &'static str) -> Vec<u64> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut latencies = Vec::new();
    let mut n = 0u64;
    let body = r#"{"sku":"tea","quantity":1}"#;
    while Instant::now() < until {
        n += 1;
        let request = if n % 5 == 1 {
            format!(
                "POST /orders HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer conn-{conn}\r\n\
                 idempotency-key: {}-{run}-{conn}-{n}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n{body}",
                *RUN,
                body.len()
            )
        } else {
            format!("GET /orders/ord_1 HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer conn-{conn}\r\n\r\n")
        };
        let start = Instant::now();
        write.write_all(request.as_bytes()).await.unwrap();
        let mut length = 0usize;
        let mut line = String::new();
        let mut status_line = true;
        loop {
            line.clear();
            read.read_line(&mut line).await.unwrap();
            if status_line {
                assert!(
                    line.starts_with("HTTP/1.1 2"),
                    "{run}: unexpected response: {line}"
                );
                status_line = false;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        read.read_exact(&mut body).await.unwrap();
        latencies.push(start.elapsed().as_micros() as u64);
    }
    latencies
}

struct Run {
    rps: f64,
    p50: u64,
    p99: u64,
}

async fn load(addr: SocketAddr, seconds: u64, run: &'static str) -> Run {
    // Warm up, and create ord_1 for the reads.
    let _ = client(addr, 9999, Instant::now() + Duration::from_millis(300), run).await;
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| tokio::spawn(client(addr, c, until, run)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    Run {
        rps: all.len() as f64 / elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

fn main() {
    let seconds: u64 = std::env::var("E2E_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `cargo test --all-targets` runs this binary without `--bench`: a one-second smoke run of the
    // load generator against both in-memory servers, without the backends.
    if !std::env::args().any(|a| a == "--bench") {
        rt.block_on(async {
            for router in [
                OrdersApi::in_memory().bare_router(),
                OrdersApi::new(idem_core::MemoryStore::new(), limits()).router(),
            ] {
                let r = load(serve(router).await, 1, "smoke").await;
                assert!(r.rps > 0.0 && r.p50 <= r.p99);
            }
        });
        return;
    }
    rt.block_on(async {
        let mut rows = Vec::new();
        let bare = OrdersApi::in_memory().bare_router();
        rows.push((
            "bare handlers (no layers)",
            load(serve(bare).await, seconds, "bare").await,
        ));
        let layered = OrdersApi::new(idem_core::MemoryStore::new(), limits()).router();
        rows.push((
            "all layers, in-memory",
            load(serve(layered).await, seconds, "mem").await,
        ));
        let redis_url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        match idem_store_redis::RedisStore::connect(&redis_url).await {
            Ok(store) => {
                let store = store.prefix(&format!("bench:e2e:{}", std::process::id()));
                let router = OrdersApi::new(store, limits()).router();
                rows.push((
                    "all layers, idempotency on Redis",
                    load(serve(router).await, seconds, "redis").await,
                ));
            }
            Err(e) => eprintln!("skipping the Redis run: {e} (cargo xtask bench e2e starts Redis)"),
        }
        let pg_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        match idem_store_postgres::PostgresStore::connect(&pg_url).await {
            Ok(store) => {
                store.migrate().await.expect("migrations run");
                let router = OrdersApi::new(store, limits()).router();
                rows.push((
                    "all layers, idempotency on PostgreSQL",
                    load(serve(router).await, seconds, "pg").await,
                ));
            }
            Err(e) => eprintln!(
                "skipping the PostgreSQL run: {e} (cargo xtask bench e2e starts PostgreSQL)"
            ),
        }
        let base = rows[0].1.rps;
        println!("\n| server | requests/s | ratio to bare | p50 | p99 |");
        println!("|---|---|---|---|---|");
        for (name, r) in &rows {
            println!(
                "| {name} | {:.0} | {:.2}× | {:.2} ms | {:.2} ms |",
                r.rps,
                r.rps / base,
                r.p50 as f64 / 1000.0,
                r.p99 as f64 / 1000.0
            );
        }
    });
}
