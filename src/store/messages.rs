//! `messages`, `message_keys` and `message_parts`: a sealed message as the
//! vault stores it. Customer data appears here only encrypted (the sealed
//! metadata) or as a keyed hash (the recipient's blind index).

use super::{Db, Tx, exec, placeholders, row_by, rows_by, value_by, values_by};

pub struct NewMessage<'a> {
    pub id: &'a str,
    /// The message's own age recipient (public).
    pub recipient: &'a str,
    /// Escrow recipients, comma-separated.
    pub escrow_recipients: &'a str,
    pub recipient_index: Option<&'a [u8]>,
    pub sealed_meta: &'a [u8],
    pub part_count: i64,
    pub plain_size: i64,
    pub created_at: i64,
}

pub async fn insert(tx: &mut Tx, m: &NewMessage<'_>) -> Result<(), sqlx::Error> {
    let sql =
        "INSERT INTO messages (id, recipient, escrow_recipients, recipient_index, sealed_meta,
             part_count, plain_size, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(m.id)
            .bind(m.recipient)
            .bind(m.escrow_recipients)
            .bind(m.recipient_index)
            .bind(m.sealed_meta)
            .bind(m.part_count)
            .bind(m.plain_size)
            .bind(m.created_at),
    )
    .await
    .map(drop)
}

/// The message key, wrapped to a master key.
pub async fn insert_key(
    tx: &mut Tx,
    message_id: &str,
    master_key_id: &str,
    wrapped_identity: &[u8],
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO message_keys (message_id, master_key_id, wrapped_identity) VALUES ($1, $2, $3)";
    exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(message_id)
            .bind(master_key_id)
            .bind(wrapped_identity),
    )
    .await
    .map(drop)
}

/// [`insert_key`] on condition that every active master key is one of
/// `known` (those the caller's key file holds): one statement instead of
/// reading the active keys first. False (nothing written) otherwise.
pub async fn insert_key_if_known(
    tx: &mut Tx,
    message_id: &str,
    master_key_id: &str,
    wrapped_identity: &[u8],
    known: &[&str],
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "INSERT INTO message_keys (message_id, master_key_id, wrapped_identity)
         SELECT $1, $2, $3
         WHERE NOT EXISTS (SELECT 1 FROM master_keys
                           WHERE retired_at IS NULL AND id NOT IN ({}))",
        super::placeholders(4, known.len())
    );
    let mut query = sqlx::query(&sql)
        .bind(message_id)
        .bind(master_key_id)
        .bind(wrapped_identity);
    for id in known {
        query = query.bind(*id);
    }
    Ok(exec(&mut **tx, query).await? == 1)
}

/// A part's row, as stored and as read back.
#[derive(Debug, sqlx::FromRow)]
pub struct PartRow {
    pub id: String,
    pub position: i64,
    pub kind: String,
    pub blob_key: String,
    pub plain_size: i64,
    pub cipher_size: i64,
    pub sealed_meta: Vec<u8>,
}

pub async fn insert_part(tx: &mut Tx, message_id: &str, p: &PartRow) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO message_parts (id, message_id, position, kind, blob_key, plain_size,
             cipher_size, sealed_meta)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(&p.id)
            .bind(message_id)
            .bind(p.position)
            .bind(&p.kind)
            .bind(&p.blob_key)
            .bind(p.plain_size)
            .bind(p.cipher_size)
            .bind(&p.sealed_meta),
    )
    .await
    .map(drop)
}

pub async fn parts(db: &Db, message_id: &str) -> Result<Vec<PartRow>, sqlx::Error> {
    rows_by(
        db.pool(),
        "SELECT id, position, kind, blob_key, plain_size, cipher_size, sealed_meta
         FROM message_parts WHERE message_id = $1 ORDER BY position",
        message_id,
    )
    .await
}

/// What unlocking a message needs; the key columns are empty once shredded.
#[derive(sqlx::FromRow)]
pub struct KeyRow {
    pub shredded_at: Option<i64>,
    pub master_key_id: Option<String>,
    pub wrapped_identity: Option<Vec<u8>>,
    pub sealed_meta: Option<Vec<u8>>,
}

pub async fn key(db: &Db, message_id: &str) -> Result<Option<KeyRow>, sqlx::Error> {
    row_by(
        db.pool(),
        "SELECT m.shredded_at, k.master_key_id, k.wrapped_identity, m.sealed_meta
         FROM messages m LEFT JOIN message_keys k ON k.message_id = m.id WHERE m.id = $1",
        message_id,
    )
    .await
}

pub async fn recipient(db: &Db, message_id: &str) -> Result<Option<String>, sqlx::Error> {
    value_by(
        db.pool(),
        "SELECT recipient FROM messages WHERE id = $1",
        message_id,
    )
    .await
}

/// Ids of the messages with this recipient blind index, newest first.
pub async fn by_recipient_index(db: &Db, index: &[u8]) -> Result<Vec<String>, sqlx::Error> {
    values_by(
        db.pool(),
        "SELECT id FROM messages WHERE recipient_index = $1 ORDER BY created_at DESC, id",
        index,
    )
    .await
}

#[derive(sqlx::FromRow)]
pub struct EscrowRow {
    pub escrow_recipients: String,
    pub created_at: i64,
}

pub async fn escrow(db: &Db, message_id: &str) -> Result<Option<EscrowRow>, sqlx::Error> {
    row_by(
        db.pool(),
        "SELECT escrow_recipients, created_at FROM messages WHERE id = $1",
        message_id,
    )
    .await
}

/// `None`: no such message; `Some(None)`: not shredded.
pub async fn shredded_at(
    tx: &mut Tx,
    message_id: &str,
) -> Result<Option<Option<i64>>, sqlx::Error> {
    value_by(
        &mut **tx,
        "SELECT shredded_at FROM messages WHERE id = $1",
        message_id,
    )
    .await
}

/// The vault's half of a shred: the message key and part rows go, the
/// sealed metadata and blind index are erased. Returns the blob keys to
/// delete once the transaction commits.
pub async fn shred(tx: &mut Tx, message_id: &str, now: i64) -> Result<Vec<String>, sqlx::Error> {
    let blobs: Vec<String> = values_by(
        &mut **tx,
        "SELECT blob_key FROM message_parts WHERE message_id = $1",
        message_id,
    )
    .await?;
    for table in ["message_keys", "message_parts"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE message_id = $1"))
            .bind(message_id)
            .execute(&mut **tx)
            .await?;
    }
    let sql = "UPDATE messages SET shredded_at = $1, sealed_meta = NULL, recipient_index = NULL
         WHERE id = $2 AND shredded_at IS NULL";
    exec(&mut **tx, sqlx::query(sql).bind(now).bind(message_id)).await?;
    Ok(blobs)
}

/// Which of `blob_keys` a part still refers to.
pub async fn referenced_blobs(db: &Db, blob_keys: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    let sql = format!(
        "SELECT blob_key FROM message_parts WHERE blob_key IN ({})",
        placeholders(1, blob_keys.len())
    );
    let mut query = sqlx::query_scalar::<_, String>(&sql);
    for key in blob_keys {
        query = query.bind(*key);
    }
    query.fetch_all(db.pool()).await
}
