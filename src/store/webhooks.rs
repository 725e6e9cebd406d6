//! `webhook_endpoints` and `webhook_deliveries`: where an admin wants
//! events sent, and each event queued for each endpoint, claimed by
//! workers with leases and finished once (delivered, or failed for good).
//! Payloads hold ids and statuses only; errors are classes, never bodies.

use super::{Arg, Backend, Db, Tx, exec, explain, row_by, rows_by};

/// A delivery still to send (or being sent).
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

pub struct NewEndpoint<'a> {
    pub id: &'a str,
    pub url: &'a str,
    /// Event types, each between commas: `,message.emailed,message.locked,`.
    pub events: &'a str,
    pub sealed_secret: &'a [u8],
    pub allow_private: bool,
    pub created_by: &'a str,
    pub now: i64,
}

pub async fn insert_endpoint(tx: &mut Tx, new: &NewEndpoint<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, events, secret, allow_private, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new.id)
    .bind(new.url)
    .bind(new.events)
    .bind(new.sealed_secret)
    .bind(i64::from(new.allow_private))
    .bind(new.created_by)
    .bind(new.now)
    .execute(&mut **tx)
    .await
    .map(drop)
}

#[derive(sqlx::FromRow)]
pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub events: String,
    pub secret: Vec<u8>,
    pub allow_private: i64,
    pub created_by: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

const ENDPOINT_COLUMNS: &str =
    "id, url, events, secret, allow_private, created_by, created_at, disabled_at";

/// Every endpoint, newest first (an installation has a handful).
pub async fn endpoints(db: &Db) -> Result<Vec<EndpointRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at DESC, id"
    ))
    .fetch_all(db.pool())
    .await
}

pub async fn endpoint(db: &Db, id: &str) -> Result<Option<EndpointRow>, sqlx::Error> {
    row_by(
        db.pool(),
        &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"),
        id,
    )
    .await
}

/// Disables a live endpoint (its pending deliveries stay, unsent, in its
/// log); false if it was disabled already or does not exist.
pub async fn disable(tx: &mut Tx, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_endpoints SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(now).bind(id)).await? == 1)
}

/// Deletes an endpoint and its delivery log.
pub async fn delete(tx: &mut Tx, id: &str) -> Result<bool, sqlx::Error> {
    exec(
        &mut **tx,
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1").bind(id),
    )
    .await?;
    let sql = "DELETE FROM webhook_endpoints WHERE id = $1";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(id)).await? == 1)
}

pub struct NewEvent<'a> {
    /// The stable `webhook-id`.
    pub id: &'a str,
    /// Order: the audit event's id.
    pub seq: i64,
    pub message_id: Option<&'a str>,
    pub event_type: &'a str,
    pub payload: &'a str,
    pub now: i64,
}

const QUEUE: &str = "INSERT INTO webhook_deliveries
         (endpoint_id, id, seq, message_id, event_type, payload, created_at, queued_at,
          next_attempt_at, status)
     SELECT e.id, $1, $2, $3, $4, $5, $6, $6, $6, 'pending'
     FROM webhook_endpoints e
     WHERE e.disabled_at IS NULL AND e.events LIKE $7 ESCAPE '\\'";

/// Queues `event` for every live endpoint subscribed to its type, in one
/// statement (with no endpoint, a lookup in an empty index). Returns how
/// many deliveries were queued.
pub async fn queue_event(tx: &mut Tx, event: &NewEvent<'_>) -> Result<u64, sqlx::Error> {
    // The type is matched literally: `_` (in `delivery_failed`) is escaped.
    let pattern = format!("%,{},%", event.event_type.replace('_', "\\_"));
    exec(
        &mut **tx,
        sqlx::query(QUEUE)
            .bind(event.id)
            .bind(event.seq)
            .bind(event.message_id)
            .bind(event.event_type)
            .bind(event.payload)
            .bind(event.now)
            .bind(pattern),
    )
    .await
}

/// A delivery's key.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryKey {
    pub endpoint_id: String,
    pub id: String,
}

