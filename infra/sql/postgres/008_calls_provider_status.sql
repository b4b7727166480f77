-- Calls on the phone (issue 12): the provider's view of the call's phone leg and the outcome of
-- a transfer, on the calls read model (projections.calls_view), and the leg's status history.
ALTER TABLE calls ADD COLUMN IF NOT EXISTS provider         text;  -- twilio | voximplant | sip
ALTER TABLE calls ADD COLUMN IF NOT EXISTS provider_call_id text;  -- Twilio CA.., SIP Call-ID
ALTER TABLE calls ADD COLUMN IF NOT EXISTS provider_status  text;  -- queued .. completed | busy
ALTER TABLE calls ADD COLUMN IF NOT EXISTS answered_by      text;  -- human | machine | fax | unknown
ALTER TABLE calls ADD COLUMN IF NOT EXISTS transfer_outcome text;  -- completed | failed | no-answer | busy
ALTER TABLE calls ADD COLUMN IF NOT EXISTS transfer_reason  text;
COMMENT ON COLUMN calls.channel IS
    'web | twilio_sip (before our SIP endpoint) | twilio_media_streams | voximplant | sip';
CREATE INDEX IF NOT EXISTS calls_provider_call ON calls (provider, provider_call_id)
    WHERE provider_call_id IS NOT NULL;

-- One row per call.provider_status_changed, keyed by (call_id, seq) like call_dtmf.
CREATE TABLE IF NOT EXISTS call_provider_statuses (
    call_id          uuid        NOT NULL,
    seq              bigint      NOT NULL,
    space_id         text        NOT NULL,
    provider         text        NOT NULL,
    provider_call_id text        NOT NULL,
    status           text        NOT NULL,
    answered_by      text,
    sip_code         integer,
    reason           text,
    at               timestamptz NOT NULL,
    position         bigint      NOT NULL,
    PRIMARY KEY (call_id, seq)
);
