//! Interoperability with the reference `age` CLI: vault blobs are standard
//! age files an escrow holder can open, files the CLI writes to a message's
//! recipient open through the vault, and `sealpost export` output decrypts
//! with `age -d -i escrow-key.txt`.

use std::process::Stdio;

use age::x25519;
use sealpost::vault::MessageMeta;
use secrecy::ExposeSecret;

use crate::support::env::{TestEnv, runtime};
use crate::support::files::{age_cli, blob_path, bytes, read_file, write_file};
use crate::support::vault::send;

struct Escrow {
    identity_file: std::path::PathBuf,
    recipient: String,
}

fn escrow_in(dir: &std::path::Path) -> Escrow {
    let id = x25519::Identity::generate();
    let identity_file = dir.join("escrow-key.txt");
    write_file(
        &identity_file,
        format!("{}\n", id.to_string().expose_secret()).as_bytes(),
    );
    Escrow {
        identity_file,
        recipient: id.to_public().to_string(),
    }
}

/// A test environment sealing to a fresh escrow identity (kept in its own folder).
fn escrowed_env(rt: &tokio::runtime::Runtime) -> (tempfile::TempDir, Escrow, TestEnv) {
    let keys = tempfile::tempdir().expect("dir");
    let escrow = escrow_in(keys.path());
    let env = rt.block_on(TestEnv::with_escrow(&escrow.recipient));
    (keys, escrow, env)
}

fn age_decrypt(identity: &std::path::Path, file: &std::path::Path) -> Vec<u8> {
    let out = age_cli()
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .stderr(Stdio::piped())
        .output()
        .expect("run age");
    assert!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn vault_blobs_decrypt_with_the_age_cli_and_escrow_identity() {
    // A runtime of its own, not #[tokio::test]: the `age` CLI and the vault's synchronous reads run from this thread.
    let rt = runtime();
    let (_keys, escrow, env) = escrowed_env(&rt);
    let app = rt.block_on(env.app());
    let body = bytes(200_000, 7);
    let file = bytes(65_537, 8);
    let id = rt.block_on(send(
        &app,
        &MessageMeta::default(),
        &body,
        &[("a.bin", &file)],
    ));
    let parts = rt.block_on(app.vault.parts(id)).expect("parts");
    assert_eq!(
        age_decrypt(
            &escrow.identity_file,
            &blob_path(&env, parts[0].blob.as_str())
        ),
        body
    );
    assert_eq!(
        age_decrypt(
            &escrow.identity_file,
            &blob_path(&env, parts[1].blob.as_str())
        ),
        file
    );
}

#[test]
fn files_written_by_the_age_cli_open_through_the_vault() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    let id = rt.block_on(send(&app, &MessageMeta::default(), b"x", &[]));
    let recipient = rt.block_on(app.vault.recipient_of(id)).expect("recipient");
    let plain = bytes(3 * 65_536 + 5, 9);
    let src = env.dir.path().join("in.bin");
    let dst = env.dir.path().join("in.bin.age");
    write_file(&src, &plain);
    let out = age_cli()
        .arg("-r")
        .arg(recipient.to_string())
        .arg("-o")
        .arg(&dst)
        .arg(&src)
        .output()
        .expect("run age");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = rt.block_on(app.vault.unlock(id)).expect("unlock");
    let mut back = Vec::new();
    key.open(std::fs::File::open(&dst).expect("open"))
        .expect("header")
        .copy_to(&mut back)
        .expect("decrypt");
    assert_eq!(back, plain);
}

