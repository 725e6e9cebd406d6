//! Staff accounts: admins manage staff and see everything, agents send and
//! see their own messages. Every change is audited in its own transaction.

use std::fmt;
use std::str::FromStr;

use secrecy::SecretString;
use sqlx::Row;
use uuid::Uuid;

use super::password::{HashError, Hasher, NewPassword, PasswordRejected};
use crate::audit::{Action, Actor, AuditError, AuditLog, Event};
use crate::clock::SharedClock;
use crate::db::{Db, Tx};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }
}

impl FromStr for Role {
    type Err = AccountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "agent" => Ok(Role::Agent),
            _ => Err(AccountError::InvalidRole),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StaffId(Uuid);

impl StaffId {
    pub(crate) fn from_uuid(id: Uuid) -> Self {
        StaffId(id)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Uuid::parse_str(s).ok().map(StaffId)
    }
}

impl fmt::Display for StaffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A staff member's sign-in address, normalised to lower case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffEmail(String);

impl StaffEmail {
    /// Accepts `local@domain.tld` shapes a mail server would deliver to; the
    /// real proof is the invite email arriving.
    pub fn parse(s: &str) -> Result<Self, AccountError> {
        let s = s.trim().to_lowercase();
        let valid = s.len() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && match s.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && local.len() <= 64
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !domain.contains("..")
                }
                None => false,
            };
        if valid {
            Ok(StaffEmail(s))
        } else {
            Err(AccountError::InvalidEmail)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffAccount {
    pub id: StaffId,
    pub email: StaffEmail,
    pub role: Role,
    pub disabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("that is not a valid email address")]
    InvalidEmail,
    #[error("the role must be admin or agent")]
    InvalidRole,
    #[error("a staff account with that email address already exists")]
    EmailTaken,
    #[error("no staff account has that email address")]
    NotFound,
    #[error("{0}")]
    WeakPassword(#[from] PasswordRejected),
    #[error("{0}")]
    Hash(#[from] HashError),
    #[error("{0}")]
    Audit(#[from] AuditError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// An account plus its session epoch and second-factor state.
#[derive(Clone, Debug)]
pub struct AccountState {
    pub account: StaffAccount,
    pub session_epoch: i64,
    pub totp_enabled: bool,
}

fn account_state(row: &sqlx::any::AnyRow) -> Result<AccountState, AccountError> {
    let id: String = row.try_get(0)?;
    let role: String = row.try_get(2)?;
    Ok(AccountState {
        account: StaffAccount {
            id: StaffId(Uuid::parse_str(&id).map_err(|_| AccountError::NotFound)?),
            email: StaffEmail(row.try_get(1)?),
            role: role.parse()?,
            disabled: row.try_get::<Option<i64>, _>(3)?.is_some(),
        },
        session_epoch: row.try_get(4)?,
        totp_enabled: row.try_get::<Option<i64>, _>(5)?.is_some(),
    })
}

#[derive(Clone)]
pub struct Accounts {
    db: Db,
    audit: AuditLog,
    clock: SharedClock,
    hasher: Hasher,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Accounts { .. }")
    }
}

impl Accounts {
    pub fn new(db: Db, audit: AuditLog, clock: SharedClock, hasher: Hasher) -> Self {
        Accounts {
            db,
            audit,
            clock,
            hasher,
        }
    }

    pub async fn create(
        &self,
        actor: Actor,
        email: &StaffEmail,
        role: Role,
        password: SecretString,
    ) -> Result<StaffId, AccountError> {
        let hash = self
            .hasher
            .hash(NewPassword::parse(password, email.as_str())?)
            .await?;
        let mut tx = self.db.begin().await?;
        let id = self.insert(&mut tx, email, role, &hash).await?;
        let detail = serde_json::json!({ "staff_id": id.to_string(), "role": role.as_str() });
        self.audit
            .record(
                &mut tx,
                &Event::new(actor, Action::StaffCreated).detail(detail),
            )
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Inserts an account inside the caller's transaction; the caller
    /// audits. First-run setup and invitations use it so the account and
    /// its one-time link commit together. `password_hash` is hashed
    /// beforehand so the write lock is not held during argon2.
    pub async fn insert(
        &self,
        tx: &mut Tx,
        email: &StaffEmail,
        role: Role,
        password_hash: &str,
    ) -> Result<StaffId, AccountError> {
        let id = StaffId(Uuid::new_v4());
        let now = self.clock.now();
        let inserted = sqlx::query(
            "INSERT INTO staff_users (id, email, role, password_hash, created_at, password_changed_at)
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (email) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(email.as_str())
        .bind(role.as_str())
        .bind(password_hash)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(AccountError::EmailTaken);
        }
        Ok(id)
    }

    pub async fn find(&self, email: &StaffEmail) -> Result<StaffAccount, AccountError> {
        let row =
            sqlx::query("SELECT id, email, role, disabled_at FROM staff_users WHERE email = $1")
                .bind(email.as_str())
                .fetch_optional(self.db.pool())
                .await?
                .ok_or(AccountError::NotFound)?;
        let id: String = row.try_get(0)?;
        let role: String = row.try_get(2)?;
        Ok(StaffAccount {
            id: StaffId(Uuid::parse_str(&id).map_err(|_| AccountError::NotFound)?),
            email: StaffEmail(row.try_get(1)?),
            role: role.parse()?,
            disabled: row.try_get::<Option<i64>, _>(3)?.is_some(),
        })
    }

    pub async fn count(&self) -> Result<i64, AccountError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM staff_users")
            .fetch_one(self.db.pool())
            .await?)
    }

    pub async fn reset_password(
        &self,
        actor: Actor,
        email: &StaffEmail,
        password: SecretString,
    ) -> Result<(), AccountError> {
        let account = self.find(email).await?;
        let hash = self
            .hasher
            .hash(NewPassword::parse(password, email.as_str())?)
            .await?;
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "UPDATE staff_users SET password_hash = $1, password_changed_at = $2, session_epoch = session_epoch + 1 WHERE id = $3",
        )
        .bind(hash)
        .bind(self.clock.now())
        .bind(account.id.to_string())
        .execute(&mut *tx)
        .await?;
        let detail = serde_json::json!({ "staff_id": account.id.to_string() });
        self.audit
            .record(
                &mut tx,
                &Event::new(actor, Action::StaffPasswordReset).detail(detail),
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables an account; returns false if it already was. (Live sessions
    /// are ended by the session layer, which checks this flag.)
    pub async fn disable(&self, actor: Actor, email: &StaffEmail) -> Result<bool, AccountError> {
        let account = self.find(email).await?;
        let mut tx = self.db.begin().await?;
        let changed = sqlx::query(
            "UPDATE staff_users SET disabled_at = $1, session_epoch = session_epoch + 1 WHERE id = $2 AND disabled_at IS NULL",
        )
        .bind(self.clock.now())
        .bind(account.id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if changed {
            let detail = serde_json::json!({ "staff_id": account.id.to_string() });
            self.audit
                .record(
                    &mut tx,
                    &Event::new(actor, Action::StaffDisabled).detail(detail),
                )
                .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// An account by id with what the session layer checks on every request.
    pub async fn state(&self, id: StaffId) -> Result<Option<AccountState>, AccountError> {
        let row = sqlx::query(
            "SELECT id, email, role, disabled_at, session_epoch, totp_enabled_at FROM staff_users WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| account_state(&row)).transpose()
    }

    /// Every account, for the admin's staff list (by address).
    pub async fn list(&self) -> Result<Vec<AccountState>, AccountError> {
        let rows = sqlx::query(
            "SELECT id, email, role, disabled_at, session_epoch, totp_enabled_at FROM staff_users ORDER BY email",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(account_state).collect()
    }

    /// Disables by id (the admin page), ending the account's sessions.
    pub async fn disable_id(&self, actor: Actor, id: StaffId) -> Result<bool, AccountError> {
        let state = self.state(id).await?.ok_or(AccountError::NotFound)?;
        self.disable(actor, &state.account.email).await
    }

    /// Checks a new password against the policy for `email` and hashes it,
    /// before any transaction: argon2 must not hold SQLite's write lock.
    pub async fn hash_new_password(
        &self,
        email: &StaffEmail,
        password: SecretString,
    ) -> Result<String, AccountError> {
        Ok(self
            .hasher
            .hash(NewPassword::parse(password, email.as_str())?)
            .await?)
    }

    /// Sets a new password by id (invitation or first-run setup), ending
    /// any sessions. `hash` comes from [`Accounts::hash_new_password`].
    pub async fn set_password(
        &self,
        tx: &mut Tx,
        id: StaffId,
        hash: &str,
    ) -> Result<(), AccountError> {
        sqlx::query(
            "UPDATE staff_users SET password_hash = $1, password_changed_at = $2, session_epoch = session_epoch + 1 WHERE id = $3",
        )
        .bind(hash)
        .bind(self.clock.now())
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Whether `id` wants an email when a customer first opens a message.
    pub async fn pickup_alerts(&self, id: StaffId) -> Result<bool, AccountError> {
        let on: Option<i64> =
            sqlx::query_scalar("SELECT pickup_alerts FROM staff_users WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(self.db.pool())
                .await?;
        Ok(on.unwrap_or(0) != 0)
    }

    pub async fn set_pickup_alerts(&self, id: StaffId, on: bool) -> Result<(), AccountError> {
        sqlx::query("UPDATE staff_users SET pickup_alerts = $1 WHERE id = $2")
            .bind(i64::from(on))
            .bind(id.to_string())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// The stored password hash, for sign-in.
    pub async fn password_hash(&self, email: &StaffEmail) -> Result<Option<String>, AccountError> {
        Ok(
            sqlx::query_scalar("SELECT password_hash FROM staff_users WHERE email = $1")
                .bind(email.as_str())
                .fetch_optional(self.db.pool())
                .await?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            StaffEmail::parse("  Jane.Doe@Example.COM ")
                .ok()
                .map(|e| e.0),
            Some("jane.doe@example.com".to_owned())
        );
        for bad in [
            "",
            "jane",
            "jane@",
            "@example.com",
            "jane@example",
            "ja ne@example.com",
            "a@b@c.com",
            "jane@.example.com",
            "jane@example..com",
        ] {
            assert!(StaffEmail::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
