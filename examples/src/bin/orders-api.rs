//! The orders API: `cargo run -p examples --bin orders-api [-- --redis URL | --postgres URL]`.
//!
//! In memory by default (no services needed). `--redis URL` puts the idempotency records and the
//! rate limits on Redis (shared by every server of a fleet); `--postgres URL` puts the
//! orders, captures and idempotency records on PostgreSQL (running the migrations), each order
//! written in the transaction that completes its idempotency record — and its `order.created`
//! webhook queued in the outbox in that same transaction. `--postgres URL` with `--redis URL` or
//! `--redis-cluster URLS` keeps the orders and their records on PostgreSQL and puts the fleet
//! limits on Redis (the rate limit; on a cluster the concurrency caps and the fleet shedder too).
//! Listens on `ADDR` (default
//! `127.0.0.1:3000`). The concurrency limit and the load shedder are per server by design.
//!
//! `--lease N` (with `--redis` / `--redis-cluster`) runs the fleet rate limit in leased mode:
//! each server takes `N` units of a principal's budget at a time and decides in memory.
//! `--no-idempotency` serves the POSTs without the idempotency layer, every other layer kept
//! (the benchmarks' yardstick); `--single-commit[=last|=first]` (with `--postgres`) writes a
//! `POST /orders`' idempotency record in the order's own transaction, after or before it.
//!
//! `WEBHOOK_URL` starts a dispatcher that delivers the `order.created` webhooks to that URL,
//! signed (Standard Webhooks) with `WEBHOOK_SECRET`; `WEBHOOK_ALLOW` lists networks the SSRF guard
//! lets it reach (`127.0.0.0/8` for a receiver on this machine), `WEBHOOK_LEASE_SECS` (60) and
//! `WEBHOOK_TIMEOUT_SECS` (15) set the claim lease and the attempt timeout.
//!
//! With `--postgres`, `POST /orders` with `Prefer: respond-async` answers `202 Accepted` with
//! `Location: /jobs/{id}`, and a worker in this process creates the order and queues its
//! `OrderCreated` event (topic `orders.created`) in the outbox, in one transaction.
//! `NATS_URL` starts a relay of those events to NATS JetStream (stream `EVENTS_STREAM`, default
//! `ORDERS`, subjects `<EVENTS_SUBJECT_PREFIX>orders.>`) and the read model that counts them per
//! sku, each once (`GET /reports/skus`). `JOB_LEASE_SECS` (30) is how long a worker holds a job.

use axum::extract::ConnectInfo;
use examples::{Limits, OrdersApi};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ratelimit_token_bucket::{FailMode, Limiter, Quotas, RedisLimiter};
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

enum Backend {
    Memory,
    Redis(String),
    RedisCluster(Vec<String>),
    /// Orders and idempotency on PostgreSQL; the fleet limits on Redis when one is given too.
    Postgres(String, Option<Box<Backend>>),
}

const USAGE: &str =
    "usage: orders-api [--redis URL | --redis-cluster URL[,URL…]] [--postgres URL] \
[--lease N] [--bare] [--no-idempotency] [--single-commit[=last|=first]] [--rate N[/s|/min|/h]] [--burst N] [--in-flight N] [--capacity N] [--fleet-capacity N]";

/// The command line: a backend, `--bare` (the same handlers without any layer), and the limits.
struct Args {
    backend: Backend,
    /// With `--postgres`: `POST /orders` in single-commit mode, the record written last or first.
    single_commit: Option<examples::SingleCommit>,
    bare: bool,
    /// Every layer but idempotency on the POSTs (what idempotency costs).
    no_idempotency: bool,
    /// With `--redis` / `--redis-cluster`: the fleet rate limit in leased mode, `N` units a lease.
    lease: Option<u32>,
    rate: Option<String>,
    burst: Option<u64>,
    in_flight: Option<u32>,
    capacity: Option<u32>,
    fleet_capacity: Option<u32>,
}

