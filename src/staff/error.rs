//! The one error type of the staff services (accounts, sign-in, links,
//! second factor): they share most failures, and the web layer maps them
//! to pages in one place.

use super::password::{HashError, PasswordRejected};
use crate::audit::AuditError;
use crate::mail::MailError;
use crate::vault::VaultError;

#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    #[error("that is not a valid email address")]
    InvalidEmail,
    #[error("the role must be admin or agent")]
    InvalidRole,
    #[error("a staff account with that email address already exists")]
    EmailTaken,
    #[error("no staff account has that email address")]
    NotFound,
    /// A password, reset, invitation or sign-in for a service account,
    /// which only ever holds API tokens.
    #[error("a service account has no password; it acts only through its API tokens")]
    ServiceAccount,
    #[error(
        "a service account's name is 1 to 40 lower-case letters, digits and hyphens, starting with a letter or digit"
    )]
    InvalidServiceName,
    /// Wrong address, wrong password, or a disabled account: one answer for
    /// all, so the sign-in form does not tell who has an account.
    #[error("the email address or password is not right")]
    InvalidCredentials,
    #[error("too many attempts; try again in {} minute(s)", (retry_after_secs + 59) / 60)]
    Throttled { retry_after_secs: i64 },
    #[error("cannot build a TOTP: {0}")]
    TotpSetup(String),
    #[error(transparent)]
    WeakPassword(#[from] PasswordRejected),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("queuing an email")]
    Mail(#[from] MailError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("database error")]
    Db(#[from] sqlx::Error),
}
