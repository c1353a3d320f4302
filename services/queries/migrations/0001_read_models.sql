-- Read models of the queries service (all rebuildable: from its own events, or from the inbox).

-- From the agreements service over the bus: each agreement's organisations and its SLA policy
-- versions, so a query (or a clarification query) is raised under the policy in force.
CREATE TABLE agreement_terms (
    agreement_id             uuid PRIMARY KEY,
    client_organisation_id   uuid NOT NULL,
    provider_organisation_id uuid NOT NULL
);

CREATE TABLE sla_policy_versions (
    agreement_id   uuid        NOT NULL,
    sequence       integer     NOT NULL,  -- the SLAPolicySet's place in the agreement's stream
    policy         jsonb       NOT NULL,
    effective_from timestamptz NOT NULL,
    PRIMARY KEY (agreement_id, sequence)
);

-- One row per query: the lists, the at-risk and overdue views, and the response-time statistics.
CREATE TABLE queries (
    query_id                         uuid PRIMARY KEY,
    agreement_id                     uuid        NOT NULL,
    subject                          text        NOT NULL,
    priority                         text        NOT NULL,
    purpose                          text        NOT NULL,
    about_kind                       text        NOT NULL,
    about_id                         uuid,
    raised_by_side                   text        NOT NULL,
    addressed_to_side                text        NOT NULL,
    addressee_role                   text,
    status                           text        NOT NULL,
    raised_at                        timestamptz NOT NULL,
    first_response_state             text,       -- running, paused, stopped; null without SLA terms
    first_response_due_at            timestamptz,
    resolution_state                 text,
    resolution_due_at                timestamptz,
    next_deadline_at                 timestamptz,
    at_risk                          boolean     NOT NULL DEFAULT false,
    overdue                          boolean     NOT NULL DEFAULT false,
    breached                         boolean     NOT NULL DEFAULT false,
    first_answered_at                timestamptz,
    first_response_business_seconds  bigint,
    first_response_target_seconds    bigint,
    closed_at                        timestamptz,
    version                          integer     NOT NULL,
    updated_at                       timestamptz NOT NULL
);
CREATE INDEX queries_by_agreement ON queries (agreement_id, raised_at DESC, query_id);
CREATE INDEX queries_unfinished ON queries (priority, addressed_to_side)
    WHERE status IN ('open', 'awaiting_information', 'answered');

CREATE TABLE query_thread (
    query_id uuid    NOT NULL,
    position integer NOT NULL,
    kind     text    NOT NULL,
    side     text    NOT NULL,
    user_id  uuid,
    body     text    NOT NULL,
    at       timestamptz,
    PRIMARY KEY (query_id, position)
);

-- The pause audit: who stopped the clocks, why, and for how long (business seconds on the calendar).
CREATE TABLE query_pauses (
    query_id         uuid    NOT NULL,
    position         integer NOT NULL,
    kind             text    NOT NULL,
    reason           text    NOT NULL,
    side             text    NOT NULL,
    user_id          uuid,
    clocks           text[]  NOT NULL,
    started_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    business_seconds bigint,
    PRIMARY KEY (query_id, position)
);

-- Where both clocks stood after each event of the query.
CREATE TABLE query_clock_history (
    query_id              uuid    NOT NULL,
    sequence              integer NOT NULL,
    event_type            text    NOT NULL,
    at                    timestamptz NOT NULL,
    first_response_state  text,
    first_response_due_at timestamptz,
    resolution_state      text,
    resolution_due_at     timestamptz,
    PRIMARY KEY (query_id, sequence)
);
