//! Two real `orders-api --redis-cluster` processes on one Redis Cluster (`REDIS_CLUSTER_URLS`;
//! `cargo xtask test` starts a private one), as a fleet behind a balancer:
//! 1. one key retried against both servers makes one order;
//! 2. a client's burst spread over both is admitted exactly up to the fleet burst;
//! 3. while the fleet's non-critical share is full of slow reads on both servers, a critical
//!    payment capture is admitted on the fleet reserve.

mod common;

use common::{free_addr, http, orders_api, request, wait_listening, Proc};
use std::net::SocketAddr;

fn cluster_urls() -> String {
    testkit::cluster_urls().join(",")
}

fn start(addr: SocketAddr, prefix: &str) -> Proc {
    orders_api(
        addr,
        &[
            "--redis-cluster",
            &cluster_urls(),
            "--rate",
            "10/h",
            "--burst",
            "10",
            "--fleet-capacity",
            "10",
            "--capacity",
            "64",
        ],
        &[("REDIS_PREFIX", prefix), ("IN_FLIGHT_PER_IP", "1000")],
    )
}

async fn orders_on(addr: SocketAddr) -> usize {
    let (status, _, body) = http(addr, &request("GET", "/orders", "observer", None, ""))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Vec<serde_json::Value>>(&body)
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_cluster_act_as_one_fleet() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("fleet-test-{}-{nanos}", std::process::id());
    let (a, b) = (free_addr(), free_addr());
    let (_a, _b) = (start(a, &prefix), start(b, &prefix));
    wait_listening(a).await;
    wait_listening(b).await;
    let body = r#"{"sku":"tea","quantity":1}"#;

    // 1. One key, retried on the other server: the second answer is the first one, replayed.
    let (s1, _, first) = http(a, &request("POST", "/orders", "alice", Some("k-1"), body))
        .await
        .unwrap();
    let (s2, head2, second) = http(b, &request("POST", "/orders", "alice", Some("k-1"), body))
        .await
        .unwrap();
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first, second, "the replay is byte for byte");
    assert!(head2.contains("idempotent-replayed: true"), "{head2}");
    // And fired at both at once: one order, the other answers replays or 409 in flight.
    let racing: Vec<_> = (0..8)
        .map(|i| {
            let addr = if i % 2 == 0 { a } else { b };
            tokio::spawn(async move {
                http(
                    addr,
                    &request("POST", "/orders", "alice", Some("k-2"), body),
                )
                .await
            })
        })
        .collect();
    for r in racing {
        let (status, _, _) = r.await.unwrap().unwrap();
        assert!(matches!(status, 201 | 409), "{status}");
    }
    assert_eq!(
        orders_on(a).await + orders_on(b).await,
        2,
        "two keys, two orders in the whole fleet"
    );

    // 2. A burst of 30 from one client, alternating servers: exactly the fleet burst (10) passes.
    let mut allowed = 0;
    for i in 0..30 {
        let addr = if i % 2 == 0 { a } else { b };
        let (status, _, _) = http(addr, &request("GET", "/orders", "bob", None, ""))
            .await
            .unwrap();
        match status {
            200 => allowed += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(allowed, 10, "the fleet burst, not one per server");

    // 3. Seven slow reads (the fleet's read share of 10 slots) held on both servers, each by its
    // own client: an eighth read is shed by the fleet, a critical capture is admitted.
    let slow: Vec<_> = (0..7)
        .map(|i| {
            let addr = if i % 2 == 0 { a } else { b };
            tokio::spawn(async move {
                http(
                    addr,
                    &request(
                        "GET",
                        "/reports/slow?ms=2000",
                        &format!("reader-{i}"),
                        None,
                        "",
                    ),
                )
                .await
            })
        })
        .collect();
    // Until all seven hold their fleet slot (the fleet's lease set, `lsf:{<prefix>}`).
    let mut cluster = retry_safe_core::redis::RedisConnection::connect_cluster(
        cluster_urls().split(','),
        &Default::default(),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let held: u64 = idem_store_redis::redis::cmd("ZCARD")
            .arg(format!("lsf:{{{prefix}}}"))
            .query_async(&mut cluster)
            .await
            .unwrap();
        if held == 7 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slow reads hold {held} fleet slots"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (shed, _, shed_body) = http(
        b,
        &request("GET", "/reports/slow?ms=1", "reader-x", None, ""),
    )
    .await
    .unwrap();
    assert_eq!(shed, 503, "{shed_body}");
    assert!(shed_body.contains("fleet_capacity"), "{shed_body}");
    let (captured, _, cap_body) = http(
        a,
        &request("POST", "/payments/pi_1/capture", "carol", Some("cap-1"), ""),
    )
    .await
    .unwrap();
    assert_eq!(
        captured, 200,
        "critical traffic admitted on the fleet reserve: {cap_body}"
    );
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap().0, 200);
    }
}

