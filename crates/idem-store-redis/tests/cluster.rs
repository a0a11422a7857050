//! RedisStore on the Redis Cluster of `REDIS_CLUSTER_URLS` (comma-separated node URLs;
//! `cargo xtask test` starts a private 3-master, 3-replica cluster and sets it): the conformance
//! suite and the reference model on the cluster, keys on every master, and a single-node client
//! pointed at a cluster node reported as misconfigured — under fail-open too.

mod common;

use bytes::Bytes;
use common::RedisHarness;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use idem_core::conformance;
use idem_core::BackendError;
use idem_core::{
    FailMode, Fingerprint, IdempotencyKey, IdempotencyLayer, IdempotencyPolicy, IdempotencyStore,
    StoreError,
};
use idem_store_redis::RedisStore;
use proptest::prelude::*;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::{cluster_urls, keys_per_master};
use tower::{Layer, ServiceExt};

async fn cluster_store(prefix: &str) -> RedisStore {
    RedisStore::connect_cluster(cluster_urls())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the Redis Cluster at {:?} is not reachable: {e}",
                cluster_urls()
            )
        })
        .prefix(prefix)
}

/// The masters of the cluster.
async fn masters() -> Vec<String> {
    retry_safe_core::redis::cluster_masters(&cluster_urls()[0])
        .await
        .unwrap()
}

fn unique(name: &str) -> String {
    testkit::unique("ctest", name)
}

impl RedisHarness {
    /// A cluster store under `prefix`, its time pinned at the system's now when `pinned`.
    async fn on_cluster(prefix: &str, pinned: bool) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        Self::over(cluster_store(prefix).await, pinned.then_some(now))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_on_the_cluster_with_keys_on_every_master() {
    let prefix = unique("conformance");
    conformance::run_all(&RedisHarness::on_cluster(&prefix, false).await).await;
    conformance::run_all(&RedisHarness::on_cluster(&format!("{prefix}p"), true).await).await;
    // And enough keys of one prefix that every master holds some: the scripts ran on all three.
    let h = RedisHarness::on_cluster(&prefix, false).await;
    let fp = Fingerprint::of_request("POST", "/orders", b"{}");
    for i in 0..60 {
        let key = IdempotencyKey::parse(format!("spread-{i}").as_bytes()).unwrap();
        h.store
            .begin("tenant", &key, &fp, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let counts = keys_per_master(&format!("{prefix}:")).await;
    assert_eq!(counts.len(), 3, "three masters: {counts:?}");
    assert!(
        counts.iter().all(|n| *n > 0),
        "keys on every master: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_begins_on_the_cluster_have_one_winner() {
    conformance::concurrent_begin_one_winner(
        &RedisHarness::on_cluster(&unique("race"), false).await,
        100,
    )
    .await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(32)
    ))]
    #[test]
    fn agrees_with_the_reference_model_on_the_cluster(ops in conformance::ops(40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let verdict = rt.block_on(async {
            let h = RedisHarness::on_cluster(&unique("model"), true).await;
            conformance::check_model(&h, "model", &ops).await
        });
        prop_assert!(verdict.is_ok(), "{}", verdict.unwrap_err());
    }
}

fn post(k: &str) -> Request<Full<Bytes>> {
    Request::post("/orders")
        .header("idempotency-key", k)
        .body(Full::new(Bytes::from_static(b"{\"sku\":\"tea\"}")))
        .unwrap()
}

/// A single-node client pointed at one cluster node: keys of the other masters' slots answer
/// `MOVED`, which is a configuration error — never "unavailable" — so even a fail-open layer
/// refuses the request instead of running it unprotected on this server alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_client_on_a_cluster_node_is_misconfigured_even_when_failing_open() {
    let store = RedisStore::connect(&masters().await[0])
        .await
        .unwrap()
        .prefix(&unique("misrouted"));
    let fp = Fingerprint::of_request("POST", "/orders", b"{}");
    let (mut ok, mut misconfigured) = (0, 0);
    for i in 0..30 {
        let key = IdempotencyKey::parse(format!("k-{i}").as_bytes()).unwrap();
        match store
            .begin("tenant", &key, &fp, Duration::from_secs(30))
            .await
        {
            Ok(_) => ok += 1,
            Err(StoreError::Backend(BackendError::Misconfigured(e))) => {
                misconfigured += 1;
                assert!(e.to_string().contains("MOVED"), "{e}");
            }
            Err(other) => panic!("a misrouted begin must be Misconfigured, not {other:?}"),
        }
    }
    assert!(
        misconfigured > 0 && ok > 0,
        "{ok} on this node, {misconfigured} misrouted"
    );

    let runs = Arc::new(AtomicU64::new(0));
    let counted = runs.clone();
    let handler = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"created")))) }
    });
    let svc = IdempotencyLayer::new(
        store,
        IdempotencyPolicy::default()
            .require_key(true)
            .fail_mode(FailMode::Open),
    )
    .layer(handler);
    let mut refused = 0;
    for i in 0..30 {
        let res = svc.clone().oneshot(post(&format!("k-{i}"))).await.unwrap();
        if res.status() == StatusCode::INTERNAL_SERVER_ERROR {
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert!(
                String::from_utf8_lossy(&body).contains("idempotency_store_misconfigured"),
                "{body:?}"
            );
            refused += 1;
        } else {
            assert_eq!(res.status(), StatusCode::OK);
        }
    }
    // The layer's scope differs from the one above, so other keys are misrouted: some, not all.
    assert!(refused > 0 && refused < 30, "{refused} of 30 refused");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        30 - refused as u64,
        "no misrouted request ran"
    );
}
