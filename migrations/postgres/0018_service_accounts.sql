-- Service accounts (issue 14). Twin of the sqlite backend's
-- 0018_service_accounts.sql (schema_parity.rs). A service account is a
-- staff member that is not a person: it only holds API tokens, never signs
-- in with a password, and never gets a link or an email. Its address is
-- `<name>@service.invalid` (a reserved, undeliverable domain), which keeps
-- it unique under the existing constraint on `email`.
ALTER TABLE staff_users ADD COLUMN kind TEXT NOT NULL DEFAULT 'person'
    CHECK (kind IN ('person', 'service'));
