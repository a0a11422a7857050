//! RedisStore against the real Redis of `REDIS_URL` (default `redis://127.0.0.1:6379`).
//!
//! Every test has its own key prefix, so tests run in parallel and never see each other's records.

mod common;

use bytes::Bytes;
use common::RedisHarness;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use idem_core::conformance;
use idem_core::BackendError;
use idem_core::{
    BeginOutcome, DecodeError, Fingerprint, IdempotencyKey, IdempotencyLayer, IdempotencyPolicy,
    IdempotencyStore, StoreError, StoredResponse,
};
use idem_store_redis::RedisStore;
use proptest::prelude::*;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tower::{Layer, ServiceExt};

fn url() -> String {
    testkit::redis_url()
}

fn unique(name: &str) -> String {
    testkit::unique("test", name)
}

async fn store(name: &str) -> RedisStore {
    match RedisStore::connect(&url()).await {
        Ok(s) => s.prefix(&unique(name)),
        Err(e) => panic!(
            "Redis is not reachable at {} ({e}); start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no` or run `cargo xtask test`, which starts it",
            url()
        ),
    }
}

async fn admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis reachable")
}

impl RedisHarness {
    async fn new(name: &str) -> Self {
        Self::over(store(name).await, None)
    }

    /// The store's time pinned at the server's current time.
    async fn pinned(name: &str) -> Self {
        let (secs, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut admin().await)
            .await
            .unwrap();
        let now = Duration::from_secs(secs) + Duration::from_micros(micros);
        Self::over(store(name).await, Some(now))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_on_server_time() {
    conformance::run_all(&RedisHarness::new("conformance").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_on_pinned_time() {
    conformance::run_all(&RedisHarness::pinned("conformance-pinned").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_begins_have_one_winner() {
    conformance::concurrent_begin_one_winner(&RedisHarness::new("race").await, 100).await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
    ))]
    #[test]
    fn agrees_with_the_reference_model(ops in conformance::ops(40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let verdict = rt.block_on(async {
            let h = RedisHarness::pinned("model").await;
            conformance::check_model(&h, "model", &ops).await
        });
        prop_assert!(verdict.is_ok(), "{}", verdict.unwrap_err());
    }
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s.as_bytes()).unwrap()
}

#[tokio::test]
async fn records_are_hashes_with_a_ttl_under_a_hash_tagged_key() {
    let s = store("layout").await;
    let k = key("order:42");
    let fp = Fingerprint::of_request("POST", "/orders", b"{}");
    let BeginOutcome::Acquired { fence } = s
        .begin("tenant:a", &k, &fp, Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("acquired expected")
    };
    let name = s.record_key("tenant:a", &k);
    assert!(name.ends_with(":{8:tenant:a:order:42}"), "{name}");
    // ("tenant:a", "order:42") and ("tenant", "a:order:42") are two records.
    assert_ne!(name, s.record_key("tenant", &key("a:order:42")));
    let mut a = admin().await;
    let kind: String = redis::cmd("TYPE")
        .arg(&name)
        .query_async(&mut a)
        .await
        .unwrap();
    assert_eq!(kind, "hash");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&name)
        .query_async(&mut a)
        .await
        .unwrap();
    assert!((30_000..=31_000).contains(&ttl), "ttl {ttl}");
    let stored_fence: String = redis::cmd("HGET")
        .arg(&name)
        .arg("fence")
        .query_async(&mut a)
        .await
        .unwrap();
    assert_eq!(stored_fence, fence.0.to_string());
    s.complete(
        "tenant:a",
        &k,
        fence,
        &StoredResponse {
            status: 201,
            headers: vec![],
            body: Bytes::from_static(b"ok"),
            trailers: Vec::new(),
        },
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&name)
        .query_async(&mut a)
        .await
        .unwrap();
    assert!((3_600_000..=3_601_000).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn a_newer_schema_or_a_corrupted_record_is_a_typed_error() {
    let s = store("corrupt").await;
    let fp = Fingerprint::of_request("POST", "/orders", b"{}");
    let mut a = admin().await;
    let lease = Duration::from_secs(30);

    // A record written by a newer release.
    let k = key("newer");
    let BeginOutcome::Acquired { fence } = s.begin("s", &k, &fp, lease).await.unwrap() else {
        panic!()
    };
    let ok = StoredResponse {
        status: 200,
        headers: vec![],
        body: Bytes::new(),
        trailers: Vec::new(),
    };
    s.complete("s", &k, fence, &ok, lease).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(s.record_key("s", &k))
        .arg("v")
        .arg("2")
        .query_async(&mut a)
        .await
        .unwrap();
    assert!(matches!(
        s.begin("s", &k, &fp, lease).await,
        Err(ref e) if matches!(e.decode_error(), Some(DecodeError::UnknownVersion(2)))
    ));

    // A stored response whose bytes were damaged.
    let k = key("damaged");
    let BeginOutcome::Acquired { fence } = s.begin("s", &k, &fp, lease).await.unwrap() else {
        panic!()
    };
    s.complete("s", &k, fence, &ok, lease).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(s.record_key("s", &k))
        .arg("resp")
        .arg(&b"\x01\x00"[..])
        .query_async(&mut a)
        .await
        .unwrap();
    assert!(matches!(
        s.begin("s", &k, &fp, lease).await,
        Err(StoreError::Backend(BackendError::Corrupt(_)))
    ));

    // Fields that are not numbers.
    let k = key("garbled");
    let _: () = redis::cmd("HSET")
        .arg(s.record_key("s", &k))
        .arg("v")
        .arg("1")
        .arg("st")
        .arg("i")
        .arg("fence")
        .arg("many")
        .arg("until")
        .arg("later")
        .query_async(&mut a)
        .await
        .unwrap();
    assert!(matches!(
        s.begin("s", &k, &fp, lease).await,
        Err(StoreError::Backend(BackendError::Corrupt(_)))
    ));

    // Another application's string under the same name.
    let k = key("string");
    let _: () = redis::cmd("SET")
        .arg(s.record_key("s", &k))
        .arg("not a hash")
        .query_async(&mut a)
        .await
        .unwrap();
    assert!(matches!(
        s.begin("s", &k, &fp, lease).await,
        Err(StoreError::Backend(BackendError::Corrupt(_)))
    ));
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_not_a_panic() {
    // A port nothing listens on: connecting fails with a typed error.
    let err = RedisStore::connect("redis://127.0.0.1:1")
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let cause = err.cause::<idem_store_redis::redis::RedisError>().unwrap();
    assert!(
        cause.is_io_error() || cause.is_connection_refusal(),
        "{cause}"
    );
}

/// An orders handler that counts executions per Idempotency-Key; `kill` (when set) kills the
/// store's Redis connection while the handler runs.
#[derive(Clone)]
struct Orders {
    runs: Arc<parking_lot::Mutex<HashMap<String, u32>>>,
}

impl Orders {
    fn new() -> Self {
        Self {
            runs: Arc::default(),
        }
    }

    fn service(
        &self,
        delay: Duration,
    ) -> impl tower::Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        let runs = self.runs.clone();
        tower::service_fn(move |req: Request<Full<Bytes>>| {
            let runs = runs.clone();
            async move {
                let k = req.headers()["idempotency-key"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let n = {
                    let mut runs = runs.lock();
                    let n = runs.entry(k.clone()).or_default();
                    *n += 1;
                    *n
                };
                tokio::time::sleep(delay).await;
                let mut res = Response::new(Full::new(Bytes::from(format!("order {k} run {n}"))));
                *res.status_mut() = StatusCode::CREATED;
                Ok(res)
            }
        })
    }

    fn runs(&self, k: &str) -> u32 {
        self.runs.lock().get(k).copied().unwrap_or(0)
    }
}

fn post(k: &str) -> Request<Full<Bytes>> {
    Request::post("/orders")
        .header("idempotency-key", k)
        .body(Full::new(Bytes::from_static(b"{\"sku\":\"tea\"}")))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_clients_with_one_key_execute_once() {
    let orders = Orders::new();
    let svc = IdempotencyLayer::new(
        store("hundred").await,
        IdempotencyPolicy::default()
            .require_key(true)
            .wait_for_result(Some(Duration::from_secs(5))),
    )
    .layer(orders.service(Duration::from_millis(100)));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let res = svc.oneshot(post("k-100")).await.unwrap();
                let status = res.status();
                (status, res.into_body().collect().await.unwrap().to_bytes())
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::CREATED);
        bodies.push(body);
    }
    assert_eq!(orders.runs("k-100"), 1);
    assert!(bodies.iter().all(|b| b == "order k-100 run 1"));
}

async fn kill_connection(store: &RedisStore) {
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut store.connection())
        .await
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut admin().await)
        .await
        .unwrap();
    assert_eq!(killed, 1, "the store's connection was killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_fails_closed_and_no_key_runs_twice() {
    let orders = Orders::new();
    let store = store("kill").await;
    let policy = IdempotencyPolicy::default().require_key(true);
    let svc = IdempotencyLayer::new(store.clone(), policy).layer(orders.service(Duration::ZERO));

    // Before the fault: served.
    assert_eq!(
        svc.clone().oneshot(post("k-1")).await.unwrap().status(),
        StatusCode::CREATED
    );

    // The connection dies between requests: the next request fails closed, without running.
    kill_connection(&store).await;
    let during = svc.clone().oneshot(post("k-2")).await.unwrap();
    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(orders.runs("k-2"), 0, "a refused request must not run");
    assert_eq!(during.headers()["content-type"], "application/problem+json");

    // After the fault: every key, retried, is served and none ran twice.
    for k in ["k-1", "k-2", "k-3"] {
        let mut status = StatusCode::SERVICE_UNAVAILABLE;
        for _ in 0..20 {
            status = svc.clone().oneshot(post(k)).await.unwrap().status();
            if status != StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, StatusCode::CREATED, "{k}");
        assert_eq!(orders.runs(k), 1, "{k} ran {} times", orders.runs(k));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_while_the_handler_runs_still_stores_the_result() {
    let orders = Orders::new();
    let store = store("kill-mid").await;
    let killer = store.clone();
    let runs = orders.runs.clone();
    let svc = IdempotencyLayer::new(store, IdempotencyPolicy::default().require_key(true)).layer(
        tower::service_fn(move |req: Request<Full<Bytes>>| {
            let (killer, runs) = (killer.clone(), runs.clone());
            async move {
                let k = req.headers()["idempotency-key"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                *runs.lock().entry(k).or_default() += 1;
                // The connection dies after `begin`, before `complete`.
                kill_connection(&killer).await;
                let mut res = Response::new(Full::new(Bytes::from_static(b"charged")));
                *res.status_mut() = StatusCode::CREATED;
                Ok::<_, Infallible>(res)
            }
        }),
    );
    let first = svc.clone().oneshot(post("pay-1")).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    // `complete` met the dead connection, was retried on the new one, and the retry replays.
    let retry = svc.clone().oneshot(post("pay-1")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(orders.runs("pay-1"), 1);
}
