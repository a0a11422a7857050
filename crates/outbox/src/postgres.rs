//! The transactional outbox on PostgreSQL.

use crate::store::{
    AttemptNote, AttemptRecord, Claimed, DeadLetter, EventState, EventStatus, Outbox, OutboxError,
    OutboxStats, Outcome, Settlement,
};
use crate::Event;
use async_trait::async_trait;
use retry_safe_core::duration_to_micros_i64 as micros;
use retry_safe_core::{postgres_now, BackendError, TimeOffset};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;

pub use sqlx;

/// Rows deleted per statement by [`Outbox::purge_published`].
const PURGE_BATCH: i64 = 1_000;

/// The table that records which of this crate's migrations ran (its own, so that other crates'
/// migrations in the same schema never meet these).
const MIGRATIONS_TABLE: &str = "_outbox_migrations";

/// Connecting or migrating failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The URL is not a PostgreSQL URL, or the server could not be reached.
    #[error("could not connect to PostgreSQL")]
    Connect(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("could not apply the outbox's migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// `enqueue`: $1 topic, $2 event id, $3 aggregate, $4 payload, $5 header names, $6 header
/// values, $7 delay µs, $8 pinned, $9 offset.
const ENQUEUE: &str = concat!(
    "INSERT INTO outbox_events (topic, event_id, aggregate, payload, header_names, header_values,
                                due_at, created_at)
     SELECT $1, $2, $3, $4, $5, $6, t.now + $7::bigint * interval '1 microsecond', t.now
     FROM (SELECT ",
    postgres_now!("$8", "$9"),
    " AS now) t
     ON CONFLICT (topic, event_id) DO NOTHING
     RETURNING id"
);

/// The relay's own statements (claim, settle) commit without waiting for the WAL flush
/// (`synchronous_commit = off` for their transaction alone): a claim or a settle lost to a
/// database crash only makes the event due again, and it is published again, which the broker's
/// dedupe window and the consumer's inbox absorb. The enqueue, the business transaction's, keeps
/// the server's setting.
macro_rules! no_flush {
    () => {
        "set_config('synchronous_commit', 'off', true) AS no_flush"
    };
}

/// `claim`: $1 pinned, $2 offset, $3 max rows, $4 lease µs, $5 the topics claimed (NULL: all). Due pending rows, oldest due first,
/// of each aggregate only its oldest pending one; locked with `SKIP LOCKED` so concurrent
/// claimants take disjoint rows; each gets a new fence and is due again at the end of the lease.
/// An aggregate's second event is not claimable while its first is pending, whoever holds the
/// first, so two relays never hold events of one aggregate at once.
const CLAIM: &str = concat!(
    "WITH t AS (SELECT ",
    postgres_now!("$1", "$2"),
    " AS now, ",
    no_flush!(),
    "),
due AS (
  SELECT o.id FROM outbox_events o
  WHERE o.state = 1 AND o.due_at <= (SELECT now FROM t)
    AND (o.aggregate IS NULL OR NOT EXISTS (
      SELECT 1 FROM outbox_events p
      WHERE p.state = 1 AND p.aggregate = o.aggregate AND p.id < o.id))
    AND NOT EXISTS (SELECT 1 FROM outbox_paused_topics pt WHERE pt.topic = o.topic)
    AND ($5::text[] IS NULL OR o.topic = ANY($5))
  ORDER BY o.due_at, o.id
  LIMIT $3
  FOR UPDATE OF o SKIP LOCKED
)
UPDATE outbox_events o
SET due_at = t.now + $4::bigint * interval '1 microsecond',
    claim = nextval('outbox_claim_seq')
FROM due, t
WHERE o.id = due.id
RETURNING o.id, o.claim, o.topic, o.event_id, o.aggregate, o.payload, o.header_names,
          o.header_values, o.attempts,
          (EXTRACT(EPOCH FROM (t.now - o.created_at)) * 1000000)::bigint AS age_us"
);

/// `settle`: $1 rows, $2 claims, $3 outcomes (1 retry, 2 published, 3 dead, 4 gone), $4 retry
/// delays µs, $5 errors, $6 pinned, $7 offset, $8 whether to record the attempt, $9 statuses,
/// $10 latencies µs. One statement for the whole batch, each row guarded by its claim: the rows,
/// the recorded attempts, and the topics a "gone" pauses.
const SETTLE: &str = concat!(
    "WITH t AS (SELECT ",
    postgres_now!("$6", "$7"),
    " AS now, ",
    no_flush!(),
    "),
s AS (
  SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::smallint[], $4::bigint[], $5::text[],
                       $8::bool[], $9::smallint[], $10::bigint[])
    AS s(id, claim, outcome, delay_us, error, noted, status, latency_us)
),
upd AS (
  UPDATE outbox_events o SET
    attempts = o.attempts + 1,
    state = CASE WHEN s.outcome = 4 THEN 3 ELSE s.outcome END,
    due_at = CASE WHEN s.outcome = 1 THEN t.now + s.delay_us * interval '1 microsecond'
                  ELSE o.due_at END,
    finished_at = CASE WHEN s.outcome = 1 THEN NULL ELSE t.now END,
    last_error = s.error
  FROM s, t
  WHERE o.id = s.id AND o.claim = s.claim AND o.state = 1
  RETURNING o.id, o.topic, o.attempts
),
att AS (
  INSERT INTO outbox_attempts (event_row, attempt, at, status, latency_us, error)
  SELECT upd.id, upd.attempts, t.now, s.status, s.latency_us, s.error
  FROM upd JOIN s ON s.id = upd.id, t WHERE s.noted
),
gone AS (
  INSERT INTO outbox_paused_topics (topic, paused_at, reason)
  SELECT DISTINCT ON (upd.topic) upd.topic, t.now, COALESCE(s.error, 'gone')
  FROM upd JOIN s ON s.id = upd.id, t WHERE s.outcome = 4
  ON CONFLICT (topic) DO NOTHING
)
SELECT count(*) AS settled FROM upd"
);

/// `replay`: $1 topic (NULL: all), $2 event id (NULL: all), $3 pinned, $4 offset.
const REPLAY: &str = concat!(
    "UPDATE outbox_events SET state = 1, attempts = 0, finished_at = NULL, due_at = ",
    postgres_now!("$3", "$4"),
    "
     WHERE state = 3 AND ($1::text IS NULL OR topic = $1) AND ($2::text IS NULL OR event_id = $2)"
);

const STATS: &str = concat!(
    "SELECT count(*) FILTER (WHERE state = 1) AS pending,
            count(*) FILTER (WHERE state = 2) AS published,
            count(*) FILTER (WHERE state = 3) AS dead,
            (SELECT count(*) FROM outbox_paused_topics) AS paused,
            (EXTRACT(EPOCH FROM (",
    postgres_now!("$1", "$2"),
    " - min(created_at) FILTER (WHERE state = 1))) * 1000000)::bigint AS oldest_us
     FROM outbox_events"
);

const PURGE: &str = concat!(
    "DELETE FROM outbox_events WHERE id IN (
       SELECT id FROM outbox_events
       WHERE state = 2 AND finished_at <= ",
    postgres_now!("$1", "$2"),
    " - $3::bigint * interval '1 microsecond'
       LIMIT $4 FOR UPDATE SKIP LOCKED)"
);

/// The outbox in PostgreSQL: events are enqueued inside the caller's transaction (the business
/// write and its event commit or roll back together) and claimed with `FOR UPDATE SKIP LOCKED`
/// under a lease by any number of relays. Time is the database's (`clock_timestamp()`), so the
/// relays of a fleet share one clock. Cheap to clone: clones share the pool.
///
/// Tables (embedded migrations, [`migrate`](Self::migrate)): `outbox_events` and, for
/// [`PgInbox`](crate::PgInbox), `outbox_inbox`, in the connection's `search_path` schema.
#[derive(Debug, Clone)]
pub struct PostgresOutbox {
    pool: PgPool,
    offset: TimeOffset,
    /// The topics `claim` hands out (`None`: all).
    topics: Option<Vec<String>>,
}

pub(crate) fn unavailable(e: sqlx::Error) -> OutboxError {
    OutboxError::Backend(BackendError::Unavailable(Box::new(e)))
}

/// A row this release cannot read.
fn corrupt(e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Backend(BackendError::corrupt(e.to_string()))
}

/// Connects a pool of at most 8 connections to `url`.
pub(crate) async fn connect(url: &str) -> Result<PgPool, SetupError> {
    let options = PgConnectOptions::from_str(url).map_err(SetupError::Connect)?;
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options)
        .await
        .map_err(SetupError::Connect)
}

impl PostgresOutbox {
    /// Connects a pool of at most 8 connections to `url`.
    pub async fn connect(url: &str) -> Result<Self, SetupError> {
        Ok(Self::with_pool(connect(url).await?))
    }

    /// An outbox on the caller's pool (the application's own, typically).
    pub fn with_pool(pool: PgPool) -> Self {
        Self {
            pool,
            offset: TimeOffset::new(),
            topics: None,
        }
    }

    /// The same outbox, claiming only the events of `topics` (the other calls still see every
    /// event): one table for webhooks and broker events, with a webhook dispatcher claiming its
    /// endpoints' topics and a relay claiming the broker's.
    pub fn only_topics<T: Into<String>>(mut self, topics: impl IntoIterator<Item = T>) -> Self {
        self.topics = Some(topics.into_iter().map(Into::into).collect());
        self
    }

    /// Reads time through `offset` (tests advance it to reach backoffs and lease ends without
    /// waiting).
    pub fn with_time_offset(mut self, offset: TimeOffset) -> Self {
        self.offset = offset;
        self
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded migrations (idempotent; safe at every start). They are recorded in
    /// their own table, `_outbox_migrations`.
    pub async fn migrate(&self) -> Result<(), SetupError> {
        migrate(&self.pool).await
    }

    fn pinned(&self) -> Option<i64> {
        self.offset.pinned().map(micros)
    }

    fn offset_us(&self) -> i64 {
        micros(self.offset.get())
    }

    /// Queues `event` inside the caller's transaction: pass `&mut *tx` (or any connection). The
    /// event exists only if the transaction commits, and relays see it from then on. `false`
    /// when the same (topic, id) is already queued.
    ///
    /// Per-aggregate order is the order of the rows' ids, which PostgreSQL hands out when the
    /// row is inserted, not when its transaction commits: two transactions that enqueue for one
    /// aggregate must serialize on the aggregate itself (they do when both update its row
    /// first, as a business write does), or a relay may publish the later one first.
    ///
    /// ```no_run
    /// # use outbox::{Event, PostgresOutbox};
    /// # async fn run(outbox: PostgresOutbox) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = outbox.pool().begin().await?;
    /// sqlx::query("INSERT INTO orders (id) VALUES ('ord_1')").execute(&mut *tx).await?;
    /// let event = Event::new("orders.created", "evt_ord_1", r#"{"id":"ord_1"}"#)?
    ///     .aggregate("order:ord_1")?;
    /// outbox.enqueue_in(&mut *tx, &event).await?;
    /// tx.commit().await?; // the order and its event, or neither
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_in<'c, E>(&self, executor: E, event: &Event) -> Result<bool, OutboxError>
    where
        E: sqlx::PgExecutor<'c>,
    {
        let (names, values): (Vec<&str>, Vec<&str>) = event
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .unzip();
        let row = sqlx::query(ENQUEUE)
            .bind(&event.topic)
            .bind(&event.id)
            .bind(event.aggregate.as_deref())
            .bind(event.payload.as_ref())
            .bind(names)
            .bind(values)
            .bind(micros(event.delay))
            .bind(self.pinned())
            .bind(self.offset_us())
            .fetch_optional(executor)
            .await
            .map_err(unavailable)?;
        Ok(row.is_some())
    }

    async fn replay_where(
        &self,
        topic: Option<&str>,
        id: Option<&str>,
    ) -> Result<u64, OutboxError> {
        let done = sqlx::query(REPLAY)
            .bind(topic)
            .bind(id)
            .bind(self.pinned())
            .bind(self.offset_us())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected())
    }
}

/// Applies the embedded migrations on `pool`.
pub(crate) async fn migrate(pool: &PgPool) -> Result<(), SetupError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator.run(pool).await.map_err(SetupError::Migrate)
}

fn event_of(row: &PgRow) -> Result<Event, OutboxError> {
    let payload: Vec<u8> = row.try_get("payload").map_err(corrupt)?;
    let names: Vec<String> = row.try_get("header_names").map_err(corrupt)?;
    let values: Vec<String> = row.try_get("header_values").map_err(corrupt)?;
    Ok(Event {
        id: row.try_get("event_id").map_err(corrupt)?,
        topic: row.try_get("topic").map_err(corrupt)?,
        aggregate: row.try_get("aggregate").map_err(corrupt)?,
        payload: payload.into(),
        headers: names.into_iter().zip(values).collect(),
        delay: Duration::ZERO,
    })
}

fn attempts_of(row: &PgRow) -> Result<u32, OutboxError> {
    let attempts: i32 = row.try_get("attempts").map_err(corrupt)?;
    u32::try_from(attempts).map_err(|_| corrupt(format!("attempts {attempts}")))
}

fn claimed_of(row: &PgRow) -> Result<Claimed, OutboxError> {
    let age_us: Option<i64> = row.try_get("age_us").map_err(corrupt)?;
    Ok(Claimed {
        event: event_of(row)?,
        attempts: attempts_of(row)?,
        row: row.try_get("id").map_err(corrupt)?,
        claim: row.try_get("claim").map_err(corrupt)?,
        age: Duration::from_micros(age_us.unwrap_or(0).max(0).unsigned_abs()),
    })
}

fn state_of(code: i16) -> Result<EventState, OutboxError> {
    Ok(match code {
        1 => EventState::Pending,
        2 => EventState::Published,
        3 => EventState::Dead,
        other => return Err(corrupt(format!("state {other}"))),
    })
}

fn count(row: &PgRow, column: &str) -> Result<u64, OutboxError> {
    let n: i64 = row.try_get(column).map_err(corrupt)?;
    Ok(n.max(0).unsigned_abs())
}

/// The settle statement's arrays, one element per settlement.
#[derive(Default)]
struct SettleArrays<'a> {
    rows: Vec<i64>,
    claims: Vec<i64>,
    outcomes: Vec<i16>,
    delays: Vec<i64>,
    errors: Vec<Option<&'a str>>,
    noted: Vec<bool>,
    statuses: Vec<Option<i16>>,
    latencies: Vec<i64>,
}

