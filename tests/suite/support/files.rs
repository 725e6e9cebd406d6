//! Bytes and files: deterministic test data, reading and writing whole
//! files, walking a folder, the local blob store's layout, the `age` CLI.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::{Rng, SeedableRng};

use crate::support::env::TestEnv;

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Path of a blob in the local store.
pub fn blob_path(env: &TestEnv, key: &str) -> PathBuf {
    env.blob_dir().join(&key[..2]).join(format!("{key}.age"))
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn write_file(path: &Path, data: &[u8]) {
    let mut f = std::fs::File::create(path).expect("create");
    f.write_all(data).expect("write");
}

pub fn read_file(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(path)
        .expect("open")
        .read_to_end(&mut v)
        .expect("read");
    v
}

/// The `age` CLI, which the interop tests need (Debian package `age`).
pub fn age_cli() -> Command {
    let found = Command::new("age").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "the `age` command is required for interop tests: apt-get install age (.ci/run does)"
    );
    Command::new("age")
}
