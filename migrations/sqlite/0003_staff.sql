-- Staff accounts. Twin of migrations/postgres/0003_staff.sql: keep both in step.
-- Staff addresses are the organisation's own, not customer data; passwords
-- are stored only as argon2id PHC strings.
CREATE TABLE staff_users (
    id                   TEXT PRIMARY KEY,
    email                TEXT NOT NULL UNIQUE,
    role                 TEXT NOT NULL CHECK (role IN ('admin', 'agent')),
    password_hash        TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    password_changed_at  BIGINT NOT NULL,
    disabled_at          BIGINT
);
