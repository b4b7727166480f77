-- Calls refused at the door of a number of ours (number.call_refused, issue 12), one row per
-- refused call keyed by its refusal id (docs/analytics.md). Same rules as 001: DateTime plus a
-- millisecond column, empty strings for "none", no Nullable, no JSON functions; runs on
-- ClickHouse 18.16 and on current ClickHouse. Calls to numbers we do not know are not here.
CREATE TABLE IF NOT EXISTS {db}.refused_calls (
    refusal_id       String,
    space_id         String,
    number_id        String,
    e164             String,
    country_code     String,
    provider         String,
    caller           String,
    reason           String,
    provider_call_id String,
    at               DateTime,
    at_ms            UInt16,
    position         UInt64
) ENGINE = ReplacingMergeTree(position)
PARTITION BY toYYYYMM(at)
ORDER BY (space_id, number_id, at, refusal_id);
