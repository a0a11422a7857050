//! The compare-and-set on a real PostgreSQL (`DATABASE_URL`, default the local `test` database),
//! each test in a schema of its own: 50 concurrent writers through the layer, a model of
//! interleaved clients, and the helper's edge cases.

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use http::{Request, StatusCode};
use optimistic_lock::sqlx::{self, postgres::PgConnectOptions, PgPool};
use optimistic_lock::{
    BoxError, CasError, Current, Expected, OptimisticLockLayer, PgVersioned, Version, VersionSource,
};
use proptest::prelude::*;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tower::ServiceExt;

fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

struct Db {
    pool: PgPool,
    admin: PgPool,
    schema: String,
    orders: PgVersioned,
}

impl Db {
    async fn new(name: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let schema = format!(
            "ol_{name}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let admin = PgPool::connect(&url()).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {} ({e}); run `cargo xtask test`, which starts it",
                url()
            )
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        let options = PgConnectOptions::from_str(&url())
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(20)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query(
            "CREATE TABLE orders (id TEXT PRIMARY KEY, quantity INT NOT NULL, version BIGINT NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let orders = PgVersioned::new("orders", "id", "version").unwrap();
        Self {
            pool,
            admin,
            schema,
            orders,
        }
    }

    async fn insert(&self, id: &str, quantity: i32) {
        sqlx::query("INSERT INTO orders (id, quantity, version) VALUES ($1, $2, 1)")
            .bind(id)
            .bind(quantity)
            .execute(&self.pool)
            .await
            .unwrap();
    }

    async fn row(&self, id: &str) -> (i32, i64) {
        sqlx::query_as("SELECT quantity, version FROM orders WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn drop(self) {
        self.pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.schema
        )))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}

/// The layer's view of the `orders` table.
struct PgSource(Arc<Db>);

#[async_trait]
impl VersionSource for PgSource {
    async fn current(&self, parts: &http::request::Parts) -> Result<Option<Current>, BoxError> {
        let Some(id) = parts.uri.path().strip_prefix("/orders/") else {
            return Ok(None);
        };
        Ok(self
            .0
            .orders
            .current(&self.0.pool, id.to_owned())
            .await?
            .map(Current::new))
    }
}