/// Deliveries due and not leased, due first, leaving out any whose
/// endpoint still has an earlier event of the same message pending (order
/// per message). On PostgreSQL concurrent claimers skip each other's
/// candidates; on SQLite the caller's `BEGIN IMMEDIATE` made it the only
/// writer.
pub async fn due_candidates(
    tx: &mut Tx,
    backend: Backend,
    now: i64,
    limit: i64,
) -> Result<Vec<DeliveryKey>, sqlx::Error> {
    sqlx::query_as(&due_sql(backend))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await
}

fn due_sql(backend: Backend) -> String {
    let skip_locked = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    format!(
        "SELECT d.endpoint_id, d.id FROM webhook_deliveries d
         WHERE d.status = 'pending' AND d.next_attempt_at <= $1
           AND (d.lease_until IS NULL OR d.lease_until < $1)
           AND NOT EXISTS (
               SELECT 1 FROM webhook_deliveries e
               WHERE e.endpoint_id = d.endpoint_id AND e.message_id = d.message_id
                 AND e.status = 'pending' AND e.seq < d.seq)
         ORDER BY d.next_attempt_at, d.seq LIMIT $2{skip_locked}"
    )
}

/// Takes the lease on a delivery by compare-and-set; false if someone
/// else holds it or it finished.
pub async fn lease(
    tx: &mut Tx,
    key: &DeliveryKey,
    owner: &str,
    until: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_deliveries
         SET lease_owner = $1, lease_until = $2, attempts = attempts + 1
         WHERE endpoint_id = $3 AND id = $4 AND status = 'pending'
           AND (lease_until IS NULL OR lease_until < $5)";
    Ok(exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(owner)
            .bind(until)
            .bind(&key.endpoint_id)
            .bind(&key.id)
            .bind(now),
    )
    .await?
        == 1)
}

/// One delivery, as the worker and the delivery log see it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub endpoint_id: String,
    pub id: String,
    pub seq: i64,
    pub message_id: Option<String>,
    pub event_type: String,
    pub payload: String,
    pub created_at: i64,
    pub queued_at: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub status: String,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

const DELIVERY_COLUMNS: &str = "endpoint_id, id, seq, message_id, event_type, payload, created_at,
     queued_at, attempts, next_attempt_at, status, last_status_code, last_error, delivered_at";

pub async fn delivery(tx: &mut Tx, key: &DeliveryKey) -> Result<DeliveryRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 AND id = $2"
    ))
    .bind(&key.endpoint_id)
    .bind(&key.id)
    .fetch_one(&mut **tx)
    .await
}

fn log_sql() -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1
         ORDER BY seq DESC LIMIT $2"
    )
}

/// An endpoint's latest deliveries, newest first.
pub async fn log(db: &Db, endpoint_id: &str, limit: i64) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(&log_sql())
        .bind(endpoint_id)
        .bind(limit)
        .fetch_all(db.pool())
        .await
}

/// Every delivery of an event type's `message_id`, oldest first (tests, support).
pub async fn for_message(db: &Db, message_id: &str) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    rows_by(
        db.pool(),
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE message_id = $1 ORDER BY seq"
        ),
        message_id,
    )
    .await
}

/// Records a delivery, whoever holds the lease (the receiver has it: that
/// is always right to record); false if the row had finished already.
pub async fn mark_delivered(
    tx: &mut Tx,
    key: &DeliveryKey,
    status_code: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_deliveries
         SET status = 'delivered', delivered_at = $1, last_status_code = $2, last_error = NULL,
             lease_owner = NULL, lease_until = NULL
         WHERE endpoint_id = $3 AND id = $4 AND status = 'pending'";
    Ok(exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(now)
            .bind(status_code)
            .bind(&key.endpoint_id)
            .bind(&key.id),
    )
    .await?
        == 1)
}

/// What an attempt that did not deliver left behind.
pub struct Miss<'a> {
    pub status_code: Option<i64>,
    pub error_class: &'a str,
}

