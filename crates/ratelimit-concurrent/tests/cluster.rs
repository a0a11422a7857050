//! RedisConcurrencyLimiter on the Redis Cluster of `REDIS_CLUSTER_URLS` (`cargo xtask test`
//! starts one) and on the single Redis of `REDIS_URL`: a reference model of leases on both,
//! one fleet cap across two limiters with keys on every master, background release of a dropped
//! lease on the cluster, and a single-node client on a cluster node refused as misconfigured —
//! under fail-open, with no local permit handed out.

use proptest::prelude::*;
use ratelimit_concurrent::{
    BackendError, Error, FailMode, Lease, ManualClock, RedisConcurrencyLimiter,
};
use std::collections::HashMap;
use std::time::Duration;
use testkit::{cluster_urls, keys_per_master};

fn unique(name: &str) -> String {
    testkit::unique("ctest:cl", name)
}

async fn on_cluster(prefix: &str, max: u32) -> RedisConcurrencyLimiter {
    RedisConcurrencyLimiter::connect_cluster(cluster_urls(), max)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the Redis Cluster at {:?} is not reachable: {e}",
                cluster_urls()
            )
        })
        .prefix(prefix)
}

async fn on_single(prefix: &str, max: u32) -> RedisConcurrencyLimiter {
    let url = testkit::redis_url();
    RedisConcurrencyLimiter::connect(&url, max)
        .await
        .unwrap_or_else(|e| {
            panic!("Redis is not reachable at {url} ({e}); run `cargo xtask test`, which starts it")
        })
        .prefix(prefix)
}

#[derive(Debug, Clone)]
enum Op {
    Acquire(u8),
    Release(usize),
    Advance(u64),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (0u8..3).prop_map(Op::Acquire),
            1 => (0usize..8).prop_map(Op::Release),
            2 => (0u64..15_000).prop_map(Op::Advance),
        ],
        1..40,
    )
}

const MAX: u32 = 2;
/// Half a millisecond past a whole number of ms: a lease never ends exactly at a step's time.
const LEASE_US: u64 = 10_000_500;

/// Runs `ops` on `limiter` (time pinned) and on the model: the same grants, the same refusals,
/// the same `retry_after` (the first expiry, at most the 1 s default `retry_hint`).
async fn check_model(limiter: RedisConcurrencyLimiter, ops: &[Op]) -> Result<(), String> {
    let clock = ManualClock::at(Duration::from_secs(1_764_000_000));
    let limiter = limiter
        .lease(Duration::from_micros(LEASE_US))
        .pin_time(clock.clone());
    let mut now_us: u64 = 0;
    // Model: per key the expiry of each live lease; the held leases in order, with their key.
    let mut model: HashMap<u8, Vec<(usize, u64)>> = HashMap::new();
    let mut held: Vec<(usize, u8, Lease)> = Vec::new();
    let mut next_handle = 0usize;
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Advance(ms) => {
                clock.advance(Duration::from_millis(*ms));
                now_us += ms * 1000;
            }
            Op::Acquire(key) => {
                let live = model.entry(*key).or_default();
                live.retain(|(_, end)| *end > now_us);
                let got = limiter.acquire(&format!("k{key}")).await;
                if (live.len() as u32) < MAX {
                    let lease = got.map_err(|e| format!("step {step}: {op:?} refused: {e:?}"))?;
                    live.push((next_handle, now_us + LEASE_US));
                    held.push((next_handle, *key, lease));
                    next_handle += 1;
                } else {
                    let want = live.iter().map(|(_, end)| end - now_us).min().unwrap_or(0);
                    match got {
                        Err(Error::Limited(l)) if l.retry_after == Duration::from_micros(want).min(Duration::from_secs(1)).max(Duration::from_millis(1)) => {}
                        other => return Err(format!("step {step}: {op:?}: want a refusal with retry_after {want} µs, got {other:?}")),
                    }
                }
            }
            Op::Release(i) => {
                if held.is_empty() {
                    continue;
                }
                let (handle, key, lease) = held.remove(i % held.len());
                lease
                    .release()
                    .await
                    .map_err(|e| format!("step {step}: release: {e}"))?;
                model.entry(key).or_default().retain(|(h, _)| *h != handle);
            }
        }
    }
    for (_, _, lease) in held {
        let _ = lease.release().await;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24)
    ))]

    #[test]
    fn leases_agree_with_the_model_on_the_cluster_and_on_one_node(ops in ops()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let verdict = rt.block_on(async {
            check_model(on_cluster(&unique("model"), MAX).await, &ops).await?;
            check_model(on_single(&unique("model"), MAX).await, &ops).await
        });
        prop_assert!(verdict.is_ok(), "{}", verdict.unwrap_err());
    }
}

