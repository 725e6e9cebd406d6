//! Sealing a new message: a [`Draft`] streams each part into an encrypted
//! blob, and [`Vault::commit`] makes the whole message visible at once.

use std::fmt;
use std::io::{self, Read, Write};

use age::x25519;
use secrecy::ExposeSecret;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::blobs::{self, BlobKey};
use super::keyring::MasterKeyId;
use super::{
    IO_BUF, MessageId, MessageMeta, PartInfo, PartKind, PartMeta, Vault, VaultError, envelope,
    pipeline, to_i64,
};
use crate::store::{Tx, messages};

struct SealedPart {
    info: PartInfo,
    blob: BlobKey,
    sealed_meta: Vec<u8>,
}

/// A draft whose identity is wrapped and whose metadata is sealed: the
/// public-key work of [`Vault::commit`], done by [`Vault::seal`] before the
/// write transaction so that transaction holds the write lock only for its
/// rows.
pub struct SealedDraft {
    draft: Draft,
    master: MasterKeyId,
    wrapped: Vec<u8>,
    sealed_meta: Vec<u8>,
    recipient_index: Option<Vec<u8>>,
}

impl fmt::Debug for SealedDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedDraft")
            .field("draft", &self.draft)
            .finish_non_exhaustive()
    }
}

impl SealedDraft {
    pub fn id(&self) -> MessageId {
        self.draft.id
    }
}

impl Vault {
    /// Starts a message: a fresh identity, nothing stored yet.
    pub fn begin_message(&self) -> Draft {
        Draft {
            vault: self.clone(),
            id: MessageId::new(),
            identity: x25519::Identity::generate(),
            parts: Vec::new(),
            limit: None,
            plain_total: 0,
        }
    }

    /// Wraps a draft's identity to the newest master key loaded and seals
    /// its metadata, without touching the database.
    pub fn seal(&self, draft: Draft, meta: &MessageMeta) -> Result<SealedDraft, VaultError> {
        let ring = self.keyring();
        let master = ring.newest();
        let wrapped = wrap_identity(&draft, &master.recipient)?;
        let meta_json = Zeroizing::new(serde_json::to_vec(meta).map_err(io::Error::other)?);
        let sealed_meta = envelope::seal_small(&[&draft.identity.to_public()], &meta_json)?;
        let recipient_index = meta
            .recipient_address
            .as_deref()
            .map(|a| self.recipient_index(a));
        Ok(SealedDraft {
            master: master.id.clone(),
            draft,
            wrapped,
            sealed_meta,
            recipient_index,
        })
    }

    /// Makes a sealed draft visible: inserts the message, key and part rows
    /// in the caller's transaction, its identity wrapped to the newest
    /// master key (wrapped again here only if a rotation added a key since
    /// [`Vault::seal`]). The message exists once (and only if) that
    /// transaction commits; if it rolls back, the blobs are orphans for
    /// [`Vault::sweep`].
    pub async fn commit(&self, tx: &mut Tx, sealed: SealedDraft) -> Result<MessageId, VaultError> {
        let SealedDraft {
            mut draft,
            master,
            wrapped,
            sealed_meta,
            recipient_index,
        } = sealed;
        let recipient = draft.identity.to_public();
        let escrow = self
            .inner
            .escrow
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let id = draft.id.to_string();
        messages::insert(
            tx,
            &messages::NewMessage {
                id: &id,
                recipient: &recipient.to_string(),
                escrow_recipients: &escrow,
                recipient_index: recipient_index.as_deref(),
                sealed_meta: &sealed_meta,
                part_count: i64::try_from(draft.parts.len()).unwrap_or(i64::MAX),
                plain_size: to_i64(draft.plain_total),
                created_at: self.inner.clock.now(),
            },
        )
        .await?;
        // Wrapped to the newest key, unless a rotation (of another process)
        // added one since `seal`: then the key file is read again.
        let ring = self.keyring();
        let known: Vec<&str> = ring.keys().iter().map(|k| k.id.as_str()).collect();
        let done = ring.newest().id == master
            && messages::insert_key_if_known(tx, &id, master.as_str(), &wrapped, &known).await?;
        if !done {
            let ring = self.current_keyring(tx).await?;
            let newest = ring.newest();
            let wrapped = wrap_identity(&draft, &newest.recipient)?;
            messages::insert_key(tx, &id, newest.id.as_str(), &wrapped).await?;
        }
        for part in &draft.parts {
            let row = messages::PartRow {
                id: Uuid::new_v4().to_string(),
                position: i64::from(part.info.position),
                kind: part.info.kind.as_str().to_owned(),
                blob_key: part.blob.as_str().to_owned(),
                plain_size: to_i64(part.info.plain_size),
                cipher_size: to_i64(part.info.cipher_size),
                sealed_meta: part.sealed_meta.clone(),
            };
            messages::insert_part(tx, &id, &row).await?;
        }
        // From here the rows own the blobs; the draft must not delete them.
        draft.parts.clear();
        Ok(draft.id)
    }
}

