-- Indexes for staff lists and maintenance that stay fast as messages add
-- up (issue: 100,000 messages feel like 1,000). Twin of the other
-- backend's 0011_growth.sql: keep both in step (tests/suite/schema_parity.rs).

-- Sent items, newest first, paged by (created_at, message_id) keys: one
-- sender's, everyone's (admins), and each stored status of either.
DROP INDEX deliveries_sender;
DROP INDEX deliveries_created;
CREATE INDEX deliveries_sender ON deliveries(sender_id, created_at, message_id);
CREATE INDEX deliveries_created ON deliveries(created_at, message_id);
CREATE INDEX deliveries_sender_status ON deliveries(sender_id, status, created_at, message_id);
CREATE INDEX deliveries_status ON deliveries(status, created_at, message_id);

-- Rare states get small partial indexes: the locked banner counts from
-- one, and the locked and revoked filters page through them.
CREATE INDEX deliveries_locked ON deliveries(sender_id, created_at, message_id)
    WHERE locked_at IS NOT NULL;
CREATE INDEX deliveries_revoked ON deliveries(sender_id, created_at, message_id)
    WHERE revoked_at IS NOT NULL;

-- The expiry job's two questions, over the rows not shredded yet only
-- (shredded rows stay for the sender's record and would otherwise be
-- walked every minute).
DROP INDEX deliveries_expiry;
CREATE INDEX deliveries_expiry ON deliveries(expires_at)
    WHERE shredded_at IS NULL AND revoked_at IS NULL;
CREATE INDEX deliveries_shred_due ON deliveries(shred_at)
    WHERE shred_at IS NOT NULL AND shredded_at IS NULL AND revoked_at IS NULL;
