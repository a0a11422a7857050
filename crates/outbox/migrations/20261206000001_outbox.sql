-- The transactional outbox: events enqueued in the business transaction, published by relays.
-- state: 1 pending, 2 published, 3 dead.
CREATE SEQUENCE outbox_claim_seq;

CREATE TABLE outbox_events (
    id            bigserial PRIMARY KEY,
    topic         text NOT NULL,
    event_id      text NOT NULL,
    aggregate     text,
    payload       bytea NOT NULL,
    header_names  text[] NOT NULL DEFAULT '{}',
    header_values text[] NOT NULL DEFAULT '{}',
    state         smallint NOT NULL DEFAULT 1,
    attempts      integer NOT NULL DEFAULT 0,
    due_at        timestamptz NOT NULL,
    claim         bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    last_error    text,
    UNIQUE (topic, event_id)
);

-- The claim order over pending rows.
CREATE INDEX outbox_events_due ON outbox_events (due_at, id) WHERE state = 1;
-- An aggregate's earlier pending events (the claim's order check).
CREATE INDEX outbox_events_aggregate ON outbox_events (aggregate, id)
    WHERE state = 1 AND aggregate IS NOT NULL;
-- Dead letters, oldest first.
CREATE INDEX outbox_events_dead ON outbox_events (id) WHERE state = 3;
-- Published rows by age, for the purge.
CREATE INDEX outbox_events_finished ON outbox_events (finished_at) WHERE state = 2;

-- The consumers' inbox: a message id seen by a consumer, written in the handler's transaction.
CREATE TABLE outbox_inbox (
    consumer   text NOT NULL,
    message_id text NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, message_id)
);
