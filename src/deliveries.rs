//! A sent message as staff track it: who sent it, until when it can be
//! picked up, how the customer verifies, and where it stands. Everything
//! here is ids, times and states; the customer's data stays in the vault.

use std::fmt;
use std::str::FromStr;

use secrecy::SecretString;
use sqlx::Row;

use crate::audit::{Action, Actor, AuditLog, Event};
use crate::clock::SharedClock;
use crate::db::{Db, NativePool, Tx};
use crate::settings::Method;
use crate::staff::StaffId;
use crate::vault::{MessageId, Vault, VaultError};

/// Where a message stands, as the sender sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Queued,
    Emailed,
    DeliveryFailed,
    LinkVisited,
    Verified,
    Downloaded,
    Expired,
    Revoked,
    Locked,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Queued,
        Status::Emailed,
        Status::DeliveryFailed,
        Status::LinkVisited,
        Status::Verified,
        Status::Downloaded,
        Status::Expired,
        Status::Revoked,
        Status::Locked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Emailed => "emailed",
            Status::DeliveryFailed => "delivery_failed",
            Status::LinkVisited => "link_visited",
            Status::Verified => "verified",
            Status::Downloaded => "downloaded",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
            Status::Locked => "locked",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Status::Queued => "Queued",
            Status::Emailed => "Emailed",
            Status::DeliveryFailed => "Delivery failed",
            Status::LinkVisited => "Link visited",
            Status::Verified => "Verified",
            Status::Downloaded => "Downloaded",
            Status::Expired => "Expired",
            Status::Revoked => "Revoked",
            Status::Locked => "Locked",
        }
    }

    /// States stored in the `status` column (the others are derived from
    /// timestamps so they can never disagree with them).
    fn is_progress(self) -> bool {
        !matches!(self, Status::Expired | Status::Revoked | Status::Locked)
    }
}

impl FromStr for Status {
    type Err = DeliveryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(DeliveryError::Invalid("unknown status"))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no such message")]
    NotFound,
    #[error("{0}")]
    Invalid(&'static str),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("{0}")]
    Audit(#[from] crate::audit::AuditError),
}

#[derive(Clone, Debug)]
pub struct Delivery {
    pub message_id: MessageId,
    pub sender: StaffId,
    pub created_at: i64,
    pub expires_at: i64,
    pub methods: Vec<Method>,
    pub shred_after_pickup: bool,
    pub stored_status: Status,
    pub status_at: i64,
    pub locked_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub link_generation: i64,
    /// When the current link was used for a successful verification.
    pub link_consumed_at: Option<i64>,
    /// Failed verifications in total (across codes and resends).
    pub failures: i64,
    pub shred_at: Option<i64>,
    pub shredded_at: Option<i64>,
    /// The recipient address, sealed (see [`Deliveries::open_recipient`]).
    pub sealed_recipient: Option<Vec<u8>>,
}

impl Delivery {
    pub fn status(&self, now: i64) -> Status {
        if self.revoked_at.is_some() {
            Status::Revoked
        } else if self.expires_at <= now {
            Status::Expired
        } else if self.locked_at.is_some() {
            Status::Locked
        } else {
            self.stored_status
        }
    }

    /// Whether it can still be acted on (not revoked, expired or shredded).
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now && self.shredded_at.is_none()
    }
}

/// A counted failed verification (see [`Deliveries::record_failure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Failures in total, this one included.
    pub failures: i64,
    /// Whether this failure locked the message.
    pub locked: bool,
}

/// The stored method list. One name this build does not know makes the
/// whole list unreadable: empty, which verification refuses (fails closed)
/// rather than checking fewer answers than the sender asked for.
fn parse_methods(stored: &str) -> Vec<Method> {
    stored
        .split(',')
        .map(|m| m.trim().parse::<Method>())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default()
}

/// What compose decided, stored next to the sealed message.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub message_id: MessageId,
    pub sender: StaffId,
    pub expires_at: i64,
    pub methods: Vec<Method>,
    /// argon2id PHC strings; the plain codes are never stored.
    pub access_code_hash: Option<String>,
    pub known_fact_hash: Option<String>,
    pub shred_after_pickup: bool,
}

