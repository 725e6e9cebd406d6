//! Identifiers shared across layers (a leaf: it imports nothing from the
//! crate), so the store, services and pages can name a message or a staff
//! member without depending on each other.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A staff account's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StaffId(Uuid);

impl StaffId {
    /// A fresh random id for a new account.
    pub fn generate() -> Self {
        StaffId(Uuid::new_v4())
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

/// A message id (random UUID; reveals nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(Uuid);

impl MessageId {
    pub fn new() -> Self {
        MessageId(Uuid::new_v4())
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MessageId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(MessageId)
    }
}

/// A row's place in a staff list, newest first: its time (sent,
/// received), then its id. Pages start just past one (keyset paging), so a
/// page costs the same however deep it is, and rows added meanwhile do not
/// shift pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub at: i64,
    pub id: MessageId,
}

impl Cursor {
    /// The form a page link carries.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.at, self.id)
    }

    pub fn parse(s: &str) -> Option<Cursor> {
        let (at, id) = s.split_once('_')?;
        Some(Cursor {
            at: at.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}
