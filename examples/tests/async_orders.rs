//! `202 Accepted` orders on `--postgres` with their events on NATS JetStream, as real
//! processes: `Prefer: respond-async` answers 202 with `Location: /jobs/{id}`; a retry, and
//! concurrent duplicates, get the same job; the job ends in `303 See Other` to its order; another
//! principal sees 404; every order's `OrderCreated` reaches the read model once — also after the
//! server is SIGKILLed with jobs queued and started again.

mod common;

use common::{free_addr, http, orders_api, pg_schema, wait_listening, Proc};
use idem_store_postgres::sqlx;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn start(addr: SocketAddr, db: &str, stream: &str, prefix: &str) -> Proc {
    orders_api(
        addr,
        &["--postgres", db, "--in-flight", "100", "--rate", "1000/s"],
        &[
            ("IN_FLIGHT_PER_IP", "1000"),
            ("CAPACITY", "1000"),
            ("NATS_URL", &nats_url()),
            ("EVENTS_STREAM", stream),
            ("EVENTS_SUBJECT_PREFIX", prefix),
            ("JOB_LEASE_SECS", "2"),
        ],
    )
}

fn async_post(token: &str, key: &str) -> String {
    let body = r#"{"sku":"tea","quantity":2}"#;
    format!(
        "POST /orders HTTP/1.1\r\nhost: t\r\nconnection: close\r\nauthorization: Bearer {token}\r\n\
         idempotency-key: {key}\r\nprefer: respond-async, wait=0\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn get(path: &str, token: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\nauthorization: Bearer {token}\r\n\r\n")
}

fn location(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("a location")
        .trim()
        .to_owned()
}

/// Polls `GET job` until it answers 303; the order's path.
async fn order_of(addr: SocketAddr, job: &str, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, head, body) = http(addr, &get(job, token)).await.unwrap();
        if status == 303 {
            return location(&head);
        }
        assert_eq!(status, 200, "{head}{body}");
        assert!(!body.contains("\"failed\""), "{body}");
        assert!(Instant::now() < deadline, "{job} not done: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn count(admin: &sqlx::PgPool, sql: String) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(admin)
        .await
        .unwrap()
}

/// Waits until the read model has counted `n` orders of tea.
async fn wait_read_model(admin: &sqlx::PgPool, schema: &str, n: i64) {
    let sql = format!("SELECT COALESCE(sum(orders), 0)::bigint FROM {schema}.order_counts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(admin, sql.clone()).await < n {
        assert!(
            Instant::now() < deadline,
            "the read model did not reach {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_orders_finish_once_and_reach_the_read_model_once_across_a_kill() {
    let (admin, schema, db) = pg_schema("async_orders").await;
    let stream = format!("T_ASYNC_{}", std::process::id());
    let prefix = format!("t{}.", std::process::id());
    let addr = free_addr();
    let server = start(addr, &db, &stream, &prefix);
    wait_listening(addr).await;

    let (status, head, first) = http(addr, &async_post("alice", "a-1")).await.unwrap();
    assert_eq!(status, 202, "{head}{first}");
    assert!(head.contains("preference-applied: respond-async"), "{head}");
    let job = location(&head);
    assert!(job.starts_with("/jobs/job_"), "{job}");
    let (status, head, again) = http(addr, &async_post("alice", "a-1")).await.unwrap();
    assert_eq!(
        (status, location(&head)),
        (202, job.clone()),
        "a retry: the same job"
    );
    assert!(head.contains("idempotent-replayed: true"), "{head}");
    assert_eq!(again, first);

    let dupes: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { http(addr, &async_post("bob", "b-1")).await }))
        .collect();
    let mut jobs = std::collections::BTreeSet::new();
    for d in dupes {
        let (status, head, _) = d.await.unwrap().unwrap();
        assert!(matches!(status, 202 | 409), "{head}");
        if status == 202 {
            jobs.insert(location(&head));
        }
    }
    assert_eq!(
        jobs.len(),
        1,
        "twenty concurrent duplicates, one job: {jobs:?}"
    );

    let order = order_of(addr, &job, "alice").await;
    let (status, _, body) = http(addr, &get(&order, "alice")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, head, body) = http(addr, &get(&job, "mallory")).await.unwrap();
    assert_eq!(status, 404, "another principal's job: {head}");
    assert!(
        head.contains("application/problem+json") && body.contains("job_not_found"),
        "{body}"
    );
    let bobs = jobs.into_iter().next().unwrap();
    order_of(addr, &bobs, "bob").await;

    // Twenty more, then a SIGKILL with jobs queued, then a new server on the same database.
    for i in 0..20 {
        let (status, ..) = http(addr, &async_post("carol", &format!("c-{i}")))
            .await
            .unwrap();
        assert_eq!(status, 202);
    }
    drop(server);
    let server = start(addr, &db, &stream, &prefix);
    wait_listening(addr).await;
    let done = format!("SELECT count(*) FROM {schema}.outbox_jobs WHERE state = 3");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&admin, done.clone()).await < 22 {
        assert!(Instant::now() < deadline, "jobs left after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let orders = count(&admin, format!("SELECT count(*) FROM {schema}.orders")).await;
    assert_eq!(orders, 22, "one order per job");
    let hooks = format!(
        "SELECT count(*) FROM {schema}.outbox_events WHERE topic = 'merchant' AND state = 1"
    );
    assert_eq!(
        count(&admin, hooks).await,
        22,
        "the relay leaves the webhooks to their dispatcher"
    );
    wait_read_model(&admin, &schema, 22).await;
    let counted = count(
        &admin,
        format!("SELECT sum(quantity)::bigint FROM {schema}.order_counts"),
    )
    .await;
    assert_eq!(counted, 44, "each OrderCreated counted once");
    let (status, _, report) = http(addr, &get("/reports/skus", "alice")).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        report.contains(r#""tea":{"orders":22,"quantity":44}"#),
        "{report}"
    );
    drop(server);

    let client = outbox::async_nats::connect(nats_url()).await.unwrap();
    let _ = outbox::async_nats::jetstream::new(client)
        .delete_stream(&stream)
        .await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}
