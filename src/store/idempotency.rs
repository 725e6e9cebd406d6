//! `idempotency_keys`: one row per (staff member, key) of a creating API
//! call: in flight until `response` is set, in the transaction that made
//! the result.

use super::{Db, Tx, exec};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct KeyRow {
    pub request_hash: Vec<u8>,
    pub started_at: i64,
    pub status: Option<i64>,
    pub response: Option<Vec<u8>>,
}

/// Claims the key for a new call; false if a row holds it already.
pub async fn claim(
    db: &Db,
    staff_id: &str,
    key_hash: &[u8],
    request_hash: &[u8],
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "INSERT INTO idempotency_keys (staff_id, key_hash, request_hash, started_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
    let n = exec(
        db.pool(),
        sqlx::query(sql)
            .bind(staff_id)
            .bind(key_hash)
            .bind(request_hash)
            .bind(now),
    )
    .await?;
    Ok(n == 1)
}

/// Takes over a row that is done with: a call in flight since before
/// `abandoned_before` (its instance died), or a result older than
/// `expired_before`. One caller wins (compare-and-set).
pub async fn take_over(
    db: &Db,
    staff_id: &str,
    key_hash: &[u8],
    request_hash: &[u8],
    now: i64,
    abandoned_before: i64,
    expired_before: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE idempotency_keys
         SET request_hash = $3, started_at = $4, message_id = NULL, status = NULL, response = NULL
         WHERE staff_id = $1 AND key_hash = $2
           AND ((response IS NULL AND started_at < $5) OR started_at < $6)";
    let n = exec(
        db.pool(),
        sqlx::query(sql)
            .bind(staff_id)
            .bind(key_hash)
            .bind(request_hash)
            .bind(now)
            .bind(abandoned_before)
            .bind(expired_before),
    )
    .await?;
    Ok(n == 1)
}

pub async fn get(db: &Db, staff_id: &str, key_hash: &[u8]) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT request_hash, started_at, status, response FROM idempotency_keys
         WHERE staff_id = $1 AND key_hash = $2",
    )
    .bind(staff_id)
    .bind(key_hash)
    .fetch_optional(db.pool())
    .await
}

/// Records the call's result in the transaction that made it.
pub async fn complete(
    tx: &mut Tx,
    staff_id: &str,
    key_hash: &[u8],
    started_at: i64,
    message_id: &str,
    status: i64,
    response: &[u8],
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE idempotency_keys SET message_id = $4, status = $5, response = $6
         WHERE staff_id = $1 AND key_hash = $2 AND started_at = $3 AND response IS NULL";
    let n = exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(staff_id)
            .bind(key_hash)
            .bind(started_at)
            .bind(message_id)
            .bind(status)
            .bind(response),
    )
    .await?;
    Ok(n == 1)
}

/// Lets go of a claim whose call failed, so a retry runs it again.
pub async fn release(
    db: &Db,
    staff_id: &str,
    key_hash: &[u8],
    started_at: i64,
) -> Result<(), sqlx::Error> {
    let sql = "DELETE FROM idempotency_keys
         WHERE staff_id = $1 AND key_hash = $2 AND started_at = $3 AND response IS NULL";
    exec(
        db.pool(),
        sqlx::query(sql)
            .bind(staff_id)
            .bind(key_hash)
            .bind(started_at),
    )
    .await
    .map(drop)
}

/// Forgets keys started before `before`.
pub async fn purge(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    exec(
        db.pool(),
        sqlx::query("DELETE FROM idempotency_keys WHERE started_at < $1").bind(before),
    )
    .await
}
