-- Who the two parties of each agreement are, and its lifecycle status: every service needs it to
-- decide which side a caller is on. Kept by the agreements service from its own events and by
-- the other services from the bus.

CREATE TABLE agreement_parties (
    agreement_id             uuid PRIMARY KEY,
    client_organisation_id   uuid NOT NULL,
    provider_organisation_id uuid NOT NULL,
    title                    text NOT NULL,
    status                   text NOT NULL,
    updated_at               timestamptz NOT NULL
);
CREATE INDEX agreement_parties_client ON agreement_parties (client_organisation_id);
CREATE INDEX agreement_parties_provider ON agreement_parties (provider_organisation_id);