#[test]
fn export_decrypts_with_the_age_cli() {
    let rt = runtime();
    let (_keys, escrow, env) = escrowed_env(&rt);
    let app = rt.block_on(env.app());
    let meta = MessageMeta {
        recipient_address: Some("CANARY-EXPORT-ADDR-81f2@example.com".into()),
        ..Default::default()
    };
    let id = rt.block_on(send(
        &app,
        &meta,
        b"CANARY-EXPORT-BODY-1b9e",
        &[("CANARY-EXPORT-NAME-77c1.pdf", b"%PDF-1.7")],
    ));
    let out_dir = env.dir.path().join("export");
    let out = env.sealpost(&[
        "export",
        &id.to_string(),
        "--out",
        out_dir.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let manifest: serde_json::Value =
        serde_json::from_slice(&read_file(&out_dir.join("manifest.json"))).expect("manifest");
    assert_eq!(manifest["message_id"], id.to_string());
    let parts = manifest["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 2);
    let body_file = out_dir.join(parts[0]["file"].as_str().expect("file"));
    let pdf_file = out_dir.join(parts[1]["file"].as_str().expect("file"));
    assert_eq!(
        age_decrypt(&escrow.identity_file, &body_file),
        b"CANARY-EXPORT-BODY-1b9e"
    );
    assert_eq!(age_decrypt(&escrow.identity_file, &pdf_file), b"%PDF-1.7");
    // The files are the stored blobs, unchanged.
    let stored = rt.block_on(app.vault.parts(id)).expect("parts");
    assert_eq!(
        read_file(&body_file),
        read_file(&blob_path(&env, stored[0].blob.as_str()))
    );
    let metadata = age_decrypt(&escrow.identity_file, &out_dir.join("metadata.age"));
    let metadata = String::from_utf8(metadata).expect("utf8");
    assert!(
        metadata.contains("CANARY-EXPORT-NAME-77c1.pdf"),
        "{metadata}"
    );
    assert!(
        metadata.contains("CANARY-EXPORT-ADDR-81f2@example.com"),
        "{metadata}"
    );
    // Only ids, sizes and hashes are in the clear.
    crate::support::canaries::assert_no_canaries(
        "manifest",
        &read_file(&out_dir.join("manifest.json")),
        &[
            "CANARY-EXPORT-ADDR-81f2",
            "CANARY-EXPORT-BODY-1b9e",
            "CANARY-EXPORT-NAME-77c1",
        ],
    );

    // An existing, non-empty folder is refused rather than overwritten.
    let again = env.sealpost(&[
        "export",
        &id.to_string(),
        "--out",
        out_dir.to_str().expect("utf8"),
    ]);
    assert!(!again.status.success());
}

#[test]
fn export_without_escrow_recipients_is_refused() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    let id = rt.block_on(send(&app, &MessageMeta::default(), b"body", &[]));
    let out_dir = env.dir.path().join("export");
    let out = env.sealpost(&[
        "export",
        &id.to_string(),
        "--out",
        out_dir.to_str().expect("utf8"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("escrow"));
    let bad = env.sealpost(&[
        "export",
        "not-a-uuid",
        "--out",
        out_dir.to_str().expect("utf8"),
    ]);
    assert!(!bad.status.success());
}

/// A customer's reply is a vault message like any other: `sealpost export`
/// gives the escrow holder its text and file, decryptable with the age CLI.
#[test]
fn a_customer_reply_exports_for_escrow_like_a_message() {
    let rt = runtime();
    let (_keys, escrow, env) = escrowed_env(&rt);
    let (app, _clock, base) =
        rt.block_on(crate::support::http::portal(&env, crate::support::START));
    let file = crate::replies::pdf(9, 10_000);
    let item = rt.block_on(async {
        let (_agent, mut customer, id) = crate::replies::verified_on(&app, &base).await;
        let r = crate::replies::reply(
            &mut customer,
            id,
            "CANARY-ESCROW-REPLY-5e21",
            &[("CANARY-ESCROW-FILE-90d3.pdf", &file)],
        )
        .await;
        assert_eq!(r.status, 303, "{}", r.body);
        app.incoming.conversation(id).await.expect("items")[0].id
    });
    let out_dir = env.dir.path().join("export-reply");
    let out = env.sealpost(&[
        "export",
        &item.to_string(),
        "--out",
        out_dir.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&read_file(&out_dir.join("manifest.json"))).expect("manifest");
    let parts = manifest["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 2);
    let body = out_dir.join(parts[0]["file"].as_str().expect("file"));
    let pdf = out_dir.join(parts[1]["file"].as_str().expect("file"));
    assert_eq!(
        age_decrypt(&escrow.identity_file, &body),
        b"CANARY-ESCROW-REPLY-5e21"
    );
    assert_eq!(age_decrypt(&escrow.identity_file, &pdf), file);
    let metadata = age_decrypt(&escrow.identity_file, &out_dir.join("metadata.age"));
    let metadata = String::from_utf8(metadata).expect("utf8");
    assert!(
        metadata.contains("CANARY-ESCROW-FILE-90d3.pdf"),
        "{metadata}"
    );
    assert!(metadata.contains("customer@example.org"), "{metadata}");
}
