//! The orders API: a small payment-style service behind every layer of the workspace.
//!
//! Outermost first (the order [docs/architecture.md](../docs/architecture.md) explains):
//!
//! 1. `trace-ctx` — request id, trace context, latency; completes every problem+json body;
//! 2. `loadshed-fleet` — sheds test-mode, then reads, then writes under overload; the payment
//!    capture route is critical;
//! 3. `ratelimit-token-bucket` — requests per second per principal, with burst;
//! 4. `ratelimit-concurrent` — requests in flight per principal;
//! 5. `idem-core` — `Idempotency-Key` on `POST /orders` and `POST /payments/{id}/capture`;
//! 6. the handlers. `POST /webhooks/psp` is verified (`webhook-sig`, Standard Webhooks) and
//!    deduplicated by event id. With an outbox ([`OrdersApi::with_memory_outbox`],
//!    [`OrdersApi::with_postgres_outbox`]) every new order queues an `order.created` webhook for
//!    the merchant's endpoint — on PostgreSQL in the order's own transaction — which a
//!    [`merchant_dispatcher`] delivers (`webhook-delivery`).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use axum::body::Body;
//! use axum::http::Request;
//! use tower::ServiceExt;
//!
//! let api = examples::OrdersApi::in_memory();
//! let create = || {
//!     Request::post("/orders")
//!         .header("idempotency-key", "checkout-7f3a")
//!         .header("content-type", "application/json")
//!         .body(Body::from(r#"{"sku":"tea","quantity":2}"#))
//!         .unwrap()
//! };
//! for _ in 0..3 {
//!     api.router().oneshot(create()).await.unwrap();
//! }
//! assert_eq!(api.order_count(), 1);
//! # });
//! ```

pub mod demo;
pub mod grpc;
pub mod jobs;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use idem_core::{
    IdempotencyAttempt, IdempotencyLayer, IdempotencyPolicy, IdempotencyStore, MemoryStore,
};
use idem_store_postgres::sqlx;
use loadshed_fleet::{DefaultClassifier, FleetShedder, PriorityShedLayer, Shedder, SystemClock};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use optimistic_lock::{Conflict, Current, Expected, OptimisticLockLayer, Version, VersionSource};
use parking_lot::Mutex;
use ratelimit_concurrent::{
    Caps, ConcurrencyLimiter, KeyedConcurrencyLimitLayer, RedisConcurrencyLimiter,
};
use ratelimit_token_bucket::{KeyedLimiter, KeyedRateLimitLayer, Limiter, Quota, Quotas};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tower::ServiceBuilder;
use trace_ctx::{Problem, TraceContext, TraceContextLayer};
use webhook_delivery::{
    AddressPolicy, Dispatcher, Endpoint, MemoryOutbox, Outbox, PostgresOutbox,
    Sender as DeliverySender, WebhookEvent, WebhookOutbox,
};
use webhook_sig::{ReplayGuard, Scheme, Secret, Signer, VerifiedWebhook, Verifier, WebhookLayer};

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Order {
    /// `ord_<n>`, assigned on creation.
    pub id: String,
    /// The principal that created it (`bearer:<token>`, or `anonymous`).
    pub owner: String,
    /// What was ordered.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// Bumped by every change; sent as the strong `ETag` `"<version>"`.
    pub version: u64,
}

/// The body of `PATCH /orders/{id}`.
#[derive(Debug, Deserialize)]
pub struct OrderChange {
    /// The new quantity (1 or more).
    pub quantity: u32,
}

/// The body of `POST /orders`.
#[derive(Debug, Deserialize)]
pub struct NewOrder {
    /// What to order.
    pub sku: String,
    /// How many (1 or more).
    pub quantity: u32,
}

/// The limits of the API (per principal unless said otherwise).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request rate per principal.
    pub rate: Quota,
    /// Requests in flight per principal.
    pub in_flight: u32,
    /// Requests in flight per client IP (whatever tokens it presents), checked before the load
    /// shedder so one source cannot take the server's slots with many tokens.
    pub in_flight_per_ip: u32,
    /// The server's slots for the load shedder.
    pub capacity: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate: Quota::per_second(20).burst(40),
            in_flight: 8,
            in_flight_per_ip: 16,
            capacity: 64,
        }
    }
}

/// The shared secret of the payment provider's webhooks (a demo value: real deployments read it
/// from their secret store).
pub const PSP_WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Default)]
struct Book {
    next: u64,
    orders: BTreeMap<String, Order>,
    captured: Vec<String>,
    events: Vec<String>,
}

/// The order book: in memory, or (with [`OrdersApi::with_postgres_orders`]) in PostgreSQL, where
/// each order and capture is written in the transaction that completes its idempotency record.
#[derive(Clone, Default)]
struct Db {
    book: Arc<Mutex<Book>>,
    pg: Option<PgOrders>,
    outbox: Option<OrderOutbox>,
    /// `202 Accepted` orders: the job queue and the events outbox (with PostgreSQL orders).
    jobs: Option<jobs::AsyncOrders>,
    /// How a `POST /orders` in single-commit mode writes its idempotency record.
    single_commit: SingleCommit,
}

