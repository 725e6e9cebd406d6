-- The secure inbox (/send): a customer proves an address with an emailed
-- code, then uploads. Twin of the sqlite backend's 0015_secure_inbox.sql
-- (schema_parity.rs). The address is never stored here: codes are found
-- by its blind index, and each code only as a keyed hash.
CREATE TABLE inbox_codes (
    id             TEXT PRIMARY KEY,
    address_index  BYTEA NOT NULL,
    code_hash      BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    wrong_guesses  BIGINT NOT NULL DEFAULT 0,
    used_at        BIGINT
);
CREATE INDEX inbox_codes_address ON inbox_codes(address_index, expires_at);
CREATE INDEX inbox_codes_expiry ON inbox_codes(expires_at);
