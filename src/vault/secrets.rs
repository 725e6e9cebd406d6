//! The installation secret and what is derived from it: the blind-index
//! key for keyed hashes, the audit chain key, and the key sealing small
//! server-side secrets. All survive master key rotation unchanged.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::RngExt;
use sha2::Sha256;
use sqlx::Row;
use zeroize::Zeroizing;

use super::keyring::{Keyring, MasterKeyId};
use super::{Vault, VaultError, envelope};
use crate::db::Db;

impl Vault {
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
}

/// Returns an installation-wide secret, creating it (wrapped to the newest
/// master key) on first use. Safe when several instances start at once.
pub(super) async fn ensure_secret(
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
pub(super) fn derive_key(secret: &[u8], purpose: &[u8]) -> Result<Zeroizing<[u8; 64]>, VaultError> {
    let mut out = Zeroizing::new([0u8; 64]);
    hkdf::Hkdf::<Sha256>::new(None, secret)
        .expand(purpose, &mut out[..])
        .map_err(|_| VaultError::Encrypt("key derivation failed".into()))?;
    Ok(out)
}