/// Where a single-commit `POST /orders` writes its idempotency record in the order's transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SingleCommit {
    /// Last (default): the order, its event, then the completed record (`record_in`) — one
    /// statement more than the POST without idempotency. A duplicate that lost the key rolls
    /// its order back and replays the winner's answer.
    #[default]
    RecordLast,
    /// First: `begin_in`, the order and its event, then `complete_in` — two statements more; a
    /// duplicate waits on the record's row lock before it does any work.
    RecordFirst,
}

/// Where `order.created` webhooks are queued.
#[derive(Clone)]
enum OrderOutbox {
    Memory(MemoryOutbox),
    Postgres(PostgresOutbox),
}

/// The endpoint name of the merchant's webhooks in the outbox.
pub const MERCHANT_ENDPOINT: &str = "merchant";

/// The merchant's webhook signing secret (a demo value, like [`PSP_WEBHOOK_SECRET`]).
pub const MERCHANT_WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// The `order.created` event of `order`: id `evt_<order id>` (so the event of one order is
/// queued once, whatever retries its creation sees), body `{"type":"order.created","data":…}`.
pub fn order_created_event(order: &Order) -> WebhookEvent {
    let body = serde_json::json!({ "type": "order.created", "data": order }).to_string();
    WebhookEvent::new(MERCHANT_ENDPOINT, format!("evt_{}", order.id), body)
        .expect("order ids are printable ASCII")
}

/// The dispatcher of the merchant's webhooks: `outbox`'s events signed with `secret` (Standard
/// Webhooks) and posted to `url`; `allow` opens networks past the SSRF guard (a receiver on
/// loopback or a private network). 4 workers, the default schedule.
pub fn merchant_dispatcher<O: Outbox>(
    outbox: O,
    url: &str,
    secret: &Secret,
    allow: &[retry_safe_core::IpNet],
    lease: Duration,
    timeout: Duration,
) -> Result<Dispatcher<O>, Box<dyn std::error::Error + Send + Sync>> {
    let policy = allow
        .iter()
        .fold(AddressPolicy::default(), |p, net| p.allow(*net));
    let sender = DeliverySender::builder()
        .address_policy(policy)
        .timeout(timeout)
        .build()?;
    let endpoint = Endpoint::new(
        MERCHANT_ENDPOINT,
        url,
        Signer::new(Scheme::StandardWebhooks, secret),
    )?;
    Ok(Dispatcher::new(outbox, sender)
        .endpoint(endpoint)
        .lease(lease)
        .workers(4))
}

impl Db {
    fn lock(&self) -> parking_lot::MutexGuard<'_, Book> {
        self.book.lock()
    }
}

#[derive(Clone)]
struct PgOrders {
    store: idem_store_postgres::PostgresStore,
    retention: Duration,
}