impl<'a> SettleArrays<'a> {
    fn of(settlements: &'a [Settlement<'a>]) -> Self {
        let mut a = Self::default();
        for s in settlements {
            let (outcome, delay, error) = match &s.outcome {
                Outcome::Published => (2, 0, None),
                Outcome::RetryIn(delay, error) => (1, micros(*delay), Some(error.as_str())),
                Outcome::Dead(error) => (3, 0, Some(error.as_str())),
                Outcome::Gone(error) => (4, 0, Some(error.as_str())),
            };
            let note = s.attempt.unwrap_or_default();
            a.rows.push(s.claimed.row);
            a.claims.push(s.claimed.claim);
            a.outcomes.push(outcome);
            a.delays.push(delay);
            a.errors.push(error);
            a.noted.push(s.attempt.is_some());
            a.statuses
                .push(note.status.map(|v| i16::try_from(v).unwrap_or(i16::MAX)));
            a.latencies.push(micros(note.latency));
        }
        a
    }
}

fn attempt_of(row: &PgRow) -> Result<AttemptRecord, OutboxError> {
    let number: i32 = row.try_get("attempt").map_err(corrupt)?;
    let status: Option<i16> = row.try_get("status").map_err(corrupt)?;
    let latency_us: i64 = row.try_get("latency_us").map_err(corrupt)?;
    let at_us: i64 = row.try_get("at_us").map_err(corrupt)?;
    Ok(AttemptRecord {
        number: u32::try_from(number).map_err(|_| corrupt(format!("attempt {number}")))?,
        at: std::time::UNIX_EPOCH + Duration::from_micros(at_us.max(0).unsigned_abs()),
        note: AttemptNote::new(
            status.and_then(|s| u16::try_from(s).ok()),
            Duration::from_micros(latency_us.max(0).unsigned_abs()),
        ),
        error: row.try_get("error").map_err(corrupt)?,
    })
}

