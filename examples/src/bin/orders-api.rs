//! The orders API: `cargo run -p examples --bin orders-api [-- --redis URL | --postgres URL]`.
//!
//! In memory by default (no services needed). `--redis URL` puts the idempotency records and the
//! rate limits on Redis (shared by every server of a fleet); `--postgres URL` puts the
//! idempotency records on PostgreSQL (running its migrations). Listens on `ADDR` (default
//! `127.0.0.1:3000`). The concurrency limit and the load shedder are per server by design.

use examples::{Limits, OrdersApi};
use ratelimit_token_bucket::{FailMode, Limiter, Quotas, RedisLimiter};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

enum Backend {
    Memory,
    Redis(String),
    Postgres(String),
}

fn backend() -> Result<Backend, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(Backend::Memory),
        [flag, url] if flag == "--redis" => Ok(Backend::Redis(url.clone())),
        [flag, url] if flag == "--postgres" => Ok(Backend::Postgres(url.clone())),
        _ => Err("usage: orders-api [--redis URL | --postgres URL]".into()),
    }
}

async fn serve(
    router: axum::Router,
    addr: SocketAddr,
    what: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("orders API on http://{addr} ({what})");
    println!("try the same request twice; the second is a replay and no second order is made:");
    println!(
        "  curl -i -X POST http://{addr}/orders -H 'Idempotency-Key: demo-1' \\\n       -H 'content-type: application/json' -d '{{\"sku\":\"tea\",\"quantity\":2}}'"
    );
    println!("  curl http://{addr}/orders");
    println!("  curl -i http://{addr}/orders/ord_404   # a problem+json with request_id, trace_id, latency_ms");
    println!("  curl -i -X POST http://{addr}/payments/pi_1/capture -H 'Idempotency-Key: cap-1'   # critical route");
    println!("every layer is on: trace-ctx, load shedding, 20 req/s per client (burst 40), 8 in flight per client, idempotency");
    println!("the guided tour of all of them: cargo run -p examples --bin demo");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    let mut server = Box::pin(server.into_future());
    tokio::select! {
        result = &mut server => return result.map_err(Into::into),
        signal = shutdown_signal() => tracing::info!(signal, "shutting down: no new connections, draining requests in flight"),
    }
    let _ = stop_tx.send(());
    // A bounded drain: requests in flight finish (and complete their keys) within DRAIN; any still
    // running then is dropped, which releases its idempotency key so the client's retry can run.
    let drain = drain_time();
    match tokio::time::timeout(drain, &mut server).await {
        Ok(result) => result?,
        Err(_) => {
            tracing::warn!(
                ?drain,
                "drain time over; dropping the requests still in flight"
            );
            drop(server);
            // Let the key releases that dropping them spawned reach the store.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// `TRUSTED_PROXIES`: comma-separated networks (`10.0.0.0/8,fd00::/8`) whose forwarding headers
/// the per-IP limit believes. None by default: the peer address is the client.
fn trusted() -> Result<Vec<ratelimit_concurrent::IpNet>, String> {
    std::env::var("TRUSTED_PROXIES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| format!("TRUSTED_PROXIES: {s}: {e}")))
        .collect()
}

/// `DRAIN_SECS` (default 10): how long a shutdown waits for requests in flight.
fn drain_time() -> std::time::Duration {
    let secs = std::env::var("DRAIN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    std::time::Duration::from_secs(secs)
}

/// Ctrl-C, or SIGTERM (what container runtimes and systemd send).
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); `LOG_FORMAT=json` writes one JSON
/// object per event.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let addr: SocketAddr = std::env::var("ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let limits = Limits::default();
    match backend()? {
        Backend::Memory => {
            let api = OrdersApi::new(examples::memory_store(), limits).trust_proxies(trusted()?);
            serve(api.router(), addr, "in-memory stores and limiters").await
        }
        Backend::Redis(url) => {
            let store = idem_store_redis::RedisStore::connect(&url)
                .await
                .map_err(|e| format!("Redis at {url}: {e}"))?
                .prefix("orders-api:idem");
            let limiter = RedisLimiter::connect(&url, Quotas::new([limits.rate])?)
                .await
                .map_err(|e| format!("Redis at {url}: {e}"))?
                .prefix("orders-api:rl")
                .fail_mode(FailMode::Open);
            let api = OrdersApi::new(store, limits)
                .with_rate_limiter(Arc::new(limiter) as Arc<dyn Limiter<u64>>)
                .trust_proxies(trusted()?);
            serve(api.router(), addr, "idempotency and rate limits on Redis").await
        }
        Backend::Postgres(url) => {
            let store = idem_store_postgres::PostgresStore::connect(&url)
                .await
                .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
            store.migrate().await?;
            let api = OrdersApi::new(store, limits).trust_proxies(trusted()?);
            serve(api.router(), addr, "idempotency on PostgreSQL").await
        }
    }
}
