-- API tokens (issue 14). Twin of the sqlite backend's 0016_api_tokens.sql
-- (schema_parity.rs). A token is stored only as a keyed hash; it belongs to
-- one staff member and acts with their rights, narrowed by its scopes.
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    staff_id      TEXT NOT NULL REFERENCES staff_users(id),
    token_hash    BYTEA NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT,
    last_used_ip  TEXT
);
CREATE INDEX api_tokens_staff ON api_tokens(staff_id, created_at);
