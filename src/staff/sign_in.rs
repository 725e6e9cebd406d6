//! Staff sign-in: password check with no account oracle, throttling per
//! account and per client address with exponential back-off (kept in the
//! database so it holds across instances), rehash on sign-in when hashing
//! parameters have risen, and an audit event either way.

use std::fmt;
use std::net::IpAddr;

use secrecy::SecretString;
use sqlx::Row;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::accounts::{Role, StaffAccount, StaffEmail, StaffId};
use super::password::{self, HashError};
use crate::audit::{Action, Actor, AuditError, AuditLog, Event};
use crate::clock::SharedClock;
use crate::db::{Tx, placeholders};
use crate::vault::Vault;

/// Consecutive failures allowed per account before back-off starts.
const ACCOUNT_FREE_FAILURES: i64 = 5;
/// Failures allowed per client address (across accounts) before back-off.
const IP_FREE_FAILURES: i64 = 20;
/// First back-off; it doubles with every further failure, up to the cap.
const BACKOFF_BASE_SECS: i64 = 30;
const ACCOUNT_BACKOFF_CAP_SECS: i64 = 15 * 60;
const IP_BACKOFF_CAP_SECS: i64 = 60 * 60;
/// A failure streak older than this starts over.
const FAILURE_MEMORY_SECS: i64 = 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Wrong address, wrong password, or a disabled account: one answer for
    /// all, so the form does not tell who has an account.
    #[error("the email address or password is not right")]
    InvalidCredentials,
    #[error("too many attempts; try again in {} minute(s)", (retry_after_secs + 59) / 60)]
    Throttled { retry_after_secs: i64 },
    #[error("{0}")]
    Hash(#[from] HashError),
    #[error("{0}")]
    Audit(#[from] AuditError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

#[derive(Clone)]
pub struct SignIn {
    vault: Vault,
    hasher: password::Hasher,
    audit: AuditLog,
    clock: SharedClock,
    /// A real argon2id hash of a random password, verified against when the
    /// account does not exist, so both paths cost the same.
    dummy_hash: std::sync::Arc<OnceCell<String>>,
}

impl fmt::Debug for SignIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignIn { .. }")
    }
}

struct Throttle {
    key: Vec<u8>,
    free: i64,
    cap: i64,
}

impl SignIn {
    pub fn new(
        vault: Vault,
        audit: AuditLog,
        clock: SharedClock,
        hasher: password::Hasher,
    ) -> Self {
        SignIn {
            vault,
            hasher,
            audit,
            clock,
            dummy_hash: std::sync::Arc::new(OnceCell::new()),
        }
    }

    async fn dummy_hash(&self) -> Result<String, HashError> {
        self.dummy_hash
            .get_or_try_init(|| async {
                let random = hex::encode(rand::random::<[u8; 16]>());
                self.hasher.hash_unchecked(SecretString::from(random)).await
            })
            .await
            .cloned()
    }

