-- The locked banner on every sent-items page counts live locked messages.
-- This index holds exactly those rows and every column the count reads
-- (SQLite reads the table for a column the index lacks, even one the
-- index's WHERE fixes), so the count never touches the table: its cost is
-- the number of live locked messages, not of messages ever sent.
-- Twin of the other backend's 0012_locked_count.sql (schema_parity.rs).
CREATE INDEX deliveries_locked_live
    ON deliveries(sender_id, expires_at, locked_at, revoked_at, shredded_at)
    WHERE locked_at IS NOT NULL AND revoked_at IS NULL AND shredded_at IS NULL;
-- The same rows by expiry alone, for an administrator's count over all
-- senders (without it the planner walks every live message by expiry).
CREATE INDEX deliveries_locked_live_all
    ON deliveries(expires_at, locked_at, revoked_at, shredded_at)
    WHERE locked_at IS NOT NULL AND revoked_at IS NULL AND shredded_at IS NULL;
