//! PostgresOutbox against the real PostgreSQL of `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`): transactional enqueue, disjoint concurrent claims, migrations beside the idempotency store's, and the crash
//! test — a dispatcher aborted mid-run, a new one started, every event delivered at least once
//! and processed exactly once by a receiver with a replay guard.
//!
//! Every test runs in a schema of its own, dropped at the end.

mod common;

use axum::routing::post;
use axum::{Extension, Router};
use common::loopback_sender;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use webhook_delivery::sqlx::{self, PgPool};
use webhook_delivery::{
    Dispatcher, Endpoint, EventState, Outbox, PostgresOutbox, TimeOffset, WebhookEvent,
    WebhookOutbox,
};
use webhook_sig::{ReplayGuard, Scheme, Secret, Signer, VerifiedWebhook, Verifier, WebhookLayer};

fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t_wd_{name}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

struct TestDb {
    outbox: PostgresOutbox,
    offset: TimeOffset,
    schema: String,
    url: String,
    admin: PgPool,
}

impl TestDb {
    async fn new(name: &str) -> Self {
        let admin = PgPool::connect(&url()).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {} ({e}); start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or run `cargo xtask test`, which starts it",
                url()
            )
        });
        let schema = unique(name);
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        let sep = if url().contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}options=-csearch_path%3D{schema}", url());
        let offset = TimeOffset::new();
        let outbox = PostgresOutbox::connect(&url)
            .await
            .unwrap()
            .with_time_offset(offset.clone());
        outbox.migrate().await.unwrap();
        Self {
            outbox,
            offset,
            schema,
            url,
            admin,
        }
    }

    async fn drop(self) {
        self.outbox.pool().close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.schema
        )))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn enqueue_commits_and_rolls_back_with_the_business_transaction() {
    let db = TestDb::new("tx").await;
    sqlx::query("CREATE TABLE orders (id text PRIMARY KEY)")
        .execute(db.outbox.pool())
        .await
        .unwrap();

    // Rolled back: neither the order nor its event.
    let mut tx = db.outbox.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO orders VALUES ('ord_1')")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert!(db
        .outbox
        .enqueue_in(
            &mut *tx,
            &WebhookEvent::new("hook", "evt_ord_1", "{}")
                .unwrap()
                .to_event()
                .unwrap()
        )
        .await
        .unwrap());
    tx.rollback().await.unwrap();
    assert!(db
        .outbox
        .webhook_status("hook", "evt_ord_1")
        .await
        .unwrap()
        .is_none());
    assert!(db
        .outbox
        .claim(10, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());

    // Before the commit no dispatcher sees it; after, one does.
    let mut tx = db.outbox.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO orders VALUES ('ord_2')")
        .execute(&mut *tx)
        .await
        .unwrap();
    db.outbox
        .enqueue_in(
            &mut *tx,
            &WebhookEvent::new("hook", "evt_ord_2", "{}")
                .unwrap()
                .to_event()
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(db
        .outbox
        .claim(10, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    tx.commit().await.unwrap();
    let claimed = db.outbox.claim(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event.id, "evt_ord_2");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimants_take_disjoint_events() {
    let db = TestDb::new("disjoint").await;
    for i in 0..300 {
        db.outbox
            .enqueue_webhook(&WebhookEvent::new("hook", format!("evt_{i}"), "{}").unwrap())
            .await
            .unwrap();
    }
    let seen = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (outbox, seen) = (db.outbox.clone(), seen.clone());
            tokio::spawn(async move {
                loop {
                    let got = outbox.claim(7, Duration::from_secs(600)).await.unwrap();
                    if got.is_empty() {
                        return;
                    }
                    for c in got {
                        *seen.lock().entry(c.event.id).or_default() += 1;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 300);
    assert!(
        seen.values().all(|n| *n == 1),
        "an event was claimed twice under one lease"
    );
    db.drop().await;
}

/// The outbox's migrations and the idempotency store's live in one schema, in either order and
/// at every start, because each records its own.
#[tokio::test]
async fn migrations_live_beside_the_idempotency_store() {
    let db = TestDb::new("migr").await;
    let store = idem_store_postgres::PostgresStore::connect(&db.url)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    db.outbox.migrate().await.unwrap();
    store.migrate().await.unwrap();
    db.outbox.migrate().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _outbox_migrations")
        .fetch_one(db.outbox.pool())
        .await
        .unwrap();
    assert_eq!(n, 3, "the outbox's three migrations, applied once each");
    store.pool().close().await;
    db.drop().await;
}

/// A receiver that verifies, deduplicates with a replay guard and counts what its handler
/// processed and what reached it.
struct Counting {
    url: String,
    processed: Arc<Mutex<HashMap<String, u32>>>,
    arrived: Arc<AtomicU64>,
}

async fn counting_receiver(secret: Secret) -> Counting {
    let processed = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let arrived = Arc::new(AtomicU64::new(0));
    let p = processed.clone();
    let handler = move |Extension(hook): Extension<VerifiedWebhook>| {
        let p = p.clone();
        async move {
            // Slow enough that an abort catches deliveries in flight.
            tokio::time::sleep(Duration::from_millis(2)).await;
            *p.lock().entry(hook.id.clone().unwrap()).or_default() += 1;
            "ok"
        }
    };
    let a = arrived.clone();
    let app = Router::new()
        .route("/hook", post(handler))
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
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Counting {
        url,
        processed,
        arrived,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_run_then_restart_delivers_every_event_and_each_is_processed_once() {
    const EVENTS: usize = 1_000;
    let db = TestDb::new("crash").await;
    let secret = Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let receiver = counting_receiver(secret.clone()).await;
    for i in 0..EVENTS {
        let payload = format!(r#"{{"type":"order.created","n":{i}}}"#);
        db.outbox
            .enqueue_webhook(&WebhookEvent::new("hook", format!("evt_{i:04}"), payload).unwrap())
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(30);
    let dispatcher = |outbox: PostgresOutbox| {
        Dispatcher::new(outbox, loopback_sender(Duration::from_secs(5)))
            .endpoint(
                Endpoint::new(
                    "hook",
                    &receiver.url,
                    Signer::new(Scheme::StandardWebhooks, &secret),
                )
                .unwrap(),
            )
            .workers(4)
            .batch(16)
            .lease(lease)
            .poll_interval(Duration::from_millis(20))
    };

    // The first dispatcher dies (its task is aborted) a third of the way through.
    let first = dispatcher(db.outbox.clone());
    let run = tokio::spawn(async move { first.run(std::future::pending()).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while receiver.processed.lock().len() < EVENTS / 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first dispatcher made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    run.abort();
    let _ = run.await;
    let at_crash = db.outbox.stats().await.unwrap();
    let processed_at_crash = receiver.processed.lock().len();
    assert!(
        at_crash.pending > 0,
        "the crash came after the end: {at_crash:?}"
    );

    // Its claims are due again once their lease has run out (moved forward, not waited for).
    db.offset.advance(lease);
    let second = dispatcher(db.outbox.clone());
    let run = tokio::spawn(async move { second.run(std::future::pending()).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let stats = db.outbox.stats().await.unwrap();
        if stats.published as usize == EVENTS {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every event was delivered: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.abort();

    let processed = receiver.processed.lock().clone();
    assert_eq!(processed.len(), EVENTS, "every event reached the handler");
    assert!(
        processed.values().all(|n| *n == 1),
        "an event was processed twice"
    );
    let arrived = receiver.arrived.load(Ordering::Relaxed);
    assert!(arrived >= EVENTS as u64);
    eprintln!(
        "crash test: {processed_at_crash} processed before the abort, {} pending then; \
         {arrived} deliveries arrived for {EVENTS} events ({} duplicates answered by the replay guard)",
        at_crash.pending,
        arrived - EVENTS as u64
    );
    for i in [0, EVENTS / 2, EVENTS - 1] {
        let status = db
            .outbox
            .webhook_status("hook", &format!("evt_{i:04}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.state, EventState::Delivered);
    }
    db.drop().await;
}
