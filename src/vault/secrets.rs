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
use zeroize::Zeroizing;

use super::keyring::{Keyring, MasterKeyId};
use super::purpose::{Derivation, Purpose, ROOT_SECRET};
use super::{Vault, VaultError, envelope};
use crate::store::{Db, keys};

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
    let row = match keys::secret(db, name).await? {
        Some(row) => row,
        None => {
            let fresh = Zeroizing::new(rand::rng().random::<[u8; 32]>());
            let master = keyring.newest();
            let wrapped = envelope::seal_small(&[&master.recipient], &fresh[..])?;
            keys::insert_secret(db, name, master.id.as_str(), &wrapped).await?;
            // Another instance may have won the insert: read what is stored.
            keys::secret(db, name).await?.ok_or(VaultError::NotFound)?
        }
    };
    let master_key_id = MasterKeyId::from_db(row.master_key_id);
    let wrapped = row.wrapped;
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

#[cfg(test)]
mod tests {
    //! Known answers. Every value here was computed once, independently of
    //! this code (Python's `hmac`/`hashlib` and `cryptography`, with HKDF
    //! and HChaCha20 written out), and must never change: existing links,
    //! hashes and sealed columns depend on them. A failure here means a label
    //! or a derivation changed; fix the code, not the table.

    use std::collections::HashSet;

    use super::*;

