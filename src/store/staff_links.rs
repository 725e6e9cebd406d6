//! `staff_links`: one-time setup and invitation links, by the keyed hash
//! of their token (the token itself is never stored).

use super::{Db, Tx, exec};

/// What a link is for (the `purpose` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPurpose {
    Setup,
    Invite,
}

impl LinkPurpose {
    fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Setup => "setup",
            LinkPurpose::Invite => "invite",
        }
    }
}

#[derive(sqlx::FromRow)]
struct LinkRow {
    staff_id: Option<String>,
}

#[derive(sqlx::FromRow)]
pub struct PendingInvite {
    pub staff_id: String,
    pub expires_at: i64,
}

pub async fn insert(
    tx: &mut Tx,
    token_hash: &[u8],
    purpose: LinkPurpose,
    staff_id: Option<&str>,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO staff_links (token_hash, purpose, staff_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)";
    exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(token_hash)
            .bind(purpose.as_str())
            .bind(staff_id)
            .bind(now)
            .bind(expires_at),
    )
    .await
    .map(drop)
}

/// The link's account id (for invitations) if the link is known, unused
/// and unexpired: `Some(None)` for a setup link.
pub async fn find_usable(
    db: &Db,
    token_hash: &[u8],
    purpose: LinkPurpose,
    now: i64,
) -> Result<Option<Option<String>>, sqlx::Error> {
    let row: Option<LinkRow> = sqlx::query_as(
        "SELECT staff_id FROM staff_links
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
    )
    .bind(token_hash)
    .bind(purpose.as_str())
    .bind(now)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|r| r.staff_id))
}

/// Marks the link used if it still is usable; false if another request
/// got there first, or it expired or never existed.
pub async fn claim(
    tx: &mut Tx,
    token_hash: &[u8],
    purpose: LinkPurpose,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query(
        "UPDATE staff_links SET used_at = $1
         WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(token_hash)
    .bind(purpose.as_str())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// Ends every unused setup link (only the newest may work).
pub async fn end_setup_links(tx: &mut Tx, now: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE staff_links SET expires_at = $1
         WHERE purpose = 'setup' AND used_at IS NULL AND expires_at > $1";
    exec(&mut **tx, sqlx::query(sql).bind(now)).await.map(drop)
}

/// Invitations whose owner has not set a password yet.
pub async fn pending_invites(db: &Db) -> Result<Vec<PendingInvite>, sqlx::Error> {
    sqlx::query_as(
        "SELECT staff_id, expires_at FROM staff_links
         WHERE purpose = 'invite' AND used_at IS NULL AND staff_id IS NOT NULL",
    )
    .fetch_all(db.pool())
    .await
}
