//! Fault test on real processes: the orders API on `--postgres` is killed with SIGKILL while 100
//! keyed POSTs are in flight, restarted, and every key retried. Orders are written in the
//! transaction that completes their idempotency record, so each key ends with exactly one order.

mod common;

use common::{
    free_addr, orders_api, pg_schema, post_order, wait_for_count, wait_listening as wait_ready,
    Proc,
};
use idem_store_postgres::sqlx;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn start(addr: SocketAddr, db: &str) -> Proc {
    orders_api(
        addr,
        &["--postgres", db],
        &[("IN_FLIGHT_PER_IP", "1000"), ("CAPACITY", "1000")],
    )
}

async fn post(addr: SocketAddr, i: usize) -> Option<u16> {
    post_order(addr, &format!("c-{i}"), &format!("k-{i}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_has_exactly_one_order_after_a_kill_9_and_retries() {
    let (admin, schema, db) = pg_schema("crash").await;

    let addr = free_addr();
    let server = start(addr, &db);
    wait_ready(addr).await;
    let in_flight: Vec<_> = (0..100).map(|i| tokio::spawn(post(addr, i))).collect();
    // Kill once some orders are committed and others are still being worked on.
    wait_for_count(&admin, &format!("SELECT count(*) FROM {schema}.orders"), 10).await;
    drop(server); // SIGKILL
    let mut answered = 0;
    for t in in_flight {
        answered += usize::from(t.await.unwrap() == Some(201));
    }

    let addr = free_addr();
    let _server = start(addr, &db);
    wait_ready(addr).await;
    let restarted = Instant::now();
    for i in 0..100 {
        loop {
            match post(addr, i).await {
                Some(201) => break,
                // The killed attempt's lease (10 s) may still hold the key.
                Some(409 | 503) | None if restarted.elapsed() < Duration::from_secs(15) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => panic!(
                    "key k-{i}: {other:?} {:?} after the restart",
                    restarted.elapsed()
                ),
            }
        }
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT owner, count(*) FROM {schema}.orders GROUP BY owner"
    )))
    .fetch_all(&admin)
    .await
    .unwrap();
    let (before,): (i64,) = (rows.len() as i64,);
    eprintln!(
        "{answered} of 100 answered before the kill; {before} owners after the retries, {:?} to settle",
        restarted.elapsed()
    );
    assert_eq!(rows.len(), 100, "every key has an order");
    assert!(
        rows.iter().all(|(_, n)| *n == 1),
        "a key with two orders: {rows:?}"
    );

    // The orders live in PostgreSQL: read one back and change it with the compare-and-set.
    let (id,): (String,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {schema}.orders ORDER BY id LIMIT 1"
    )))
    .fetch_one(&admin)
    .await
    .unwrap();
    let patch = |key: &str, tag: &str| {
        let body = r#"{"quantity":7}"#;
        format!(
            "PATCH /orders/{id} HTTP/1.1\r\nhost: t\r\nconnection: close\r\nidempotency-key: {key}\r\n\
             if-match: {tag}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(raw(addr, &patch("p-1", "\"1\"")).await.0, 200);
    let (status, head) = raw(addr, &patch("p-2", "\"1\"")).await;
    assert_eq!(status, 412, "a stale If-Match on the PostgreSQL row");
    assert!(head.contains("etag: \"2\""), "{head}");
    let (quantity, version): (i32, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT quantity, version FROM {schema}.orders WHERE id = '{id}'"
    )))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!((quantity, version), (7, 2));
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}

/// One raw request; the status and the lowercased head.
async fn raw(addr: SocketAddr, req: &str) -> (u16, String) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    (text[9..12].parse().unwrap_or(0), head)
}
