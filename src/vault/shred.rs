//! Crypto-shredding: once the wrapped identity is gone, nothing of the
//! message can be decrypted with any key; the blobs follow.

use std::sync::Arc;

use super::blobs::BlobKey;
use super::{MessageId, Vault, VaultError};
use crate::store::{Tx, messages};

impl Vault {
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
        let key = id.to_string();
        match messages::shredded_at(tx, &key).await? {
            None => return Err(VaultError::NotFound),
            Some(Some(_)) => return Ok(None),
            Some(None) => {}
        }
        let blobs = messages::shred(tx, &key, self.inner.clock.now()).await?;
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