async fn patch(
    State(db): State<Arc<Db>>,
    Path(id): Path<String>,
    Extension(expected): Extension<Expected>,
    body: String,
) -> Response {
    let quantity: i32 = body.parse().unwrap();
    match db
        .orders
        .update(&db.pool, id, &expected, |set| {
            set.push("quantity = ").push_bind(quantity);
        })
        .await
    {
        Ok(v) => (StatusCode::OK, [("etag", v.etag().to_string())]).into_response(),
        Err(CasError::Conflict(c)) => c.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_patches_with_one_etag_make_one_write_on_postgres() {
    let db = Arc::new(Db::new("fifty").await);
    db.insert("o1", 0).await;
    let app = Router::new()
        .route("/orders/{id}", get(|| async { "" }).patch(patch))
        .with_state(db.clone())
        .layer(OptimisticLockLayer::new(PgSource(db.clone())));
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (1..=50)
        .map(|q| {
            let (app, barrier) = (app.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let req = Request::patch("/orders/o1")
                    .header("if-match", "\"1\"")
                    .body(Body::from(q.to_string()))
                    .unwrap();
                (q, app.oneshot(req).await.unwrap().status())
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            (q, StatusCode::OK) => won.push(q),
            (_, StatusCode::PRECONDITION_FAILED) => refused += 1,
            (_, other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!((won.len(), refused), (1, 49));
    assert_eq!(
        db.row("o1").await,
        (won[0], 2),
        "the row is the one successful change"
    );
    drop(app);
    Arc::try_unwrap(db)
        .ok()
        .expect("the router is gone")
        .drop()
        .await;
}

#[tokio::test]
async fn the_helper_reports_conflicts_missing_rows_and_refuses_odd_identifiers() {
    let db = Db::new("edges").await;
    db.insert("o1", 1).await;
    let set = |q: i32| {
        move |s: &mut sqlx::QueryBuilder<sqlx::Postgres>| {
            s.push("quantity = ").push_bind(q);
        }
    };
    let v1 = Expected::Version(Version::number(1));
    assert_eq!(
        db.orders.update(&db.pool, "o1", &v1, set(2)).await.unwrap(),
        Version::number(2)
    );
    match db.orders.update(&db.pool, "o1", &v1, set(3)).await {
        Err(CasError::Conflict(c)) => assert_eq!(c.current, Some(Version::number(2))),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        db.orders.update(&db.pool, "nope", &v1, set(3)).await,
        Err(CasError::NotFound)
    ));
    // Create-only never updates an existing row.
    assert!(matches!(
        db.orders
            .update(&db.pool, "o1", &Expected::Absent, set(3))
            .await,
        Err(CasError::Conflict(_))
    ));
    // Unconditional writes bump the version whatever it was.
    assert_eq!(
        db.orders
            .update(&db.pool, "o1", &Expected::Unconditional, set(4))
            .await
            .unwrap(),
        Version::number(3)
    );
    // A version that is not a row number matches no row.
    let hashed = Expected::Version(Version::hash_of(b"x"));
    assert!(matches!(
        db.orders.update(&db.pool, "o1", &hashed, set(5)).await,
        Err(CasError::Conflict(_))
    ));
    assert_eq!(db.row("o1").await, (4, 3));
    assert_eq!(
        db.orders.current(&db.pool, "o1").await.unwrap(),
        Some(Version::number(3))
    );
    assert_eq!(db.orders.current(&db.pool, "nope").await.unwrap(), None);
    for bad in ["orders; DROP TABLE x", "", "1abc", "a.b.c", "quoted\"name"] {
        assert!(PgVersioned::new(bad, "id", "version").is_err(), "{bad:?}");
    }
    assert!(PgVersioned::new("public.orders", "id", "version").is_ok());
    db.drop().await;
}

#[derive(Debug, Clone)]
enum Step {
    Read(usize),
    Write(usize, i32),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Clients read the version and write with the version they saw, in any interleaving, on
    /// PostgreSQL: a write succeeds exactly when it was based on the latest version; the row ends
    /// as the last successful write.
    #[test]
    fn interleaved_clients_never_lose_an_update_on_postgres(
        steps in proptest::collection::vec(
            prop_oneof![
                (0..3usize).prop_map(Step::Read),
                (0..3usize, 1..1000i32).prop_map(|(c, q)| Step::Write(c, q)),
            ],
            1..25,
        )
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let db = Db::new("model").await;
            db.insert("o", 0).await;
            let mut seen: [Option<Version>; 3] = Default::default();
            let (mut version, mut value) = (1u64, 0i32);
            for step in steps {
                match step {
                    Step::Read(c) => seen[c] = db.orders.current(&db.pool, "o").await.unwrap(),
                    Step::Write(c, q) => {
                        let Some(v) = seen[c].clone() else { continue };
                        let fresh = v == Version::number(version);
                        let result = db.orders
                            .update(&db.pool, "o", &Expected::Version(v), |s| {
                                s.push("quantity = ").push_bind(q);
                            })
                            .await;
                        match (fresh, result) {
                            (true, Ok(new)) => {
                                version += 1;
                                value = q;
                                assert_eq!(new, Version::number(version));
                                seen[c] = Some(new);
                            }
                            (false, Err(CasError::Conflict(c))) => {
                                assert_eq!(c.current, Some(Version::number(version)));
                            }
                            (fresh, other) => panic!("fresh: {fresh}, got {other:?}"),
                        }
                    }
                }
            }
            assert_eq!(db.row("o").await, (value, version as i64));
            db.drop().await;
        });
    }
}
