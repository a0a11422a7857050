//! The fleet usage shedder on the real Redis of `REDIS_URL` and on the Redis Cluster of
//! `REDIS_CLUSTER_URLS` (`cargo xtask test` provides both): two instances sharing one fleet
//! capacity with its reserve, a crashed instance's slots coming back after their lease, Redis
//! going away (local fallback, counted; or shed when failing closed), and the layer's answers.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use loadshed_fleet::{
    Class, DefaultClassifier, FailMode, FleetError, FleetShedder, ManualClock, PriorityShedLayer,
    ShedReason, Shedder,
};
use retry_safe_core::BackendError;
use std::sync::Arc;
use std::time::Duration;
use testkit::{cluster_urls, redis_url as url, PrivateRedis};
use tower::{Layer, ServiceExt};

fn unique(name: &str) -> String {
    testkit::unique("test:lsf", name)
}

async fn fleet_at(url: &str, prefix: &str, capacity: u32) -> FleetShedder {
    FleetShedder::connect(url, capacity)
        .await
        .unwrap_or_else(|e| {
            panic!("Redis is not reachable at {url} ({e}); run `cargo xtask test`, which starts it")
        })
        .prefix(prefix)
}

fn shed_reason(r: Result<loadshed_fleet::FleetGuard, FleetError>) -> ShedReason {
    match r {
        Err(FleetError::Shed(shed)) => shed.reason,
        other => panic!("expected a shed request, got {other:?}"),
    }
}

