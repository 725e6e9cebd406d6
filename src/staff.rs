//! Everything staff do: accounts now; sign-in, compose and sent items as
//! they land.

pub mod accounts;
pub mod links;
pub mod password;
pub mod sign_in;
pub mod totp;

pub use accounts::{AccountError, AccountState, Accounts, Role, StaffAccount, StaffEmail, StaffId};
pub use links::StaffLinks;
pub use sign_in::{SignIn, SignInError};
pub use totp::Totp;
