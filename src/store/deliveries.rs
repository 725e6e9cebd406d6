//! `deliveries`: one row per sent message as staff track it (ids, times,
//! states, hashes and the sealed recipient address). The rules about
//! which state may follow which live in `crate::deliveries`; here each
//! change is one conditional statement, so concurrent requests cannot
//! both win.

use super::{
    Arg, Db, NativePool, PageFrom, Tx, bind_all, exec, explain, placeholders, row_by, value_by,
};

/// Every column a [`DeliveryRow`] reads, qualified for joins.
const COLUMNS: &str = "d.message_id, d.sender_id, d.created_at, d.expires_at, d.verification, \
     d.shred_after_pickup, d.status, d.status_at, d.locked_at, d.revoked_at, d.link_generation, \
     d.link_consumed_at, d.failures, d.shred_at, d.shredded_at, d.sealed_recipient, d.allow_reply, \
     d.conversation_id, d.replies, d.is_request";

/// A `deliveries` row as stored, read by column name.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub message_id: String,
    pub sender_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// Comma-separated method names.
    pub verification: String,
    pub shred_after_pickup: i64,
    pub status: String,
    pub status_at: i64,
    pub locked_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub link_generation: i64,
    pub link_consumed_at: Option<i64>,
    pub failures: i64,
    pub shred_at: Option<i64>,
    pub shredded_at: Option<i64>,
    pub sealed_recipient: Option<Vec<u8>>,
    pub allow_reply: i64,
    /// `NULL` only for a row inserted by a build before 0013 migrated.
    pub conversation_id: Option<String>,
    pub replies: i64,
    pub is_request: i64,
}

/// A new row, in the transaction that commits its message.
pub struct NewRow<'a> {
    pub message_id: &'a str,
    pub sender_id: &'a str,
    pub created_at: i64,
    pub expires_at: i64,
    pub verification: &'a str,
    pub access_code_hash: Option<&'a str>,
    pub known_fact_hash: Option<&'a str>,
    pub shred_after_pickup: bool,
    pub status: &'a str,
    pub allow_reply: bool,
    pub conversation_id: &'a str,
    pub is_request: bool,
    pub sealed_recipient: &'a [u8],
    pub link_hash: &'a [u8],
}

pub async fn insert(tx: &mut Tx, new: &NewRow<'_>) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO deliveries (message_id, sender_id, created_at, expires_at, verification,
             access_code_hash, known_fact_hash, shred_after_pickup, status, status_at,
             allow_reply, conversation_id, is_request, sealed_recipient, link_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $3, $10, $11, $12, $13, $14)";
    exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(new.message_id)
            .bind(new.sender_id)
            .bind(new.created_at)
            .bind(new.expires_at)
            .bind(new.verification)
            .bind(new.access_code_hash)
            .bind(new.known_fact_hash)
            .bind(i64::from(new.shred_after_pickup))
            .bind(new.status)
            .bind(i64::from(new.allow_reply))
            .bind(new.conversation_id)
            .bind(i64::from(new.is_request))
            .bind(new.sealed_recipient)
            .bind(new.link_hash),
    )
    .await
    .map(drop)
}

/// Counts one more answer to a message that allows them, if it has had
/// fewer than `max`: true for a caller that got one (B3: parallel replies
/// cannot pass the limit).
pub async fn take_reply(tx: &mut Tx, id: &str, max: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE deliveries SET replies = replies + 1
         WHERE message_id = $1 AND allow_reply = 1 AND replies < $2
           AND revoked_at IS NULL AND shredded_at IS NULL";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(id).bind(max)).await? == 1)
}

/// The messages of a conversation, oldest first.
pub async fn in_conversation(
    db: &Db,
    conversation_id: &str,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    super::rows_by(
        db.pool(),
        &format!(
            "SELECT {COLUMNS} FROM deliveries d WHERE d.conversation_id = $1
             ORDER BY d.created_at, d.message_id"
        ),
        conversation_id,
    )
    .await
}