/// Two limiters on one cluster share each key's cap; 150 keys' leases land on all three masters;
/// a dropped lease is released in the background on the cluster too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_cap_on_the_cluster_with_keys_on_every_master() {
    let prefix = unique("fleet");
    let a = on_cluster(&prefix, 1).await.fail_mode(FailMode::Open);
    let b = on_cluster(&prefix, 1).await.fail_mode(FailMode::Open);
    let mut leases = Vec::new();
    for key in 0..150 {
        let key = format!("tenant-{key}");
        leases.push(a.acquire(&key).await.unwrap());
        assert!(
            matches!(b.acquire(&key).await, Err(Error::Limited(_))),
            "{key}: two leases under a cap of 1"
        );
    }
    assert_eq!(a.fallback_permits() + b.fallback_permits(), 0);
    let per_master = keys_per_master(&format!("{prefix}:")).await;
    assert_eq!(per_master.len(), 3, "{per_master:?}");
    assert!(
        per_master.iter().all(|n| *n > 0),
        "leases on every master: {per_master:?}"
    );
    // Dropped, not released: the background ZREM frees every slot for the other server.
    drop(leases);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for key in 0..150 {
        let key = format!("tenant-{key}");
        loop {
            match b.acquire(&key).await {
                Ok(lease) => {
                    lease.release().await.unwrap();
                    break;
                }
                Err(Error::Limited(_)) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                other => panic!("{key}: the dropped lease was not released: {other:?}"),
            }
        }
    }
}

/// A single-node client on one cluster node: keys of other masters' slots are
/// `BackendError::Misconfigured` with `FailMode::Open` — no local permit is handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_client_on_a_cluster_node_never_hands_out_local_permits() {
    let node = retry_safe_core::redis::cluster_masters(&cluster_urls()[0])
        .await
        .unwrap()[0]
        .clone();
    let limiter = RedisConcurrencyLimiter::connect(&node, 1)
        .await
        .unwrap()
        .prefix(&unique("misrouted"))
        .fail_mode(FailMode::Open);
    let (mut granted, mut misconfigured) = (0, 0);
    for key in 0..60 {
        match limiter.acquire(&format!("k{key}")).await {
            Ok(lease) => {
                assert!(!lease.is_local());
                granted += 1;
                lease.release().await.unwrap();
            }
            Err(Error::Backend(BackendError::Misconfigured(e))) => {
                misconfigured += 1;
                assert!(e.to_string().contains("MOVED"), "{e}");
            }
            Err(other) => panic!("expected Misconfigured, got {other:?}"),
        }
    }
    assert!(
        granted > 0 && misconfigured > 0,
        "{granted} on this node, {misconfigured} misrouted"
    );
    assert_eq!(
        limiter.fallback_permits(),
        0,
        "no permit was handed out locally"
    );
}

/// The same `KeyedConcurrencyLimitLayer` over a fleet limiter: on the cluster, the second request of a
/// key at its cap gets the 429 contract (problem+json, Retry-After); a misrouted single-node
/// client gets 500 `concurrency_misconfigured` even failing open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_speaks_the_same_contract_over_the_fleet_limiter() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use ratelimit_concurrent::KeyedConcurrencyLimitLayer;
    use std::sync::Arc;
    use tower::{Layer, ServiceExt};

    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let holding = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (g, h) = (gate.clone(), holding.clone());
    // Only the first request (`/hold`) waits at the gate; probes answer at once.
    let handler = tower::service_fn(move |req: http::Request<Full<Bytes>>| {
        let (g, h) = (g.clone(), h.clone());
        async move {
            if req.uri().path() == "/hold" {
                h.store(true, std::sync::atomic::Ordering::SeqCst);
                g.acquire().await.unwrap().forget();
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(
                b"done",
            ))))
        }
    });
    let by_key = |parts: &http::request::Parts| {
        parts
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let req_to = |path: &str, key: &str| {
        http::Request::get(path)
            .header("x-api-key", key)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let req = |key: &str| req_to("/report", key);
    let svc = KeyedConcurrencyLimitLayer::new(on_cluster(&unique("layer"), 1).await, by_key)
        .layer(handler.clone());
    let first = tokio::spawn(svc.clone().oneshot(req_to("/hold", "alpha")));
    // Once the first is in its handler (holding the key's one lease), the second is refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !holding.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first request never ran"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let second = svc.clone().oneshot(req("alpha")).await.unwrap();
    assert_eq!(second.status(), http::StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers().contains_key("retry-after"));
    assert_eq!(second.headers()["content-type"], "application/problem+json");
    let body = second.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("concurrency_limited"));
    // Permits, not a notification: a handler that has not reached its wait yet still passes.
    gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap().status(), http::StatusCode::OK);

    // Misrouted: find a key this node does not own.
    let node = retry_safe_core::redis::cluster_masters(&cluster_urls()[0])
        .await
        .unwrap()[0]
        .clone();
    let misrouted = RedisConcurrencyLimiter::connect(&node, 1)
        .await
        .unwrap()
        .prefix(&unique("layer-mis"))
        .fail_mode(FailMode::Open);
    let svc = KeyedConcurrencyLimitLayer::new(misrouted, by_key).layer(tower::service_fn(
        |_req: http::Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(
                b"ran",
            ))))
        },
    ));
    let mut saw_500 = false;
    for i in 0..40 {
        let res = svc.clone().oneshot(req(&format!("k{i}"))).await.unwrap();
        if res.status() == http::StatusCode::INTERNAL_SERVER_ERROR {
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert!(String::from_utf8_lossy(&body).contains("concurrency_misconfigured"));
            saw_500 = true;
        } else {
            assert_eq!(res.status(), http::StatusCode::OK);
        }
    }
    assert!(saw_500);
}
