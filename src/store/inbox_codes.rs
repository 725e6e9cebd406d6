//! `inbox_codes`: the secure inbox's emailed codes, by the address's blind
//! index and keyed hash only.

use super::{Db, Tx, exec};

pub struct NewCode<'a> {
    pub id: &'a str,
    pub address_index: &'a [u8],
    pub code_hash: &'a [u8],
    pub created_at: i64,
    pub expires_at: i64,
}

pub async fn insert(tx: &mut Tx, code: &NewCode<'_>) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO inbox_codes (id, address_index, code_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)";
    exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(code.id)
            .bind(code.address_index)
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

/// Unused, unexpired codes of an address with fewer than `max_wrong` wrong
/// guesses.
pub async fn live(
    db: &Db,
    address_index: &[u8],
    now: i64,
    max_wrong: i64,
) -> Result<Vec<LiveCode>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, code_hash FROM inbox_codes
         WHERE address_index = $1 AND used_at IS NULL AND expires_at > $2 AND wrong_guesses < $3",
    )
    .bind(address_index)
    .bind(now)
    .bind(max_wrong)
    .fetch_all(db.pool())
    .await
}

/// Uses a code; false if it was used meanwhile.
pub async fn mark_used(tx: &mut Tx, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE inbox_codes SET used_at = $1 WHERE id = $2 AND used_at IS NULL";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(now).bind(id)).await? == 1)
}

/// Counts a wrong answer against every live code of the address.
pub async fn count_wrong(tx: &mut Tx, address_index: &[u8], now: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE inbox_codes SET wrong_guesses = wrong_guesses + 1
         WHERE address_index = $1 AND used_at IS NULL AND expires_at > $2";
    exec(&mut **tx, sqlx::query(sql).bind(address_index).bind(now))
        .await
        .map(drop)
}

/// Forgets codes that expired before `before`: nothing of an address
/// stays longer than it must.
pub async fn purge(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    exec(
        db.pool(),
        sqlx::query("DELETE FROM inbox_codes WHERE expires_at < $1").bind(before),
    )
    .await
}
