-- Idempotency keys of creating API calls (issue 14). Twin of the postgres
-- backend's 0017_idempotency.sql (schema_parity.rs). The client's key and
-- the request are kept only as keyed hashes; the first answer only sealed.
-- A row without a response is a call in flight (or abandoned, once old).
CREATE TABLE idempotency_keys (
    staff_id      TEXT NOT NULL REFERENCES staff_users(id),
    key_hash      BLOB NOT NULL,
    request_hash  BLOB NOT NULL,
    started_at    BIGINT NOT NULL,
    message_id    TEXT,
    status        INTEGER,
    response      BLOB,
    PRIMARY KEY (staff_id, key_hash)
);
CREATE INDEX idempotency_keys_started ON idempotency_keys(started_at);