/// Creates the orders API's own tables (idempotent): `orders`, `captures`, the `jobs_seq` of
/// `202` orders and the read model `order_counts`.
pub async fn migrate_orders(
    pool: &idem_store_postgres::sqlx::PgPool,
) -> Result<(), idem_store_postgres::sqlx::Error> {
    for statement in [
        "CREATE SEQUENCE IF NOT EXISTS orders_seq",
        "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, owner TEXT NOT NULL, \
         sku TEXT NOT NULL, quantity INT NOT NULL, version BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS captures (seq BIGSERIAL PRIMARY KEY, payment TEXT NOT NULL)",
        "CREATE SEQUENCE IF NOT EXISTS jobs_seq",
        "CREATE TABLE IF NOT EXISTS order_counts (sku TEXT PRIMARY KEY, orders BIGINT NOT NULL, \
         quantity BIGINT NOT NULL)",
    ] {
        idem_store_postgres::sqlx::query(statement)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// The service: its order book, its stores and its limiters.
#[derive(Clone)]
pub struct OrdersApi<S> {
    book: Db,
    idempotency: IdempotencyLayer<S>,
    /// `POST /orders` in single-commit mode, when set.
    single_commit: Option<IdempotencyLayer<S>>,
    /// `POST /orders` and captures without the idempotency layer (every other layer kept).
    without_idempotency: bool,
    rate: Arc<dyn Limiter<u64>>,
    concurrency: Caps<u64>,
    fleet: Option<FleetShedder>,
    per_ip: ConcurrencyLimiter<std::net::IpAddr>,
    client_ip: ratelimit_concurrent::ClientIp,
    shedder: Arc<Shedder>,
    webhooks: WebhookLayer<MemoryStore>,
}

impl OrdersApi<MemoryStore> {
    /// The API on the embedded in-memory stores, with the default limits.
    pub fn in_memory() -> Self {
        Self::new(memory_store(), Limits::default())
    }
}

/// The embedded idempotency store as the API runs it: one principal (tenant) may hold at most
/// 10,000 records, so its flood is refused (429) while the others keep working.
pub fn memory_store() -> MemoryStore {
    let mut config = idem_core::MemoryStoreConfig::default();
    config.max_records_per_scope = Some(10_000);
    MemoryStore::with_clock(idem_core::SystemClock::new(), config)
}

/// The principal of a request: `bearer:<token>`, or `anonymous` without a bearer token — its own
/// principal, which no token can name. Keys of two principals never meet.
pub fn principal(headers: &http::HeaderMap) -> String {
    match bearer(headers) {
        Some(token) => format!("bearer:{}", String::from_utf8_lossy(token)),
        None => "anonymous".to_owned(),
    }
}

fn bearer(headers: &http::HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
}

/// The limiters' key of a request's principal: FNV-1a of the principal, a stable 64-bit hash (the
/// same on every server, so a fleet sharing Redis shares the keys) that costs no allocation.
pub fn principal_key(headers: &http::HeaderMap) -> u64 {
    // The same bytes as `principal`, without allocating: "bearer:<token>" or "anonymous".
    match bearer(headers) {
        Some(token) => retry_safe_core::stable_hash(&[b"bearer:", token]),
        None => retry_safe_core::stable_hash(&[b"anonymous"]),
    }
}

/// How request bodies are read before any slot is taken: at most 1 MiB, within 10 s, and at
/// least 1 KiB/s after the first 2 s; gRPC requests (which may stream) pass unread.
pub fn request_buffering() -> retry_safe_core::body::BufferBodyLayer {
    let limits = retry_safe_core::body::BodyLimits::new(1024 * 1024, Duration::from_secs(10))
        .min_rate(1024, Duration::from_secs(2));
    retry_safe_core::body::BufferBodyLayer::new(limits)
        .skip(|parts| retry_safe_core::grpc::is_grpc(&parts.headers))
}

/// The idempotency policy of the API: keys required, scoped by principal, the replayed headers.
fn orders_policy() -> IdempotencyPolicy {
    IdempotencyPolicy::default()
        .require_key(true)
        .scope_with(|parts| principal(&parts.headers))
        .replay_headers(
            [
                "content-type",
                "content-language",
                "content-location",
                "location",
                "preference-applied",
                "etag",
                "last-modified",
                // The gRPC `CreateOrder` answer's metadata.
                "x-order-id",
            ]
            .into_iter()
            .map(http::HeaderName::from_static),
        )
}

impl<S: IdempotencyStore> OrdersApi<S> {
    /// The API on any idempotency store.
    pub fn new(store: S, limits: Limits) -> Self {
        let policy = orders_policy();
        let secret = Secret::from_standard(PSP_WEBHOOK_SECRET).expect("a valid demo secret");
        let webhooks = WebhookLayer::new(Verifier::new(Scheme::StandardWebhooks, secret))
            .replay_guard(ReplayGuard::new(MemoryStore::new()).scope("psp"));
        Self {
            book: Db::default(),
            idempotency: IdempotencyLayer::new(store, policy),
            single_commit: None,
            without_idempotency: false,
            rate: Arc::new(KeyedLimiter::new(
                Quotas::new([limits.rate]).expect("valid default quota"),
            )) as Arc<dyn Limiter<u64>>,
            concurrency: Caps::Local(
                ConcurrencyLimiter::new(limits.in_flight.max(1)).expect("cap ≥ 1"),
            ),
            fleet: None,
            per_ip: ConcurrencyLimiter::new(limits.in_flight_per_ip.max(1)).expect("cap ≥ 1"),
            client_ip: ratelimit_concurrent::ClientIp::new().peer_from(|parts| {
                parts
                    .extensions
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map(|c| c.0.ip())
            }),
            shedder: Arc::new(Shedder::new(limits.capacity.max(1)).expect("capacity ≥ 1")),
            webhooks,
        }
    }

    /// Keeps the orders and captures in PostgreSQL (tables of [`migrate_orders`]), each written in
    /// the transaction that completes its idempotency record on `store` (the transactional mode):
    /// after a crash every key has zero or one order, never two. Use the same `store` as the
    /// idempotency layer's.
    pub fn with_postgres_orders(mut self, store: idem_store_postgres::PostgresStore) -> Self {
        self.book.pg = Some(PgOrders {
            store,
            retention: Duration::from_secs(24 * 3600),
        });
        self
    }

    /// Creates orders in single-commit mode (with [`with_postgres_orders`](Self::with_postgres_orders)
    /// on the same `store`): the order, its event and the idempotency record in one transaction,
    /// one commit per `POST /orders`, the record written where `record` says. The other
    /// idempotent routes (captures, updates) keep the default mode.
    pub fn with_single_commit(mut self, store: S, record: SingleCommit) -> Self {
        self.book.single_commit = record;
        self.single_commit = Some(IdempotencyLayer::new(
            store,
            orders_policy().single_commit(true),
        ));
        self
    }

    /// Queues an `order.created` webhook ([`order_created_event`]) in `outbox` for every new
    /// order. In memory the event is queued after the order is made, not atomically with it:
    /// a crash between the two loses the event (use [`with_postgres_outbox`](Self::with_postgres_outbox)
    /// when that matters).
    pub fn with_memory_outbox(mut self, outbox: MemoryOutbox) -> Self {
        self.book.outbox = Some(OrderOutbox::Memory(outbox));
        self
    }

    /// Queues the `order.created` webhook of every new order in `outbox`, inside the transaction
    /// that writes the order and completes its idempotency record (with
    /// [`with_postgres_orders`](Self::with_postgres_orders)): the order, its record and its event
    /// commit together or not at all.
    pub fn with_postgres_outbox(mut self, outbox: PostgresOutbox) -> Self {
        self.book.outbox = Some(OrderOutbox::Postgres(outbox));
        self
    }

    /// Accepts `POST /orders` with `Prefer: respond-async` (with
    /// [`with_postgres_orders`](Self::with_postgres_orders)): a `create-order` job queued in
    /// `jobs` with the idempotency record, `202 Accepted` with `Location: /jobs/{id}`; the
    /// worker ([`order_worker`](Self::order_worker)) writes each order with its `OrderCreated`
    /// event in `events`. Run `events.migrate()` first (it creates the jobs table too).
    pub fn with_async_orders(
        mut self,
        jobs: ::outbox::JobQueue,
        events: ::outbox::PostgresOutbox,
    ) -> Self {
        self.book.jobs = Some(jobs::AsyncOrders { jobs, events });
        self
    }

    /// The worker of `202` orders, with [`with_async_orders`](Self::with_async_orders).
    pub fn order_worker(&self) -> Option<jobs::OrderWorker> {
        let orders = self.book.jobs.clone()?;
        Some(jobs::OrderWorker::new(self.book.clone(), orders))
    }

    /// Believes the `Forwarded` / `X-Forwarded-For` entries of proxies in `nets` (the load
    /// balancers in front of the API) when keying the per-IP limit; by default no proxy is
    /// trusted and the peer address is the client.
    pub fn trust_proxies(
        mut self,
        nets: impl IntoIterator<Item = ratelimit_concurrent::IpNet>,
    ) -> Self {
        for net in nets {
            self.client_ip = self.client_ip.trust(net);
        }
        self
    }

    /// Caps each principal's requests in flight across the fleet with `limiter` (on Redis or a
    /// Redis Cluster) instead of per server.
    pub fn with_fleet_caps(mut self, limiter: RedisConcurrencyLimiter) -> Self {
        self.concurrency = Caps::Fleet(limiter);
        self
    }

    /// Admits every request through the fleet usage shedder `fleet` as well as this server's
    /// shedder: the fleet's share of each class, with its reserve for critical requests.
    pub fn with_fleet_shedder(mut self, fleet: FleetShedder) -> Self {
        self.fleet = Some(fleet);
        self
    }

    fn load_shed_layer(
        &self,
        classifier: DefaultClassifier,
    ) -> PriorityShedLayer<SystemClock, DefaultClassifier> {
        let layer = PriorityShedLayer::from_shared(self.shedder.clone(), classifier);
        match &self.fleet {
            Some(fleet) => layer.with_fleet(fleet.clone()),
            None => layer,
        }
    }

    /// Serves `POST /orders` and captures without the idempotency layer, every other layer
    /// kept: the yardstick of what idempotency costs on a stacked server.
    pub fn without_idempotency(mut self) -> Self {
        self.without_idempotency = true;
        self
    }

    /// Uses `limiter` for the request rate (for example a `RedisLimiter`, shared by a fleet)
    /// instead of the in-memory one.
    pub fn with_rate_limiter(mut self, limiter: Arc<dyn Limiter<u64>>) -> Self {
        self.rate = limiter;
        self
    }

    /// The HTTP routes with every layer.
    pub fn router(&self) -> Router {
        prometheus(); // install the recorder before the first request is counted
        let idempotent = match &self.single_commit {
            _ if self.without_idempotency => Router::new()
                .route("/orders", post(create_order))
                .route("/payments/{id}/capture", post(capture_payment)),
            Some(single) => Router::new()
                .route("/orders", post(create_order))
                .route_layer(single.clone())
                .merge(
                    Router::new()
                        .route("/payments/{id}/capture", post(capture_payment))
                        .route_layer(self.idempotency.clone()),
                ),
            None => Router::new()
                .route("/orders", post(create_order))
                .route("/payments/{id}/capture", post(capture_payment))
                .route_layer(self.idempotency.clone()),
        };
        let webhooks = Router::new()
            .route("/webhooks/psp", post(receive_webhook))
            .route_layer(self.webhooks.clone());
        // GET answers with an ETag (and 304); PATCH needs If-Match (428 without, 412 when stale).
        // Idempotency is outside: a retried PATCH is replayed, not refused by its own success.
        let versioned = Router::new()
            .route("/orders/{id}", get(get_order).patch(update_order))
            .route_layer(
                ServiceBuilder::new()
                    .layer(self.idempotency.clone())
                    .layer(OptimisticLockLayer::new(BookVersions(self.book.clone()))),
            );
        let classifier = DefaultClassifier::new().critical(http::Method::POST, "/payments/");
        // gRPC (`orders.v1.Orders/CreateOrder`, `orders.v1.Reports/SlowReport`) on the same port.
        let grpc = grpc::routes(self.book.clone(), self.idempotency.clone());
        Router::new()
            .route("/orders", get(list_orders))
            .route("/jobs/{id}", get(jobs::job_status))
            .route("/reports/skus", get(jobs::sku_report))
            .route("/reports/slow", get(slow_report))
            .merge(idempotent)
            .merge(webhooks)
            .merge(versioned)
            .with_state(self.book.clone())
            .merge(grpc)
            // One `ServiceBuilder`, so every route pays one boxed route for the five layers, not
            // one per layer. Outermost first: tracing, per-IP cap, shedding, rate, per-principal
            // cap.
            .layer(
                ServiceBuilder::new()
                    .layer(TraceContextLayer::new())
                    .layer(KeyedConcurrencyLimitLayer::new(self.per_ip.clone(), {
                        let ips = self.client_ip.clone();
                        move |parts: &http::request::Parts| ips.of(parts)
                    }))
                    // Bodies are read whole (bounded, at a minimum rate) before the shedder and
                    // the caps: a client trickling its body holds none of their slots.
                    .layer(request_buffering())
                    .layer(self.load_shed_layer(classifier))
                    .layer(KeyedRateLimitLayer::new(
                        self.rate.clone(),
                        |parts: &http::request::Parts| Some(principal_key(&parts.headers)),
                    ))
                    .layer(KeyedConcurrencyLimitLayer::new(
                        self.concurrency.clone(),
                        |parts: &http::request::Parts| Some(principal_key(&parts.headers)),
                    )),
            )
            // Scrapes are neither limited nor shed: an overloaded server must still be observable.
            .route(
                "/metrics",
                get(metrics_text).layer(TraceContextLayer::new()),
            )
            // Liveness for a load balancer: the process answers, touching no backend. A check
            // through the fleet limits would eject every server at once while the shared Redis
            // stalls (its calls wait out their timeout), though each still serves (fail-open).
            .route("/healthz", get(|| async { "ok" }))
    }

    /// The same handlers without any layer (no idempotency, limits, shedding or tracing): the
    /// baseline of the end-to-end benchmark.
    pub fn bare_router(&self) -> Router {
        Router::new()
            .route("/orders", get(list_orders).post(create_order))
            .route("/orders/{id}", get(get_order))
            .route("/payments/{id}/capture", post(capture_payment))
            .route("/reports/slow", get(slow_report))
            .with_state(self.book.clone())
    }

    /// How many orders exist.
    pub fn order_count(&self) -> usize {
        self.book.lock().orders.len()
    }

    /// Payments captured, in order (a payment captured twice would appear twice).
    pub fn captures(&self) -> Vec<String> {
        self.book.lock().captured.clone()
    }

    /// Webhook events processed, in order.
    pub fn webhook_events(&self) -> Vec<String> {
        self.book.lock().events.clone()
    }

    /// The idempotency layer's counters.
    pub fn idempotency_metrics(&self) -> idem_core::MetricsSnapshot {
        self.idempotency.metrics()
    }

    /// The load shedder, for its counters.
    pub fn shedder(&self) -> &Shedder {
        &self.shedder
    }
}

/// The process's Prometheus recorder, installed on first use (by [`OrdersApi::router`]): every
/// layer's counters (`idempotency_requests_total`, `ratelimit_requests_total`,
/// `loadshed_requests_total`, `webhook_verifications_total`, …; see docs/operations.md) flow into
/// it. If the host program installed another `metrics` recorder first, that one keeps the
/// counters and this handle renders nothing.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            eprintln!("orders-api: another metrics recorder is installed; /metrics stays empty");
            return handle;
        }
        // A recorder built without the exporter's own listener needs its upkeep run: histogram
        // samples are buffered until then, and a server nobody scrapes would grow without bound.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            });
        if let Err(e) = spawned {
            eprintln!("orders-api: metrics upkeep thread not started ({e}); /metrics drains them");
        }
        handle
    })
}

