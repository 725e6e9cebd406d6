//! The audit log: who did what to which message, when, from where.
//!
//! Append-only (database triggers refuse UPDATE and DELETE) and hash-chained:
//! each event's `hash` is an HMAC-SHA256 over its fields and the previous
//! event's hash, under a key derived from the installation secret (itself
//! wrapped by the master key). Changing, removing or inserting a row breaks
//! the chain at that row, and nobody without the master key can re-forge it.
//! Events carry ids only, never customer data.
//!
//! Events are written inside the caller's transaction ([`AuditLog::record`]),
//! so an action and its audit event commit together or not at all. So are
//! the webhook events some of them become ([`webhooks`]).

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError};

use hmac::Mac;

use crate::clock::SharedClock;
use crate::paging::{Page, PageStart, rows_to_fetch};
use crate::store::audit as store;
use crate::store::{Backend, Db, Tx};
use crate::vault::{MessageId, Vault};

pub mod webhooks;

/// Events verified per query.
const VERIFY_BATCH: i64 = 1000;
const GENESIS: [u8; 32] = [0; 32];

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The commit this event shared with others failed (each caller gets
    /// the same error).
    #[error("the shared audit commit failed")]
    Shared(#[source] Arc<AuditError>),
    /// The call committing this event's group was cancelled before it
    /// could say whether the group committed.
    #[error("the audit commit was interrupted")]
    Interrupted,
}

/// Who acted. Staff are named by their account id, never their address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// Sealpost itself (expiry, sweeps).
    System,
    /// An operator at the command line.
    Cli,
    Staff(String),
    /// The customer holding a message's link.
    Customer,
    /// Someone not (yet) known, e.g. a sign-in with an unknown address.
    Anonymous,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::System => f.write_str("system"),
            Actor::Cli => f.write_str("cli"),
            Actor::Staff(id) => write!(f, "staff:{id}"),
            Actor::Customer => f.write_str("customer"),
            Actor::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// What happened. The string forms are stable: they are stored and chained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    KeysRotated,
    KeyRetired,
    MessageExported,
    MessageShredded,
    OrphansSwept,
    StaffCreated,
    StaffPasswordReset,
    StaffDisabled,
    SignedIn,
    SignInFailed,
    AuditExported,
    SignedOut,
    TotpEnrolled,
    TotpReset,
    RecoveryCodeUsed,
    /// A new set of recovery codes replaced the old one.
    RecoveryCodesRegenerated,
    /// An account's failed sign-ins from everywhere reached the account-wide
    /// limit (its owner is emailed).
    SignInLimitReached,
    StaffInvited,
    InviteAccepted,
    SetupLinkIssued,
    SettingsChanged,
    MessageSent,
    MessageViewed,
    MessageRevoked,
    ExpiryExtended,
    LinkResent,
    MessageUnlocked,
    AccessDenied,
    ComposeFailed,
    LinkVisited,
    LinkReused,
    CodeSent,
    VerificationFailed,
    Verified,
    MessageLocked,
    Downloaded,
    PickupDone,
    /// A customer's secure answer to a message arrived (sealed).
    ReplyReceived,
    /// An agent sent a document request.
    RequestSent,
    /// A customer submitted the documents a request asked for (sealed).
    RequestSubmitted,
    /// A customer's upload was refused (type, size, scan); nothing kept.
    UploadRefused,
    /// A secure-inbox code was emailed (to an address it does not name).
    InboxCodeSent,
    /// A secure-inbox visitor proved their address.
    InboxVerified,
    /// A secure-inbox upload arrived (sealed), unclaimed.
    InboxReceived,
    /// An agent claimed an unclaimed incoming item.
    IncomingClaimed,
    /// Staff opened an incoming item.
    IncomingOpened,
    /// Staff downloaded a file of an incoming item.
    IncomingDownloaded,
    /// Staff marked an incoming item done (its shred is scheduled).
    IncomingDone,
    /// An incoming item was shredded.
    IncomingShredded,
    /// An outbox email was accepted by the SMTP server (or the dev mailbox).
    MailSent,
    /// An outbox email failed for good (SMTP 5xx, or retries ran out).
    MailFailed,
    /// An API token was created (its id and scopes, never its value).
    TokenCreated,
    /// An API token was revoked.
    TokenRevoked,
    /// A call to `/api/v1` with a valid token: which token, route, status.
    ApiCall,
    /// An admin (or the command line) created a service account.
    ServiceAccountCreated,
    /// A service account was disabled (its tokens stop working).
    ServiceAccountDisabled,
    /// An admin registered a webhook endpoint (its id, events and whether
    /// it may reach private addresses; never its secret).
    WebhookCreated,
    /// An admin disabled a webhook endpoint.
    WebhookDisabled,
    /// An admin deleted a webhook endpoint and its delivery log.
    WebhookDeleted,
    /// An admin queued a webhook delivery again.
    WebhookRedelivered,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::KeysRotated => "keys.rotated",
            Action::KeyRetired => "keys.retired",
            Action::MessageExported => "message.exported",
            Action::MessageShredded => "message.shredded",
            Action::OrphansSwept => "blobs.swept",
            Action::StaffCreated => "staff.created",
            Action::StaffPasswordReset => "staff.password_reset",
            Action::StaffDisabled => "staff.disabled",
            Action::SignedIn => "staff.signed_in",
            Action::SignInFailed => "staff.sign_in_failed",
            Action::AuditExported => "audit.exported",
            Action::SignedOut => "staff.signed_out",
            Action::TotpEnrolled => "staff.totp_enrolled",
            Action::TotpReset => "staff.totp_reset",
            Action::RecoveryCodeUsed => "staff.recovery_code_used",
            Action::RecoveryCodesRegenerated => "staff.recovery_codes_regenerated",
            Action::SignInLimitReached => "staff.sign_in_limit_reached",
            Action::StaffInvited => "staff.invited",
            Action::InviteAccepted => "staff.invite_accepted",
            Action::SetupLinkIssued => "setup.link_issued",
            Action::SettingsChanged => "settings.changed",
            Action::MessageSent => "message.sent",
            Action::MessageViewed => "message.viewed",
            Action::MessageRevoked => "message.revoked",
            Action::ExpiryExtended => "message.expiry_extended",
            Action::LinkResent => "message.link_resent",
            Action::MessageUnlocked => "message.unlocked",
            Action::AccessDenied => "message.access_denied",
            Action::ComposeFailed => "message.compose_failed",
            Action::LinkVisited => "pickup.link_visited",
            Action::LinkReused => "pickup.link_reused",
            Action::CodeSent => "pickup.code_sent",
            Action::VerificationFailed => "pickup.verification_failed",
            Action::Verified => "pickup.verified",
            Action::MessageLocked => "pickup.locked",
            Action::Downloaded => "pickup.downloaded",
            Action::PickupDone => "pickup.done",
            Action::ReplyReceived => "incoming.reply_received",
            Action::RequestSent => "request.sent",
            Action::RequestSubmitted => "incoming.request_submitted",
            Action::UploadRefused => "incoming.upload_refused",
            Action::InboxCodeSent => "inbox.code_sent",
            Action::InboxVerified => "inbox.verified",
            Action::InboxReceived => "incoming.inbox_received",
            Action::IncomingClaimed => "incoming.claimed",
            Action::IncomingOpened => "incoming.opened",
            Action::IncomingDownloaded => "incoming.downloaded",
            Action::IncomingDone => "incoming.done",
            Action::IncomingShredded => "incoming.shredded",
            Action::MailSent => "mail.sent",
            Action::MailFailed => "mail.failed",
            Action::TokenCreated => "token.created",
            Action::TokenRevoked => "token.revoked",
            Action::ApiCall => "api.call",
            Action::ServiceAccountCreated => "service_account.created",
            Action::ServiceAccountDisabled => "service_account.disabled",
            Action::WebhookCreated => "webhook.created",
            Action::WebhookDisabled => "webhook.disabled",
            Action::WebhookDeleted => "webhook.deleted",
            Action::WebhookRedelivered => "webhook.redelivered",
        }
    }
}

