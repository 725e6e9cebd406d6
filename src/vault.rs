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
mod draft;
mod envelope;
mod error;
mod export;
pub mod keyring;
mod lease;
mod message;
mod pipeline;
mod purpose;
mod reader;
mod rotation;
pub mod s3;
mod secrets;
mod shred;
mod sweep;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use age::x25519;
use zeroize::Zeroizing;

use crate::clock::SharedClock;
use crate::store::{Db, Tx, keys, messages};
pub use blobs::{BlobKey, BlobStore, LocalBlobStore};
pub use draft::{Draft, SealedDraft};
pub use error::VaultError;
pub use export::ExportReport;
pub use keyring::{KeyFileError, Keyring, MasterKeyId};
pub use message::{MessageId, MessageMeta, PartInfo, PartKind, PartMeta, StoredPart};
pub use pipeline::{PipelinedReader, PipelinedWriter};
pub use purpose::Purpose;
pub use reader::{MessageKey, PartReader};
pub use rotation::{KeyStatus, Progress, RotateReport};
pub use s3::{S3BlobStore, S3Settings};
use secrets::InstallationKeys;
pub use shred::Shredded;
pub use sweep::SweepReport;

/// Plaintext is moved through the vault in pieces this big.
const IO_BUF: usize = 256 * 1024;

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
    /// Keys derived from the installation's root secret.
    keys: InstallationKeys,
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
        let known = keys::count(&db).await?;
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
        let keys = InstallationKeys::load(&db, &keyring).await?;
        Ok(Vault {
            inner: Arc::new(Inner {
                db,
                blobs,
                keyring: RwLock::new(Arc::new(keyring)),
                escrow: settings.escrow_recipients,
                keys,
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
        let active = keys::active(tx).await?;
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

    /// Messages (newest first) sent to `address`, found by blind index.
    pub async fn find_by_recipient(&self, address: &str) -> Result<Vec<MessageId>, VaultError> {
        let index = self.recipient_index(address);
        let rows = messages::by_recipient_index(self.db(), &index).await?;
        rows.iter()
            .map(|s| MessageId::from_str(s).map_err(|_| VaultError::Corrupt))
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
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn register_keys(db: &Db, keyring: &Keyring, now: i64) -> Result<(), VaultError> {
    for key in keyring.keys() {
        keys::register(db, key.id.as_str(), &key.recipient.to_string(), now).await?;
    }
    Ok(())
}