/// `GET /metrics`: Prometheus text exposition format.
async fn metrics_text() -> Response {
    let mut res = prometheus().render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// An outgoing `order.created` webhook to a merchant's endpoint: the JSON event signed with
/// Standard Webhooks headers under `secret`, and the request's trace context and request id
/// carried on (`trace-ctx`).
pub fn outgoing_webhook(
    ctx: &TraceContext,
    url: &str,
    secret: &Secret,
    event_id: &str,
    order: &Order,
) -> http::Request<bytes::Bytes> {
    let body = serde_json::json!({ "type": "order.created", "data": order }).to_string();
    let signer = Signer::new(Scheme::StandardWebhooks, secret);
    let mut headers = signer
        .headers(event_id, body.as_bytes())
        .expect("event ids are printable");
    ctx.inject(&mut headers);
    let mut req = http::Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(bytes::Bytes::from(body))
        .expect("a valid request");
    req.headers_mut().extend(headers);
    req
}

fn problem(status: StatusCode, code: &'static str, title: &'static str, detail: &str) -> Response {
    Problem::new(status, code, title)
        .with_detail(detail)
        .into_response::<axum::body::Body>()
}

async fn create_order(
    State(db): State<Db>,
    attempt: Option<Extension<IdempotencyAttempt>>,
    pending: Option<Extension<idem_core::PendingAttempt>>,
    headers: http::HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let new: NewOrder = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "Invalid body",
                &e.to_string(),
            )
        }
    };
    if new.quantity == 0 || new.sku.is_empty() {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_order",
            "Invalid order",
            "sku must be set and quantity at least 1",
        );
    }
    if let (Some(pg), Some(orders)) = (&db.pg, &db.jobs) {
        if jobs::prefers_async(&headers) {
            let work = jobs::job_work(principal(&headers), new, orders.jobs.clone());
            return match (pending, attempt) {
                (Some(Extension(pending)), _) => {
                    pg_single_commit(pg, db.single_commit, &pending, work).await
                }
                (None, Some(Extension(attempt))) => pg_transaction(pg, &attempt, work).await,
                (None, None) => pg_plain(pg, work).await,
            };
        }
    }
    if let Some(pg) = &db.pg {
        let work = order_work(principal(&headers), new, db.outbox.clone());
        return match (pending, attempt) {
            // Single-commit mode: the order, its event and the record in one transaction.
            (Some(Extension(pending)), _) => {
                pg_single_commit(pg, db.single_commit, &pending, work).await
            }
            // Transactional mode: the record was begun by the layer; the order, its event and
            // the completion commit together.
            (None, Some(Extension(attempt))) => pg_transaction(pg, &attempt, work).await,
            // No idempotency layer (`--bare`): the order and its event in one transaction.
            (None, None) => pg_plain(pg, work).await,
        };
    }
    let order = create_in_memory(&db, principal(&headers), new.sku, new.quantity).await;
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/orders/{}", order.id))],
        Json(order),
    )
        .into_response()
}

