-- The event store, its transactional outbox, projection checkpoints and the consumer inbox.
-- Runs inside the owning service's schema (search_path), so every service has its own copy.

CREATE TABLE events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction: readers in global order only read transactions older than every
    -- transaction still running (pg_snapshot_xmin), so a late commit is never skipped.
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  integer     NOT NULL CHECK (stream_version >= 1),
    event_type      text        NOT NULL,
    data            jsonb       NOT NULL,
    correlation_id  uuid        NOT NULL,
    causation_id    uuid,
    actor           text        NOT NULL,
    recorded_at     timestamptz NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);
CREATE INDEX events_global_order ON events (transaction_id, global_position);

-- One row per event still to be published; the relay deletes a row once the broker confirmed it.
CREATE TABLE outbox (
    global_position bigint PRIMARY KEY,
    event_id        uuid   NOT NULL,
    routing_key     text   NOT NULL,
    payload         bytea  NOT NULL
);

CREATE TABLE projection_checkpoints (
    projection      text   PRIMARY KEY,
    transaction_id  xid8   NOT NULL,
    global_position bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Events received from the bus: deduplication per consumer, and the local copy that
-- projections over other services' events are rebuilt from.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    position     bigint      GENERATED ALWAYS AS IDENTITY,
    event_type   text        NOT NULL,
    envelope     jsonb       NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX inbox_replay_order ON inbox (consumer, position);
