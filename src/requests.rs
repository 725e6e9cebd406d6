//! Document requests: an agent asks a customer for files ("Photo ID",
//! "Last payslip"). A request travels as a delivery does (its one-time
//! link, verification and expiry); its sealed message holds the
//! instructions and the checklist. This tracks what the upload accepts and
//! the one submission, which becomes an incoming item of its own.

use std::fmt;

use crate::clock::SharedClock;
use crate::filetype::FileKind;
use crate::store::requests::{self as rows, RequestRow};
use crate::store::{Db, Tx};
use crate::vault::MessageId;

/// Checklist items one request may name.
pub const MAX_ITEMS: usize = 10;
/// Characters of one item's name.
pub const MAX_ITEM_CHARS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// A document request as the upload checks it.
#[derive(Clone, Debug)]
pub struct DocRequest {
    pub id: MessageId,
    /// How many checklist items (their names are sealed).
    pub items: u32,
    pub accepted: Vec<FileKind>,
    pub max_bytes: u64,
    pub submitted_at: Option<i64>,
    /// The incoming item the submission became.
    pub submission: Option<MessageId>,
}

impl TryFrom<RequestRow> for DocRequest {
    type Error = RequestError;
    fn try_from(r: RequestRow) -> Result<Self, Self::Error> {
        let id = r
            .message_id
            .parse()
            .map_err(|_| RequestError::Invalid("bad request id"))?;
        // One kind this build does not know accepts nothing of it (fails
        // closed); the rest stay accepted.
        let accepted = r.accepted.split(',').filter_map(FileKind::parse).collect();
        let submission = match r.submission_id {
            Some(s) => Some(
                s.parse()
                    .map_err(|_| RequestError::Invalid("bad submission id"))?,
            ),
            None => None,
        };
        Ok(DocRequest {
            id,
            items: u32::try_from(r.items).map_err(|_| RequestError::Invalid("bad item count"))?,
            accepted,
            max_bytes: u64::try_from(r.max_bytes)
                .map_err(|_| RequestError::Invalid("bad size limit"))?,
            submitted_at: r.submitted_at,
            submission,
        })
    }
}

/// What an agent asked for, stored beside the request's delivery.
pub struct NewRequest {
    pub id: MessageId,
    pub items: u32,
    pub accepted: Vec<FileKind>,
    pub max_bytes: u64,
}

#[derive(Clone)]
pub struct Requests {
    db: Db,
    clock: SharedClock,
}

impl fmt::Debug for Requests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Requests { .. }")
    }
}

impl Requests {
    pub fn new(db: Db, clock: SharedClock) -> Self {
        Requests { db, clock }
    }

    /// In the transaction that commits the request's sealed message and
    /// its delivery.
    pub async fn insert(&self, tx: &mut Tx, new: &NewRequest) -> Result<(), RequestError> {
        let accepted: Vec<&str> = new.accepted.iter().map(|k| k.as_str()).collect();
        rows::insert(
            tx,
            &new.id.to_string(),
            i64::from(new.items),
            &accepted.join(","),
            i64::try_from(new.max_bytes).map_err(|_| RequestError::Invalid("size too large"))?,
        )
        .await?;
        Ok(())
    }

    /// The request a delivery is, if it is one.
    pub async fn get(&self, id: MessageId) -> Result<Option<DocRequest>, RequestError> {
        rows::get(&self.db, &id.to_string())
            .await?
            .map(DocRequest::try_from)
            .transpose()
    }

    /// Records the submission in the transaction that stores it: false if
    /// the request was submitted already (by another tab or instance).
    pub async fn submit(
        &self,
        tx: &mut Tx,
        id: MessageId,
        submission: MessageId,
    ) -> Result<bool, RequestError> {
        Ok(rows::submit(
            tx,
            &id.to_string(),
            &submission.to_string(),
            self.clock.now(),
        )
        .await?)
    }
}