fn wrap_identity(draft: &Draft, master: &x25519::Recipient) -> Result<Vec<u8>, VaultError> {
    let identity_text = draft.identity.to_string();
    envelope::seal_small(&[master], identity_text.expose_secret().as_bytes())
}

/// A message being sealed. Parts are durable blobs as soon as
/// [`Draft::seal_part`] returns, but invisible until [`Vault::commit`].
/// Dropping an uncommitted draft deletes its blobs.
pub struct Draft {
    vault: Vault,
    id: MessageId,
    identity: x25519::Identity,
    parts: Vec<SealedPart>,
    limit: Option<u64>,
    plain_total: u64,
}

impl fmt::Debug for Draft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Draft")
            .field("id", &self.id)
            .field("parts", &self.parts.len())
            .finish_non_exhaustive()
    }
}

impl Draft {
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The message's public key.
    pub fn recipient(&self) -> x25519::Recipient {
        self.identity.to_public()
    }

    /// Caps the plaintext of all parts together; exceeding it fails the
    /// part being sealed with [`VaultError::TooLarge`] and keeps nothing of it.
    pub fn set_size_limit(&mut self, limit: u64) {
        self.limit = Some(limit);
    }

    /// Encrypts `input` into a new blob, streaming in constant memory:
    /// temp file → fsync → rename → fsync folder. Blocking I/O.
    pub fn seal_part(
        &mut self,
        kind: PartKind,
        meta: &PartMeta,
        mut input: impl Read,
    ) -> Result<PartInfo, VaultError> {
        let recipient = self.identity.to_public();
        let mut recipients: Vec<&dyn age::Recipient> = vec![&recipient];
        recipients.extend(
            self.vault
                .inner
                .escrow
                .iter()
                .map(|r| r as &dyn age::Recipient),
        );

        let blob = self.vault.inner.blobs.create()?;
        let counted = CountingWriter {
            inner: blob,
            count: 0,
        };
        let mut writer =
            envelope::encrypt_to(&recipients, pipeline::PipelinedWriter::new(counted)?)?;
        let mut buf = Zeroizing::new(vec![0u8; IO_BUF]);
        let mut plain_size: u64 = 0;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(VaultError::Input(e)),
            };
            plain_size += n as u64;
            if let Some(limit) = self.limit
                && self.plain_total + plain_size > limit
            {
                return Err(VaultError::TooLarge { limit });
            }
            Write::write_all(&mut writer, &buf[..n])?;
        }
        let counted = writer.finish()?.finish()?;
        let cipher_size = counted.count;
        let key = counted.inner.commit()?;

        let meta_json = Zeroizing::new(serde_json::to_vec(meta).map_err(io::Error::other)?);
        let sealed_meta = envelope::seal_small(&[&recipient], &meta_json)?;
        let info = PartInfo {
            position: u32::try_from(self.parts.len()).unwrap_or(u32::MAX),
            kind,
            plain_size,
            cipher_size,
        };
        self.plain_total += plain_size;
        self.parts.push(SealedPart {
            info: info.clone(),
            blob: key,
            sealed_meta,
        });
        Ok(info)
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        for part in self.parts.drain(..) {
            if let Err(e) = self.vault.inner.blobs.delete(&part.blob) {
                tracing::warn!(blob = part.blob.as_str(), error = %e, "could not delete a discarded draft's blob; the sweeper will");
            }
        }
    }
}

struct CountingWriter {
    inner: Box<dyn blobs::BlobWriter>,
    count: u64,
}

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
