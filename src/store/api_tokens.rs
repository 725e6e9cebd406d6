//! `api_tokens`: API tokens by the keyed hash of their value (the value
//! itself is never stored), with their owner, scopes and last use.

use super::{Db, Tx, exec, row_by, rows_by};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TokenRow {
    pub id: String,
    pub staff_id: String,
    pub name: String,
    pub scopes: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_used_ip: Option<String>,
}

const COLUMNS: &str = "id, staff_id, name, scopes, created_by, created_at, expires_at, \
                       revoked_at, last_used_at, last_used_ip";

pub struct NewToken<'a> {
    pub id: &'a str,
    pub staff_id: &'a str,
    pub token_hash: &'a [u8],
    pub name: &'a str,
    pub scopes: &'a str,
    pub created_by: &'a str,
    pub now: i64,
    pub expires_at: Option<i64>,
}

pub async fn insert(tx: &mut Tx, new: &NewToken<'_>) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO api_tokens
         (id, staff_id, token_hash, name, scopes, created_by, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(new.id)
            .bind(new.staff_id)
            .bind(new.token_hash)
            .bind(new.name)
            .bind(new.scopes)
            .bind(new.created_by)
            .bind(new.now)
            .bind(new.expires_at),
    )
    .await
    .map(drop)
}

/// The token with this hash, whatever its state (the caller decides
/// between revoked, expired and usable).
pub async fn by_hash(db: &Db, token_hash: &[u8]) -> Result<Option<TokenRow>, sqlx::Error> {
    row_by(
        db.pool(),
        &format!("SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1"),
        token_hash,
    )
    .await
}

pub async fn by_id(db: &Db, id: &str) -> Result<Option<TokenRow>, sqlx::Error> {
    row_by(
        db.pool(),
        &format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1"),
        id,
    )
    .await
}

/// One member's tokens, newest first.
pub async fn of_staff(db: &Db, staff_id: &str) -> Result<Vec<TokenRow>, sqlx::Error> {
    rows_by(
        db.pool(),
        &format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE staff_id = $1 ORDER BY created_at DESC, id"
        ),
        staff_id,
    )
    .await
}

/// Revokes the token if it is not already; true when this call did.
pub async fn revoke(tx: &mut Tx, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(id).bind(now)).await? == 1)
}

/// Notes a use, at most once per `every` seconds per token (one write, and
/// none for most calls of a busy integration).
pub async fn touch(db: &Db, id: &str, now: i64, ip: &str, every: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE api_tokens SET last_used_at = $2, last_used_ip = $3
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $4 OR last_used_ip <> $3)";
    exec(
        db.pool(),
        sqlx::query(sql)
            .bind(id)
            .bind(now)
            .bind(ip)
            .bind(now - every),
    )
    .await
    .map(drop)
}
