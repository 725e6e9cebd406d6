//! The vault: every piece of customer data Sealpost keeps, encrypted.
//!
//! # Model
//! - Each message gets a fresh age X25519 identity. Its body and each
//!   attachment are separate standard age files, encrypted to that identity
//!   and to every configured escrow recipient, and stored in a [`BlobStore`].
//! - The message identity is stored only wrapped: age-encrypted to the newest
//!   master key (see [`keyring`]). Rotation re-wraps identities, never blobs.
//! - Customer data that must sit in the database (recipient address, phone,
//!   title, reference, file names, content types) is age-encrypted to the
//!   message identity. Exact-match search by address uses a keyed blind
//!   index (HMAC-SHA256 under a key that is itself wrapped by the master key).
//! - Shredding deletes the wrapped identity, the sealed metadata and the
//!   blind index in a transaction, then the blobs: once committed, nothing
//!   of the message can be opened or matched, with any key.
//!
//! # API
//! - seal: [`Vault::begin_message`] → [`Draft::seal_part`] (streams, constant
//!   memory) → [`Vault::commit`] inside the caller's transaction, so the
//!   message becomes visible atomically with whatever else the caller writes.
//! - open: [`Vault::unlock`] → [`MessageKey::open`] / [`Vault::open_part`]
//!   give a streaming reader; tampering or truncation is [`VaultError::Corrupt`].
//! - shred: [`Vault::shred`]. Housekeeping: [`Vault::sweep`]; keys:
//!   [`Vault::rotate`], [`Vault::retire`], [`Vault::key_status`];
//!   escrow: [`Vault::export`].

pub mod blobs;
mod envelope;
mod export;
pub mod keyring;
mod lease;
mod pipeline;
mod rotation;
pub mod s3;
mod sweep;

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use age::x25519;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::RngExt;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::Row;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::clock::SharedClock;
use crate::store::{Db, Tx};
pub use blobs::{BlobKey, BlobStore, LocalBlobStore};
pub use export::ExportReport;
pub use keyring::{KeyFileError, Keyring, MasterKeyId};
pub use pipeline::{PipelinedReader, PipelinedWriter};
pub use rotation::{KeyStatus, RotateReport};
pub use s3::{S3BlobStore, S3Settings};
pub use sweep::SweepReport;

/// Plaintext is moved through the vault in pieces this big.
const IO_BUF: usize = 256 * 1024;
/// The installation's root secret (wrapped like message keys); the blind
/// index and audit chain keys are derived from it, so they survive master
/// key rotation unchanged.
const ROOT_SECRET: &str = "installation_root";

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

/// A message id (random UUID; reveals nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(Uuid);

impl MessageId {
    pub fn new() -> Self {
        MessageId(Uuid::new_v4())
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MessageId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(MessageId)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartKind {
    Body,
    Attachment,
}

impl PartKind {
    fn as_str(self) -> &'static str {
        match self {
            PartKind::Body => "body",
            PartKind::Attachment => "attachment",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "body" => Some(PartKind::Body),
            "attachment" => Some(PartKind::Attachment),
            _ => None,
        }
    }
}

/// Customer data about a message. Only ever stored encrypted.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessageMeta {
    pub recipient_address: Option<String>,
    pub recipient_phone: Option<String>,
    pub title: Option<String>,
    pub reference: Option<String>,
}

/// Customer data about one part. Only ever stored encrypted.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PartMeta {
    pub file_name: Option<String>,
    pub content_type: Option<String>,
}

macro_rules! redacted_debug {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($t), " { *** }"))
            }
        }
    )*};
}
redacted_debug!(MessageMeta, PartMeta);

/// A stored part as listed from the database (no plaintext).
#[derive(Clone, Debug)]
pub struct StoredPart {
    pub id: String,
    pub position: u32,
    pub kind: PartKind,
    pub blob: BlobKey,
    pub plain_size: u64,
    pub cipher_size: u64,
    sealed_meta: Vec<u8>,
}

/// What [`Draft::seal_part`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartInfo {
    pub position: u32,
    pub kind: PartKind,
    pub plain_size: u64,
    pub cipher_size: u64,
}

struct SealedPart {
    info: PartInfo,
    blob: BlobKey,
    sealed_meta: Vec<u8>,
}

/// Where the vault keeps its keys and whom it also encrypts to.
#[derive(Clone, Debug)]
pub struct VaultSettings {
    pub master_key_file: PathBuf,
    pub escrow_recipients: Vec<x25519::Recipient>,
}

