//! Fault test on real processes: the orders API on `--redis` over a private `redis-server`, which
//! is frozen with SIGSTOP under load. While it is frozen the API answers 503 quickly (the breakers
//! fail fast after the first timeouts); after SIGCONT no key stays locked longer than one lease.

mod common;

use common::{free_addr, orders_api, post_order as post, Proc};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_refused_fast_and_frees_its_keys_within_one_lease() {
    let redis_port = free_addr().port();
    let redis = Proc(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (the machine's Redis package provides it)"),
    );
    let addr = free_addr();
    let api = orders_api(
        addr,
        &["--redis", &format!("redis://127.0.0.1:{redis_port}")],
        &[],
    );
    // Ready when a keyed POST is created (Redis answering through the API).
    let deadline = Instant::now() + Duration::from_secs(30);
    while post(addr, "warmup", "warmup-1").await != Some(201) {
        assert!(
            Instant::now() < deadline,
            "orders-api on --redis did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    redis.signal("-STOP");
    let frozen_at = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut n = 0;
                while frozen_at.elapsed() < Duration::from_secs(4) && n < 5_000 {
                    // Many clients: each request its own principal, so the (fail-open, local)
                    // rate limiter lets them through to the idempotency store.
                    let key = format!("frz-{t}-{n}");
                    let started = Instant::now();
                    let status = post(addr, &format!("client-{t}-{n}"), &key).await;
                    seen.push((key, status, started.elapsed()));
                    n += 1;
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    redis.signal("-CONT");
    let thawed_at = Instant::now();

    let mut unavailable: Vec<Duration> = seen
        .iter()
        .filter(|(_, s, _)| *s == Some(503))
        .map(|(_, _, d)| *d)
        .collect();
    unavailable.sort();
    assert!(
        unavailable.len() >= 100,
        "few 503s while frozen: {}",
        unavailable.len()
    );
    let p99 = unavailable[unavailable.len() * 99 / 100];
    eprintln!(
        "while frozen: {} requests, {} × 503, p50 {:?}, p99 {:?}, max {:?}",
        seen.len(),
        unavailable.len(),
        unavailable[unavailable.len() / 2],
        p99,
        unavailable.last().unwrap()
    );
    assert!(
        p99 < Duration::from_millis(50),
        "p99 of the 503s while frozen: {p99:?}"
    );
    assert!(
        seen.iter()
            .all(|(_, s, _)| matches!(s, Some(201 | 429 | 503))),
        "only created, rate-limited or unavailable while frozen"
    );

    // The keys whose `begin` reached the frozen Redis (the slow ones) are executed when it thaws,
    // with nobody left to complete them. Each must be free again within one lease (10 s).
    let stuck: Vec<_> = seen
        .iter()
        .filter(|(_, s, d)| *s == Some(503) && *d > Duration::from_millis(100))
        .map(|(k, _, _)| k.clone())
        .collect();
    assert!(!stuck.is_empty(), "some requests reached the frozen Redis");
    for key in &stuck {
        let token = key.replacen("frz", "client", 1);
        loop {
            match post(addr, &token, key).await {
                Some(201) => break,
                Some(409 | 429 | 503) => {
                    assert!(
                        thawed_at.elapsed() < Duration::from_secs(13),
                        "{key} still locked {:?} after Redis thawed",
                        thawed_at.elapsed()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => panic!("{key}: {other:?}"),
            }
        }
    }
    drop(api);
}
