//! The S3 blob store against a real S3-compatible server: `moto_server`
//! (PyPI `moto[server]`), started for each test on a free loopback port, or
//! the server named by SEALPOST_TEST_S3_ENDPOINT. Each test uses a bucket of
//! its own, created with a plain (unsigned) PUT, which moto accepts.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sealpost::app::App;
use sealpost::config::Config;
use sealpost::vault::{BlobStore, MessageMeta, PartKind, PartMeta, VaultError};

use crate::support::canaries::assert_no_canaries;
use crate::support::env::{TestEnv, runtime};
use crate::support::files::bytes;
use crate::support::http::serve;
use crate::support::moto::{Moto, PREFIX};
use crate::support::vault::{read_all, send};

const MIB: usize = 1024 * 1024;

fn blob_keys(keys: &[String]) -> Vec<&str> {
    keys.iter()
        .filter_map(|k| {
            k.strip_prefix(&format!("{PREFIX}/blobs/"))?
                .strip_suffix(".age")
        })
        .collect()
}

async fn s3_app(env: &TestEnv, moto: &Moto, bucket: &str) -> App {
    let mut vars = env.env_vars();
    vars.extend(moto.env_vars(bucket));
    App::open(Config::load(None, vars).expect("S3 config"))
        .await
        .expect("open app with S3 blobs")
}

#[test]
fn large_message_round_trips_through_multipart_upload() {
    let moto = Moto::shared_or_start();
    let bucket = moto.new_bucket();
    // A runtime of its own, not #[tokio::test]: the moto helper drives its own runtime, which cannot start inside another.
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(s3_app(&env, &moto, &bucket));
    // 2.5 parts: two full 8 MiB parts and a short last one.
    let big = bytes(20 * MIB + 12_345, 7);
    let small = bytes(1000, 8);
    let id = rt.block_on(send(
        &app,
        &MessageMeta::default(),
        b"body text",
        &[("big.bin", &big), ("small.bin", &small)],
    ));
    let parts = rt.block_on(read_all(&app, id)).expect("read back");
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], b"body text");
    assert!(
        parts[1] == big,
        "big attachment differs after the round trip"
    );
    assert_eq!(parts[2], small);

    let objects = moto.objects(&bucket);
    assert_eq!(objects.len(), 3, "{objects:?}");
    assert!(
        objects.iter().all(
            |(key, _, _)| key.starts_with(&format!("{PREFIX}/blobs/")) && key.ends_with(".age")
        ),
        "{objects:?}"
    );
    // S3 gives an object assembled from parts an ETag ending in `-<parts>`.
    let (_, etag, size) = objects
        .iter()
        .find(|(_, _, size)| *size > 20 * MIB as u64)
        .expect("the big blob");
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "not a 3-part upload: {etag}"
    );
    let stored = rt.block_on(app.vault.parts(id)).expect("parts");
    assert_eq!(stored[1].cipher_size, *size);
    assert!(
        objects
            .iter()
            .filter(|(_, _, size)| *size < 8 * MIB as u64)
            .all(|(_, etag, _)| !etag.contains('-')),
        "small blobs are single PUTs: {objects:?}"
    );
    assert_eq!(moto.open_uploads(&bucket), 0);
}

#[test]
fn no_plaintext_in_the_bucket() {
    const BODY: &str = "CANARY-S3-BODY-0d9e41 the account number is 87654321";
    const FILE_NAME: &str = "CANARY-S3-FILE-77ab3c.pdf";
    const FILE_CONTENT: &str = "CANARY-S3-ATTACHMENT-5e0f19";
    const ADDRESS: &str = "canary-s3-addr-1c2d3e@example.com";
    let moto = Moto::shared_or_start();
    let bucket = moto.new_bucket();
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(s3_app(&env, &moto, &bucket));
    let meta = MessageMeta {
        recipient_address: Some(ADDRESS.to_owned()),
        ..MessageMeta::default()
    };
    let id = rt.block_on(send(
        &app,
        &meta,
        BODY.as_bytes(),
        &[(FILE_NAME, FILE_CONTENT.as_bytes())],
    ));
    let parts = rt.block_on(read_all(&app, id)).expect("opens");
    assert_eq!(parts[1], FILE_CONTENT.as_bytes());

    let keys = moto.keys(&bucket);
    assert_eq!(keys.len(), 2, "one object per part: {keys:?}");
    for key in &keys {
        assert_no_canaries(
            key,
            key.as_bytes(),
            &[BODY, FILE_NAME, FILE_CONTENT, ADDRESS],
        );
        let data = moto.raw(&bucket, key);
        assert!(
            data.starts_with(b"age-encryption.org/v1\n"),
            "{key} is not an age file"
        );
        assert_no_canaries(key, &data, &[BODY, FILE_NAME, FILE_CONTENT, ADDRESS]);
    }
    // Nothing is kept locally when the blobs live in S3.
    assert!(!env.blob_dir().exists());
}

