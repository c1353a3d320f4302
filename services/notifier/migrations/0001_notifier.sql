-- The notifier's tables: the contacts replica (bus-fed), the escalations read model (own events),
-- and the delivery outbox with its dead letters (state, not read models: never rebuilt).

CREATE TABLE notifier_contacts (
    agreement_id     uuid NOT NULL,
    contact_id       uuid NOT NULL,
    side             text NOT NULL,
    role             text NOT NULL,
    name             text NOT NULL,
    email            text NOT NULL,
    escalation_level integer,
    PRIMARY KEY (agreement_id, contact_id)
);
CREATE INDEX notifier_contacts_role ON notifier_contacts (agreement_id, side, lower(role));

CREATE TABLE notifier_calendars (
    agreement_id uuid PRIMARY KEY,
    calendar     jsonb NOT NULL,
    effective_from timestamptz NOT NULL
);

CREATE TABLE escalations (
    escalation_id uuid PRIMARY KEY,
    matter        text NOT NULL UNIQUE,
    rule          text NOT NULL,
    agreement_id  uuid NOT NULL,
    status        text NOT NULL,          -- open | acknowledged | resolved
    level         integer NOT NULL DEFAULT 0,
    levels        integer NOT NULL,
    trigger_type  text NOT NULL,
    started_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    closed_by     text
);
CREATE INDEX escalations_agreement ON escalations (agreement_id, started_at);
CREATE INDEX escalations_open_level ON escalations (level) WHERE status = 'open';

CREATE TABLE escalation_history (
    escalation_id uuid NOT NULL,
    sequence      integer NOT NULL,
    event_type    text NOT NULL,
    actor         text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    data          jsonb NOT NULL,
    PRIMARY KEY (escalation_id, sequence)
);

CREATE TABLE deliveries (
    notification_id uuid PRIMARY KEY,
    escalation_id   uuid NOT NULL,
    matter          text NOT NULL,
    agreement_id    uuid NOT NULL,
    level           integer NOT NULL,
    round           integer NOT NULL,
    channel         text NOT NULL,        -- email | webhook | slack
    target          text NOT NULL,        -- an email address, or a webhook's name
    responsible     jsonb NOT NULL,       -- who was responsible when the level fired
    message         jsonb NOT NULL,       -- subject, text, ack link, rule, matter …
    timezone        text NOT NULL,        -- for quiet hours
    quiet_hours     boolean NOT NULL,     -- whether quiet hours apply
    status          text NOT NULL DEFAULT 'pending',  -- pending | sending | sent | failed | cancelled
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_until     timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    claimed_at      timestamptz,
    sent_at         timestamptz
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX deliveries_escalation ON deliveries (escalation_id);
CREATE INDEX deliveries_target ON deliveries (channel, target, claimed_at);

CREATE TABLE dead_letters (
    notification_id uuid PRIMARY KEY REFERENCES deliveries,
    escalation_id   uuid NOT NULL,
    channel         text NOT NULL,
    target          text NOT NULL,
    attempts        integer NOT NULL,
    error           text NOT NULL,
    message         jsonb NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now()
);
