-- Runs on ClickHouse 18.16 (the local stack) and on current ClickHouse / chDB: plain DateTime
-- plus a millisecond column, ReplacingMergeTree with a version column, no JSON functions needed.
CREATE TABLE IF NOT EXISTS {db}.events (
    event_id          String,
    type              String,
    schema_version    UInt16,
    space_id          String,
    aggregate_id      String,
    aggregate_version UInt64,
    position          UInt64,
    occurred_at       DateTime,
    occurred_at_ms    UInt16,
    trace_id          String,
    data              String
) ENGINE = ReplacingMergeTree(aggregate_version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (space_id, type, aggregate_id, event_id);

CREATE TABLE IF NOT EXISTS {db}.agents (
    agent_id                  String,
    space_id                  String,
    name                      String,
    language                  String,
    stt_provider              String,
    stt_model                 String,
    llm_provider              String,
    llm_model                 String,
    llm_temperature           Float32,
    tts_provider              String,
    tts_voice                 String,
    tools_count               UInt16,
    max_call_duration_seconds UInt32,
    config_version            UInt32,
    archived                  UInt8,
    updated_at                DateTime,
    updated_at_ms             UInt16,
    version                   UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (space_id, agent_id);
