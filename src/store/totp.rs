//! Second factors: the TOTP columns of `staff_users` (sealed seed, last
//! used step, failure streak and back-off) and `staff_recovery_codes`
//! (keyed hashes of one-time recovery codes).

use super::{Db, Tx, exec, row_by, value_by};

/// Stores a confirmed seed and its first used step, ending the account's
/// other sessions; returns the new session epoch.
pub async fn enable(
    tx: &mut Tx,
    staff_id: &str,
    sealed_seed: &[u8],
    step: i64,
    now: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE staff_users SET totp_secret = $1, totp_enabled_at = $2, totp_last_step = $3,
                session_epoch = session_epoch + 1
         WHERE id = $4 RETURNING session_epoch",
    )
    .bind(sealed_seed)
    .bind(now)
    .bind(step)
    .bind(staff_id)
    .fetch_one(&mut **tx)
    .await
}

/// Removes the second factor, ending the account's sessions; false if no
/// such account.
pub async fn disable(tx: &mut Tx, staff_id: &str) -> Result<bool, sqlx::Error> {
    let sql =
        "UPDATE staff_users SET totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL,
                session_epoch = session_epoch + 1
         WHERE id = $1";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(staff_id)).await? == 1)
}

/// Moves an account that uses TOTP to a new session epoch (its other
/// sessions end); `None` if it does not use TOTP.
pub async fn next_epoch_if_enabled(
    tx: &mut Tx,
    staff_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    value_by(
        &mut **tx,
        "UPDATE staff_users SET session_epoch = session_epoch + 1
         WHERE id = $1 AND totp_enabled_at IS NOT NULL RETURNING session_epoch",
        staff_id,
    )
    .await
}

/// The sealed seed and the last step used.
#[derive(sqlx::FromRow)]
pub struct SeedRow {
    pub totp_secret: Option<Vec<u8>>,
    pub totp_last_step: Option<i64>,
}

pub async fn seed(db: &Db, staff_id: &str) -> Result<Option<SeedRow>, sqlx::Error> {
    row_by(
        db.pool(),
        "SELECT totp_secret, totp_last_step FROM staff_users WHERE id = $1",
        staff_id,
    )
    .await
}

/// Records `step` as used, by compare-and-set: of two concurrent requests
/// with one code, one wins.
pub async fn use_step(db: &Db, staff_id: &str, step: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE staff_users SET totp_last_step = $1
         WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)";
    Ok(exec(db.pool(), sqlx::query(sql).bind(step).bind(staff_id)).await? == 1)
}

/// Counts an attempt unless the account is in a back-off: the streak
/// restarts if its last failure is older than `forget_before`. `None` if
/// blocked (or no such account).
pub async fn count_attempt(
    tx: &mut Tx,
    staff_id: &str,
    now: i64,
    forget_before: i64,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE staff_users SET
             totp_failures = CASE WHEN totp_last_failure < $1 THEN 1 ELSE totp_failures + 1 END,
             totp_last_failure = $2
         WHERE id = $3 AND totp_blocked_until <= $2
         RETURNING totp_failures",
    )
    .bind(forget_before)
    .bind(now)
    .bind(staff_id)
    .fetch_optional(&mut **tx)
    .await
}

pub async fn blocked_until(tx: &mut Tx, staff_id: &str) -> Result<Option<i64>, sqlx::Error> {
    value_by(
        &mut **tx,
        "SELECT totp_blocked_until FROM staff_users WHERE id = $1",
        staff_id,
    )
    .await
}

pub async fn block_until(tx: &mut Tx, staff_id: &str, until: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE staff_users SET totp_blocked_until = $1 WHERE id = $2";
    exec(&mut **tx, sqlx::query(sql).bind(until).bind(staff_id))
        .await
        .map(drop)
}

/// Ends the failure streak and any back-off.
pub async fn clear_failures(db: &Db, staff_id: &str) -> Result<(), sqlx::Error> {
    let sql = "UPDATE staff_users SET totp_failures = 0, totp_blocked_until = 0 WHERE id = $1";
    exec(db.pool(), sqlx::query(sql).bind(staff_id))
        .await
        .map(drop)
}

pub async fn delete_recovery_codes(tx: &mut Tx, staff_id: &str) -> Result<(), sqlx::Error> {
    let sql = "DELETE FROM staff_recovery_codes WHERE staff_id = $1";
    exec(&mut **tx, sqlx::query(sql).bind(staff_id))
        .await
        .map(drop)
}

pub async fn insert_recovery_code(
    tx: &mut Tx,
    staff_id: &str,
    hash: &[u8],
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO staff_recovery_codes (staff_id, code_hash) VALUES ($1, $2)";
    exec(&mut **tx, sqlx::query(sql).bind(staff_id).bind(hash))
        .await
        .map(drop)
}

/// Spends a recovery code; false if unknown or used.
pub async fn use_recovery_code(
    tx: &mut Tx,
    staff_id: &str,
    hash: &[u8],
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE staff_recovery_codes SET used_at = $1
         WHERE staff_id = $2 AND code_hash = $3 AND used_at IS NULL";
    Ok(exec(
        &mut **tx,
        sqlx::query(sql).bind(now).bind(staff_id).bind(hash),
    )
    .await?
        == 1)
}

const UNUSED_CODES: &str =
    "SELECT COUNT(*) FROM staff_recovery_codes WHERE staff_id = $1 AND used_at IS NULL";

pub async fn unused_recovery_codes(db: &Db, staff_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(UNUSED_CODES)
        .bind(staff_id)
        .fetch_one(db.pool())
        .await
}

pub async fn unused_recovery_codes_in(tx: &mut Tx, staff_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(UNUSED_CODES)
        .bind(staff_id)
        .fetch_one(&mut **tx)
        .await
}