/// Why a message is shredded: decides which compare-and-set claims it
/// and what the audit log records.
#[derive(Clone, Debug)]
pub enum ShredCause {
    /// Withdrawn by staff (or the command line).
    Revoked {
        actor: Actor,
        ip: Option<std::net::IpAddr>,
    },
    /// Its pickup window ended.
    Expired,
    /// "Shred after first pickup", once the grace after verification passed.
    PickedUp,
}

/// Which messages a list shows.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// `None` for an admin: everyone's messages.
    pub sender: Option<StaffId>,
    pub status: Option<Status>,
    /// Blind index of an exact recipient address.
    pub recipient_index: Option<Vec<u8>>,
    pub offset: i64,
    pub limit: i64,
}

const COLUMNS: &str = "d.message_id, d.sender_id, d.created_at, d.expires_at, d.verification, \
     d.shred_after_pickup, d.status, d.status_at, d.locked_at, d.revoked_at, d.link_generation, \
     d.link_consumed_at, d.failures, d.shred_at, d.shredded_at, d.sealed_recipient";

#[derive(Clone)]
pub struct Deliveries {
    db: Db,
    vault: Vault,
    audit: AuditLog,
    clock: SharedClock,
}

impl fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Deliveries { .. }")
    }
}

impl Deliveries {
    pub fn new(db: Db, vault: Vault, audit: AuditLog, clock: SharedClock) -> Self {
        Deliveries {
            db,
            vault,
            audit,
            clock,
        }
    }