pub async fn get(db: &Db, id: &str) -> Result<Option<DeliveryRow>, sqlx::Error> {
    row_by(
        db.pool(),
        &format!("SELECT {COLUMNS} FROM deliveries d WHERE d.message_id = $1"),
        id,
    )
    .await
}

/// The row a link's keyed hash belongs to. Through the driver pools: the
/// landing page's lookup is the hottest query customers cause.
pub async fn find_by_link_hash(db: &Db, hash: &[u8]) -> Result<Option<DeliveryRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM deliveries d WHERE d.link_hash = $1");
    match db.native() {
        NativePool::Sqlite(pool) => sqlx::query_as(&sql).bind(hash).fetch_optional(pool).await,
        NativePool::Postgres(pool) => sqlx::query_as(&sql).bind(hash).fetch_optional(pool).await,
    }
}

/// Which status a list shows: the derived ones by their timestamps, the
/// stored progress states by the `status` column of live rows.
#[derive(Clone, Copy, Debug)]
pub enum StatusFilter {
    Revoked,
    Expired,
    Locked,
    Progress(&'static str),
}

/// A page of a staff list, newest first.
#[derive(Clone, Debug, Default)]
pub struct ListFilter<'a> {
    pub sender_id: Option<&'a str>,
    pub recipient_index: Option<&'a [u8]>,
    pub status: Option<StatusFilter>,
    /// Where the page starts: just past the key `(created_at, message_id)`,
    /// newer rows when read backwards (oldest first; the caller reverses
    /// them); with no key, from the oldest.
    pub from: PageFrom<(i64, &'a str)>,
    /// Rows to return (the caller asks one more to see whether a page follows).
    pub limit: i64,
}

/// The list statement and its arguments. Each filter is a condition an
/// index serves (migrations 0011): by sender and key, by sender, status
/// and key, partial indexes for the rare locked and revoked rows, and the
/// blind index first for an address search.
fn list_statement<'a>(f: &ListFilter<'a>, now: i64) -> (String, Vec<Arg<'a>>) {
    let mut args = Vec::new();
    let mut arg = |a: Arg<'a>| {
        args.push(a);
        format!("${}", args.len())
    };
    // An address search starts from the few messages to that address
    // (SQLite keeps a CROSS JOIN's order; PostgreSQL plans by statistics).
    let mut sql = if f.recipient_index.is_some() {
        format!(
            "SELECT {COLUMNS} FROM messages m CROSS JOIN deliveries d WHERE d.message_id = m.id"
        )
    } else {
        format!("SELECT {COLUMNS} FROM deliveries d WHERE 1 = 1")
    };
    if let Some(index) = f.recipient_index {
        sql += &format!(" AND m.recipient_index = {}", arg(Arg::Bytes(index)));
    }
    if let Some(sender) = f.sender_id {
        sql += &format!(" AND d.sender_id = {}", arg(Arg::Text(sender)));
    }
    match f.status {
        None => {}
        Some(StatusFilter::Revoked) => sql += " AND d.revoked_at IS NOT NULL",
        Some(StatusFilter::Expired) => {
            sql += &format!(
                " AND d.revoked_at IS NULL AND d.expires_at <= {}",
                arg(Arg::Int(now))
            );
        }
        Some(StatusFilter::Locked) => {
            sql += &format!(
                " AND d.locked_at IS NOT NULL AND d.revoked_at IS NULL AND d.expires_at > {}",
                arg(Arg::Int(now))
            );
        }
        Some(StatusFilter::Progress(status)) => {
            sql += &format!(
                " AND d.status = {} AND d.revoked_at IS NULL AND d.locked_at IS NULL AND d.expires_at > {}",
                arg(Arg::Text(status)),
                arg(Arg::Int(now))
            );
        }
    }
    // `(created_at, message_id)` is unique and stable while rows are
    // added, unlike an offset.
    let order = match f.from {
        Some((key, newer)) => {
            let (op, order) = if newer { (">", "ASC") } else { ("<", "DESC") };
            if let Some((created_at, message_id)) = key {
                sql += &format!(
                    " AND (d.created_at, d.message_id) {op} ({}, {})",
                    arg(Arg::Int(created_at)),
                    arg(Arg::Text(message_id))
                );
            }
            order
        }
        None => "DESC",
    };
    sql += &format!(
        " ORDER BY d.created_at {order}, d.message_id {order} LIMIT {}",
        arg(Arg::Int(f.limit))
    );
    (sql, args)
}

