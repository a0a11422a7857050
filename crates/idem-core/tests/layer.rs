//! The tower layer end to end, on the in-memory store and tokio's paused clock.

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use idem_core::{
    BeginOutcome, FailMode, Fence, Fingerprint, IdempotencyKey, IdempotencyLayer,
    IdempotencyPolicy, IdempotencyStore, MemoryStore, MemoryStoreConfig, StoreError,
    StoredResponse, TokioClock,
};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

type Req = Request<Full<Bytes>>;
type Res = Response<Full<Bytes>>;
type BoxFut = Pin<Box<dyn Future<Output = Result<Res, Infallible>> + Send>>;

/// A handler that counts its runs and answers what `respond` makes of the run number.
#[derive(Clone)]
struct Handler {
    runs: Arc<AtomicU32>,
    respond: Arc<dyn Fn(u32, Req) -> BoxFut + Send + Sync>,
}

impl Handler {
    fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(u32, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Res> + Send + 'static,
    {
        Self {
            runs: Arc::default(),
            respond: Arc::new(move |n, req| {
                let fut = f(n, req);
                Box::pin(async move { Ok(fut.await) })
            }),
        }
    }

    /// 201 with the run number in the body, after `delay`.
    fn orders(delay: Duration) -> Self {
        Self::new(move |n, _| async move {
            tokio::time::sleep(delay).await;
            Response::builder()
                .status(StatusCode::CREATED)
                .header("content-type", "application/json")
                .header("location", format!("/orders/{n}"))
                .header("x-not-kept", "1")
                .body(Full::new(Bytes::from(format!("{{\"order\":{n}}}"))))
                .unwrap()
        })
    }

    fn runs(&self) -> u32 {
        self.runs.load(Ordering::SeqCst)
    }
}

impl Service<Req> for Handler {
    type Response = Res;
    type Error = Infallible;
    type Future = BoxFut;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Req) -> BoxFut {
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        (self.respond)(n, req)
    }
}

fn store() -> MemoryStore<TokioClock> {
    MemoryStore::with_clock(TokioClock::new(), MemoryStoreConfig::default())
}

fn post(key: Option<&str>, body: &'static str) -> Req {
    let mut b = Request::post("/orders?currency=eur");
    if let Some(key) = key {
        b = b.header("idempotency-key", key);
    }
    b.body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn send<S, RB>(svc: &S, req: Req) -> (StatusCode, http::HeaderMap, Bytes)
where
    S: Service<Req, Response = Response<RB>, Error = Infallible> + Clone,
    RB: http_body::Body,
    RB::Error: std::fmt::Debug,
{
    let res = svc.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn problem_code(body: &Bytes) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).expect("problem+json body");
    v["code"].as_str().unwrap().to_owned()
}

