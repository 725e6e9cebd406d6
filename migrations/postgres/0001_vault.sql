-- The encrypted vault. Twin of migrations/sqlite/0001_vault.sql: keep both in step.
-- Timestamps are unix seconds; ids are text (UUIDs, key fingerprints).

-- Master keys the installation has seen. The keys themselves live only in the
-- master key file; this table is bookkeeping for status, rotation and retirement.
CREATE TABLE master_keys (
    id          TEXT PRIMARY KEY,
    recipient   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

-- Installation-wide secrets (e.g. the blind-index key), stored only wrapped.
CREATE TABLE vault_secrets (
    name           TEXT PRIMARY KEY,
    master_key_id  TEXT NOT NULL REFERENCES master_keys(id),
    wrapped        BYTEA NOT NULL
);

CREATE TABLE messages (
    id                 TEXT PRIMARY KEY,
    -- Public half of the message's own age identity (not secret).
    recipient          TEXT NOT NULL,
    -- Escrow recipients (public keys) this message was sealed to, comma-separated.
    escrow_recipients  TEXT NOT NULL,
    -- Keyed HMAC of the normalised recipient address, for exact-match search.
    recipient_index    BYTEA,
    -- age-encrypted JSON (address, phone, title, reference); NULL once shredded.
    sealed_meta        BYTEA,
    part_count         BIGINT NOT NULL,
    plain_size         BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    shredded_at        BIGINT
);
CREATE INDEX messages_recipient_index ON messages(recipient_index);

-- The per-message identity, wrapped to a master key. Deleting this row shreds the message.
CREATE TABLE message_keys (
    message_id        TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    master_key_id     TEXT NOT NULL REFERENCES master_keys(id),
    wrapped_identity  BYTEA NOT NULL
);
CREATE INDEX message_keys_master_key ON message_keys(master_key_id);

CREATE TABLE message_parts (
    id           TEXT PRIMARY KEY,
    message_id   TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position     BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    blob_key     TEXT NOT NULL UNIQUE,
    plain_size   BIGINT NOT NULL,
    cipher_size  BIGINT NOT NULL,
    -- age-encrypted JSON (file name, content type).
    sealed_meta  BYTEA NOT NULL,
    UNIQUE (message_id, position)
);