/// One event to record. `detail` is a small JSON object of ids and counts.
#[derive(Clone, Debug)]
pub struct Event {
    pub actor: Actor,
    pub action: Action,
    pub message_id: Option<MessageId>,
    pub ip: Option<IpAddr>,
    pub detail: Option<serde_json::Value>,
}

impl Event {
    pub fn new(actor: Actor, action: Action) -> Self {
        Event {
            actor,
            action,
            message_id: None,
            ip: None,
            detail: None,
        }
    }

    pub fn message(mut self, id: MessageId) -> Self {
        self.message_id = Some(id);
        self
    }

    /// The client address, when there is one (`None`: e.g. the command line).
    pub fn ip(mut self, ip: impl Into<Option<IpAddr>>) -> Self {
        self.ip = ip.into();
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// File formats of an audit export (the CLI's and the admin page's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Json,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(ExportFormat::Csv),
            "json" => Some(ExportFormat::Json),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Json => "application/json",
        }
    }
}

/// Writes `events` as CSV (with a header row, even when empty) or as a
/// pretty-printed JSON array followed by a newline.
pub fn write_export<W: std::io::Write>(
    mut out: W,
    format: ExportFormat,
    events: &[StoredEvent],
) -> std::io::Result<()> {
    match format {
        ExportFormat::Json => {
            serde_json::to_writer_pretty(&mut out, events)?;
            out.write_all(b"\n")?;
            out.flush()
        }
        ExportFormat::Csv => {
            let mut csv = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(out);
            csv.write_record(["id", "at", "actor", "action", "message_id", "ip", "detail"])?;
            for event in events {
                csv.serialize(event)?;
            }
            csv.flush()
        }
    }
}

