-- Read models of the whole shared agreement (rebuildable from the agreement streams).

-- The agreement's current state, as the aggregate's snapshot: the detail view.
CREATE TABLE agreement_documents (
    agreement_id      uuid PRIMARY KEY,
    stream_version    integer     NOT NULL,
    agreement_version integer     NOT NULL,
    status            text        NOT NULL,
    snapshot          jsonb       NOT NULL,
    updated_at        timestamptz NOT NULL
);

-- Current contacts per agreement; the escalation matrix is read from their levels.
CREATE TABLE agreement_contacts (
    agreement_id     uuid    NOT NULL,
    contact_id       uuid    NOT NULL,
    side             text    NOT NULL,
    role             text    NOT NULL,
    name             text    NOT NULL,
    email            text    NOT NULL,
    escalation_level integer,
    PRIMARY KEY (agreement_id, contact_id)
);
CREATE INDEX agreement_contacts_escalation ON agreement_contacts (agreement_id, escalation_level, side);

-- Scope changes awaiting the provider's assessment or the client's decision.
CREATE TABLE open_scope_changes (
    agreement_id      uuid        NOT NULL,
    change_id         uuid        NOT NULL,
    title             text        NOT NULL,
    what              text        NOT NULL,
    why               text        NOT NULL,
    requested_by_side text        NOT NULL,
    status            text        NOT NULL,
    assessment        jsonb,
    requested_at      timestamptz NOT NULL,
    PRIMARY KEY (agreement_id, change_id)
);

-- Process breakdowns not yet resolved, at their step.
CREATE TABLE open_breakdowns (
    agreement_id     uuid        NOT NULL,
    breakdown_id     uuid        NOT NULL,
    procedure_id     uuid        NOT NULL,
    procedure_name   text        NOT NULL,
    step_id          uuid        NOT NULL,
    step_title       text        NOT NULL,
    step_owner_side  text        NOT NULL,
    reported_by_side text        NOT NULL,
    what_broke       text        NOT NULL,
    impact           text        NOT NULL,
    reported_at      timestamptz NOT NULL,
    PRIMARY KEY (agreement_id, breakdown_id)
);
