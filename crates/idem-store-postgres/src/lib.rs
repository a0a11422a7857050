//! The [`idem_core::IdempotencyStore`] on PostgreSQL (sqlx), for a fleet of servers that share
//! one database — and for handlers whose own writes must commit together with the idempotency
//! record.
//!
//! ```
//! use idem_core::{BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, StoredResponse};
//! use idem_store_postgres::PostgresStore;
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let url = std::env::var("DATABASE_URL")
//!     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
//! # let schema = format!("doctest_{}", std::process::id());
//! # let admin = PostgresStore::connect(&url).await.unwrap();
//! # sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {schema}"))).execute(admin.pool()).await.unwrap();
//! # let url = format!("{url}?options=-csearch_path%3D{schema}");
//! let store = PostgresStore::connect(&url).await.unwrap();
//! store.migrate().await.unwrap(); // creates the table once; safe to call at every start
//!
//! let key = IdempotencyKey::parse(b"order-7f3a").unwrap();
//! let fp = Fingerprint::of_request("POST", "/orders", b"{\"sku\":\"tea\"}");
//! let BeginOutcome::Acquired { fence } =
//!     store.begin("tenant-1", &key, &fp, Duration::from_secs(30)).await.unwrap()
//! else { panic!("a new key is acquired") };
//! let response = StoredResponse { status: 201, headers: vec![], body: "created".into(), trailers: vec![] };
//! store.complete("tenant-1", &key, fence, &response, Duration::from_secs(60)).await.unwrap();
//! assert_eq!(
//!     store.begin("tenant-1", &key, &fp, Duration::from_secs(30)).await.unwrap(),
//!     BeginOutcome::Completed(response)
//! );
//! # sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(admin.pool()).await.unwrap();
//! # });
//! ```
//!
//! How it works:
//! - **One statement per operation.** `begin` is one statement (`INSERT … ON CONFLICT DO NOTHING`,
//!   a takeover `UPDATE` of a dead row, and a read of a live one, in data-modifying CTEs) that
//!   either takes the key or hands back the live row without writing it — so a replay costs a
//!   read, not a write. Only when a concurrent `begin` changed the row after the statement's
//!   snapshot does it run again (and then sees the change). `complete` is one
//!   `UPDATE … WHERE fence = $fence AND lease live`, `release` one `DELETE` with the same guard.
//!   The statements are in the source (`sql.rs`).
//! - **Database time.** Leases and retention use the database's `clock_timestamp()`, so clock skew
//!   between application servers cannot break a lease. Fences come from a sequence: they grow
//!   across every key, release and expiry.
//! - **Migrations.** [`PostgresStore::migrate`] applies the embedded migrations (`migrations/`,
//!   one table `idem_records` and one sequence in the connection's `search_path` schema).
//! - **Expiry.** Dead rows are taken over in place by `begin`; [`IdempotencyStore::purge_expired`]
//!   deletes the others in batches of 1,000 (skipping rows that live traffic holds
//!   locked); run it from a periodic task.
//! - **Transactional mode.** [`PostgresStore::complete_in`] completes the record inside the
//!   handler's own transaction, so its business writes and the record commit or roll back
//!   together (see its docs).
//! - **Single-commit mode.** The handler writes the record in its own transaction, one commit
//!   per request: last, after its writes ([`PostgresStore::record_in`]: one statement more than
//!   the handler alone; a duplicate loses the key at the end and rolls back), or first
//!   ([`PostgresStore::begin_in`] … [`complete_in`](PostgresStore::complete_in): a duplicate waits
//!   on the record's row lock before doing any work).
//!
//! Connections come from a `sqlx` pool: after a connection is lost, the operation that used it
//! reports [`BackendError::Unavailable`](idem_core::BackendError::Unavailable) (the layer fails closed, or open as configured) and the pool
//! opens a new one for the next.
//!
//! # With axum
//! ```no_run
//! use axum::{routing::post, Router};
//! use idem_core::{IdempotencyLayer, IdempotencyPolicy};
//! use idem_store_postgres::PostgresStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
//! store.migrate().await?;
//! let app: Router = Router::new()
//!     .route("/orders", post(|| async { "created" }))
//!     .layer(IdempotencyLayer::new(store, IdempotencyPolicy::default().require_key(true)));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod sql;

