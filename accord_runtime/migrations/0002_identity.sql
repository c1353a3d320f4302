-- Who may call a service: organisations, their users and API tokens (SHA-256 only), projected
-- from the agreements service's identity events. Every service keeps its own copy.

CREATE TABLE organisations (
    organisation_id uuid PRIMARY KEY,
    display_name    text NOT NULL
);

CREATE TABLE users (
    user_id         uuid PRIMARY KEY,
    organisation_id uuid NOT NULL,
    display_name    text NOT NULL,
    email           text NOT NULL
);

CREATE TABLE api_tokens (
    token_hash      text PRIMARY KEY,
    token_id        uuid NOT NULL UNIQUE,
    user_id         uuid NOT NULL,
    organisation_id uuid NOT NULL,
    revoked         boolean NOT NULL DEFAULT false
);
