//! The transactional outbox on PostgreSQL.

use crate::outbox::{
    AttemptRecord, Claimed, DeliveryAttempt, EventState, EventStatus, NextStep, Outbox,
    OutboxError, OutboxStats,
};
use crate::WebhookEvent;
use async_trait::async_trait;
use retry_safe_core::{BackendError, TimeOffset};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

pub use sqlx;

/// Rows deleted per statement by [`Outbox::purge_finished`].
pub(crate) const PURGE_BATCH: i64 = 1_000;

/// The table that records which of this crate's migrations ran (its own, so that other crates'
/// migrations in the same schema never meet these).
pub(crate) const MIGRATIONS_TABLE: &str = "_webhook_delivery_migrations";

/// Connecting or migrating failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The URL is not a PostgreSQL URL, or the server could not be reached.
    #[error("could not connect to PostgreSQL")]
    Connect(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("could not apply the webhook outbox's migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// `enqueue`: $1 endpoint, $2 event id, $3 content type, $4 payload, $5 pinned, $6 offset.
const ENQUEUE: &str = concat!(
    "INSERT INTO webhook_outbox (endpoint, event_id, content_type, payload, due_at, created_at)
     SELECT $1, $2, $3, $4, t.now, t.now FROM (SELECT ",
    retry_safe_core::postgres_now!("$5", "$6"),
    " AS now) t
     ON CONFLICT (endpoint, event_id) DO NOTHING
     RETURNING id"
);

/// `claim`: $1 pinned, $2 offset, $3 max rows, $4 lease µs. Due pending rows of enabled
/// endpoints, oldest due first, locked with `SKIP LOCKED` so concurrent claimants take disjoint
/// rows; each gets a new fence and is due again at the end of the lease.
const CLAIM: &str = concat!(
    "WITH t AS (SELECT ",
    retry_safe_core::postgres_now!("$1", "$2"),
    " AS now),
due AS (
  SELECT o.id FROM webhook_outbox o
  WHERE o.state = 1 AND o.due_at <= (SELECT now FROM t)
    AND NOT EXISTS (SELECT 1 FROM webhook_endpoints_disabled d WHERE d.endpoint = o.endpoint)
  ORDER BY o.due_at
  LIMIT $3
  FOR UPDATE OF o SKIP LOCKED
)
UPDATE webhook_outbox o
SET due_at = t.now + $4::bigint * interval '1 microsecond',
    claim = nextval('webhook_outbox_claim_seq')
FROM due, t
WHERE o.id = due.id
RETURNING o.id, o.claim, o.endpoint, o.event_id, o.content_type, o.payload, o.attempts,
          (EXTRACT(EPOCH FROM (t.now - o.created_at)) * 1000000)::bigint AS age_us"
);

/// `settle`: $1 row, $2 claim, $3 new state, $4 retry delay µs, $5 status, $6 latency µs,
/// $7 error, $8 pinned, $9 offset. One statement: the guarded row update, the attempt record and,
/// for a 410, the endpoint's disabling.
const SETTLE: &str = concat!(
    "WITH t AS (SELECT ",
    retry_safe_core::postgres_now!("$8", "$9"),
    " AS now),
upd AS (
  UPDATE webhook_outbox o SET
    attempts = o.attempts + 1,
    state = $3,
    due_at = CASE WHEN $3 = 1 THEN t.now + $4::bigint * interval '1 microsecond' ELSE o.due_at END,
    finished_at = CASE WHEN $3 = 1 THEN NULL ELSE t.now END,
    last_error = $7
  FROM t
  WHERE o.id = $1 AND o.claim = $2 AND o.state = 1
  RETURNING o.id, o.endpoint, o.attempts
),
att AS (
  INSERT INTO webhook_attempts (outbox_id, attempt, at, status, latency_us, error)
  SELECT upd.id, upd.attempts, t.now, $5, $6, $7 FROM upd, t
),
dis AS (
  INSERT INTO webhook_endpoints_disabled (endpoint, disabled_at, reason)
  SELECT upd.endpoint, t.now, COALESCE($7, '410 Gone') FROM upd, t WHERE $3 = 4
  ON CONFLICT (endpoint) DO NOTHING
)
SELECT count(*) AS settled FROM upd"
);

const STATS: &str = concat!(
    "SELECT count(*) FILTER (WHERE state = 1) AS pending,
            count(*) FILTER (WHERE state = 2) AS delivered,
            count(*) FILTER (WHERE state = 3) AS exhausted,
            count(*) FILTER (WHERE state = 4) AS disabled,
            (EXTRACT(EPOCH FROM (",
    retry_safe_core::postgres_now!("$1", "$2"),
    " - min(created_at) FILTER (WHERE state = 1))) * 1000000)::bigint AS oldest_us
     FROM webhook_outbox"
);

const PURGE: &str = concat!(
    "DELETE FROM webhook_outbox WHERE id IN (
       SELECT id FROM webhook_outbox
       WHERE state <> 1 AND finished_at <= ",
    retry_safe_core::postgres_now!("$1", "$2"),
    " - $3::bigint * interval '1 microsecond'
       LIMIT $4 FOR UPDATE SKIP LOCKED)"
);

/// The outbox in PostgreSQL: events are enqueued inside the caller's transaction (the business
/// write and its event commit or roll back together), claimed with `FOR UPDATE SKIP LOCKED`
/// under a lease by any number of dispatchers, and every attempt is recorded. Time is the
/// database's (`clock_timestamp()`), so the dispatchers of a fleet share one clock.
/// Cheap to clone: clones share the pool.
///
/// Tables (embedded migrations, [`migrate`](Self::migrate)): `webhook_outbox`,
/// `webhook_attempts`, `webhook_endpoints_disabled`, in the connection's `search_path` schema.
#[derive(Debug, Clone)]
pub struct PostgresOutbox {
    pool: PgPool,
    offset: TimeOffset,
}

fn unavailable(e: sqlx::Error) -> OutboxError {
    OutboxError::Backend(BackendError::Unavailable(Box::new(e)))
}

use retry_safe_core::duration_to_micros_i64 as micros;

/// A row this release cannot read.
fn corrupt_row(what: String) -> OutboxError {
    OutboxError::Backend(BackendError::corrupt(what))
}

impl PostgresOutbox {
    /// Connects a pool of at most 8 connections to `url`.
    pub async fn connect(url: &str) -> Result<Self, SetupError> {
        let options = PgConnectOptions::from_str(url).map_err(SetupError::Connect)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(options)
            .await
            .map_err(SetupError::Connect)?;
        Ok(Self::with_pool(pool))
    }

    /// An outbox on the caller's pool (the application's own, typically).
    pub fn with_pool(pool: PgPool) -> Self {
        Self {
            pool,
            offset: TimeOffset::new(),
        }
    }

    /// Reads time through `offset` (tests advance it to reach scheduled attempts and lease ends
    /// without waiting).
    pub fn with_time_offset(mut self, offset: TimeOffset) -> Self {
        self.offset = offset;
        self
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded migrations (idempotent; safe at every start). They are recorded in
    /// their own table, `_webhook_delivery_migrations`.
    pub async fn migrate(&self) -> Result<(), SetupError> {
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&self.pool).await.map_err(SetupError::Migrate)
    }

    fn pinned(&self) -> Option<i64> {
        self.offset.pinned().map(micros)
    }

    fn offset_us(&self) -> i64 {
        micros(self.offset.get())
    }

    /// Queues `event` inside the caller's transaction: pass `&mut *tx` (or any connection). The
    /// event exists only if the transaction commits, and dispatchers see it from then on.
    /// `false` when the same (endpoint, id) is already queued.
    ///
    /// ```no_run
    /// # use webhook_delivery::{WebhookEvent, PostgresOutbox};
    /// # async fn run(outbox: PostgresOutbox) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = outbox.pool().begin().await?;
    /// sqlx::query("INSERT INTO orders (id) VALUES ('ord_1')").execute(&mut *tx).await?;
    /// outbox
    ///     .enqueue_in(&mut *tx, &WebhookEvent::new("orders-hook", "evt_ord_1", r#"{"id":"ord_1"}"#)?)
    ///     .await?;
    /// tx.commit().await?; // the order and its event, or neither
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_in<'c, E>(
        &self,
        executor: E,
        event: &WebhookEvent,
    ) -> Result<bool, OutboxError>
    where
        E: sqlx::PgExecutor<'c>,
    {
        let row = sqlx::query(ENQUEUE)
            .bind(&event.endpoint)
            .bind(&event.id)
            .bind(&event.content_type)
            .bind(event.payload.as_ref())
            .bind(self.pinned())
            .bind(self.offset_us())
            .fetch_optional(executor)
            .await
            .map_err(unavailable)?;
        Ok(row.is_some())
    }
}

fn claimed_of(row: &PgRow) -> Result<Claimed, OutboxError> {
    let get = |e: sqlx::Error| corrupt_row(e.to_string());
    let payload: Vec<u8> = row.try_get("payload").map_err(get)?;
    let attempts: i32 = row.try_get("attempts").map_err(get)?;
    let age_us: Option<i64> = row.try_get("age_us").map_err(get)?;
    Ok(Claimed {
        event: WebhookEvent {
            id: row.try_get("event_id").map_err(get)?,
            endpoint: row.try_get("endpoint").map_err(get)?,
            payload: payload.into(),
            content_type: row.try_get("content_type").map_err(get)?,
        },
        attempts: u32::try_from(attempts)
            .map_err(|_| corrupt_row(format!("attempts {attempts}")))?,
        row: row.try_get("id").map_err(get)?,
        claim: row.try_get("claim").map_err(get)?,
        age: Duration::from_micros(age_us.unwrap_or(0).max(0).unsigned_abs()),
    })
}

fn state_of(code: i16) -> Result<EventState, OutboxError> {
    Ok(match code {
        1 => EventState::Pending,
        2 => EventState::Delivered,
        3 => EventState::Exhausted,
        4 => EventState::EndpointDisabled,
        other => return Err(corrupt_row(format!("state {other}"))),
    })
}

fn count(row: &PgRow, column: &str) -> Result<u64, OutboxError> {
    let n: i64 = row
        .try_get(column)
        .map_err(|e| corrupt_row(e.to_string()))?;
    Ok(n.max(0).unsigned_abs())
}

#[async_trait]
impl Outbox for PostgresOutbox {
    async fn enqueue(&self, event: &WebhookEvent) -> Result<bool, OutboxError> {
        self.enqueue_in(&self.pool, event).await
    }

    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Claimed>, OutboxError> {
        let rows = sqlx::query(CLAIM)
            .bind(self.pinned())
            .bind(self.offset_us())
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .bind(micros(lease))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        // A batch is delivered concurrently: its order within does not matter.
        rows.iter().map(claimed_of).collect()
    }

    async fn settle(
        &self,
        claimed: &Claimed,
        attempt: &DeliveryAttempt,
        next: NextStep,
    ) -> Result<bool, OutboxError> {
        let (state, delay): (i16, i64) = match next {
            NextStep::RetryIn(delay) => (1, micros(delay)),
            NextStep::Delivered => (2, 0),
            NextStep::Exhausted => (3, 0),
            NextStep::DisableEndpoint => (4, 0),
        };
        let row = sqlx::query(SETTLE)
            .bind(claimed.row)
            .bind(claimed.claim)
            .bind(state)
            .bind(delay)
            .bind(attempt.status.map(|s| i16::try_from(s).unwrap_or(i16::MAX)))
            .bind(micros(attempt.latency))
            .bind(attempt.error.as_deref())
            .bind(self.pinned())
            .bind(self.offset_us())
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(count(&row, "settled")? == 1)
    }

    async fn enable_endpoint(&self, endpoint: &str) -> Result<bool, OutboxError> {
        let done = sqlx::query("DELETE FROM webhook_endpoints_disabled WHERE endpoint = $1")
            .bind(endpoint)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() > 0)
    }

    async fn disabled_endpoints(&self) -> Result<Vec<String>, OutboxError> {
        sqlx::query_scalar("SELECT endpoint FROM webhook_endpoints_disabled ORDER BY endpoint")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn status(&self, endpoint: &str, id: &str) -> Result<Option<EventStatus>, OutboxError> {
        let rows = sqlx::query(
            "SELECT o.state, a.attempt, a.status, a.latency_us, a.error,
                    (EXTRACT(EPOCH FROM a.at) * 1000000)::bigint AS at_us
             FROM webhook_outbox o LEFT JOIN webhook_attempts a ON a.outbox_id = o.id
             WHERE o.endpoint = $1 AND o.event_id = $2
             ORDER BY a.attempt",
        )
        .bind(endpoint)
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let corrupt = |e: sqlx::Error| corrupt_row(e.to_string());
        let state = state_of(first.try_get("state").map_err(corrupt)?)?;
        let mut attempts = Vec::new();
        for row in &rows {
            let Some(number) = row.try_get::<Option<i32>, _>("attempt").map_err(corrupt)? else {
                continue;
            };
            let status: Option<i16> = row.try_get("status").map_err(corrupt)?;
            let latency_us: i64 = row.try_get("latency_us").map_err(corrupt)?;
            let at_us: i64 = row.try_get("at_us").map_err(corrupt)?;
            attempts.push(AttemptRecord {
                attempt: DeliveryAttempt::new(
                    u32::try_from(number).unwrap_or(0),
                    status.and_then(|s| u16::try_from(s).ok()),
                    Duration::from_micros(latency_us.max(0).unsigned_abs()),
                    row.try_get("error").map_err(corrupt)?,
                ),
                at: UNIX_EPOCH + Duration::from_micros(at_us.max(0).unsigned_abs()),
            });
        }
        Ok(Some(EventStatus { state, attempts }))
    }

    async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let row = sqlx::query(STATS)
            .bind(self.pinned())
            .bind(self.offset_us())
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let oldest: Option<i64> = row
            .try_get("oldest_us")
            .map_err(|e| corrupt_row(e.to_string()))?;
        Ok(OutboxStats {
            pending: count(&row, "pending")?,
            delivered: count(&row, "delivered")?,
            exhausted: count(&row, "exhausted")?,
            disabled: count(&row, "disabled")?,
            oldest_pending: oldest.map(|us| Duration::from_micros(us.max(0).unsigned_abs())),
        })
    }

    async fn purge_finished(&self, older_than: Duration) -> Result<u64, OutboxError> {
        let mut total = 0u64;
        loop {
            let done = sqlx::query(PURGE)
                .bind(self.pinned())
                .bind(self.offset_us())
                .bind(micros(older_than))
                .bind(PURGE_BATCH)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            total += done.rows_affected();
            if done.rows_affected() < PURGE_BATCH.unsigned_abs() {
                return Ok(total);
            }
        }
    }
}