/// A new order in the in-memory book (and its `order.created` event in the memory outbox, if any).
pub(crate) async fn create_in_memory(db: &Db, owner: String, sku: String, quantity: u32) -> Order {
    let outbox = db.outbox.clone();
    let order = {
        let mut db = db.lock();
        db.next += 1;
        let order = Order {
            id: format!("ord_{}", db.next),
            owner,
            sku,
            quantity,
            version: 1,
        };
        db.orders.insert(order.id.clone(), order.clone());
        order
    };
    if let Some(OrderOutbox::Memory(outbox)) = &outbox {
        if let Err(e) = outbox.enqueue_webhook(&order_created_event(&order)).await {
            tracing::error!(error = %e, order = %order.id, "order.created webhook not queued");
        }
    }
    order
}

/// The answer when the orders database fails.
fn orders_unavailable(e: &dyn std::fmt::Display) -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "orders_unavailable",
        "Orders database unavailable",
        &e.to_string(),
    )
}

/// An `orders` row: id, owner, sku, quantity, version.
type OrderRow = (String, String, String, i32, i64);

fn order_of((id, owner, sku, quantity, version): OrderRow) -> Order {
    Order {
        id,
        owner,
        sku,
        quantity: u32::try_from(quantity).unwrap_or(0),
        version: u64::try_from(version).unwrap_or(0),
    }
}