/// Why a day range for an export was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DayRangeError {
    /// The text is not a `YYYY-MM-DD` day.
    #[error("{0:?} is not a date like 2026-11-29")]
    NotADay(String),
    /// The last day comes before the first.
    #[error("the last day must not be before the first")]
    Backwards,
}

/// `[from, to)` in unix seconds for the UTC days `from` to `to`, both
/// included.
pub fn day_range(from: &str, to: &str) -> Result<(i64, i64), DayRangeError> {
    let from = day_start(from)?;
    let to = day_start(to)? + 24 * 3600;
    if to <= from {
        return Err(DayRangeError::Backwards);
    }
    Ok((from, to))
}

/// Midnight UTC of a `YYYY-MM-DD` day, in unix seconds.
fn day_start(day: &str) -> Result<i64, DayRangeError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(day.trim(), &format)
        .map_err(|_| DayRangeError::NotADay(day.to_owned()))?;
    Ok(date.midnight().assume_utc().unix_timestamp())
}

pub use crate::store::audit::StoredEvent;

fn stored_event(event: &Event, id: i64, at: i64) -> StoredEvent {
    StoredEvent {
        id,
        at,
        actor: event.actor.to_string(),
        action: event.action.as_str().to_owned(),
        message_id: event.message_id.map(|m| m.to_string()),
        ip: event.ip.map(|ip| ip.to_string()),
        detail: event.detail.as_ref().map(|d| d.to_string()),
    }
}

/// The outcome of [`AuditLog::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    Intact {
        events: u64,
    },
    /// The first event that does not check out, and why.
    Broken {
        id: i64,
        reason: &'static str,
    },
}

#[derive(Clone)]
pub struct AuditLog {
    vault: Vault,
    clock: SharedClock,
    group: Arc<Group>,
}

/// Most events one shared commit of [`AuditLog::record_now`] takes.
const GROUP_MAX: usize = 256;

type Answer = tokio::sync::oneshot::Sender<Result<i64, Arc<AuditError>>>;

