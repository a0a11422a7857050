//! RedisLimiter against the real Redis of `REDIS_URL` (default `redis://127.0.0.1:6379`).
//!
//! Every test (and every proptest case) has its own key prefix.

mod common;

use common::{quota_sets, quotas_of, streams, Model, Outcome};
use proptest::prelude::*;
use ratelimit_token_bucket::{
    BackendError, Clock, Decision, Error, FailMode, KeyedLimiter, ManualClock, Quota, Quotas,
    RedisLimiter,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

fn url() -> String {
    testkit::redis_url()
}

fn unique(name: &str) -> String {
    testkit::unique("test:rl", name)
}

async fn limiter_at(url: &str, name: &str, quotas: Quotas) -> RedisLimiter {
    match RedisLimiter::connect(url, quotas).await {
        Ok(l) => l.prefix(&unique(name)),
        Err(e) => panic!(
            "Redis is not reachable at {url} ({e}); start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no` or run `cargo xtask test`, which starts it"
        ),
    }
}

async fn limiter(name: &str, quotas: Quotas) -> RedisLimiter {
    limiter_at(&url(), name, quotas).await
}

async fn admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis reachable")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    // Each case is up to 120 round trips: fewer cases than the pure models by default.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48)
    ))]

    /// The same stream at the same (pinned) times: Redis, memory and the reference bucket agree
    /// on every decision, to the nanosecond. Times sit near today's Unix time in nanoseconds, so
    /// the script's split seconds/nanoseconds arithmetic is exercised across second boundaries.
    #[test]
    fn redis_and_memory_make_the_same_decisions(set in quota_sets(), stream in streams(), start in 0u64..1_000_000_000) {
        let rt = runtime();
        let origin = Duration::from_secs(1_764_000_000) + Duration::from_nanos(start);
        let clock = ManualClock::at(origin);
        let redis = rt.block_on(limiter("model", quotas_of(&set))).pin_time(clock.clone());
        let memory = KeyedLimiter::with_clock(quotas_of(&set), clock.clone());
        let mut model = Model::new(&set);
        for (i, &(key, gap, cost)) in stream.iter().enumerate() {
            clock.advance(Duration::from_nanos(gap));
            let from_redis: Outcome = rt.block_on(redis.check(&key, cost)).into();
            let from_memory: Outcome = memory.check(&key, cost).map_err(Error::from).into();
            let want = model.check(key, clock.now_nanos(), cost);
            prop_assert_eq!(from_redis, from_memory, "request {} of {:?}", i, stream);
            prop_assert_eq!(from_memory, want, "request {} of {:?}", i, stream);
        }
    }
}

#[tokio::test]
async fn server_time_limits_a_burst_and_the_key_expires_at_the_reset() {
    let limiter = limiter("server-time", Quotas::new([Quota::per_hour(3)]).unwrap()).await;
    for remaining in [2, 1, 0] {
        assert_eq!(
            limiter.check("alice", 1).await.unwrap().remaining(),
            remaining
        );
    }
    let Decision::Limited(l) = limiter.check("alice", 1).await.unwrap() else {
        panic!("the 4th request of a burst of 3 passed");
    };
    // 20 minutes per request, less the few milliseconds this test has run.
    assert!(l.retry_after() <= Duration::from_secs(1200), "{l:?}");
    assert!(l.retry_after() > Duration::from_secs(1190), "{l:?}");
    assert!(limiter.check("bob", 1).await.unwrap().is_allowed());

    let ttl: i64 = redis::cmd("PTTL")
        .arg(limiter.state_key("alice"))
        .query_async(&mut admin().await)
        .await
        .unwrap();
    assert!(
        (3_590_000..=3_600_000).contains(&ttl),
        "the state lives until the bucket is full again (1 h), not {ttl} ms"
    );
}

#[tokio::test]
async fn two_servers_share_one_limit() {
    let quotas = Quotas::new([Quota::per_minute(10)]).unwrap();
    // Two independent connections with the same prefix: two servers of a fleet.
    let prefix = unique("fleet");
    let a = limiter("fleet", quotas.clone()).await.prefix(&prefix);
    let b = limiter("fleet", quotas).await.prefix(&prefix);
    assert_eq!(a.state_key("k"), b.state_key("k"));
    let mut passed = 0;
    for i in 0..30 {
        let server = if i % 2 == 0 { &a } else { &b };
        if server.check("k", 1).await.unwrap().is_allowed() {
            passed += 1;
        }
    }
    assert_eq!(passed, 10, "the fleet as a whole passes the burst once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_one_key_count_each_unit_once() {
    let limiter = Arc::new(limiter("race", Quotas::new([Quota::per_hour(10)]).unwrap()).await);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.check("hot", 1).await.unwrap().is_allowed() })
        })
        .collect();
    let mut passed = 0;
    for t in tasks {
        passed += usize::from(t.await.unwrap());
    }
    assert_eq!(passed, 10);
}

