//! Staff sign-in: password check with no account oracle, throttling with
//! exponential back-off (kept in the database so it holds across
//! instances), rehash on sign-in when hashing parameters have risen, and an
//! audit event either way.
//!
//! Three throttles, so strangers cannot lock a known account out (B5):
//! per (account, client network) the usual few free failures; per client
//! network a few more (across accounts); and per account a much higher
//! limit whose first trip emails the owner. IPv6 clients are keyed by their
//! /64, which one subscriber usually holds whole.

use std::fmt;
use std::net::IpAddr;

use secrecy::SecretString;
use tokio::sync::OnceCell;

use super::StaffError;
use super::accounts::{AccountKind, Role, StaffAccount, StaffEmail, StaffId};
use super::password::{self, HashError};
use crate::audit::{Action, Actor, AuditLog, Event};
use crate::clock::SharedClock;
use crate::mail::{Mail, Outbox};
use crate::store::{Tx, sign_in_throttle, staff};
use crate::vault::Vault;

/// Consecutive failures allowed per (account, client network) before
/// back-off starts.
const PAIR_FREE_FAILURES: i64 = 5;
/// Failures allowed per client network (across accounts) before back-off.
const IP_FREE_FAILURES: i64 = 20;
/// Failures allowed per account from everywhere: high, so strangers cannot
/// keep the owner out cheaply; the owner is emailed when it trips.
pub const ACCOUNT_FREE_FAILURES: i64 = 100;
/// First back-off; it doubles with every further failure, up to the cap.
const BACKOFF_BASE_SECS: i64 = 30;
const ACCOUNT_BACKOFF_CAP_SECS: i64 = 15 * 60;
const IP_BACKOFF_CAP_SECS: i64 = 60 * 60;
/// A failure streak older than this starts over.
pub(crate) const FAILURE_MEMORY_SECS: i64 = 24 * 3600;

/// The wait after the `failures`-th failure of a streak with `free`
/// allowed: none before, then 30 s doubling up to `cap`. Sign-in and the
/// second factor share this shape.
pub(crate) fn backoff_secs(failures: i64, free: i64, cap: i64) -> Option<i64> {
    if failures < free {
        return None;
    }
    let doublings = u32::try_from((failures - free).min(20)).unwrap_or(20);
    Some(BACKOFF_BASE_SECS.saturating_mul(1i64 << doublings).min(cap))
}

#[derive(Clone)]
pub struct SignIn {
    vault: Vault,
    hasher: password::Hasher,
    /// A lane of its own for browsers that signed in to the typed account
    /// before ([`SignIn::device_token`]): a flood of strangers' sign-ins
    /// fills `hasher`'s queue, not this one.
    device_hasher: password::Hasher,
    audit: AuditLog,
    outbox: Outbox,
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

/// The three throttles of one attempt, in this order.
const PAIR: usize = 0;
const ACCOUNT: usize = 2;

impl SignIn {
    pub fn new(
        vault: Vault,
        audit: AuditLog,
        outbox: Outbox,
        clock: SharedClock,
        hasher: password::Hasher,
    ) -> Self {
        SignIn {
            vault,
            device_hasher: hasher.lane(),
            hasher,
            audit,
            outbox,
            clock,
            dummy_hash: std::sync::Arc::new(OnceCell::new()),
        }
    }