use async_trait::async_trait;
use bytes::Bytes;
use idem_core::{
    BeginOutcome, DecodeError, Fence, Fingerprint, IdempotencyAttempt, IdempotencyKey,
    IdempotencyStore, PendingAttempt, StoreError, StoredResponse, TimeOffset,
};
pub use retry_safe_core::Breaker;
use retry_safe_core::BreakerOpen;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Row};
use std::str::FromStr;
use std::time::Duration;

pub use sqlx;

/// A statement with its arguments bound so far.
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, PgArguments>;

/// Rows deleted per statement by [`IdempotencyStore::purge_expired`].
pub(crate) const PURGE_BATCH: i64 = 1_000;

/// How often `begin` runs its statement when concurrent statements keep changing the row.
const BEGIN_ATTEMPTS: u32 = 5;

/// The record schema version this release reads and writes.
pub(crate) const RECORD_VERSION: i16 = 1;

/// Connecting or migrating failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The URL is not a PostgreSQL URL, or the server could not be reached.
    #[error("could not connect to PostgreSQL")]
    Connect(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("could not apply the idempotency store's migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Idempotency records in PostgreSQL. Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    offset: TimeOffset,
    breaker: Breaker,
    lock_timeout: Duration,
}

impl PostgresStore {
    /// Connects a pool to `url` (`postgres://user[:password]@host[:port]/database[?options]`)
    /// configured for a request path: at most 16 connections, 2 s to get one, no ping before each
    /// use (one round trip per operation; a connection found dead fails that operation with
    /// `BackendError::Unavailable` and is replaced), and `plan_cache_mode = force_generic_plan`:
    /// every store statement is a primary-key lookup whose plan never depends on its parameters,
    /// and re-planning `begin` for each call cost about a fifth of its time. (A pool given to
    /// [`with_pool`](Self::with_pool) keeps its own settings.)
    pub async fn connect(url: &str) -> Result<Self, SetupError> {
        let options = PgConnectOptions::from_str(url).map_err(SetupError::Connect)?;
        Self::connect_with(options).await
    }

    /// Connects as [`connect`](Self::connect) does, with the caller's connection options (a
    /// `search_path` schema, an `application_name`, TLS…).
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, SetupError> {
        let options = options.options([("plan_cache_mode", "force_generic_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(2))
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(SetupError::Connect)?;
        Ok(Self::with_pool(pool))
    }

    /// A store over the caller's pool.
    pub fn with_pool(pool: PgPool) -> Self {
        Self {
            pool,
            offset: TimeOffset::new(),
            breaker: Breaker::for_backend(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// How long [`begin_in`](Self::begin_in) waits for the row lock of a record another
    /// transaction is writing (default 5 s): then the duplicate is answered `InFlight` (409).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Begins `pending` inside the caller's transaction — the single-commit mode
    /// ([`IdempotencyPolicy::single_commit`](idem_core::IdempotencyPolicy::single_commit)).
    ///
    /// On `Acquired`, the handler writes on the same transaction, completes with
    /// [`complete_in`](Self::complete_in) and `pending.acquired(fence)`, and commits: the record,
    /// born completed, and the business rows appear together in one commit; until then no other
    /// transaction sees any of it. A concurrent `begin_in` of the same key waits for that commit
    /// (or rollback) on the record's row lock, at most [`lock_timeout`](Self::lock_timeout), and
    /// then sees the completed record (`Completed`: replay it) or a free key (`Acquired`). Past the
    /// timeout it answers `InFlight`; the transaction is then aborted — roll it back. Any other
    /// outcome is answered with [`PendingAttempt::answer`]. The lock timeout is set by the
    /// `begin` statement itself (`set_config(…, true)`, no extra round trip) and stays for the rest
    /// of the transaction (the handler's own statements wait no longer than that for locks either).
    ///
    /// ```no_run
    /// use idem_core::{BeginOutcome, PendingAttempt, StoredResponse};
    /// use idem_store_postgres::PostgresStore;
    ///
    /// # async fn handler(store: PostgresStore, pending: PendingAttempt) -> Result<http::Response<bytes::Bytes>, Box<dyn std::error::Error>> {
    /// let mut tx = store.pool().begin().await?;
    /// let outcome = store.begin_in(&mut tx, &pending).await?;
    /// let BeginOutcome::Acquired { fence } = outcome else {
    ///     return Ok(pending.answer(&outcome).expect("not acquired")); // replay, 422 or 409
    /// };
    /// sqlx::query("INSERT INTO orders (sku) VALUES ('tea')").execute(&mut *tx).await?;
    /// let stored = StoredResponse { status: 201, headers: vec![], body: "created".into(), trailers: vec![] };
    /// store.complete_in(&mut tx, &pending.acquired(fence), &stored, pending.retention).await?;
    /// tx.commit().await?; // the one commit
    /// Ok(stored.to_response())
    /// # }
    /// ```
    pub async fn begin_in(
        &self,
        conn: &mut PgConnection,
        pending: &PendingAttempt,
    ) -> Result<BeginOutcome, StoreError> {
        let timeout = self.lock_timeout_arg();
        match self
            .begin_on(
                conn,
                &pending.scope,
                &pending.key,
                &pending.fingerprint,
                pending.lease,
                Some(&timeout),
            )
            .await
        {
            Err(e) if is_lock_timeout(&e) => Ok(LOCK_WAIT_RAN_OUT),
            other => other,
        }
    }

    /// Writes the completed record of `pending` at the **end** of the caller's transaction —
    /// single-commit mode, record last: the handler begins a transaction, runs its writes, calls
    /// this with its answer, and commits on [`Recorded::Won`]. One statement more than the
    /// handler alone; the record and the writes commit together.
    ///
    /// [`Recorded::Lost`] means another attempt holds the key (a concurrent one that committed
    /// first, an earlier one already answered, or one in flight in another mode): **roll the
    /// transaction back** (its writes vanish with it) and answer with
    /// [`PendingAttempt::answer`] — the winner's response replayed, `422` for another request
    /// under the key, or `409` while it is in flight or when the wait for a concurrent writer of
    /// the key ran past [`lock_timeout`](Self::lock_timeout). Exactly once: two attempts cannot
    /// both commit a record of one key, and the loser's writes roll back with it.
    ///
    /// Compared with [`begin_in`](Self::begin_in) (record first), a first attempt — the common
    /// case — saves a statement, while a duplicate pays the handler's work before it rolls back;
    /// use record first when that work is expensive, and the default mode for any effect outside
    /// this database.
    ///
    /// ```no_run
    /// use idem_core::{PendingAttempt, StoredResponse};
    /// use idem_store_postgres::{PostgresStore, Recorded};
    ///
    /// # async fn handler(store: PostgresStore, pending: PendingAttempt) -> Result<http::Response<bytes::Bytes>, Box<dyn std::error::Error>> {
    /// let mut tx = store.pool().begin().await?;
    /// sqlx::query("INSERT INTO orders (sku) VALUES ('tea')").execute(&mut *tx).await?;
    /// let stored = StoredResponse { status: 201, headers: vec![], body: "created".into(), trailers: vec![] };
    /// match store.record_in(&mut tx, &pending, &stored).await? {
    ///     Recorded::Won => {
    ///         tx.commit().await?; // the one commit
    ///         Ok(stored.to_response())
    ///     }
    ///     Recorded::Lost(outcome) => {
    ///         tx.rollback().await?;
    ///         Ok(pending.answer(&outcome).expect("not acquired"))
    ///     }
    ///     _ => unreachable!(),
    /// }
    /// # }
    /// ```
    pub async fn record_in(
        &self,
        conn: &mut PgConnection,
        pending: &PendingAttempt,
        response: &StoredResponse,
    ) -> Result<Recorded, StoreError> {
        let columns = ResponseColumns::of(response)?;
        let timeout = self.lock_timeout_arg();
        for _ in 0..BEGIN_ATTEMPTS {
            match self.run_record(conn, pending, &columns, &timeout).await {
                Ok(Some(_)) => return Ok(Recorded::Won),
                Ok(None) => {}
                Err(e) if is_lock_timeout(&e) => return Ok(Recorded::Lost(LOCK_WAIT_RAN_OUT)),
                Err(e) => return Err(e),
            }
            // A live record won; read it with a new snapshot (it may have committed while the
            // insert waited). Gone or dead by now: the key is free again, so try once more.
            if let Some(row) = self.read_on(conn, pending).await? {
                if get::<i64>(&row, "remaining_us")? > 0 {
                    return outcome_of(&row, &pending.fingerprint).map(Recorded::Lost);
                }
            }
        }
        Err(StoreError::unavailable(
            "the record kept changing under concurrent attempts",
        ))
    }

    /// Binds what `complete` and `record_in` both take after their first four parameters, in
    /// their order: the response's status, header names and values, body, then the test time
    /// (pinned, offset), then the trailers.
    fn bind_response<'q>(
        &self,
        query: PgQuery<'q>,
        columns: &'q ResponseColumns<'q>,
    ) -> PgQuery<'q> {
        query
            .bind(columns.status)
            .bind(&columns.names)
            .bind(&columns.values)
            .bind(columns.body)
            .bind(self.pinned())
            .bind(self.offset_us())
            .bind(&columns.trailer_names)
            .bind(&columns.trailer_values)
    }

    /// The lock timeout as `set_config` takes it.
    fn lock_timeout_arg(&self) -> String {
        format!("{}ms", self.lock_timeout.as_millis().max(1))
    }

    async fn run_record(
        &self,
        conn: &mut PgConnection,
        pending: &PendingAttempt,
        columns: &ResponseColumns<'_>,
        timeout: &str,
    ) -> Result<Option<PgRow>, StoreError> {
        let query = sqlx::query(sql::RECORD_IN)
            .bind(&pending.scope)
            .bind(pending.key.as_str())
            .bind(&pending.fingerprint.as_bytes()[..])
            .bind(micros(pending.retention));
        self.bind_response(query, columns)
            .bind(timeout)
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)
    }

    async fn read_on(
        &self,
        conn: &mut PgConnection,
        pending: &PendingAttempt,
    ) -> Result<Option<PgRow>, StoreError> {
        sqlx::query(sql::READ)
            .bind(&pending.scope)
            .bind(pending.key.as_str())
            .bind(self.pinned())
            .bind(self.offset_us())
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)
    }

    /// The circuit breaker of `begin` (default: 3 consecutive unreachable database calls open it
    /// for 1 s). While it is open `begin` reports `BackendError::Unavailable` at once instead of
    /// waiting for a connection; one probe per cool-down finds out when the database is back.
    /// `complete` and `release` always try.
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = breaker;
        self
    }

    /// The pool, for the application's own queries and transactions.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Reads the database's time through `offset` (tests that expire leases without waiting).
    pub fn time_offset(mut self, offset: TimeOffset) -> Self {
        self.offset = offset;
        self
    }

    /// Applies the embedded migrations (idempotent; safe to run at every start and from several
    /// servers at once: sqlx serializes them with an advisory lock).
    pub async fn migrate(&self) -> Result<(), SetupError> {
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .map_err(SetupError::Migrate)
    }

    fn pinned(&self) -> Option<i64> {
        self.offset.pinned().map(micros)
    }

    fn offset_us(&self) -> i64 {
        micros(self.offset.get())
    }

    /// Completes the record of `attempt` inside the caller's transaction — the transactional
    /// mode.
    ///
    /// The handler runs its own SQL and this on the same transaction, then commits: the business
    /// rows and the completed record appear together, or (on rollback, error, panic) neither
    /// does and the layer releases the key so a retry runs. The handler then answers with
    /// [`idem_core::handler_completed`], which tells the layer not to complete the record again.
    ///
    /// ```no_run
    /// use idem_core::{handler_completed, IdempotencyAttempt, StoredResponse};
    /// use idem_store_postgres::PostgresStore;
    /// use std::time::Duration;
    ///
    /// # async fn handler(store: PostgresStore, attempt: IdempotencyAttempt) -> Result<http::Response<bytes::Bytes>, Box<dyn std::error::Error>> {
    /// let mut tx = store.pool().begin().await?;
    /// sqlx::query("INSERT INTO orders (sku) VALUES ('tea')").execute(&mut *tx).await?;
    /// let stored = StoredResponse { status: 201, headers: vec![], body: "created".into(), trailers: vec![] };
    /// store.complete_in(&mut tx, &attempt, &stored, Duration::from_secs(24 * 3600)).await?;
    /// tx.commit().await?;
    /// Ok(handler_completed(&stored))
    /// # }
    /// ```
    ///
    /// Errors as [`IdempotencyStore::complete`]: `StaleFence` when the lease was lost (roll back:
    /// another attempt may be running), `Unavailable` when the statement failed.
    pub async fn complete_in(
        &self,
        conn: &mut PgConnection,
        attempt: &IdempotencyAttempt,
        response: &StoredResponse,
        retention: Duration,
    ) -> Result<(), StoreError> {
        self.complete_on(
            conn,
            &attempt.scope,
            &attempt.key,
            attempt.fence,
            response,
            retention,
        )
        .await
    }

    async fn complete_on<'e, E>(
        &self,
        executor: E,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        response: &StoredResponse,
        retention: Duration,
    ) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Postgres>,
    {
        let fence_value = fence_arg(fence)?;
        let columns = ResponseColumns::of(response)?;
        let query = sqlx::query(sql::COMPLETE)
            .bind(scope)
            .bind(key.as_str())
            .bind(fence_value)
            .bind(micros(retention));
        let row = self
            .bind_response(query, &columns)
            .fetch_optional(executor)
            .await
            .map_err(unavailable)?;
        held(row, fence)
    }
}

use retry_safe_core::duration_to_micros_i64 as micros;

/// What [`PostgresStore::record_in`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recorded {
    /// The completed record is written in the transaction: commit it.
    Won,
    /// Another attempt holds the key: roll the transaction back and answer with
    /// [`PendingAttempt::answer`] (never `Acquired`).
    Lost(BeginOutcome),
}

