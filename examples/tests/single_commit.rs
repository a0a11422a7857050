//! The orders API on `--postgres --single-commit`, as real processes, in both places the record
//! can be written: one commit per order. Concurrent duplicates of one key make one order (record
//! first: they wait on the record's row lock and replay; record last: they lose the key at the
//! end, roll their order back and replay); after a SIGKILL with requests in flight no record is
//! left half-done, so every retry is answered at once — no lease to wait out — and every key
//! ends with exactly one order.

mod common;

use common::{
    free_addr, http, orders_api, pg_schema, post_order, request, wait_for_count, wait_listening,
    Proc,
};
use idem_store_postgres::sqlx;
use std::net::SocketAddr;

fn start(addr: SocketAddr, db: &str, mode: &str) -> Proc {
    orders_api(
        addr,
        &[
            "--postgres",
            db,
            mode,
            "--in-flight",
            "100",
            "--rate",
            "1000/s",
        ],
        &[("IN_FLIGHT_PER_IP", "1000"), ("CAPACITY", "1000")],
    )
}

async fn orders_of(admin: &sqlx::PgPool, schema: &str) -> Vec<(String, i64)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT owner, count(*) FROM {schema}.orders GROUP BY owner ORDER BY owner"
    )))
    .fetch_all(admin)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_first_duplicates_wait_and_replay_and_a_kill_leaves_nothing_to_wait_for() {
    one_order_per_key("single_first", "--single-commit=first").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_last_duplicates_roll_back_and_replay_and_a_kill_leaves_nothing_to_wait_for() {
    one_order_per_key("single_last", "--single-commit").await;
}

async fn one_order_per_key(name: &str, mode: &str) {
    let (admin, schema, db) = pg_schema(name).await;
    let addr = free_addr();
    let server = start(addr, &db, mode);
    wait_listening(addr).await;

    // One key, sequentially: created, replayed, mismatched.
    let body = r#"{"sku":"tea","quantity":1}"#;
    let (status, head, first) = http(addr, &request("POST", "/orders", "solo", Some("s-1"), body))
        .await
        .unwrap();
    assert_eq!(status, 201, "{head}");
    let (status, head, again) = http(addr, &request("POST", "/orders", "solo", Some("s-1"), body))
        .await
        .unwrap();
    assert_eq!(status, 201);
    assert!(head.contains("idempotent-replayed: true"), "{head}");
    assert_eq!(again, first, "the same body, byte for byte");
    let other = r#"{"sku":"tea","quantity":2}"#;
    let (status, _, problem) = http(
        addr,
        &request("POST", "/orders", "solo", Some("s-1"), other),
    )
    .await
    .unwrap();
    assert_eq!(status, 422, "{problem}");

    // Twenty concurrent duplicates of one key: one order; each answer is the order (created or
    // replayed after waiting for the winner's commit) — or, past the lock timeout, 409.
    let dupes: Vec<_> = (0..20)
        .map(|_| tokio::spawn(post_order(addr, "dupes", "d-1")))
        .collect();
    let mut answers = Vec::new();
    for d in dupes {
        answers.push(d.await.unwrap());
    }
    assert!(
        answers.iter().all(|a| matches!(a, Some(201 | 409))),
        "{answers:?}"
    );
    assert!(answers.contains(&Some(201)));

    // SIGKILL with 100 keys in flight, restart, retry each key at once.
    let in_flight: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(
                async move { post_order(addr, &format!("c-{i}"), &format!("k-{i}")).await },
            )
        })
        .collect();
    let count = format!("SELECT count(*) FROM {schema}.orders WHERE owner LIKE 'bearer:c-%'");
    wait_for_count(&admin, &count, 10).await;
    drop(server); // SIGKILL
    for t in in_flight {
        let _ = t.await.unwrap();
    }
    let addr = free_addr();
    let _server = start(addr, &db, mode);
    wait_listening(addr).await;
    for i in 0..100 {
        // No half-done record survives the kill: the first retry is answered (201, created now
        // or replayed), never 409 for a lease to run out.
        let answer = post_order(addr, &format!("c-{i}"), &format!("k-{i}")).await;
        assert_eq!(answer, Some(201), "key k-{i} right after the restart");
    }
    let rows = orders_of(&admin, &schema).await;
    let counted = |owner: &str| rows.iter().find(|(o, _)| o == owner).map(|(_, n)| *n);
    assert_eq!(counted("bearer:solo"), Some(1));
    assert_eq!(
        counted("bearer:dupes"),
        Some(1),
        "twenty duplicates, one order"
    );
    let crashed: Vec<_> = rows
        .iter()
        .filter(|(o, _)| o.starts_with("bearer:c-"))
        .collect();
    assert_eq!(crashed.len(), 100, "every key has an order");
    assert!(
        crashed.iter().all(|(_, n)| *n == 1),
        "a key with two orders: {crashed:?}"
    );
    let in_flight_records: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.idem_records WHERE state = 1"
    )))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(
        in_flight_records, 0,
        "single-commit leaves no record in flight"
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}
