//! A sent message as staff track it: who sent it, until when it can be
//! picked up, how the customer verifies, and where it stands. Everything
//! here is ids, times and states; the customer's data stays in the vault.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use secrecy::SecretString;

use crate::audit::{Action, Actor, AuditLog, Event};
use crate::clock::SharedClock;
use crate::ids::StaffId;
use crate::paging;
use crate::settings::Method;
use crate::store::deliveries::{self as rows, DeliveryRow, StatusFilter};
use crate::store::{Db, Tx, outbox, pickup_codes};
use crate::vault::{MessageId, Purpose, Vault, VaultError};

mod visits;

/// Where a message stands, as the sender sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Queued,
    Emailed,
    DeliveryFailed,
    LinkVisited,
    Verified,
    Downloaded,
    /// A document request's files arrived.
    Submitted,
    Expired,
    Revoked,
    Locked,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Queued,
        Status::Emailed,
        Status::DeliveryFailed,
        Status::LinkVisited,
        Status::Verified,
        Status::Downloaded,
        Status::Submitted,
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
            Status::Submitted => "submitted",
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
            Status::Submitted => "Documents received",
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
        crate::text::by_name(&Status::ALL, Status::as_str, s)
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
    /// The message is no longer live (expired or revoked): the action
    /// needs a state it left for good.
    #[error("{0}")]
    NotLive(&'static str),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("{0}")]
    Audit(#[from] crate::audit::AuditError),
    /// A batch of first visits failed to commit; every visitor in it
    /// gets the one error.
    #[error("recording a first visit failed")]
    Visit(#[source] Arc<DeliveryError>),
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
    /// Whether the customer may answer securely.
    pub allow_reply: bool,
    /// The first message of the conversation this one belongs to (itself
    /// when it started one).
    pub conversation_id: MessageId,
    /// Answers received so far.
    pub replies: i64,
    /// A document request (see [`crate::requests`]) rather than a message.
    pub is_request: bool,
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
    pub allow_reply: bool,
    /// `None` starts a conversation; an agent's answer continues one.
    pub conversation_id: Option<MessageId>,
    pub is_request: bool,
}

/// Answers a customer may send to one message: each is a sealed message
/// of its own and an alert to the sender, so they are bounded; the agent's
/// answer brings a new allowance.
pub const MAX_REPLIES: i64 = 10;

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
    /// Where the page starts; `None` for the newest.
    pub from: Option<PageStart>,
    pub limit: i64,
}

/// A row's place in the sent list (see [`crate::ids::Cursor`]).
pub use crate::ids::Cursor;

/// Where a sent-list page starts: after (older than) or before (newer
/// than) a cursor's row.
pub type PageStart = paging::PageStart<Cursor>;
/// One page of the sent list.
pub type Page = paging::Page<Delivery, Cursor>;

#[derive(Clone)]
pub struct Deliveries {
    db: Db,
    vault: Vault,
    audit: AuditLog,
    clock: SharedClock,
    /// Started on first use, inside the server's runtime.
    visits: Arc<OnceLock<visits::VisitWriter>>,
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
            visits: Arc::default(),
        }
    }

    /// Records a new delivery in the transaction that commits the message,
    /// with its recipient address (sealed) and a fresh pickup link, whose
    /// URL it returns. One statement: a send holds the write lock for it.
    pub async fn insert(
        &self,
        tx: &mut Tx,
        new: &NewDelivery,
        recipient: &str,
        public_url: &str,
    ) -> Result<SecretString, DeliveryError> {
        let now = self.clock.now();
        let methods = Method::join(&new.methods);
        let message_id = new.message_id.to_string();
        let sender_id = new.sender.to_string();
        let conversation_id = new.conversation_id.unwrap_or(new.message_id).to_string();
        let sealed_recipient = self
            .vault
            .seal_secret(Purpose::DeliveryRecipient, recipient.as_bytes())?;
        let (url, link_hash) = self.new_link(public_url);
        rows::insert(
            tx,
            &rows::NewRow {
                message_id: &message_id,
                sender_id: &sender_id,
                created_at: now,
                expires_at: new.expires_at,
                verification: &methods,
                access_code_hash: new.access_code_hash.as_deref(),
                known_fact_hash: new.known_fact_hash.as_deref(),
                shred_after_pickup: new.shred_after_pickup,
                status: Status::Queued.as_str(),
                allow_reply: new.allow_reply,
                conversation_id: &conversation_id,
                is_request: new.is_request,
                sealed_recipient: &sealed_recipient,
                link_hash: &link_hash,
            },
        )
        .await?;
        Ok(url)
    }

    /// Counts one answer from the customer in the transaction that stores
    /// it: false when the message does not allow one (any more), or had
    /// [`MAX_REPLIES`] already.
    pub async fn take_reply(&self, tx: &mut Tx, id: MessageId) -> Result<bool, DeliveryError> {
        Ok(rows::take_reply(tx, &id.to_string(), MAX_REPLIES).await?)
    }

    /// The messages of a conversation, oldest first.
    pub async fn conversation(&self, id: MessageId) -> Result<Vec<Delivery>, DeliveryError> {
        rows::in_conversation(&self.db, &id.to_string())
            .await?
            .into_iter()
            .map(Delivery::try_from)
            .collect()
    }

    pub async fn get(&self, id: MessageId) -> Result<Delivery, DeliveryError> {
        rows::get(&self.db, &id.to_string())
            .await?
            .ok_or(DeliveryError::NotFound)?
            .try_into()
    }

    /// One page, newest first, with the cursors of the pages around it.
    pub async fn list(&self, q: &ListQuery) -> Result<Page, DeliveryError> {
        let sender = q.sender.map(|s| s.to_string());
        let status = q.status.map(|s| match s {
            Status::Revoked => StatusFilter::Revoked,
            Status::Expired => StatusFilter::Expired,
            Status::Locked => StatusFilter::Locked,
            progress => StatusFilter::Progress(progress.as_str()),
        });
        let start = q.from.as_ref().map(PageStart::parts);
        let key_id = start.and_then(|(c, _)| c).map(|c| (c.at, c.id.to_string()));
        let filter = rows::ListFilter {
            sender_id: sender.as_deref(),
            recipient_index: q.recipient_index.as_deref(),
            status,
            from: start
                .map(|(_, newer)| (key_id.as_ref().map(|(at, id)| (*at, id.as_str())), newer)),
            limit: q.limit + 1,
        };
        let found = rows::list(&self.db, &filter, self.clock.now()).await?;
        let items = found
            .into_iter()
            .map(Delivery::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let limit = usize::try_from(q.limit).unwrap_or(0);
        Ok(Page::from_rows(
            items,
            limit,
            q.from.as_ref(),
            |d: &Delivery| Cursor {
                at: d.created_at,
                id: d.message_id,
            },
        ))
    }

    /// Live messages locked after failed verifications (one sender's, or
    /// everyone's): the sent list's alert.
    pub async fn count_locked(&self, sender: Option<StaffId>) -> Result<i64, DeliveryError> {
        let sender = sender.map(|s| s.to_string());
        Ok(rows::count_locked(&self.db, sender.as_deref(), self.clock.now()).await?)
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
        let key = id.to_string();
        let mut tx = self.db.begin().await?;
        // The outbox rows first: the mail worker locks a row there before
        // the delivery's, and the same order here keeps PostgreSQL from
        // deadlocking the two. (A loser's cancel rolls back with it.)
        let mut cancelled_mail = outbox::cancel_for_message(&mut tx, &key, now).await?;
        let won = match cause {
            ShredCause::Revoked { .. } => rows::claim_revoke(&mut tx, &key, now).await?,
            ShredCause::Expired | ShredCause::PickedUp => {
                rows::claim_shred(&mut tx, &key, now).await?
            }
        };
        if !won {
            return Ok(false);
        }
        let blobs = self.erase_in(&mut tx, id, now).await?;
        // Again, now that the claim has waited out any request that queued
        // mail for the message (see `Outbox::enqueue`) meanwhile.
        cancelled_mail += outbox::cancel_for_message(&mut tx, &key, now).await?;
        // Ids and counts only: what was cancelled, never what it held.
        let event = match cause {
            ShredCause::Revoked { actor, ip } => Event::new(actor, Action::MessageRevoked)
                .ip(ip)
                .detail(serde_json::json!({ "cancelled_mail": cancelled_mail })),
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
        let key = id.to_string();
        rows::erase(tx, &key, now).await?;
        pickup_codes::delete_for_message(tx, &key).await?;
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
        let changed = rows::extend(&mut tx, &id.to_string(), expires_at, now).await?;
        if !changed {
            return Err(DeliveryError::NotLive(
                "This message has expired or was revoked; it cannot be extended.",
            ));
        }
        let event = Event::new(actor, Action::ExpiryExtended)
            .message(id)
            .detail(serde_json::json!({ "expires_at": expires_at }));
        self.audit.record(&mut tx, &event.ip(ip)).await?;
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
        let changed =
            rows::next_generation(tx, &id.to_string(), Status::Queued.as_str(), now).await?;
        if !changed {
            return Err(DeliveryError::NotLive(
                "This message has expired or was revoked; send a new one instead.",
            ));
        }
        let url = self.issue_link(tx, id, public_url).await?;
        self.audit
            .record(
                tx,
                &Event::new(actor, Action::LinkResent).message(id).ip(ip),
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
        let (url, hash) = self.new_link(public_url);
        rows::set_link_hash(tx, &id.to_string(), &hash).await?;
        Ok(url)
    }

    /// A fresh pickup link: its URL, and the keyed hash to store.
    fn new_link(&self, public_url: &str) -> (SecretString, Vec<u8>) {
        use base64::Engine;
        use rand::RngExt;
        let secret = zeroize::Zeroizing::new(rand::rng().random::<[u8; 32]>());
        let token = zeroize::Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&secret[..]),
        );
        let url = SecretString::from(format!(
            "{}/p/{}",
            public_url.trim_end_matches('/'),
            token.as_str()
        ));
        (url, self.link_hash(&token))
    }

    /// The stored form of a link token.
    pub fn link_hash(&self, token: &str) -> Vec<u8> {
        self.vault.keyed_hash(Purpose::PickupLink, token.as_bytes())
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
        rows::find_by_link_hash(&self.db, &self.link_hash(token))
            .await?
            .map(Delivery::try_from)
            .transpose()
    }

    /// The recipient address of a loaded delivery.
    pub fn open_recipient(&self, d: &Delivery) -> Result<SecretString, DeliveryError> {
        let sealed = d
            .sealed_recipient
            .as_deref()
            .ok_or(DeliveryError::NotFound)?;
        let plain = self.vault.open_secret(Purpose::DeliveryRecipient, sealed)?;
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
        let changed = rows::unlock(&mut tx, &id.to_string()).await?;
        if changed {
            self.audit
                .record(
                    &mut tx,
                    &Event::new(actor, Action::MessageUnlocked)
                        .message(id)
                        .ip(ip),
                )
                .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Marks a lockout (the customer side calls this after too many failures).
    pub async fn lock(&self, tx: &mut Tx, id: MessageId) -> Result<(), DeliveryError> {
        Ok(rows::lock(tx, &id.to_string(), self.clock.now()).await?)
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
        let row = rows::record_failure(tx, &id.to_string(), lock_after, self.clock.now()).await?;
        // The row was unlocked before the update, so a lock seen now is ours.
        Ok(row.map(|r| Failure {
            failures: r.failures,
            locked: r.locked_at.is_some(),
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
        advance_in(tx, id, to, self.clock.now()).await
    }

    /// Notes a live link's first visit for the sender's timeline (status
    /// "link visited" and its audit event, once per message). Concurrent
    /// visits are written together ([`visits`]); this returns once this
    /// one is committed.
    pub async fn note_first_visit(
        &self,
        id: MessageId,
        agent: &'static str,
    ) -> Result<(), DeliveryError> {
        let writer = self.visits.get_or_init(|| {
            visits::VisitWriter::start(self.db.clone(), self.audit.clone(), self.clock.clone())
        });
        writer.note(id, agent).await
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
        Ok(rows::set_status(tx, &id.to_string(), status.as_str(), self.clock.now()).await?)
    }
}

/// How often the expiry job runs (on every instance: each message is
/// claimed by compare-and-set, so passes never collide).
pub const EXPIRY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Messages one expiry pass takes on.
const EXPIRY_BATCH: i64 = 100;

impl Deliveries {
    /// One expiry pass: shreds expired messages, and "shred after first
    /// pickup" ones once their grace after verification has passed.
    /// Returns how many it shredded.
    pub async fn shred_due(&self) -> Result<usize, DeliveryError> {
        let now = self.clock.now();
        let due = rows::due_for_shred(&self.db, now, EXPIRY_BATCH).await?;
        let mut done = 0;
        for row in due {
            let Ok(id) = row.message_id.parse::<MessageId>() else {
                continue;
            };
            let cause = if row.expires_at <= now {
                ShredCause::Expired
            } else {
                ShredCause::PickedUp
            };
            // The same transaction as a revoke: claim, erase, audit, commit.
            if self.shred(id, cause).await? {
                done += 1;
            }
        }
        Ok(done)
    }
}

/// Planner statistics are refreshed about hourly (SQLite's `PRAGMA
/// optimize` re-analyses only tables that changed a lot, so it is cheap):
/// without them an address search can pick the wrong index as data grows.
const OPTIMIZE_EVERY_PASSES: u64 = 60;

/// Runs [`Deliveries::shred_due`] every [`EXPIRY_EVERY`] until `stop` is
/// cancelled (between passes, never inside one).
pub async fn run_expiry(deliveries: Deliveries, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(EXPIRY_EVERY);
    let mut passes = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = deliveries.shred_due().await {
            tracing::warn!(error = %e, "expiry pass failed; will retry");
        }
        passes += 1;
        if passes.is_multiple_of(OPTIMIZE_EVERY_PASSES)
            && let Err(e) = deliveries.db.optimize().await
        {
            tracing::warn!(error = %e, "refreshing planner statistics failed");
        }
    }
}

/// The expiry job's event: why it shredded, and how much mail it stopped.
fn shredded_event(reason: &str, cancelled_mail: u64) -> Event {
    Event::new(Actor::System, Action::MessageShredded).detail(serde_json::json!({
        "reason": reason,
        "cancelled_mail": cancelled_mail,
    }))
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = DeliveryError;

    fn try_from(row: DeliveryRow) -> Result<Delivery, DeliveryError> {
        let message_id: MessageId = row
            .message_id
            .parse()
            .map_err(|_| DeliveryError::Invalid("bad message id"))?;
        Ok(Delivery {
            message_id,
            sender: StaffId::parse(&row.sender_id)
                .ok_or(DeliveryError::Invalid("bad sender id"))?,
            created_at: row.created_at,
            expires_at: row.expires_at,
            methods: parse_methods(&row.verification),
            shred_after_pickup: row.shred_after_pickup != 0,
            stored_status: row.status.parse()?,
            status_at: row.status_at,
            locked_at: row.locked_at,
            revoked_at: row.revoked_at,
            link_generation: row.link_generation,
            link_consumed_at: row.link_consumed_at,
            failures: row.failures,
            shred_at: row.shred_at,
            shredded_at: row.shredded_at,
            sealed_recipient: row.sealed_recipient,
            allow_reply: row.allow_reply != 0,
            conversation_id: match row.conversation_id {
                Some(c) => c
                    .parse()
                    .map_err(|_| DeliveryError::Invalid("bad conversation id"))?,
                None => message_id,
            },
            replies: row.replies,
            is_request: row.is_request != 0,
        })
    }
}

/// [`Deliveries::advance`] with the time given: moves a message forward to
/// `to` if it stands at an earlier progress state.
async fn advance_in(
    tx: &mut Tx,
    id: MessageId,
    to: Status,
    now: i64,
) -> Result<bool, DeliveryError> {
    // The progress states, in the order `ALL` lists them.
    let order: Vec<Status> = Status::ALL
        .into_iter()
        .filter(|s| s.is_progress())
        .collect();
    let Some(rank) = order.iter().position(|s| *s == to) else {
        return Err(DeliveryError::Invalid("not a progress state"));
    };
    let earlier: Vec<&str> = order[..rank].iter().map(|s| s.as_str()).collect();
    if earlier.is_empty() {
        return Ok(false);
    }
    Ok(rows::set_status_from(tx, &id.to_string(), to.as_str(), &earlier, now).await?)
}

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
