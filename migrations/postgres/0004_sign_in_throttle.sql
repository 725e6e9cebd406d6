-- Sign-in throttling. Twin of migrations/sqlite/0004_sign_in_throttle.sql.
-- Kept in the database so limits hold across instances. The key is a keyed
-- hash of "account:<address as typed>" or "ip:<address>", never the address.
CREATE TABLE sign_in_throttle (
    key            BYTEA PRIMARY KEY,
    failures       BIGINT NOT NULL,
    last_failure   BIGINT NOT NULL,
    blocked_until  BIGINT NOT NULL
);