/// One page of a staff list, in the order the key asks for.
pub async fn list(db: &Db, f: &ListFilter<'_>, now: i64) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let (sql, args) = list_statement(f, now);
    bind_all(sqlx::query_as(&sql), args)
        .fetch_all(db.pool())
        .await
}

/// The query plan of [`list`] (SQLite's `EXPLAIN QUERY PLAN`, PostgreSQL's
/// `EXPLAIN`), one line per step: the plan tests check that no staff list
/// scans a whole table.
pub async fn list_plan(db: &Db, f: &ListFilter<'_>, now: i64) -> Result<Vec<String>, sqlx::Error> {
    let (sql, args) = list_statement(f, now);
    explain(db, &sql, args).await
}

/// Live messages locked after failed verifications (one sender's, or
/// everyone's): read from the `deliveries_locked_live` partial indexes
/// alone (migration 0012).
pub async fn count_locked(db: &Db, sender_id: Option<&str>, now: i64) -> Result<i64, sqlx::Error> {
    let (sql, args) = count_locked_statement(sender_id, now);
    let (count,): (i64,) = bind_all(sqlx::query_as(&sql), args)
        .fetch_one(db.pool())
        .await?;
    Ok(count)
}

fn count_locked_statement(sender_id: Option<&str>, now: i64) -> (String, Vec<Arg<'_>>) {
    let mut sql = "SELECT COUNT(*) FROM deliveries WHERE locked_at IS NOT NULL \
         AND revoked_at IS NULL AND shredded_at IS NULL AND expires_at > $1"
        .to_owned();
    let mut args = vec![Arg::Int(now)];
    if let Some(sender) = sender_id {
        sql += " AND sender_id = $2";
        args.push(Arg::Text(sender));
    }
    (sql, args)
}

/// Claims a revoke: true for the one caller that set `revoked_at`.
pub async fn claim_revoke(tx: &mut Tx, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE deliveries SET revoked_at = $1 WHERE message_id = $2 AND revoked_at IS NULL";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(now).bind(id)).await? == 1)
}

/// Claims a shred (expiry or after pickup): true for the one caller that
/// set `shredded_at` on a message not revoked meanwhile.
pub async fn claim_shred(tx: &mut Tx, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE deliveries SET shredded_at = $1
         WHERE message_id = $2 AND shredded_at IS NULL AND revoked_at IS NULL";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(now).bind(id)).await? == 1)
}

/// Erases what identifies the customer: the sealed address, the
/// access-code, known-fact and link hashes. Ids, times and states stay.
pub async fn erase(tx: &mut Tx, id: &str, now: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE deliveries SET sealed_recipient = NULL, access_code_hash = NULL,
             known_fact_hash = NULL, link_hash = NULL, shredded_at = COALESCE(shredded_at, $1)
         WHERE message_id = $2";
    exec(&mut **tx, sqlx::query(sql).bind(now).bind(id))
        .await
        .map(drop)
}

/// Moves the expiry of a live message; false if it is not live.
pub async fn extend(tx: &mut Tx, id: &str, expires_at: i64, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE deliveries SET expires_at = $1
         WHERE message_id = $2 AND revoked_at IS NULL AND expires_at > $3";
    Ok(exec(
        &mut **tx,
        sqlx::query(sql).bind(expires_at).bind(id).bind(now),
    )
    .await?
        == 1)
}

