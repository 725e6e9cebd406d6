//! Everything staff do: accounts now; sign-in, compose and sent items as
//! they land.

pub mod accounts;
pub mod password;

pub use accounts::{AccountError, Accounts, Role, StaffAccount, StaffEmail, StaffId};
