-- Cluster-wide leases for jobs only one process may run at a time (master
-- key rotation). A lease that is not renewed expires, so a crashed holder
-- never blocks the next run for long.
-- Twin of migrations/sqlite/0008_job_leases.sql: keep both in step.
CREATE TABLE job_leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
