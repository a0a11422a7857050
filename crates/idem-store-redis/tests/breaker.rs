//! The store's breaker against a real `redis-server` of the test's own: a probe dropped during a
//! freeze (SIGSTOP) must not wedge the breaker, and an error reply (Redis answered) must not
//! open it.

use idem_core::BackendError;
use idem_core::{BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, ManualClock};
use idem_store_redis::{Breaker, RedisRunner, RedisSettings, RedisStore};
use retry_safe_core::BreakerState;
use std::time::Duration;
use testkit::PrivateRedis;

fn key(n: u32) -> IdempotencyKey {
    IdempotencyKey::parse(format!("k-{n}").as_bytes()).unwrap()
}

fn fp() -> Fingerprint {
    Fingerprint::of_request("POST", "/orders", b"{}")
}

async fn store_on(redis: &PrivateRedis, breaker: Breaker) -> RedisStore {
    let settings = RedisSettings::default()
        .response_timeout(Duration::from_millis(200))
        .retries(0);
    let runner = RedisRunner::connect(&redis.url, &settings).await.unwrap();
    RedisStore::with_connection(runner)
        .prefix(&testkit::unique("breaker", "idem"))
        .breaker(breaker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_dropped_during_a_freeze_does_not_keep_the_store_refusing() {
    let redis = PrivateRedis::start().await;
    let clock = ManualClock::new();
    let breaker = Breaker::new(1, Duration::from_secs(1), clock.clone());
    let store = store_on(&redis, breaker.clone()).await;
    let lease = Duration::from_secs(5);
    assert!(matches!(
        store.begin("t", &key(0), &fp(), lease).await,
        Ok(BeginOutcome::Acquired { .. })
    ));

    redis.pause();
    // No reply within the response timeout: the breaker opens.
    let frozen = store.begin("t", &key(1), &fp(), lease).await;
    assert!(
        matches!(frozen, Err(ref e) if e.is_unavailable()),
        "{frozen:?}"
    );
    assert_eq!(breaker.state(), BreakerState::Open);

    // The cool-down ends; the probe's caller gives up before Redis answers (a client
    // disconnect, a tower timeout): its future is dropped with the probe in it.
    clock.advance(Duration::from_secs(1));
    let dropped = tokio::time::timeout(
        Duration::from_millis(20),
        store.begin("t", &key(2), &fp(), lease),
    )
    .await;
    assert!(dropped.is_err(), "the probe was still waiting when dropped");

    redis.resume();
    clock.advance(Duration::from_secs(1));
    // Redis is healthy again: the next probe goes through and closes the breaker.
    let mut acquired = 0;
    for n in 3..103 {
        if let Ok(BeginOutcome::Acquired { .. }) = store.begin("t", &key(n), &fp(), lease).await {
            acquired += 1;
        }
    }
    assert_eq!(acquired, 100, "every begin after the freeze is answered");
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test]
async fn an_error_reply_is_unavailable_but_does_not_open_the_breaker() {
    let redis = PrivateRedis::start().await;
    let clock = ManualClock::new();
    let breaker = Breaker::new(1, Duration::from_secs(1), clock);
    let store = store_on(&redis, breaker.clone()).await;
    // Every write is refused with `OOM command not allowed…`: Redis answers, at once.
    let _: () = redis
        .command(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1"))
        .await;
    for n in 0..10 {
        match store
            .begin("t", &key(n), &fp(), Duration::from_secs(5))
            .await
        {
            Err(idem_core::StoreError::Backend(BackendError::Unavailable(e))) => {
                let e = e
                    .downcast_ref::<redis::RedisError>()
                    .expect("Redis's reply");
                assert!(e.code().is_some(), "an error reply: {e}");
            }
            other => panic!("an OOM reply is an outage for the caller, got {other:?}"),
        }
    }
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "Redis answered every call: nothing to spare callers from"
    );
}
