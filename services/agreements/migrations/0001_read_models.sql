-- Read models of the agreements service, built by its projections (rebuildable from events).

CREATE TABLE agreement_summaries (
    agreement_id             uuid PRIMARY KEY,
    title                    text NOT NULL,
    summary                  text NOT NULL,
    status                   text NOT NULL,
    client_organisation_id   uuid NOT NULL,
    provider_organisation_id uuid NOT NULL,
    drafted_by_side          text NOT NULL,
    client_accepted          boolean NOT NULL DEFAULT false,
    provider_accepted        boolean NOT NULL DEFAULT false,
    agreement_version        integer NOT NULL DEFAULT 0,
    stream_version           integer NOT NULL,
    created_at               timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL
);
CREATE INDEX agreement_summaries_client ON agreement_summaries (client_organisation_id, created_at);
CREATE INDEX agreement_summaries_provider ON agreement_summaries (provider_organisation_id, created_at);

CREATE TABLE agreement_history (
    agreement_id uuid        NOT NULL,
    sequence     integer     NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    actor        text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    data         jsonb       NOT NULL,
    PRIMARY KEY (agreement_id, sequence)
);
