//! Background jobs on PostgreSQL: what a `202 Accepted` answer stands for.

use crate::postgres::unavailable;
use crate::OutboxError;
use bytes::Bytes;
use retry_safe_core::duration_to_micros_i64 as micros;
use retry_safe_core::{postgres_now, BackendError, TimeOffset};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use std::time::Duration;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for a worker (first attempt, or again after a failed one).
    Pending,
    /// A worker holds it under a lease.
    Running,
    /// Finished; its result says where (a resource's path, for `303 See Other`).
    Done,
    /// Every attempt failed.
    Failed,
}

impl JobState {
    /// The name used in a status document: `pending`, `running`, `done`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// A job's state, as [`JobQueue::status`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobStatus {
    /// Its kind.
    pub kind: String,
    /// Its state.
    pub state: JobState,
    /// Attempts started.
    pub attempts: u32,
    /// What a finished job produced (a path, typically).
    pub result: Option<String>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A job a worker holds: nobody else runs it until the lease runs out (a worker that dies or
/// freezes loses it), and only this claim can finish it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimedJob {
    /// The job's id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Its input.
    pub payload: Bytes,
    /// This attempt's number (1 = the first).
    pub attempt: u32,
    /// The claim's fence: finishing with an older claim is refused.
    pub fence: i64,
}

/// Jobs in PostgreSQL (`outbox_jobs`, the outbox's migrations): enqueued in the caller's
/// transaction (typically the request's, answering `202 Accepted` with `Location: /jobs/{id}`),
/// claimed by workers with `FOR UPDATE SKIP LOCKED` under a lease they renew with
/// [`heartbeat`](Self::heartbeat), finished with [`complete_in`](Self::complete_in) in the
/// worker's own transaction — so the job's effect and its "done" commit together, and a worker
/// that lost its lease (frozen, then overtaken) cannot commit a second effect: its completion
/// finds another fence and the caller rolls back.
///
/// ```no_run
/// use outbox::JobQueue;
/// use std::time::Duration;
///
/// # async fn run(jobs: JobQueue) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = jobs.pool().begin().await?;
/// jobs.enqueue_in(&mut *tx, "job_1", "create-order", br#"{"sku":"a"}"#.as_slice()).await?;
/// tx.commit().await?; // answer 202, Location: /jobs/job_1
///
/// // A worker:
/// if let Some(job) = jobs.claim("create-order", Duration::from_secs(30)).await? {
///     let mut tx = jobs.pool().begin().await?;
///     sqlx::query("INSERT INTO orders (id) VALUES ('ord_1')").execute(&mut *tx).await?;
///     if jobs.complete_in(&mut *tx, &job, "/orders/ord_1").await? {
///         tx.commit().await?;
///     } // else the lease was lost: dropping `tx` rolls the order back
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct JobQueue {
    pool: PgPool,
    offset: TimeOffset,
    max_attempts: u32,
    retry_delay: Duration,
}

const ENQUEUE: &str = concat!(
    "INSERT INTO outbox_jobs (id, kind, payload, max_attempts, due_at, created_at, updated_at)
     SELECT $1, $2, $3, $4, t.now, t.now, t.now FROM (SELECT ",
    postgres_now!("$5", "$6"),
    " AS now) t ON CONFLICT (id) DO NOTHING RETURNING id"
);

/// `claim`: $1 kind, $2 lease µs, $3 pinned, $4 offset. A pending job that is due, or a running
/// one whose lease ran out.
const CLAIM: &str = concat!(
    "WITH t AS (SELECT ",
    postgres_now!("$3", "$4"),
    " AS now),
next AS (
  SELECT j.id FROM outbox_jobs j
  WHERE j.kind = $1 AND j.state IN (1, 2) AND j.due_at <= (SELECT now FROM t)
    AND j.attempts < j.max_attempts
  ORDER BY j.due_at LIMIT 1
  FOR UPDATE SKIP LOCKED
)
UPDATE outbox_jobs j SET state = 2, attempts = j.attempts + 1,
  fence = nextval('outbox_job_fence_seq'),
  due_at = t.now + $2::bigint * interval '1 microsecond', updated_at = t.now
FROM next, t WHERE j.id = next.id
RETURNING j.id, j.kind, j.payload, j.attempts, j.fence"
);

/// `heartbeat`: $1 id, $2 fence, $3 lease µs, $4 pinned, $5 offset.
const HEARTBEAT: &str = concat!(
    "UPDATE outbox_jobs SET due_at = t.now + $3::bigint * interval '1 microsecond', updated_at = t.now
     FROM (SELECT ",
    postgres_now!("$4", "$5"),
    " AS now) t
     WHERE id = $1 AND fence = $2 AND state = 2 AND due_at > t.now"
);

/// `complete`: $1 id, $2 fence, $3 result, $4 pinned, $5 offset. Only while the lease holds.
const COMPLETE: &str = concat!(
    "UPDATE outbox_jobs SET state = 3, result = $3, last_error = NULL, updated_at = t.now
     FROM (SELECT ",
    postgres_now!("$4", "$5"),
    " AS now) t
     WHERE id = $1 AND fence = $2 AND state = 2 AND due_at > t.now"
);

/// `fail`: $1 id, $2 fence, $3 error, $4 retry delay µs, $5 pinned, $6 offset. Pending again
/// (due after the delay) while attempts remain, failed after the last.
const FAIL: &str = concat!(
    "UPDATE outbox_jobs SET
       state = CASE WHEN attempts < max_attempts THEN 1 ELSE 4 END,
       due_at = t.now + $4::bigint * interval '1 microsecond',
       last_error = $3, updated_at = t.now
     FROM (SELECT ",
    postgres_now!("$5", "$6"),
    " AS now) t
     WHERE id = $1 AND fence = $2 AND state = 2"
);

/// `status`: $1 id, $2 pinned, $3 offset. A running job whose last attempt's lease ran out is
/// failed: no worker will claim it again.
const STATUS: &str = concat!(
    "SELECT kind, attempts, result,
            CASE WHEN state = 2 AND due_at <= t.now AND attempts >= max_attempts THEN 4::smallint
                 ELSE state END AS state,
            CASE WHEN state = 2 AND due_at <= t.now AND attempts >= max_attempts
                 THEN 'the last attempt''s worker stopped (its lease ran out)'
                 ELSE last_error END AS last_error
     FROM outbox_jobs, (SELECT ",
    postgres_now!("$2", "$3"),
    " AS now) t WHERE id = $1"
);

fn corrupt(e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Backend(BackendError::corrupt(e.to_string()))
}

fn state_of(code: i16) -> Result<JobState, OutboxError> {
    Ok(match code {
        1 => JobState::Pending,
        2 => JobState::Running,
        3 => JobState::Done,
        4 => JobState::Failed,
        other => return Err(corrupt(format!("job state {other}"))),
    })
}

fn count_of(row: &PgRow, column: &str) -> Result<u32, OutboxError> {
    let n: i32 = row.try_get(column).map_err(corrupt)?;
    u32::try_from(n).map_err(|_| corrupt(format!("{column} {n}")))
}

impl JobQueue {
    /// Jobs on `pool` (migrate it with `PostgresOutbox::migrate` or
    /// [`migrate`](Self::migrate)): 3 attempts, 5 s between them.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            offset: TimeOffset::new(),
            max_attempts: 3,
            retry_delay: Duration::from_secs(5),
        }
    }

    /// Reads time through `offset` (tests reach lease ends without waiting).
    pub fn with_time_offset(mut self, offset: TimeOffset) -> Self {
        self.offset = offset;
        self
    }

    /// Attempts per job (at least 1) for jobs enqueued from now on.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The wait before a failed job's next attempt.
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the outbox's migrations (they include the jobs table).
    pub async fn migrate(&self) -> Result<(), crate::SetupError> {
        crate::postgres::migrate(&self.pool).await
    }

    fn now_args(&self) -> (Option<i64>, i64) {
        (self.offset.pinned().map(micros), micros(self.offset.get()))
    }

    /// Queues job `id` of `kind` in the caller's transaction; `false` when `id` exists (a
    /// retried request that already queued it: derive `id` from the idempotency key).
    pub async fn enqueue_in<'c, E: sqlx::PgExecutor<'c>>(
        &self,
        executor: E,
        id: &str,
        kind: &str,
        payload: &[u8],
    ) -> Result<bool, OutboxError> {
        let (pinned, offset) = self.now_args();
        let row = sqlx::query(ENQUEUE)
            .bind(id)
            .bind(kind)
            .bind(payload)
            .bind(i32::try_from(self.max_attempts).unwrap_or(i32::MAX))
            .bind(pinned)
            .bind(offset)
            .fetch_optional(executor)
            .await
            .map_err(unavailable)?;
        Ok(row.is_some())
    }

    /// Claims the next due job of `kind` for `lease`.
    pub async fn claim(
        &self,
        kind: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedJob>, OutboxError> {
        let (pinned, offset) = self.now_args();
        let row = sqlx::query(CLAIM)
            .bind(kind)
            .bind(micros(lease))
            .bind(pinned)
            .bind(offset)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let Some(row) = row else { return Ok(None) };
        let payload: Vec<u8> = row.try_get("payload").map_err(corrupt)?;
        Ok(Some(ClaimedJob {
            id: row.try_get("id").map_err(corrupt)?,
            kind: row.try_get("kind").map_err(corrupt)?,
            payload: payload.into(),
            attempt: count_of(&row, "attempts")?,
            fence: row.try_get("fence").map_err(corrupt)?,
        }))
    }

    /// Extends the lease of `job` to `lease` from now; `false` when it was lost (ran out, or
    /// another worker holds the job): stop working on it.
    pub async fn heartbeat(&self, job: &ClaimedJob, lease: Duration) -> Result<bool, OutboxError> {
        let (pinned, offset) = self.now_args();
        let done = sqlx::query(HEARTBEAT)
            .bind(&job.id)
            .bind(job.fence)
            .bind(micros(lease))
            .bind(pinned)
            .bind(offset)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks `job` done with `result`, in the worker's transaction; `false` when its lease was
    /// lost: roll the transaction back (the job's effect must not commit).
    pub async fn complete_in<'c, E: sqlx::PgExecutor<'c>>(
        &self,
        executor: E,
        job: &ClaimedJob,
        result: &str,
    ) -> Result<bool, OutboxError> {
        let (pinned, offset) = self.now_args();
        let done = sqlx::query(COMPLETE)
            .bind(&job.id)
            .bind(job.fence)
            .bind(result)
            .bind(pinned)
            .bind(offset)
            .execute(executor)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    /// Records that this attempt of `job` failed: pending again after the retry delay while
    /// attempts remain, failed after the last; `false` when the claim was lost.
    pub async fn fail(&self, job: &ClaimedJob, error: &str) -> Result<bool, OutboxError> {
        let (pinned, offset) = self.now_args();
        let done = sqlx::query(FAIL)
            .bind(&job.id)
            .bind(job.fence)
            .bind(error)
            .bind(micros(self.retry_delay))
            .bind(pinned)
            .bind(offset)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    /// The state of job `id`, if it exists.
    pub async fn status(&self, id: &str) -> Result<Option<JobStatus>, OutboxError> {
        let (pinned, offset) = self.now_args();
        let row = sqlx::query(STATUS)
            .bind(id)
            .bind(pinned)
            .bind(offset)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(JobStatus {
            kind: row.try_get("kind").map_err(corrupt)?,
            state: state_of(row.try_get("state").map_err(corrupt)?)?,
            attempts: count_of(&row, "attempts")?,
            result: row.try_get("result").map_err(corrupt)?,
            last_error: row.try_get("last_error").map_err(corrupt)?,
        }))
    }
}
