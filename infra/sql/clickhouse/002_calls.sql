-- Calls for analysts (docs/analytics.md). Same rules as 001: DateTime plus a millisecond column,
-- ReplacingMergeTree, no JSON functions; runs on ClickHouse 18.16 and on current ClickHouse.
-- One row per call as of its latest event: read with FINAL or argMax(..., version).
CREATE TABLE IF NOT EXISTS {db}.calls (
    call_id              String,
    space_id             String,
    agent_id             String,
    agent_config_version UInt32,
    direction            String,
    channel              String,
    from_number          String,
    to_number            String,
    room_name            String,
    status               String,
    initiated_at         DateTime,
    initiated_at_ms      UInt16,
    started_at           Nullable(DateTime),
    started_at_ms        UInt16,
    ended_at             Nullable(DateTime),
    ended_at_ms          UInt16,
    end_reason           String,
    duration_ms          UInt64,
    transfer_mode        String,
    transfer_target      String,
    transfer_status      String,
    transcript_count     UInt32,
    tool_call_count      UInt32,
    tool_error_count     UInt32,
    turn_count           UInt32,
    usage_count          UInt32,
    total_cost_micros    UInt64,
    version              UInt64,
    updated_at           DateTime,
    updated_at_ms        UInt16
) ENGINE = ReplacingMergeTree(version)
ORDER BY (space_id, call_id);

-- One row per event of its kind, keyed by (call_id, seq): seq is the call's aggregate version.
CREATE TABLE IF NOT EXISTS {db}.transcripts (
    call_id   String,
    seq       UInt64,
    space_id  String,
    agent_id  String,
    turn_id   String,
    speaker   String,
    text      String,
    start_ms  UInt32,
    end_ms    UInt32,
    at        DateTime,
    at_ms     UInt16,
    position  UInt64
) ENGINE = ReplacingMergeTree(position)
PARTITION BY toYYYYMM(at)
ORDER BY (space_id, call_id, seq);

CREATE TABLE IF NOT EXISTS {db}.tool_calls (
    call_id    String,
    seq        UInt64,
    space_id   String,
    agent_id   String,
    turn_id    String,
    name       String,
    arguments  String,
    result     String,
    error      String,
    status     String,
    latency_ms UInt32,
    at         DateTime,
    at_ms      UInt16,
    position   UInt64
) ENGINE = ReplacingMergeTree(position)
PARTITION BY toYYYYMM(at)
ORDER BY (space_id, call_id, seq);

CREATE TABLE IF NOT EXISTS {db}.usage (
    call_id     String,
    seq         UInt64,
    space_id    String,
    agent_id    String,
    provider    String,
    model       String,
    kind        String,
    category    String,
    quantity    Float64,
    unit_price  Float64,
    cost_micros UInt64,
    price_entry String,
    at          DateTime,
    at_ms       UInt16,
    position    UInt64
) ENGINE = ReplacingMergeTree(position)
PARTITION BY toYYYYMM(at)
ORDER BY (space_id, call_id, seq);

CREATE TABLE IF NOT EXISTS {db}.turns (
    call_id                         String,
    seq                             UInt64,
    space_id                        String,
    agent_id                        String,
    turn_id                         String,
    end_of_speech_to_first_audio_ms Nullable(UInt32),
    stt_final_ms                    Nullable(UInt32),
    llm_first_token_ms              Nullable(UInt32),
    tts_first_byte_ms               Nullable(UInt32),
    at                              DateTime,
    at_ms                           UInt16,
    position                        UInt64
) ENGINE = ReplacingMergeTree(position)
PARTITION BY toYYYYMM(at)
ORDER BY (space_id, call_id, seq);
