//! LeasedLimiter against the real Redis of `REDIS_URL`: local decisions from a lease, three
//! servers within the documented overshoot bound, and Redis going away (a private redis-server,
//! SIGKILLed by its PID). Times are pinned on a `ManualClock`; nothing sleeps.

mod fleet;

use bytes::Bytes;
use http_body_util::Full;
use ratelimit_token_bucket::{
    BackendError, Decision, Error, FailMode, KeyedRateLimitLayer, Lease, LeasedLimiter,
    ManualClock, Quota, Quotas, RedisLimiter,
};
use std::time::Duration;
use tower::{Service, ServiceExt};

fn origin() -> ManualClock {
    ManualClock::at(Duration::from_secs(1_764_000_000))
}

async fn exact(url: &str, prefix: &str, quotas: Quotas, clock: &ManualClock) -> RedisLimiter {
    RedisLimiter::connect(url, quotas)
        .await
        .unwrap_or_else(|e| {
            panic!("Redis is not reachable at {url} ({e}); `cargo xtask test` starts it")
        })
        .prefix(prefix)
        .pin_time(clock.clone())
}

async fn leased(
    url: &str,
    prefix: &str,
    quotas: Quotas,
    lease: Lease,
    clock: &ManualClock,
) -> LeasedLimiter<String, ManualClock> {
    LeasedLimiter::with_clock(
        exact(url, prefix, quotas, clock).await,
        lease,
        clock.clone(),
    )
}

/// Gives the spawned renewal turns until `done` holds (one round trip on loopback), for at
/// most 10 s of wall time: the limiter's own time stays pinned.
async fn settle(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_lease_decides_locally_and_renews_in_the_background() {
    let clock = origin();
    let prefix = testkit::unique("test:rl", "lease-local");
    let quotas = Quotas::new([Quota::per_second(10).burst(100)]).unwrap();
    let limiter = leased(
        &testkit::redis_url(),
        &prefix,
        quotas,
        Lease::new(10),
        &clock,
    )
    .await;
    let key = "k".to_owned();

    // The first request waits for one call, which takes a lease of 10 and uses 1.
    assert!(limiter.check(&key, 1).await.unwrap().is_allowed());
    assert_eq!((limiter.redis_calls(), limiter.local_decisions()), (1, 0));
    assert_eq!(limiter.held(&key), 9);
    // The next four are local; at 5 left (the low water) a renewal goes out in the background.
    for _ in 0..4 {
        assert!(limiter.check_local(&key, 1).unwrap().unwrap().is_allowed());
    }
    assert_eq!(limiter.local_decisions(), 4);
    settle(|| limiter.held(&key) > 5).await;
    assert_eq!(limiter.redis_calls(), 2);
    assert_eq!(
        limiter.held(&key),
        15,
        "the renewal added a lease to the 5 left"
    );
    // What the fleet's bucket holds: 100 − 20 taken.
    let probe = exact(
        &testkit::redis_url(),
        &prefix,
        limiter.quotas().clone(),
        &clock,
    )
    .await;
    assert_eq!(probe.check(&key, 0).await.unwrap().remaining(), 80);
    // Held units lapse after the lease's ttl: the next request needs a call again.
    clock.advance(Duration::from_millis(1001));
    assert_eq!(limiter.held(&key), 0);
    assert!(limiter.check_local(&key, 1).is_none());
}

#[tokio::test]
async fn a_refusal_from_redis_is_remembered_until_its_retry_after() {
    let clock = origin();
    let prefix = testkit::unique("test:rl", "lease-refused");
    let quotas = Quotas::new([Quota::per_second(2).burst(2)]).unwrap();
    let limiter = leased(
        &testkit::redis_url(),
        &prefix,
        quotas,
        Lease::new(4),
        &clock,
    )
    .await;
    let key = "k".to_owned();
    let mut admitted = 0;
    for _ in 0..6 {
        if limiter.check(&key, 1).await.unwrap().is_allowed() {
            admitted += 1;
        }
    }
    assert_eq!(
        admitted, 2,
        "the bucket holds 2: a lease cannot take more than there is"
    );
    let calls = limiter.redis_calls();
    let Some(Ok(Decision::Limited(limited))) = limiter.check_local(&key, 1) else {
        panic!("refused locally while Redis's refusal stands");
    };
    assert!(
        limited.retry_after() > Duration::ZERO
            && limited.retry_after() <= Duration::from_millis(500)
    );
    assert_eq!(
        limiter.redis_calls(),
        calls,
        "no call for a remembered refusal"
    );
    clock.advance(limited.retry_after());
    assert!(limiter.check(&key, 1).await.unwrap().is_allowed());
}

/// Three servers, one key, 2,000 requests at random times and to random servers, at 2.5× the
/// limit: over every window the fleet admits at most `burst + w / interval + 3 × max_held`, and
/// about its limit.
#[tokio::test]
async fn three_servers_stay_within_the_overshoot_bound_on_redis() {
    let report = three_servers(&testkit::redis_url(), "lease-fleet", 50, 20).await;
    assert!(report.worst_excess <= report.bound as i64, "{report:?}");
    let limit = 20.0 + 50.0 * 2_000.0 * 0.004;
    assert!(
        report.admitted as f64 >= 0.8 * limit,
        "under-admitted: {report:?}"
    );
    assert!(report.calls < report.requests as u64, "{report:?}");
}

/// Below the limit the same fleet admits every request, nearly all of them from memory.
#[tokio::test]
async fn below_the_limit_three_servers_decide_from_memory() {
    let report = three_servers(&testkit::redis_url(), "lease-under", 1_000, 100).await;
    assert_eq!(report.admitted, report.requests, "{report:?}");
    assert!(
        report.local as f64 >= 0.85 * report.requests as f64,
        "{report:?}"
    );
}

async fn three_servers(url: &str, name: &str, rate: u64, burst: u64) -> fleet::Report {
    let clock = origin();
    let prefix = testkit::unique("test:rl", name);
    let quotas = Quotas::new([Quota::per_second(rate).burst(burst)]).unwrap();
    let lease = Lease::new(6).ttl(Duration::from_millis(200));
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(leased(url, &prefix, quotas.clone(), lease, &clock).await);
    }
    let report = fleet::run(&servers, &clock, 2_000, Duration::from_millis(8), 7).await;
    println!("{report:?}");
    report
}

