//! RedisConcurrencyLimiter against the real Redis of `REDIS_URL` (default
//! `redis://127.0.0.1:6379`); each test has its own key prefix.

use ratelimit_concurrent::ManualClock;
use ratelimit_concurrent::{BackendError, Error, FailMode, RedisConcurrencyLimiter};
use std::sync::Arc;
use std::time::Duration;
use testkit::PrivateRedis;

fn url() -> String {
    testkit::redis_url()
}

fn unique(name: &str) -> String {
    testkit::unique("test:cl", name)
}

async fn limiter_at(url: &str, prefix: &str, max: u32) -> RedisConcurrencyLimiter {
    match RedisConcurrencyLimiter::connect(url, max).await {
        Ok(l) => l.prefix(prefix),
        Err(e) => panic!(
            "Redis is not reachable at {url} ({e}); start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no` or run `cargo xtask test`, which starts it"
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

async fn holders(limiter: &RedisConcurrencyLimiter, key: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(limiter.leases_key(key))
        .query_async(&mut admin().await)
        .await
        .unwrap()
}

fn limited(r: Result<ratelimit_concurrent::Lease, Error>) -> ratelimit_concurrent::Limited {
    match r {
        Err(Error::Limited(l)) => l,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn two_servers_share_one_fleet_wide_cap() {
    let prefix = unique("fleet");
    let a = limiter_at(&url(), &prefix, 3).await;
    let b = limiter_at(&url(), &prefix, 3).await;
    let a1 = a.acquire("tenant").await.unwrap();
    let _a2 = a.acquire("tenant").await.unwrap();
    let _b1 = b.acquire("tenant").await.unwrap();
    let l = limited(b.acquire("tenant").await);
    assert_eq!((l.in_flight, l.max), (3, 3));
    limited(a.acquire("tenant").await);
    assert!(b.acquire("other-tenant").await.is_ok());
    a1.release().await.unwrap();
    assert!(
        b.acquire("tenant").await.is_ok(),
        "a slot freed on A is usable from B"
    );
}

#[tokio::test]
async fn a_crashed_holders_lease_expires_after_the_lease_time() {
    let clock = ManualClock::at(Duration::from_secs(1_764_000_000));
    let limiter = limiter_at(&url(), &unique("crash"), 1)
        .await
        .lease(Duration::from_secs(30))
        .pin_time(clock.clone());
    // The holder "crashes": it never releases, not even on drop.
    std::mem::forget(limiter.acquire("job").await.unwrap());
    clock.advance(Duration::from_secs(29));
    let l = limited(limiter.acquire("job").await);
    assert_eq!(
        l.retry_after,
        Duration::from_secs(1),
        "the lease ends in exactly 1 s"
    );
    clock.advance(Duration::from_secs(1) + Duration::from_micros(1));
    let lease = limiter.acquire("job").await.unwrap();
    assert_eq!(
        holders(&limiter, "job").await,
        1,
        "the expired lease was dropped"
    );
    lease.release().await.unwrap();
    assert_eq!(holders(&limiter, "job").await, 0);
}

#[tokio::test]
async fn a_long_request_renews_its_lease() {
    let clock = ManualClock::at(Duration::from_secs(1_764_000_000));
    let limiter = limiter_at(&url(), &unique("renew"), 1)
        .await
        .lease(Duration::from_secs(10))
        .pin_time(clock.clone());
    let lease = limiter.acquire("export").await.unwrap();
    clock.advance(Duration::from_secs(8));
    assert!(lease.renew().await.unwrap());
    clock.advance(Duration::from_secs(7)); // 15 s after acquiring: alive thanks to the renewal
    limited(limiter.acquire("export").await);
    clock.advance(Duration::from_secs(4)); // 11 s after the renewal: expired
    assert!(
        !lease.renew().await.unwrap(),
        "an expired lease cannot be renewed"
    );
    assert!(limiter.acquire("export").await.is_ok());
}

#[tokio::test]
async fn a_dropped_lease_is_released_in_the_background() {
    let limiter = limiter_at(&url(), &unique("drop"), 2).await;
    let lease = limiter.acquire("k").await.unwrap();
    assert_eq!(holders(&limiter, "k").await, 1);
    drop(lease);
    // The ZREM runs on a spawned task; poll for it rather than assume its timing.
    for _ in 0..100 {
        if holders(&limiter, "k").await == 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the dropped lease was not released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acquisitions_never_exceed_the_cap() {
    let limiter = Arc::new(limiter_at(&url(), &unique("race"), 10).await);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire("hot").await.map(std::mem::forget).is_ok() })
        })
        .collect();
    let mut taken = 0;
    for t in tasks {
        taken += usize::from(t.await.unwrap());
    }
    assert_eq!(taken, 10);
    assert_eq!(holders(&limiter, "hot").await, 10);
}

#[tokio::test]
async fn a_key_of_another_type_is_a_typed_error() {
    let limiter = limiter_at(&url(), &unique("corrupt"), 2).await;
    let _: () = redis::cmd("SET")
        .arg(limiter.leases_key("k"))
        .arg("not a set")
        .query_async(&mut admin().await)
        .await
        .unwrap();
    assert!(matches!(
        limiter.acquire("k").await,
        Err(Error::Backend(BackendError::Corrupt(_)))
    ));
}

#[tokio::test]
async fn unreachable_redis_fails_closed_or_open_as_configured() {
    let mut redis = PrivateRedis::start().await;
    let closed = limiter_at(&redis.url, "closed", 1).await;
    let open = limiter_at(&redis.url, "open", 1)
        .await
        .fail_mode(FailMode::Open);
    closed.acquire("k").await.unwrap().release().await.unwrap();
    redis.stop();

    assert!(matches!(
        closed.acquire("k").await,
        Err(Error::Backend(BackendError::Unavailable(_)))
    ));
    // Fail-open: a local limiter with the same cap takes over, and says so.
    let local = open.acquire("k").await.unwrap();
    assert!(local.is_local());
    assert!(matches!(open.acquire("k").await, Err(Error::Limited(_))));
    drop(local);
    assert!(open.acquire("k").await.unwrap().is_local());
    assert_eq!(open.fallback_permits(), 3);
}

/// The layer over a fleet limiter whose Redis went away: fail-closed → 503
/// `concurrency_unavailable` with Retry-After and the handler not run; fail-open → served on a
/// local permit.
#[cfg(feature = "tower")]
#[tokio::test]
async fn the_layer_answers_503_when_the_fleet_limiter_fails_closed() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use ratelimit_concurrent::KeyedConcurrencyLimitLayer;
    use tower::{Layer, ServiceExt};

    let mut redis = PrivateRedis::start().await;
    let closed = limiter_at(&redis.url, "layer-closed", 1).await;
    let open = limiter_at(&redis.url, "layer-open", 1)
        .await
        .fail_mode(FailMode::Open);
    redis.stop();
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = {
        let ran = ran.clone();
        tower::service_fn(move |_req: http::Request<Full<Bytes>>| {
            ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
            }
        })
    };
    let key = |_: &http::request::Parts| Some("tenant".to_owned());
    let req = || {
        http::Request::get("/")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let res = KeyedConcurrencyLimitLayer::new(closed, key)
        .layer(handler.clone())
        .oneshot(req())
        .await
        .unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("concurrency_unavailable"));
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 0);
    let res = KeyedConcurrencyLimitLayer::new(open, key)
        .layer(handler)
        .oneshot(req())
        .await
        .unwrap();
    assert_eq!(res.status(), http::StatusCode::OK);
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// The workspace's one rule: Redis answered with an error (`READONLY`: the server was made a replica): the
/// acquisition is an outage for the caller, and the breaker stays closed.
#[tokio::test]
async fn an_error_reply_is_unavailable_but_does_not_open_the_breaker() {
    let redis = PrivateRedis::start_read_only().await;
    let breaker = ratelimit_concurrent::Breaker::new(1, Duration::from_secs(1), ManualClock::new());
    let limiter = RedisConcurrencyLimiter::connect(&redis.url, 2)
        .await
        .unwrap()
        .breaker(breaker.clone());
    for _ in 0..5 {
        match limiter.acquire("k").await {
            Err(Error::Backend(e)) => testkit::assert_error_reply(&e),
            other => panic!("a READONLY reply is an outage, got {other:?}"),
        }
    }
    assert_eq!(breaker.state(), retry_safe_core::BreakerState::Closed);
}

#[tokio::test]
async fn a_refusal_hints_the_retry_hint_not_a_fresh_leases_expiry() {
    let clock = ManualClock::at(Duration::from_secs(1_764_000_000));
    let limiter = limiter_at(&url(), &unique("hint"), 1)
        .await
        .lease(Duration::from_secs(30))
        .pin_time(clock.clone());
    let _held = limiter.acquire("k").await.unwrap();
    let l = limited(limiter.acquire("k").await);
    assert_eq!(
        l.retry_after,
        Duration::from_secs(1),
        "a held slot usually frees with its request: the default hint, not the lease's 30 s"
    );
    let patient = limiter.clone().retry_hint(Duration::from_secs(60));
    let l = limited(patient.acquire("k").await);
    assert_eq!(
        l.retry_after,
        Duration::from_secs(30),
        "the first lease's expiry when it is sooner than the hint"
    );
}

#[tokio::test]
async fn an_acquire_that_got_no_answer_leaves_no_lease_once_redis_resumes() {
    use ratelimit_concurrent::{RedisRunner, RedisSettings};
    let redis = PrivateRedis::start().await;
    let settings = RedisSettings::default().response_timeout(Duration::from_millis(200));
    let runner = RedisRunner::connect(&redis.url, &settings).await.unwrap();
    let limiter = RedisConcurrencyLimiter::with_connection(runner, 1)
        .prefix("ghost")
        .fail_mode(FailMode::Open);
    limiter.acquire("k").await.unwrap().release().await.unwrap();
    redis.pause();
    // The acquire is written to the socket, Redis does not answer: a local permit.
    let local = limiter.acquire("k").await.unwrap();
    assert!(local.is_local());
    redis.resume();
    // Redis now runs the queued acquire; the removal queued after it must undo it.
    let zcard = redis::cmd("ZCARD").arg(limiter.leases_key("k")).clone();
    for _ in 0..500 {
        let n: u64 = redis.command(&zcard).await;
        if n == 0 {
            drop(local);
            assert!(!limiter.acquire("k").await.unwrap().is_local());
            return;
        }
    }
    panic!("a lease nobody holds took the only slot after Redis resumed");
}
