-- Audit log. Twin of migrations/postgres/0002_audit.sql: keep both in step.
-- Append-only and hash-chained: each row's `hash` is an HMAC (key derived
-- from the installation secret) over its fields and the previous row's hash.
-- Ids only, never customer data.
CREATE TABLE audit_log (
    id          BIGINT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    message_id  TEXT,
    ip          TEXT,
    detail      TEXT,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
);
CREATE INDEX audit_log_at ON audit_log(at);
CREATE INDEX audit_log_message ON audit_log(message_id);

-- The chain detects tampering; these stop it by accident.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