/// What a single-commit attempt answers when it waited past the lock timeout for another
/// transaction writing the same key (that transaction is aborted: roll it back).
const LOCK_WAIT_RAN_OUT: BeginOutcome = BeginOutcome::InFlight {
    retry_after: Duration::from_secs(1),
};

/// A stored response as the record's columns bind it.
struct ResponseColumns<'a> {
    status: i16,
    names: Vec<&'a str>,
    values: Vec<&'a [u8]>,
    body: &'a [u8],
    /// `None` when there are none (so rows without trailers read as rows from before them).
    trailer_names: Option<Vec<&'a str>>,
    trailer_values: Option<Vec<&'a [u8]>>,
}

impl<'a> ResponseColumns<'a> {
    fn of(response: &'a StoredResponse) -> Result<Self, StoreError> {
        let status =
            i16::try_from(response.status).map_err(|_| malformed("status out of range"))?;
        let trailers = &response.trailers;
        let (trailer_names, trailer_values) = if trailers.is_empty() {
            (None, None)
        } else {
            (
                Some(trailers.iter().map(|(n, _)| n.as_str()).collect()),
                Some(trailers.iter().map(|(_, v)| v.as_ref()).collect()),
            )
        };
        Ok(Self {
            status,
            names: response.headers.iter().map(|(n, _)| n.as_str()).collect(),
            values: response.headers.iter().map(|(_, v)| v.as_ref()).collect(),
            body: response.body.as_ref(),
            trailer_names,
            trailer_values,
        })
    }
}

