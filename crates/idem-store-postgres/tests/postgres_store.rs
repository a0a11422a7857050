//! PostgresStore against the real PostgreSQL of `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! Every test runs in a schema of its own (created here, dropped at the end), with its own
//! `application_name`, so tests run in parallel without meeting.

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use idem_core::conformance::{self, Harness};
use idem_core::BackendError;
use idem_core::{
    handler_completed, BeginOutcome, DecodeError, Fingerprint, IdempotencyAttempt, IdempotencyKey,
    IdempotencyLayer, IdempotencyPolicy, IdempotencyStore, StoreError, StoredResponse, TimeOffset,
};
use idem_store_postgres::sqlx::{self, postgres::PgConnectOptions, Row};
use idem_store_postgres::PostgresStore;
use proptest::prelude::*;
use std::collections::HashMap;
use std::convert::Infallible;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::{Layer, ServiceExt};

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
        "t_{}_{}_{nanos}_{}",
        name.replace('-', "_"),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn unreachable_help(e: impl std::fmt::Display) -> String {
    format!(
        "PostgreSQL is not reachable at {} ({e}); start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or run `cargo xtask test`, which starts it",
        url()
    )
}

/// A store in a fresh, migrated schema of its own.
struct TestDb {
    store: PostgresStore,
    schema: String,
    app: String,
    admin: sqlx::PgPool,
}

impl TestDb {
    async fn new(name: &str) -> Self {
        let schema = unique(name);
        let admin = sqlx::PgPool::connect(&url())
            .await
            .unwrap_or_else(|e| panic!("{}", unreachable_help(e)));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        let options = PgConnectOptions::from_str(&url())
            .unwrap()
            .options([("search_path", schema.as_str())])
            .application_name(&schema);
        let store = PostgresStore::connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("{}", unreachable_help(e)));
        store.migrate().await.unwrap();
        Self {
            store,
            app: schema.clone(),
            schema,
            admin,
        }
    }

    /// Terminates every backend of this test's store.
    async fn terminate_backends(&self) -> i64 {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&self.app)
        .fetch_one(&self.admin)
        .await
        .unwrap()
    }

    async fn drop(self) {
        self.store.pool().close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.schema
        )))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}

struct PgHarness {
    db: TestDb,
    store: Arc<PostgresStore>,
    offset: TimeOffset,
}

impl PgHarness {
    async fn new(name: &str) -> Self {
        let db = TestDb::new(name).await;
        let offset = TimeOffset::new();
        let store = Arc::new(db.store.clone().time_offset(offset.clone()));
        Self { db, store, offset }
    }

    async fn pinned(name: &str) -> Self {
        let h = Self::new(name).await;
        let now: i64 =
            sqlx::query_scalar("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint")
                .fetch_one(&h.db.admin)
                .await
                .unwrap();
        h.offset.pin(Duration::from_micros(now as u64));
        h
    }
}

#[async_trait]
impl Harness for PgHarness {
    type Store = PostgresStore;
    fn store(&self) -> Arc<PostgresStore> {
        self.store.clone()
    }
    async fn advance(&self, by: Duration) {
        self.offset.advance(by);
    }
    fn scope(&self, name: &str) -> String {
        name.to_owned()
    }
    fn tolerance(&self) -> Duration {
        Duration::from_millis(500)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_on_database_time() {
    let h = PgHarness::new("conformance").await;
    conformance::run_all(&h).await;
    h.db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_on_pinned_time() {
    let h = PgHarness::pinned("conformance_pinned").await;
    conformance::run_all(&h).await;
    h.db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_begins_have_one_winner() {
    let h = PgHarness::new("race").await;
    conformance::concurrent_begin_one_winner(&h, 100).await;
    h.db.drop().await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(32)
    ))]
    #[test]
    fn agrees_with_the_reference_model(ops in conformance::ops(40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let verdict = rt.block_on(async {
            let h = PgHarness::pinned("model").await;
            let verdict = conformance::check_model(&h, "model", &ops).await;
            h.db.drop().await;
            verdict
        });
        prop_assert!(verdict.is_ok(), "{}", verdict.unwrap_err());
    }
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s.as_bytes()).unwrap()
}

fn fp() -> Fingerprint {
    Fingerprint::of_request("POST", "/orders", b"{}")
}

async fn acquire(s: &PostgresStore, k: &IdempotencyKey) -> idem_core::Fence {
    match s
        .begin("s", k, &fp(), Duration::from_secs(30))
        .await
        .unwrap()
    {
        BeginOutcome::Acquired { fence } => fence,
        other => panic!("{other:?}"),
    }
}

fn ok_response() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![(
            "content-type".into(),
            Bytes::from_static(b"application/json"),
        )],
        body: Bytes::from_static(b"{\"id\":1}"),
        trailers: Vec::new(),
    }
}

