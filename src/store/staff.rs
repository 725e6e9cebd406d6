//! `staff_users`: staff accounts (address, role, kind, password hash,
//! session epoch, disabled and second-factor state).

use super::{Db, PageFrom, Tx, exec, page_clause, page_rows, row_by, rows_by, value_by};

/// An account with what the session layer checks on every request.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StaffRow {
    pub id: String,
    pub email: String,
    pub role: String,
    pub disabled_at: Option<i64>,
    pub session_epoch: i64,
    pub totp_enabled_at: Option<i64>,
    /// `person` or `service`.
    pub kind: String,
}

const COLUMNS: &str = "id, email, role, disabled_at, session_epoch, totp_enabled_at, kind";

pub struct NewStaff<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub role: &'a str,
    pub password_hash: &'a str,
    pub now: i64,
    /// `person` or `service`.
    pub kind: &'a str,
}

/// Inserts an account; false if the address is taken.
pub async fn insert(tx: &mut Tx, new: &NewStaff<'_>) -> Result<bool, sqlx::Error> {
    let sql = "INSERT INTO staff_users
             (id, email, role, password_hash, created_at, password_changed_at, kind)
         VALUES ($1, $2, $3, $4, $5, $5, $6) ON CONFLICT (email) DO NOTHING";
    Ok(exec(
        &mut **tx,
        sqlx::query(sql)
            .bind(new.id)
            .bind(new.email)
            .bind(new.role)
            .bind(new.password_hash)
            .bind(new.now)
            .bind(new.kind),
    )
    .await?
        == 1)
}

pub async fn by_email(db: &Db, email: &str) -> Result<Option<StaffRow>, sqlx::Error> {
    row_by(
        db.pool(),
        &format!("SELECT {COLUMNS} FROM staff_users WHERE email = $1"),
        email,
    )
    .await
}

pub async fn by_id(db: &Db, id: &str) -> Result<Option<StaffRow>, sqlx::Error> {
    row_by(
        db.pool(),
        &format!("SELECT {COLUMNS} FROM staff_users WHERE id = $1"),
        id,
    )
    .await
}

/// Up to `limit` accounts next to account `from` in address order: after
/// it (backwards false), or before it, nearest first (with no id, the
/// last); with no `from`, the first. Keyed by the (unique, indexed)
/// address, looked up from the id so a page link carries no address.
pub async fn page(db: &Db, from: PageFrom<&str>, limit: i64) -> Result<Vec<StaffRow>, sqlx::Error> {
    let (condition, order) = page_clause(
        &from,
        "WHERE email > (SELECT email FROM staff_users WHERE id = $2)",
        "WHERE email < (SELECT email FROM staff_users WHERE id = $2)",
        "ASC",
    );
    let sql =
        format!("SELECT {COLUMNS} FROM staff_users {condition} ORDER BY email {order} LIMIT $1");
    page_rows(db, &sql, limit, from.and_then(|(key, _)| key)).await
}

/// How many people have an account (service accounts are not counted).
pub async fn count(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM staff_users WHERE kind = 'person'")
        .fetch_one(db.pool())
        .await
}

/// [`count`] inside a transaction (a check that must hold at commit).
pub async fn count_in(tx: &mut Tx) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM staff_users WHERE kind = 'person'")
        .fetch_one(&mut **tx)
        .await
}

/// Up to `limit` service accounts, by address (which is their name).
pub async fn services(db: &Db, limit: i64) -> Result<Vec<StaffRow>, sqlx::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM staff_users WHERE kind = 'service' ORDER BY email LIMIT $1");
    rows_by(db.pool(), &sql, limit).await
}

/// Sets a new password hash, ending every session of the account; false
/// (nothing changed) for a service account, which never has a password,
/// or an unknown id.
pub async fn set_person_password(
    tx: &mut Tx,
    id: &str,
    hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE staff_users SET password_hash = $1, password_changed_at = $2,
             session_epoch = session_epoch + 1
         WHERE id = $3 AND kind = 'person'";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(hash).bind(now).bind(id)).await? == 1)
}

/// Disables an account, ending its sessions; false if it already was.
pub async fn disable(tx: &mut Tx, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE staff_users SET disabled_at = $1, session_epoch = session_epoch + 1
         WHERE id = $2 AND disabled_at IS NULL";
    Ok(exec(&mut **tx, sqlx::query(sql).bind(now).bind(id)).await? > 0)
}

pub async fn pickup_alerts(db: &Db, id: &str) -> Result<Option<i64>, sqlx::Error> {
    value_by(
        db.pool(),
        "SELECT pickup_alerts FROM staff_users WHERE id = $1",
        id,
    )
    .await
}

pub async fn set_pickup_alerts(db: &Db, id: &str, on: bool) -> Result<(), sqlx::Error> {
    let sql = "UPDATE staff_users SET pickup_alerts = $1 WHERE id = $2";
    exec(db.pool(), sqlx::query(sql).bind(i64::from(on)).bind(id))
        .await
        .map(drop)
}

pub async fn password_hash(db: &Db, email: &str) -> Result<Option<String>, sqlx::Error> {
    value_by(
        db.pool(),
        "SELECT password_hash FROM staff_users WHERE email = $1",
        email,
    )
    .await
}

/// What sign-in needs: the account and its password hash.
#[derive(sqlx::FromRow)]
pub struct Credentials {
    pub id: String,
    pub role: String,
    pub disabled_at: Option<i64>,
    pub password_hash: String,
    pub kind: String,
}

pub async fn credentials(db: &Db, email: &str) -> Result<Option<Credentials>, sqlx::Error> {
    row_by(
        db.pool(),
        "SELECT id, role, disabled_at, password_hash, kind FROM staff_users WHERE email = $1",
        email,
    )
    .await
}

/// Replaces a password hash with a stronger one of the same password
/// (sessions stay: the password did not change).
pub async fn upgrade_hash(tx: &mut Tx, id: &str, hash: &str) -> Result<(), sqlx::Error> {
    let sql = "UPDATE staff_users SET password_hash = $1 WHERE id = $2";
    exec(&mut **tx, sqlx::query(sql).bind(hash).bind(id))
        .await
        .map(drop)
}
