-- Topics whose events are not claimed (a destination that answered "gone"), and the attempts of
-- events whose settlements carry one (webhook deliveries; the broker relay records none).
CREATE TABLE outbox_paused_topics (
    topic     text PRIMARY KEY,
    paused_at timestamptz NOT NULL,
    reason    text NOT NULL
);

CREATE TABLE outbox_attempts (
    event_row  bigint NOT NULL REFERENCES outbox_events (id) ON DELETE CASCADE,
    attempt    integer NOT NULL,
    at         timestamptz NOT NULL,
    status     smallint,
    latency_us bigint NOT NULL,
    error      text,
    PRIMARY KEY (event_row, attempt)
);
