-- Second-factor guessing limit per account. Twin of
-- migrations/sqlite/0010_totp_failures.sql: keep both in step.
-- Kept in the database (not the sign-in session) so parallel requests and
-- fresh password sign-ins share one count: each code or recovery code
-- checked takes one attempt by an atomic update before it is checked; past
-- the free attempts a back-off starts, doubling like the password one.
ALTER TABLE staff_users ADD COLUMN totp_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE staff_users ADD COLUMN totp_last_failure BIGINT NOT NULL DEFAULT 0;
ALTER TABLE staff_users ADD COLUMN totp_blocked_until BIGINT NOT NULL DEFAULT 0;