    /// A fixed stand-in for an installation's root secret.
    const ROOT: [u8; 32] = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        25, 26, 27, 28, 29, 30, 31,
    ];

    const INPUT: &[u8] = b"sealpost known answer";

    /// For each of [`Purpose::ALL`], in order: its label and the hex of
    /// `keyed_hash(purpose, INPUT)` under the keys derived from [`ROOT`].
    const PINNED: [(&str, &str); 33] = [
        (
            "recipient-address",
            "8ca22b73e40df76e804da55dd2a3adf9855325ec0c3204425783db8134706534",
        ),
        (
            "pickup-link",
            "6183312d61e346a07b886932e10c9a21c0929d04fed2e4e94948a5f2aa4dde6a",
        ),
        (
            "pickup-code",
            "9afee970a0ec093ff96feac960ca12b4ef8b85fa9a8d5335170b9d1e97cfc3a3",
        ),
        (
            "codes-per-message",
            "7eec83090fcbe45d78633acaddbc6db9254fdab0881cfbe7f8177e6ba34f8785",
        ),
        (
            "codes-per-ip",
            "809f43fef2458a76bd0820917d377527bd03e1ae9b6b35f01d0d936300fd064e",
        ),
        (
            "verify-per-ip",
            "5a1f077fe9f968f53e6deefaa6c171c659ea7859b981cd332bd1d34336db6995",
        ),
        (
            "link-reused",
            "a78d64f9a67b1423ac4296058e406cadf33ecf59922a0c55b788f481a6857571",
        ),
        (
            "reused-per-ip",
            "594171edebb4a93c5bb107565939036e8480ee9827c92373f8cd0ecb3da76784",
        ),
        (
            "sign-in-account",
            "30a48ed6f1180bab753ad3ccd51f0e92eca7758d759f6942781ae400e8b7f5ce",
        ),
        (
            "sign-in-ip",
            "ee24e672b274b8ee76bc0afb28b8ef8a3c26b1fff89edab21ad917abbc9c27a0",
        ),
        (
            "sign-in-account-ip",
            "65c969054a7a8ae7e095f351df79540e5baf6e856ea630719bdb225074768d8a",
        ),
        (
            "sign-in-device",
            "31fdc422201e9a0591cc579f0c978e2f6a36640a4fbe8a9a39557e32fdcc5d77",
        ),
        (
            "staff-link",
            "320ce6277f00ed6f12570ab3a6c03654db4aa4b71dda80007e63096163927a01",
        ),
        (
            "staff-recovery-code",
            "4053b6adbc62d3ad1657f7bc2892ef482f3202cf522485b8adb67dfd1ebd0b97",
        ),
        (
            "csrf-anonymous",
            "98a7f551a8ba782d422d257f478e740dbfbe89aa499a1f95cd3d443bc89ef372",
        ),
        (
            "inbox-code",
            "f93224df166b2508984d270c83f72b0ad8bda0bdc8725e01408386c1e7882869",
        ),
        (
            "inbox-codes-per-address",
            "6d306cba9fe53cb3c338066c01075f69d0a8439836fa228268d992a479066f13",
        ),
        (
            "inbox-codes-per-ip",
            "1bc03ceefe68933ec3f0827effc428b35a716d5acc831da9f59711f9b02f3c30",
        ),
        (
            "inbox-verify-per-ip",
            "170dbfc8daba4fd1c55e759c435586a4f8fafc1e48f0ac13efd7e6a096a24b1b",
        ),
        (
            "inbox-uploads-per-address",
            "b1d80293ba5943be3879d71234803e9318af5eb5b605b764568aed42237f2883",
        ),
        (
            "inbox-daily",
            "103ee7b880a128fde45ae615bf9bc897a55686c2ec51cf5afba95fd69ea0e5d7",
        ),
        (
            "api-token",
            "7b22bb661c5b732c5ada0c937000f8d5365d52571cde3d1c4560e2897e529898",
        ),
        (
            "idempotency-key",
            "5faa8701a39529212480c4e18b1aabb5bc63830af64c24a5b78c7c4f99fe5ea9",
        ),
        (
            "idempotency-request",
            "d27c26fd9836da4b42a43812559c0b9df651d2f2f47e051e8fca5031496b3fec",
        ),
        (
            "delivery-recipient",
            "a52763f9d69c91f7d625f253c6a5bc2227888b26d8c0a8f161b60ee66c310aae",
        ),
        (
            "outbox",
            "dbdd63574152ab150389a1446b7df658324cfad00f792f36e7e64fbba9a349bc",
        ),
        (
            "dev-mailbox",
            "6c402b87e54b48a4a9607fd601822de85f3e3cab7bf5b5b4e7b32320c27aad26",
        ),
        (
            "generated_access_code",
            "33a7455c5da3167f72d1e8e92ecda258c00bf9b4ae557fdc40cc26674d58cfc1",
        ),
        (
            "staff-totp-seed",
            "00f9eeda65d448643454151c606263c1b2eb79ae9c8d36901183333c3061d431",
        ),
        (
            "inbox-address",
            "7c98586bcf07fd503fe0d474ad23a0f1f49972e1211de86d756c5cec11aaf59d",
        ),
        (
            "idempotent-response",
            "11e5d465eaefb4b41639b90946853dffe2e1fc82bedd89fa50d409e79b8b4f80",
        ),
        (
            "webhook-secret",
            "43228c28fe5260317f5b1010292949de001ef857f56a5d640e1374f7c017440e",
        ),
        (
            "sealpost-audit-v1",
            "f2db913704f766469d9a9507e0a75532afb99184bafa9079892ce0485e6d451a",
        ),
    ];

    /// The audit chain's MAC of [`INPUT`] under the keys from [`ROOT`].
    const PINNED_AUDIT: &str = "3f7837f623418103cb83e8ecf516be70c4680e2793fa52089bd5869cddb72847";

    /// A fixed nonce, for pinning sealed output only.
    const NONCE: [u8; NONCE_LEN] = [
        100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117,
        118, 119, 120, 121, 122, 123,
    ];

    const PLAIN: &[u8] = b"sealpost sealed answer";

    /// `PLAIN` sealed under the keys from [`ROOT`] with [`NONCE`], for each
    /// purpose sealed today. The same bytes must keep opening.
    const PINNED_SEALED: [(Purpose, &str); 6] = [
        (
            Purpose::DeliveryRecipient,
            "6465666768696a6b6c6d6e6f707172737475767778797a7b8ba9865dcaf3dacf3f51272c8f99364909003076596b76e8daf579f05c82c11fbf1d487cfa38",
        ),
        (
            Purpose::OutboxPayload,
            "6465666768696a6b6c6d6e6f707172737475767778797a7b8ba9865dcaf3dacf3f51272c8f99364909003076596bafb19a0a2ca84275ceb11f10cf84a68a",
        ),
        (
            Purpose::DevMailbox,
            "6465666768696a6b6c6d6e6f707172737475767778797a7b8ba9865dcaf3dacf3f51272c8f99364909003076596bf6ea73bad85c8b5ab6aa5865af6d7747",
        ),
        (
            Purpose::GeneratedAccessCode,
            "6465666768696a6b6c6d6e6f707172737475767778797a7b8ba9865dcaf3dacf3f51272c8f99364909003076596b57f3196c33d3f9b130dbbf76283d8b42",
        ),
        (
            Purpose::StaffTotpSeed,
            "6465666768696a6b6c6d6e6f707172737475767778797a7b8ba9865dcaf3dacf3f51272c8f99364909003076596bc1ccce8ce8db8a918254e32b2afdf43a",
        ),
        (
            Purpose::WebhookSecret,
            "6465666768696a6b6c6d6e6f707172737475767778797a7b8ba9865dcaf3dacf3f51272c8f99364909003076596bdb6e2f04355cb805a194f53f5d29c79c",
        ),
    ];

    fn keys() -> InstallationKeys {
        InstallationKeys::derive(&ROOT).expect("derive")
    }

    #[test]
    fn every_purpose_has_its_pinned_label_and_keyed_hash() {
        let keys = keys();
        assert_eq!(
            Purpose::ALL.len(),
            PINNED.len(),
            "a purpose was added or removed: pin its label and keyed hash here"
        );
        for (&purpose, &(label, hash)) in Purpose::ALL.iter().zip(PINNED.iter()) {
            assert_eq!(purpose.label(), label, "{purpose:?} was relabelled");
            assert_eq!(
                hex::encode(keys.keyed_hash(purpose, INPUT)),
                hash,
                "{purpose:?}'s keyed hash changed"
            );
        }
    }

    #[test]
    fn purposes_and_labels_are_all_distinct() {
        let variants: HashSet<Purpose> = Purpose::ALL.iter().copied().collect();
        let labels: HashSet<&str> = Purpose::ALL.iter().map(|p| p.label()).collect();
        assert_eq!(
            variants.len(),
            Purpose::ALL.len(),
            "a purpose is listed twice"
        );
        assert_eq!(
            labels.len(),
            Purpose::ALL.len(),
            "two purposes share a label"
        );
    }

    #[test]
    fn audit_mac_is_pinned() {
        let mac = keys().audit_mac().chain_update(INPUT).finalize();
        assert_eq!(hex::encode(mac.into_bytes()), PINNED_AUDIT);
    }

    #[test]
    fn sealed_secrets_are_pinned_and_bound_to_their_purpose() {
        let keys = keys();
        for (purpose, sealed) in PINNED_SEALED {
            let sealed = hex::decode(sealed).expect("hex");
            assert_eq!(
                keys.seal_with_nonce(purpose, &NONCE, PLAIN).expect("seal"),
                sealed,
                "sealing for {purpose:?} changed"
            );
            assert_eq!(&keys.open(purpose, &sealed).expect("open")[..], PLAIN);
            for &other in Purpose::ALL.iter().filter(|&&p| p != purpose) {
                assert!(
                    matches!(keys.open(other, &sealed), Err(VaultError::Corrupt)),
                    "a value sealed for {purpose:?} opens as {other:?}"
                );
            }
        }
    }

    #[test]
    fn sealing_uses_a_fresh_nonce_and_round_trips() {
        let keys = keys();
        let a = keys.seal(Purpose::StaffTotpSeed, PLAIN).expect("seal");
        let b = keys.seal(Purpose::StaffTotpSeed, PLAIN).expect("seal");
        assert_ne!(a, b, "two sealings share a nonce");
        for sealed in [a, b] {
            let opened = keys.open(Purpose::StaffTotpSeed, &sealed).expect("open");
            assert_eq!(&opened[..], PLAIN);
        }
        assert!(matches!(
            keys.open(Purpose::StaffTotpSeed, &[0u8; NONCE_LEN - 1]),
            Err(VaultError::Corrupt)
        ));
    }

    #[test]
    fn root_secret_row_name_is_pinned() {
        // Renaming the row would mint a fresh root secret on the next start
        // and with it new keys: every stored hash and sealed value lost.
        assert_eq!(ROOT_SECRET, "installation_root");
    }
}
