//! Use cases shared by the portal's pages and the API: the rules and the
//! transaction of one action, whichever door it came through. A flow takes
//! the `App` and plain values (who acts, from where, on what) and returns a
//! result or a `PageError`, which each door renders its own way (a page or
//! a problem document).

pub mod compose;
pub mod incoming;
pub mod sent;

use std::net::IpAddr;

use crate::audit::Actor;
use crate::ids::StaffId;

/// Who is acting, from where, and whether they may act on anyone's
/// messages (an admin).
pub struct Acting {
    pub staff: StaffId,
    pub sees_all: bool,
    pub ip: IpAddr,
}

impl Acting {
    pub fn actor(&self) -> Actor {
        Actor::Staff(self.staff.to_string())
    }
}
