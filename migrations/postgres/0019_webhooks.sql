-- Signed webhooks (issue 14). Twin of the sqlite backend's
-- 0019_webhooks.sql (schema_parity.rs).
--
-- An endpoint's signing secret is kept only sealed by the vault (purpose
-- "webhook-secret"); it is shown once, when the endpoint is made. `events`
-- is the list of event types it receives, each between commas
-- (",message.emailed,message.locked,") so one LIKE finds subscribers.
CREATE TABLE webhook_endpoints (
    id             TEXT PRIMARY KEY,
    url            TEXT NOT NULL,
    events         TEXT NOT NULL,
    secret         BYTEA NOT NULL,
    allow_private  BIGINT NOT NULL DEFAULT 0,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    disabled_at    BIGINT
);
-- What the audit log reads for every event it records: only live endpoints.
CREATE INDEX webhook_endpoints_live ON webhook_endpoints(created_at)
    WHERE disabled_at IS NULL;

-- One row per event and endpoint: queued in the transaction that records
-- the event, sent at least once by the worker with leases, in `seq` order
-- (the audit event's id) per endpoint and message. `id` is the event's
-- stable `webhook-id` (the same on every attempt and redelivery). The
-- payload holds ids and statuses only; last_error an error class only.
-- `queued_at` is when it was queued (again, for a redelivery): retries
-- give up a while after it.
CREATE TABLE webhook_deliveries (
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    id               TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    message_id       TEXT,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    queued_at        BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT,
    status           TEXT NOT NULL,
    last_status_code BIGINT,
    last_error       TEXT,
    delivered_at     BIGINT,
    PRIMARY KEY (endpoint_id, id)
);
-- The worker's scan: only rows still to send, due first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at, seq)
    WHERE status = 'pending';
-- "Is an earlier event of this message still pending?" (order per message).
CREATE INDEX webhook_deliveries_order ON webhook_deliveries(endpoint_id, message_id, seq)
    WHERE status = 'pending';
-- An endpoint's delivery log, newest first.
CREATE INDEX webhook_deliveries_log ON webhook_deliveries(endpoint_id, seq);
-- Pruning old finished rows.
CREATE INDEX webhook_deliveries_created ON webhook_deliveries(created_at);
