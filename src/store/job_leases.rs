//! `job_leases`: cluster-wide leases, so a job (e.g. key rotation) runs on
//! one instance at a time.

use super::{Db, exec};

/// Takes the lease `name` for `holder` until `expires_at`, if it is free,
/// expired, or already `holder`'s. True if taken.
pub async fn take(
    db: &Db,
    name: &str,
    holder: &str,
    expires_at: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "INSERT INTO job_leases (name, holder, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
         WHERE job_leases.expires_at < $4 OR job_leases.holder = excluded.holder";
    Ok(exec(
        db.pool(),
        sqlx::query(sql)
            .bind(name)
            .bind(holder)
            .bind(expires_at)
            .bind(now),
    )
    .await?
        == 1)
}

/// Extends `holder`'s lease; false if it was lost.
pub async fn renew(
    db: &Db,
    name: &str,
    holder: &str,
    expires_at: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE job_leases SET expires_at = $1 WHERE name = $2 AND holder = $3";
    Ok(exec(
        db.pool(),
        sqlx::query(sql).bind(expires_at).bind(name).bind(holder),
    )
    .await?
        == 1)
}

pub async fn release(db: &Db, name: &str, holder: &str) -> Result<(), sqlx::Error> {
    let sql = "DELETE FROM job_leases WHERE name = $1 AND holder = $2";
    exec(db.pool(), sqlx::query(sql).bind(name).bind(holder))
        .await
        .map(drop)
}
