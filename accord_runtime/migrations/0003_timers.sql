-- Durable timers: deadlines that survive restarts and fire once, whichever replica fires them.

CREATE TABLE timers (
    kind      text        NOT NULL,  -- which handler fires it, e.g. 'query.first_response_due'
    key       text        NOT NULL,  -- what it is about, e.g. the query id; one live timer per (kind, key)
    due_at    timestamptz NOT NULL,
    payload   jsonb       NOT NULL DEFAULT '{}',
    fired_at  timestamptz,
    attempts  integer     NOT NULL DEFAULT 0,
    last_error text,
    PRIMARY KEY (kind, key)
);
CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL;