/// Moves a live message to its next link generation with `status`; false
/// if it is not live.
pub async fn next_generation(
    tx: &mut Tx,
    id: &str,
    status: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql =
        "UPDATE deliveries SET link_generation = link_generation + 1, status = $1, status_at = $2
         WHERE message_id = $3 AND revoked_at IS NULL AND shredded_at IS NULL AND expires_at > $2";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(status).bind(now).bind(id)).await? == 1)
}

/// Stores a new link's keyed hash; the link is unused again.
pub async fn set_link_hash(tx: &mut Tx, id: &str, hash: &[u8]) -> Result<(), sqlx::Error> {
    let sql = "UPDATE deliveries SET link_hash = $1, link_consumed_at = NULL WHERE message_id = $2";
    exec(&mut **tx, sqlx::query(sql).bind(hash).bind(id))
        .await
        .map(drop)
}

/// Lifts a lockout of a message not revoked; false if it was not locked.
pub async fn unlock(tx: &mut Tx, id: &str) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE deliveries SET locked_at = NULL, failures = 0
         WHERE message_id = $1 AND locked_at IS NOT NULL AND revoked_at IS NULL";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(id)).await? == 1)
}

pub async fn lock(tx: &mut Tx, id: &str, now: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE deliveries SET locked_at = $1 WHERE message_id = $2 AND locked_at IS NULL";
    exec(&mut **tx, sqlx::query(sql).bind(now).bind(id))
        .await
        .map(drop)
}

/// After a counted failure: the total, and the lock time if now locked.
#[derive(sqlx::FromRow)]
pub struct FailureRow {
    pub failures: i64,
    pub locked_at: Option<i64>,
}

/// Counts one failed verification of a live, unused, unlocked link and
/// locks it with the failure that reaches `lock_after`, in one statement.
/// `None` if it did not count.
pub async fn record_failure(
    tx: &mut Tx,
    id: &str,
    lock_after: i64,
    now: i64,
) -> Result<Option<FailureRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE deliveries SET failures = failures + 1,
             locked_at = CASE WHEN failures + 1 >= $2 THEN $3 ELSE locked_at END
         WHERE message_id = $1 AND failures < $2 AND locked_at IS NULL
           AND link_consumed_at IS NULL AND revoked_at IS NULL AND shredded_at IS NULL
           AND expires_at > $3
         RETURNING failures, locked_at",
    )
    .bind(id)
    .bind(lock_after)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await
}

/// Sets `status` if the stored one is one of `from`; true if it moved.
pub async fn set_status_from(
    tx: &mut Tx,
    id: &str,
    status: &str,
    from: &[&str],
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "UPDATE deliveries SET status = $1, status_at = $2 WHERE message_id = $3 AND status IN ({})",
        placeholders(4, from.len())
    );
    let mut q = sqlx::query(&sql).bind(status).bind(now).bind(id);
    for f in from {
        q = q.bind(*f);
    }
    Ok(q.execute(&mut **tx).await?.rows_affected() == 1)
}

pub async fn set_status(tx: &mut Tx, id: &str, status: &str, now: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE deliveries SET status = $1, status_at = $2 WHERE message_id = $3";
    exec(&mut **tx, sqlx::query(sql).bind(status).bind(now).bind(id))
        .await
        .map(drop)
}

/// Claims the link for a successful verification: of two concurrent
/// correct answers one wins, and a lock or revocation that landed
/// meanwhile still holds.
pub async fn consume_link(tx: &mut Tx, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE deliveries SET link_consumed_at = $1
         WHERE message_id = $2 AND link_consumed_at IS NULL AND locked_at IS NULL
           AND revoked_at IS NULL AND shredded_at IS NULL AND expires_at > $1";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(now).bind(id)).await? == 1)
}

