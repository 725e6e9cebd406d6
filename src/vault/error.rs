//! What can go wrong in the vault.

use std::io;

use super::keyring::{KeyFileError, MasterKeyId};

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A ciphertext failed authentication, is truncated, or is not an age
    /// file: it was damaged or tampered with. Never partially trusted.
    #[error("the ciphertext is corrupt, truncated or was tampered with")]
    Corrupt,
    /// None of the available identities opens this ciphertext.
    #[error("no available key opens this ciphertext")]
    NoMatchingKey,
    /// A wrapped key names a master key that is not in the key file.
    #[error("master key {0} is not in the master key file")]
    MasterKeyMissing(MasterKeyId),
    #[error("{0}")]
    KeyFile(#[from] KeyFileError),
    #[error("no such message")]
    NotFound,
    /// The message's key was destroyed; its content is gone for good.
    #[error("the message has been shredded")]
    Shredded,
    /// The plaintext exceeded the draft's size limit; nothing was kept.
    #[error("the message is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// Reading the plaintext source failed (e.g. the upload was cut off).
    #[error("reading the input failed: {0}")]
    Input(#[source] io::Error),
    /// Setting up encryption failed (bad recipient set).
    #[error("encryption failed: {0}")]
    Encrypt(String),
    /// A key management request that cannot be carried out.
    #[error("{0}")]
    KeyManagement(String),
    /// The message was sealed without escrow recipients, so there is nothing
    /// an escrow holder could open.
    #[error("the message has no escrow recipients")]
    NoEscrow,
    #[error("export: {0}")]
    Export(String),
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("background task failed: {0}")]
    Task(String),
}
