//! `outbox`: mail queued in the same transaction as the state change it
//! reports, claimed by workers with leases, and finished exactly once
//! (sent, failed for good, or cancelled by a shred). The payload column
//! holds the sealed address and content until the row finishes.

use super::{Backend, Db, Tx, exec, value_by};

/// Error class recorded on an email cancelled because its message was shredded.
pub const CANCELLED: &str = "cancelled: message shredded";

pub struct NewMail<'a> {
    pub kind: &'a str,
    pub message_id: Option<&'a str>,
    pub sealed_payload: &'a [u8],
    pub mail_message_id: &'a str,
    pub now: i64,
}

/// Queues a row due now; returns its id.
pub async fn insert(tx: &mut Tx, new: &NewMail<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO outbox (kind, message_id, payload, mail_message_id, created_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
    )
    .bind(new.kind)
    .bind(new.message_id)
    .bind(new.sealed_payload)
    .bind(new.mail_message_id)
    .bind(new.now)
    .fetch_one(&mut **tx)
    .await
}

/// Whether the message was shredded, holding a share lock on its delivery
/// row on PostgreSQL until the caller's transaction ends: either a shred
/// waits for this transaction to commit (and then cancels what it queued),
/// or this one sees the shred. SQLite transactions are serial already.
pub async fn message_shredded(
    tx: &mut Tx,
    backend: Backend,
    message_id: &str,
) -> Result<bool, sqlx::Error> {
    let lock = match backend {
        Backend::Postgres => " FOR SHARE",
        Backend::Sqlite => "",
    };
    let shredded: Option<Option<i64>> = value_by(
        &mut **tx,
        &format!("SELECT shredded_at FROM deliveries WHERE message_id = $1{lock}"),
        message_id,
    )
    .await?;
    Ok(matches!(shredded, Some(Some(_))))
}

/// Part of a shred, in its transaction: every email to the customer about
/// the message that has not gone out yet is marked failed with
/// [`CANCELLED`] and its sealed payload erased, and its dev-mailbox copies
/// deleted. Alerts to the sender stay (staff address and message id only).
/// Returns how many emails were cancelled.
pub async fn cancel_for_message(
    tx: &mut Tx,
    message_id: &str,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let customer_mail = "message_id = $1 AND kind <> 'sender_alert'";
    sqlx::query(&format!(
        "DELETE FROM dev_mailbox WHERE outbox_id IN (SELECT id FROM outbox WHERE {customer_mail})"
    ))
    .bind(message_id)
    .execute(&mut **tx)
    .await?;
    let cancelled = sqlx::query(&format!(
        "UPDATE outbox SET failed_at = $2, payload = NULL, lease_owner = NULL, lease_until = NULL,
             last_error = $3
         WHERE {customer_mail} AND sent_at IS NULL AND failed_at IS NULL"
    ))
    .bind(message_id)
    .bind(now)
    .bind(CANCELLED)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    // Sent and failed rows lost their payload when they finished.
    Ok(cancelled)
}

/// How many emails wait to be sent (or retried), and when the oldest of
/// them was queued. Cheap: the `outbox_due` index covers exactly these rows.
pub async fn pending(db: &Db) -> Result<(i64, Option<i64>), sqlx::Error> {
    sqlx::query_as(
        "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL",
    )
    .fetch_one(db.pool())
    .await
}

/// Ids of rows due and not leased, oldest due first. On PostgreSQL
/// concurrent claimers skip each other's candidates instead of queueing on
/// them; on SQLite the caller's `BEGIN IMMEDIATE` made it the only writer.
pub async fn due_candidates(
    tx: &mut Tx,
    backend: Backend,
    now: i64,
    limit: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    let skip_locked = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    sqlx::query_scalar(&format!(
        "SELECT id FROM outbox
         WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1
           AND (lease_until IS NULL OR lease_until < $1)
         ORDER BY next_attempt_at, id LIMIT $2{skip_locked}"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Takes the lease on a row by compare-and-set (what guarantees one owner
/// per row); false if someone else holds it or it finished.
pub async fn lease(
    tx: &mut Tx,
    id: i64,
    owner: &str,
    until: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE outbox SET lease_owner = $1, lease_until = $2, attempts = attempts + 1
         WHERE id = $3 AND sent_at IS NULL AND failed_at IS NULL
           AND (lease_until IS NULL OR lease_until < $4)";
    Ok(exec(
        &mut **tx,
        sqlx::query(sql).bind(owner).bind(until).bind(id).bind(now),
    )
    .await?
        == 1)
}

/// What a worker needs of a leased row (not the payload: that is read at
/// the last moment, see [`unfinished_payload`]).
#[derive(sqlx::FromRow)]
pub struct LeasedRow {
    pub id: i64,
    pub kind: String,
    pub message_id: Option<String>,
    pub mail_message_id: String,
    pub created_at: i64,
    pub attempts: i64,
}

pub async fn leased_row(tx: &mut Tx, id: i64) -> Result<LeasedRow, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, message_id, mail_message_id, created_at, attempts
         FROM outbox WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&mut **tx)
    .await
}

/// The sealed payload of a row that is still unfinished: `None` if the row
/// finished (e.g. a shred cancelled it), `Some(None)` if it has no payload.
pub async fn unfinished_payload(db: &Db, id: i64) -> Result<Option<Option<Vec<u8>>>, sqlx::Error> {
    value_by(
        db.pool(),
        "SELECT payload FROM outbox WHERE id = $1 AND sent_at IS NULL AND failed_at IS NULL",
        id,
    )
    .await
}

/// Gives a lease back (shutdown cut the send short).
pub async fn release(tx: &mut Tx, id: i64, owner: &str) -> Result<(), sqlx::Error> {
    let sql = "UPDATE outbox SET lease_owner = NULL, lease_until = NULL
         WHERE id = $1 AND lease_owner = $2 AND sent_at IS NULL AND failed_at IS NULL";
    exec(&mut **tx, sqlx::query(sql).bind(id).bind(owner))
        .await
        .map(drop)
}

/// Records a send, whoever holds the lease (once the server has the email,
/// recording that is always right); false if the row had finished already.
pub async fn mark_sent(tx: &mut Tx, id: i64, now: i64) -> Result<bool, sqlx::Error> {
    let sql =
        "UPDATE outbox SET sent_at = $1, payload = NULL, lease_owner = NULL, lease_until = NULL
         WHERE id = $2 AND sent_at IS NULL AND failed_at IS NULL";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(now).bind(id)).await? == 1)
}

pub async fn mark_retry(
    tx: &mut Tx,
    id: i64,
    owner: &str,
    error_class: &str,
    next_attempt_at: i64,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE outbox SET lease_owner = NULL, lease_until = NULL, next_attempt_at = $1, last_error = $2
         WHERE id = $3 AND lease_owner = $4 AND sent_at IS NULL AND failed_at IS NULL";
    exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(next_attempt_at)
            .bind(error_class)
            .bind(id)
            .bind(owner),
    )
    .await
    .map(drop)
}

/// Fails a row for good while `owner` holds it; false otherwise.
pub async fn mark_failed(
    tx: &mut Tx,
    id: i64,
    owner: &str,
    error_class: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql =
        "UPDATE outbox SET failed_at = $1, payload = NULL, lease_owner = NULL, lease_until = NULL,
             last_error = $2
         WHERE id = $3 AND lease_owner = $4 AND sent_at IS NULL AND failed_at IS NULL";
    Ok(exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(now)
            .bind(error_class)
            .bind(id)
            .bind(owner),
    )
    .await?
        == 1)
}