/// Capacity 10 with 20 % reserved for critical traffic, two servers: 8 writes across both fill
/// the non-critical share; the 9th write, on either, is shed; critical requests still get the
/// last two slots.
async fn two_instances_share_the_fleet_and_its_reserve(a: FleetShedder, b: FleetShedder) {
    assert_eq!((a.limit(Class::Write), a.limit(Class::Critical)), (8, 10));
    let mut held = Vec::new();
    for i in 0..8 {
        let fleet = if i % 2 == 0 { &a } else { &b };
        held.push(fleet.admit(Class::Write).await.unwrap());
    }
    assert_eq!(
        shed_reason(a.admit(Class::Write).await),
        ShedReason::FleetCapacity
    );
    assert_eq!(
        shed_reason(b.admit(Class::Write).await),
        ShedReason::FleetCapacity
    );
    assert_eq!(
        shed_reason(b.admit(Class::Read).await),
        ShedReason::FleetCapacity
    );
    held.push(a.admit(Class::Critical).await.unwrap());
    held.push(b.admit(Class::Critical).await.unwrap());
    assert_eq!(
        shed_reason(a.admit(Class::Critical).await),
        ShedReason::FleetCapacity
    );
    assert!(held.iter().all(|g| !g.is_fallback()));
    // A released slot is usable from the other server at once.
    held.pop().unwrap().release().await;
    assert!(a.admit(Class::Critical).await.is_ok());
    assert_eq!(a.fallbacks() + b.fallbacks(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_redis() {
    let prefix = unique("share");
    two_instances_share_the_fleet_and_its_reserve(
        fleet_at(&url(), &prefix, 10).await,
        fleet_at(&url(), &prefix, 10).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_redis_cluster() {
    let prefix = unique("share-cluster");
    let on_cluster = || async {
        FleetShedder::connect_cluster(cluster_urls(), 10)
            .await
            .unwrap()
            .prefix(&prefix)
    };
    two_instances_share_the_fleet_and_its_reserve(on_cluster().await, on_cluster().await).await;
}

#[tokio::test]
async fn a_crashed_instances_slots_return_after_their_lease() {
    let clock = ManualClock::at(Duration::from_secs(1_764_000_000));
    let prefix = unique("crash");
    let crashed = fleet_at(&url(), &prefix, 10)
        .await
        .lease(Duration::from_secs(30))
        .pin_time(clock.clone());
    let survivor = fleet_at(&url(), &prefix, 10)
        .await
        .lease(Duration::from_secs(30))
        .pin_time(clock.clone());
    for _ in 0..8 {
        // The server dies holding them: no release, not even in the background.
        std::mem::forget(crashed.admit(Class::Write).await.unwrap());
    }
    assert_eq!(
        shed_reason(survivor.admit(Class::Write).await),
        ShedReason::FleetCapacity
    );
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        shed_reason(survivor.admit(Class::Write).await),
        ShedReason::FleetCapacity
    );
    clock.advance(Duration::from_secs(1) + Duration::from_micros(1));
    let back: Vec<_> =
        futures_util::future::join_all((0..8).map(|_| survivor.admit(Class::Write))).await;
    assert!(
        back.iter().all(Result::is_ok),
        "the crashed server's 8 slots came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_to_the_server_or_sheds_when_closed() {
    let redis = PrivateRedis::start().await;
    let open = fleet_at(&redis.url, "down", 10).await;
    let closed = fleet_at(&redis.url, "down", 10)
        .await
        .fail_mode(FailMode::Closed);
    assert!(!open.admit(Class::Write).await.unwrap().is_fallback());
    drop(redis); // SIGKILL
    for _ in 0..5 {
        assert!(open.admit(Class::Write).await.unwrap().is_fallback());
    }
    assert_eq!(open.fallbacks(), 5, "every fallback is counted");
    assert!(matches!(
        closed.admit(Class::Write).await,
        Err(FleetError::Backend(BackendError::Unavailable(_)))
    ));

    // Through the layer: the server's own shedder decides alone (fail-open), or 503 (closed).
    let handler = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let post = || {
        http::Request::post("/orders")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let layer = PriorityShedLayer::new(Shedder::new(64).unwrap(), DefaultClassifier::new())
        .with_fleet(open);
    assert_eq!(
        layer.layer(handler).oneshot(post()).await.unwrap().status(),
        200
    );
    let layer = PriorityShedLayer::new(Shedder::new(64).unwrap(), DefaultClassifier::new())
        .with_fleet(closed);
    let res = layer.layer(handler).oneshot(post()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("fleet_shedder_unavailable"));
}

/// The layer with a fleet shedder: writes held by one server fill the fleet's non-critical share;
/// the next write, to the other server, gets 503 `overloaded` (`fleet_capacity`), while a critical
/// capture is admitted on the reserve; the per-server shedder still applies first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_sheds_on_the_fleet_share_and_admits_critical_on_the_reserve() {
    let prefix = unique("layer");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let handler = tower::service_fn(move |req: http::Request<Full<Bytes>>| {
        let g = g.clone();
        async move {
            if req.uri().path() == "/orders" {
                g.acquire().await.unwrap().forget();
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(
                b"ok",
            ))))
        }
    });
    let classifier = || DefaultClassifier::new().critical(http::Method::POST, "/payments/");
    let server_a = PriorityShedLayer::new(Shedder::new(64).unwrap(), classifier())
        .with_fleet(fleet_at(&url(), &prefix, 10).await)
        .layer(handler.clone());
    let server_b = PriorityShedLayer::new(Shedder::new(64).unwrap(), classifier())
        .with_fleet(fleet_at(&url(), &prefix, 10).await)
        .layer(handler);
    let post = |path: &str| {
        http::Request::post(path)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let held: Vec<_> = (0..8)
        .map(|_| tokio::spawn(server_a.clone().oneshot(post("/orders"))))
        .collect();
    // Wait until the 8 hold their fleet slots (the fleet's set has 8 leases).
    let mut admin = redis::Client::open(url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n: u64 = redis::cmd("ZCARD")
            .arg(format!("lsf:{{{prefix}}}"))
            .query_async(&mut admin)
            .await
            .unwrap();
        if n == 8 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fleet share never filled ({n})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A 9th write, on the other server, is shed by the fleet.
    let shed = server_b
        .clone()
        .oneshot(post("/orders-probe"))
        .await
        .unwrap();
    assert_eq!(shed.status(), 503);
    let body = shed.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (json["code"].as_str(), json["reason"].as_str()),
        (Some("overloaded"), Some("fleet_capacity"))
    );
    let critical = server_b
        .clone()
        .oneshot(post("/payments/pi_1/capture"))
        .await
        .unwrap();
    assert_eq!(
        critical.status(),
        200,
        "critical traffic is admitted on the fleet reserve"
    );
    // Permits, not a notification: a handler that has not reached its wait yet still passes.
    gate.add_permits(8);
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
}

/// A single-node connection on a cluster node: never a fallback, whatever the fail mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misrouted_fleet_shedder_is_misconfigured_not_a_fallback() {
    let node = retry_safe_core::redis::cluster_masters(&cluster_urls()[0])
        .await
        .unwrap();
    let mut misconfigured = 0;
    // The fleet's one key lives on one master: a prefix lands it on another node than `node[0]`.
    for i in 0..30 {
        let fleet = fleet_at(&node[0], &unique(&format!("mis{i}")), 10).await;
        match fleet.admit(Class::Write).await {
            Ok(guard) => assert!(!guard.is_fallback()),
            Err(FleetError::Backend(BackendError::Misconfigured(_))) => misconfigured += 1,
            Err(other) => panic!("expected Misconfigured, got {other:?}"),
        }
        assert_eq!(fleet.fallbacks(), 0);
    }
    assert!(misconfigured > 0);
}

/// The workspace's one rule on the fleet shedder: an error reply (`READONLY`) is an outage (fail-open
/// falls back to the server, fail-closed refuses), and its breaker stays closed.
#[tokio::test]
async fn an_error_reply_falls_back_but_does_not_open_the_breaker() {
    let redis = PrivateRedis::start_read_only().await;
    let breaker = loadshed_fleet::Breaker::new(1, Duration::from_secs(1), ManualClock::new());
    let open = FleetShedder::connect(&redis.url, 10)
        .await
        .unwrap()
        .breaker(breaker.clone());
    for _ in 0..5 {
        assert!(open.admit(Class::Write).await.unwrap().is_fallback());
    }
    let closed = open.clone().fail_mode(FailMode::Closed);
    assert!(matches!(
        closed.admit(Class::Write).await,
        Err(FleetError::Backend(BackendError::Unavailable(_)))
    ));
    assert_eq!(breaker.state(), retry_safe_core::BreakerState::Closed);
    assert!(
        open.leases_key().starts_with("lsf:{"),
        "{}",
        open.leases_key()
    );
    assert!(!open.connection().is_cluster());
}
