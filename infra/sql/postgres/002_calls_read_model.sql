-- Read models of calls (VoxArena "sessions"), built by projections.calls_view.
-- One row per call, folded event by event; version = the last aggregate version folded in.
CREATE TABLE IF NOT EXISTS calls (
    id                    uuid PRIMARY KEY,
    space_id              text          NOT NULL,
    agent_id              text,
    agent_config_version  integer,
    direction             text,         -- inbound | outbound | web
    channel               text,         -- web | twilio_sip | twilio_media_streams | voximplant
    from_number           text,
    to_number             text,
    room_name             text,
    status                text          NOT NULL,  -- initiated | in_progress | transferring | ended
    initiated_at          timestamptz,
    started_at            timestamptz,
    ended_at              timestamptz,
    end_reason            text,
    duration_ms           bigint,
    transfer_mode         text,         -- warm | cold
    transfer_target       text,
    transfer_status       text,         -- requested | completed | failed
    transfer_requested_at timestamptz,
    transfer_completed_at timestamptz,
    transcript_count      integer       NOT NULL DEFAULT 0,
    tool_call_count       integer       NOT NULL DEFAULT 0,
    tool_error_count      integer       NOT NULL DEFAULT 0,
    turn_count            integer       NOT NULL DEFAULT 0,
    usage_count           integer       NOT NULL DEFAULT 0,
    total_cost_usd        numeric(20,6) NOT NULL DEFAULT 0,
    version               bigint        NOT NULL,
    position              bigint        NOT NULL,
    updated_at            timestamptz   NOT NULL   -- occurred_at of the last event folded in
);
CREATE INDEX IF NOT EXISTS calls_space_listing ON calls (space_id, initiated_at DESC, id);
CREATE INDEX IF NOT EXISTS calls_space_agent ON calls (space_id, agent_id, initiated_at DESC);
CREATE INDEX IF NOT EXISTS calls_space_room ON calls (space_id, room_name);

-- One row per event of its kind, keyed by (call_id, seq): seq is the aggregate version.
CREATE TABLE IF NOT EXISTS call_transcripts (
    call_id   uuid        NOT NULL,
    seq       bigint      NOT NULL,
    space_id  text        NOT NULL,
    turn_id   text        NOT NULL,
    speaker   text        NOT NULL,  -- user | agent
    text      text        NOT NULL,
    start_ms  bigint      NOT NULL,  -- offset from the start of the call
    end_ms    bigint      NOT NULL,
    at        timestamptz NOT NULL,
    position  bigint      NOT NULL,
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE IF NOT EXISTS call_tool_calls (
    call_id    uuid        NOT NULL,
    seq        bigint      NOT NULL,
    space_id   text        NOT NULL,
    turn_id    text,
    name       text        NOT NULL,
    arguments  jsonb       NOT NULL,
    result     jsonb,
    error      text,
    status     text        NOT NULL,  -- ok | error | timeout | refused
    latency_ms bigint      NOT NULL,
    at         timestamptz NOT NULL,
    position   bigint      NOT NULL,
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE IF NOT EXISTS call_usage (
    call_id     uuid          NOT NULL,
    seq         bigint        NOT NULL,
    space_id    text          NOT NULL,
    agent_id    text          NOT NULL,  -- '' when the call's initiation was never seen
    provider    text          NOT NULL,
    model       text          NOT NULL,
    kind        text          NOT NULL,  -- stt_seconds | llm_input_tokens | ... (base units)
    category    text          NOT NULL,  -- stt | llm_input | llm_output | tts | telephony
    quantity    numeric       NOT NULL,
    unit_price  numeric       NOT NULL,  -- USD per base unit
    cost_usd    numeric(20,6) NOT NULL,
    price_entry text          NOT NULL,  -- pricing catalog entry id, or 'unpriced'
    at          timestamptz   NOT NULL,
    day         date          NOT NULL,  -- UTC day of at
    position    bigint        NOT NULL,
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE IF NOT EXISTS call_turns (
    call_id                          uuid        NOT NULL,
    seq                              bigint      NOT NULL,
    space_id                         text        NOT NULL,
    turn_id                          text        NOT NULL,
    end_of_speech_to_first_audio_ms  bigint,
    stt_final_ms                     bigint,
    llm_first_token_ms               bigint,
    tts_first_byte_ms                bigint,
    at                               timestamptz NOT NULL,
    position                         bigint      NOT NULL,
    PRIMARY KEY (call_id, seq)
);

-- Cost rollup for the dashboard, incremented only by usage rows actually inserted above.
CREATE TABLE IF NOT EXISTS cost_daily (
    space_id    text          NOT NULL,
    day         date          NOT NULL,
    agent_id    text          NOT NULL,
    provider    text          NOT NULL,
    category    text          NOT NULL,
    quantity    numeric       NOT NULL DEFAULT 0,
    cost_usd    numeric(20,6) NOT NULL DEFAULT 0,
    usage_count bigint        NOT NULL DEFAULT 0,
    PRIMARY KEY (space_id, day, agent_id, provider, category)
);