/// The stored answer to an order's creation: what the client gets, first time or replayed.
fn created(order: &Order) -> idem_core::StoredResponse {
    idem_core::StoredResponse {
        status: 201,
        headers: vec![
            (
                "content-type".into(),
                bytes::Bytes::from_static(b"application/json"),
            ),
            ("location".into(), format!("/orders/{}", order.id).into()),
        ],
        body: serde_json::to_vec(order).unwrap_or_default().into(),
        trailers: Vec::new(),
    }
}

type TxWork<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<idem_core::StoredResponse, retry_safe_core::BoxError>,
            > + Send
            + 'a,
    >,
>;

/// [`insert_order`] as the work of an order transaction.
fn order_work(
    owner: String,
    new: NewOrder,
    outbox: Option<OrderOutbox>,
) -> impl for<'a> FnOnce(&'a mut sqlx::Transaction<'static, sqlx::Postgres>) -> TxWork<'a> {
    move |tx| Box::pin(async move { insert_order(tx, owner, new, outbox.as_ref()).await })
}

/// The order of `owner`, its `order.created` event (when the outbox is in PostgreSQL), on `tx`.
async fn insert_order(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    owner: String,
    new: NewOrder,
    outbox: Option<&OrderOutbox>,
) -> Result<idem_core::StoredResponse, retry_safe_core::BoxError> {
    Ok(created(&insert_order_row(tx, owner, new, outbox).await?))
}

/// [`insert_order`]'s rows; the order made.
pub(crate) async fn insert_order_row(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    owner: String,
    new: NewOrder,
    outbox: Option<&OrderOutbox>,
) -> Result<Order, retry_safe_core::BoxError> {
    let row: (String,) = sqlx::query_as(
        "INSERT INTO orders (id, owner, sku, quantity, version) \
         VALUES ('ord_' || nextval('orders_seq'), $1, $2, $3, 1) RETURNING id",
    )
    .bind(&owner)
    .bind(&new.sku)
    .bind(i32::try_from(new.quantity).unwrap_or(i32::MAX))
    .fetch_one(&mut **tx)
    .await?;
    let order = Order {
        id: row.0,
        owner,
        sku: new.sku,
        quantity: new.quantity,
        version: 1,
    };
    if let Some(OrderOutbox::Postgres(outbox)) = outbox {
        outbox
            .enqueue_in(&mut **tx, &order_created_event(&order).to_event()?)
            .await?;
    }
    Ok(order)
}

/// The answer when an order transaction fails: nothing of it was applied.
fn order_failed(detail: String) -> Response {
    tracing::error!(%detail, "order transaction failed");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "orders_unavailable",
        "Orders database unavailable",
        "the request was not applied; retry it with the same Idempotency-Key",
    )
}

/// Single-commit mode: `work` and the idempotency record of `pending` in one transaction, one
/// commit, the record written where `record` says; a duplicate is answered by `pending`.
async fn pg_single_commit<F>(
    pg: &PgOrders,
    record: SingleCommit,
    pending: &idem_core::PendingAttempt,
    work: F,
) -> Response
where
    F: for<'a> FnOnce(&'a mut sqlx::Transaction<'static, sqlx::Postgres>) -> TxWork<'a>,
{
    let result = match record {
        SingleCommit::RecordLast => record_last(pg, pending, work).await,
        SingleCommit::RecordFirst => record_first(pg, pending, work).await,
    };
    result.unwrap_or_else(|e| order_failed(e.to_string()))
}

