//! Escrow export: a message's age files, byte for byte, plus a manifest, so
//! an escrow holder can decrypt them with the standard `age` CLI
//! (`age -d -i escrow-key.txt part-00-body.age`). Customer metadata (address,
//! file names, …) goes in `metadata.age`, encrypted to the same escrow
//! recipients; the plain `manifest.json` holds ids, sizes and hashes only.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use age::x25519;
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::private_fs;

use super::{MessageId, MessageMeta, PartKind, PartMeta, Vault, VaultError, envelope};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportReport {
    pub dir: PathBuf,
    pub files: Vec<String>,
}

#[derive(Serialize)]
struct Manifest<'a> {
    format: &'static str,
    message_id: String,
    created_at: i64,
    escrow_recipients: Vec<String>,
    parts: Vec<ManifestPart>,
    metadata_file: &'static str,
    how_to_decrypt: &'a str,
}

#[derive(Serialize)]
struct ManifestPart {
    file: String,
    position: u32,
    kind: PartKind,
    plaintext_bytes: u64,
    ciphertext_bytes: u64,
    ciphertext_sha256: String,
}

#[derive(Serialize)]
struct Metadata {
    message: MessageMeta,
    parts: Vec<MetadataPart>,
}

#[derive(Serialize)]
struct MetadataPart {
    file: String,
    #[serde(flatten)]
    meta: PartMeta,
}

const METADATA_FILE: &str = "metadata.age";

impl Vault {
    /// Writes the export into `dir`, which must not exist yet or be empty.
    pub async fn export(&self, id: MessageId, dir: &Path) -> Result<ExportReport, VaultError> {
        let row = crate::store::messages::escrow(self.db(), &id.to_string())
            .await?
            .ok_or(VaultError::NotFound)?;
        let (escrow, created_at) = (row.escrow_recipients, row.created_at);
        let escrow: Vec<x25519::Recipient> = escrow
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| x25519::Recipient::from_str(s).map_err(|_| VaultError::Corrupt))
            .collect::<Result<_, _>>()?;
        if escrow.is_empty() {
            return Err(VaultError::NoEscrow);
        }
        let key = self.unlock(id).await?;
        let parts = self.parts(id).await?;
        prepare_dir(dir)?;

        let mut manifest_parts = Vec::new();
        let mut metadata_parts = Vec::new();
        let mut files = Vec::new();
        for part in &parts {
            let file = format!("part-{:02}-{}.age", part.position, part.kind.as_str());
            let store = Arc::clone(&self.inner.blobs);
            let blob = part.blob.clone();
            let dest = dir.join(&file);
            let (bytes, sha) = tokio::task::spawn_blocking(move || -> io::Result<(u64, String)> {
                copy_hashing(store.open(&blob)?, &dest)
            })
            .await
            .map_err(|e| VaultError::Task(e.to_string()))??;
            if bytes != part.cipher_size {
                return Err(VaultError::Corrupt);
            }
            metadata_parts.push(MetadataPart {
                file: file.clone(),
                meta: key.part_meta(part)?,
            });
            manifest_parts.push(ManifestPart {
                file: file.clone(),
                position: part.position,
                kind: part.kind,
                plaintext_bytes: part.plain_size,
                ciphertext_bytes: bytes,
                ciphertext_sha256: sha,
            });
            files.push(file);
        }

        let metadata = Metadata {
            message: key.meta()?,
            parts: metadata_parts,
        };
        let json = Zeroizing::new(serde_json::to_vec_pretty(&metadata).map_err(io::Error::other)?);
        let recipients: Vec<&dyn age::Recipient> =
            escrow.iter().map(|r| r as &dyn age::Recipient).collect();
        write_file(
            &dir.join(METADATA_FILE),
            &envelope::seal_small(&recipients, &json)?,
        )?;
        files.push(METADATA_FILE.to_owned());

        let manifest = Manifest {
            format: "sealpost-escrow-export/1",
            message_id: id.to_string(),
            created_at,
            escrow_recipients: escrow.iter().map(|r| r.to_string()).collect(),
            parts: manifest_parts,
            metadata_file: METADATA_FILE,
            how_to_decrypt: "age -d -i ESCROW_IDENTITY_FILE -o OUTPUT FILE (each .age file; metadata.age holds file names and recipient details)",
        };
        let text = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
        write_file(&dir.join("manifest.json"), &text)?;
        files.push("manifest.json".to_owned());
        private_fs::sync_dir(dir)?;
        Ok(ExportReport {
            dir: dir.to_owned(),
            files,
        })
    }
}

fn prepare_dir(dir: &Path) -> Result<(), VaultError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(VaultError::Export(format!(
                    "{} is not empty; choose a new folder",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            private_fs::create_dir(dir)?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = create_new(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn copy_hashing(mut input: impl Read, dest: &Path) -> io::Result<(u64, String)> {
    let mut out = create_new(dest)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
    out.sync_all()?;
    Ok((total, hex::encode(hasher.finalize())))
}
