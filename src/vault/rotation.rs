//! Master key rotation and retirement. Rotation re-wraps per-message
//! identities (and installation secrets) to the newest master key in small
//! batches; blobs are never touched. Each re-wrap is a compare-and-set on the
//! row's current master key, so rotation is idempotent, resumable after a
//! crash, and safe while instances serve (or run the same rotation).

use super::keyring::{Keyring, MasterKeyId};
use super::lease::JobLease;
use super::{Vault, VaultError, envelope, register_keys};
use crate::store::keys;

/// The lease rotation and retirement hold (see [`JobLease`]).
const ROTATION_LEASE: &str = "master-key-rotation";

/// Rows re-wrapped per transaction.
const BATCH: i64 = 200;

/// One master key as `sealpost keys status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStatus {
    pub id: MasterKeyId,
    pub recipient: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub in_key_file: bool,
    pub newest: bool,
    /// Message identities wrapped by this key.
    pub messages: i64,
    /// Installation secrets wrapped by this key.
    pub secrets: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotateReport {
    /// The key everything is now wrapped to.
    pub target: MasterKeyId,
    /// True if this run added that key; false if it finished an earlier,
    /// interrupted rotation instead of adding yet another key.
    pub added_key: bool,
    pub rewrapped: u64,
}

/// Whether [`Vault::count_wrapped`] counts what a key wraps, or what every
/// other key wraps.
#[derive(Clone, Copy)]
enum Wrapped {
    By,
    NotBy,
}

/// Told `(done, total)` as a rotation re-wraps keys.
pub type Progress = dyn Fn(u64, u64) + Send + Sync;