#[test]
fn shred_deletes_the_objects() {
    let moto = Moto::shared_or_start();
    let bucket = moto.new_bucket();
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(s3_app(&env, &moto, &bucket));
    let kept = rt.block_on(send(&app, &MessageMeta::default(), b"keep me", &[]));
    let id = rt.block_on(send(
        &app,
        &MessageMeta::default(),
        b"shred me",
        &[("a.bin", &bytes(10 * MIB, 3)), ("b.bin", b"small")],
    ));
    assert_eq!(moto.keys(&bucket).len(), 4);
    let kept_keys: Vec<String> = rt
        .block_on(app.vault.parts(kept))
        .expect("parts")
        .iter()
        .map(|p| p.blob.as_str().to_owned())
        .collect();

    assert!(rt.block_on(app.vault.shred(id)).expect("shred"));
    let left = moto.keys(&bucket);
    assert_eq!(
        blob_keys(&left),
        kept_keys,
        "only the other message's blob is left"
    );
    assert!(matches!(
        rt.block_on(read_all(&app, id)),
        Err(VaultError::Shredded)
    ));
    assert_eq!(
        rt.block_on(read_all(&app, kept)).expect("kept")[0],
        b"keep me"
    );
    // Shredding again, and deleting what is already gone, is fine.
    assert!(!rt.block_on(app.vault.shred(id)).expect("shred again"));
}

#[test]
fn sweep_removes_only_old_unreferenced_objects() {
    let moto = Moto::shared_or_start();
    let bucket = moto.new_bucket();
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(s3_app(&env, &moto, &bucket));
    let id = rt.block_on(send(&app, &MessageMeta::default(), b"referenced", &[]));
    // An orphan as a crash between upload and commit leaves it, and an
    // object that is not a blob at all (never ours to delete).
    let orphan = format!("{PREFIX}/blobs/{}.age", "0123456789abcdef0123456789abcdef");
    moto.put_raw(&bucket, &orphan, b"age-encryption.org/v1\norphan");
    let foreign = format!("{PREFIX}/blobs/notes.txt");
    moto.put_raw(&bucket, &foreign, b"not a blob");
    assert_eq!(moto.keys(&bucket).len(), 3);

    let report = rt
        .block_on(app.vault.sweep(Duration::from_secs(3600)))
        .expect("sweep");
    assert_eq!(report.removed_blobs, 0, "younger than the grace period");
    assert_eq!(report.kept_blobs, 2);
    assert_eq!(moto.keys(&bucket).len(), 3);

    let report = rt.block_on(app.vault.sweep(Duration::ZERO)).expect("sweep");
    assert_eq!(report.removed_blobs, 1);
    assert_eq!(report.kept_blobs, 1);
    assert_eq!(report.removed_partials, 0);
    let left = moto.keys(&bucket);
    assert!(!left.contains(&orphan), "{left:?}");
    assert!(left.contains(&foreign), "{left:?}");
    assert_eq!(left.len(), 2);
    assert_eq!(
        rt.block_on(read_all(&app, id)).expect("still readable")[0],
        b"referenced"
    );
}

/// Waits for background aborts (a dropped writer spawns its abort).
fn wait_for_no_uploads(moto: &Moto, bucket: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while moto.open_uploads(bucket) > 0 {
        assert!(
            Instant::now() < deadline,
            "a multipart upload was never aborted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn unfinished_writes_leave_no_object() {
    let moto = Moto::shared_or_start();
    let bucket = moto.new_bucket();
    let store = moto.store(&bucket);
    let data = bytes(20 * MIB, 11);

    // Dropped after two parts went up: the upload is aborted, nothing shows.
    let mut writer = store.create().expect("create");
    writer.write_all(&data).expect("write");
    assert_eq!(
        moto.open_uploads(&bucket),
        1,
        "multipart upload in progress"
    );
    drop(writer);
    wait_for_no_uploads(&moto, &bucket);
    // Dropped before a part was full: nothing was ever sent.
    let mut writer = store.create().expect("create");
    writer.write_all(&data[..1000]).expect("write");
    drop(writer);
    assert!(moto.keys(&bucket).is_empty());
    assert!(store.list().expect("list").is_empty());

    // Committed: visible, readable, and deleting it twice is fine.
    let mut writer = store.create().expect("create");
    writer.write_all(&data).expect("write");
    let key = writer.commit().expect("commit");
    let mut back = Vec::new();
    store
        .open(&key)
        .expect("open")
        .read_to_end(&mut back)
        .expect("read");
    assert!(back == data, "read back differs");
    assert_eq!(store.list().expect("list").len(), 1);
    store.ping().expect("ping");
    store.delete(&key).expect("delete");
    store.delete(&key).expect("delete again");
    assert!(moto.keys(&bucket).is_empty());
    let missing = store.open(&key).err().expect("gone");
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);

    // Through the vault: a part over the size limit keeps nothing.
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(s3_app(&env, &moto, &bucket));
    let mut draft = app.vault.begin_message();
    draft.set_size_limit(12 * MIB as u64);
    let result = draft.seal_part(PartKind::Attachment, &PartMeta::default(), &data[..]);
    assert!(
        matches!(result, Err(VaultError::TooLarge { .. })),
        "{result:?}"
    );
    drop(draft);
    wait_for_no_uploads(&moto, &bucket);
    assert!(moto.keys(&bucket).is_empty());
}

#[test]
fn readyz_follows_the_blob_store() {
    // A server of our own even when one is shared: this test stops it.
    let mut moto = Moto::start();
    let bucket = moto.new_bucket();
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(s3_app(&env, &moto, &bucket));
    let base = rt.block_on(serve(app));
    let ready = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let resp = reqwest::get(format!("{base}/readyz"))
                .await
                .expect("readyz");
            (resp.status().as_u16(), resp.text().await.expect("body"))
        })
    };
    assert_eq!(ready(&rt), (200, "ready".to_owned()));

    moto.stop();
    let started = Instant::now();
    assert_eq!(ready(&rt), (503, "blob store unreachable".to_owned()));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the probe must not hang"
    );

    // Back, but empty (moto forgets everything): still unready until the
    // bucket exists again.
    moto.restart();
    assert_eq!(ready(&rt).0, 503);
    moto.create_bucket(&bucket);
    assert_eq!(ready(&rt), (200, "ready".to_owned()));
}