fn args() -> Result<Args, String> {
    let mut parsed = Args {
        backend: Backend::Memory,
        bare: false,
        no_idempotency: false,
        lease: None,
        single_commit: None,
        rate: None,
        burst: None,
        in_flight: None,
        capacity: None,
        fleet_capacity: None,
    };
    let (mut postgres, mut redis) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
        };
        let number = |v: String| {
            v.parse::<u32>()
                .map_err(|_| format!("{flag} {v}: not a number; {USAGE}"))
        };
        match flag.as_str() {
            "--redis" => redis = Some(Backend::Redis(value()?)),
            "--redis-cluster" => {
                let urls = value()?;
                redis = Some(Backend::RedisCluster(
                    urls.split(',')
                        .map(str::trim)
                        .filter(|u| !u.is_empty())
                        .map(String::from)
                        .collect(),
                ));
            }
            "--postgres" => postgres = Some(value()?),
            "--bare" => parsed.bare = true,
            "--no-idempotency" => parsed.no_idempotency = true,
            "--lease" => parsed.lease = Some(number(value()?)?),
            "--single-commit" | "--single-commit=last" => {
                parsed.single_commit = Some(examples::SingleCommit::RecordLast)
            }
            "--single-commit=first" => {
                parsed.single_commit = Some(examples::SingleCommit::RecordFirst)
            }
            "--rate" => parsed.rate = Some(value()?),
            "--burst" => parsed.burst = Some(u64::from(number(value()?)?)),
            "--in-flight" => parsed.in_flight = Some(number(value()?)?),
            "--capacity" => parsed.capacity = Some(number(value()?)?),
            "--fleet-capacity" => parsed.fleet_capacity = Some(number(value()?)?),
            _ => return Err(USAGE.into()),
        }
    }
    parsed.backend = match (postgres, redis) {
        (Some(url), limits) => Backend::Postgres(url, limits.map(Box::new)),
        (None, Some(redis)) => redis,
        (None, None) => Backend::Memory,
    };
    Ok(parsed)
}

/// `N`, `N/s`, `N/min` or `N/h` requests per principal, with `burst` (default: twice the rate).
fn quota(rate: &str, burst: Option<u64>) -> Result<ratelimit_token_bucket::Quota, String> {
    use ratelimit_token_bucket::Quota;
    let (n, unit) = rate.split_once('/').unwrap_or((rate, "s"));
    let n: u64 = n
        .trim()
        .parse()
        .map_err(|_| format!("--rate {rate}: not N[/s|/min|/h]"))?;
    let quota = match unit.trim() {
        "s" => Quota::per_second(n),
        "min" => Quota::per_minute(n),
        "h" => Quota::per_hour(n),
        _ => return Err(format!("--rate {rate}: the unit is s, min or h")),
    };
    Ok(quota.burst(burst.unwrap_or(n.saturating_mul(2)).max(1)))
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
    // hyper directly rather than `axum::serve`, for the server-level timeouts: a client that
    // trickles its request head is cut after HEADER_TIMEOUT (bodies have the layers' deadlines).
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let svc = router.clone().map_request(move |mut req: http::Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc))
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            signal = &mut signal => {
                tracing::info!(signal, "shutting down: no new connections, draining requests in flight");
                break;
            }
        }
    }
    drop(listener);
    // A bounded drain: requests in flight finish (and complete their keys) within DRAIN; any still
    // running then is dropped with the process, and its idempotency lease runs out on its own.
    let drain = drain_time();
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "drain time over; dropping the requests still in flight"
        );
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

/// The `WEBHOOK_*` settings, when `WEBHOOK_URL` is set.
struct Webhooks {
    url: String,
    secret: webhook_sig::Secret,
    allow: Vec<retry_safe_core::IpNet>,
    lease: std::time::Duration,
    timeout: std::time::Duration,
}

fn webhooks() -> Result<Option<Webhooks>, String> {
    let Ok(url) = std::env::var("WEBHOOK_URL") else {
        return Ok(None);
    };
    let secret = std::env::var("WEBHOOK_SECRET")
        .unwrap_or_else(|_| examples::MERCHANT_WEBHOOK_SECRET.to_owned());
    let secret =
        webhook_sig::Secret::from_standard(&secret).map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
    let allow = std::env::var("WEBHOOK_ALLOW")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| format!("WEBHOOK_ALLOW: {s}: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(Some(Webhooks {
        url,
        secret,
        allow,
        lease: env_secs("WEBHOOK_LEASE_SECS", 60),
        timeout: env_secs("WEBHOOK_TIMEOUT_SECS", 15),
    }))
}

