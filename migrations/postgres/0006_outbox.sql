-- Outgoing mail, written in the transaction that causes it and sent by a
-- background worker with leased claims, retries and back-off.
-- Twin of migrations/sqlite/0006_outbox.sql: keep both in step.

-- Recipient address, link and code exist only inside `payload` (sealed by
-- the vault for purpose "outbox"), which is cleared once the row is sent or
-- has failed for good. last_error holds an error class or SMTP code only.
CREATE TABLE outbox (
    id               BIGSERIAL PRIMARY KEY,
    kind             TEXT NOT NULL,
    message_id       TEXT,
    payload          BYTEA,
    mail_message_id  TEXT NOT NULL UNIQUE,
    created_at       BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT,
    sent_at          BIGINT,
    failed_at        BIGINT,
    last_error       TEXT
);
-- The worker's scan: only rows still to send.
CREATE INDEX outbox_due ON outbox(next_attempt_at, id)
    WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_message ON outbox(message_id);

-- Without an SMTP server, sent mail lands here (sealed, purpose
-- "dev-mailbox") for the loopback-only /dev/mailbox page.
CREATE TABLE dev_mailbox (
    id          BIGSERIAL PRIMARY KEY,
    outbox_id   BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    content     BYTEA NOT NULL
);
