-- One copy of each event's body for all the endpoints it goes to (a fan-out to N endpoints
-- used to store and escape the same JSON N times). Deliveries enqueued before this keep their
-- own copy in webhook_deliveries.payload.
CREATE TABLE IF NOT EXISTS webhook_payloads (
    event_id    text PRIMARY KEY,
    payload     text        NOT NULL,
    created_at  timestamptz NOT NULL
);
ALTER TABLE webhook_deliveries ALTER COLUMN payload DROP NOT NULL;
CREATE INDEX IF NOT EXISTS webhook_deliveries_event ON webhook_deliveries (event_id);