/// The whole seconds of environment variable `name`, or `default` when unset or not a number.
fn env_secs(name: &str, default: u64) -> std::time::Duration {
    let secs = std::env::var(name).ok().and_then(|v| v.parse().ok());
    std::time::Duration::from_secs(secs.unwrap_or(default))
}

/// Runs the merchant dispatcher of `outbox` in the background, and a sweeper of the events
/// published a week ago (dead letters stay, to replay).
fn spawn_dispatcher<O: webhook_delivery::Outbox + Clone>(
    outbox: O,
    hooks: &Webhooks,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dispatcher = examples::merchant_dispatcher(
        outbox.clone(),
        &hooks.url,
        &hooks.secret,
        &hooks.allow,
        hooks.lease,
        hooks.timeout,
    )?;
    tracing::info!(url = %hooks.url, "delivering order.created webhooks");
    tokio::spawn(async move { dispatcher.run(std::future::pending()).await });
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            let week = std::time::Duration::from_secs(7 * 24 * 3600);
            if let Err(e) = outbox.purge_published(week).await {
                tracing::warn!(error = %e, "webhook outbox sweep failed");
            }
        }
    });
    Ok(())
}

/// `HEADER_TIMEOUT_SECS` (default 10): how long a client may take to send its request head.
fn header_timeout() -> std::time::Duration {
    let secs = std::env::var("HEADER_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    std::time::Duration::from_secs(secs)
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
    let args = args()?;
    let mut limits = Limits::default();
    // Operators' overrides: `IN_FLIGHT_PER_IP` and `CAPACITY` (the load shedder's slots), and
    // the flags, which win.
    let env_u32 = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    if let Some(n) = env_u32("IN_FLIGHT_PER_IP") {
        limits.in_flight_per_ip = n;
    }
    if let Some(n) = args.capacity.or(env_u32("CAPACITY")) {
        limits.capacity = n;
    }
    if let Some(n) = args.in_flight {
        limits.in_flight = n;
    }
    if let Some(rate) = &args.rate {
        limits.rate = quota(rate, args.burst)?;
    } else if let Some(burst) = args.burst {
        limits.rate = limits.rate.burst(burst);
    }
    let fleet_capacity = args
        .fleet_capacity
        .or(env_u32("FLEET_CAPACITY"))
        .unwrap_or(limits.capacity.saturating_mul(4));
    // `REDIS_PREFIX` (default `orders-api`): the key prefix of everything the API keeps in Redis,
    // one per environment sharing a Redis or a cluster.
    let prefix = std::env::var("REDIS_PREFIX").unwrap_or_else(|_| "orders-api".into());
    let hooks = webhooks()?;
    if args.single_commit.is_some() && !matches!(args.backend, Backend::Postgres(..)) {
        return Err("--single-commit needs --postgres URL".into());
    }
    if args.bare {
        // The handlers alone: the baseline to measure the layers' cost against. In memory, or
        // with `--postgres` the orders (and their events) in PostgreSQL, one transaction each.
        if let Backend::Postgres(url, _) = &args.backend {
            let store = idem_store_postgres::PostgresStore::connect(url)
                .await
                .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
            examples::migrate_orders(store.pool()).await?;
            let outbox = webhook_delivery::PostgresOutbox::with_pool(store.pool().clone());
            outbox.migrate().await?;
            let api = OrdersApi::new(examples::memory_store(), limits)
                .with_postgres_orders(store)
                .with_postgres_outbox(outbox);
            return serve(
                api.bare_router(),
                addr,
                "bare handlers, orders on PostgreSQL",
            )
            .await;
        }
        let api = OrdersApi::new(examples::memory_store(), limits);
        return serve(api.bare_router(), addr, "bare handlers, no layers").await;
    }
    let (no_idempotency, lease) = (args.no_idempotency, args.lease);
    match args.backend {
        Backend::Memory => {
            let mut api =
                OrdersApi::new(examples::memory_store(), limits).trust_proxies(trusted()?);
            if let Some(hooks) = &hooks {
                let outbox = webhook_delivery::MemoryOutbox::new();
                api = api.with_memory_outbox(outbox.clone());
                spawn_dispatcher(outbox, hooks).map_err(|e| e.to_string())?;
            }
            serve(
                routes(api, no_idempotency),
                addr,
                "in-memory stores and limiters",
            )
            .await
        }
        Backend::Redis(url) => {
            let store = idem_store_redis::RedisStore::connect(&url)
                .await
                .map_err(|e| format!("Redis at {url}: {e}"))?
                .prefix(&format!("{prefix}:idem"));
            let fleet = Fleet {
                prefix: &prefix,
                lease,
                capacity: fleet_capacity,
                limits: &limits,
            };
            let redis = Backend::Redis(url);
            let api = fleet
                .limits(OrdersApi::new(store, limits.clone()), &redis)
                .await?;
            serve(
                routes(api.trust_proxies(trusted()?), no_idempotency),
                addr,
                "idempotency and rate limits on Redis",
            )
            .await
        }
        Backend::RedisCluster(urls) => {
            let store = idem_store_redis::RedisStore::connect_cluster(urls.clone())
                .await
                .map_err(|e| format!("Redis Cluster at {urls:?}: {e}"))?
                .prefix(&format!("{prefix}:idem"));
            let fleet = Fleet {
                prefix: &prefix,
                lease,
                capacity: fleet_capacity,
                limits: &limits,
            };
            let redis = Backend::RedisCluster(urls);
            let api = fleet
                .limits(OrdersApi::new(store, limits.clone()), &redis)
                .await?;
            serve(
                routes(api.trust_proxies(trusted()?), no_idempotency),
                addr,
                "idempotency, rate limits, concurrency caps and the fleet shedder on a Redis Cluster",
            )
            .await
        }
        Backend::Postgres(url, redis) => {
            let store = idem_store_postgres::PostgresStore::connect(&url)
                .await
                .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
            store.migrate().await?;
            examples::migrate_orders(store.pool()).await?;
            let outbox = webhook_delivery::PostgresOutbox::with_pool(store.pool().clone());
            outbox.migrate().await?;
            // One outbox for the webhooks and the broker events: the dispatcher claims the
            // merchant's topic, the relay the events'.
            let webhooks = outbox.clone().only_topics([examples::MERCHANT_ENDPOINT]);
            match &hooks {
                Some(hooks) => spawn_dispatcher(webhooks, hooks).map_err(|e| e.to_string())?,
                None => tracing::info!(
                    "order.created webhooks wait in the outbox (outbox_events) until a dispatcher runs (set WEBHOOK_URL)"
                ),
            }
            let events = outbox.clone().only_topics([examples::jobs::ORDER_CREATED]);
            let jobs = outbox::JobQueue::new(store.pool().clone());
            let mut api = OrdersApi::new(store.clone(), limits.clone())
                .with_postgres_orders(store.clone())
                .with_postgres_outbox(outbox)
                .with_async_orders(jobs, events.clone())
                .trust_proxies(trusted()?);
            if let Some(worker) = api.order_worker() {
                let worker = worker.lease(env_secs("JOB_LEASE_SECS", 30));
                tokio::spawn(async move { worker.run(std::future::pending()).await });
            }
            if let Ok(nats) = std::env::var("NATS_URL") {
                spawn_events(&nats, events, store.pool().clone()).await?;
            }
            let what = match args.single_commit {
                Some(examples::SingleCommit::RecordFirst) => {
                    "orders and idempotency on PostgreSQL, one commit per order (single-commit mode, record first)"
                }
                Some(_) => {
                    "orders and idempotency on PostgreSQL, one commit per order (single-commit mode, record last)"
                }
                None => "orders and idempotency on PostgreSQL, committed together",
            };
            if let Some(record) = args.single_commit {
                api = api.with_single_commit(store, record);
            }
            if let Some(redis) = redis {
                let fleet = Fleet {
                    prefix: &prefix,
                    lease,
                    capacity: fleet_capacity,
                    limits: &limits,
                };
                api = fleet.limits(api, &redis).await?;
                tracing::info!("the fleet limits on Redis");
            }
            serve(routes(api, no_idempotency), addr, what).await
        }
    }
}

/// The fleet-wide limits a server takes from Redis.
struct Fleet<'a> {
    /// `REDIS_PREFIX`.
    prefix: &'a str,
    /// `--lease N`.
    lease: Option<u32>,
    /// The fleet shedder's capacity (on a cluster).
    capacity: u32,
    /// The rate and the in-flight cap per principal.
    limits: &'a Limits,
}

