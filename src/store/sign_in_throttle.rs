//! `sign_in_throttle`: failure streaks and back-off per throttle key (keyed
//! hashes of an account, a client network, or both).

use super::{Db, Tx, exec, placeholders};

/// Counts one failure atomically (an upsert, so concurrent instances never
/// lose a count); a streak older than `forget_before` starts again at 1.
/// Returns the streak's length.
pub async fn count_failure(
    tx: &mut Tx,
    key: &[u8],
    now: i64,
    forget_before: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO sign_in_throttle (key, failures, last_failure, blocked_until) VALUES ($1, 1, $2, 0)
         ON CONFLICT (key) DO UPDATE SET
             failures = CASE WHEN sign_in_throttle.last_failure < $3 THEN 1
                             ELSE sign_in_throttle.failures + 1 END,
             last_failure = $2
         RETURNING failures",
    )
    .bind(key)
    .bind(now)
    .bind(forget_before)
    .fetch_one(&mut **tx)
    .await
}

pub async fn block_until(tx: &mut Tx, key: &[u8], until: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE sign_in_throttle SET blocked_until = $1 WHERE key = $2";
    exec(&mut **tx, sqlx::query(sql).bind(until).bind(key))
        .await
        .map(drop)
}

/// Ends a streak (a successful sign-in).
pub async fn clear(tx: &mut Tx, key: &[u8]) -> Result<(), sqlx::Error> {
    let sql = "DELETE FROM sign_in_throttle WHERE key = $1";
    exec(&mut **tx, sqlx::query(sql).bind(key)).await.map(drop)
}

/// The latest `blocked_until` among `keys`, if any row exists.
pub async fn blocked_until(db: &Db, keys: &[&[u8]]) -> Result<Option<i64>, sqlx::Error> {
    let sql = format!(
        "SELECT MAX(blocked_until) FROM sign_in_throttle WHERE key IN ({})",
        placeholders(1, keys.len())
    );
    let mut query = sqlx::query_scalar::<_, Option<i64>>(&sql);
    for key in keys {
        query = query.bind(*key);
    }
    query.fetch_one(db.pool()).await
}

/// Deletes streaks no longer blocking and older than `forget_before`.
pub async fn prune(db: &Db, now: i64, forget_before: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM sign_in_throttle WHERE blocked_until <= $1 AND last_failure < $2";
    exec(db.pool(), sqlx::query(sql).bind(now).bind(forget_before)).await
}