/// Events of [`AuditLog::record_now`] waiting for a commit, and the right
/// to make one.
#[derive(Default)]
struct Group {
    waiting: std::sync::Mutex<Vec<(Event, Answer)>>,
    writer: tokio::sync::Mutex<()>,
    /// SQLite: the chain's head as this process last appended it, so the
    /// next append is one statement that checks it (see [`AuditLog::record`]).
    head: std::sync::Mutex<Option<(i64, Vec<u8>)>>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditLog { .. }")
    }
}

impl AuditLog {
    pub fn new(vault: Vault, clock: SharedClock) -> Self {
        AuditLog {
            vault,
            clock,
            group: Arc::default(),
        }
    }

    fn db(&self) -> &Db {
        self.vault.db()
    }

    /// Appends `event` inside `tx`. Appends are serialised (SQLite's write
    /// lock; a table lock on PostgreSQL) so the chain never forks.
    ///
    /// Call it last in a transaction, after every other write: a
    /// transaction holding the append lock must not then wait for a row
    /// another transaction has locked, or the two deadlock on PostgreSQL
    /// (that one waits for this lock to append its own event).
    pub async fn record(&self, tx: &mut Tx, event: &Event) -> Result<i64, AuditError> {
        let at = self.clock.now();
        // SQLite: append after the head this process knows, on condition
        // that it still is the head (another process, or a rolled-back
        // append of this one, may have moved it); otherwise read it.
        let known = match self.db().backend() {
            Backend::Sqlite => self.head().clone(),
            Backend::Postgres => None,
        };
        if let Some((head_id, prev)) = known {
            let stored = stored_event(event, head_id + 1, at);
            let hash = self.chain(&stored, &prev);
            if store::append_after_head(tx, &stored, &prev, &hash).await? {
                return self.appended(tx, event, stored, hash).await;
            }
        }
        let head = store::lock_head(tx, self.db().backend()).await?;
        let (id, prev) = match head {
            Some(head) => (head.id + 1, head.hash),
            None => (1, GENESIS.to_vec()),
        };
        let stored = stored_event(event, id, at);
        let hash = self.chain(&stored, &prev);
        store::append(tx, &stored, &prev, &hash).await?;
        self.appended(tx, event, stored, hash).await
    }

    async fn appended(
        &self,
        tx: &mut Tx,
        event: &Event,
        stored: StoredEvent,
        hash: [u8; 32],
    ) -> Result<i64, AuditError> {
        *self.head() = Some((stored.id, hash.to_vec()));
        // In the audit log's order: the event id orders webhooks too.
        webhooks::queue(tx, event, stored.id, stored.at).await?;
        Ok(stored.id)
    }