#[tokio::test]
async fn rows_hold_the_documented_columns() {
    let db = TestDb::new("columns").await;
    let k = key("order-1");
    let fence = acquire(&db.store, &k).await;
    db.store
        .complete("s", &k, fence, &ok_response(), Duration::from_secs(3600))
        .await
        .unwrap();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT state, fence, response_status, response_header_names, response_body,
                EXTRACT(EPOCH FROM expires_at - created_at)::bigint AS kept
         FROM {}.idem_records WHERE scope = 's' AND key = 'order-1'",
        db.schema
    )))
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(row.get::<i16, _>("state"), 2);
    assert_eq!(row.get::<i64, _>("fence") as u64, fence.0);
    assert_eq!(row.get::<Option<i16>, _>("response_status"), Some(201));
    assert_eq!(
        row.get::<Option<Vec<String>>, _>("response_header_names"),
        Some(vec!["content-type".to_owned()])
    );
    assert_eq!(
        row.get::<Option<Vec<u8>>, _>("response_body").as_deref(),
        Some(&b"{\"id\":1}"[..])
    );
    let kept = row.get::<i64, _>("kept");
    assert!((3599..=3601).contains(&kept), "kept {kept}");
    db.drop().await;
}

#[tokio::test]
async fn a_newer_schema_or_a_corrupted_row_is_a_typed_error() {
    let db = TestDb::new("corrupt").await;
    let s = &db.store;
    for k in ["newer", "no-status", "bad-headers", "bad-status"] {
        let fence = acquire(s, &key(k)).await;
        s.complete("s", &key(k), fence, &ok_response(), Duration::from_secs(60))
            .await
            .unwrap();
    }
    let table = format!("{}.idem_records", db.schema);
    for stmt in [
        format!("UPDATE {table} SET version = 2 WHERE key = 'newer'"),
        format!("UPDATE {table} SET response_status = NULL WHERE key = 'no-status'"),
        format!("UPDATE {table} SET response_header_values = '{{}}' WHERE key = 'bad-headers'"),
        format!("UPDATE {table} SET response_status = 42 WHERE key = 'bad-status'"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(stmt))
            .execute(&db.admin)
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(30);
    assert!(matches!(
        s.begin("s", &key("newer"), &fp(), lease).await,
        Err(ref e) if matches!(e.decode_error(), Some(DecodeError::UnknownVersion(2)))
    ));
    for k in ["no-status", "bad-headers", "bad-status"] {
        assert!(
            matches!(
                s.begin("s", &key(k), &fp(), lease).await,
                Err(ref e) if matches!(e.decode_error(), Some(DecodeError::Malformed(_)))
            ),
            "{k}"
        );
    }
    db.drop().await;
}

/// Single-commit mode: `begin_in` inside a transaction shows nothing to others until the
/// commit; a concurrent `begin_in` of the key waits on the row lock — past the lock timeout it is
/// `InFlight`, after the commit it replays, after a rollback it acquires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_commit_begins_in_the_transaction_and_duplicates_wait_for_it() {
    let db = TestDb::new("single").await;
    let store = db.store.clone().lock_timeout(Duration::from_millis(200));
    let lease = Duration::from_secs(30);
    let pending =
        |k: &str| idem_core::PendingAttempt::new("s", key(k), fp(), lease, Duration::from_secs(60));
    let stored = ok_response();

    // Committed: one transaction, one record born completed.
    let p = pending("commit");
    let mut a = store.pool().begin().await.unwrap();
    let BeginOutcome::Acquired { fence } = store.begin_in(&mut a, &p).await.unwrap() else {
        panic!("a new key is acquired");
    };
    // Uncommitted: another transaction waits on the row lock, then gives up (409).
    let mut b = store.pool().begin().await.unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(
        store.begin_in(&mut b, &p).await.unwrap(),
        BeginOutcome::InFlight { .. }
    ));
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "it waited for the lock"
    );
    b.rollback().await.unwrap();
    // Nor does a plain `begin` see it yet: it waits too (here on the pool, bounded by the
    // spawned commit below), then replays.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.begin("s", &key("commit"), &fp(), lease).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "a duplicate waits for the commit");
    store
        .complete_in(&mut a, &p.acquired(fence), &stored, p.retention)
        .await
        .unwrap();
    a.commit().await.unwrap();
    assert_eq!(
        waiter.await.unwrap().unwrap(),
        BeginOutcome::Completed(stored.clone())
    );
    let mut c = store.pool().begin().await.unwrap();
    assert_eq!(
        store.begin_in(&mut c, &p).await.unwrap(),
        BeginOutcome::Completed(stored.clone())
    );
    let answered: http::Response<Bytes> =
        p.answer(&BeginOutcome::Completed(stored.clone())).unwrap();
    assert_eq!(answered.headers()["idempotent-replayed"], "true");
    c.rollback().await.unwrap();

    // Rolled back: no record left, the next attempt acquires at once.
    let p = pending("rollback");
    let mut a = store.pool().begin().await.unwrap();
    assert!(matches!(
        store.begin_in(&mut a, &p).await.unwrap(),
        BeginOutcome::Acquired { .. }
    ));
    let waiter = {
        let store = store.clone();
        let p = p.clone();
        tokio::spawn(async move {
            let mut b = store.pool().begin().await.unwrap();
            let outcome = store.begin_in(&mut b, &p).await;
            b.rollback().await.unwrap();
            outcome
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.rollback().await.unwrap();
    assert!(matches!(
        waiter.await.unwrap().unwrap(),
        BeginOutcome::Acquired { .. }
    ));
    let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}.idem_records WHERE key = 'rollback'",
        db.schema
    )))
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(rows, 0, "nothing of a rolled-back attempt remains");

    // Another body with a committed key: the mismatch.
    let other = idem_core::PendingAttempt::new(
        "s",
        key("commit"),
        Fingerprint::of_request("POST", "/orders", b"other"),
        lease,
        Duration::from_secs(60),
    );
    let mut d = store.pool().begin().await.unwrap();
    let outcome = store.begin_in(&mut d, &other).await.unwrap();
    assert_eq!(outcome, BeginOutcome::Mismatch);
    let res: http::Response<Bytes> = other.answer(&outcome).unwrap();
    assert_eq!(res.status(), 422);
    // Open transactions would hold the schema's locks and block dropping it.
    d.rollback().await.unwrap();
    db.drop().await;
}

