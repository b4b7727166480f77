-- Read model of webhook endpoints (projected from webhook.endpoint_* events by the dispatcher).
-- The signing secrets are not here: the webhooks event store keeps them in webhook_secrets.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id               uuid PRIMARY KEY,
    space_id         text        NOT NULL,
    url              text        NOT NULL,
    description      text        NOT NULL DEFAULT '',
    event_types      text[]      NOT NULL,
    enabled          boolean     NOT NULL,
    disabled_reason  text,
    secret_version   integer     NOT NULL,
    deleted          boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    version          bigint      NOT NULL,   -- aggregate version this row reflects
    position         bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_space ON webhook_endpoints (space_id, created_at DESC, id)
    WHERE NOT deleted;

-- The durable delivery queue: one row per (endpoint, event). Operational state, not projected:
-- the dispatcher inserts (ON CONFLICT DO NOTHING, so Kafka redelivery adds nothing), senders
-- claim due rows (FOR UPDATE SKIP LOCKED) and push next_attempt_at forward as a lease.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id                 uuid PRIMARY KEY,          -- uuid5(endpoint id, event id)
    space_id           text        NOT NULL,
    endpoint_id        uuid        NOT NULL,
    event_id           text        NOT NULL,      -- the webhook-id header: stable across retries
    event_type         text        NOT NULL,
    payload            text        NOT NULL,      -- the exact JSON body (the event envelope)
    status             text        NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts           integer     NOT NULL DEFAULT 0,  -- attempts made, all schedules
    schedule_step      integer     NOT NULL DEFAULT 0,  -- failures since the schedule (re)started
    next_attempt_at    timestamptz NOT NULL,
    occurred_at        timestamptz NOT NULL,      -- the event's occurred_at
    enqueued_at        timestamptz NOT NULL,
    last_attempt_at    timestamptz,
    completed_at       timestamptz,               -- succeeded or failed for good
    last_status_code   integer,
    last_error         text,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_listing
    ON webhook_deliveries (endpoint_id, enqueued_at DESC, id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_failed
    ON webhook_deliveries (endpoint_id, completed_at) WHERE status = 'failed';

-- Every attempt of every delivery, as the API shows it.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id    uuid        NOT NULL,
    attempt        integer     NOT NULL,
    started_at     timestamptz NOT NULL,
    status_code    integer,
    latency_ms     integer     NOT NULL,
    error          text,
    response_body  text        NOT NULL DEFAULT '',
    PRIMARY KEY (delivery_id, attempt)
);

-- Since when every attempt to an endpoint has failed (NULL once one succeeds).
CREATE TABLE IF NOT EXISTS webhook_endpoint_health (
    endpoint_id      uuid PRIMARY KEY,
    failing_since    timestamptz,
    last_success_at  timestamptz,
    last_failure_at  timestamptz
);