/// Record last: the order, then `record_in`; a lost key rolls the order back and replays.
async fn record_last<F>(
    pg: &PgOrders,
    pending: &idem_core::PendingAttempt,
    work: F,
) -> Result<Response, retry_safe_core::BoxError>
where
    F: for<'a> FnOnce(&'a mut sqlx::Transaction<'static, sqlx::Postgres>) -> TxWork<'a>,
{
    let mut tx = pg.store.pool().begin().await?;
    let stored = work(&mut tx).await?;
    match pg.store.record_in(&mut tx, pending, &stored).await? {
        idem_store_postgres::Recorded::Won => {
            tx.commit().await?;
            Ok(stored.to_response())
        }
        idem_store_postgres::Recorded::Lost(outcome) => {
            tx.rollback().await?;
            pending
                .answer(&outcome)
                .ok_or_else(|| "a lost key answered as acquired".into())
        }
        _ => Err("an unknown record outcome".into()),
    }
}

/// Record first: `begin_in`, the order, `complete_in`; a duplicate in flight waits on the
/// record's row lock, then replays (past the store's lock timeout: 409).
async fn record_first<F>(
    pg: &PgOrders,
    pending: &idem_core::PendingAttempt,
    work: F,
) -> Result<Response, retry_safe_core::BoxError>
where
    F: for<'a> FnOnce(&'a mut sqlx::Transaction<'static, sqlx::Postgres>) -> TxWork<'a>,
{
    let mut tx = pg.store.pool().begin().await?;
    let outcome = pg.store.begin_in(&mut tx, pending).await?;
    let idem_core::BeginOutcome::Acquired { fence } = outcome else {
        // Replay, mismatch or in flight: nothing to commit; dropping `tx` rolls it back.
        return pending
            .answer(&outcome)
            .ok_or_else(|| "an acquired key answered as not".into());
    };
    let stored = work(&mut tx).await?;
    let attempt = pending.acquired(fence);
    pg.store
        .complete_in(&mut tx, &attempt, &stored, pending.retention)
        .await?;
    tx.commit().await?;
    Ok(stored.to_response())
}

/// Without idempotency: `work` in one transaction.
async fn pg_plain<F>(pg: &PgOrders, work: F) -> Response
where
    F: for<'a> FnOnce(&'a mut sqlx::Transaction<'static, sqlx::Postgres>) -> TxWork<'a>,
{
    let mut tx = match pg.store.pool().begin().await {
        Ok(tx) => tx,
        Err(e) => return order_failed(e.to_string()),
    };
    let stored = match work(&mut tx).await {
        Ok(stored) => stored,
        Err(e) => return order_failed(e.to_string()),
    };
    if let Err(e) = tx.commit().await {
        return order_failed(e.to_string());
    }
    stored.to_response()
}

/// Runs `work` and completes the idempotency record of `attempt` in one transaction: the rows and
/// the record commit together or not at all.
async fn pg_transaction<F>(pg: &PgOrders, attempt: &IdempotencyAttempt, work: F) -> Response
where
    F: for<'a> FnOnce(&'a mut sqlx::Transaction<'static, sqlx::Postgres>) -> TxWork<'a>,
{
    let mut tx = match pg.store.pool().begin().await {
        Ok(tx) => tx,
        Err(e) => return order_failed(e.to_string()),
    };
    let stored = match work(&mut tx).await {
        Ok(stored) => stored,
        Err(e) => return order_failed(e.to_string()),
    };
    if let Err(e) = pg
        .store
        .complete_in(&mut tx, attempt, &stored, pg.retention)
        .await
    {
        return order_failed(e.to_string());
    }
    if let Err(e) = tx.commit().await {
        return order_failed(e.to_string());
    }
    idem_core::handler_completed(&stored)
}

async fn get_order(State(db): State<Db>, Path(id): Path<String>) -> Response {
    if let Some(pg) = &db.pg {
        let row: Result<Option<OrderRow>, _> =
            sqlx::query_as("SELECT id, owner, sku, quantity, version FROM orders WHERE id = $1")
                .bind(&id)
                .fetch_optional(pg.store.pool())
                .await;
        return match row {
            Ok(Some(row)) => Json(order_of(row)).into_response(),
            Ok(None) => problem(
                StatusCode::NOT_FOUND,
                "order_not_found",
                "Order not found",
                "no such order",
            ),
            Err(e) => orders_unavailable(&e),
        };
    }
    match db.lock().orders.get(&id) {
        Some(order) => Json(order.clone()).into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            "order_not_found",
            "Order not found",
            "no such order",
        ),
    }
}

/// The current version of the order a request targets (`/orders/{id}`), for the
/// optimistic-lock layer.
struct BookVersions(Db);