    /// Records a new delivery in the transaction that commits the message.
    pub async fn insert(&self, tx: &mut Tx, new: &NewDelivery) -> Result<(), DeliveryError> {
        let now = self.clock.now();
        let methods = new
            .methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query(
            "INSERT INTO deliveries (message_id, sender_id, created_at, expires_at, verification,
                 access_code_hash, known_fact_hash, shred_after_pickup, status, status_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $3)",
        )
        .bind(new.message_id.to_string())
        .bind(new.sender.to_string())
        .bind(now)
        .bind(new.expires_at)
        .bind(methods)
        .bind(new.access_code_hash.as_deref())
        .bind(new.known_fact_hash.as_deref())
        .bind(i64::from(new.shred_after_pickup))
        .bind(Status::Queued.as_str())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn get(&self, id: MessageId) -> Result<Delivery, DeliveryError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM deliveries d WHERE d.message_id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.db.pool())
        .await?
        .ok_or(DeliveryError::NotFound)?;
        from_row(&row)
    }

    /// Newest first. Returns one page plus whether another follows.
    pub async fn list(&self, q: &ListQuery) -> Result<(Vec<Delivery>, bool), DeliveryError> {
        let now = self.clock.now();
        let mut sql = format!(
            "SELECT {COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE 1 = 1"
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if q.sender.is_some() {
            sql += &format!(" AND d.sender_id = {}", next());
        }
        if q.recipient_index.is_some() {
            sql += &format!(" AND m.recipient_index = {}", next());
        }
        let mut bind_now = false;
        let mut bind_status = false;
        match q.status {
            None => {}
            Some(Status::Revoked) => sql += " AND d.revoked_at IS NOT NULL",
            Some(Status::Expired) => {
                sql += &format!(" AND d.revoked_at IS NULL AND d.expires_at <= {}", next());
                bind_now = true;
            }
            Some(Status::Locked) => {
                sql += &format!(
                    " AND d.revoked_at IS NULL AND d.expires_at > {} AND d.locked_at IS NOT NULL",
                    next()
                );
                bind_now = true;
            }
            Some(_) => {
                sql += &format!(
                    " AND d.revoked_at IS NULL AND d.expires_at > {} AND d.locked_at IS NULL AND d.status = {}",
                    next(),
                    next()
                );
                bind_now = true;
                bind_status = true;
            }
        }
        sql += &format!(
            " ORDER BY d.created_at DESC, d.message_id DESC LIMIT {} OFFSET {}",
            next(),
            next()
        );
        let mut query = sqlx::query(&sql);
        if let Some(sender) = q.sender {
            query = query.bind(sender.to_string());
        }
        if let Some(index) = &q.recipient_index {
            query = query.bind(index.clone());
        }
        if bind_now {
            query = query.bind(now);
        }
        if bind_status {
            let status = q.status.map(|s| s.as_str()).unwrap_or_default();
            query = query.bind(status);
        }
        let rows = query
            .bind(q.limit + 1)
            .bind(q.offset)
            .fetch_all(self.db.pool())
            .await?;
        let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        let more = items.len() as i64 > q.limit;
        items.truncate(usize::try_from(q.limit).unwrap_or(0));
        Ok((items, more))
    }

    /// Live messages locked after failed verifications (one sender's, or
    /// everyone's): the sent list's alert.
    pub async fn count_locked(&self, sender: Option<StaffId>) -> Result<i64, DeliveryError> {
        let live = "locked_at IS NOT NULL AND revoked_at IS NULL AND shredded_at IS NULL AND expires_at > $1";
        let count = match sender {
            Some(sender) => {
                sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM deliveries WHERE {live} AND sender_id = $2"
                ))
                .bind(self.clock.now())
                .bind(sender.to_string())
                .fetch_one(self.db.pool())
                .await?
            }
            None => {
                sqlx::query_scalar(&format!("SELECT COUNT(*) FROM deliveries WHERE {live}"))
                    .bind(self.clock.now())
                    .fetch_one(self.db.pool())
                    .await?
            }
        };
        Ok(count)
    }

    /// Revokes: shreds the message now (in the same transaction as the
    /// status change and its audit event), then deletes the ciphertext.
    /// False if it was already revoked.
    pub async fn revoke(
        &self,
        actor: Actor,
        id: MessageId,
        ip: Option<std::net::IpAddr>,
    ) -> Result<bool, DeliveryError> {
        self.shred(id, ShredCause::Revoked { actor, ip }).await
    }

    /// The one shred transaction every path goes through (revoke, expiry,
    /// shred after pickup): claims the message by compare-and-set (so of
    /// concurrent shredders one does the work), erases everything that
    /// identifies the customer or the content, so that once it commits
    /// neither the master key nor the installation secret recovers any of
    /// it (the message's unsent mail and its dev-mailbox copies, then
    /// `erase_in`), records the audit event, commits, then deletes the
    /// ciphertext. False if another shredder (or an earlier revoke) got
    /// there first.
    pub async fn shred(&self, id: MessageId, cause: ShredCause) -> Result<bool, DeliveryError> {
        let now = self.clock.now();
        let claim = match cause {
            ShredCause::Revoked { .. } => {
                "UPDATE deliveries SET revoked_at = $1 WHERE message_id = $2 AND revoked_at IS NULL"
            }
            ShredCause::Expired | ShredCause::PickedUp => {
                "UPDATE deliveries SET shredded_at = $1
                 WHERE message_id = $2 AND shredded_at IS NULL AND revoked_at IS NULL"
            }
        };
        let mut tx = self.db.begin().await?;
        // The outbox rows first: the mail worker locks a row there before
        // the delivery's, and the same order here keeps PostgreSQL from
        // deadlocking the two. (A loser's cancel rolls back with it.)
        let mut cancelled_mail = crate::mail::outbox::cancel_for_message(&mut tx, id, now).await?;
        let won = sqlx::query(claim)
            .bind(now)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !won {
            return Ok(false);
        }
        let blobs = self.erase_in(&mut tx, id, now).await?;
        // Again, now that the claim has waited out any request that queued
        // mail for the message (see `Outbox::enqueue`) meanwhile.
        cancelled_mail += crate::mail::outbox::cancel_for_message(&mut tx, id, now).await?;
        // Ids and counts only: what was cancelled, never what it held.
        let event = match cause {
            ShredCause::Revoked { actor, ip } => with_ip(
                Event::new(actor, Action::MessageRevoked)
                    .detail(serde_json::json!({ "cancelled_mail": cancelled_mail })),
                ip,
            ),
            ShredCause::Expired => shredded_event("expired", cancelled_mail),
            ShredCause::PickedUp => shredded_event("picked_up", cancelled_mail),
        };
        self.audit.record(&mut tx, &event.message(id)).await?;
        tx.commit().await?;
        if let Some(s) = blobs {
            self.vault.delete_shredded_blobs(s).await;
        }
        Ok(true)
    }

    /// The rest of a shred's erasure (the caller has cancelled the
    /// message's mail): the wrapped key, parts, sealed metadata and blind
    /// index (the vault's half); the sealed address, the access-code and
    /// known-fact hashes and the link hash (keyed or salted hashes that
    /// would still confirm a guess with the installation secret); and the
    /// email codes. Ids, times and states stay for the sender and the
    /// audit log. `None` if the vault had already shredded the message.
    async fn erase_in(
        &self,
        tx: &mut Tx,
        id: MessageId,
        now: i64,
    ) -> Result<Option<crate::vault::Shredded>, DeliveryError> {
        let blobs = self.vault.shred_in(tx, id).await?;
        sqlx::query(
            "UPDATE deliveries SET sealed_recipient = NULL, access_code_hash = NULL,
                 known_fact_hash = NULL, link_hash = NULL, shredded_at = COALESCE(shredded_at, $1)
             WHERE message_id = $2",
        )
        .bind(now)
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM pickup_codes WHERE message_id = $1")
            .bind(id.to_string())
            .execute(&mut **tx)
            .await?;
        Ok(blobs)
    }

    /// Moves the expiry to `expires_at` (must be in the future and within
    /// the maximum lifetime from now).
    pub async fn extend(
        &self,
        actor: Actor,
        id: MessageId,
        expires_at: i64,
        ip: Option<std::net::IpAddr>,
    ) -> Result<(), DeliveryError> {
        let now = self.clock.now();
        let max = now + i64::from(crate::settings::MAX_EXPIRY_HOURS) * 3600;
        if expires_at <= now || expires_at > max {
            return Err(DeliveryError::Invalid(
                "The new expiry must be in the future and at most 30 days from now.",
            ));
        }
        let mut tx = self.db.begin().await?;
        let changed = sqlx::query(
            "UPDATE deliveries SET expires_at = $1
             WHERE message_id = $2 AND revoked_at IS NULL AND expires_at > $3",
        )
        .bind(expires_at)
        .bind(id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !changed {
            return Err(DeliveryError::Invalid(
                "This message has expired or was revoked; it cannot be extended.",
            ));
        }
        let event = Event::new(actor, Action::ExpiryExtended)
            .message(id)
            .detail(serde_json::json!({ "expires_at": expires_at }));
        self.audit.record(&mut tx, &with_ip(event, ip)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Issues a new link in the caller's transaction: the link generation
    /// moves on, so any earlier link stops working, and the status goes
    /// back to queued. The caller queues the email in the same transaction.
    pub async fn resend(
        &self,
        tx: &mut Tx,
        actor: Actor,
        id: MessageId,
        ip: Option<std::net::IpAddr>,
        public_url: &str,
    ) -> Result<SecretString, DeliveryError> {
        let now = self.clock.now();
        let changed = sqlx::query(
            "UPDATE deliveries SET link_generation = link_generation + 1, status = $1, status_at = $2
             WHERE message_id = $3 AND revoked_at IS NULL AND shredded_at IS NULL AND expires_at > $2",
        )
        .bind(Status::Queued.as_str())
        .bind(now)
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        if !changed {
            return Err(DeliveryError::Invalid(
                "This message has expired or was revoked; send a new one instead.",
            ));
        }
        let url = self.issue_link(tx, id, public_url).await?;
        self.audit
            .record(
                tx,
                &with_ip(Event::new(actor, Action::LinkResent).message(id), ip),
            )
            .await?;
        Ok(url)
    }

    /// A fresh one-time link for `id`: 256 bits from the OS CSPRNG, of which
    /// only a keyed hash is stored. Returns the full URL (a secret).
    pub async fn issue_link(
        &self,
        tx: &mut Tx,
        id: MessageId,
        public_url: &str,
    ) -> Result<SecretString, DeliveryError> {
        use base64::Engine;
        use rand::RngExt;
        let secret = zeroize::Zeroizing::new(rand::rng().random::<[u8; 32]>());
        let token = zeroize::Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&secret[..]),
        );
        sqlx::query(
            "UPDATE deliveries SET link_hash = $1, link_consumed_at = NULL WHERE message_id = $2",
        )
        .bind(self.link_hash(&token))
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(SecretString::from(format!(
            "{}/p/{}",
            public_url.trim_end_matches('/'),
            token.as_str()
        )))
    }

    /// The stored form of a link token.
    pub fn link_hash(&self, token: &str) -> Vec<u8> {
        self.vault
            .keyed_hash(crate::vault::Purpose::PickupLink, token.as_bytes())
    }

    /// The delivery a link token belongs to, if any.
    pub async fn find_by_link(&self, token: &str) -> Result<Option<Delivery>, DeliveryError> {
        // Tokens are 43 URL-safe characters; anything else cannot match.
        if token.len() != 43
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Ok(None);
        }
        let sql = format!("SELECT {COLUMNS} FROM deliveries d WHERE d.link_hash = $1");
        let hash = self.link_hash(token);
        match self.db.native() {
            NativePool::Sqlite(pool) => sqlx::query(&sql)
                .bind(hash)
                .fetch_optional(pool)
                .await?
                .map(|r| from_sqlite_row(&r))
                .transpose(),
            NativePool::Postgres(pool) => sqlx::query(&sql)
                .bind(hash)
                .fetch_optional(pool)
                .await?
                .map(|r| from_pg_row(&r))
                .transpose(),
        }
    }

    /// Stores the recipient address sealed, for sending codes and alerts
    /// without opening the message.
    pub async fn set_recipient(
        &self,
        tx: &mut Tx,
        id: MessageId,
        address: &str,
    ) -> Result<(), DeliveryError> {
        let sealed = self
            .vault
            .seal_secret(crate::vault::Purpose::DeliveryRecipient, address.as_bytes())?;
        sqlx::query("UPDATE deliveries SET sealed_recipient = $1 WHERE message_id = $2")
            .bind(sealed)
            .bind(id.to_string())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The recipient address of a loaded delivery.
    pub fn open_recipient(&self, d: &Delivery) -> Result<SecretString, DeliveryError> {
        let sealed = d
            .sealed_recipient
            .as_deref()
            .ok_or(DeliveryError::NotFound)?;
        let plain = self
            .vault
            .open_secret(crate::vault::Purpose::DeliveryRecipient, sealed)?;
        Ok(SecretString::from(
            String::from_utf8_lossy(&plain).into_owned(),
        ))
    }

    /// Lifts a lockout after too many failed verifications.
    pub async fn unlock(
        &self,
        actor: Actor,
        id: MessageId,
        ip: Option<std::net::IpAddr>,
    ) -> Result<bool, DeliveryError> {
        let mut tx = self.db.begin().await?;
        let changed = sqlx::query(
            "UPDATE deliveries SET locked_at = NULL, failures = 0 WHERE message_id = $1 AND locked_at IS NOT NULL AND revoked_at IS NULL",
        )
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if changed {
            self.audit
                .record(
                    &mut tx,
                    &with_ip(Event::new(actor, Action::MessageUnlocked).message(id), ip),
                )
                .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Marks a lockout (the customer side calls this after too many failures).
    pub async fn lock(&self, tx: &mut Tx, id: MessageId) -> Result<(), DeliveryError> {
        sqlx::query(
            "UPDATE deliveries SET locked_at = $1 WHERE message_id = $2 AND locked_at IS NULL",
        )
        .bind(self.clock.now())
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Counts one failed verification of a live, unused, unlocked link, and
    /// locks the message with the failure that reaches `lock_after`: one
    /// conditional update, so parallel wrong answers can neither count past
    /// the limit nor lock twice, and an answer that arrives once the link
    /// is used (or locked) counts for nothing. `None` if it did not count.
    pub async fn record_failure(
        &self,
        tx: &mut Tx,
        id: MessageId,
        lock_after: i64,
    ) -> Result<Option<Failure>, DeliveryError> {
        let now = self.clock.now();
        let row: Option<(i64, Option<i64>)> = sqlx::query_as(
            "UPDATE deliveries SET failures = failures + 1,
                 locked_at = CASE WHEN failures + 1 >= $2 THEN $3 ELSE locked_at END
             WHERE message_id = $1 AND failures < $2 AND locked_at IS NULL
               AND link_consumed_at IS NULL AND revoked_at IS NULL AND shredded_at IS NULL
               AND expires_at > $3
             RETURNING failures, locked_at",
        )
        .bind(id.to_string())
        .bind(lock_after)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?;
        // The row was unlocked before the update, so a lock seen now is ours.
        Ok(row.map(|(failures, locked_at)| Failure {
            failures,
            locked: locked_at.is_some(),
        }))
    }

    /// Moves the status forward to `to` unless it is already there or
    /// beyond (progress never goes backwards). True if it moved.
    pub async fn advance(
        &self,
        tx: &mut Tx,
        id: MessageId,
        to: Status,
    ) -> Result<bool, DeliveryError> {
        let order = [
            Status::Queued,
            Status::Emailed,
            Status::DeliveryFailed,
            Status::LinkVisited,
            Status::Verified,
            Status::Downloaded,
        ];
        let Some(rank) = order.iter().position(|s| *s == to) else {
            return Err(DeliveryError::Invalid("not a progress state"));
        };
        let earlier: Vec<&str> = order[..rank].iter().map(|s| s.as_str()).collect();
        if earlier.is_empty() {
            return Ok(false);
        }
        let sql = format!(
            "UPDATE deliveries SET status = $1, status_at = $2 WHERE message_id = $3 AND status IN ({})",
            crate::db::placeholders(4, earlier.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(self.clock.now())
            .bind(id.to_string());
        for e in earlier {
            q = q.bind(e);
        }
        Ok(q.execute(&mut **tx).await?.rows_affected() == 1)
    }

    /// Records progress (emailed, visited, verified, …) in `tx`.
    pub async fn set_status(
        &self,
        tx: &mut Tx,
        id: MessageId,
        status: Status,
    ) -> Result<(), DeliveryError> {
        if !status.is_progress() {
            return Err(DeliveryError::Invalid("not a progress state"));
        }
        sqlx::query("UPDATE deliveries SET status = $1, status_at = $2 WHERE message_id = $3")
            .bind(status.as_str())
            .bind(self.clock.now())
            .bind(id.to_string())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// The expiry job's event: why it shredded, and how much mail it stopped.
fn shredded_event(reason: &str, cancelled_mail: u64) -> Event {
    Event::new(Actor::System, Action::MessageShredded).detail(serde_json::json!({
        "reason": reason,
        "cancelled_mail": cancelled_mail,
    }))
}

fn with_ip(event: Event, ip: Option<std::net::IpAddr>) -> Event {
    match ip {
        Some(ip) => event.ip(ip),
        None => event,
    }
}

/// One row mapping for the `Any` pool and the driver pools (the landing
/// page's lookup uses the latter: it is the hottest query customers cause).
macro_rules! delivery_from_row {
    ($name:ident, $row:ty) => {
        fn $name(row: &$row) -> Result<Delivery, DeliveryError> {
            let id: String = row.try_get(0)?;
            let sender: String = row.try_get(1)?;
            let methods: String = row.try_get(4)?;
            let status: String = row.try_get(6)?;
            Ok(Delivery {
                message_id: id
                    .parse()
                    .map_err(|_| DeliveryError::Invalid("bad message id"))?,
                sender: StaffId::parse(&sender).ok_or(DeliveryError::Invalid("bad sender id"))?,
                created_at: row.try_get(2)?,
                expires_at: row.try_get(3)?,
                methods: parse_methods(&methods),
                shred_after_pickup: row.try_get::<i64, _>(5)? != 0,
                stored_status: status.parse()?,
                status_at: row.try_get(7)?,
                locked_at: row.try_get(8)?,
                revoked_at: row.try_get(9)?,
                link_generation: row.try_get(10)?,
                link_consumed_at: row.try_get(11)?,
                failures: row.try_get(12)?,
                shred_at: row.try_get(13)?,
                shredded_at: row.try_get(14)?,
                sealed_recipient: row.try_get(15)?,
            })
        }
    };
}
delivery_from_row!(from_row, sqlx::any::AnyRow);
delivery_from_row!(from_sqlite_row, sqlx::sqlite::SqliteRow);
delivery_from_row!(from_pg_row, sqlx::postgres::PgRow);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_method_list_is_empty() {
        assert_eq!(
            parse_methods("email_code,access_code"),
            vec![Method::EmailCode, Method::AccessCode]
        );
        for unreadable in ["", ",", "access_code,", "access_code,sms_code", "bogus"] {
            assert!(parse_methods(unreadable).is_empty(), "{unreadable:?}");
        }
    }
}