/// A fence as the `BIGINT` column holds it; no row holds a larger one.
fn fence_arg(fence: Fence) -> Result<i64, StoreError> {
    i64::try_from(fence.0).map_err(|_| StoreError::StaleFence { fence })
}

/// The outcome of a fenced statement: a row came back when `fence` held the live lease.
fn held(row: Option<PgRow>, fence: Fence) -> Result<(), StoreError> {
    match row {
        Some(_) => Ok(()),
        None => Err(StoreError::StaleFence { fence }),
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::unavailable(e)
}

fn malformed(what: &'static str) -> StoreError {
    StoreError::from(DecodeError::Malformed(what))
}

fn get<'r, T>(row: &'r PgRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column)
        .map_err(|_| malformed("a record column has an unexpected type"))
}

/// The stored response of a completed row.
fn response_of(row: &PgRow) -> Result<StoredResponse, StoreError> {
    let status: Option<i16> = get(row, "response_status")?;
    let names: Option<Vec<String>> = get(row, "response_header_names")?;
    let values: Option<Vec<Vec<u8>>> = get(row, "response_header_values")?;
    let body: Option<Vec<u8>> = get(row, "response_body")?;
    let trailer_names: Option<Vec<String>> = get(row, "response_trailer_names")?;
    let trailer_values: Option<Vec<Vec<u8>>> = get(row, "response_trailer_values")?;
    let status = status
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..=999).contains(s))
        .ok_or(malformed("the stored status is missing or out of range"))?;
    let (names, values) = (names.unwrap_or_default(), values.unwrap_or_default());
    if names.len() != values.len() {
        return Err(malformed("stored header names and values differ in number"));
    }
    let (trailer_names, trailer_values) = (
        trailer_names.unwrap_or_default(),
        trailer_values.unwrap_or_default(),
    );
    if trailer_names.len() != trailer_values.len() {
        return Err(malformed(
            "stored trailer names and values differ in number",
        ));
    }
    Ok(StoredResponse {
        status,
        headers: names
            .into_iter()
            .zip(values)
            .map(|(n, v)| (n, Bytes::from(v)))
            .collect(),
        body: Bytes::from(body.ok_or(malformed("the stored body is missing"))?),
        trailers: trailer_names
            .into_iter()
            .zip(trailer_values)
            .map(|(n, v)| (n, Bytes::from(v)))
            .collect(),
    })
}

