-- Customer pickup: one-time links, verification codes and limits.
-- Twin of migrations/sqlite/0007_pickup.sql: keep both in step.

-- Keyed hash of the current link's secret (the secret itself is never stored).
ALTER TABLE deliveries ADD COLUMN link_hash BYTEA;
-- The recipient address sealed for sending codes without opening the message.
ALTER TABLE deliveries ADD COLUMN sealed_recipient BYTEA;
ALTER TABLE deliveries ADD COLUMN link_consumed_at BIGINT;
ALTER TABLE deliveries ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;
-- When a "shred after first pickup" message goes (pushed on while its
-- verified session is active), and when the expiry job shredded it.
ALTER TABLE deliveries ADD COLUMN shred_at BIGINT;
ALTER TABLE deliveries ADD COLUMN shredded_at BIGINT;
CREATE UNIQUE INDEX deliveries_link ON deliveries(link_hash);
CREATE INDEX deliveries_expiry ON deliveries(expires_at);

-- Email codes: keyed hash only; each dies after 10 minutes, use or 5 misses.
CREATE TABLE pickup_codes (
    id             TEXT PRIMARY KEY,
    message_id     TEXT NOT NULL REFERENCES deliveries(message_id),
    code_hash      BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    wrong_guesses  BIGINT NOT NULL DEFAULT 0,
    used_at        BIGINT
);
CREATE INDEX pickup_codes_message ON pickup_codes(message_id, created_at);

-- Fixed-window counters (per IP, per message) shared by all instances.
CREATE TABLE rate_limits (
    key           BYTEA PRIMARY KEY,
    window_start  BIGINT NOT NULL,
    count         BIGINT NOT NULL
);

-- Opt-in: email the sender when a customer first opens their message.
ALTER TABLE staff_users ADD COLUMN pickup_alerts BIGINT NOT NULL DEFAULT 0;
