//! The orphan sweep: removes unfinished writes and blobs no database row
//! references (a crash mid-seal, a rolled-back commit, a shred interrupted
//! before its blobs were deleted). A grace period protects seals in flight,
//! whose blobs are durable before the row that references them commits.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::blobs::{BlobKey, StoredEntry};
use super::{Vault, VaultError};

/// Blob keys checked against the database per query.
const CHUNK: usize = 200;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub removed_blobs: usize,
    pub removed_partials: usize,
    pub kept_blobs: usize,
}

impl Vault {
    /// Removes orphans last modified more than `grace` ago.
    pub async fn sweep(&self, grace: Duration) -> Result<SweepReport, VaultError> {
        let store = Arc::clone(&self.inner.blobs);
        let entries = tokio::task::spawn_blocking(move || store.list())
            .await
            .map_err(|e| VaultError::Task(e.to_string()))??;
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = SweepReport::default();
        let mut candidates: Vec<BlobKey> = Vec::new();
        let mut stale_partials = Vec::new();
        for entry in entries {
            match entry {
                StoredEntry::Partial { name, modified } if modified <= cutoff => {
                    stale_partials.push(name);
                }
                StoredEntry::Blob { key, modified } if modified <= cutoff => candidates.push(key),
                StoredEntry::Blob { .. } => report.kept_blobs += 1,
                StoredEntry::Partial { .. } => {}
            }
        }
        let mut orphans = Vec::new();
        for chunk in candidates.chunks(CHUNK) {
            let keys: Vec<&str> = chunk.iter().map(|k| k.as_str()).collect();
            let referenced = crate::store::messages::referenced_blobs(self.db(), &keys).await?;
            for key in chunk {
                if referenced.iter().any(|r| r == key.as_str()) {
                    report.kept_blobs += 1;
                } else {
                    orphans.push(key.clone());
                }
            }
        }
        let store = Arc::clone(&self.inner.blobs);
        let (blobs, partials) = tokio::task::spawn_blocking(move || {
            let mut blobs = 0;
            let mut partials = 0;
            for key in &orphans {
                match store.delete(key) {
                    Ok(()) => blobs += 1,
                    Err(e) => tracing::warn!(blob = key.as_str(), error = %e, "sweep could not delete an orphaned blob"),
                }
            }
            for name in &stale_partials {
                match store.delete_partial(name) {
                    Ok(()) => partials += 1,
                    Err(e) => tracing::warn!(error = %e, "sweep could not delete an unfinished write"),
                }
            }
            (blobs, partials)
        })
        .await
        .map_err(|e| VaultError::Task(e.to_string()))?;
        report.removed_blobs = blobs;
        report.removed_partials = partials;
        if blobs + partials > 0 {
            tracing::info!(
                removed_blobs = blobs,
                removed_partials = partials,
                "blob sweep"
            );
        }
        Ok(report)
    }
}