#[async_trait]
impl IdempotencyStore for PostgresStore {
    async fn begin(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<BeginOutcome, StoreError> {
        // The statement sees one snapshot; a row that a concurrent statement inserted or took over
        // after it was taken shows up on the next run (see `sql::BEGIN`).
        let Some(permit) = self.breaker.try_acquire() else {
            return Err(StoreError::unavailable(BreakerOpen));
        };
        let result = self.begin_once(scope, key, fingerprint, lease).await;
        // Only a failure to reach the database counts against it; its own errors do not.
        let reached = !matches!(&result, Err(StoreError::Backend(e))
            if e.cause::<sqlx::Error>().is_some_and(not_reached));
        self.breaker.record(permit, reached);
        result
    }
    async fn complete(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        response: &StoredResponse,
        retention: Duration,
    ) -> Result<(), StoreError> {
        self.complete_on(&self.pool, scope, key, fence, response, retention)
            .await
    }

    async fn release(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
    ) -> Result<(), StoreError> {
        let fence_value = fence_arg(fence)?;
        let row = sqlx::query(sql::RELEASE)
            .bind(scope)
            .bind(key.as_str())
            .bind(fence_value)
            .bind(self.pinned())
            .bind(self.offset_us())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        held(row, fence)
    }

    async fn renew(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let fence_value = fence_arg(fence)?;
        let row = sqlx::query(sql::RENEW)
            .bind(scope)
            .bind(key.as_str())
            .bind(fence_value)
            .bind(micros(lease))
            .bind(self.pinned())
            .bind(self.offset_us())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        held(row, fence)
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let done = sqlx::query(sql::PURGE_BATCH)
                .bind(PURGE_BATCH)
                .bind(self.pinned())
                .bind(self.offset_us())
                .execute(&self.pool)
                .await
                .map_err(unavailable)?
                .rows_affected();
            total += done;
            if done < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// How long `begin_in` waits for another transaction's record by default.
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `e` says the database was not reached (what the breaker counts).
fn not_reached(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    )
}

/// Whether `e` is PostgreSQL's `lock_not_available` (a `lock_timeout` ran out).
fn is_lock_timeout(e: &StoreError) -> bool {
    let StoreError::Backend(e) = e else {
        return false;
    };
    e.cause::<sqlx::Error>().is_some_and(|e| {
        e.as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c == "55P03")
    })
}

impl PostgresStore {
    async fn begin_once(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<BeginOutcome, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        self.begin_on(&mut conn, scope, key, fingerprint, lease, None)
            .await
    }

