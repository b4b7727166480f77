-- The caller's key presses (DTMF), built by projections.calls_view like the other event tables
-- of 002: one row per call.dtmf_received, keyed by (call_id, seq), seq the aggregate version.
CREATE TABLE IF NOT EXISTS call_dtmf (
    call_id   uuid        NOT NULL,
    seq       bigint      NOT NULL,
    space_id  text        NOT NULL,
    digit     text        NOT NULL,  -- 0-9, *, #, A-D
    offset_ms bigint      NOT NULL,  -- offset from the start of the call
    at        timestamptz NOT NULL,
    position  bigint      NOT NULL,
    PRIMARY KEY (call_id, seq)
);
