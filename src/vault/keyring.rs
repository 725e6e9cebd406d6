//! Master key custody. The master keys are age X25519 identities in one key
//! file, in the standard age identity-file format (so `age -d -i master.key`
//! works in a disaster), oldest first. The newest key wraps; every key in the
//! file unwraps. The file must not be readable by group or others.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::x25519;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::private_fs;

/// A master key's id: the first 16 hex characters of SHA-256 over its public
/// key. Stable, public, and safe to print.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MasterKeyId(String);

impl MasterKeyId {
    pub fn of(recipient: &x25519::Recipient) -> Self {
        let digest = Sha256::digest(recipient.to_string().as_bytes());
        MasterKeyId(hex::encode(&digest[..8]))
    }

    pub fn from_db(s: String) -> Self {
        MasterKeyId(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MasterKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct MasterKey {
    pub id: MasterKeyId,
    pub recipient: x25519::Recipient,
    identity: x25519::Identity,
}

impl MasterKey {
    pub fn identity(&self) -> &x25519::Identity {
        &self.identity
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("identity", &"***")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// No key file where one is required (the database already depends on it).
    #[error(
        "master key file {0} is missing. The database already holds data wrapped by a master key: restore the key file from your backup (see README, 'Back up the master key')"
    )]
    Missing(PathBuf),
    /// Group or others can read the file.
    #[error(
        "master key file {path} is readable by group or others (mode {mode:o}); refusing to start. Run: chmod 600 {path}"
    )]
    Insecure { path: PathBuf, mode: u32 },
    /// The file holds no identity, or a line that is not one.
    #[error("master key file {path}: line {line} is not an age X25519 identity")]
    Invalid { path: PathBuf, line: usize },
    #[error("master key file {0} holds no keys")]
    Empty(PathBuf),
    #[error("master key file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The loaded master keys, oldest first.
#[derive(Debug)]
pub struct Keyring {
    path: PathBuf,
    keys: Vec<MasterKey>,
}

impl Keyring {
    /// Loads the key file, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<Keyring, KeyFileError> {
        let io_err = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(KeyFileError::Missing(path.to_owned()));
            }
            Err(e) => return Err(io_err(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Insecure {
                path: path.to_owned(),
                mode,
            });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err)?);
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let identity = x25519::Identity::from_str(line).map_err(|_| KeyFileError::Invalid {
                path: path.to_owned(),
                line: n + 1,
            })?;
            let recipient = identity.to_public();
            keys.push(MasterKey {
                id: MasterKeyId::of(&recipient),
                recipient,
                identity,
            });
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty(path.to_owned()));
        }
        Ok(Keyring {
            path: path.to_owned(),
            keys,
        })
    }

    /// Creates a key file with one fresh key (mode 0600). Fails if the file exists.
    pub fn create(path: &Path) -> Result<Keyring, KeyFileError> {
        let key = x25519::Identity::generate();
        let mut text = Zeroizing::new(String::new());
        append_entry(&mut text, &key);
        write_key_file(path, &text, true)?;
        Keyring::load(path)
    }

    /// Adds a fresh key as the newest and rewrites the file atomically.
    pub fn add_new_key(&mut self) -> Result<MasterKeyId, KeyFileError> {
        let key = x25519::Identity::generate();
        let mut text = self.render();
        append_entry(&mut text, &key);
        write_key_file(&self.path, &text, false)?;
        *self = Keyring::load(&self.path)?;
        Ok(self.newest().id.clone())
    }

    /// Removes a key from the file (atomic rewrite). The caller checks that
    /// nothing depends on it. The newest key is never removed (it is the one
    /// that wraps); returns whether a key was removed.
    pub fn remove_key(&mut self, id: &MasterKeyId) -> Result<bool, KeyFileError> {
        if &self.newest().id == id {
            return Ok(false);
        }
        let before = self.keys.len();
        self.keys.retain(|k| &k.id != id);
        if self.keys.len() == before {
            return Ok(false);
        }
        let text = self.render();
        write_key_file(&self.path, &text, false)?;
        Ok(true)
    }

    fn render(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::new());
        for k in &self.keys {
            append_entry(&mut text, &k.identity);
        }
        text
    }

    /// The key that wraps new material.
    pub fn newest(&self) -> &MasterKey {
        // `load` refuses an empty file, so there is always a last key.
        &self.keys[self.keys.len() - 1]
    }

    pub fn get(&self, id: &MasterKeyId) -> Option<&MasterKey> {
        self.keys.iter().find(|k| &k.id == id)
    }

    pub fn keys(&self) -> &[MasterKey] {
        &self.keys
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn append_entry(text: &mut String, identity: &x25519::Identity) {
    let secret = identity.to_string();
    text.push_str(&format!(
        "# Sealpost master key {}\n# public key: {}\n{}\n",
        MasterKeyId::of(&identity.to_public()),
        identity.to_public(),
        secret.expose_secret()
    ));
}

/// Writes the key file through a 0600 temp file, fsync, rename and folder
/// fsync, so a crash leaves either the old or the new file, never half of one.
fn write_key_file(path: &Path, text: &str, must_be_new: bool) -> Result<(), KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    private_fs::create_dir(&dir).map_err(io_err)?;
    if must_be_new && path.exists() {
        return Err(io_err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "refusing to overwrite an existing key file",
        )));
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "master.key".to_owned());
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        private_fs::sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_add_remove_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("keys").join("master.key");
        let mut ring = Keyring::create(&path)?;
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        let first = ring.newest().id.clone();
        let second = ring.add_new_key()?;
        assert_ne!(first, second);
        assert_eq!(Keyring::load(&path)?.newest().id, second);
        assert!(ring.remove_key(&first)?);
        let ring = Keyring::load(&path)?;
        assert_eq!(ring.keys().len(), 1);
        assert!(ring.get(&first).is_none());
        assert!(
            Keyring::create(&path).is_err(),
            "never overwrites a key file"
        );
        Ok(())
    }

    #[test]
    fn refuses_group_readable_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("master.key");
        Keyring::create(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640))?;
        assert!(matches!(
            Keyring::load(&path),
            Err(KeyFileError::Insecure { .. })
        ));
        Ok(())
    }
}