    async fn begin_on(
        &self,
        conn: &mut PgConnection,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease: Duration,
        lock_timeout: Option<&str>,
    ) -> Result<BeginOutcome, StoreError> {
        let begin = Begin {
            scope,
            key,
            fingerprint,
            lease,
            lock_timeout,
        };
        if lock_timeout.is_some() {
            // Single-commit mode: most keys are new, and one plain insert takes them.
            if let Some(row) = self.run_begin(conn, &begin, sql::BEGIN_IN_FRESH).await? {
                return Ok(BeginOutcome::Acquired {
                    fence: fence_of(&row)?,
                });
            }
        }
        let statement = match lock_timeout {
            None => sql::BEGIN,
            Some(_) => sql::BEGIN_IN,
        };
        let mut attempts = 0;
        let row = loop {
            attempts += 1;
            let row = self.run_begin(conn, &begin, statement).await?;
            let settled = match &row {
                None => false,
                Some(row) => get::<bool>(row, "acquired")? || get::<i64>(row, "remaining_us")? > 0,
            };
            match row {
                Some(row) if settled => break row,
                _ if attempts >= BEGIN_ATTEMPTS => {
                    return Err(StoreError::unavailable(
                        "the record kept changing under concurrent begins",
                    ))
                }
                _ => {}
            }
        };
        outcome_of(&row, fingerprint)
    }

