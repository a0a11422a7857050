//! Fault test on real processes: `orders-api --postgres` with its webhook dispatcher on
//! (`WEBHOOK_URL`) is killed with SIGKILL while it delivers the `order.created` webhooks of 300
//! orders to a receiver on loopback, restarted, and every key retried. Each order's event is
//! written in the order's own transaction, and the receiver deduplicates by event id, so: every
//! order has its event delivered at least once and processed exactly once, and no event exists
//! without its order.

mod common;

use axum::routing::post;
use axum::{Extension, Router};
use common::{free_addr, orders_api, post_order, wait_listening, Proc};
use idem_store_postgres::sqlx;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use webhook_sig::{ReplayGuard, Scheme, Secret, VerifiedWebhook, Verifier, WebhookLayer};

const ORDERS: usize = 300;

fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn start(addr: SocketAddr, db: &str, hook: &str) -> Proc {
    orders_api(
        addr,
        &["--postgres", db],
        &[
            ("IN_FLIGHT_PER_IP", "1000"),
            ("CAPACITY", "1000"),
            ("WEBHOOK_URL", hook),
            ("WEBHOOK_ALLOW", "127.0.0.0/8"),
            ("WEBHOOK_LEASE_SECS", "2"),
            ("WEBHOOK_TIMEOUT_SECS", "1"),
        ],
    )
}

async fn post_all(addr: SocketAddr, deadline: Duration) {
    let started = Instant::now();
    let mut pending: Vec<usize> = (0..ORDERS).collect();
    while !pending.is_empty() {
        assert!(
            started.elapsed() < deadline,
            "{} keys never got their 201",
            pending.len()
        );
        let mut still = Vec::new();
        for chunk in pending.chunks(25) {
            let answers = futures_util::future::join_all(chunk.iter().map(|&i| async move {
                post_order(addr, &format!("w-{i}"), &format!("wk-{i}")).await
            }))
            .await;
            for (&i, answer) in chunk.iter().zip(answers) {
                if answer != Some(201) {
                    still.push(i);
                }
            }
        }
        if !still.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pending = still;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_event_is_processed_exactly_once_across_a_kill_9() {
    let schema = format!("outbox_crash_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&url()).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {} ({e}); run `cargo xtask test`, which starts it",
            url()
        )
    });
    for ddl in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(ddl))
            .execute(&admin)
            .await
            .unwrap();
    }
    let sep = if url().contains('?') { '&' } else { '?' };
    let db = format!("{}{sep}options=-csearch_path%3D{schema}", url());

    // The merchant's receiver: verifies, deduplicates by event id, takes a few ms per event.
    let processed = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let arrived = Arc::new(AtomicU64::new(0));
    let (p, a) = (processed.clone(), arrived.clone());
    let secret = Secret::from_standard(examples::MERCHANT_WEBHOOK_SECRET).unwrap();
    let receiver = Router::new()
        .route(
            "/hooks",
            post(move |Extension(hook): Extension<VerifiedWebhook>| {
                let p = p.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    *p.lock().entry(hook.id.unwrap_or_default()).or_default() += 1;
                    "ok"
                }
            }),
        )
        .layer(
            WebhookLayer::new(Verifier::new(Scheme::StandardWebhooks, secret))
                .replay_guard(ReplayGuard::new(idem_core::MemoryStore::new())),
        )
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                a.fetch_add(1, Ordering::Relaxed);
                next.run(req)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let addr = free_addr();
    let server = start(addr, &db, &hook);
    wait_listening(addr).await;
    let posting = tokio::spawn(post_all(addr, Duration::from_secs(60)));
    // Kill once a third of the events were processed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while processed.lock().len() < ORDERS / 3 {
        assert!(Instant::now() < deadline, "no webhook was processed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(server); // SIGKILL
    let processed_at_kill = processed.lock().len();
    let _ = posting.await; // its keys are retried below either way

    let addr = free_addr();
    let _server = start(addr, &db, &hook);
    wait_listening(addr).await;
    let restarted = Instant::now();
    post_all(addr, Duration::from_secs(60)).await;

    let orders: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {schema}.orders"
    )))
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(orders.len(), ORDERS, "one order per key");
    let deadline = Instant::now() + Duration::from_secs(60);
    while processed.lock().len() < ORDERS {
        assert!(
            Instant::now() < deadline,
            "{} of {ORDERS} events processed after the restart",
            processed.lock().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let processed = processed.lock().clone();
    for (id,) in &orders {
        assert_eq!(processed.get(&format!("evt_{id}")), Some(&1), "order {id}");
    }
    assert_eq!(processed.len(), ORDERS, "no event without its order");
    // The receiver has processed everything; the outbox records each as delivered once the
    // dispatcher has settled its last answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (events, delivered) = loop {
        let (events, delivered): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), count(*) FILTER (WHERE state = 2) FROM {schema}.outbox_events WHERE topic = 'merchant'"
        )))
        .fetch_one(&admin)
        .await
        .unwrap();
        if delivered == ORDERS as i64 || Instant::now() > deadline {
            break (events, delivered);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let arrived = arrived.load(Ordering::Relaxed);
    eprintln!(
        "{processed_at_kill} events processed before the kill; {arrived} deliveries for {ORDERS} \
         events; all processed once {:?} after the restart",
        restarted.elapsed()
    );
    assert_eq!(events, ORDERS as i64, "one event per order");
    assert_eq!(
        delivered, ORDERS as i64,
        "every event recorded as delivered"
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}