impl Fleet<'_> {
    /// `api` with its limits on `redis`: the rate limit on one Redis; the rate limit, the
    /// concurrency caps and the fleet shedder on a Redis Cluster.
    async fn limits<S: idem_core::IdempotencyStore>(
        &self,
        api: OrdersApi<S>,
        redis: &Backend,
    ) -> Result<OrdersApi<S>, String> {
        let (rate, prefix) = (self.limits.rate, self.prefix);
        match redis {
            Backend::Redis(url) => {
                let limiter =
                    RedisLimiter::connect(url, Quotas::new([rate]).map_err(|e| e.to_string())?)
                        .await
                        .map_err(|e| format!("Redis at {url}: {e}"))?
                        .prefix(&format!("{prefix}:rl"))
                        .fail_mode(FailMode::Open);
                Ok(api.with_rate_limiter(fleet_rate(limiter, self.lease)))
            }
            Backend::RedisCluster(urls) => {
                let unreachable =
                    |e: &dyn std::fmt::Display| format!("Redis Cluster at {urls:?}: {e}");
                let quotas = Quotas::new([rate]).map_err(|e| e.to_string())?;
                let limiter = RedisLimiter::connect_cluster(urls.clone(), quotas)
                    .await
                    .map_err(|e| unreachable(&e))?
                    .prefix(&format!("{prefix}:rl"))
                    .fail_mode(FailMode::Open);
                let in_flight = self.limits.in_flight;
                let caps = ratelimit_concurrent::RedisConcurrencyLimiter::connect_cluster(
                    urls.clone(),
                    in_flight,
                )
                .await
                .map_err(|e| unreachable(&e))?
                .prefix(&format!("{prefix}:cl"))
                .fail_mode(FailMode::Open);
                let fleet =
                    loadshed_fleet::FleetShedder::connect_cluster(urls.clone(), self.capacity)
                        .await
                        .map_err(|e| unreachable(&e))?
                        .prefix(prefix);
                Ok(api
                    .with_rate_limiter(fleet_rate(limiter, self.lease))
                    .with_fleet_caps(caps)
                    .with_fleet_shedder(fleet))
            }
            Backend::Memory | Backend::Postgres(..) => Ok(api),
        }
    }
}

