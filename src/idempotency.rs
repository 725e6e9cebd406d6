//! `Idempotency-Key` for creating API calls: a client that retries a call
//! (a timeout, a dropped connection, a second instance behind the load
//! balancer) gets the first call's answer instead of a second message and a
//! second email.
//!
//! A key belongs to one staff member and lives 24 hours. Its first call
//! claims it with one insert (the primary key decides between instances);
//! the result is recorded in the transaction that creates the message, so
//! a committed message always has its answer stored and a failed call
//! leaves nothing but a released claim. A call made while the first is in
//! flight waits for its answer, briefly; reusing a key for a different
//! request is refused. Keys and requests are kept as keyed hashes, the
//! answer sealed (it may hold a generated access code).

use std::time::Duration;

use crate::clock::SharedClock;
use crate::ids::{MessageId, StaffId};
use crate::store::idempotency as rows;
use crate::store::{Db, Tx};
use crate::vault::{Purpose, Vault, VaultError};

/// How long a key holds its first answer.
pub const KEPT_SECS: i64 = 24 * 3600;
/// A call in flight this long is taken to have died with its instance.
const ABANDONED_SECS: i64 = 300;
/// How long a repeated call waits for the first one's answer.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
/// Longest key accepted (the IETF draft sets none; Stripe allows 255).
pub const MAX_KEY_LEN: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("the Idempotency-Key must be 1 to 255 visible ASCII characters")]
    InvalidKey,
    #[error("a request with this Idempotency-Key is still in progress")]
    InFlight,
    #[error("this Idempotency-Key was used for a different request")]
    Reused,
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// What a call with a key does: run (holding the claim) or answer again.
#[derive(Debug)]
pub enum Begun {
    Run(Claim),
    Replay { status: u16, body: Vec<u8> },
}

/// A key claimed by the call now running.
#[derive(Clone, Debug)]
pub struct Claim {
    staff: StaffId,
    key_hash: Vec<u8>,
    started_at: i64,
}

#[derive(Clone)]
pub struct Idempotency {
    db: Db,
    vault: Vault,
    clock: SharedClock,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Idempotency { .. }")
    }
}

impl Idempotency {
    pub fn new(db: Db, vault: Vault, clock: SharedClock) -> Self {
        Idempotency { db, vault, clock }
    }

    /// Claims `key` for `staff`'s call with this `request` (its bytes as
    /// sent), or finds the answer of the call that claimed it first.
    pub async fn begin(
        &self,
        staff: StaffId,
        key: &str,
        request: &[u8],
    ) -> Result<Begun, IdempotencyError> {
        if key.is_empty()
            || key.len() > MAX_KEY_LEN
            || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(IdempotencyError::InvalidKey);
        }
        let owner = staff.to_string();
        let key_hash = self
            .vault
            .keyed_hash(Purpose::IdempotencyKey, key.as_bytes());
        let request_hash = self.vault.keyed_hash(Purpose::IdempotencyRequest, request);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.clock.now();
            let claim = Claim {
                staff,
                key_hash: key_hash.clone(),
                started_at: now,
            };
            if rows::claim(&self.db, &owner, &key_hash, &request_hash, now).await? {
                return Ok(Begun::Run(claim));
            }
            let Some(row) = rows::get(&self.db, &owner, &key_hash).await? else {
                // Released between the two statements: claim again, within
                // the same deadline (a key released over and over by
                // failing calls must not keep this one spinning).
                if tokio::time::Instant::now() >= deadline {
                    return Err(IdempotencyError::InFlight);
                }
                continue;
            };
            let stale = row.started_at < now - KEPT_SECS
                || (row.response.is_none() && row.started_at < now - ABANDONED_SECS);
            if stale
                && rows::take_over(
                    &self.db,
                    &owner,
                    &key_hash,
                    &request_hash,
                    now,
                    now - ABANDONED_SECS,
                    now - KEPT_SECS,
                )
                .await?
            {
                return Ok(Begun::Run(claim));
            }
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                row.request_hash.as_slice(),
                request_hash.as_slice(),
            )) {
                return Err(IdempotencyError::Reused);
            }
            if let (Some(status), Some(sealed)) = (row.status, row.response) {
                let body = self
                    .vault
                    .open_secret(Purpose::IdempotentResponse, &sealed)?;
                return Ok(Begun::Replay {
                    status: u16::try_from(status).unwrap_or(200),
                    body: body.to_vec(),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(IdempotencyError::InFlight);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Records the answer of the call holding `claim`, inside the
    /// transaction that made message `id`. Fails (and so rolls the call
    /// back) if the claim was lost meanwhile.
    pub async fn complete(
        &self,
        tx: &mut Tx,
        claim: &Claim,
        id: MessageId,
        status: u16,
        body: &[u8],
    ) -> Result<(), IdempotencyError> {
        let sealed = self.vault.seal_secret(Purpose::IdempotentResponse, body)?;
        let kept = rows::complete(
            tx,
            &claim.staff.to_string(),
            &claim.key_hash,
            claim.started_at,
            &id.to_string(),
            i64::from(status),
            &sealed,
        )
        .await?;
        if kept {
            Ok(())
        } else {
            Err(IdempotencyError::InFlight)
        }
    }

    /// Lets go of the claim of a call that failed: a retry runs again.
    pub async fn release(&self, claim: Claim) -> Result<(), IdempotencyError> {
        rows::release(
            &self.db,
            &claim.staff.to_string(),
            &claim.key_hash,
            claim.started_at,
        )
        .await?;
        Ok(())
    }

    /// Forgets keys older than [`KEPT_SECS`].
    pub async fn purge(&self) -> Result<u64, IdempotencyError> {
        Ok(rows::purge(&self.db, self.clock.now() - KEPT_SECS).await?)
    }
}
