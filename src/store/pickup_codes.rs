//! `pickup_codes`: emailed verification codes, by keyed hash.

use super::{Db, Tx, exec};

pub struct NewCode<'a> {
    pub id: &'a str,
    pub message_id: &'a str,
    pub code_hash: &'a [u8],
    pub created_at: i64,
    pub expires_at: i64,
}

pub async fn insert(tx: &mut Tx, code: &NewCode<'_>) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO pickup_codes (id, message_id, code_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)";
    exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(code.id)
            .bind(code.message_id)
            .bind(code.code_hash)
            .bind(code.created_at)
            .bind(code.expires_at),
    )
    .await
    .map(drop)
}

/// A code that may still be entered.
#[derive(sqlx::FromRow)]
pub struct LiveCode {
    pub id: String,
    pub code_hash: Vec<u8>,
}

/// Unused, unexpired codes of a message with fewer than `max_wrong` wrong guesses.
pub async fn live(
    db: &Db,
    message_id: &str,
    now: i64,
    max_wrong: i64,
) -> Result<Vec<LiveCode>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, code_hash FROM pickup_codes
         WHERE message_id = $1 AND used_at IS NULL AND expires_at > $2 AND wrong_guesses < $3",
    )
    .bind(message_id)
    .bind(now)
    .bind(max_wrong)
    .fetch_all(db.pool())
    .await
}

/// Uses a code; false if it was used meanwhile.
pub async fn mark_used(tx: &mut Tx, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE pickup_codes SET used_at = $1 WHERE id = $2 AND used_at IS NULL";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(now).bind(id)).await? == 1)
}

/// Counts a wrong answer against every live code of the message.
pub async fn count_wrong(tx: &mut Tx, message_id: &str, now: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE pickup_codes SET wrong_guesses = wrong_guesses + 1
         WHERE message_id = $1 AND used_at IS NULL AND expires_at > $2";
    exec(&mut **tx, sqlx::query(sql).bind(message_id).bind(now))
        .await
        .map(drop)
}

/// A shred's share: every code of the message.
pub async fn delete_for_message(tx: &mut Tx, message_id: &str) -> Result<(), sqlx::Error> {
    let sql = "DELETE FROM pickup_codes WHERE message_id = $1";
    exec(&mut **tx, sqlx::query(sql).bind(message_id))
        .await
        .map(drop)
}
