-- The caller's key presses (DTMF), one row per call.dtmf_received keyed by (call_id, seq) like
-- the event tables of 002 (docs/analytics.md).
CREATE TABLE IF NOT EXISTS {db}.dtmf (
    call_id   String,
    seq       UInt64,
    space_id  String,
    agent_id  String,
    digit     String,
    offset_ms UInt32,
    at        DateTime,
    at_ms     UInt16,
    position  UInt64
) ENGINE = ReplacingMergeTree(position)
PARTITION BY toYYYYMM(at)
ORDER BY (space_id, call_id, seq);
