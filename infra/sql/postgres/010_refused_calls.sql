-- Calls refused at the door of a number of ours (number.call_refused, issue 12): one row per
-- refused call, written by the numbers projector like the tables of 007 (version-guarded
-- upsert). Calls to numbers we do not know have no space and are not here (logs and metrics).
CREATE TABLE IF NOT EXISTS refused_calls (
    id               uuid PRIMARY KEY,       -- the RefusedCall aggregate (number + provider call id)
    space_id         text        NOT NULL,
    number_id        uuid        NOT NULL,
    e164             text        NOT NULL,
    provider         text        NOT NULL,   -- the provider that brought the call
    caller           text,                   -- the caller id, as the provider gave it
    reason           text        NOT NULL,   -- number_unassigned | number_released | ...
    provider_call_id text        NOT NULL,
    at               timestamptz NOT NULL,   -- when the call was refused
    created_at       timestamptz NOT NULL,   -- when it was recorded
    updated_at       timestamptz NOT NULL,
    version          bigint      NOT NULL,
    position         bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS refused_calls_number
    ON refused_calls (space_id, number_id, created_at DESC, id);
-- where a call to a released number is recorded: the number released last (any space)
CREATE INDEX IF NOT EXISTS numbers_released_e164 ON numbers (e164, released_at DESC)
    WHERE status = 'released';
