//! Identifiers shared across layers (a leaf: it imports nothing from the
//! crate), so the store, services and pages can name a staff member
//! without depending on each other.

use std::fmt;

use uuid::Uuid;

/// A staff account's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StaffId(Uuid);

impl StaffId {
    /// A fresh random id for a new account.
    pub fn generate() -> Self {
        StaffId(Uuid::new_v4())
    }

    pub fn from_uuid(id: Uuid) -> Self {
        StaffId(id)
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