#[tokio::test(start_paused = true)]
async fn two_hundred_concurrent_requests_run_the_handler_once() {
    let handler = Handler::orders(Duration::from_millis(200));
    let layer = IdempotencyLayer::new(
        store(),
        IdempotencyPolicy::default().wait_for_result(Some(Duration::from_secs(5))),
    );
    let svc = layer.layer(handler.clone());
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { send(&svc, post(Some("k-200"), "{\"sku\":1}")).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(handler.runs(), 1);
    let (status, _, body) = &results[0];
    for (s, headers, b) in &results {
        assert_eq!((s, b), (status, body));
        assert_eq!(headers["location"], "/orders/1");
        assert_eq!(headers["content-type"], "application/json");
    }
    assert_eq!(*status, StatusCode::CREATED);
    let replayed = results
        .iter()
        .filter(|(_, h, _)| h.get("idempotent-replayed").is_some_and(|v| v == "true"))
        .count();
    assert_eq!(replayed, 199);
    // Headers outside the replay list are not stored.
    assert!(results
        .iter()
        .filter(|(_, h, _)| h.contains_key("idempotent-replayed"))
        .all(|(_, h, _)| !h.contains_key("x-not-kept")));
    let m = layer.metrics();
    assert_eq!((m.executed, m.replayed), (1, 199));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_without_waiting_get_409_or_the_one_response() {
    let handler = Handler::new(|n, _| async move {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        Response::builder()
            .status(StatusCode::CREATED)
            .body(Full::new(Bytes::from(format!("order {n}"))))
            .unwrap()
    });
    let svc = IdempotencyLayer::new(MemoryStore::new(), IdempotencyPolicy::default())
        .layer(handler.clone());
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { send(&svc, post(Some("race"), "{}")).await })
        })
        .collect();
    let mut finished = Vec::new();
    for t in tasks {
        let (status, headers, body) = t.await.unwrap();
        match status {
            StatusCode::CREATED => finished.push(body),
            StatusCode::CONFLICT => {
                assert_eq!(problem_code(&body), "idempotency_request_in_flight");
                assert!(
                    headers["retry-after"]
                        .to_str()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap()
                        >= 1
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(handler.runs(), 1);
    assert!(!finished.is_empty());
    assert!(finished.iter().all(|b| b == "order 1"));
    let (status, _, body) = send(&svc, post(Some("race"), "{}")).await;
    assert_eq!(
        (status, body),
        (StatusCode::CREATED, Bytes::from("order 1"))
    );
}

/// The 409's Retry-After lets an obeying client come back about when the first attempt ends:
/// at most 1 s by default (not the 27.5 s left on the lease), the lease remainder when that is
/// shorter, whole seconds, at least 1; `retry_after_ms` in the body.
#[tokio::test(start_paused = true)]
async fn in_flight_answers_409_with_a_short_retry_after() {
    let handler = Handler::orders(Duration::from_secs(10));
    let svc = IdempotencyLayer::new(
        store(),
        IdempotencyPolicy::default().lease(Duration::from_secs(30)),
    )
    .layer(handler.clone());
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("slow"), "{}")).await }
    });
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, headers, body) = send(&svc, post(Some("slow"), "{}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(headers["retry-after"], "1");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["retry_after_ms"], 1000);
    assert_eq!(first.await.unwrap().0, StatusCode::CREATED);
    assert_eq!(handler.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn in_flight_retry_after_is_configurable_up_to_the_lease_remainder() {
    let handler = Handler::orders(Duration::from_secs(10));
    let svc = IdempotencyLayer::new(
        store(),
        IdempotencyPolicy::default()
            .lease(Duration::from_secs(30))
            .in_flight_retry_after(Duration::from_secs(3600)),
    )
    .layer(handler.clone());
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("slow"), "{}")).await }
    });
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, headers, body) = send(&svc, post(Some("slow"), "{}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["retry-after"], "28"); // 27.5 s left, rounded up
    assert_eq!(problem_code(&body), "idempotency_request_in_flight");
    assert_eq!(first.await.unwrap().0, StatusCode::CREATED);
    assert_eq!(handler.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn same_key_other_body_is_422() {
    let handler = Handler::orders(Duration::ZERO);
    let svc = IdempotencyLayer::new(store(), IdempotencyPolicy::default()).layer(handler.clone());
    assert_eq!(
        send(&svc, post(Some("k"), "{\"amount\":100}")).await.0,
        StatusCode::CREATED
    );
    let (status, headers, body) = send(&svc, post(Some("k"), "{\"amount\":999}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(headers["content-type"], "application/problem+json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], 422);
    assert_eq!(v["code"], "idempotency_key_reused");
    assert_eq!(v["type"], "urn:problem-type:idempotency_key_reused");
    assert_eq!(handler.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn missing_and_invalid_keys_are_400() {
    let handler = Handler::orders(Duration::ZERO);
    let svc = IdempotencyLayer::new(store(), IdempotencyPolicy::default().require_key(true))
        .layer(handler.clone());
    let (status, _, body) = send(&svc, post(None, "{}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem_code(&body), "idempotency_key_missing");

    let long = "a".repeat(256);
    let tab = "ab\tc";
    let obs_text = std::str::from_utf8(b"k\xc3\xa9").unwrap();
    for bad in [long.as_str(), tab, obs_text, "\"open", ""] {
        let (status, _, body) = send(&svc, post(Some(bad), "{}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "key {bad:?}");
        assert_eq!(problem_code(&body), "idempotency_key_invalid");
    }
    let mut two = post(Some("a"), "{}");
    two.headers_mut()
        .append("idempotency-key", "b".parse().unwrap());
    assert_eq!(send(&svc, two).await.0, StatusCode::BAD_REQUEST);
    // A key of exactly 255 characters is fine.
    let max = "a".repeat(255);
    assert_eq!(
        send(&svc, post(Some(&max), "{}")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(handler.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn optional_key_and_uncovered_methods_pass_through() {
    let handler = Handler::orders(Duration::ZERO);
    let svc = IdempotencyLayer::new(store(), IdempotencyPolicy::default()).layer(handler.clone());
    send(&svc, post(None, "{}")).await;
    send(&svc, post(None, "{}")).await;
    let get = Request::get("/orders/1")
        .header("idempotency-key", "k")
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(&svc, get.clone()).await;
    send(&svc, get).await;
    assert_eq!(handler.runs(), 4);
}

/// A store reachable for everything but renewals: the view of a server cut off from the store
/// while its handler runs (its heartbeat fails, its lease runs out).
struct NoRenew<S>(Arc<S>);

#[async_trait]
impl<S: IdempotencyStore> IdempotencyStore for NoRenew<S> {
    async fn begin(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fp: &Fingerprint,
        lease: Duration,
    ) -> Result<BeginOutcome, StoreError> {
        self.0.begin(scope, key, fp, lease).await
    }
    async fn complete(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        response: &StoredResponse,
        retention: Duration,
    ) -> Result<(), StoreError> {
        self.0
            .complete(scope, key, fence, response, retention)
            .await
    }
    async fn release(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
    ) -> Result<(), StoreError> {
        self.0.release(scope, key, fence).await
    }
    async fn renew(
        &self,
        _: &str,
        _: &IdempotencyKey,
        _: Fence,
        _: Duration,
    ) -> Result<(), StoreError> {
        Err(StoreError::unavailable("partitioned"))
    }
}

#[tokio::test(start_paused = true)]
async fn lease_expiry_lets_a_retry_take_over_and_refuses_the_old_holder() {
    // The first attempt's server cannot renew; its 1 s lease runs out, a retry on another server
    // at 2 s takes over and completes, and the zombie's own completion is refused.
    let handler = Handler::new(|n, _| async move {
        let delay = if n == 1 { 5_000 } else { 500 };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Response::builder()
            .status(StatusCode::CREATED)
            .body(Full::new(Bytes::from(format!("attempt {n}"))))
            .unwrap()
    });
    let shared = Arc::new(store());
    let policy = IdempotencyPolicy::default().lease(Duration::from_secs(1));
    let cut_off = IdempotencyLayer::new(NoRenew(shared.clone()), policy.clone());
    let healthy = IdempotencyLayer::new(shared.clone(), policy);
    let zombie_svc = cut_off.layer(handler.clone());
    let svc = healthy.layer(handler.clone());
    let slow = tokio::spawn({
        let svc = zombie_svc.clone();
        async move { send(&svc, post(Some("lease"), "{}")).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _, body) = send(&svc, post(Some("lease"), "{}")).await;
    assert_eq!(
        (status, body),
        (StatusCode::CREATED, Bytes::from("attempt 2"))
    );
    // The zombie still answers its own client, but its complete is refused.
    let (_, _, zombie_body) = slow.await.unwrap();
    assert_eq!(zombie_body, "attempt 1");
    assert_eq!(cut_off.metrics().store_errors, 1);
    let (_, headers, body) = send(&svc, post(Some("lease"), "{}")).await;
    assert_eq!(body, "attempt 2");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(handler.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_500_releases_the_key_and_a_retry_runs() {
    let handler = Handler::new(|n, _| async move {
        let status = if n == 1 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::CREATED
        };
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(format!("run {n}"))))
            .unwrap()
    });
    let layer = IdempotencyLayer::new(store(), IdempotencyPolicy::default());
    let svc = layer.layer(handler.clone());
    let (status, _, body) = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!(
        (status, body),
        (StatusCode::INTERNAL_SERVER_ERROR, Bytes::from("run 1"))
    );
    let (status, _, body) = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!((status, body), (StatusCode::CREATED, Bytes::from("run 2")));
    assert_eq!(handler.runs(), 2);
    assert_eq!(layer.metrics().released, 1);
}

#[tokio::test(start_paused = true)]
async fn a_4xx_is_stored_and_replayed() {
    let handler = Handler::new(|_, _| async move {
        Response::builder()
            .status(StatusCode::PAYMENT_REQUIRED)
            .body(Full::new(Bytes::from("card declined")))
            .unwrap()
    });
    let svc = IdempotencyLayer::new(store(), IdempotencyPolicy::default()).layer(handler.clone());
    send(&svc, post(Some("k"), "{}")).await;
    let (status, headers, body) = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!(
        (status, body),
        (StatusCode::PAYMENT_REQUIRED, Bytes::from("card declined"))
    );
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(handler.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_releases_the_key() {
    let handler = Handler::new(|n, _| async move {
        if n == 1 {
            panic!("handler bug");
        }
        Response::new(Full::new(Bytes::from("ok")))
    });
    let svc = IdempotencyLayer::new(store(), IdempotencyPolicy::default()).layer(handler.clone());
    let (status, headers, body) = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(problem_code(&body), "internal_error");
    let (status, _, body) = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("ok")));
    assert_eq!(handler.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_releases_the_key() {
    let handler = Handler::orders(Duration::from_secs(3600));
    let svc = IdempotencyLayer::new(store(), IdempotencyPolicy::default()).layer(handler.clone());
    let stuck = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("k"), "{}")).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        send(&svc, post(Some("k"), "{}")).await.0,
        StatusCode::CONFLICT
    );
    stuck.abort();
    let _ = stuck.await;
    // The release runs on a spawned task; let it.
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    let retry = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("k"), "{}")).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        handler.runs(),
        2,
        "the retry ran without waiting for the lease"
    );
    retry.abort();
}

#[tokio::test(start_paused = true)]
async fn two_scopes_with_one_key_do_not_collide() {
    let handler = Handler::orders(Duration::ZERO);
    let policy = IdempotencyPolicy::default()
        .scope_with(|parts| parts.headers["x-tenant"].to_str().unwrap().to_owned());
    let svc = IdempotencyLayer::new(store(), policy).layer(handler.clone());
    let mut a = post(Some("shared"), "{}");
    a.headers_mut().insert("x-tenant", "acme".parse().unwrap());
    let mut b = post(Some("shared"), "{\"other\":1}");
    b.headers_mut()
        .insert("x-tenant", "globex".parse().unwrap());
    let (_, _, body_a) = send(&svc, a.clone()).await;
    let (_, _, body_b) = send(&svc, b).await;
    assert_ne!(body_a, body_b);
    assert_eq!(handler.runs(), 2);
    assert_eq!(send(&svc, a).await.2, body_a);
}

#[tokio::test(start_paused = true)]
async fn oversized_request_is_413_and_oversized_response_is_not_rerun() {
    let handler =
        Handler::new(|_, _| async move { Response::new(Full::new(Bytes::from(vec![b'x'; 4096]))) });
    let policy = IdempotencyPolicy::default()
        .max_request_bytes(16)
        .max_response_bytes(1024);
    let svc = IdempotencyLayer::new(store(), policy).layer(handler.clone());
    let (status, _, body) = send(&svc, post(Some("big"), "{\"padding\":\"0123456789\"}")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem_code(&body), "request_body_too_large");
    assert_eq!(handler.runs(), 0);

    let (status, _, body) = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 4096));
    let (status, headers, body) = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(problem_code(&body), "idempotency_response_not_stored");
    assert_eq!(handler.runs(), 1);
}

/// A store whose backend is down: every call fails as a real unreachable server would.
struct DownStore;

#[async_trait]
impl IdempotencyStore for DownStore {
    async fn begin(
        &self,
        _: &str,
        _: &IdempotencyKey,
        _: &Fingerprint,
        _: Duration,
    ) -> Result<BeginOutcome, StoreError> {
        Err(StoreError::unavailable("connection refused"))
    }
    async fn complete(
        &self,
        _: &str,
        _: &IdempotencyKey,
        _: Fence,
        _: &StoredResponse,
        _: Duration,
    ) -> Result<(), StoreError> {
        Err(StoreError::unavailable("connection refused"))
    }
    async fn release(&self, _: &str, _: &IdempotencyKey, _: Fence) -> Result<(), StoreError> {
        Err(StoreError::unavailable("connection refused"))
    }
    async fn renew(
        &self,
        _: &str,
        _: &IdempotencyKey,
        _: Fence,
        _: Duration,
    ) -> Result<(), StoreError> {
        Err(StoreError::unavailable("connection refused"))
    }
}

#[tokio::test]
async fn store_down_fails_closed_by_default_and_open_when_chosen() {
    let handler = Handler::orders(Duration::ZERO);
    let closed = IdempotencyLayer::new(DownStore, IdempotencyPolicy::default());
    let svc = closed.layer(handler.clone());
    let (status, headers, body) = send(&svc, post(Some("k"), "{}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(problem_code(&body), "idempotency_store_unavailable");
    assert_eq!(handler.runs(), 0);

    let open = IdempotencyLayer::new(
        DownStore,
        IdempotencyPolicy::default().fail_mode(FailMode::Open),
    );
    let svc = open.layer(handler.clone());
    assert_eq!(
        send(&svc, post(Some("k"), "{}")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(handler.runs(), 1);
    assert_eq!(open.metrics().fail_open, 1);
}

/// A tenant that holds its whole share of the store gets 429 for its new keys; another tenant's
/// requests keep running.
#[tokio::test(start_paused = true)]
async fn a_flooding_tenant_gets_429_and_the_others_keep_working() {
    let mut config = MemoryStoreConfig::default();
    config.shards = 1;
    config.max_records_per_scope = Some(3);
    let store = MemoryStore::with_clock(TokioClock::new(), config);
    let handler = Handler::orders(Duration::ZERO);
    let policy = IdempotencyPolicy::default().scope_with(|parts| {
        parts
            .headers
            .get("x-tenant")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    });
    let svc = IdempotencyLayer::new(store, policy).layer(handler.clone());
    let tenant = |t: &str, key: &str| {
        let mut req = post(Some(key), "{}");
        req.headers_mut().insert("x-tenant", t.parse().unwrap());
        req
    };
    for i in 0..3 {
        assert_eq!(
            send(&svc, tenant("flood", &format!("k{i}"))).await.0,
            StatusCode::CREATED
        );
    }
    let (status, headers, body) = send(&svc, tenant("flood", "k3")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(problem_code(&body), "idempotency_scope_full");
    assert_eq!(
        send(&svc, tenant("calm", "k0")).await.0,
        StatusCode::CREATED
    );
    // Replays of the flooder's completed keys still work.
    assert_eq!(
        send(&svc, tenant("flood", "k0")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(handler.runs(), 4);
}

/// Defect 3: a body trickling in at 1 byte/s held the request (and every slot given to it by the
/// layers outside) with no deadline. Now it gets 408 after the body timeout, without taking the
/// key, so the client's retry runs normally.
#[tokio::test(start_paused = true)]
async fn a_body_that_never_finishes_gets_408_and_takes_no_key() {
    use axum::body::Body;
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = runs.clone();
    let svc = IdempotencyLayer::new(
        store(),
        IdempotencyPolicy::default().body_timeout(Duration::from_secs(2)),
    )
    .layer(tower::service_fn(move |_req: Request<Body>| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(Body::from("created"))) }
    }));
    use futures_util::StreamExt;
    let trickle = futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("{")) })
        .chain(futures_util::stream::pending());
    let req = Request::post("/orders")
        .header("idempotency-key", "slow-body")
        .body(Body::from_stream(trickle))
        .unwrap();
    let started = tokio::time::Instant::now();
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(problem_code(&body), "request_body_timeout");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 0);
    let retry = Request::post("/orders")
        .header("idempotency-key", "slow-body")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(svc.oneshot(retry).await.unwrap().status(), StatusCode::OK);
}

/// Defect 5: a short lease with a heartbeat. A handler running far longer than its lease keeps
/// the key (a retry in the meantime gets 409, not a second run); nothing is renewed once it ends.
#[tokio::test(start_paused = true)]
async fn a_slow_handler_keeps_its_short_lease_by_heartbeat() {
    let store = Arc::new(store());
    let handler = Handler::orders(Duration::from_secs(20));
    let svc = IdempotencyLayer::new(
        store.clone(),
        IdempotencyPolicy::default().lease(Duration::from_secs(3)),
    )
    .layer(handler.clone());
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("slow"), "{}")).await }
    });
    for at in [5, 10, 15] {
        tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(5)).await;
        let (status, _, _) = send(&svc, post(Some("slow"), "{}")).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "at {at} s the first attempt still holds the key"
        );
    }
    assert_eq!(first.await.unwrap().0, StatusCode::CREATED);
    assert_eq!(handler.runs(), 1);
    let (status, headers, _) = send(&svc, post(Some("slow"), "{}")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
}

/// An inner service that counts its clones: a request the layer does not cover must reach the
/// clone `poll_ready` made ready, never a fresh one.
struct CountsClones(Arc<AtomicU32>);

impl Clone for CountsClones {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::SeqCst);
        Self(self.0.clone())
    }
}

