//! The statements: each store operation is exactly one of them.
//!
//! `now` is the database's `clock_timestamp()` plus the store's test offset, or the pinned test
//! time when one is set; so every server of a fleet measures leases with one clock.

/// The `begin` statement, with `$extra` columns in its first part (`t`).
macro_rules! begin_sql {
    ($extra:literal) => {
        concat!(
        "WITH t AS (SELECT ",
        retry_safe_core::postgres_now!("$5", "$6"),
        " AS now, nextval('idem_fence_seq') AS fence",
            $extra,
            "),
    ins AS (
      INSERT INTO idem_records (scope, key, version, fingerprint, state, fence, expires_at, created_at)
      SELECT $1, $2, 1, $3, 1, t.fence, t.now + $4::bigint * interval '1 microsecond', t.now FROM t
      ON CONFLICT (scope, key) DO NOTHING
      RETURNING version, state, fingerprint, fence, expires_at, response_status,
                response_header_names, response_header_values, response_body,
                response_trailer_names, response_trailer_values
    ),
    tak AS (
      UPDATE idem_records r SET
        version = 1, fingerprint = $3, state = 1, fence = t.fence,
        expires_at = t.now + $4::bigint * interval '1 microsecond', created_at = t.now,
        response_status = NULL, response_header_names = NULL, response_header_values = NULL,
        response_body = NULL, response_trailer_names = NULL, response_trailer_values = NULL
      FROM t
      WHERE r.scope = $1 AND r.key = $2 AND r.expires_at <= t.now AND NOT EXISTS (SELECT 1 FROM ins)
      RETURNING r.version, r.state, r.fingerprint, r.fence, r.expires_at, r.response_status,
                r.response_header_names, r.response_header_values, r.response_body,
                r.response_trailer_names, r.response_trailer_values
    ),
    cur AS (
      SELECT r.version, r.state, r.fingerprint, r.fence, r.expires_at, r.response_status,
             r.response_header_names, r.response_header_values, r.response_body,
             r.response_trailer_names, r.response_trailer_values
      FROM idem_records r
      WHERE r.scope = $1 AND r.key = $2
        AND NOT EXISTS (SELECT 1 FROM ins) AND NOT EXISTS (SELECT 1 FROM tak)
    ),
    row AS (SELECT * FROM ins UNION ALL SELECT * FROM tak UNION ALL SELECT * FROM cur)
    SELECT row.version, row.state, row.fingerprint, row.fence, row.fence = t.fence AS acquired,
           (EXTRACT(EPOCH FROM (row.expires_at - t.now)) * 1000000)::bigint AS remaining_us,
           row.response_status, row.response_header_names, row.response_header_values,
           row.response_body, row.response_trailer_names, row.response_trailer_values
    FROM row, t"
        )
    };
}

/// `begin`: $1 scope, $2 key, $3 fingerprint, $4 lease µs, $5 pinned µs, $6 offset µs.
///
/// Three parts, run by PostgreSQL as one statement on one snapshot:
/// - `ins` inserts a new row with a fence from the sequence (`ON CONFLICT DO NOTHING`: an existing
///   row is neither written nor locked);
/// - `tak` takes over an existing row whose `expires_at` has passed (`UPDATE … WHERE expires_at <=
///   now`; under concurrency PostgreSQL re-checks that condition on the newest row version, so two
///   takeovers of one dead row cannot both win);
/// - `cur` reads the row as it stands when neither wrote.
///
/// A live row is only read, so replays and in-flight answers write nothing (no WAL flush at
/// commit). `acquired` says whether this statement's fence now holds the row. When a concurrent
/// statement inserted or took over the row after this statement's snapshot was taken, no row (or
/// a dead one) comes back; the caller runs the statement again, and then sees the new row.
pub(crate) const BEGIN: &str = begin_sql!("");

/// `begin` inside a caller's transaction (single-commit mode): as [`BEGIN`] with $7 the lock
/// timeout (`'5000ms'`), and first
/// `set_config('lock_timeout', $7, true)` — evaluated before the insert, so the wait for a row
/// another transaction is writing is bounded, without a round trip of its own.
pub(crate) const BEGIN_IN: &str =
    begin_sql!(", set_config('lock_timeout', $7, true) AS lock_timeout");

/// `begin` of a fresh key inside a caller's transaction (single-commit mode's common case): one
/// plain insert, $1–$7 as [`BEGIN_IN`]. One row (the new fence) back when the key had no record;
/// none when one exists, which [`BEGIN_IN`] then reads, replays or takes over. A record another
/// transaction is still writing makes the insert wait for it, up to the lock timeout set first
/// (the CTE holds volatile functions, so PostgreSQL evaluates it, once, before inserting).
pub(crate) const BEGIN_IN_FRESH: &str = concat!(
    "WITH t AS (SELECT ",
    retry_safe_core::postgres_now!("$5", "$6"),
    " AS now, nextval('idem_fence_seq') AS fence, set_config('lock_timeout', $7, true) AS lock_timeout)
INSERT INTO idem_records (scope, key, version, fingerprint, state, fence, expires_at, created_at)
SELECT $1, $2, 1, $3, 1, t.fence, t.now + $4::bigint * interval '1 microsecond', t.now FROM t
ON CONFLICT (scope, key) DO NOTHING
RETURNING fence"
);