/// When a shred-after-pickup message is shredded.
pub async fn set_shred_at(tx: &mut Tx, id: &str, at: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE deliveries SET shred_at = $1 WHERE message_id = $2";
    exec(&mut **tx, sqlx::query(sql).bind(at).bind(id))
        .await
        .map(drop)
}

/// Moves `shred_at` later (never earlier), outside a transaction.
pub async fn postpone_shred(db: &Db, id: &str, until: i64) -> Result<(), sqlx::Error> {
    let sql = "UPDATE deliveries SET shred_at = $1 WHERE message_id = $2 AND shred_at < $1";
    exec(db.pool(), sqlx::query(sql).bind(until).bind(id))
        .await
        .map(drop)
}

/// The argon2id hashes a delivery's answers are checked against.
#[derive(Debug, Default, sqlx::FromRow)]
pub struct AnswerHashes {
    pub access_code_hash: Option<String>,
    pub known_fact_hash: Option<String>,
}

pub async fn answer_hashes(db: &Db, id: &str) -> Result<AnswerHashes, sqlx::Error> {
    let row: Option<AnswerHashes> = row_by(
        db.pool(),
        "SELECT access_code_hash, known_fact_hash FROM deliveries WHERE message_id = $1",
        id,
    )
    .await?;
    Ok(row.unwrap_or_default())
}

/// A message whose time is up.
#[derive(sqlx::FromRow)]
pub struct DueRow {
    pub message_id: String,
    pub expires_at: i64,
}

/// The expiry job's two questions, each a range scan of its own partial
/// index (one `OR` of both would scan the table).
const EXPIRED: &str = "SELECT message_id, expires_at FROM deliveries
     WHERE shredded_at IS NULL AND revoked_at IS NULL AND expires_at <= $1
     ORDER BY expires_at LIMIT $2";
const SHRED_DUE: &str = "SELECT message_id, expires_at FROM deliveries
     WHERE shred_at IS NOT NULL AND shredded_at IS NULL AND revoked_at IS NULL AND shred_at <= $1
     ORDER BY shred_at LIMIT $2";

/// Messages due for a shred: expired, or past their shred-after-pickup
/// time; at most `limit`, the longest overdue first.
pub async fn due_for_shred(db: &Db, now: i64, limit: i64) -> Result<Vec<DueRow>, sqlx::Error> {
    let mut due: Vec<DueRow> = Vec::new();
    for sql in [EXPIRED, SHRED_DUE] {
        let rows: Vec<DueRow> = sqlx::query_as(sql)
            .bind(now)
            .bind(limit)
            .fetch_all(db.pool())
            .await?;
        for row in rows {
            if !due.iter().any(|d| d.message_id == row.message_id) {
                due.push(row);
            }
        }
    }
    due.sort_by_key(|d| d.expires_at);
    due.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(due)
}

/// The plans of the locked count (one sender's and everyone's) and of the
/// expiry job's queries, by name; see [`list_plan`].
pub async fn maintenance_plans(
    db: &Db,
    sender_id: &str,
    now: i64,
) -> Result<Vec<(&'static str, Vec<String>)>, sqlx::Error> {
    let (mine, mine_args) = count_locked_statement(Some(sender_id), now);
    let (all, all_args) = count_locked_statement(None, now);
    Ok(vec![
        ("count_locked(sender)", explain(db, &mine, mine_args).await?),
        ("count_locked(all)", explain(db, &all, all_args).await?),
        (
            "expired",
            explain(db, EXPIRED, vec![Arg::Int(now), Arg::Int(100)]).await?,
        ),
        (
            "shred_due",
            explain(db, SHRED_DUE, vec![Arg::Int(now), Arg::Int(100)]).await?,
        ),
    ])
}

/// The stored status, read in the caller's transaction.
pub async fn status_in(tx: &mut Tx, id: &str) -> Result<Option<String>, sqlx::Error> {
    value_by(
        &mut **tx,
        "SELECT status FROM deliveries WHERE message_id = $1",
        id,
    )
    .await
}