#[async_trait::async_trait]
impl VersionSource for BookVersions {
    async fn current(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Option<Current>, optimistic_lock::BoxError> {
        let id = parts.uri.path().strip_prefix("/orders/").unwrap_or("");
        if let Some(pg) = &self.0.pg {
            let versioned = optimistic_lock::PgVersioned::new("orders", "id", "version")?;
            return Ok(versioned
                .current(pg.store.pool(), id.to_owned())
                .await?
                .map(Current::new));
        }
        Ok(self.in_memory(id))
    }

    fn current_now(
        &self,
        parts: &http::request::Parts,
    ) -> Option<Result<Option<Current>, optimistic_lock::BoxError>> {
        if self.0.pg.is_some() {
            return None; // read from PostgreSQL, awaited
        }
        let id = parts.uri.path().strip_prefix("/orders/").unwrap_or("");
        Some(Ok(self.in_memory(id)))
    }
}

impl BookVersions {
    fn in_memory(&self, id: &str) -> Option<Current> {
        self.0
            .lock()
            .orders
            .get(id)
            .map(|o| Current::new(Version::number(o.version)))
    }
}

/// `PATCH /orders/{id}`: a compare-and-set on the order's version, so a change based on a stale
/// read is refused (412) even when it raced past the layer's check.
async fn update_order(
    State(db): State<Db>,
    Path(id): Path<String>,
    Extension(expected): Extension<Expected>,
    body: bytes::Bytes,
) -> Response {
    let change: OrderChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_order_change",
                "Invalid order change",
                &e.to_string(),
            )
        }
    };
    if change.quantity == 0 {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_quantity",
            "Invalid quantity",
            "quantity must be at least 1",
        );
    }
    if let Some(pg) = &db.pg {
        let versioned = match optimistic_lock::PgVersioned::new("orders", "id", "version") {
            Ok(v) => v,
            Err(e) => {
                return problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "Internal error",
                    &e.to_string(),
                )
            }
        };
        let quantity = i32::try_from(change.quantity).unwrap_or(i32::MAX);
        return match versioned
            .update(pg.store.pool(), id.clone(), &expected, |set| {
                set.push("quantity = ").push_bind(quantity);
            })
            .await
        {
            Ok(version) => {
                let mut res = get_order(State(db.clone()), Path(id)).await;
                res.headers_mut()
                    .insert(header::ETAG, version.etag().to_header_value());
                res
            }
            Err(optimistic_lock::CasError::Conflict(c)) => c.into_response(),
            Err(optimistic_lock::CasError::NotFound) => problem(
                StatusCode::NOT_FOUND,
                "order_not_found",
                "Order not found",
                "no such order",
            ),
            Err(e) => orders_unavailable(&e),
        };
    }
    let mut book = db.lock();
    let Some(order) = book.orders.get_mut(&id) else {
        return problem(
            StatusCode::NOT_FOUND,
            "order_not_found",
            "Order not found",
            "no such order",
        );
    };
    let current = Version::number(order.version);
    let matches = match &expected {
        Expected::Version(v) => *v == current,
        Expected::Unconditional => true,
        _ => false,
    };
    if !matches {
        return Conflict::new(Some(current)).into_response();
    }
    order.quantity = change.quantity;
    order.version += 1;
    let etag = Version::number(order.version).etag().to_header_value();
    let mut res = Json(order.clone()).into_response();
    res.headers_mut().insert(header::ETAG, etag);
    res
}

async fn list_orders(State(db): State<Db>) -> Response {
    if let Some(pg) = &db.pg {
        let rows: Result<Vec<OrderRow>, _> =
            sqlx::query_as("SELECT id, owner, sku, quantity, version FROM orders ORDER BY id")
                .fetch_all(pg.store.pool())
                .await;
        return match rows {
            Ok(rows) => Json(rows.into_iter().map(order_of).collect::<Vec<_>>()).into_response(),
            Err(e) => orders_unavailable(&e),
        };
    }
    Json(db.lock().orders.values().cloned().collect::<Vec<_>>()).into_response()
}

async fn capture_payment(
    State(db): State<Db>,
    attempt: Option<Extension<IdempotencyAttempt>>,
    Path(id): Path<String>,
) -> Response {
    if id.is_empty() {
        return problem(
            StatusCode::NOT_FOUND,
            "payment_not_found",
            "Payment not found",
            "the payment id is empty",
        );
    }
    if let (Some(pg), Some(Extension(attempt))) = (&db.pg, attempt) {
        return pg_transaction(pg, &attempt, |tx| {
            Box::pin(async move {
                sqlx::query("INSERT INTO captures (payment) VALUES ($1)")
                    .bind(&id)
                    .execute(&mut **tx)
                    .await?;
                Ok(idem_core::StoredResponse {
                    status: 200,
                    headers: vec![(
                        "content-type".into(),
                        bytes::Bytes::from_static(b"application/json"),
                    )],
                    body: serde_json::json!({ "payment": id, "status": "captured" })
                        .to_string()
                        .into(),
                    trailers: Vec::new(),
                })
            })
        })
        .await;
    }
    db.lock().captured.push(id.clone());
    Json(serde_json::json!({ "payment": id, "status": "captured" })).into_response()
}

#[derive(Deserialize)]
struct SlowQuery {
    ms: Option<u64>,
}

/// A report that takes a while (up to 2 s): what in-flight limits and load shedding protect.
async fn slow_report(Query(q): Query<SlowQuery>) -> Json<serde_json::Value> {
    let ms = q.ms.unwrap_or(200).min(2000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(serde_json::json!({ "report": "ready", "took_ms": ms }))
}

async fn receive_webhook(
    State(db): State<Db>,
    Extension(event): Extension<VerifiedWebhook>,
) -> StatusCode {
    db.lock()
        .events
        .push(event.id.unwrap_or_else(|| "unnamed".into()));
    StatusCode::NO_CONTENT
}

/// The workspace README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
