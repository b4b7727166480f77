-- What each Kafka consumer is doing (adapters/kafka/consumer.py), written when its state
-- changes and read by GET /health: running, waiting (infrastructure away: it retries) or
-- halted (a stored event it cannot apply: it stops there and says so).
CREATE TABLE IF NOT EXISTS consumer_status (
    consumer    text        PRIMARY KEY,          -- e.g. agents.postgres, ingest
    state       text        NOT NULL CHECK (state IN ('running', 'waiting', 'halted')),
    error       text        NOT NULL DEFAULT '',
    source      text        NOT NULL DEFAULT '',  -- topic#partition@offset it waits/halted on
    since       timestamptz NOT NULL,
    counters    jsonb       NOT NULL DEFAULT '{}',
    instance    text        NOT NULL DEFAULT '',  -- host:pid of the process that wrote it
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Signals ingest holds because their call does not exist yet (unknown_call), written before
-- the batch's offsets are committed, so a crash loses none; a restarted ingest takes them back.
CREATE TABLE IF NOT EXISTS ingest_parking (
    topic       text        NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint     NOT NULL,
    call_id     uuid        NOT NULL,
    key         bytea,
    value       bytea,
    parked_at   double precision NOT NULL,        -- epoch seconds it was first parked
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);
CREATE INDEX IF NOT EXISTS ingest_parking_order ON ingest_parking (parked_at);