impl Vault {
    pub async fn key_status(&self) -> Result<Vec<KeyStatus>, VaultError> {
        let ring = Keyring::load(self.keyring().path())?;
        let rows = keys::usage(self.db()).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let id = MasterKeyId::from_db(row.id);
                KeyStatus {
                    in_key_file: ring.get(&id).is_some(),
                    newest: ring.newest().id == id,
                    id,
                    recipient: row.recipient,
                    created_at: row.created_at,
                    retired_at: row.retired_at,
                    messages: row.messages,
                    secrets: row.secrets,
                }
            })
            .collect())
    }

    /// Number of wrapped items on key `id` (`Wrapped::By`) or on any
    /// other key (`Wrapped::NotBy`).
    async fn count_wrapped(&self, which: Wrapped, id: &MasterKeyId) -> Result<i64, VaultError> {
        let by = matches!(which, Wrapped::By);
        let mut total = 0;
        for table in keys::Wrapped::ALL {
            total += keys::count_wrapped(self.db(), table, id.as_str(), by).await?;
        }
        Ok(total)
    }

    /// Adds a new master key to the key file and re-wraps everything to it.
    /// If an earlier rotation did not finish, finishes that one instead.
    ///
    /// Runs under a cluster-wide lease: two rotations started together (from
    /// two instances, say) run one after the other, and the second one sees
    /// the key the first added and only finishes its re-wrap instead of
    /// adding yet another key. The lease also keeps two writers of one key
    /// file from dropping each other's new key.
    pub async fn rotate(&self) -> Result<RotateReport, VaultError> {
        self.rotate_with_progress(&|_, _| {}).await
    }

    /// [`Vault::rotate`], telling `progress` how many wrapped keys are done
    /// of how many after each batch.
    pub async fn rotate_with_progress(
        &self,
        progress: &Progress,
    ) -> Result<RotateReport, VaultError> {
        let seen_newest = Keyring::load(self.keyring().path())?.newest().id.clone();
        let lease = JobLease::acquire(self.db(), &self.inner.clock, ROTATION_LEASE).await?;
        let result = self.rotate_holding(&lease, &seen_newest, progress).await;
        let released = lease.release().await;
        let report = result?;
        released?;
        Ok(report)
    }

    async fn rotate_holding(
        &self,
        lease: &JobLease,
        seen_newest: &MasterKeyId,
        progress: &Progress,
    ) -> Result<RotateReport, VaultError> {
        let mut ring = Keyring::load(self.keyring().path())?;
        // A crash between writing the key file and registering the key.
        register_keys(self.db(), &ring, self.inner.clock.now()).await?;
        let mut added_key = false;
        let rotated_meanwhile = &ring.newest().id != seen_newest;
        if !rotated_meanwhile
            && self
                .count_wrapped(Wrapped::NotBy, &ring.newest().id)
                .await?
                == 0
        {
            let id = ring.add_new_key()?;
            tracing::warn!(key_id = %id, key_file = %ring.path().display(),
                "added a new master key. Back up the key file again now");
            register_keys(self.db(), &ring, self.inner.clock.now()).await?;
            added_key = true;
        }
        let target = ring.newest().id.clone();
        self.set_keyring(ring);
        let rewrapped = self.rewrap_all(&target, lease, progress).await?;
        Ok(RotateReport {
            target,
            added_key,
            rewrapped,
        })
    }

    async fn rewrap_all(
        &self,
        target: &MasterKeyId,
        lease: &JobLease,
        progress: &Progress,
    ) -> Result<u64, VaultError> {
        let ring = self.keyring();
        let new_key = ring
            .get(target)
            .ok_or_else(|| VaultError::MasterKeyMissing(target.clone()))?;
        let total = u64::try_from(self.count_wrapped(Wrapped::NotBy, target).await?).unwrap_or(0);
        let mut done = 0u64;
        for table in keys::Wrapped::ALL {
            let mut after = String::new();
            loop {
                let rows =
                    keys::not_wrapped_by(self.db(), table, target.as_str(), &after, BATCH).await?;
                let Some(last) = rows.last() else {
                    break;
                };
                after.clone_from(&last.id);
                if !lease.renew().await? {
                    return Err(VaultError::KeyManagement(
                        "another process took over the key rotation; run `sealpost keys rotate` again".into(),
                    ));
                }
                let mut tx = self.db().begin().await?;
                for row in &rows {
                    let old = MasterKeyId::from_db(row.master_key_id.clone());
                    let plain = self.unwrap_with(&ring, &old, &row.wrapped)?;
                    let rewrapped = envelope::seal_small(&[&new_key.recipient], &plain)?;
                    // Compare-and-set: a concurrent rotation or shred wins harmlessly.
                    let updated = keys::rewrap(
                        &mut tx,
                        table,
                        &row.id,
                        old.as_str(),
                        target.as_str(),
                        &rewrapped,
                    )
                    .await?;
                    done += u64::from(updated);
                }
                tx.commit().await?;
                progress(done, total);
            }
        }
        Ok(done)
    }

    /// Removes a master key from the key file and marks it retired. Refuses
    /// while anything is still wrapped by it, and for the newest key.
    pub async fn retire(&self, id: &MasterKeyId) -> Result<(), VaultError> {
        // The same lease as rotation: both rewrite the key file.
        let lease = JobLease::acquire(self.db(), &self.inner.clock, ROTATION_LEASE).await?;
        let result = self.retire_holding(id).await;
        let released = lease.release().await;
        result?;
        released?;
        Ok(())
    }

    async fn retire_holding(&self, id: &MasterKeyId) -> Result<(), VaultError> {
        let mut ring = Keyring::load(self.keyring().path())?;
        if !keys::exists(self.db(), id.as_str()).await? {
            return Err(VaultError::KeyManagement(format!(
                "no master key with id {id}"
            )));
        }
        if &ring.newest().id == id {
            return Err(VaultError::KeyManagement(format!(
                "master key {id} is the newest key and wraps new messages; rotate to a new key first"
            )));
        }
        let dependents = self.count_wrapped(Wrapped::By, id).await?;
        if dependents > 0 {
            return Err(VaultError::KeyManagement(format!(
                "master key {id} still wraps {dependents} item(s); run `sealpost keys rotate` to finish re-wrapping, then retire"
            )));
        }
        ring.remove_key(id)?;
        keys::retire(self.db(), id.as_str(), self.inner.clock.now()).await?;
        self.set_keyring(ring);
        Ok(())
    }
}