/// Two real `orders-api --redis --lease 2` processes: the fleet rate limit in leased mode. Every
/// unit admitted was taken from the shared bucket first, so a burst of 40 spread over both
/// admits at most the fleet burst (12) — and at least the burst less what both may still hold
/// unused (2 × max_held = 6) — and each refusal is the 429 problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_leased_servers_admit_at_most_the_fleet_burst() {
    let prefix = testkit::unique("fleet-leased", "rl");
    let start = |addr| {
        orders_api(
            addr,
            &[
                "--redis",
                &testkit::redis_url(),
                "--lease",
                "2",
                "--rate",
                "10/h",
                "--burst",
                "12",
            ],
            &[
                ("REDIS_PREFIX", prefix.as_str()),
                ("IN_FLIGHT_PER_IP", "1000"),
            ],
        )
    };
    let (a, b) = (free_addr(), free_addr());
    let (_a, _b) = (start(a), start(b));
    wait_listening(a).await;
    wait_listening(b).await;
    let mut allowed = 0;
    for i in 0..40 {
        let addr = if i % 2 == 0 { a } else { b };
        let (status, head, body) = http(addr, &request("GET", "/orders", "carol", None, ""))
            .await
            .unwrap();
        match status {
            200 => allowed += 1,
            429 => {
                assert!(head.contains("application/problem+json"), "{head}");
                assert!(body.contains("rate_limited"), "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        (6..=12).contains(&allowed),
        "admitted {allowed} of 40: at most the fleet burst of 12"
    );
}

/// Two real `orders-api --postgres URL --redis URL` processes: the orders and their idempotency
/// records on PostgreSQL, the fleet rate limit on Redis. A key retried on the other server
/// replays the one order, and a burst spread over both is admitted exactly up to the fleet burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_on_postgres_share_the_fleet_rate_limit_on_redis() {
    let (admin, schema, db) = common::pg_schema("fleet_pg_redis").await;
    let prefix = testkit::unique("fleet-pg-redis", "rl");
    let start = |addr| {
        let args = ["--postgres", &db, "--redis", &testkit::redis_url()];
        let limits = ["--rate", "10/h", "--burst", "12"];
        orders_api(
            addr,
            &[&args[..], &limits[..]].concat(),
            &[
                ("REDIS_PREFIX", prefix.as_str()),
                ("IN_FLIGHT_PER_IP", "1000"),
            ],
        )
    };
    let (a, b) = (free_addr(), free_addr());
    let _a = start(a);
    wait_listening(a).await; // the first one runs the migrations
    let _b = start(b);
    wait_listening(b).await;
    let body = r#"{"sku":"tea","quantity":1}"#;
    let (s1, _, first) = http(a, &request("POST", "/orders", "dave", Some("k-1"), body))
        .await
        .unwrap();
    let (s2, _, second) = http(b, &request("POST", "/orders", "dave", Some("k-1"), body))
        .await
        .unwrap();
    assert_eq!((s1, s2), (201, 201), "{first} / {second}");
    assert_eq!(first, second, "the replay from the other server");
    common::wait_for_count(&admin, &format!("SELECT count(*) FROM {schema}.orders"), 1).await;
    let mut allowed = 2; // the two POSTs took two units of dave's burst
    for i in 0..30 {
        let addr = if i % 2 == 0 { a } else { b };
        let (status, _, body) = http(addr, &request("GET", "/orders", "dave", None, ""))
            .await
            .unwrap();
        match status {
            200 => allowed += 1,
            429 => assert!(body.contains("rate_limited"), "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(allowed, 12, "the fleet burst, across both servers");
}