/// `complete`: $1 scope, $2 key, $3 fence, $4 retention µs, $5 status, $6 header names,
/// $7 header values, $8 body, $9 pinned µs, $10 offset µs, $11 trailer names, $12 trailer values
/// (NULL when there are none). One row back when the fence held a live lease.
pub(crate) const COMPLETE: &str = concat!(
    "WITH t AS (SELECT ",
    retry_safe_core::postgres_now!("$9", "$10"),
    " AS now)
UPDATE idem_records r SET
  state = 2,
  expires_at = t.now + $4::bigint * interval '1 microsecond',
  response_status = $5, response_header_names = $6, response_header_values = $7, response_body = $8,
  response_trailer_names = $11, response_trailer_values = $12
FROM t
WHERE r.scope = $1 AND r.key = $2 AND r.fence = $3 AND r.state = 1 AND r.version = 1
  AND r.expires_at > t.now
RETURNING r.fence"
);

/// `release`: $1 scope, $2 key, $3 fence, $4 pinned µs, $5 offset µs.
pub(crate) const RELEASE: &str = concat!(
    "WITH t AS (SELECT ",
    retry_safe_core::postgres_now!("$4", "$5"),
    " AS now)
DELETE FROM idem_records r USING t
WHERE r.scope = $1 AND r.key = $2 AND r.fence = $3 AND r.state = 1 AND r.version = 1
  AND r.expires_at > t.now
RETURNING r.fence"
);

/// `renew`: $1 scope, $2 key, $3 fence, $4 lease µs, $5 pinned µs, $6 offset µs.
pub(crate) const RENEW: &str = concat!(
    "WITH t AS (SELECT ",
    retry_safe_core::postgres_now!("$5", "$6"),
    " AS now)
UPDATE idem_records r SET expires_at = t.now + $4::bigint * interval '1 microsecond'
FROM t
WHERE r.scope = $1 AND r.key = $2 AND r.fence = $3 AND r.state = 1 AND r.version = 1
  AND r.expires_at > t.now
RETURNING r.fence"
);

/// One batch of `purge_expired`: $1 batch size, $2 pinned µs, $3 offset µs. Rows locked by a
/// running statement are skipped, so the sweep never waits for live traffic.
pub(crate) const PURGE_BATCH: &str = concat!(
    "WITH t AS (SELECT ",
    retry_safe_core::postgres_now!("$2", "$3"),
    " AS now),
dead AS (
  SELECT r.scope, r.key FROM idem_records r, t WHERE r.expires_at <= t.now
  LIMIT $1 FOR UPDATE OF r SKIP LOCKED
)
DELETE FROM idem_records r USING dead, t
WHERE r.scope = dead.scope AND r.key = dead.key AND r.expires_at <= t.now"
);

/// `record_in` (single-commit mode, record last): the completed record, written at the end of
/// the caller's transaction. $1 scope, $2 key, $3 fingerprint, $4 retention µs, $5 status,
/// $6 header names, $7 header values, $8 body, $9 pinned µs, $10 offset µs, $11 trailer names,
/// $12 trailer values, $13 lock timeout (`'5000ms'`, set first as in [`BEGIN_IN`]).
///
/// One row back when the record was written: the key was free, or its row dead (taken over in
/// place). None when a live record holds the key: another attempt won, and the caller rolls
/// back. A record another transaction is still writing makes the insert wait for its commit or
/// rollback (then PostgreSQL re-checks the conflict on the newest row version). The record holds
/// no lease, so its fence is 0: `complete`, `release` and `renew` only touch in-flight rows.
pub(crate) const RECORD_IN: &str = concat!(
    "WITH t AS (SELECT ",
    retry_safe_core::postgres_now!("$9", "$10"),
    " AS now, set_config('lock_timeout', $13, true) AS lock_timeout)
INSERT INTO idem_records AS r (scope, key, version, fingerprint, state, fence, expires_at, created_at,
  response_status, response_header_names, response_header_values, response_body,
  response_trailer_names, response_trailer_values)
SELECT $1, $2, 1, $3, 2, 0, t.now + $4::bigint * interval '1 microsecond', t.now,
  $5, $6, $7, $8, $11, $12 FROM t
ON CONFLICT (scope, key) DO UPDATE SET
  version = 1, fingerprint = EXCLUDED.fingerprint, state = 2, fence = 0,
  expires_at = EXCLUDED.expires_at, created_at = EXCLUDED.created_at,
  response_status = EXCLUDED.response_status,
  response_header_names = EXCLUDED.response_header_names,
  response_header_values = EXCLUDED.response_header_values,
  response_body = EXCLUDED.response_body,
  response_trailer_names = EXCLUDED.response_trailer_names,
  response_trailer_values = EXCLUDED.response_trailer_values
WHERE r.expires_at <= EXCLUDED.created_at
RETURNING r.fence"
);

/// The record of a key as it stands (what `record_in` lost to): $1 scope, $2 key, $3 pinned µs,
/// $4 offset µs; the columns of [`BEGIN`]'s answer, `acquired` false.
pub(crate) const READ: &str = concat!(
    "WITH t AS (SELECT ",
    retry_safe_core::postgres_now!("$3", "$4"),
    " AS now)
SELECT r.version, r.state, r.fingerprint, r.fence, false AS acquired,
       (EXTRACT(EPOCH FROM (r.expires_at - t.now)) * 1000000)::bigint AS remaining_us,
       r.response_status, r.response_header_names, r.response_header_values,
       r.response_body, r.response_trailer_names, r.response_trailer_values
FROM idem_records r, t
WHERE r.scope = $1 AND r.key = $2"
);
