-- The transactional outbox of webhook-delivery. One row per (endpoint, event id).
CREATE SEQUENCE IF NOT EXISTS webhook_outbox_claim_seq AS bigint;

CREATE TABLE IF NOT EXISTS webhook_outbox (
    id           bigserial   PRIMARY KEY,
    endpoint     text        NOT NULL,
    event_id     text        NOT NULL,
    content_type text        NOT NULL,
    payload      bytea       NOT NULL,
    -- 1 pending, 2 delivered, 3 exhausted, 4 endpoint disabled (410).
    state        smallint    NOT NULL DEFAULT 1 CHECK (state IN (1, 2, 3, 4)),
    attempts     integer     NOT NULL DEFAULT 0,
    -- Pending: the next attempt, or the end of the claim that holds the row.
    due_at       timestamptz NOT NULL,
    -- The newest claim's fence; only it may settle the row.
    claim        bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    last_error   text,
    UNIQUE (endpoint, event_id)
);

-- The claim order: pending rows by due time.
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (due_at) WHERE state = 1;
-- The sweeper's order: finished rows by finish time.
CREATE INDEX IF NOT EXISTS webhook_outbox_finished ON webhook_outbox (finished_at) WHERE state <> 1;

CREATE TABLE IF NOT EXISTS webhook_attempts (
    outbox_id  bigint      NOT NULL REFERENCES webhook_outbox (id) ON DELETE CASCADE,
    attempt    integer     NOT NULL,
    at         timestamptz NOT NULL,
    status     smallint,
    latency_us bigint      NOT NULL,
    error      text,
    PRIMARY KEY (outbox_id, attempt)
);

CREATE TABLE IF NOT EXISTS webhook_endpoints_disabled (
    endpoint    text        PRIMARY KEY,
    disabled_at timestamptz NOT NULL,
    reason      text        NOT NULL
);
