//! `requests`: one row per document request, beside its delivery. The
//! checklist's names and the instructions live sealed in the vault; this
//! holds how many items, what the upload accepts, and the submission.

use super::{Db, Tx, exec, row_by};

const COLUMNS: &str = "message_id, items, accepted, max_bytes, submitted_at, submission_id";

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RequestRow {
    pub message_id: String,
    pub items: i64,
    pub accepted: String,
    pub max_bytes: i64,
    pub submitted_at: Option<i64>,
    pub submission_id: Option<String>,
}

/// In the transaction that commits the request's sealed message.
pub async fn insert(
    tx: &mut Tx,
    message_id: &str,
    items: i64,
    accepted: &str,
    max_bytes: i64,
) -> Result<(), sqlx::Error> {
    let sql =
        "INSERT INTO requests (message_id, items, accepted, max_bytes) VALUES ($1, $2, $3, $4)";
    exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(message_id)
            .bind(items)
            .bind(accepted)
            .bind(max_bytes),
    )
    .await
    .map(drop)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<RequestRow>, sqlx::Error> {
    row_by(
        db.pool(),
        &format!("SELECT {COLUMNS} FROM requests WHERE message_id = $1"),
        id,
    )
    .await
}

/// Records the submission: true for the one caller that did (a request is
/// submitted once).
pub async fn submit(
    tx: &mut Tx,
    id: &str,
    submission_id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE requests SET submitted_at = $1, submission_id = $2
         WHERE message_id = $3 AND submitted_at IS NULL";
    Ok(exec(
        &mut **tx,
        sqlx::query(sql).bind(now).bind(submission_id).bind(id),
    )
    .await?
        == 1)
}