    /// Checks a sign-in attempt from `ip`.
    pub async fn authenticate(
        &self,
        email: &str,
        password: SecretString,
        ip: IpAddr,
    ) -> Result<StaffAccount, SignInError> {
        let typed = email.trim().to_lowercase();
        let throttles = [
            Throttle {
                key: self.vault.keyed_hash("sign-in-account", typed.as_bytes()),
                free: ACCOUNT_FREE_FAILURES,
                cap: ACCOUNT_BACKOFF_CAP_SECS,
            },
            Throttle {
                key: self
                    .vault
                    .keyed_hash("sign-in-ip", ip.to_string().as_bytes()),
                free: IP_FREE_FAILURES,
                cap: IP_BACKOFF_CAP_SECS,
            },
        ];
        let now = self.clock.now();
        if let Some(until) = self.blocked_until(&throttles).await?
            && until > now
        {
            return Err(SignInError::Throttled {
                retry_after_secs: until - now,
            });
        }

        let account = match StaffEmail::parse(&typed) {
            Ok(e) => self.load(&e).await?,
            Err(_) => None,
        };
        let stored = match &account {
            Some((_, hash)) => hash.clone(),
            None => self.dummy_hash().await?,
        };
        let password_ok = self.hasher.verify(password.clone(), stored.clone()).await?;

        let db = self.vault.db();
        match account {
            Some((account, _)) if password_ok && !account.disabled => {
                // Upgrade the stored hash while we hold the password.
                let rehash = if password::needs_rehash(&stored) {
                    Some(self.hasher.hash_unchecked(password).await?)
                } else {
                    None
                };
                let mut tx = db.begin().await?;
                sqlx::query("DELETE FROM sign_in_throttle WHERE key = $1")
                    .bind(&throttles[0].key)
                    .execute(&mut *tx)
                    .await?;
                if let Some(hash) = rehash {
                    sqlx::query("UPDATE staff_users SET password_hash = $1 WHERE id = $2")
                        .bind(hash)
                        .bind(account.id.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                let event =
                    Event::new(Actor::Staff(account.id.to_string()), Action::SignedIn).ip(ip);
                self.audit.record(&mut tx, &event).await?;
                tx.commit().await?;
                Ok(account)
            }
            other => {
                let actor = match &other {
                    Some((a, _)) => Actor::Staff(a.id.to_string()),
                    None => Actor::Anonymous,
                };
                let mut tx = db.begin().await?;
                for t in &throttles {
                    record_failure(&mut tx, t, now).await?;
                }
                self.audit
                    .record(&mut tx, &Event::new(actor, Action::SignInFailed).ip(ip))
                    .await?;
                tx.commit().await?;
                Err(SignInError::InvalidCredentials)
            }
        }
    }

    async fn blocked_until(&self, throttles: &[Throttle]) -> Result<Option<i64>, SignInError> {
        let sql = format!(
            "SELECT MAX(blocked_until) FROM sign_in_throttle WHERE key IN ({})",
            placeholders(1, throttles.len())
        );
        let mut query = sqlx::query_scalar::<_, Option<i64>>(&sql);
        for t in throttles {
            query = query.bind(&t.key);
        }
        Ok(query.fetch_one(self.vault.db().pool()).await?)
    }

    async fn load(
        &self,
        email: &StaffEmail,
    ) -> Result<Option<(StaffAccount, String)>, SignInError> {
        let row = sqlx::query(
            "SELECT id, role, disabled_at, password_hash FROM staff_users WHERE email = $1",
        )
        .bind(email.as_str())
        .fetch_optional(self.vault.db().pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.try_get(0)?;
        let role: String = row.try_get(1)?;
        let (Ok(id), Ok(role)) = (Uuid::parse_str(&id), role.parse::<Role>()) else {
            return Ok(None);
        };
        let account = StaffAccount {
            id: StaffId::from_uuid(id),
            email: email.clone(),
            role,
            disabled: row.try_get::<Option<i64>, _>(2)?.is_some(),
        };
        Ok(Some((account, row.try_get(3)?)))
    }
}

/// Counts one failure atomically (an upsert, so concurrent instances never
/// lose a count) and sets the back-off once past the free allowance.
async fn record_failure(tx: &mut Tx, t: &Throttle, now: i64) -> Result<(), sqlx::Error> {
    let failures: i64 = sqlx::query_scalar(
        "INSERT INTO sign_in_throttle (key, failures, last_failure, blocked_until) VALUES ($1, 1, $2, 0)
         ON CONFLICT (key) DO UPDATE SET
             failures = CASE WHEN sign_in_throttle.last_failure < $3 THEN 1
                             ELSE sign_in_throttle.failures + 1 END,
             last_failure = $2
         RETURNING failures",
    )
    .bind(&t.key)
    .bind(now)
    .bind(now - FAILURE_MEMORY_SECS)
    .fetch_one(&mut **tx)
    .await?;
    if failures >= t.free {
        let doublings = u32::try_from((failures - t.free).min(20)).unwrap_or(20);
        let delay = BACKOFF_BASE_SECS
            .saturating_mul(1i64 << doublings)
            .min(t.cap);
        sqlx::query("UPDATE sign_in_throttle SET blocked_until = $1 WHERE key = $2")
            .bind(now + delay)
            .bind(&t.key)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