const MEMORY_CHILD_ENV: &str = "SEALPOST_TEST_S3_MEMORY_CHILD";
const MEMORY_TEST: &str = "s3::a_100_mib_upload_keeps_memory_flat";
const MEMORY_BYTES: usize = 100 * MIB;

/// The process's peak resident memory so far, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Deterministic bytes produced piece by piece, never all at once.
fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

/// In a process of its own (the measurement is per process): uploads
/// 100 MiB and reads it back, reporting the peak memory before and after.
fn memory_child(spec: &str) {
    use sha2::{Digest, Sha256};
    let (endpoint, bucket) = spec.split_once(' ').expect("endpoint and bucket");
    let mut moto = Moto::new(endpoint.to_owned(), 0);
    moto.child = None;
    let store = moto.store(bucket);
    // Warm up (runtime, connection pool) so the baseline includes them.
    let mut w = store.create().expect("create");
    w.write_all(b"warm-up").expect("write");
    let warm = w.commit().expect("commit");
    store.delete(&warm).expect("delete");
    let baseline = peak_rss_kib();

    let mut buf = vec![0u8; 256 * 1024];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut written = Sha256::new();
    let mut w = store.create().expect("create");
    for _ in 0..MEMORY_BYTES / buf.len() {
        fill(&mut buf, &mut state);
        written.update(&buf);
        w.write_all(&buf).expect("write");
    }
    let key = w.commit().expect("commit");
    let mut read = Sha256::new();
    let mut reader = store.open(&key).expect("open");
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        read.update(&buf[..n]);
        total += n;
    }
    assert_eq!(total, MEMORY_BYTES);
    assert_eq!(written.finalize(), read.finalize(), "read back differs");
    let peak = peak_rss_kib();
    let mut out = std::io::stdout().lock();
    writeln!(out, "MEMORY {baseline} {peak}").expect("report");
    out.flush().expect("flush");
}

#[test]
fn a_100_mib_upload_keeps_memory_flat() {
    if let Ok(spec) = std::env::var(MEMORY_CHILD_ENV) {
        memory_child(&spec);
        return;
    }
    let moto = Moto::shared_or_start();
    let bucket = moto.new_bucket();
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([MEMORY_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(MEMORY_CHILD_ENV, format!("{} {bucket}", moto.endpoint))
        .stderr(Stdio::inherit())
        .output()
        .expect("run child");
    assert!(out.status.success(), "child failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout
        .lines()
        .find_map(|l| l.split("MEMORY ").nth(1))
        .unwrap_or_else(|| panic!("no report in {stdout}"));
    let (baseline, peak) = report.split_once(' ').expect("two numbers");
    let (baseline, peak): (u64, u64) = (baseline.parse().expect("kB"), peak.parse().expect("kB"));
    let grown_mib = peak.saturating_sub(baseline) / 1024;
    // Parts in flight plus the one filling are 24 MiB; a whole-object buffer
    // would be at least 100.
    assert!(
        grown_mib < 64,
        "a 100 MiB upload and download grew memory by {grown_mib} MiB"
    );
    let objects = moto.objects(&bucket);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].2, MEMORY_BYTES as u64);
    assert!(
        objects[0].1.trim_matches('"').ends_with("-13"),
        "{objects:?}"
    );
}
