//! Everything staff do: accounts now; sign-in, compose and sent items as
//! they land.

pub mod accounts;
mod error;
pub mod links;
pub mod password;
pub mod sign_in;
pub mod tokens;
pub mod totp;

pub use accounts::{
    AccountKind, AccountState, Accounts, Role, ServiceName, StaffAccount, StaffEmail, StaffId,
};
pub use error::StaffError;
pub use links::StaffLinks;
pub use sign_in::SignIn;
pub use tokens::ApiTokens;
pub use totp::Totp;
