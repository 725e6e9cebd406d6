//! What the vault knows about a message and its parts: ids and kinds in
//! the clear, customer metadata only ever encrypted.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::blobs::BlobKey;

pub use crate::ids::MessageId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartKind {
    Body,
    Attachment,
}

impl PartKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            PartKind::Body => "body",
            PartKind::Attachment => "attachment",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "body" => Some(PartKind::Body),
            "attachment" => Some(PartKind::Attachment),
            _ => None,
        }
    }
}

/// Customer data about a message. Only ever stored encrypted.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessageMeta {
    pub recipient_address: Option<String>,
    pub recipient_phone: Option<String>,
    pub title: Option<String>,
    pub reference: Option<String>,
    /// A document request's checklist, or a submission's copy of it (so
    /// a submission names its items after the request is shredded).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
}

/// Customer data about one part. Only ever stored encrypted.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PartMeta {
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    /// In a request's submission: the checklist item (an index into the
    /// message's `items`) the file was sent for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
}

macro_rules! redacted_debug {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($t), " { *** }"))
            }
        }
    )*};
}
redacted_debug!(MessageMeta, PartMeta);

/// A stored part as listed from the database (no plaintext).
#[derive(Clone, Debug)]
pub struct StoredPart {
    pub id: String,
    pub position: u32,
    pub kind: PartKind,
    pub blob: BlobKey,
    pub plain_size: u64,
    pub cipher_size: u64,
    pub(super) sealed_meta: Vec<u8>,
}

/// What [`Draft::seal_part`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartInfo {
    pub position: u32,
    pub kind: PartKind,
    pub plain_size: u64,
    pub cipher_size: u64,
}