impl Service<Req> for CountsClones {
    type Response = Res;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Res, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

#[tokio::test]
async fn uncovered_requests_pass_through_without_a_clone_and_keyed_ones_take_one() {
    let clones = Arc::new(AtomicU32::new(0));
    let mut svc = IdempotencyLayer::new(MemoryStore::new(), IdempotencyPolicy::default())
        .layer(CountsClones(clones.clone()));
    let get = Request::get("/orders/1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = svc.ready().await.unwrap().call(get).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let unkeyed = Request::post("/orders")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = svc.ready().await.unwrap().call(unkeyed).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("idempotent-replayed").is_none());
    assert_eq!(clones.load(Ordering::SeqCst), 0, "passed through, no clone");

    let invalid = Request::post("/orders")
        .header("idempotency-key", "")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = svc.ready().await.unwrap().call(invalid).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        clones.load(Ordering::SeqCst),
        0,
        "refused at once, no clone"
    );

    for expect_replay in [false, true] {
        let keyed = Request::post("/orders")
            .header("idempotency-key", "k-1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = svc.ready().await.unwrap().call(keyed).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers().get("idempotent-replayed").is_some(),
            expect_replay
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
    }
    assert_eq!(
        clones.load(Ordering::SeqCst),
        2,
        "a keyed request takes the ready clone"
    );
}
