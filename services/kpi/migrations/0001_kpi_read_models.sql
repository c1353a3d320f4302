-- Read models of the kpi service. kpi_* and health_* are projections of the service's own events;
-- relationship_events is the bus-fed log of the agreements and queries events the relationship
-- KPIs are folded from (rebuilt from the inbox).

CREATE TABLE kpi_definitions (
    kpi_id            uuid PRIMARY KEY,
    agreement_id      uuid             NOT NULL,
    name              text             NOT NULL,
    description       text             NOT NULL,
    unit              text             NOT NULL,
    direction         text             NOT NULL,
    target            double precision NOT NULL,
    warning_threshold double precision NOT NULL,
    breach_threshold  double precision NOT NULL,
    cadence_seconds   integer          NOT NULL,
    source            text             NOT NULL,
    metric            text,
    defined_by_side   text,
    defined_at        timestamptz      NOT NULL,
    status            text,
    last_value        double precision,
    last_reported_at  timestamptz,
    overdue_periods   integer          NOT NULL DEFAULT 0
);
CREATE INDEX kpi_definitions_agreement ON kpi_definitions (agreement_id, name);

CREATE TABLE kpi_values (
    event_id         uuid PRIMARY KEY,
    kpi_id           uuid             NOT NULL,
    agreement_id     uuid             NOT NULL,
    value            double precision NOT NULL,
    status           text             NOT NULL,
    period_start     timestamptz      NOT NULL,
    period_end       timestamptz      NOT NULL,
    evidence         text             NOT NULL,
    notes            text             NOT NULL,
    reported_by_side text,
    reported_at      timestamptz      NOT NULL
);
CREATE INDEX kpi_values_series ON kpi_values (kpi_id, period_end);

CREATE TABLE kpi_reports (
    report_id        uuid PRIMARY KEY,
    agreement_id     uuid        NOT NULL,
    title            text        NOT NULL,
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL,
    narrative        text        NOT NULL,
    kpis             jsonb       NOT NULL,
    published_at     timestamptz NOT NULL,
    review_due_at    timestamptz NOT NULL,
    state            text        NOT NULL,  -- awaiting_review, review_overdue, acknowledged
    acknowledged_at  timestamptz,
    delay_seconds    integer,
    late             boolean,
    comments         text,
    questions        jsonb
);
CREATE INDEX kpi_reports_agreement ON kpi_reports (agreement_id, published_at);

CREATE TABLE health_current (
    agreement_id uuid PRIMARY KEY,
    score        double precision NOT NULL,
    band         text             NOT NULL,
    components   jsonb            NOT NULL,
    moved        jsonb            NOT NULL,
    cause        text             NOT NULL,
    recorded_at  timestamptz      NOT NULL
);

CREATE TABLE health_history (
    event_id     uuid PRIMARY KEY,
    agreement_id uuid             NOT NULL,
    score        double precision NOT NULL,
    band         text             NOT NULL,
    components   jsonb            NOT NULL,
    moved        jsonb            NOT NULL,
    cause        text             NOT NULL,
    recorded_at  timestamptz      NOT NULL
);
CREATE INDEX health_history_agreement ON health_history (agreement_id, recorded_at);

CREATE TABLE relationship_events (
    event_id     uuid PRIMARY KEY,
    agreement_id uuid        NOT NULL,
    event_type   text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    data         jsonb       NOT NULL
);
CREATE INDEX relationship_events_agreement ON relationship_events (agreement_id, occurred_at);
