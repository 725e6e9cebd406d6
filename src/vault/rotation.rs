//! Master key rotation and retirement. Rotation re-wraps per-message
//! identities (and installation secrets) to the newest master key in small
//! batches; blobs are never touched. Each re-wrap is a compare-and-set on the
//! row's current master key, so rotation is idempotent, resumable after a
//! crash, and safe while instances serve (or run the same rotation).

use sqlx::Row;

use super::keyring::{Keyring, MasterKeyId};
use super::lease::JobLease;
use super::{Vault, VaultError, envelope, register_keys};

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

#[derive(Clone, Copy)]
enum Wrapped {
    By,
    NotBy,
}

/// The two tables holding wrapped material, with their key column.
const WRAPPED: [(&str, &str, &str); 2] = [
    ("message_keys", "message_id", "wrapped_identity"),
    ("vault_secrets", "name", "wrapped"),
];

impl Vault {
    pub async fn key_status(&self) -> Result<Vec<KeyStatus>, VaultError> {
        let ring = Keyring::load(self.keyring().path())?;
        let rows = sqlx::query(
            "SELECT k.id, k.recipient, k.created_at, k.retired_at,
                    (SELECT COUNT(*) FROM message_keys m WHERE m.master_key_id = k.id),
                    (SELECT COUNT(*) FROM vault_secrets s WHERE s.master_key_id = k.id)
             FROM master_keys k ORDER BY k.created_at, k.id",
        )
        .fetch_all(self.db().pool())
        .await?;
        rows.iter()
            .map(|row| {
                let id = MasterKeyId::from_db(row.try_get(0)?);
                Ok(KeyStatus {
                    in_key_file: ring.get(&id).is_some(),
                    newest: ring.newest().id == id,
                    id,
                    recipient: row.try_get(1)?,
                    created_at: row.try_get(2)?,
                    retired_at: row.try_get(3)?,
                    messages: row.try_get(4)?,
                    secrets: row.try_get(5)?,
                })
            })
            .collect()
    }

    /// Number of wrapped items on key `id` (`Wrapped::By`) or on any
    /// other key (`Wrapped::NotBy`).
    async fn count_wrapped(&self, which: Wrapped, id: &MasterKeyId) -> Result<i64, VaultError> {
        let op = match which {
            Wrapped::By => "=",
            Wrapped::NotBy => "<>",
        };
        let mut total = 0;
        for (table, _, _) in WRAPPED {
            let n: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM {table} WHERE master_key_id {op} $1"
            ))
            .bind(id.as_str())
            .fetch_one(self.db().pool())
            .await?;
            total += n;
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
        let seen_newest = Keyring::load(self.keyring().path())?.newest().id.clone();
        let lease = JobLease::acquire(self.db(), &self.inner.clock, ROTATION_LEASE).await?;
        let result = self.rotate_holding(&lease, &seen_newest).await;
        let released = lease.release().await;
        let report = result?;
        released?;
        Ok(report)
    }

    async fn rotate_holding(
        &self,
        lease: &JobLease,
        seen_newest: &MasterKeyId,
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
        let rewrapped = self.rewrap_all(&target, lease).await?;
        Ok(RotateReport {
            target,
            added_key,
            rewrapped,
        })
    }

    async fn rewrap_all(&self, target: &MasterKeyId, lease: &JobLease) -> Result<u64, VaultError> {
        let ring = self.keyring();
        let new_key = ring
            .get(target)
            .ok_or_else(|| VaultError::MasterKeyMissing(target.clone()))?;
        let mut done = 0u64;
        for (table, id_col, wrapped_col) in WRAPPED {
            loop {
                let rows = sqlx::query(&format!(
                    "SELECT {id_col}, master_key_id, {wrapped_col} FROM {table}
                     WHERE master_key_id <> $1 ORDER BY {id_col} LIMIT {BATCH}"
                ))
                .bind(target.as_str())
                .fetch_all(self.db().pool())
                .await?;
                if rows.is_empty() {
                    break;
                }
                if !lease.renew().await? {
                    return Err(VaultError::KeyManagement(
                        "another process took over the key rotation; run `sealpost keys rotate` again".into(),
                    ));
                }
                let mut tx = self.db().begin().await?;
                for row in &rows {
                    let id: String = row.try_get(0)?;
                    let old = MasterKeyId::from_db(row.try_get(1)?);
                    let wrapped: Vec<u8> = row.try_get(2)?;
                    let plain = self.unwrap_with(&ring, &old, &wrapped)?;
                    let rewrapped = envelope::seal_small(&[&new_key.recipient], &plain)?;
                    // Compare-and-set: a concurrent rotation or shred wins harmlessly.
                    let updated = sqlx::query(&format!(
                        "UPDATE {table} SET master_key_id = $1, {wrapped_col} = $2
                         WHERE {id_col} = $3 AND master_key_id = $4"
                    ))
                    .bind(target.as_str())
                    .bind(rewrapped)
                    .bind(&id)
                    .bind(old.as_str())
                    .execute(&mut *tx)
                    .await?;
                    done += updated.rows_affected();
                }
                tx.commit().await?;
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
        let known: Option<String> = sqlx::query_scalar("SELECT id FROM master_keys WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.db().pool())
            .await?;
        if known.is_none() {
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
        sqlx::query("UPDATE master_keys SET retired_at = $1 WHERE id = $2 AND retired_at IS NULL")
            .bind(self.inner.clock.now())
            .bind(id.as_str())
            .execute(self.db().pool())
            .await?;
        self.set_keyring(ring);
        Ok(())
    }
}
