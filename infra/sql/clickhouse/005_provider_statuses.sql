-- The phone leg's statuses as the provider reported them (issue 12), one row per
-- call.provider_status_changed keyed by (call_id, seq) like the event tables of 002
-- (docs/analytics.md). Empty strings and 0 stand for "none" (no Nullable: 18.16 and current).
CREATE TABLE IF NOT EXISTS {db}.provider_statuses (
    call_id          String,
    seq              UInt64,
    space_id         String,
    agent_id         String,
    provider         String,
    provider_call_id String,
    status           String,
    answered_by      String,
    sip_code         UInt16,
    reason           String,
    at               DateTime,
    at_ms            UInt16,
    position         UInt64
) ENGINE = ReplacingMergeTree(position)
PARTITION BY toYYYYMM(at)
ORDER BY (space_id, call_id, seq);
