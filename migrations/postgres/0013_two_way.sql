-- Two-way: customers answer securely. Twin of the other backend's
-- 0013_two_way.sql (schema_parity.rs). Ids, times, states and counts only:
-- what was said, by whom and in which file lives sealed in the vault.

-- Whether the customer may answer this message, the conversation it
-- belongs to (the first message's id), and how many answers it took (a
-- compare-and-set bounds them).
ALTER TABLE deliveries ADD COLUMN allow_reply BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN conversation_id TEXT;
ALTER TABLE deliveries ADD COLUMN replies BIGINT NOT NULL DEFAULT 0;
UPDATE deliveries SET conversation_id = message_id;
CREATE INDEX deliveries_conversation ON deliveries(conversation_id, created_at);

-- What customers send in: a sealed vault message each (`message_id`),
-- tracked here like deliveries track what staff send.
CREATE TABLE incoming (
    message_id       TEXT PRIMARY KEY REFERENCES messages(id),
    -- reply | request | inbox
    kind             TEXT NOT NULL,
    conversation_id  TEXT,
    -- The delivery a reply answers.
    in_reply_to      TEXT,
    -- Who handles it; NULL while a secure-inbox item is unclaimed.
    owner_id         TEXT REFERENCES staff_users(id),
    received_at      BIGINT NOT NULL,
    claimed_at       BIGINT,
    read_at          BIGINT,
    done_at          BIGINT,
    -- When it goes (set when marked done), and when it went.
    shred_at         BIGINT,
    shredded_at      BIGINT
);
-- An agent's list (own items, unread first, newest first) and the shared one.
CREATE INDEX incoming_owner ON incoming(owner_id, received_at, message_id);
CREATE INDEX incoming_received ON incoming(received_at, message_id);
CREATE INDEX incoming_conversation ON incoming(conversation_id, received_at);
CREATE INDEX incoming_shred ON incoming(shred_at) WHERE shredded_at IS NULL;
