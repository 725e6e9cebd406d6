//! Where ciphertext lives. Only age files ever reach a blob store; names are
//! random and generated here, never derived from anything a user sent.
//!
//! A blob becomes durable in the order temp file → fsync → rename → fsync of
//! the folder; the caller then commits the database row that references it.
//! A crash anywhere before that commit leaves an unreferenced blob or a temp
//! file, which [`crate::vault::Vault::sweep`] removes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rand::RngExt;

use crate::private_fs;

/// A generated blob name: 32 lowercase hex characters (128 random bits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey(String);

impl BlobKey {
    pub(super) fn generate() -> Self {
        let bytes: [u8; 16] = rand::rng().random();
        BlobKey(hex::encode(bytes))
    }

    /// Accepts only names this module could have generated, so a tampered
    /// database row can never point outside the store.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| BlobKey(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a store holds, as listed for the orphan sweep.
#[derive(Debug)]
pub enum StoredEntry {
    Blob {
        key: BlobKey,
        modified: SystemTime,
    },
    /// An unfinished write (temp file).
    Partial {
        name: String,
        modified: SystemTime,
    },
}

/// A blob being written. Dropping it without [`BlobWriter::commit`] removes
/// what was written.
pub trait BlobWriter: Write + Send {
    /// Makes the blob durable and visible under a new key.
    fn commit(self: Box<Self>) -> io::Result<BlobKey>;
}

pub trait BlobStore: Send + Sync + 'static {
    fn create(&self) -> io::Result<Box<dyn BlobWriter>>;
    fn open(&self, key: &BlobKey) -> io::Result<Box<dyn Read + Send>>;
    /// Deletes a blob; deleting one that is already gone is not an error.
    fn delete(&self, key: &BlobKey) -> io::Result<()>;
    fn list(&self) -> io::Result<Vec<StoredEntry>>;
    fn delete_partial(&self, name: &str) -> io::Result<()>;
    /// Checks that the store can be written to now (for readiness probes).
    fn ping(&self) -> io::Result<()>;
}

/// Blobs in a local folder: `ab/<key>.age` (256 shards keep folders small)
/// and unfinished writes in `tmp/` on the same file system, so the final
/// rename is atomic.
#[derive(Debug)]
pub struct LocalBlobStore {
    root: PathBuf,
}

const TMP_DIR: &str = "tmp";
const BLOB_SUFFIX: &str = ".age";
const TMP_SUFFIX: &str = ".partial";

impl LocalBlobStore {
    /// Opens (and creates, mode 0700) the store folder.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        create_private_dir(&root)?;
        create_private_dir(&root.join(TMP_DIR))?;
        Ok(LocalBlobStore { root })
    }

    fn path_of(&self, key: &BlobKey) -> PathBuf {
        self.root
            .join(&key.0[..2])
            .join(format!("{}{BLOB_SUFFIX}", key.0))
    }
}

/// The store's own folders are always private, even if they existed before.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    private_fs::create_dir(dir)?;
    let mut perms = fs::metadata(dir)?.permissions();
    if perms.mode() & 0o077 != 0 {
        perms.set_mode(0o700);
        fs::set_permissions(dir, perms)?;
    }
    Ok(())
}

impl BlobStore for LocalBlobStore {
    fn create(&self) -> io::Result<Box<dyn BlobWriter>> {
        let name = format!("{}{TMP_SUFFIX}", BlobKey::generate().0);
        let tmp_path = self.root.join(TMP_DIR).join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)?;
        Ok(Box::new(LocalBlobWriter {
            file: Some(file),
            tmp_path,
            root: self.root.clone(),
        }))
    }

    fn open(&self, key: &BlobKey) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(self.path_of(key))?))
    }

    fn delete(&self, key: &BlobKey) -> io::Result<()> {
        match fs::remove_file(self.path_of(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn list(&self) -> io::Result<Vec<StoredEntry>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?;
            let shard_name = shard.file_name();
            let Some(shard_name) = shard_name.to_str() else {
                continue;
            };
            if !shard.file_type()?.is_dir() {
                continue;
            }
            let is_tmp = shard_name == TMP_DIR;
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let modified = entry.metadata()?.modified()?;
                if is_tmp {
                    if name.ends_with(TMP_SUFFIX) {
                        out.push(StoredEntry::Partial { name, modified });
                    }
                } else if let Some(key) = name.strip_suffix(BLOB_SUFFIX).and_then(BlobKey::parse) {
                    out.push(StoredEntry::Blob { key, modified });
                }
            }
        }
        Ok(out)
    }

    fn delete_partial(&self, name: &str) -> io::Result<()> {
        // Only names `list` produced: a bare file name with our suffix.
        if name.contains('/') || !name.ends_with(TMP_SUFFIX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a partial blob name",
            ));
        }
        match fs::remove_file(self.root.join(TMP_DIR).join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Creates and removes a file where blobs are written. Named like an
    /// unfinished write, so the sweep removes it if a crash leaves it behind.
    fn ping(&self) -> io::Result<()> {
        let probe = self
            .root
            .join(TMP_DIR)
            .join(format!("{}{TMP_SUFFIX}", BlobKey::generate().0));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&probe)?;
        fs::remove_file(&probe)
    }
}

struct LocalBlobWriter {
    file: Option<File>,
    tmp_path: PathBuf,
    root: PathBuf,
}

impl Write for LocalBlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("blob writer already finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl BlobWriter for LocalBlobWriter {
    fn commit(mut self: Box<Self>) -> io::Result<BlobKey> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        file.sync_all()?;
        drop(file);
        let key = BlobKey::generate();
        let shard = self.root.join(&key.0[..2]);
        if !shard.exists() {
            create_private_dir(&shard)?;
            private_fs::sync_dir(&self.root)?;
        }
        let dest = shard.join(format!("{}{BLOB_SUFFIX}", key.0));
        fs::rename(&self.tmp_path, &dest)?;
        private_fs::sync_dir(&shard)?;
        Ok(key)
    }
}

impl Drop for LocalBlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Not committed: nothing of this write should outlive it.
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_strictly_validated() {
        assert!(BlobKey::parse("0123456789abcdef0123456789abcdef").is_some());
        assert!(BlobKey::parse("../../etc/passwd").is_none());
        assert!(BlobKey::parse("0123456789ABCDEF0123456789abcdef").is_none());
        assert!(BlobKey::parse("0123").is_none());
    }

    #[test]
    fn dropped_writer_leaves_nothing() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = LocalBlobStore::open(dir.path())?;
        let mut w = store.create()?;
        w.write_all(b"ciphertext")?;
        drop(w);
        assert!(store.list()?.is_empty());
        let mut w = store.create()?;
        w.write_all(b"ciphertext")?;
        let key = w.commit()?;
        let mut back = Vec::new();
        store.open(&key)?.read_to_end(&mut back)?;
        assert_eq!(back, b"ciphertext");
        assert_eq!(store.list()?.len(), 1);
        store.delete(&key)?;
        store.delete(&key)?;
        assert!(store.list()?.is_empty());
        Ok(())
    }
}
