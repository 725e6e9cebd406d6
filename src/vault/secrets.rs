//! The installation secret and what is derived from it: the blind-index
//! key for keyed hashes, the audit chain key, and the key sealing small
//! server-side secrets. All survive master key rotation unchanged. Each use
//! of a key is separated from every other by its [`Purpose`] label.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::RngExt;
use sha2::Sha256;
use sqlx::Row;
use zeroize::Zeroizing;

use super::keyring::{Keyring, MasterKeyId};
use super::purpose::{Derivation, Purpose, ROOT_SECRET};
use super::{Vault, VaultError, envelope};
use crate::db::Db;

/// A sealed secret starts with its random XChaCha20 nonce.
const NONCE_LEN: usize = 24;

impl Vault {
    /// Encrypts a small server-side secret (e.g. a TOTP seed) for a database
    /// column. `purpose` is bound as associated data, so a sealed value
    /// cannot be moved to another column and still open.
    pub fn seal_secret(&self, purpose: Purpose, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.inner.keys.seal(purpose, plaintext)
    }

    /// Opens what [`Vault::seal_secret`] sealed for the same `purpose`.
    pub fn open_secret(
        &self,
        purpose: Purpose,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        self.inner.keys.open(purpose, sealed)
    }

    /// The keyed blind index of a recipient address (case and surrounding
    /// space do not matter). Equal addresses give equal indexes; the index
    /// reveals nothing without the key.
    pub fn recipient_index(&self, address: &str) -> Vec<u8> {
        let normalised = Zeroizing::new(address.trim().to_lowercase());
        self.keyed_hash(Purpose::RecipientAddress, normalised.as_bytes())
    }

    /// A keyed hash (HMAC-SHA256 under the blind-index key) of `value` for
    /// one `purpose`: lets the database match values it must not store,
    /// such as addresses typed at sign-in.
    pub fn keyed_hash(&self, purpose: Purpose, value: &[u8]) -> Vec<u8> {
        self.inner.keys.keyed_hash(purpose, value)
    }

    /// An HMAC for one link of the audit chain, keyed with the audit key and
    /// labelled: whoever rewrites the audit log without the master key
    /// cannot make the chain verify again. The key never leaves the vault.
    pub(crate) fn audit_mac(&self) -> Hmac<Sha256> {
        self.inner.keys.audit_mac()
    }
}

/// The keys derived from the installation's root secret.
pub(super) struct InstallationKeys {
    /// HMAC-SHA256 key for the blind index (one hash block long).
    index: Zeroizing<[u8; 64]>,
    /// HMAC-SHA256 key chaining the audit log.
    audit: Zeroizing<[u8; 64]>,
    /// XChaCha20-Poly1305 key (first 32 bytes) for small server-side secrets
    /// such as TOTP seeds.
    secrets: Zeroizing<[u8; 64]>,
}

impl InstallationKeys {
    /// Reads the root secret (creating it on a fresh installation) and
    /// derives the keys from it.
    pub(super) async fn load(db: &Db, keyring: &Keyring) -> Result<Self, VaultError> {
        let root = ensure_secret(db, keyring, ROOT_SECRET).await?;
        Self::derive(&root)
    }

    fn derive(root: &[u8]) -> Result<Self, VaultError> {
        Ok(InstallationKeys {
            index: derive_key(root, Derivation::BlindIndex)?,
            audit: derive_key(root, Derivation::AuditChain)?,
            secrets: derive_key(root, Derivation::SmallSecrets)?,
        })
    }

    fn keyed_hash(&self, purpose: Purpose, value: &[u8]) -> Vec<u8> {
        let mut mac = labelled_mac(&self.index, purpose);
        mac.update(value);
        mac.finalize().into_bytes().to_vec()
    }

    fn audit_mac(&self) -> Hmac<Sha256> {
        labelled_mac(&self.audit, Purpose::AuditChain)
    }

    fn cipher(&self) -> Result<XChaCha20Poly1305, VaultError> {
        XChaCha20Poly1305::new_from_slice(&self.secrets[..32])
            .map_err(|_| VaultError::Encrypt("bad secrets key".into()))
    }

    fn seal(&self, purpose: Purpose, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.seal_with_nonce(purpose, &rand::rng().random(), plaintext)
    }

    /// [`InstallationKeys::seal`] with a given nonce, so tests can pin the
    /// output. A nonce must never be reused under the same key.
    fn seal_with_nonce(
        &self,
        purpose: Purpose,
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let sealed = self
            .cipher()?
            .encrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose.label().as_bytes(),
                },
            )
            .map_err(|_| VaultError::Encrypt("sealing a secret failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, purpose: Purpose, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        if sealed.len() < NONCE_LEN {
            return Err(VaultError::Corrupt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher()?
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: purpose.label().as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| VaultError::Corrupt)
    }
}

/// An HMAC-SHA256 under `key` that has already taken in `purpose`'s label
/// and a NUL, so equal values hashed for different purposes never match.
fn labelled_mac(key: &[u8; 64], purpose: Purpose) -> Hmac<Sha256> {
    // The key is exactly one SHA-256 block, so no length can be wrong here.
    let key = hmac::digest::generic_array::GenericArray::from_slice(&key[..]);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(key);
    mac.update(purpose.label().as_bytes());
    mac.update(b"\0");
    mac
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

/// A 64-byte (one SHA-256 block) key for one use of the root secret.
fn derive_key(root: &[u8], derivation: Derivation) -> Result<Zeroizing<[u8; 64]>, VaultError> {
    let mut out = Zeroizing::new([0u8; 64]);
    hkdf::Hkdf::<Sha256>::new(None, root)
        .expand(derivation.info(), &mut out[..])
        .map_err(|_| VaultError::Encrypt("key derivation failed".into()))?;
    Ok(out)
}
