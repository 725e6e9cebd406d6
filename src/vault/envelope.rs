//! Thin helpers over the `age` crate. Everything the vault writes is a
//! standard age v1 file (binary, X25519 recipients), so the `age` CLI can
//! read it with the right identity.

use std::io::{self, BufRead, Read, Write};

use age::stream::{StreamReader, StreamWriter};
use age::{Decryptor, Encryptor, Identity, Recipient};
use zeroize::Zeroizing;

use super::VaultError;

/// Starts an age file to `recipients` on `out`. The caller must call
/// `finish()` on the result; a file without it is truncated and fails to open.
pub(crate) fn encrypt_to<W: Write>(
    recipients: &[&dyn Recipient],
    out: W,
) -> Result<StreamWriter<W>, VaultError> {
    let encryptor = Encryptor::with_recipients(recipients.iter().copied())
        .map_err(|e| VaultError::Encrypt(e.to_string()))?;
    encryptor.wrap_output(out).map_err(VaultError::Io)
}

/// Encrypts a small value (a wrapped key, a metadata record) in memory.
pub(crate) fn seal_small(
    recipients: &[&dyn Recipient],
    plaintext: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut w = encrypt_to(recipients, &mut out)?;
    w.write_all(plaintext)?;
    w.finish()?;
    Ok(out)
}

/// Decrypts a small value sealed by [`seal_small`].
pub(crate) fn open_small(
    identity: &dyn Identity,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let mut r = open_stream(identity, ciphertext)?;
    let mut out = Zeroizing::new(Vec::new());
    r.read_to_end(&mut out).map_err(corrupt_or_io)?;
    Ok(out)
}

/// Starts decrypting an age file. Header problems and wrong keys are
/// reported here; payload damage surfaces while reading.
pub(crate) fn open_stream<R: BufRead>(
    identity: &dyn Identity,
    input: R,
) -> Result<StreamReader<R>, VaultError> {
    let decryptor = Decryptor::new_buffered(input).map_err(from_decrypt_error)?;
    decryptor
        .decrypt(std::iter::once(identity))
        .map_err(from_decrypt_error)
}

fn from_decrypt_error(e: age::DecryptError) -> VaultError {
    match e {
        age::DecryptError::NoMatchingKeys => VaultError::NoMatchingKey,
        age::DecryptError::Io(e) => corrupt_or_io(e),
        _ => VaultError::Corrupt,
    }
}

/// age reports a failed tag as `InvalidData` and a cut-off file as
/// `UnexpectedEof`; both mean the ciphertext cannot be trusted.
pub(crate) fn corrupt_or_io(e: io::Error) -> VaultError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => VaultError::Corrupt,
        _ => match e.downcast::<VaultError>() {
            Ok(v) => v,
            Err(e) => VaultError::Io(e),
        },
    }
}