#[tokio::test]
async fn the_script_is_reloaded_after_a_script_flush() {
    let limiter = limiter("noscript", Quotas::new([Quota::per_second(5)]).unwrap()).await;
    assert!(limiter.check("k", 1).await.unwrap().is_allowed());
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut admin().await)
        .await
        .unwrap();
    assert_eq!(limiter.check("k", 1).await.unwrap().remaining(), 3);
}

#[tokio::test]
async fn foreign_or_damaged_state_is_a_typed_error() {
    let limiter = limiter("corrupt", Quotas::new([Quota::per_second(5)]).unwrap()).await;
    let mut admin = admin().await;
    let _: () = redis::cmd("HSET")
        .arg(limiter.state_key("hash"))
        .arg("f")
        .arg("v")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(limiter.state_key("text"))
        .arg("not a time")
        .query_async(&mut admin)
        .await
        .unwrap();
    for key in ["hash", "text"] {
        match limiter.check(key, 1).await {
            Err(Error::Backend(BackendError::Corrupt(what))) => {
                assert!(what.to_string().contains(key), "{what}")
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    // State written under another set of quotas (two TATs for one quota) starts afresh.
    let _: () = redis::cmd("SET")
        .arg(limiter.state_key("other"))
        .arg("1 2")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(limiter.check("other", 1).await.unwrap().remaining(), 4);
}

/// The state is text, "seconds nanoseconds" per quota, read and written the same way by every
/// release: a server of an earlier release and one of this release, side by side in a rolling
/// upgrade, share each bucket (a drained bucket is neither refilled nor misread), and the digits
/// written are exactly the TAT (the script formats them with `%d`).
#[tokio::test]
async fn the_state_is_the_text_every_release_reads() {
    let origin = Duration::from_secs(1_764_000_000);
    let clock = ManualClock::at(origin);
    let limiter = limiter("upgrade", Quotas::new([Quota::per_second(5)]).unwrap())
        .await
        .pin_time(clock.clone());
    let mut admin = admin().await;
    // Three requests' worth of the burst used, as an earlier release writes it: TAT = now + 600 ms.
    let _: () = redis::cmd("SET")
        .arg(limiter.state_key("k"))
        .arg(format!("{} 600000000", origin.as_secs()))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(limiter.check("k", 1).await.unwrap().remaining(), 1);
    let stored: String = redis::cmd("GET")
        .arg(limiter.state_key("k"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(stored, format!("{} 800000000", origin.as_secs()));
    assert_eq!(limiter.check("k", 1).await.unwrap().remaining(), 0);
    assert!(!limiter.check("k", 1).await.unwrap().is_allowed());
    clock.advance(Duration::from_millis(200));
    assert!(limiter.check("k", 1).await.unwrap().is_allowed());
    // A second past the TAT's second boundary: the nanoseconds carry into the seconds.
    let stored: String = redis::cmd("GET")
        .arg(limiter.state_key("k"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(stored, format!("{} 200000000", origin.as_secs() + 1));
}

#[tokio::test]
async fn a_cost_above_the_burst_never_reaches_redis() {
    let limiter = limiter("cost", Quotas::new([Quota::per_second(5)]).unwrap()).await;
    assert!(matches!(
        limiter.check("k", 6).await,
        Err(Error::CostExceedsBurst(_))
    ));
    let exists: bool = redis::cmd("EXISTS")
        .arg(limiter.state_key("k"))
        .query_async(&mut admin().await)
        .await
        .unwrap();
    assert!(!exists);
}

/// A TCP proxy to the real Redis that can be cut: Redis "goes away" for the limiter behind it.
struct Proxy {
    url: String,
    tasks: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = url()
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let tasks = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let conns = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns.lock().push(conn);
            }
        });
        tasks.lock().push(accept);
        Self {
            url: format!("redis://127.0.0.1:{port}"),
            tasks,
        }
    }

    /// Closes the listener and every proxied connection.
    async fn cut(&self) {
        let tasks: Vec<_> = self.tasks.lock().drain(..).collect();
        for t in tasks {
            t.abort();
            let _ = t.await; // resolves once the task is cancelled and its sockets dropped
        }
    }
}

#[tokio::test]
async fn unreachable_redis_fails_closed_or_open_as_configured() {
    let quotas = Quotas::new([Quota::per_minute(2)]).unwrap();
    let proxy = Proxy::start().await;
    let closed = limiter_at(&proxy.url, "down-closed", quotas.clone()).await;
    let open = limiter_at(&proxy.url, "down-open", quotas)
        .await
        .fail_mode(FailMode::Open);
    assert!(closed.check("k", 1).await.unwrap().is_allowed());
    assert!(open.check("k", 1).await.unwrap().is_allowed());
    proxy.cut().await;

    match closed.check("k", 1).await {
        Err(Error::Backend(BackendError::Unavailable(e))) => assert!(!e.to_string().is_empty()),
        other => panic!("fail-closed must report the outage, got {other:?}"),
    }
    // Fail-open: a local limiter of the same quotas decides, and the fallback is counted.
    let decisions: Vec<bool> = vec![
        open.check("k", 1).await.unwrap().is_allowed(),
        open.check("k", 1).await.unwrap().is_allowed(),
        open.check("k", 1).await.unwrap().is_allowed(),
    ];
    assert_eq!(
        decisions,
        [true, true, false],
        "the local fallback enforces the quota too"
    );
    assert_eq!(open.fallback_decisions(), 3);
    assert_eq!(closed.fallback_decisions(), 0);
}

/// Defect 6: with Redis down every decision waited out the connection's timeouts (0.3–2 s),
/// filling the shedder's slots. After 3 unreachable replies the breaker answers at once; one probe
/// per cool-down, and the limiter is back as soon as Redis is.
#[tokio::test]
async fn a_known_down_redis_is_refused_in_microseconds() {
    let quotas = Quotas::new([Quota::per_minute(100)]).unwrap();
    let proxy = Proxy::start().await;
    let limiter = limiter_at(&proxy.url, "breaker", quotas).await.breaker(
        ratelimit_token_bucket::Breaker::new(
            3,
            std::time::Duration::from_millis(300),
            ratelimit_token_bucket::SystemClock::new(),
        ),
    );
    assert!(limiter.check("k", 1).await.unwrap().is_allowed());
    proxy.cut().await;
    for _ in 0..3 {
        assert!(matches!(
            limiter.check("k", 1).await,
            Err(Error::Backend(BackendError::Unavailable(_)))
        ));
    }
    let started = std::time::Instant::now();
    for _ in 0..100 {
        match limiter.check("k", 1).await {
            Err(Error::Backend(BackendError::Unavailable(e))) => {
                assert!(e.to_string().contains("circuit breaker open"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
    let per_call = started.elapsed() / 100;
    assert!(
        per_call < std::time::Duration::from_millis(1),
        "{per_call:?} per refused call"
    );
}

#[tokio::test]
async fn the_layer_answers_503_while_a_fail_closed_redis_is_down() {
    use http_body_util::{BodyExt, Full};
    use ratelimit_token_bucket::KeyedRateLimitLayer;
    use tower::{Layer, ServiceExt};

    let proxy = Proxy::start().await;
    let limiter = limiter_at(
        &proxy.url,
        "layer-down",
        Quotas::new([Quota::per_second(5)]).unwrap(),
    )
    .await;
    let runs = Arc::new(AtomicU64::new(0));
    let handler = {
        let runs = runs.clone();
        tower::service_fn(move |_req: http::Request<Full<bytes::Bytes>>| {
            runs.fetch_add(1, Ordering::SeqCst);
            async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                    bytes::Bytes::new(),
                )))
            }
        })
    };
    let svc = KeyedRateLimitLayer::new(limiter, |_: &http::request::Parts| {
        Some("tenant-1".to_owned())
    })
    .layer(handler);
    let req = || {
        http::Request::get("/")
            .body(Full::new(bytes::Bytes::new()))
            .unwrap()
    };

    let res = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::OK);
    assert_eq!(res.headers()["ratelimit"], "\"default\";r=4;t=1");
    proxy.cut().await;
    let res = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["code"], "rate_limit_unavailable");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "fail-closed: the handler did not run"
    );
}

/// The workspace's one rule: Redis answered with an error (here `READONLY`: the server was made a replica), so
/// the decision is an outage for the caller (fail-closed: `Unavailable`; fail-open: decided
/// locally), and the breaker, which spares callers the timeouts of a silent Redis, stays closed.
#[tokio::test]
async fn an_error_reply_is_unavailable_but_does_not_open_the_breaker() {
    let redis = testkit::PrivateRedis::start_read_only().await;
    let breaker =
        ratelimit_token_bucket::Breaker::new(1, Duration::from_secs(1), ManualClock::new());
    let quotas = Quotas::new([Quota::per_second(10).burst(10)]).unwrap();
    let closed = RedisLimiter::connect(&redis.url, quotas.clone())
        .await
        .unwrap()
        .breaker(breaker.clone());
    for _ in 0..5 {
        match closed.check("k", 1).await {
            Err(Error::Backend(e)) => testkit::assert_error_reply(&e),
            other => panic!("a READONLY reply is an outage, got {other:?}"),
        }
    }
    let open = RedisLimiter::connect(&redis.url, quotas)
        .await
        .unwrap()
        .breaker(breaker.clone())
        .fail_mode(FailMode::Open);
    assert!(open.check("k", 1).await.unwrap().is_allowed());
    assert_eq!(open.fallback_decisions(), 1);
    assert_eq!(breaker.state(), retry_safe_core::BreakerState::Closed);
}