/// The fleet rate limiter: exact (a Redis call per decision), or leased `n` units at a time
/// (decisions in memory, renewals in the background; the overshoot bound is
/// `servers × (n + n / 2)` over any window).
fn fleet_rate(limiter: RedisLimiter, lease: Option<u32>) -> Arc<dyn Limiter<u64>> {
    match lease {
        Some(n) => Arc::new(limiter.leased::<u64>(ratelimit_token_bucket::Lease::new(n))),
        None => Arc::new(limiter),
    }
}

/// The API's routes, the POSTs without idempotency under `--no-idempotency`.
fn routes<S: idem_core::IdempotencyStore>(api: OrdersApi<S>, no_idempotency: bool) -> axum::Router {
    let api = if no_idempotency {
        api.without_idempotency()
    } else {
        api
    };
    api.router()
}

/// The relay of `OrderCreated` events to JetStream and the read model that counts them.
async fn spawn_events(
    url: &str,
    events: outbox::PostgresOutbox,
    pool: idem_store_postgres::sqlx::PgPool,
) -> Result<(), Box<dyn std::error::Error>> {
    let stream = std::env::var("EVENTS_STREAM").unwrap_or_else(|_| "ORDERS".into());
    let prefix = std::env::var("EVENTS_SUBJECT_PREFIX").unwrap_or_default();
    let client = outbox::async_nats::connect(url)
        .await
        .map_err(|e| format!("NATS at {url}: {e}"))?;
    let js = outbox::async_nats::jetstream::new(client);
    let read_model = examples::jobs::ReadModel::connect(&js, &stream, &prefix, pool)
        .await
        .map_err(|e| format!("the read model on {stream}: {e}"))?;
    let sink = outbox::NatsSink::new(js).subject_prefix(prefix);
    let relay =
        outbox::Relay::new(events, sink).poll_interval(std::time::Duration::from_millis(20));
    tokio::spawn(async move { relay.run(std::future::pending()).await });
    tokio::spawn(async move { read_model.run(std::future::pending()).await });
    tracing::info!(%stream, "OrderCreated events relayed to NATS JetStream; read model on");
    Ok(())
}
