-- The POS platform's tables as the default runbook expects them.
--
-- This file is the sandbox's schema and the documentation of what the default runbook's
-- SQL probes, KPIs and rollback actions query. A real environment needs the first three
-- tables (named in the release checklist); the others hold what the checklist needs to be
-- answered from data (sync failures, credential expiry, incidents for MTTR, migrations).

-- One row per restaurant location integrated with a POS provider.
CREATE TABLE pos_integrations_location (
    location_id           text PRIMARY KEY,
    location_name         text        NOT NULL,
    provider              text        NOT NULL,          -- 'fudo' | 'maxirest' | 'bistrsoft'
    connected             boolean     NOT NULL DEFAULT true,
    sync_state            text        NOT NULL DEFAULT 'ok'
                          CHECK (sync_state IN ('ok', 'failed')),
    last_sync_at          timestamptz,
    sync_failed_since     timestamptz,                   -- set while sync_state = 'failed'
    credential_expires_at timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CHECK ((sync_state = 'failed') = (sync_failed_since IS NOT NULL))
);
CREATE INDEX pos_integrations_location_provider ON pos_integrations_location (provider);

-- Circuit breaker per location: opens after failure_threshold failures within
-- window_minutes (the checklist's 10 / 15 min), half-opens after a cool-down, closes on
-- the first success while half-open.
CREATE TABLE rotation_cb (
    location_id       text PRIMARY KEY REFERENCES pos_integrations_location (location_id),
    provider          text        NOT NULL,
    state             text        NOT NULL DEFAULT 'closed'
                      CHECK (state IN ('closed', 'open', 'half_open')),
    failure_count     integer     NOT NULL DEFAULT 0,   -- failures inside the current window
    failure_threshold integer     NOT NULL DEFAULT 10,
    window_minutes    integer     NOT NULL DEFAULT 15,
    opened_at         timestamptz,
    changed_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rotation_cb_state ON rotation_cb (state) WHERE state <> 'closed';

-- Every breaker state change; "circuit breaker triggers per day" counts to_state = 'open'.
CREATE TABLE rotation_cb_events (
    id          bigserial PRIMARY KEY,
    location_id text        NOT NULL,
    provider    text        NOT NULL,
    from_state  text        NOT NULL,
    to_state    text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rotation_cb_events_at ON rotation_cb_events (at);

-- Every credential rotation attempt. token_fingerprint identifies the token that asked for
-- the rotation (first 16 hex digits of its SHA-256), so a rotation triggered by a
-- rotated-out ("zombie") token can be found.
CREATE TABLE pos_rotation_metrics (
    id                bigserial PRIMARY KEY,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    location_id       text        NOT NULL,
    provider          text        NOT NULL,
    success           boolean     NOT NULL,
    latency_ms        integer     NOT NULL,
    token_fingerprint text,
    error             text
);
CREATE INDEX pos_rotation_metrics_recorded_at ON pos_rotation_metrics (recorded_at);
CREATE INDEX pos_rotation_metrics_fingerprint ON pos_rotation_metrics (token_fingerprint);

-- Every sync attempt between the platform and a location's POS ("POS sync success").
CREATE TABLE pos_sync_events (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    location_id text        NOT NULL,
    provider    text        NOT NULL,
    success     boolean     NOT NULL,
    error       text
);
CREATE INDEX pos_sync_events_at ON pos_sync_events (at);

-- Incidents, for MTTR (mean of resolved_at - opened_at) and the security-incident count.
CREATE TABLE incidents (
    id          bigserial PRIMARY KEY,
    opened_at   timestamptz NOT NULL,
    resolved_at timestamptz,
    provider    text,
    severity    text        NOT NULL DEFAULT 'minor'
                CHECK (severity IN ('minor', 'major', 'critical')),
    security    boolean     NOT NULL DEFAULT false,
    summary     text        NOT NULL
);
CREATE INDEX incidents_opened_at ON incidents (opened_at);

-- Applied migrations per environment; production must equal staging before a release.
CREATE TABLE schema_migrations (
    environment text        NOT NULL CHECK (environment IN ('production', 'staging')),
    version     text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, version)
);

-- ---------------------------------------------------------------------------------------
-- Sandbox internals (not part of what a real environment needs): the simulated platform's
-- runtime state, shared by the sandbox's HTTP server and its simulator.
CREATE SCHEMA sandbox;

-- Key/value state, e.g. 'scenario', 'deployed_version', 'failing_providers' (a JSON array),
-- 'failing_locations' (a JSON array of location ids whose syncs always fail: the seeded
-- scenario's broken locations, which the simulator keeps broken).
CREATE TABLE sandbox.state (
    key   text PRIMARY KEY,
    value jsonb NOT NULL
);

-- API tokens issued by /auth/v1/token; a rotated token is a "zombie" and must get 401.
CREATE TABLE sandbox.api_tokens (
    fingerprint text PRIMARY KEY,                    -- first 16 hex digits of SHA-256(token)
    location_id text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('active', 'rotated')),
    issued_at   timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz
);