    /// Runs one of the begin statements for `begin`.
    async fn run_begin(
        &self,
        conn: &mut PgConnection,
        begin: &Begin<'_>,
        statement: &'static str,
    ) -> Result<Option<PgRow>, StoreError> {
        let query = sqlx::query(statement)
            .bind(begin.scope)
            .bind(begin.key.as_str())
            .bind(&begin.fingerprint.as_bytes()[..])
            .bind(micros(begin.lease))
            .bind(self.pinned())
            .bind(self.offset_us());
        let query = match begin.lock_timeout {
            None => query,
            Some(t) => query.bind(t),
        };
        query.fetch_optional(&mut *conn).await.map_err(unavailable)
    }
}

/// The arguments of one `begin`.
struct Begin<'a> {
    scope: &'a str,
    key: &'a IdempotencyKey,
    fingerprint: &'a Fingerprint,
    lease: Duration,
    /// Single-commit mode's lock timeout (`None`: the default mode).
    lock_timeout: Option<&'a str>,
}

/// The fence of a row.
fn fence_of(row: &PgRow) -> Result<Fence, StoreError> {
    let fence: i64 = get(row, "fence")?;
    u64::try_from(fence)
        .map(Fence)
        .map_err(|_| malformed("negative fence"))
}

/// What a settled begin row says.
fn outcome_of(row: &PgRow, fingerprint: &Fingerprint) -> Result<BeginOutcome, StoreError> {
    let version: i16 = get(row, "version")?;
    if version != RECORD_VERSION {
        return Err(StoreError::from(DecodeError::UnknownVersion(
            u8::try_from(version).unwrap_or(u8::MAX),
        )));
    }
    if get::<bool>(row, "acquired")? {
        return Ok(BeginOutcome::Acquired {
            fence: fence_of(row)?,
        });
    }
    let stored_fp: Vec<u8> = get(row, "fingerprint")?;
    if stored_fp.as_slice() != fingerprint.as_bytes() {
        return Ok(BeginOutcome::Mismatch);
    }
    match get::<i16>(row, "state")? {
        1 => {
            let us: i64 = get(row, "remaining_us")?;
            Ok(BeginOutcome::InFlight {
                retry_after: Duration::from_micros(u64::try_from(us).unwrap_or(0)),
            })
        }
        2 => Ok(BeginOutcome::Completed(response_of(row)?)),
        _ => Err(malformed("unknown record state")),
    }
}