#[tokio::test]
async fn when_redis_is_gone_the_lease_runs_out_and_the_fail_mode_decides() {
    let mut redis = testkit::PrivateRedis::start().await;
    let clock = origin();
    let quotas = Quotas::new([Quota::per_second(10).burst(100)]).unwrap();
    let closed = leased(&redis.url, "closed", quotas.clone(), Lease::new(4), &clock).await;
    let open = LeasedLimiter::with_clock(
        exact(&redis.url, "open", quotas, &clock)
            .await
            .fail_mode(FailMode::Open),
        Lease::new(4),
        clock.clone(),
    );
    let key = "k".to_owned();
    assert!(closed.check(&key, 1).await.unwrap().is_allowed());
    assert!(open.check(&key, 1).await.unwrap().is_allowed());
    redis.stop();

    // What each holds (3) is still decided locally; the renewals fail in the background.
    for limiter in [&closed, &open] {
        for _ in 0..3 {
            assert!(limiter.check(&key, 1).await.unwrap().is_allowed());
        }
    }
    match closed.check(&key, 1).await {
        Err(Error::Backend(BackendError::Unavailable(_))) => {}
        other => panic!("fail-closed reports the outage once the lease is spent, got {other:?}"),
    }
    assert!(open.check(&key, 1).await.unwrap().is_allowed());
    assert_eq!(
        open.fleet().fallback_decisions(),
        1,
        "fail-open: the local fallback decided"
    );
}

/// The tower layer takes the lease's local decisions without awaiting, and a refusal is a 429.
#[tokio::test]
async fn the_layer_answers_from_the_lease_and_refuses_with_429() {
    let clock = origin();
    let prefix = testkit::unique("test:rl", "lease-layer");
    let quotas = Quotas::new([Quota::per_hour(3).burst(3)]).unwrap();
    let limiter = leased(
        &testkit::redis_url(),
        &prefix,
        quotas,
        Lease::new(3),
        &clock,
    )
    .await;
    let by_user = |_: &http::request::Parts| Some("user-1".to_owned());
    let mut svc = tower::ServiceBuilder::new()
        .layer(KeyedRateLimitLayer::new(limiter.clone(), by_user))
        .service_fn(|_req: http::Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
        });
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let req = http::Request::new(Full::new(Bytes::new()));
        let response = svc.ready().await.unwrap().call(req).await.unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // The first call took 2 of the 3 (half of what was left, rounded up): the second request
    // passed from the lease, without a call.
    assert!(limiter.local_decisions() >= 1, "{limiter:?}");
    assert!(limiter.redis_calls() <= 4);
}
