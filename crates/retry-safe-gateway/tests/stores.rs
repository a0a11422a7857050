//! The gateway on the real stores: two gateways sharing one Redis (or one Redis Cluster, or one
//! PostgreSQL) act as one — a retry on the other gateway replays, a shared limit is one budget —
//! and `/readyz` follows the store.

mod common;

use common::*;
use std::time::Duration;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `config` on `store` (a TOML `[store]` body), with a shared limit of 3 per hour on `/limited`.
fn on_store(upstream: u16, dir: &std::path::Path, store: &str) -> String {
    let extra = "\n[[route]]\nmethods = [\"GET\"]\npath = \"/limited\"\nupstream = \"orders\"\nrate_limit = [{ key = \"global\", rate = 3, burst = 3, period = \"1h\", shared = true }]\n";
    let shared = if store.contains("postgres") {
        extra.replace(", shared = true", "")
    } else {
        extra.to_owned()
    };
    config(upstream, dir, &shared).replacen(
        "[shedding]",
        &format!("[store]\n{store}\n\n[shedding]"),
        1,
    )
}

fn post_keyed(gw: &Gateway, key: &str) -> Resp {
    let auth = format!("Bearer {DEMO_KEY}");
    gw.request(&post(
        "/orders",
        &[("Authorization", &auth), ("Idempotency-Key", key)],
        r#"{"item":"lamp"}"#,
    ))
}

/// Two gateways on one store: the retry on the second replays the first's answer, and the
/// shared limit admits 3 in all.
fn assert_one_fleet(store: &str, name: &str, shared_limit: bool) {
    let up = Upstream::start();
    let (da, db) = (scratch(&format!("{name}-a")), scratch(&format!("{name}-b")));
    let a = Gateway::start(&da, &on_store(up.port, &da, store));
    let b = Gateway::start(&db, &on_store(up.port, &db, store));
    let key = testkit::unique("gateway", name);
    let first = post_keyed(&a, &key);
    assert_eq!(first.status, 201, "{first:?}");
    let retried = post_keyed(&b, &key);
    assert_eq!(
        (retried.status, &retried.body),
        (201, &first.body),
        "the other gateway replays"
    );
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(up.stats()["orders_created"], 1);
    if shared_limit {
        let statuses: Vec<u16> = [&a, &b, &a, &b, &a]
            .iter()
            .map(|g| g.request(&get("/limited", &[])).status)
            .collect();
        assert_eq!(
            statuses,
            [404, 404, 404, 429, 429],
            "one budget of 3 for both gateways"
        );
    }
    for gw in [&a, &b] {
        assert_eq!(request(gw.admin.unwrap(), &get("/readyz", &[])).status, 200);
    }
}

#[test]
fn two_gateways_on_one_redis_are_one_fleet() {
    let prefix = testkit::unique("gw", "redis");
    assert_one_fleet(
        &format!(
            "kind = \"redis\"\nurl = \"{}\"\nprefix = \"{prefix}\"",
            testkit::redis_url()
        ),
        "redis",
        true,
    );
}

#[test]
fn two_gateways_on_one_redis_cluster_are_one_fleet() {
    let urls: Vec<String> = testkit::cluster_urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect();
    let prefix = testkit::unique("gw", "cluster");
    assert_one_fleet(
        &format!(
            "kind = \"redis-cluster\"\nurls = [{}]\nprefix = \"{prefix}\"",
            urls.join(", ")
        ),
        "cluster",
        true,
    );
}

#[test]
fn two_gateways_on_one_postgres_share_their_idempotency_records() {
    assert_one_fleet(
        &format!("kind = \"postgres\"\nurl = \"{}\"", database_url()),
        "postgres",
        false,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_503_while_the_redis_store_is_gone_and_requests_get_a_503_problem() {
    let mut redis = testkit::PrivateRedis::start().await;
    let up = Upstream::start();
    let dir = scratch("readyz");
    let cfg = on_store(
        up.port,
        &dir,
        &format!("kind = \"redis\"\nurl = \"{}\"", redis.url),
    );
    let gw = tokio::task::spawn_blocking(move || Gateway::start(&dir, &cfg))
        .await
        .unwrap();
    let admin = gw.admin.unwrap();
    let ready = move || request(admin, &get("/readyz", &[]));
    assert_eq!(
        tokio::task::spawn_blocking(ready).await.unwrap().status,
        200
    );
    redis.stop();
    let not_ready = tokio::task::spawn_blocking(ready).await.unwrap();
    not_ready.assert_problem(503, "not_ready");
    let port = gw.port;
    let refused = tokio::task::spawn_blocking(move || {
        let auth = format!("Bearer {DEMO_KEY}");
        request(
            port,
            &post(
                "/orders",
                &[("Authorization", &auth), ("Idempotency-Key", "k-down")],
                "{}",
            ),
        )
    })
    .await
    .unwrap();
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(up.stats()["orders_created"], 0, "nothing ran unprotected");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[test]
fn the_fleet_shedder_counts_both_gateways_and_keeps_its_reserve_for_critical_routes() {
    let up = Upstream::start();
    let prefix = testkit::unique("gw", "fleet-shed");
    let store = format!(
        "kind = \"redis\"\nurl = \"{}\"\nprefix = \"{prefix}\"",
        testkit::redis_url()
    );
    let critical = "\n[[route]]\nmethods = [\"GET\"]\npath = \"/stats\"\nupstream = \"orders\"\nclass = \"critical\"\n";
    let conf = |dir: &std::path::Path| {
        on_store(up.port, dir, &store).replacen(
            "capacity = 64",
            "capacity = 64\nfleet_capacity = 10",
            1,
        ) + critical
    };
    let (da, db) = (scratch("fleet-a"), scratch("fleet-b"));
    let a = Gateway::start(&da, &conf(&da));
    let b = Gateway::start(&db, &conf(&db));
    // Reads may fill 7 of the fleet's 10 slots: hold them all on gateway A.
    let port = a.port;
    let held: Vec<_> = (0..7)
        .map(|_| std::thread::spawn(move || request(port, &get("/slow?ms=1500", &[]))))
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    // Gateway B holds nothing itself, yet its read is shed: the fleet's read share is spent.
    b.request(&get("/slow?ms=1", &[]))
        .assert_problem(503, "overloaded");
    // The reserve above the reads' share still admits a critical route on B.
    assert_eq!(b.request(&get("/stats", &[])).status, 200);
    let held: Vec<u16> = held.into_iter().map(|h| h.join().unwrap().status).collect();
    assert_eq!(held, [200; 7], "the seven reads on A were admitted");
}