#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    blobs: Arc<dyn BlobStore>,
    keyring: RwLock<Arc<Keyring>>,
    escrow: Vec<x25519::Recipient>,
    /// HMAC-SHA256 key for the blind index (one hash block long).
    index_key: Zeroizing<[u8; 64]>,
    /// HMAC-SHA256 key chaining the audit log.
    audit_key: Zeroizing<[u8; 64]>,
    /// XChaCha20-Poly1305 key (first 32 bytes) for small server-side secrets
    /// such as TOTP seeds.
    secrets_key: Zeroizing<[u8; 64]>,
    clock: SharedClock,
    /// Committed shreds, for the metrics (which register this counter).
    shreds: prometheus_client::metrics::counter::Counter,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Vault { .. }")
    }
}

impl Vault {
    /// Opens the vault. On a fresh installation (no master key known to the
    /// database and no key file) a master key file is generated with mode
    /// 0600; the operator is told to back it up.
    pub async fn open(
        db: Db,
        blobs: Arc<dyn BlobStore>,
        settings: VaultSettings,
        clock: SharedClock,
    ) -> Result<Vault, VaultError> {
        let known: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM master_keys")
            .fetch_one(db.pool())
            .await?;
        let path = &settings.master_key_file;
        let keyring = match Keyring::load(path) {
            Ok(k) => k,
            Err(KeyFileError::Missing(_)) if known == 0 => {
                let k = Keyring::create(path)?;
                tracing::warn!(
                    key_file = %path.display(),
                    key_id = %k.newest().id,
                    "generated a new master key. BACK IT UP NOW, offline and apart from database backups: without it no message can ever be decrypted"
                );
                k
            }
            Err(e) => return Err(e.into()),
        };
        let now = clock.now();
        register_keys(&db, &keyring, now).await?;
        let secret = ensure_secret(&db, &keyring, ROOT_SECRET).await?;
        let index_key = derive_key(&secret, b"sealpost/v1/blind-index")?;
        let audit_key = derive_key(&secret, b"sealpost/v1/audit-chain")?;
        let secrets_key = derive_key(&secret, b"sealpost/v1/small-secrets")?;
        Ok(Vault {
            inner: Arc::new(Inner {
                db,
                blobs,
                keyring: RwLock::new(Arc::new(keyring)),
                escrow: settings.escrow_recipients,
                index_key,
                audit_key,
                secrets_key,
                clock,
                shreds: Default::default(),
            }),
        })
    }

