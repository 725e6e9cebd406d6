//! What customers send in: a secure reply to a message or a document
//! request's submission (later also a secure-inbox upload). Each item is
//! a sealed vault message of its own, tracked here by ids, times and
//! states; it outlives the message it answers and is shredded a set
//! number of days after an agent marked it done.

use std::fmt;
use std::str::FromStr;

use crate::audit::{Action, Actor, AuditLog, Event};
use crate::clock::SharedClock;
use crate::ids::{Cursor, StaffId};
use crate::paging;
use crate::store::incoming::{self as rows, IncomingRow};
use crate::store::{Db, Tx};
use crate::vault::{MessageId, Vault, VaultError};

/// How an item came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An answer to a message, in its conversation.
    Reply,
    /// The files a document request asked for.
    Request,
    /// An upload to the standing secure inbox (`/send`), unclaimed until an
    /// agent takes it.
    Inbox,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Reply, Kind::Request, Kind::Inbox];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Reply => "reply",
            Kind::Request => "request",
            Kind::Inbox => "inbox",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Reply => "Reply",
            Kind::Request => "Requested documents",
            Kind::Inbox => "Secure inbox upload",
        }
    }
}

impl FromStr for Kind {
    type Err = IncomingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::text::by_name(&Kind::ALL, Kind::as_str, s)
            .ok_or(IncomingError::Invalid("unknown incoming kind"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IncomingError {
    #[error("no such item")]
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

/// An incoming item as staff track it.
#[derive(Clone, Debug)]
pub struct Item {
    pub id: MessageId,
    pub kind: Kind,
    pub conversation_id: Option<MessageId>,
    /// The message a reply answers.
    pub in_reply_to: Option<MessageId>,
    /// The agent it is for; `None` while unclaimed.
    pub owner: Option<StaffId>,
    pub received_at: i64,
    pub read_at: Option<i64>,
    pub done_at: Option<i64>,
    pub shred_at: Option<i64>,
    pub shredded_at: Option<i64>,
}

impl Item {
    /// Where it stands, for lists: unread, read, done or shredded.
    pub fn state(&self) -> &'static str {
        if self.shredded_at.is_some() {
            "shredded"
        } else if self.done_at.is_some() {
            "done"
        } else if self.read_at.is_some() {
            "read"
        } else {
            "unread"
        }
    }

    /// Whether `staff` may see it: its owner, anyone while it is
    /// unclaimed, and administrators.
    pub fn visible_to(&self, staff: StaffId, admin: bool) -> bool {
        admin || self.owner.is_none_or(|o| o == staff)
    }
}

/// A new item, in the transaction that commits its sealed message.
pub struct NewItem {
    pub id: MessageId,
    pub kind: Kind,
    pub conversation_id: Option<MessageId>,
    pub in_reply_to: Option<MessageId>,
    pub owner: Option<StaffId>,
}

/// Which items a list shows.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// `None` for an administrator: everyone's.
    pub visible_to: Option<StaffId>,
    pub unread: bool,
    pub from: Option<PageStart>,
    pub limit: usize,
}

/// Where an inbox page starts.
pub type PageStart = paging::PageStart<Cursor>;
/// One page of the inbox.
pub type Page = paging::Page<Item, Cursor>;

#[derive(Clone)]
pub struct Incoming {
    db: Db,
    vault: Vault,
    audit: AuditLog,
    clock: SharedClock,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Incoming { .. }")
    }
}

/// How often the retention job runs (on every instance: each item is
/// claimed by compare-and-set).
pub const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
const RETENTION_BATCH: i64 = 100;

impl Incoming {
    pub fn new(db: Db, vault: Vault, audit: AuditLog, clock: SharedClock) -> Self {
        Incoming {
            db,
            vault,
            audit,
            clock,
        }
    }

    pub async fn insert(&self, tx: &mut Tx, new: &NewItem) -> Result<(), IncomingError> {
        let id = new.id.to_string();
        let conversation = new.conversation_id.map(|c| c.to_string());
        let in_reply_to = new.in_reply_to.map(|c| c.to_string());
        let owner = new.owner.map(|o| o.to_string());
        rows::insert(
            tx,
            &rows::NewIncoming {
                message_id: &id,
                kind: new.kind.as_str(),
                conversation_id: conversation.as_deref(),
                in_reply_to: in_reply_to.as_deref(),
                owner_id: owner.as_deref(),
                received_at: self.clock.now(),
            },
        )
        .await?;
        Ok(())
    }

    pub async fn get(&self, id: MessageId) -> Result<Item, IncomingError> {
        rows::get(&self.db, &id.to_string())
            .await?
            .ok_or(IncomingError::NotFound)?
            .try_into()
    }

    /// One page, newest first, with the cursors of the pages around it.
    pub async fn list(&self, q: &ListQuery) -> Result<Page, IncomingError> {
        let owner = q.visible_to.map(|s| s.to_string());
        let start = q
            .from
            .as_ref()
            .map(|s| s.keyed(|c| (c.at, c.id.to_string())));
        let filter = rows::ListFilter {
            visible_to: owner.as_deref(),
            unread: q.unread,
            from: start
                .as_ref()
                .map(|(key, newer)| (key.as_ref().map(|(at, id)| (*at, id.as_str())), *newer)),
            limit: paging::rows_to_fetch(q.limit),
        };
        let items = rows::list(&self.db, &filter)
            .await?
            .into_iter()
            .map(Item::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(
            items,
            q.limit,
            q.from.as_ref(),
            |i: &Item| Cursor {
                at: i.received_at,
                id: i.id,
            },
        ))
    }

