-- Background jobs behind `202 Accepted`: state 1 pending, 2 running, 3 done, 4 failed.
CREATE SEQUENCE outbox_job_fence_seq;

CREATE TABLE outbox_jobs (
    id           text PRIMARY KEY,
    kind         text NOT NULL,
    payload      bytea NOT NULL,
    state        smallint NOT NULL DEFAULT 1,
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    due_at       timestamptz NOT NULL,
    fence        bigint NOT NULL DEFAULT 0,
    result       text,
    last_error   text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

-- Claimable jobs: pending ones by due time, running ones whose lease (due_at) ran out.
CREATE INDEX outbox_jobs_due ON outbox_jobs (kind, due_at) WHERE state IN (1, 2);