/// Trailers (a gRPC answer's `grpc-status`) are kept; a row written before the trailer columns
/// existed (NULL there) replays with none; mismatched trailer arrays are a typed error.
#[tokio::test]
async fn trailers_are_kept_and_rows_from_before_them_still_replay() {
    let db = TestDb::new("trailers").await;
    let s = &db.store;
    let mut grpc = ok_response();
    grpc.trailers = vec![
        ("grpc-status".into(), "0".into()),
        ("x-order-id".into(), "ord_1".into()),
    ];
    for k in ["with", "before", "bad-trailers"] {
        let fence = acquire(s, &key(k)).await;
        s.complete("s", &key(k), fence, &grpc, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(30);
    assert_eq!(
        s.begin("s", &key("with"), &fp(), lease).await.unwrap(),
        BeginOutcome::Completed(grpc.clone())
    );
    let table = format!("{}.idem_records", db.schema);
    for stmt in [
        format!("UPDATE {table} SET response_trailer_names = NULL, response_trailer_values = NULL WHERE key = 'before'"),
        format!("UPDATE {table} SET response_trailer_values = '{{}}' WHERE key = 'bad-trailers'"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(stmt))
            .execute(&db.admin)
            .await
            .unwrap();
    }
    let mut old = grpc.clone();
    old.trailers.clear();
    assert_eq!(
        s.begin("s", &key("before"), &fp(), lease).await.unwrap(),
        BeginOutcome::Completed(old)
    );
    assert!(matches!(
        s.begin("s", &key("bad-trailers"), &fp(), lease).await,
        Err(ref e) if matches!(e.decode_error(), Some(DecodeError::Malformed(_)))
    ));
    db.drop().await;
}

#[tokio::test]
async fn purge_deletes_dead_rows_in_batches_and_keeps_live_ones() {
    let h = PgHarness::new("purge").await;
    let table = format!("{}.idem_records", h.db.schema);
    // 2,500 dead rows (more than two batches) and one live row.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (scope, key, fingerprint, state, fence, expires_at, created_at)
         SELECT 'bulk', 'k' || g, '\\x00', 1, g, clock_timestamp() + interval '1 second', clock_timestamp()
         FROM generate_series(1, 2500) g"
    )))
    .execute(&h.db.admin)
    .await
    .unwrap();
    let live = acquire(&h.store, &key("live")).await;
    h.offset.advance(Duration::from_secs(2));
    assert_eq!(h.store.purge_expired().await.unwrap(), 2500);
    let left: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&h.db.admin)
            .await
            .unwrap();
    assert_eq!(left, 1);
    h.store
        .complete(
            "s",
            &key("live"),
            live,
            &ok_response(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    h.db.drop().await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_typed_error() {
    let err = PostgresStore::connect("postgres://postgres@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("could not connect"));
    assert!(PostgresStore::connect("mysql://nope").await.is_err());
}

// ---- the layer over PostgreSQL ----

#[derive(Clone, Default)]
struct Runs(Arc<parking_lot::Mutex<HashMap<String, u32>>>);

impl Runs {
    fn record(&self, k: &str) -> u32 {
        let mut runs = self.0.lock();
        let n = runs.entry(k.to_owned()).or_default();
        *n += 1;
        *n
    }
    fn of(&self, k: &str) -> u32 {
        self.0.lock().get(k).copied().unwrap_or(0)
    }
}

fn post(k: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post("/orders")
        .header("idempotency-key", k)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn orders(
    runs: Runs,
    delay: Duration,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        let runs = runs.clone();
        async move {
            let k = req.headers()["idempotency-key"]
                .to_str()
                .unwrap()
                .to_owned();
            let n = runs.record(&k);
            tokio::time::sleep(delay).await;
            let mut res = Response::new(Full::new(Bytes::from(format!("order {k} run {n}"))));
            *res.status_mut() = StatusCode::CREATED;
            Ok(res)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_clients_with_one_key_execute_once() {
    let db = TestDb::new("hundred").await;
    let runs = Runs::default();
    let svc = IdempotencyLayer::new(
        db.store.clone(),
        IdempotencyPolicy::default()
            .require_key(true)
            .wait_for_result(Some(Duration::from_secs(5))),
    )
    .layer(orders(runs.clone(), Duration::from_millis(100)));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let res = svc.oneshot(post("k-100", "{}")).await.unwrap();
                let status = res.status();
                (status, res.into_body().collect().await.unwrap().to_bytes())
            })
        })
        .collect();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body, "order k-100 run 1");
    }
    assert_eq!(runs.of("k-100"), 1);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_backend_fails_closed_and_no_key_runs_twice() {
    let db = TestDb::new("terminate").await;
    let runs = Runs::default();
    let svc = IdempotencyLayer::new(
        db.store.clone(),
        IdempotencyPolicy::default().require_key(true),
    )
    .layer(orders(runs.clone(), Duration::ZERO));
    assert_eq!(
        svc.clone()
            .oneshot(post("k-1", "{}"))
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    // The pool's connection is terminated between requests: the next request fails closed.
    assert!(db.terminate_backends().await >= 1);
    let during = svc.clone().oneshot(post("k-2", "{}")).await.unwrap();
    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(during.headers()["content-type"], "application/problem+json");
    assert_eq!(runs.of("k-2"), 0, "a refused request must not run");
    // Afterwards every key, retried, is served once.
    for k in ["k-1", "k-2", "k-3"] {
        let mut status = StatusCode::SERVICE_UNAVAILABLE;
        for _ in 0..20 {
            status = svc.clone().oneshot(post(k, "{}")).await.unwrap().status();
            if status != StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, StatusCode::CREATED, "{k}");
        assert_eq!(runs.of(k), 1, "{k} ran {} times", runs.of(k));
    }
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_while_the_handler_runs_still_stores_the_result() {
    let db = TestDb::new("terminate_mid").await;
    let runs = Runs::default();
    let db = Arc::new(db);
    let (killer, counted) = (db.clone(), runs.clone());
    let svc = IdempotencyLayer::new(
        db.store.clone(),
        IdempotencyPolicy::default().require_key(true),
    )
    .layer(tower::service_fn(move |req: Request<Full<Bytes>>| {
        let (killer, counted) = (killer.clone(), counted.clone());
        async move {
            counted.record(req.headers()["idempotency-key"].to_str().unwrap());
            killer.terminate_backends().await;
            let mut res = Response::new(Full::new(Bytes::from_static(b"charged")));
            *res.status_mut() = StatusCode::CREATED;
            Ok::<_, Infallible>(res)
        }
    }));
    assert_eq!(
        svc.clone()
            .oneshot(post("pay-1", "{}"))
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    let retry = svc.clone().oneshot(post("pay-1", "{}")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(runs.of("pay-1"), 1);
    drop(svc);
    Arc::try_unwrap(db).ok().unwrap().drop().await;
}

// ---- the transactional mode ----

async fn orders_table(db: &TestDb) {
    sqlx::query("CREATE TABLE orders (id bigserial PRIMARY KEY, idem_key text NOT NULL)")
        .execute(db.store.pool())
        .await
        .unwrap();
}

async fn order_rows(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(db.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn transactional_completion_commits_or_rolls_back_with_the_business_write() {
    let db = TestDb::new("tx").await;
    orders_table(&db).await;
    let s = &db.store;
    let k = key("tx-1");
    let attempt = IdempotencyAttempt {
        scope: "s".into(),
        key: k.clone(),
        fence: acquire(s, &k).await,
    };

    // The handler inserts, completes the record in the same transaction, then fails: rollback.
    let mut tx = s.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO orders (idem_key) VALUES ('tx-1')")
        .execute(&mut *tx)
        .await
        .unwrap();
    s.complete_in(&mut tx, &attempt, &ok_response(), Duration::from_secs(60))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(order_rows(&db).await, 0, "the order row was rolled back");
    assert!(
        matches!(
            s.begin("s", &k, &fp(), Duration::from_secs(30))
                .await
                .unwrap(),
            BeginOutcome::InFlight { .. }
        ),
        "the record is not completed"
    );

    // The same attempt again, committed: both appear.
    let mut tx = s.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO orders (idem_key) VALUES ('tx-1')")
        .execute(&mut *tx)
        .await
        .unwrap();
    s.complete_in(&mut tx, &attempt, &ok_response(), Duration::from_secs(60))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(order_rows(&db).await, 1);
    assert_eq!(
        s.begin("s", &k, &fp(), Duration::from_secs(30))
            .await
            .unwrap(),
        BeginOutcome::Completed(ok_response())
    );

    // A stale attempt cannot complete inside a transaction either.
    let mut tx = s.pool().begin().await.unwrap();
    assert!(matches!(
        s.complete_in(&mut tx, &attempt, &ok_response(), Duration::from_secs(60))
            .await,
        Err(StoreError::StaleFence { .. })
    ));
    tx.rollback().await.unwrap();
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_with_a_transactional_handler_runs_it_once_or_not_at_all() {
    let db = Arc::new(TestDb::new("tx_layer").await);
    orders_table(&db).await;
    let handler_db = db.clone();
    let svc = IdempotencyLayer::new(
        db.store.clone(),
        IdempotencyPolicy::default().require_key(true),
    )
    .layer(tower::service_fn(move |req: Request<Full<Bytes>>| {
        let db = handler_db.clone();
        async move {
            let attempt = req
                .extensions()
                .get::<IdempotencyAttempt>()
                .cloned()
                .unwrap();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let store = &db.store;
            let mut tx = store.pool().begin().await.unwrap();
            sqlx::query("INSERT INTO orders (idem_key) VALUES ($1)")
                .bind(attempt.key.as_str())
                .execute(&mut *tx)
                .await
                .unwrap();
            if body.as_ref() == b"fail" {
                // An error after the INSERT: the transaction rolls back (dropped), 500.
                drop(tx);
                let mut res = Response::new(Full::new(Bytes::from_static(b"failed")));
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return Ok::<_, Infallible>(res);
            }
            let stored = StoredResponse {
                status: 201,
                headers: vec![],
                body: Bytes::from(format!("order for {}", attempt.key)),
                trailers: Vec::new(),
            };
            store
                .complete_in(&mut tx, &attempt, &stored, Duration::from_secs(3600))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            Ok(handler_completed(&stored))
        }
    }));

    let failed = svc.clone().oneshot(post("o-1", "fail")).await.unwrap();
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(order_rows(&db).await, 0, "neither the row ...");
    // ... nor a completed record: the key was released and the retry runs.
    let ok = svc.clone().oneshot(post("o-1", "ok")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    assert_eq!(order_rows(&db).await, 1);
    let replay = svc.clone().oneshot(post("o-1", "ok")).await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(
        replay.into_body().collect().await.unwrap().to_bytes(),
        "order for o-1"
    );
    assert_eq!(order_rows(&db).await, 1);
    drop(svc);
    Arc::try_unwrap(db).ok().unwrap().drop().await;
}

/// Defect 6: with the database unreachable every `begin` waited for a connection. After three
/// unreachable calls the breaker refuses at once.
#[tokio::test]
async fn begin_fails_fast_while_the_database_is_known_down() {
    let options = PgConnectOptions::from_str("postgres://postgres@127.0.0.1:9/test").unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(200))
        .connect_lazy_with(options);
    let store = PostgresStore::with_pool(pool);
    let key = IdempotencyKey::parse(b"k").unwrap();
    let fp = Fingerprint::of_request("POST", "/", b"");
    for _ in 0..3 {
        assert!(matches!(
            store.begin("t", &key, &fp, Duration::from_secs(5)).await,
            Err(StoreError::Backend(BackendError::Unavailable(_)))
        ));
    }
    let started = std::time::Instant::now();
    for _ in 0..100 {
        match store.begin("t", &key, &fp, Duration::from_secs(5)).await {
            Err(StoreError::Backend(BackendError::Unavailable(e))) => {
                assert!(e.to_string().contains("circuit breaker open"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
}

/// Single-commit mode on a key that already has a record takes the full statement after the
/// fresh-key insert found the conflict: an abandoned attempt whose lease ran out is taken over
/// (with a newer fence, so the abandoned one can no longer complete), a live in-flight record is
/// `InFlight` at once (it is committed: nothing to wait for).
#[tokio::test]
async fn single_commit_takes_over_an_expired_record_and_reports_a_live_one() {
    let h = PgHarness::pinned("single_takeover").await;
    let store = h.store.clone();
    let lease = Duration::from_secs(30);
    let BeginOutcome::Acquired { fence: abandoned } =
        store.begin("s", &key("k"), &fp(), lease).await.unwrap()
    else {
        panic!("a new key is acquired");
    };
    let p = idem_core::PendingAttempt::new("s", key("k"), fp(), lease, Duration::from_secs(60));
    let mut tx = store.pool().begin().await.unwrap();
    assert!(matches!(
        store.begin_in(&mut tx, &p).await.unwrap(),
        BeginOutcome::InFlight { .. }
    ));
    tx.rollback().await.unwrap();

    h.offset.advance(lease + Duration::from_secs(1));
    let mut tx = store.pool().begin().await.unwrap();
    let BeginOutcome::Acquired { fence } = store.begin_in(&mut tx, &p).await.unwrap() else {
        panic!("an expired record is taken over");
    };
    assert!(fence.0 > abandoned.0, "the takeover has a newer fence");
    store
        .complete_in(&mut tx, &p.acquired(fence), &ok_response(), p.retention)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(
        store
            .complete("s", &key("k"), abandoned, &ok_response(), p.retention)
            .await,
        Err(StoreError::StaleFence { .. })
    ));
    assert_eq!(
        store.begin("s", &key("k"), &fp(), lease).await.unwrap(),
        BeginOutcome::Completed(ok_response())
    );
    h.db.drop().await;
}

/// The handler's business write for the record-last tests: one row in `items` per attempt.
async fn write_item(db: &TestDb, tx: &mut sqlx::PgConnection, key: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {}.items (key) VALUES ($1)",
        db.schema
    )))
    .bind(key)
    .execute(tx)
    .await
    .unwrap();
}

async fn items(db: &TestDb, key: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}.items WHERE key = $1",
        db.schema
    )))
    .bind(key)
    .fetch_one(&db.admin)
    .await
    .unwrap()
}

async fn with_items(name: &str) -> TestDb {
    let db = TestDb::new(name).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {}.items (key text NOT NULL)",
        db.schema
    )))
    .execute(&db.admin)
    .await
    .unwrap();
    db
}

/// Single-commit mode, record last: the writes and the record commit together; a concurrent
/// attempt of the key waits for that commit, loses, rolls back (its write vanishes) and replays
/// the winner; a rolled-back winner leaves the key free for the waiter; another body is `422`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_last_commits_once_and_a_concurrent_attempt_rolls_back_and_replays() {
    let db = with_items("record_last").await;
    let store = db.store.clone();
    let pending = |k: &str, body: &[u8]| {
        idem_core::PendingAttempt::new(
            "s",
            key(k),
            Fingerprint::of_request("POST", "/orders", body),
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
    };
    let stored = ok_response();
    let p = pending("k", b"{}");

    let mut a = store.pool().begin().await.unwrap();
    write_item(&db, &mut a, "k").await;
    assert_eq!(
        store.record_in(&mut a, &p, &stored).await.unwrap(),
        idem_store_postgres::Recorded::Won
    );
    let loser = {
        let (store, p) = (store.clone(), p.clone());
        let other = StoredResponse {
            body: Bytes::from_static(b"the loser's answer"),
            ..ok_response()
        };
        let schema = db.schema.clone();
        tokio::spawn(async move {
            let mut b = store.pool().begin().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {schema}.items (key) VALUES ('k')"
            )))
            .execute(&mut *b)
            .await
            .unwrap();
            let outcome = store.record_in(&mut b, &p, &other).await.unwrap();
            b.rollback().await.unwrap();
            outcome
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !loser.is_finished(),
        "the duplicate waits for the winner's commit"
    );
    a.commit().await.unwrap();
    let idem_store_postgres::Recorded::Lost(outcome) = loser.await.unwrap() else {
        panic!("the duplicate loses");
    };
    assert_eq!(outcome, BeginOutcome::Completed(stored.clone()));
    let replay: Response<Bytes> = p.answer(&outcome).unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(items(&db, "k").await, 1, "the loser's write rolled back");

    // An earlier answer under the key: a retry loses at once, another body is 422.
    let mut c = store.pool().begin().await.unwrap();
    let lost = store
        .record_in(&mut c, &pending("k", b"other"), &stored)
        .await;
    assert_eq!(
        lost.unwrap(),
        idem_store_postgres::Recorded::Lost(BeginOutcome::Mismatch)
    );
    c.rollback().await.unwrap();

    // A winner that rolls back leaves the key free: the waiting attempt wins.
    let p = pending("free", b"{}");
    let mut a = store.pool().begin().await.unwrap();
    assert_eq!(
        store.record_in(&mut a, &p, &stored).await.unwrap(),
        idem_store_postgres::Recorded::Won
    );
    let waiter = {
        let (store, p, stored) = (store.clone(), p.clone(), stored.clone());
        tokio::spawn(async move {
            let mut b = store.pool().begin().await.unwrap();
            let outcome = store.record_in(&mut b, &p, &stored).await.unwrap();
            b.commit().await.unwrap();
            outcome
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.rollback().await.unwrap();
    assert_eq!(waiter.await.unwrap(), idem_store_postgres::Recorded::Won);
    assert_eq!(
        store
            .begin("s", &key("free"), &fp(), Duration::from_secs(30))
            .await
            .unwrap(),
        BeginOutcome::Completed(stored)
    );
    db.drop().await;
}

/// Record last next to the other modes: a live in-flight record of the default mode is
/// `InFlight`, a dead one is taken over in place, and a writer that holds the key past the lock
/// timeout makes the attempt `InFlight` (its transaction aborted) instead of waiting on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_last_reports_live_records_takes_over_dead_ones_and_bounds_its_wait() {
    let h = PgHarness::pinned("record_last_modes").await;
    let store = h
        .store
        .as_ref()
        .clone()
        .lock_timeout(Duration::from_millis(200));
    let lease = Duration::from_secs(30);
    let p = idem_core::PendingAttempt::new("s", key("k"), fp(), lease, Duration::from_secs(60));
    let BeginOutcome::Acquired { fence } = store.begin("s", &key("k"), &fp(), lease).await.unwrap()
    else {
        panic!("a new key is acquired");
    };
    let mut tx = store.pool().begin().await.unwrap();
    let lost = store.record_in(&mut tx, &p, &ok_response()).await.unwrap();
    assert!(
        matches!(lost, idem_store_postgres::Recorded::Lost(BeginOutcome::InFlight { retry_after })
            if retry_after > Duration::from_secs(29)),
        "{lost:?}"
    );
    tx.rollback().await.unwrap();

    h.offset.advance(lease + Duration::from_secs(1));
    let mut tx = store.pool().begin().await.unwrap();
    assert_eq!(
        store.record_in(&mut tx, &p, &ok_response()).await.unwrap(),
        idem_store_postgres::Recorded::Won,
        "the abandoned attempt's dead record is taken over"
    );
    // Uncommitted: a second attempt waits 200 ms, then answers in flight.
    let mut other = store.pool().begin().await.unwrap();
    let started = std::time::Instant::now();
    let lost = store
        .record_in(&mut other, &p, &ok_response())
        .await
        .unwrap();
    assert_eq!(
        lost,
        idem_store_postgres::Recorded::Lost(BeginOutcome::InFlight {
            retry_after: Duration::from_secs(1)
        })
    );
    assert!(started.elapsed() >= Duration::from_millis(150), "it waited");
    other.rollback().await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        matches!(
            store
                .complete("s", &key("k"), fence, &ok_response(), p.retention)
                .await,
            Err(StoreError::StaleFence { .. })
        ),
        "the abandoned attempt can no longer complete"
    );
    assert_eq!(
        store.begin("s", &key("k"), &fp(), lease).await.unwrap(),
        BeginOutcome::Completed(ok_response())
    );
    h.db.drop().await;
}

/// Exactly once under contention: 16 attempts of one key at once, each writing a row and
/// recording last; one commits, every other rolls back and replays the winner's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_last_under_contention_commits_exactly_one_attempt() {
    let db = with_items("record_last_race").await;
    let store = db.store.clone();
    let p = idem_core::PendingAttempt::new(
        "s",
        key("race"),
        fp(),
        Duration::from_secs(30),
        Duration::from_secs(60),
    );
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let (store, p, schema) = (store.clone(), p.clone(), db.schema.clone());
        tasks.push(tokio::spawn(async move {
            let answer = StoredResponse {
                body: Bytes::from(vec![b'a' + i]),
                ..ok_response()
            };
            let mut tx = store.pool().begin().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {schema}.items (key) VALUES ('race')"
            )))
            .execute(&mut *tx)
            .await
            .unwrap();
            match store.record_in(&mut tx, &p, &answer).await.unwrap() {
                idem_store_postgres::Recorded::Won => {
                    tx.commit().await.unwrap();
                    (true, BeginOutcome::Completed(answer))
                }
                idem_store_postgres::Recorded::Lost(outcome) => {
                    tx.rollback().await.unwrap();
                    (false, outcome)
                }
                other => panic!("{other:?}"),
            }
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let winners: Vec<_> = results.iter().filter(|(won, _)| *won).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (_, outcome) in &results {
        assert_eq!(
            outcome, &winners[0].1,
            "every loser replays the winner's answer"
        );
    }
    assert_eq!(items(&db, "race").await, 1);
    db.drop().await;
}
