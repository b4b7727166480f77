-- Read model of voice agents: one row per agent, the latest version applied.
CREATE TABLE IF NOT EXISTS agents (
    id                uuid PRIMARY KEY,
    space_id          text        NOT NULL,
    name              text        NOT NULL,
    description       text        NOT NULL DEFAULT '',
    language          text        NOT NULL,
    config            jsonb       NOT NULL,
    config_version    integer     NOT NULL,
    archived          boolean     NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    archived_at       timestamptz,
    version           bigint      NOT NULL,   -- aggregate version this row reflects
    position          bigint      NOT NULL    -- event store notification id of that event
);
CREATE INDEX IF NOT EXISTS agents_space_listing ON agents (space_id, archived, created_at DESC, id);

-- Where each projection stands, per source. Written in the same transaction as its rows.
-- Faust: source = '<topic>#<partition>', position = last applied Kafka offset.
-- In-process runner: source = '<application>', position = last applied notification id.
CREATE TABLE IF NOT EXISTS projection_tracking (
    projection  text   NOT NULL,
    source      text   NOT NULL,
    position    bigint NOT NULL,
    PRIMARY KEY (projection, source)
);

-- Where the relay stands in each application's notification log (set after the broker acks).
CREATE TABLE IF NOT EXISTS relay_positions (
    application text PRIMARY KEY,
    position    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
