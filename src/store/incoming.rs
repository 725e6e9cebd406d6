//! `incoming`: one row per item a customer sent in (a reply, a request's
//! submission, a secure-inbox upload): ids, times and states. What it says
//! lives sealed in the vault under the same id.

use super::{Arg, Db, PageFrom, Tx, bind_all, exec, explain, row_by, rows_by};

const COLUMNS: &str = "message_id, kind, conversation_id, in_reply_to, owner_id, received_at, \
     claimed_at, read_at, done_at, shred_at, shredded_at";

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct IncomingRow {
    pub message_id: String,
    pub kind: String,
    pub conversation_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub owner_id: Option<String>,
    pub received_at: i64,
    pub claimed_at: Option<i64>,
    pub read_at: Option<i64>,
    pub done_at: Option<i64>,
    pub shred_at: Option<i64>,
    pub shredded_at: Option<i64>,
}

pub struct NewIncoming<'a> {
    pub message_id: &'a str,
    pub kind: &'a str,
    pub conversation_id: Option<&'a str>,
    pub in_reply_to: Option<&'a str>,
    pub owner_id: Option<&'a str>,
    pub received_at: i64,
}

/// In the transaction that commits the sealed message.
pub async fn insert(tx: &mut Tx, new: &NewIncoming<'_>) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO incoming (message_id, kind, conversation_id, in_reply_to, owner_id,
             received_at, claimed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)";
    exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(new.message_id)
            .bind(new.kind)
            .bind(new.conversation_id)
            .bind(new.in_reply_to)
            .bind(new.owner_id)
            .bind(new.received_at)
            // An item with an owner is claimed from the start.
            .bind(new.owner_id.map(|_| new.received_at)),
    )
    .await
    .map(drop)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<IncomingRow>, sqlx::Error> {
    row_by(
        db.pool(),
        &format!("SELECT {COLUMNS} FROM incoming WHERE message_id = $1"),
        id,
    )
    .await
}

/// The items of a conversation, oldest first.
pub async fn in_conversation(
    db: &Db,
    conversation_id: &str,
) -> Result<Vec<IncomingRow>, sqlx::Error> {
    rows_by(
        db.pool(),
        &format!(
            "SELECT {COLUMNS} FROM incoming WHERE conversation_id = $1
             ORDER BY received_at, message_id"
        ),
        conversation_id,
    )
    .await
}

/// The first opening by staff: true for the one caller that set it.
pub async fn mark_read(tx: &mut Tx, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE incoming SET read_at = $1 WHERE message_id = $2 AND read_at IS NULL";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(now).bind(id)).await? == 1)
}

/// Gives an unclaimed item an owner: true for the one caller that did.
pub async fn claim(tx: &mut Tx, id: &str, owner: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE incoming SET owner_id = $1, claimed_at = $2
         WHERE message_id = $3 AND owner_id IS NULL AND shredded_at IS NULL";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(owner).bind(now).bind(id)).await? == 1)
}

/// Marks an item done and schedules its shred: true for the one caller
/// that did.
pub async fn mark_done(
    tx: &mut Tx,
    id: &str,
    now: i64,
    shred_at: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE incoming SET done_at = $1, shred_at = $2
         WHERE message_id = $3 AND done_at IS NULL AND shredded_at IS NULL";
    Ok(exec(
        &mut **tx,
        sqlx::query(sql).bind(now).bind(shred_at).bind(id),
    )
    .await?
        == 1)
}

/// Ids of items whose shred time has come.
const DUE: &str = "SELECT message_id FROM incoming
     WHERE shred_at <= $1 AND shredded_at IS NULL
     ORDER BY shred_at LIMIT $2";

pub async fn due_for_shred(db: &Db, now: i64, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(DUE)
        .bind(now)
        .bind(limit)
        .fetch_all(db.pool())
        .await
}

/// Claims an item's shred: true for the one caller that set `shredded_at`.
pub async fn claim_shred(tx: &mut Tx, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE incoming SET shredded_at = $1 WHERE message_id = $2 AND shredded_at IS NULL";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(now).bind(id)).await? == 1)
}

/// A page of the staff inbox, newest first.
#[derive(Clone, Debug, Default)]
pub struct ListFilter<'a> {
    /// An agent's view: their own items and unclaimed ones; `None`: all.
    pub visible_to: Option<&'a str>,
    /// Only items nobody opened yet and not done.
    pub unread: bool,
    /// Just past the key `(received_at, message_id)`; read backwards
    /// (oldest first, the caller reverses) for a newer page.
    pub from: PageFrom<(i64, &'a str)>,
    /// Rows to return (one more than shown tells whether a page follows).
    pub limit: i64,
}

/// The list statement and its arguments: an agent's view reads their own
/// items and the unclaimed ones from `incoming_owner`, an admin's reads
/// `incoming_received`; both by `(received_at, message_id)`.
fn list_statement<'a>(f: &ListFilter<'a>) -> (String, Vec<Arg<'a>>) {
    let mut args = Vec::new();
    let mut arg = |a: Arg<'a>| {
        args.push(a);
        format!("${}", args.len())
    };
    let mut sql = format!("SELECT {COLUMNS} FROM incoming WHERE 1 = 1");
    if let Some(owner) = f.visible_to {
        sql += &format!(
            " AND (owner_id = {} OR owner_id IS NULL)",
            arg(Arg::Text(owner))
        );
    }
    if f.unread {
        sql += " AND read_at IS NULL AND done_at IS NULL AND shredded_at IS NULL";
    }
    let (key, order) = match f.from {
        None => (None, "DESC"),
        Some((key, newer)) => (key, if newer { "ASC" } else { "DESC" }),
    };
    if let Some((at, id)) = key {
        let op = if order == "ASC" { ">" } else { "<" };
        sql += &format!(
            " AND (received_at, message_id) {op} ({}, {})",
            arg(Arg::Int(at)),
            arg(Arg::Text(id))
        );
    }
    sql += &format!(
        " ORDER BY received_at {order}, message_id {order} LIMIT {}",
        arg(Arg::Int(f.limit))
    );
    (sql, args)
}

pub async fn list(db: &Db, f: &ListFilter<'_>) -> Result<Vec<IncomingRow>, sqlx::Error> {
    let (sql, args) = list_statement(f);
    bind_all(sqlx::query_as(&sql), args)
        .fetch_all(db.pool())
        .await
}

/// The plan of [`list`] (see `store::explain`).
pub async fn list_plan(db: &Db, f: &ListFilter<'_>) -> Result<Vec<String>, sqlx::Error> {
    let (sql, args) = list_statement(f);
    explain(db, &sql, args).await
}

/// The plan of the retention job's query.
pub async fn due_plan(db: &Db, now: i64) -> Result<Vec<String>, sqlx::Error> {
    explain(db, DUE, vec![Arg::Int(now), Arg::Int(100)]).await
}
