//! `settings` (name/value pairs an admin edits) and `settings_logo` (the
//! organisation's logo, one row).

use super::{Db, Tx, exec};

#[derive(sqlx::FromRow)]
pub struct SettingRow {
    pub name: String,
    pub value: String,
}

#[derive(sqlx::FromRow)]
pub struct LogoRow {
    pub content_type: String,
    pub data: Vec<u8>,
}

pub async fn all(db: &Db) -> Result<Vec<SettingRow>, sqlx::Error> {
    sqlx::query_as("SELECT name, value FROM settings")
        .fetch_all(db.pool())
        .await
}

pub async fn put(tx: &mut Tx, name: &str, value: &str) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO settings (name, value) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value";
    exec(&mut **tx, sqlx::query(sql).bind(name).bind(value))
        .await
        .map(drop)
}

pub async fn put_logo(tx: &mut Tx, content_type: &str, data: &[u8]) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO settings_logo (id, content_type, data) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE SET content_type = excluded.content_type, data = excluded.data";
    exec(&mut **tx, sqlx::query(sql).bind(content_type).bind(data))
        .await
        .map(drop)
}

pub async fn has_logo(db: &Db) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM settings_logo")
        .fetch_one(db.pool())
        .await?;
    Ok(n > 0)
}

pub async fn logo(db: &Db) -> Result<Option<LogoRow>, sqlx::Error> {
    sqlx::query_as("SELECT content_type, data FROM settings_logo WHERE id = 1")
        .fetch_optional(db.pool())
        .await
}
