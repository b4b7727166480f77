-- Read models of the numbers context (voxagent.numbers.v1): phone numbers, SIP trunks and
-- provider accounts, one row per aggregate at the latest version applied. No secrets here: trunk
-- passwords and provider credentials live beside the event store (number_claims,
-- trunk_secrets, provider_account_secrets), written with the events.
CREATE TABLE IF NOT EXISTS numbers (
    id                uuid PRIMARY KEY,
    space_id          text        NOT NULL,
    e164              text        NOT NULL,
    provider          text        NOT NULL,
    provider_id       text,
    capabilities      jsonb       NOT NULL DEFAULT '[]',
    inbound_agent_id  uuid,
    outbound_agent_id uuid,
    trunk_id          uuid,
    status            text        NOT NULL,   -- active | released
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    released_at       timestamptz,
    version           bigint      NOT NULL,
    position          bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS numbers_space_listing ON numbers (space_id, status, created_at DESC, id);
CREATE INDEX IF NOT EXISTS numbers_space_e164 ON numbers (space_id, e164);
CREATE INDEX IF NOT EXISTS numbers_inbound_agent ON numbers (space_id, inbound_agent_id)
    WHERE inbound_agent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS numbers_outbound_agent ON numbers (space_id, outbound_agent_id)
    WHERE outbound_agent_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS sip_trunks (
    id          uuid PRIMARY KEY,
    space_id    text        NOT NULL,
    name        text        NOT NULL,
    trunk       jsonb       NOT NULL,   -- name, inbound {allowed_addresses, username}, outbound
    deleted     boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL,
    position    bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS sip_trunks_space_listing ON sip_trunks (space_id, deleted, created_at DESC, id);

CREATE TABLE IF NOT EXISTS provider_accounts (
    id          uuid PRIMARY KEY,
    space_id    text        NOT NULL,
    provider    text        NOT NULL,
    account_id  text        NOT NULL,
    connected   boolean     NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL,
    position    bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS provider_accounts_space ON provider_accounts (space_id, provider);
