//! `dev_mailbox`: copies of sent mail (sealed) kept when no SMTP server is
//! configured, for the development mailbox pages.

use super::{Db, Tx, exec, row_by, rows_by};

#[derive(sqlx::FromRow)]
pub struct DevMailRow {
    pub id: i64,
    pub created_at: i64,
    /// The sealed email.
    pub content: Vec<u8>,
}

pub async fn insert(
    tx: &mut Tx,
    outbox_id: i64,
    now: i64,
    sealed: &[u8],
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO dev_mailbox (outbox_id, created_at, content) VALUES ($1, $2, $3)";
    exec(
        &mut **tx,
        sqlx::query(sql).bind(outbox_id).bind(now).bind(sealed),
    )
    .await
    .map(drop)
}

/// The newest `limit` rows, newest first.
pub async fn newest(db: &Db, limit: i64) -> Result<Vec<DevMailRow>, sqlx::Error> {
    rows_by(
        db.pool(),
        "SELECT id, created_at, content FROM dev_mailbox ORDER BY id DESC LIMIT $1",
        limit,
    )
    .await
}

pub async fn get(db: &Db, id: i64) -> Result<Option<DevMailRow>, sqlx::Error> {
    row_by(
        db.pool(),
        "SELECT id, created_at, content FROM dev_mailbox WHERE id = $1",
        id,
    )
    .await
}