    /// Counts committed shreds; see [`Vault::delete_shredded_blobs`].
    pub fn shred_counter(&self) -> prometheus_client::metrics::counter::Counter {
        self.inner.shreds.clone()
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The audit chain's HMAC key: whoever rewrites the audit log without
    /// the master key cannot make the chain verify again.
    pub(crate) fn audit_key(&self) -> &[u8; 64] {
        &self.inner.audit_key
    }

    fn keyring(&self) -> Arc<Keyring> {
        match self.inner.keyring.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn set_keyring(&self, keyring: Keyring) {
        let mut guard = match self.inner.keyring.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(keyring);
    }

    /// The keyring to wrap with. If another process (`keys rotate`) has
    /// registered a key we have not loaded, re-read the key file first so
    /// new material goes to the newest key while a rotation runs.
    async fn current_keyring(&self, tx: &mut Tx) -> Result<Arc<Keyring>, VaultError> {
        let ring = self.keyring();
        let active: Vec<String> =
            sqlx::query_scalar("SELECT id FROM master_keys WHERE retired_at IS NULL")
                .fetch_all(&mut **tx)
                .await?;
        let unknown = active
            .into_iter()
            .any(|id| ring.get(&MasterKeyId::from_db(id)).is_none());
        if unknown && let Ok(fresh) = Keyring::load(ring.path()) {
            self.set_keyring(fresh);
            return Ok(self.keyring());
        }
        Ok(ring)
    }

    fn unwrap_with(
        &self,
        ring: &Keyring,
        master_key_id: &MasterKeyId,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let key = match ring.get(master_key_id) {
            Some(k) => k,
            None => return Err(VaultError::MasterKeyMissing(master_key_id.clone())),
        };
        envelope::open_small(key.identity(), wrapped)
    }

    /// Unwraps with the loaded keys, re-reading the key file once if the
    /// wrapping key is newer than what this process loaded.
    fn unwrap(
        &self,
        master_key_id: &MasterKeyId,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let ring = self.keyring();
        if ring.get(master_key_id).is_none()
            && let Ok(fresh) = Keyring::load(ring.path())
            && fresh.get(master_key_id).is_some()
        {
            self.set_keyring(fresh);
        }
        self.unwrap_with(&self.keyring(), master_key_id, wrapped)
    }

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

    /// Makes a draft visible: wraps its identity to the newest master key and
    /// inserts the message, key and part rows in the caller's transaction.
    /// The message exists once (and only if) that transaction commits; if it
    /// rolls back, the blobs are orphans for [`Vault::sweep`].
    pub async fn commit(
        &self,
        tx: &mut Tx,
        mut draft: Draft,
        meta: &MessageMeta,
    ) -> Result<MessageId, VaultError> {
        let ring = self.current_keyring(tx).await?;
        let master = ring.newest();
        let identity_text = draft.identity.to_string();
        let wrapped = envelope::seal_small(
            &[&master.recipient],
            identity_text.expose_secret().as_bytes(),
        )?;
        let recipient = draft.identity.to_public();
        let meta_json = Zeroizing::new(serde_json::to_vec(meta).map_err(io::Error::other)?);
        let sealed_meta = envelope::seal_small(&[&recipient], &meta_json)?;
        let index = meta
            .recipient_address
            .as_deref()
            .map(|a| self.recipient_index(a));
        let escrow = self
            .inner
            .escrow
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let id = draft.id.to_string();
        sqlx::query(
            "INSERT INTO messages (id, recipient, escrow_recipients, recipient_index, sealed_meta, part_count, plain_size, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(recipient.to_string())
        .bind(escrow)
        .bind(index)
        .bind(sealed_meta)
        .bind(i64::try_from(draft.parts.len()).unwrap_or(i64::MAX))
        .bind(to_i64(draft.plain_total))
        .bind(self.inner.clock.now())
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO message_keys (message_id, master_key_id, wrapped_identity) VALUES ($1, $2, $3)",
        )
        .bind(&id)
        .bind(master.id.as_str())
        .bind(wrapped)
        .execute(&mut **tx)
        .await?;
        for part in &draft.parts {
            sqlx::query(
                "INSERT INTO message_parts (id, message_id, position, kind, blob_key, plain_size, cipher_size, sealed_meta)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(Uuid::new_v4().to_string())
            .bind(&id)
            .bind(i64::from(part.info.position))
            .bind(part.info.kind.as_str())
            .bind(part.blob.as_str())
            .bind(to_i64(part.info.plain_size))
            .bind(to_i64(part.info.cipher_size))
            .bind(&part.sealed_meta)
            .execute(&mut **tx)
            .await?;
        }
        // From here the rows own the blobs; the draft must not delete them.
        draft.parts.clear();
        Ok(draft.id)
    }

    /// Encrypts a small server-side secret (e.g. a TOTP seed) for a database
    /// column. `purpose` is bound as associated data, so a sealed value
    /// cannot be moved to another column and still open.
    pub fn seal_secret(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        use chacha20poly1305::aead::{Aead, KeyInit as _, Payload};
        use chacha20poly1305::{XChaCha20Poly1305, XNonce};
        let cipher = XChaCha20Poly1305::new_from_slice(&self.inner.secrets_key[..32])
            .map_err(|_| VaultError::Encrypt("bad secrets key".into()))?;
        let nonce: [u8; 24] = rand::rng().random();
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Encrypt("sealing a secret failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`Vault::seal_secret`] sealed for the same `purpose`.
    pub fn open_secret(
        &self,
        purpose: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        use chacha20poly1305::aead::{Aead, KeyInit as _, Payload};
        use chacha20poly1305::{XChaCha20Poly1305, XNonce};
        if sealed.len() < 24 {
            return Err(VaultError::Corrupt);
        }
        let (nonce, ciphertext) = sealed.split_at(24);
        let cipher = XChaCha20Poly1305::new_from_slice(&self.inner.secrets_key[..32])
            .map_err(|_| VaultError::Encrypt("bad secrets key".into()))?;
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: purpose.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| VaultError::Corrupt)
    }

    /// The keyed blind index of a recipient address (case and surrounding
    /// space do not matter). Equal addresses give equal indexes; the index
    /// reveals nothing without the key.
    pub fn recipient_index(&self, address: &str) -> Vec<u8> {
        let normalised = Zeroizing::new(address.trim().to_lowercase());
        self.keyed_hash("recipient-address", normalised.as_bytes())
    }

    /// A keyed hash (HMAC-SHA256 under the blind-index key) of `value` for
    /// one `purpose`: lets the database match values it must not store,
    /// such as addresses typed at sign-in.
    pub fn keyed_hash(&self, purpose: &str, value: &[u8]) -> Vec<u8> {
        // The key is exactly one SHA-256 block, so no length can be wrong here.
        let key = hmac::digest::generic_array::GenericArray::from_slice(&self.inner.index_key[..]);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(key);
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(value);
        mac.finalize().into_bytes().to_vec()
    }

    /// Messages (newest first) sent to `address`, found by blind index.
    pub async fn find_by_recipient(&self, address: &str) -> Result<Vec<MessageId>, VaultError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE recipient_index = $1 ORDER BY created_at DESC, id",
        )
        .bind(self.recipient_index(address))
        .fetch_all(self.db().pool())
        .await?;
        rows.iter()
            .map(|s| MessageId::from_str(s).map_err(|_| VaultError::Corrupt))
            .collect()
    }

    /// The public half of a message's identity: anything encrypted to it
    /// (e.g. with the `age` CLI) opens through [`MessageKey::open`].
    pub async fn recipient_of(&self, id: MessageId) -> Result<x25519::Recipient, VaultError> {
        let r: Option<String> = sqlx::query_scalar("SELECT recipient FROM messages WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.db().pool())
            .await?;
        let r = r.ok_or(VaultError::NotFound)?;
        x25519::Recipient::from_str(&r).map_err(|_| VaultError::Corrupt)
    }

    /// Unwraps a message's identity. Call only once the caller is entitled to
    /// the plaintext (e.g. after the customer's verification).
    pub async fn unlock(&self, id: MessageId) -> Result<MessageKey, VaultError> {
        let row = sqlx::query(
            "SELECT m.shredded_at, k.master_key_id, k.wrapped_identity, m.sealed_meta
             FROM messages m LEFT JOIN message_keys k ON k.message_id = m.id WHERE m.id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.db().pool())
        .await?
        .ok_or(VaultError::NotFound)?;
        let shredded: Option<i64> = row.try_get(0)?;
        let master_key_id: Option<String> = row.try_get(1)?;
        let wrapped: Option<Vec<u8>> = row.try_get(2)?;
        let sealed_meta: Option<Vec<u8>> = row.try_get(3)?;
        let (Some(master_key_id), Some(wrapped), Some(sealed_meta), None) =
            (master_key_id, wrapped, sealed_meta, shredded)
        else {
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
        let rows = sqlx::query(
            "SELECT id, position, kind, blob_key, plain_size, cipher_size, sealed_meta
             FROM message_parts WHERE message_id = $1 ORDER BY position",
        )
        .bind(id.to_string())
        .fetch_all(self.db().pool())
        .await?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get(2)?;
                let blob: String = row.try_get(3)?;
                Ok(StoredPart {
                    id: row.try_get(0)?,
                    position: u32::try_from(row.try_get::<i64, _>(1)?).unwrap_or(u32::MAX),
                    kind: PartKind::parse(&kind).ok_or(VaultError::Corrupt)?,
                    blob: BlobKey::parse(&blob).ok_or(VaultError::Corrupt)?,
                    plain_size: u64::try_from(row.try_get::<i64, _>(4)?).unwrap_or(0),
                    cipher_size: u64::try_from(row.try_get::<i64, _>(5)?).unwrap_or(0),
                    sealed_meta: row.try_get(6)?,
                })
            })
            .collect()
    }

    /// Whether the blob store can be reached and written to now.
    pub async fn check_blob_store(&self) -> Result<(), VaultError> {
        let store = Arc::clone(&self.inner.blobs);
        tokio::task::spawn_blocking(move || store.ping())
            .await
            .map_err(|e| VaultError::Task(e.to_string()))??;
        Ok(())
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

    /// Shreds a message: the wrapped identity and encrypted metadata go in
    /// one transaction (after which nothing can be decrypted), then the
    /// blobs. Returns false if it was already shredded.
    pub async fn shred(&self, id: MessageId) -> Result<bool, VaultError> {
        let mut tx = self.db().begin().await?;
        let shredded = self.shred_in(&mut tx, id).await?;
        tx.commit().await?;
        let done = shredded.is_some();
        if let Some(s) = shredded {
            self.delete_shredded_blobs(s).await;
        }
        Ok(done)
    }

    /// The vault's half of a shred inside the caller's transaction: the
    /// wrapped key and part rows go, so once it commits nothing can ever be
    /// decrypted, and with them the sealed metadata and the blind index (a
    /// keyed hash of the address, which the installation secret would
    /// otherwise still match). `None` if the message was already shredded.
    /// Pass the result to [`Vault::delete_shredded_blobs`] after committing.
    ///
    /// A message with a delivery is shredded through
    /// `Deliveries::shred`, which also erases what the delivery, the
    /// verification codes and the outbox hold about it.
    pub async fn shred_in(
        &self,
        tx: &mut Tx,
        id: MessageId,
    ) -> Result<Option<Shredded>, VaultError> {
        let exists: Option<Option<i64>> =
            sqlx::query_scalar("SELECT shredded_at FROM messages WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut **tx)
                .await?;
        match exists {
            None => return Err(VaultError::NotFound),
            Some(Some(_)) => return Ok(None),
            Some(None) => {}
        }
        let blobs: Vec<String> =
            sqlx::query_scalar("SELECT blob_key FROM message_parts WHERE message_id = $1")
                .bind(id.to_string())
                .fetch_all(&mut **tx)
                .await?;
        sqlx::query("DELETE FROM message_keys WHERE message_id = $1")
            .bind(id.to_string())
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM message_parts WHERE message_id = $1")
            .bind(id.to_string())
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "UPDATE messages SET shredded_at = $1, sealed_meta = NULL, recipient_index = NULL
             WHERE id = $2 AND shredded_at IS NULL",
        )
        .bind(self.inner.clock.now())
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(Some(Shredded { blobs }))
    }

    /// Deletes a committed shred's ciphertext; failures are left to the
    /// sweeper. Every shred path calls this once its transaction has
    /// committed, so this is also where shreds are counted.
    pub async fn delete_shredded_blobs(&self, shredded: Shredded) {
        self.inner.shreds.inc();
        let store = Arc::clone(&self.inner.blobs);
        let blobs = shredded.blobs;
        let result = tokio::task::spawn_blocking(move || {
            for key in blobs.iter().filter_map(|b| BlobKey::parse(b)) {
                // A blob left behind here is an orphan; the sweeper finishes the job.
                if let Err(e) = store.delete(&key) {
                    tracing::warn!(blob = key.as_str(), error = %e, "could not delete a shredded blob; the sweeper will retry");
                }
            }
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "blob deletion task failed; the sweeper will retry");
        }
    }
}

/// Blobs of a shredded message, to delete once the shred has committed.
#[derive(Debug)]
#[must_use]
pub struct Shredded {
    blobs: Vec<String>,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn register_keys(db: &Db, keyring: &Keyring, now: i64) -> Result<(), VaultError> {
    for key in keyring.keys() {
        sqlx::query(
            "INSERT INTO master_keys (id, recipient, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(key.id.as_str())
        .bind(key.recipient.to_string())
        .bind(now)
        .execute(db.pool())
        .await?;
    }
    Ok(())
}

/// Returns an installation-wide secret, creating it (wrapped to the newest
/// master key) on first use. Safe when several instances start at once.
async fn ensure_secret(
    db: &Db,
    keyring: &Keyring,
    name: &str,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let fetch = || {
        sqlx::query("SELECT master_key_id, wrapped FROM vault_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(db.pool())
    };
    let row = match fetch().await? {
        Some(row) => row,
        None => {
            let fresh = Zeroizing::new(rand::rng().random::<[u8; 32]>());
            let master = keyring.newest();
            let wrapped = envelope::seal_small(&[&master.recipient], &fresh[..])?;
            sqlx::query(
                "INSERT INTO vault_secrets (name, master_key_id, wrapped) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(master.id.as_str())
            .bind(wrapped)
            .execute(db.pool())
            .await?;
            fetch().await?.ok_or(VaultError::NotFound)?
        }
    };
    let master_key_id = MasterKeyId::from_db(row.try_get(0)?);
    let wrapped: Vec<u8> = row.try_get(1)?;
    let key = keyring
        .get(&master_key_id)
        .ok_or(VaultError::MasterKeyMissing(master_key_id))?;
    envelope::open_small(key.identity(), &wrapped)
}

/// A 64-byte (one SHA-256 block) HMAC key for one purpose.
fn derive_key(secret: &[u8], purpose: &[u8]) -> Result<Zeroizing<[u8; 64]>, VaultError> {
    let mut out = Zeroizing::new([0u8; 64]);
    hkdf::Hkdf::<Sha256>::new(None, secret)
        .expand(purpose, &mut out[..])
        .map_err(|_| VaultError::Encrypt("key derivation failed".into()))?;
    Ok(out)
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