#[async_trait]
impl Outbox for PostgresOutbox {
    async fn enqueue(&self, event: &Event) -> Result<bool, OutboxError> {
        self.enqueue_in(&self.pool, event).await
    }

    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Claimed>, OutboxError> {
        let rows = sqlx::query(CLAIM)
            .bind(self.pinned())
            .bind(self.offset_us())
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .bind(micros(lease))
            .bind(self.topics.as_deref())
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        // A batch holds one event per aggregate: its order within does not matter.
        rows.iter().map(claimed_of).collect()
    }

    async fn settle(&self, settlements: &[Settlement<'_>]) -> Result<usize, OutboxError> {
        if settlements.is_empty() {
            return Ok(0);
        }
        let a = SettleArrays::of(settlements);
        let row = sqlx::query(SETTLE)
            .bind(a.rows)
            .bind(a.claims)
            .bind(a.outcomes)
            .bind(a.delays)
            .bind(a.errors)
            .bind(self.pinned())
            .bind(self.offset_us())
            .bind(a.noted)
            .bind(a.statuses)
            .bind(a.latencies)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(usize::try_from(count(&row, "settled")?).unwrap_or(usize::MAX))
    }

    async fn status(&self, topic: &str, id: &str) -> Result<Option<EventStatus>, OutboxError> {
        let row = sqlx::query(
            "SELECT state, attempts, last_error FROM outbox_events
             WHERE topic = $1 AND event_id = $2",
        )
        .bind(topic)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(EventStatus {
            state: state_of(row.try_get("state").map_err(corrupt)?)?,
            attempts: attempts_of(&row)?,
            last_error: row.try_get("last_error").map_err(corrupt)?,
        }))
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, OutboxError> {
        let rows = sqlx::query(
            "SELECT topic, event_id, attempts, last_error FROM outbox_events
             WHERE state = 3 ORDER BY id LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    topic: row.try_get("topic").map_err(corrupt)?,
                    id: row.try_get("event_id").map_err(corrupt)?,
                    attempts: attempts_of(row)?,
                    last_error: row.try_get("last_error").map_err(corrupt)?,
                })
            })
            .collect()
    }

    async fn replay(&self, topic: &str, id: &str) -> Result<bool, OutboxError> {
        Ok(self.replay_where(Some(topic), Some(id)).await? > 0)
    }

    async fn replay_dead(&self, topic: Option<&str>) -> Result<u64, OutboxError> {
        self.replay_where(topic, None).await
    }

    async fn attempts(&self, topic: &str, id: &str) -> Result<Vec<AttemptRecord>, OutboxError> {
        let rows = sqlx::query(
            "SELECT a.attempt, a.status, a.latency_us, a.error,
                    (EXTRACT(EPOCH FROM a.at) * 1000000)::bigint AS at_us
             FROM outbox_attempts a JOIN outbox_events o ON o.id = a.event_row
             WHERE o.topic = $1 AND o.event_id = $2 ORDER BY a.attempt",
        )
        .bind(topic)
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(attempt_of).collect()
    }

    async fn resume_topic(&self, topic: &str) -> Result<bool, OutboxError> {
        let done = sqlx::query("DELETE FROM outbox_paused_topics WHERE topic = $1")
            .bind(topic)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() > 0)
    }

    async fn paused_topics(&self) -> Result<Vec<String>, OutboxError> {
        sqlx::query_scalar("SELECT topic FROM outbox_paused_topics ORDER BY topic")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let row = sqlx::query(STATS)
            .bind(self.pinned())
            .bind(self.offset_us())
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let oldest: Option<i64> = row.try_get("oldest_us").map_err(corrupt)?;
        Ok(OutboxStats {
            pending: count(&row, "pending")?,
            published: count(&row, "published")?,
            dead: count(&row, "dead")?,
            paused_topics: count(&row, "paused")?,
            oldest_pending: oldest.map(|us| Duration::from_micros(us.max(0).unsigned_abs())),
        })
    }

    async fn purge_published(&self, older_than: Duration) -> Result<u64, OutboxError> {
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
