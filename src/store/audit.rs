//! `audit_log`: the append-only, hash-chained event log. Appends are
//! serialised (each event's hash covers the one before it).

use super::{Backend, Db, PageFrom, Query, Tx, exec, page_clause, page_rows, rows_by};

/// A stored event, as read back (and as exported).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub message_id: Option<String>,
    pub ip: Option<String>,
    pub detail: Option<String>,
}

/// An event with its place in the chain.
#[derive(sqlx::FromRow)]
pub struct ChainedEvent {
    #[sqlx(flatten)]
    pub event: StoredEvent,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// The newest event's id and hash.
#[derive(sqlx::FromRow)]
pub struct ChainHead {
    pub id: i64,
    pub hash: Vec<u8>,
}

const EVENT_COLUMNS: &str = "id, at, actor, action, message_id, ip, detail";

/// Takes the append lock (PostgreSQL: readers go on, other appends wait;
/// SQLite transactions are serial already) and reads the chain's head.
pub async fn lock_head(tx: &mut Tx, backend: Backend) -> Result<Option<ChainHead>, sqlx::Error> {
    if backend == Backend::Postgres {
        let sql = "LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE";
        exec(&mut **tx, sqlx::query(sql)).await?;
    }
    sqlx::query_as("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await
}

pub async fn append(
    tx: &mut Tx,
    event: &StoredEvent,
    prev_hash: &[u8],
    hash: &[u8],
) -> Result<(), sqlx::Error> {
    let sql =
        "INSERT INTO audit_log (id, at, actor, action, message_id, ip, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    exec(
        &mut **tx,
        bind_chained(sqlx::query(sql), event, prev_hash, hash),
    )
    .await
    .map(drop)
}

/// [`append`]s `event` if the chain's head is the event before it, with
/// `prev_hash`: one statement instead of reading the head first. False
/// (nothing written) if the head is another.
pub async fn append_after_head(
    tx: &mut Tx,
    event: &StoredEvent,
    prev_hash: &[u8],
    hash: &[u8],
) -> Result<bool, sqlx::Error> {
    let sql =
        "INSERT INTO audit_log (id, at, actor, action, message_id, ip, detail, prev_hash, hash)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
         WHERE (SELECT MAX(id) FROM audit_log) = $1 - 1
           AND (SELECT hash FROM audit_log WHERE id = $1 - 1) = $8";
    let query = bind_chained(sqlx::query(sql), event, prev_hash, hash);
    Ok(exec(&mut **tx, query).await? == 1)
}

/// Binds `$1`…`$9`: the event's columns, then its chain hashes.
fn bind_chained<'q>(
    query: Query<'q>,
    event: &'q StoredEvent,
    prev_hash: &'q [u8],
    hash: &'q [u8],
) -> Query<'q> {
    query
        .bind(event.id)
        .bind(event.at)
        .bind(&event.actor)
        .bind(&event.action)
        .bind(&event.message_id)
        .bind(&event.ip)
        .bind(&event.detail)
        .bind(prev_hash)
        .bind(hash)
}

/// Up to `limit` events from id `first` on, in order, with their hashes.
pub async fn chain_from(db: &Db, first: i64, limit: i64) -> Result<Vec<ChainedEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS}, prev_hash, hash FROM audit_log WHERE id >= $1 ORDER BY id LIMIT $2"
    ))
    .bind(first)
    .bind(limit)
    .fetch_all(db.pool())
    .await
}

/// Up to `limit` events next to id `from` in the newest-first list:
/// older than it (backwards false, newest first) or newer than it (oldest
/// first; with no id, the oldest); with no `from`, the newest. The id is
/// the key, so any page costs the same.
pub async fn page(
    db: &Db,
    from: PageFrom<i64>,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let (condition, order) = page_clause(&from, "WHERE id < $2", "WHERE id > $2", "DESC");
    let sql =
        format!("SELECT {EVENT_COLUMNS} FROM audit_log {condition} ORDER BY id {order} LIMIT $1");
    page_rows(db, &sql, limit, from.and_then(|(key, _)| key)).await
}

/// Events in `[from, to)` (unix seconds), oldest first.
pub async fn between(db: &Db, from: i64, to: i64) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM audit_log WHERE at >= $1 AND at < $2 ORDER BY id"
    ))
    .bind(from)
    .bind(to)
    .fetch_all(db.pool())
    .await
}

/// A message's events in order.
pub async fn for_message(db: &Db, message_id: &str) -> Result<Vec<StoredEvent>, sqlx::Error> {
    rows_by(
        db.pool(),
        &format!("SELECT {EVENT_COLUMNS} FROM audit_log WHERE message_id = $1 ORDER BY id"),
        message_id,
    )
    .await
}