    fn head(&self) -> std::sync::MutexGuard<'_, Option<(i64, Vec<u8>)>> {
        // A cached value checked at each use: nothing a panic could break.
        self.group
            .head
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `event` and returns once it is committed. Events recorded
    /// this way at the same time share one transaction (group commit): the
    /// caller that gets to write commits everything waiting, so a burst of
    /// API calls costs one append lock and one fsync per group, not per
    /// call. Each caller still returns only after its own event committed.
    pub async fn record_now(&self, event: &Event) -> Result<i64, AuditError> {
        let (answer, mut outcome) = tokio::sync::oneshot::channel();
        self.waiting().push((event.clone(), answer));
        loop {
            let _writer = self.group.writer.lock().await;
            match outcome.try_recv() {
                Ok(result) => return result.map_err(AuditError::Shared),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Err(AuditError::Interrupted);
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            let group: Vec<(Event, Answer)> = {
                let mut waiting = self.waiting();
                let take = waiting.len().min(GROUP_MAX);
                waiting.drain(..take).collect()
            };
            // The commit runs as a task of its own: the others in the group
            // wait on it, so a caller that goes away (a client hanging up
            // cancels its request) must not cancel it.
            let log = self.clone();
            let commit = tokio::spawn(async move {
                let result = log.commit_group(&group).await.map_err(Arc::new);
                for (i, (_, answer)) in group.into_iter().enumerate() {
                    // A caller that stopped waiting still had its event recorded.
                    let _ = answer.send(match &result {
                        Ok(ids) => ids.get(i).copied().ok_or(Arc::new(AuditError::Interrupted)),
                        Err(e) => Err(e.clone()),
                    });
                }
            });
            // A panicked commit dropped its answers: each caller sees Interrupted.
            let _ = commit.await;
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<(Event, Answer)>> {
        // The list holds no invariant a panic could break mid-way.
        self.group
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn commit_group(&self, group: &[(Event, Answer)]) -> Result<Vec<i64>, AuditError> {
        let mut tx = self.db().begin().await?;
        let mut ids = Vec::with_capacity(group.len());
        for (event, _) in group {
            ids.push(self.record(&mut tx, event).await?);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Checks the whole chain, oldest first, and reports the first event
    /// that was changed, removed or inserted.
    pub async fn verify(&self) -> Result<Verification, AuditError> {
        let mut prev = GENESIS.to_vec();
        let mut expected = 1i64;
        loop {
            let rows = store::chain_from(self.db(), expected, VERIFY_BATCH).await?;
            let batch = rows.len();
            for row in rows {
                let store::ChainedEvent {
                    event,
                    prev_hash,
                    hash,
                } = row;
                let broken = |reason| Verification::Broken {
                    id: event.id,
                    reason,
                };
                if event.id != expected {
                    return Ok(broken("events before this one are missing"));
                }
                if prev_hash != prev {
                    return Ok(broken("does not follow the event before it"));
                }
                if !bool::from(subtle::ConstantTimeEq::ct_eq(
                    &self.chain(&event, &prev)[..],
                    &hash[..],
                )) {
                    return Ok(broken("its contents were changed"));
                }
                prev = hash;
                expected += 1;
            }
            if i64::try_from(batch).unwrap_or(0) < VERIFY_BATCH {
                let events = u64::try_from(expected - 1).unwrap_or(0);
                return Ok(Verification::Intact { events });
            }
        }
    }

    /// Events in `[from, to)` (unix seconds), oldest first.
    pub async fn events_between(&self, from: i64, to: i64) -> Result<Vec<StoredEvent>, AuditError> {
        Ok(store::between(self.db(), from, to).await?)
    }

    /// A page of the log, newest first (the admin's audit page).
    pub async fn page(
        &self,
        start: Option<&PageStart<i64>>,
        limit: usize,
    ) -> Result<Page<StoredEvent, i64>, AuditError> {
        let from = start.map(|s| s.keyed(|id| *id));
        let rows = store::page(self.db(), from, rows_to_fetch(limit)).await?;
        Ok(Page::from_rows(rows, limit, start, |e| e.id))
    }

    /// A message's events in order: its timeline on the sender's page.
    pub async fn events_for_message(&self, id: MessageId) -> Result<Vec<StoredEvent>, AuditError> {
        Ok(store::for_message(self.db(), &id.to_string()).await?)
    }

    /// HMAC over an unambiguous encoding of the event and its predecessor.
    fn chain(&self, e: &StoredEvent, prev: &[u8]) -> [u8; 32] {
        let mut mac = self.vault.audit_mac();
        mac.update(&e.id.to_be_bytes());
        mac.update(&e.at.to_be_bytes());
        for field in [
            Some(e.actor.as_str()),
            Some(e.action.as_str()),
            e.message_id.as_deref(),
            e.ip.as_deref(),
            e.detail.as_deref(),
        ] {
            match field {
                None => mac.update(&[0]),
                Some(s) => {
                    mac.update(&[1]);
                    mac.update(&(s.len() as u64).to_be_bytes());
                    mac.update(s.as_bytes());
                }
            }
        }
        mac.update(&(prev.len() as u64).to_be_bytes());
        mac.update(prev);
        mac.finalize().into_bytes().into()
    }
}
