-- Idempotency records of idem-store-postgres. One row per (scope, key).
CREATE SEQUENCE IF NOT EXISTS idem_fence_seq AS bigint;

CREATE TABLE IF NOT EXISTS idem_records (
    scope                  text        NOT NULL,
    key                    text        NOT NULL,
    -- Record schema version: a newer release may write rows this one cannot read.
    version                smallint    NOT NULL DEFAULT 1,
    fingerprint            bytea       NOT NULL,
    -- 1 in flight, 2 completed.
    state                  smallint    NOT NULL CHECK (state IN (1, 2)),
    fence                  bigint      NOT NULL,
    -- Lease end while in flight, retention end once completed; the row is dead after it.
    expires_at             timestamptz NOT NULL,
    created_at             timestamptz NOT NULL,
    response_status        smallint,
    response_header_names  text[],
    response_header_values bytea[],
    response_body          bytea,
    PRIMARY KEY (scope, key)
);

CREATE INDEX IF NOT EXISTS idem_records_expires_at ON idem_records (expires_at);
