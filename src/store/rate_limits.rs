//! `rate_limits`: fixed-window counters in the database, so limits hold
//! across instances and restarts. Keys are keyed hashes (never an address
//! or id in clear).

use super::Tx;

/// Counts one event for `key` in a window of `window_secs` and says whether
/// it is within `max`. Atomic in one statement on both backends.
pub async fn hit(
    tx: &mut Tx,
    key: &[u8],
    now: i64,
    window_secs: i64,
    max: i64,
) -> Result<bool, sqlx::Error> {
    let count: i64 = sqlx::query_scalar(
        "INSERT INTO rate_limits (key, window_start, count) VALUES ($1, $2, 1)
         ON CONFLICT (key) DO UPDATE SET
             count = CASE WHEN rate_limits.window_start <= $3 THEN 1 ELSE rate_limits.count + 1 END,
             window_start = CASE WHEN rate_limits.window_start <= $3 THEN $2 ELSE rate_limits.window_start END
         RETURNING count",
    )
    .bind(key)
    .bind(now)
    .bind(now - window_secs)
    .fetch_one(&mut **tx)
    .await?;
    Ok(count <= max)
}
