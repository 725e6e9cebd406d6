//! `master_keys` (the public half and lifetime of each master key) and
//! `vault_secrets` (installation secrets wrapped to a master key), plus the
//! re-wrapping a key rotation does across both wrapped tables.

use super::{Db, Tx, exec, row_by, value_by};

pub async fn count(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM master_keys")
        .fetch_one(db.pool())
        .await
}

/// Records a master key (once).
pub async fn register(db: &Db, id: &str, recipient: &str, now: i64) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO master_keys (id, recipient, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO NOTHING";
    exec(
        db.pool(),
        sqlx::query(sql).bind(id).bind(recipient).bind(now),
    )
    .await
    .map(drop)
}

/// Ids of the keys not retired.
pub async fn active(tx: &mut Tx) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM master_keys WHERE retired_at IS NULL")
        .fetch_all(&mut **tx)
        .await
}

pub async fn exists(db: &Db, id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<String> =
        value_by(db.pool(), "SELECT id FROM master_keys WHERE id = $1", id).await?;
    Ok(found.is_some())
}

pub async fn retire(db: &Db, id: &str, now: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE master_keys SET retired_at = $1 WHERE id = $2 AND retired_at IS NULL";
    exec(db.pool(), sqlx::query(sql).bind(now).bind(id))
        .await
        .map(drop)
}

/// A master key with how much it wraps.
#[derive(sqlx::FromRow)]
pub struct KeyUse {
    pub id: String,
    pub recipient: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub messages: i64,
    pub secrets: i64,
}

pub async fn usage(db: &Db) -> Result<Vec<KeyUse>, sqlx::Error> {
    sqlx::query_as(
        "SELECT k.id, k.recipient, k.created_at, k.retired_at,
                (SELECT COUNT(*) FROM message_keys m WHERE m.master_key_id = k.id) AS messages,
                (SELECT COUNT(*) FROM vault_secrets s WHERE s.master_key_id = k.id) AS secrets
         FROM master_keys k ORDER BY k.created_at, k.id",
    )
    .fetch_all(db.pool())
    .await
}

/// An installation secret, wrapped.
#[derive(sqlx::FromRow)]
pub struct SecretRow {
    pub master_key_id: String,
    pub wrapped: Vec<u8>,
}

pub async fn secret(db: &Db, name: &str) -> Result<Option<SecretRow>, sqlx::Error> {
    row_by(
        db.pool(),
        "SELECT master_key_id, wrapped FROM vault_secrets WHERE name = $1",
        name,
    )
    .await
}

/// Stores a new secret unless one of that name exists (the first writer wins).
pub async fn insert_secret(
    db: &Db,
    name: &str,
    master_key_id: &str,
    wrapped: &[u8],
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO vault_secrets (name, master_key_id, wrapped) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING";
    exec(
        db.pool(),
        sqlx::query(sql)
            .bind(name)
            .bind(master_key_id)
            .bind(wrapped),
    )
    .await
    .map(drop)
}

/// A table whose rows hold something wrapped to a master key.
#[derive(Clone, Copy, Debug)]
pub enum Wrapped {
    MessageKeys,
    VaultSecrets,
}

impl Wrapped {
    pub const ALL: [Wrapped; 2] = [Wrapped::MessageKeys, Wrapped::VaultSecrets];

    /// (table, id column, wrapped column)
    fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Wrapped::MessageKeys => ("message_keys", "message_id", "wrapped_identity"),
            Wrapped::VaultSecrets => ("vault_secrets", "name", "wrapped"),
        }
    }
}

/// How many rows of `table` are wrapped by `id` (`by: true`) or by any
/// other key (`by: false`).
pub async fn count_wrapped(
    db: &Db,
    table: Wrapped,
    id: &str,
    by: bool,
) -> Result<i64, sqlx::Error> {
    let (name, _, _) = table.columns();
    let op = if by { "=" } else { "<>" };
    sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM {name} WHERE master_key_id {op} $1"
    ))
    .bind(id)
    .fetch_one(db.pool())
    .await
}

/// One wrapped value.
#[derive(sqlx::FromRow)]
pub struct WrappedRow {
    pub id: String,
    pub master_key_id: String,
    pub wrapped: Vec<u8>,
}

/// Up to `limit` rows of `table` not yet wrapped by `target`, in key
/// order after `after` (`""` to start): a rotation walks the table once,
/// never re-reading the rows it already re-wrapped.
pub async fn not_wrapped_by(
    db: &Db,
    table: Wrapped,
    target: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<WrappedRow>, sqlx::Error> {
    let (name, id_col, wrapped_col) = table.columns();
    sqlx::query_as(&format!(
        "SELECT {id_col} AS id, master_key_id, {wrapped_col} AS wrapped FROM {name}
         WHERE {id_col} > $3 AND master_key_id <> $1 ORDER BY {id_col} LIMIT $2"
    ))
    .bind(target)
    .bind(limit)
    .bind(after)
    .fetch_all(db.pool())
    .await
}

/// Replaces one wrapped value by compare-and-set on the key it was wrapped
/// by (a concurrent rotation or shred wins harmlessly). True if replaced.
pub async fn rewrap(
    tx: &mut Tx,
    table: Wrapped,
    id: &str,
    old_key: &str,
    new_key: &str,
    wrapped: &[u8],
) -> Result<bool, sqlx::Error> {
    let (name, id_col, wrapped_col) = table.columns();
    let updated = sqlx::query(&format!(
        "UPDATE {name} SET master_key_id = $1, {wrapped_col} = $2
         WHERE {id_col} = $3 AND master_key_id = $4"
    ))
    .bind(new_key)
    .bind(wrapped)
    .bind(id)
    .bind(old_key)
    .execute(&mut **tx)
    .await?;
    Ok(updated.rows_affected() == 1)
}
