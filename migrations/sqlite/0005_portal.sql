-- Staff portal: sessions epoch, TOTP, settings, one-time links, deliveries.
-- Twin of migrations/postgres/0005_portal.sql: keep both in step.

-- Bumped whenever an account's sessions must end (disable, password or TOTP
-- reset): a session remembers the epoch it was created under.
ALTER TABLE staff_users ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;
-- TOTP secret sealed with a key derived from the installation secret.
ALTER TABLE staff_users ADD COLUMN totp_secret BLOB;
ALTER TABLE staff_users ADD COLUMN totp_enabled_at BIGINT;
-- Highest time step accepted: a code (or an older one) never works twice.
ALTER TABLE staff_users ADD COLUMN totp_last_step BIGINT;

-- Keyed hashes of high-entropy recovery codes.
CREATE TABLE staff_recovery_codes (
    staff_id   TEXT NOT NULL REFERENCES staff_users(id),
    code_hash  BLOB NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (staff_id, code_hash)
);

-- Organisation settings as name/value text; the logo apart as bytes.
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
CREATE TABLE settings_logo (
    id            BIGINT PRIMARY KEY CHECK (id = 1),
    content_type  TEXT NOT NULL,
    data          BLOB NOT NULL
);

-- First-run setup and staff invitations: only keyed hashes of the token.
CREATE TABLE staff_links (
    token_hash  BLOB PRIMARY KEY,
    purpose     TEXT NOT NULL CHECK (purpose IN ('setup', 'invite')),
    staff_id    TEXT REFERENCES staff_users(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

-- What staff need to track a message; nothing here is customer data
-- (recipient, title and body live sealed in messages/message_parts).
CREATE TABLE deliveries (
    message_id          TEXT PRIMARY KEY REFERENCES messages(id),
    sender_id           TEXT NOT NULL REFERENCES staff_users(id),
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    verification        TEXT NOT NULL,
    access_code_hash    TEXT,
    known_fact_hash     TEXT,
    shred_after_pickup  BIGINT NOT NULL,
    status              TEXT NOT NULL,
    status_at           BIGINT NOT NULL,
    link_generation     BIGINT NOT NULL DEFAULT 1,
    locked_at           BIGINT,
    revoked_at          BIGINT
);
CREATE INDEX deliveries_sender ON deliveries(sender_id, created_at);
CREATE INDEX deliveries_created ON deliveries(created_at);