    /// The items of a conversation, oldest first.
    pub async fn conversation(&self, id: MessageId) -> Result<Vec<Item>, IncomingError> {
        rows::in_conversation(&self.db, &id.to_string())
            .await?
            .into_iter()
            .map(Item::try_from)
            .collect()
    }

    /// Staff opened the item: the first opening is noted (unread → read);
    /// every opening is audited.
    pub async fn opened(
        &self,
        actor: Actor,
        id: MessageId,
        ip: Option<std::net::IpAddr>,
    ) -> Result<(), IncomingError> {
        let mut tx = self.db.begin().await?;
        let first = rows::mark_read(&mut tx, &id.to_string(), self.clock.now()).await?;
        let event = Event::new(actor, Action::IncomingOpened)
            .message(id)
            .ip(ip)
            .detail(serde_json::json!({ "first": first }));
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes an unclaimed item for `staff`: exactly one of any number of
    /// concurrent claims (on any instance) wins, by compare-and-set. False
    /// if someone else had it already.
    pub async fn claim(
        &self,
        actor: Actor,
        id: MessageId,
        staff: StaffId,
        ip: Option<std::net::IpAddr>,
    ) -> Result<bool, IncomingError> {
        let mut tx = self.db.begin().await?;
        let won = rows::claim(
            &mut tx,
            &id.to_string(),
            &staff.to_string(),
            self.clock.now(),
        )
        .await?;
        if !won {
            return Ok(false);
        }
        let event = Event::new(actor, Action::IncomingClaimed)
            .message(id)
            .ip(ip);
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Marks the item handled; it is shredded `retention_days` later.
    /// False if it was done already.
    pub async fn mark_done(
        &self,
        actor: Actor,
        id: MessageId,
        retention_days: u32,
        ip: Option<std::net::IpAddr>,
    ) -> Result<bool, IncomingError> {
        let now = self.clock.now();
        let shred_at = now + i64::from(retention_days) * 86_400;
        let mut tx = self.db.begin().await?;
        if !rows::mark_done(&mut tx, &id.to_string(), now, shred_at).await? {
            return Ok(false);
        }
        let event = Event::new(actor, Action::IncomingDone)
            .message(id)
            .ip(ip)
            .detail(serde_json::json!({ "shred_at": shred_at }));
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Shreds one item: the vault's key, parts and sealed metadata (the
    /// customer's address, note and file names) go; the row keeps ids and
    /// times. False if another instance got there first.
    pub async fn shred(&self, id: MessageId) -> Result<bool, IncomingError> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        if !rows::claim_shred(&mut tx, &id.to_string(), now).await? {
            return Ok(false);
        }
        let blobs = self.vault.shred_in(&mut tx, id).await?;
        let event = Event::new(Actor::System, Action::IncomingShredded).message(id);
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        if let Some(s) = blobs {
            self.vault.delete_shredded_blobs(s).await;
        }
        Ok(true)
    }

    /// One retention pass: shreds the items whose time has come.
    pub async fn shred_due(&self) -> Result<usize, IncomingError> {
        let due = rows::due_for_shred(&self.db, self.clock.now(), RETENTION_BATCH).await?;
        let mut done = 0;
        for id in due {
            let Ok(id) = id.parse::<MessageId>() else {
                continue;
            };
            if self.shred(id).await? {
                done += 1;
            }
        }
        Ok(done)
    }

    /// Forgets secure-inbox codes (keyed hashes by an address's blind
    /// index) a day after they expired.
    pub async fn purge_codes(&self) -> Result<u64, IncomingError> {
        let before = self.clock.now() - CODES_KEPT_SECS;
        Ok(crate::store::inbox_codes::purge(&self.db, before).await?)
    }
}

/// How long an expired secure-inbox code is kept.
const CODES_KEPT_SECS: i64 = 24 * 3600;

/// Runs [`Incoming::shred_due`] and [`Incoming::purge_codes`] every
/// [`RETENTION_EVERY`] until `stop` is cancelled (between passes).
pub async fn run_retention(incoming: Incoming, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(RETENTION_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = incoming.shred_due().await {
            tracing::warn!(error = %e, "retention pass failed; will retry");
        }
        if let Err(e) = incoming.purge_codes().await {
            tracing::warn!(error = %e, "purging old secure-inbox codes failed; will retry");
        }
    }
}

impl TryFrom<IncomingRow> for Item {
    type Error = IncomingError;

    fn try_from(row: IncomingRow) -> Result<Item, IncomingError> {
        let id = |s: Option<String>| -> Result<Option<MessageId>, IncomingError> {
            s.map(|s| s.parse().map_err(|_| IncomingError::Invalid("bad id")))
                .transpose()
        };
        Ok(Item {
            id: row
                .message_id
                .parse()
                .map_err(|_| IncomingError::Invalid("bad id"))?,
            kind: row.kind.parse()?,
            conversation_id: id(row.conversation_id)?,
            in_reply_to: id(row.in_reply_to)?,
            owner: row
                .owner_id
                .map(|o| StaffId::parse(&o).ok_or(IncomingError::Invalid("bad owner id")))
                .transpose()?,
            received_at: row.received_at,
            read_at: row.read_at,
            done_at: row.done_at,
            shred_at: row.shred_at,
            shredded_at: row.shredded_at,
        })
    }
}
