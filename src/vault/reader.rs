//! Opening a stored message: [`Vault::unlock`] gives a [`MessageKey`], and
//! a [`PartReader`] decrypts a part as it is read.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::str::FromStr;

use age::x25519;
use zeroize::Zeroizing;

use super::blobs::BlobKey;
use super::keyring::MasterKeyId;
use crate::store::messages;

use super::{
    IO_BUF, MessageId, MessageMeta, PartKind, PartMeta, StoredPart, Vault, VaultError, envelope,
    pipeline,
};

impl Vault {
    /// The public half of a message's identity: anything encrypted to it
    /// (e.g. with the `age` CLI) opens through [`MessageKey::open`].
    pub async fn recipient_of(&self, id: MessageId) -> Result<x25519::Recipient, VaultError> {
        let r = messages::recipient(self.db(), &id.to_string()).await?;
        let r = r.ok_or(VaultError::NotFound)?;
        x25519::Recipient::from_str(&r).map_err(|_| VaultError::Corrupt)
    }

    /// Unwraps a message's identity. Call only once the caller is entitled to
    /// the plaintext (e.g. after the customer's verification).
    pub async fn unlock(&self, id: MessageId) -> Result<MessageKey, VaultError> {
        let row = messages::key(self.db(), &id.to_string())
            .await?
            .ok_or(VaultError::NotFound)?;
        let (Some(master_key_id), Some(wrapped), Some(sealed_meta), None) = (
            row.master_key_id,
            row.wrapped_identity,
            row.sealed_meta,
            row.shredded_at,
        ) else {
            return Err(VaultError::Shredded);
        };
        let text = self.unwrap(&MasterKeyId::from_db(master_key_id), &wrapped)?;
        let text = std::str::from_utf8(&text).map_err(|_| VaultError::Corrupt)?;
        let identity = x25519::Identity::from_str(text).map_err(|_| VaultError::Corrupt)?;
        Ok(MessageKey {
            id,
            identity,
            sealed_meta,
        })
    }

    /// The message's parts in order (no decryption).
    pub async fn parts(&self, id: MessageId) -> Result<Vec<StoredPart>, VaultError> {
        let rows = messages::parts(self.db(), &id.to_string()).await?;
        rows.into_iter()
            .map(|row| {
                Ok(StoredPart {
                    position: u32::try_from(row.position).unwrap_or(u32::MAX),
                    kind: PartKind::parse(&row.kind).ok_or(VaultError::Corrupt)?,
                    blob: BlobKey::parse(&row.blob_key).ok_or(VaultError::Corrupt)?,
                    plain_size: u64::try_from(row.plain_size).unwrap_or(0),
                    cipher_size: u64::try_from(row.cipher_size).unwrap_or(0),
                    sealed_meta: row.sealed_meta,
                    id: row.id,
                })
            })
            .collect()
    }

    /// Streams a stored part's plaintext (blocking I/O: call from a blocking
    /// thread in async code).
    pub fn open_part(
        &self,
        key: &MessageKey,
        part: &StoredPart,
    ) -> Result<PartReader<pipeline::PipelinedReader>, VaultError> {
        let blob = pipeline::PipelinedReader::new(self.inner.blobs.open(&part.blob)?)?;
        key.open_buffered(blob)
    }

    /// Like [`Vault::open_part`] but without the read-ahead helper thread:
    /// the blob is read on whichever thread reads the plaintext, and only
    /// then. For a consumer that may pause for a long time (a download whose
    /// client stops reading): a paused reader holds no thread. Blocking I/O.
    pub fn open_part_unpipelined(
        &self,
        key: &MessageKey,
        part: &StoredPart,
    ) -> Result<PartReader<BufReader<Box<dyn Read + Send>>>, VaultError> {
        key.open(self.inner.blobs.open(&part.blob)?)
    }
}

/// A message's unwrapped identity. Holding one means the holder may read
/// the message; it never prints its secret.
pub struct MessageKey {
    id: MessageId,
    identity: x25519::Identity,
    sealed_meta: Vec<u8>,
}

impl fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageKey")
            .field("id", &self.id)
            .field("identity", &"***")
            .finish()
    }
}

impl MessageKey {
    pub fn id(&self) -> MessageId {
        self.id
    }

    pub fn recipient(&self) -> x25519::Recipient {
        self.identity.to_public()
    }

    /// Starts decrypting any age file encrypted to this message.
    pub fn open<R: Read>(&self, input: R) -> Result<PartReader<BufReader<R>>, VaultError> {
        self.open_buffered(BufReader::with_capacity(IO_BUF, input))
    }

    fn open_buffered<R: BufRead>(&self, input: R) -> Result<PartReader<R>, VaultError> {
        Ok(PartReader {
            inner: envelope::open_stream(&self.identity, input)?,
        })
    }

    pub fn meta(&self) -> Result<MessageMeta, VaultError> {
        let json = envelope::open_small(&self.identity, &self.sealed_meta)?;
        serde_json::from_slice(&json).map_err(|_| VaultError::Corrupt)
    }

    pub fn part_meta(&self, part: &StoredPart) -> Result<PartMeta, VaultError> {
        let json = envelope::open_small(&self.identity, &part.sealed_meta)?;
        serde_json::from_slice(&json).map_err(|_| VaultError::Corrupt)
    }
}

/// Plaintext of one part, decrypted as it is read. A read error of kind
/// `InvalidData`/`UnexpectedEof` means the ciphertext is corrupt: stop and
/// discard what was read (an HTTP download must be aborted, not completed).
pub struct PartReader<R: BufRead> {
    inner: age::stream::StreamReader<R>,
}

impl<R: BufRead> Read for PartReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: BufRead> PartReader<R> {
    /// Copies all plaintext to `out`, telling corruption
    /// ([`VaultError::Corrupt`]) apart from a failing writer ([`VaultError::Io`]).
    pub fn copy_to(&mut self, out: &mut impl Write) -> Result<u64, VaultError> {
        let mut buf = Zeroizing::new(vec![0u8; IO_BUF]);
        let mut total = 0u64;
        loop {
            let n = match self.inner.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(envelope::corrupt_or_io(e)),
            };
            out.write_all(&buf[..n])?;
            total += n as u64;
        }
    }
}