/// Schedules another attempt while `owner` holds the lease.
pub async fn mark_retry(
    tx: &mut Tx,
    key: &DeliveryKey,
    owner: &str,
    miss: &Miss<'_>,
    next_attempt_at: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_deliveries
         SET next_attempt_at = $1, last_status_code = $2, last_error = $3,
             lease_owner = NULL, lease_until = NULL
         WHERE endpoint_id = $4 AND id = $5 AND lease_owner = $6 AND status = 'pending'";
    Ok(exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(next_attempt_at)
            .bind(miss.status_code)
            .bind(miss.error_class)
            .bind(&key.endpoint_id)
            .bind(&key.id)
            .bind(owner),
    )
    .await?
        == 1)
}

/// Fails a delivery for good while `owner` holds the lease.
pub async fn mark_failed(
    tx: &mut Tx,
    key: &DeliveryKey,
    owner: &str,
    miss: &Miss<'_>,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_deliveries
         SET status = 'failed', last_status_code = $1, last_error = $2,
             lease_owner = NULL, lease_until = NULL
         WHERE endpoint_id = $3 AND id = $4 AND lease_owner = $5 AND status = 'pending'";
    Ok(exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(miss.status_code)
            .bind(miss.error_class)
            .bind(&key.endpoint_id)
            .bind(&key.id)
            .bind(owner),
    )
    .await?
        == 1)
}

/// Gives a lease back (shutdown cut the attempt short).
pub async fn release(tx: &mut Tx, key: &DeliveryKey, owner: &str) -> Result<(), sqlx::Error> {
    let sql = "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = NULL
         WHERE endpoint_id = $1 AND id = $2 AND lease_owner = $3 AND status = 'pending'";
    exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(&key.endpoint_id)
            .bind(&key.id)
            .bind(owner),
    )
    .await
    .map(drop)
}

/// Queues a finished delivery again, with the same id and payload; false
/// if it is still pending or does not exist.
pub async fn redeliver(tx: &mut Tx, key: &DeliveryKey, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_deliveries
         SET status = 'pending', queued_at = $1, next_attempt_at = $1, attempts = 0,
             lease_owner = NULL, lease_until = NULL, delivered_at = NULL
         WHERE endpoint_id = $2 AND id = $3 AND status <> 'pending'";
    Ok(exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(now)
            .bind(&key.endpoint_id)
            .bind(&key.id),
    )
    .await?
        == 1)
}

/// Deletes finished deliveries queued before `before`; returns how many.
pub async fn prune(db: &Db, before: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM webhook_deliveries WHERE created_at < $1 AND status <> 'pending'";
    exec(db.pool(), sqlx::query(sql).bind(before)).await
}

/// Fails every pending delivery of an endpoint (it was disabled).
pub async fn fail_pending(
    tx: &mut Tx,
    endpoint_id: &str,
    error_class: &str,
) -> Result<u64, sqlx::Error> {
    let sql = "UPDATE webhook_deliveries
         SET status = 'failed', last_error = $1, lease_owner = NULL, lease_until = NULL
         WHERE endpoint_id = $2 AND status = 'pending'";
    exec(
        &mut **tx,
        sqlx::query(sql).bind(error_class).bind(endpoint_id),
    )
    .await
}

/// The plans of the worker's and the log's statements (the plan test
/// checks none walks the whole table).
pub async fn plans(db: &Db, now: i64) -> Result<Vec<(&'static str, Vec<String>)>, sqlx::Error> {
    let endpoint = Arg::Text("00000000-0000-4000-8000-000000000001");
    Ok(vec![
        (
            "due",
            explain(
                db,
                &due_sql(db.backend()),
                vec![Arg::Int(now), Arg::Int(64)],
            )
            .await?,
        ),
        (
            "log",
            explain(db, &log_sql(), vec![endpoint, Arg::Int(200)]).await?,
        ),
        (
            "prune",
            explain(
                db,
                "SELECT endpoint_id, id FROM webhook_deliveries
                 WHERE created_at < $1 AND status <> 'pending'",
                vec![Arg::Int(now)],
            )
            .await?,
        ),
    ])
}
