-- Phone numbers for analysts (docs/analytics.md): the number dimension, one row per number as of
-- its latest event (read with FINAL or argMax(..., version)). Same rules as 001: DateTime plus a
-- millisecond column, ReplacingMergeTree by version, no JSON functions; runs on ClickHouse 18.16
-- and on current ClickHouse. Join calls on calls.to_number = numbers.e164 (inbound) or
-- calls.from_number = numbers.e164 (outbound).
CREATE TABLE IF NOT EXISTS {db}.numbers (
    number_id         String,
    space_id          String,
    e164              String,
    country_code      String,
    provider          String,
    capabilities      String,
    inbound_agent_id  String,
    outbound_agent_id String,
    trunk_id          String,
    status            String,
    updated_at        DateTime,
    updated_at_ms     UInt16,
    version           UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (space_id, number_id);