    /// The sign-in form's lane of the argon2 pool (tests look at its peak).
    pub fn hasher(&self) -> &password::Hasher {
        &self.hasher
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

    fn throttles(&self, typed: &str, ip: IpAddr) -> [Throttle; 3] {
        let net = crate::client_net::rate_key(ip);
        [
            Throttle {
                key: self.vault.keyed_hash(
                    crate::vault::Purpose::SignInAccountIp,
                    format!("{typed}\0{net}").as_bytes(),
                ),
                free: PAIR_FREE_FAILURES,
                cap: ACCOUNT_BACKOFF_CAP_SECS,
            },
            Throttle {
                key: self
                    .vault
                    .keyed_hash(crate::vault::Purpose::SignInIp, net.as_bytes()),
                free: IP_FREE_FAILURES,
                cap: IP_BACKOFF_CAP_SECS,
            },
            Throttle {
                key: self
                    .vault
                    .keyed_hash(crate::vault::Purpose::SignInAccount, typed.as_bytes()),
                free: ACCOUNT_FREE_FAILURES,
                cap: ACCOUNT_BACKOFF_CAP_SECS,
            },
        ]
    }

    /// Checks a sign-in attempt from `ip`. Cheap refusals (a throttle) come
    /// first; the hash runs in the bounded pool, which sheds with
    /// [`HashError::Busy`] before hashing when it is full.
    pub async fn authenticate(
        &self,
        email: &str,
        password: SecretString,
        ip: IpAddr,
    ) -> Result<StaffAccount, StaffError> {
        self.authenticate_from(email, password, ip, None).await
    }

    /// A device cookie (OWASP's "device cookies"): proof that this browser
    /// once signed in to `email` with its password. Its holder's later
    /// sign-ins to that account hash in a lane strangers cannot fill.
    pub fn device_token(&self, email: &str) -> String {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let mac = hex::encode(self.device_mac(email, &nonce));
        format!("{nonce}.{mac}")
    }

    fn device_mac(&self, email: &str, nonce: &str) -> Vec<u8> {
        let typed = email.trim().to_lowercase();
        self.vault.keyed_hash(
            crate::vault::Purpose::SignInDevice,
            format!("{typed}\0{nonce}").as_bytes(),
        )
    }

    /// Whether `token` is a device cookie issued for `email`.
    pub fn is_trusted_device(&self, email: &str, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        let Some((nonce, mac)) = token.split_once('.') else {
            return false;
        };
        let Ok(mac) = hex::decode(mac) else {
            return false;
        };
        nonce.len() == 32
            && nonce.bytes().all(|b| b.is_ascii_hexdigit())
            && bool::from(self.device_mac(email, nonce).ct_eq(&mac))
    }

    /// [`SignIn::authenticate`] from a browser that may hold a device
    /// cookie. Only the hashing lane differs: limits and answers are the
    /// same, and a wrong or foreign cookie just means the common lane.
    pub async fn authenticate_from(
        &self,
        email: &str,
        password: SecretString,
        ip: IpAddr,
        device: Option<&str>,
    ) -> Result<StaffAccount, StaffError> {
        let lane = match device {
            Some(token) if self.is_trusted_device(email, token) => &self.device_hasher,
            _ => &self.hasher,
        };
        let typed = email.trim().to_lowercase();
        let throttles = self.throttles(&typed, ip);
        self.check_throttles(&throttles).await?;

        let account = match StaffEmail::parse(&typed) {
            Ok(e) => self.load(&e).await?,
            Err(_) => None,
        };
        let stored = match &account {
            Some((_, hash)) => hash.clone(),
            None => self.dummy_hash().await?,
        };
        let password_ok = lane.verify(password.clone(), stored.clone()).await?;

        match account {
            // A service account's hash is of a secret nobody keeps, so its
            // password never matches; it is refused here all the same, after
            // the same hash and with the same answer and counts as a wrong
            // password, so the form does not tell it from a person.
            Some((account, _)) if password_ok && !account.disabled && !account.is_service() => {
                // Upgrade the stored hash while we hold the password.
                let rehash = if password::needs_rehash(&stored) {
                    Some(lane.hash_unchecked(password).await?)
                } else {
                    None
                };
                let mut tx = self.vault.db().begin().await?;
                // Only this client's streak ends: a stranger's failures
                // elsewhere still count against the account-wide limit.
                sign_in_throttle::clear(&mut tx, &throttles[PAIR].key).await?;
                if let Some(hash) = rehash {
                    staff::upgrade_hash(&mut tx, &account.id.to_string(), &hash).await?;
                }
                let event =
                    Event::new(Actor::Staff(account.id.to_string()), Action::SignedIn).ip(ip);
                self.audit.record(&mut tx, &event).await?;
                tx.commit().await?;
                Ok(account)
            }
            other => {
                let account = other.map(|(a, _)| a);
                self.record_failures(&throttles, account.as_ref(), ip)
                    .await?;
                Err(StaffError::InvalidCredentials)
            }
        }
    }

    /// Checks the current password of a signed-in account (before a
    /// security change), under the same throttles as signing in.
    pub async fn reauthenticate(
        &self,
        account: &StaffAccount,
        password: SecretString,
        ip: IpAddr,
    ) -> Result<bool, StaffError> {
        let throttles = self.throttles(account.email.as_str(), ip);
        self.check_throttles(&throttles).await?;
        let stored = match self.load(&account.email).await? {
            Some((a, hash)) if a.id == account.id => hash,
            _ => self.dummy_hash().await?,
        };
        if self.hasher.verify(password, stored).await? {
            return Ok(true);
        }
        self.record_failures(&throttles, Some(account), ip).await?;
        Ok(false)
    }

    async fn check_throttles(&self, throttles: &[Throttle]) -> Result<(), StaffError> {
        let now = self.clock.now();
        if let Some(until) = self.blocked_until(throttles).await?
            && until > now
        {
            return Err(StaffError::Throttled {
                retry_after_secs: until - now,
            });
        }
        Ok(())
    }

    /// Counts a failure on every throttle and audits it; the one failure
    /// that trips the account-wide limit also emails the owner, in the same
    /// transaction (so exactly once per streak, however many race).
    async fn record_failures(
        &self,
        throttles: &[Throttle; 3],
        account: Option<&StaffAccount>,
        ip: IpAddr,
    ) -> Result<(), StaffError> {
        let now = self.clock.now();
        let actor = match account {
            Some(a) => Actor::Staff(a.id.to_string()),
            None => Actor::Anonymous,
        };
        let mut tx = self.vault.db().begin().await?;
        let mut tripped = false;
        for (i, t) in throttles.iter().enumerate() {
            let failures = record_failure(&mut tx, t, now).await?;
            tripped |= i == ACCOUNT && failures == t.free;
        }
        let tripped = tripped.then_some(account).flatten();
        // A service account is never emailed (its address is undeliverable).
        let emailed = tripped.filter(|a| !a.disabled && !a.is_service());
        if let Some(account) = emailed {
            self.outbox
                .enqueue(&mut tx, account.email.as_str(), &Mail::SignInAlert, None)
                .await?;
        }
        self.audit
            .record(&mut tx, &Event::new(actor, Action::SignInFailed).ip(ip))
            .await?;
        if let Some(account) = tripped {
            let detail = serde_json::json!({
                "staff_id": account.id.to_string(),
                "failures": ACCOUNT_FREE_FAILURES,
                "owner_emailed": emailed.is_some(),
            });
            self.audit
                .record(
                    &mut tx,
                    &Event::new(Actor::System, Action::SignInLimitReached).detail(detail),
                )
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes throttle rows that no longer hold anything back: the
    /// back-off is over and the streak is past its memory. Returns how many.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let now = self.clock.now();
        let db = self.vault.db();
        sign_in_throttle::prune(db, now, now - FAILURE_MEMORY_SECS).await
    }

    async fn blocked_until(&self, throttles: &[Throttle]) -> Result<Option<i64>, StaffError> {
        let keys: Vec<&[u8]> = throttles.iter().map(|t| t.key.as_slice()).collect();
        Ok(sign_in_throttle::blocked_until(self.vault.db(), &keys).await?)
    }

    async fn load(&self, email: &StaffEmail) -> Result<Option<(StaffAccount, String)>, StaffError> {
        let row = staff::credentials(self.vault.db(), email.as_str()).await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (Some(id), Ok(role), Ok(kind)) = (
            StaffId::parse(&row.id),
            row.role.parse::<Role>(),
            row.kind.parse::<AccountKind>(),
        ) else {
            return Ok(None);
        };
        let account = StaffAccount {
            id,
            email: email.clone(),
            role,
            disabled: row.disabled_at.is_some(),
            kind,
        };
        Ok(Some((account, row.password_hash)))
    }
}

/// Counts one failure atomically (an upsert, so concurrent instances never
/// lose a count), sets the back-off once past the free allowance, and
/// returns the streak's length.
async fn record_failure(tx: &mut Tx, t: &Throttle, now: i64) -> Result<i64, sqlx::Error> {
    let failures =
        sign_in_throttle::count_failure(tx, &t.key, now, now - FAILURE_MEMORY_SECS).await?;
    if let Some(delay) = backoff_secs(failures, t.free, t.cap) {
        sign_in_throttle::block_until(tx, &t.key, now + delay).await?;
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        assert_eq!(backoff_secs(4, 5, 900), None);
        assert_eq!(backoff_secs(5, 5, 900), Some(30));
        assert_eq!(backoff_secs(6, 5, 900), Some(60));
        assert_eq!(backoff_secs(10, 5, 900), Some(900));
        assert_eq!(backoff_secs(1000, 5, 900), Some(900));
    }
}
