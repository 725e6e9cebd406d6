//! Master key custody: a stolen database and blob store are useless without
//! the key file; rotation and retirement keep everything readable with only
//! the newest key; shredding destroys content for good.

use std::os::unix::fs::PermissionsExt;

use age::x25519;
use sealpost::app::App;
use sealpost::vault::{Keyring, MessageId, MessageMeta, VaultError};

use crate::support::env::{TestEnv, runtime};
use crate::support::files::{blob_path, bytes, files_below, read_file};
use crate::support::vault::opens_with;
use crate::support::vault::{read_all, send};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn database_and_blobs_are_useless_without_the_master_key() {
    // A runtime of its own, not #[tokio::test]: the `sealpost` binary and the vault's synchronous reads run from this thread.
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    let id = rt.block_on(send(
        &app,
        &MessageMeta::default(),
        b"secret body",
        &[("a.txt", b"attached")],
    ));
    let wrapped: Vec<Vec<u8>> = rt
        .block_on(
            sqlx::query_scalar("SELECT wrapped_identity FROM message_keys")
                .fetch_all(app.db.pool()),
        )
        .expect("wrapped identities");
    assert_eq!(wrapped.len(), 1);
    let master = std::fs::read_to_string(env.key_file()).expect("key file");
    rt.block_on(app.db.close());
    drop(app);

    // The thief has the database and blobs, and a master key of their own.
    std::fs::remove_file(env.key_file()).expect("remove key file");
    let thief = x25519::Identity::generate();
    let thief_file = format!(
        "{}\n",
        secrecy::ExposeSecret::expose_secret(&thief.to_string())
    );
    crate::support::files::write_file(&env.key_file(), thief_file.as_bytes());
    std::fs::set_permissions(env.key_file(), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let err = rt
        .block_on(App::open(env.config()))
        .expect_err("must not open");
    assert!(
        matches!(
            err,
            sealpost::app::StartError::Vault(VaultError::MasterKeyMissing(_))
        ),
        "unexpected {err}"
    );
    assert!(!opens_with(&thief, &wrapped[0]));
    let blobs = files_below(&env.blob_dir());
    assert_eq!(blobs.len(), 2);
    for b in &blobs {
        assert!(!opens_with(&thief, &read_file(b)));
    }

    // Without any key file the vault refuses to start (and does not silently
    // make a new key that would orphan every message).
    std::fs::remove_file(env.key_file()).expect("remove");
    let err = rt
        .block_on(App::open(env.config()))
        .expect_err("must not open");
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(!env.key_file().exists(), "no new key generated");

    // With the real key back, everything opens again.
    crate::support::files::write_file(&env.key_file(), master.as_bytes());
    std::fs::set_permissions(env.key_file(), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let app = rt.block_on(env.app());
    let parts = rt.block_on(read_all(&app, id)).expect("opens");
    assert_eq!(parts, vec![b"secret body".to_vec(), b"attached".to_vec()]);
}

#[test]
fn key_file_readable_by_others_is_refused() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    drop(rt.block_on(env.app()));
    std::fs::set_permissions(env.key_file(), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let out = env.sealpost(&["keys", "status"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}

#[test]
fn first_run_generates_a_private_key_file_and_says_to_back_it_up() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let out = env.sealpost(&["keys", "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(env.key_file())
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(stderr(&out).contains("BACK IT UP"), "{}", stderr(&out));
    assert!(stdout(&out).contains("wrapping"), "{}", stdout(&out));
    // Everything Sealpost creates is private to its service account.
    let mode =
        |p: std::path::PathBuf| std::fs::metadata(&p).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode(env.data_dir()).ok(), Some(0o700));
    assert_eq!(mode(env.blob_dir()).ok(), Some(0o700));
    if env.database_url.starts_with("sqlite:") {
        for name in ["sealpost.db", "sealpost.db-wal", "sealpost.db-shm"] {
            let m = mode(env.data_dir().join(name));
            assert!(m.as_ref().map_or(true, |m| *m == 0o600), "{name}: {m:?}");
        }
        assert_eq!(mode(env.data_dir().join("sealpost.db")).ok(), Some(0o600));
    }
}

#[test]
fn rotate_then_retire_keeps_everything_readable_with_only_the_new_key() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    let ids: Vec<MessageId> = (0..5)
        .map(|i| {
            rt.block_on(send(
                &app,
                &MessageMeta {
                    title: Some(format!("t{i}")),
                    recipient_address: Some(format!("customer{}@example.com", i % 2)),
                    ..Default::default()
                },
                &bytes(1000 + i, i as u64),
                &[("f", b"x")],
            ))
        })
        .collect();
    let old = Keyring::load(&env.key_file())
        .expect("ring")
        .newest()
        .id
        .clone();

    // Retiring the only (newest) key is refused.
    let out = env.sealpost(&["keys", "retire", old.as_str()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("newest"), "{}", stderr(&out));

    // A new key appears in the file but nothing is re-wrapped yet (as after a
    // crash mid-rotation): the old key still has dependents, so retiring it
    // is refused, and `rotate` resumes instead of adding a third key.
    let mut ring = Keyring::load(&env.key_file()).expect("ring");
    let new = ring.add_new_key().expect("add key");
    let out = env.sealpost(&["keys", "retire", old.as_str()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("still wraps"), "{}", stderr(&out));
    let out = env.sealpost(&["keys", "rotate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("no new key added"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("re-wrapped 6 item(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        Keyring::load(&env.key_file()).expect("ring").keys().len(),
        2
    );

    // A normal rotation adds a key and re-wraps everything to it.
    let out = env.sealpost(&["keys", "rotate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("added master key"),
        "{}",
        stdout(&out)
    );
    let newest = Keyring::load(&env.key_file())
        .expect("ring")
        .newest()
        .id
        .clone();
    assert_ne!(newest, new);
    // Idempotent: running again after success re-wraps nothing twice.
    let status = stdout(&env.sealpost(&["keys", "status"]));
    let line = status
        .lines()
        .find(|l| l.starts_with(newest.as_str()))
        .expect("newest listed");
    assert!(line.contains("wrapping"), "{line}");
    assert!(
        line.split_whitespace().any(|w| w == "5"),
        "newest wraps 5 messages: {line}"
    );

    for id in [&old, &new] {
        let out = env.sealpost(&["keys", "retire", id.as_str()]);
        assert!(out.status.success(), "retire {id}: {}", stderr(&out));
    }
    let ring = Keyring::load(&env.key_file()).expect("ring");
    assert_eq!(
        ring.keys().len(),
        1,
        "only the newest key is left in the file"
    );
    let status = stdout(&env.sealpost(&["keys", "status"]));
    assert_eq!(status.matches("retired").count(), 2, "{status}");

    // A fresh process with only the new key opens every message.
    rt.block_on(app.db.close());
    let app = rt.block_on(env.app());
    for (i, id) in ids.iter().enumerate() {
        let parts = rt
            .block_on(read_all(&app, *id))
            .expect("opens with new key");
        assert_eq!(parts[0], bytes(1000 + i, i as u64));
        let key = rt.block_on(app.vault.unlock(*id)).expect("unlock");
        assert_eq!(key.meta().expect("meta").title, Some(format!("t{i}")));
    }
    // The blind index key survived the rotation: search still finds them.
    let found = rt
        .block_on(app.vault.find_by_recipient("customer1@example.com"))
        .expect("search");
    let mut want = vec![ids[1], ids[3]];
    want.sort();
    let mut found_sorted = found.clone();
    found_sorted.sort();
    assert_eq!(found_sorted, want);
}

#[test]
fn rotation_is_safe_while_another_instance_keeps_sealing() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let serving = rt.block_on(env.app());
    let rotating = rt.block_on(env.app());
    let writer = {
        let app = serving.clone();
        rt.spawn(async move {
            let mut ids = Vec::new();
            for i in 0..40u64 {
                ids.push(send(&app, &MessageMeta::default(), &bytes(500, i), &[]).await);
            }
            ids
        })
    };
    let report = rt.block_on(rotating.vault.rotate()).expect("rotate");
    let mut ids = rt.block_on(writer).expect("writer");
    // Messages sealed in the race window (before the serving instance saw the
    // new key) are picked up by running rotate again, which resumes rather
    // than adding another key.
    let count_on_old = || {
        rt.block_on(
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM message_keys WHERE master_key_id <> $1",
            )
            .bind(report.target.as_str())
            .fetch_one(serving.db.pool()),
        )
        .expect("count")
    };
    if count_on_old() > 0 {
        let again = rt.block_on(rotating.vault.rotate()).expect("resume");
        assert_eq!(again.target, report.target, "resumed, no new key");
        assert!(!again.added_key);
    }
    ids.push(rt.block_on(send(&serving, &MessageMeta::default(), b"after", &[])));
    assert_eq!(
        count_on_old(),
        0,
        "the serving instance switched to the new key"
    );
    let keys = rt.block_on(rotating.vault.key_status()).expect("status");
    let old = keys.iter().find(|k| !k.newest).expect("old key").id.clone();
    rt.block_on(rotating.vault.retire(&old)).expect("retire");
    rt.block_on(serving.db.close());
    let fresh = rt.block_on(env.app());
    for (i, id) in ids.iter().enumerate().take(40) {
        let parts = rt.block_on(read_all(&fresh, *id)).expect("opens");
        assert_eq!(parts[0], bytes(500, i as u64));
    }
}

#[test]
fn shredded_messages_cannot_be_opened_even_with_the_master_key() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    let keep = rt.block_on(send(&app, &MessageMeta::default(), b"keep me", &[]));
    let id = rt.block_on(send(
        &app,
        &MessageMeta {
            recipient_address: Some("x@example.com".into()),
            ..Default::default()
        },
        b"shred me",
        &[("f.pdf", b"pdf")],
    ));
    let parts = rt.block_on(app.vault.parts(id)).expect("parts");
    let copies: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| read_file(&blob_path(&env, p.blob.as_str())))
        .collect();

    assert!(rt.block_on(app.vault.shred(id)).expect("shred"));
    assert!(
        !rt.block_on(app.vault.shred(id)).expect("idempotent"),
        "second shred is a no-op"
    );
    assert!(matches!(
        rt.block_on(app.vault.unlock(id)),
        Err(VaultError::Shredded)
    ));
    let keys: i64 = rt
        .block_on(
            sqlx::query_scalar("SELECT COUNT(*) FROM message_keys WHERE message_id = $1")
                .bind(id.to_string())
                .fetch_one(app.db.pool()),
        )
        .expect("count");
    assert_eq!(keys, 0, "wrapped identity deleted");
    for p in &parts {
        assert!(!blob_path(&env, p.blob.as_str()).exists(), "blob deleted");
    }
    // Even someone holding a backup of the blobs and every master key gets nothing.
    let ring = Keyring::load(&env.key_file()).expect("ring");
    for copy in &copies {
        for k in ring.keys() {
            assert!(!opens_with(k.identity(), copy));
        }
    }
    // The blind index went with the key: the installation secret no
    // longer ties the address to the message.
    assert!(
        !rt.block_on(app.vault.find_by_recipient("x@example.com"))
            .expect("search")
            .contains(&id)
    );
    assert_eq!(
        rt.block_on(read_all(&app, keep))
            .expect("other message intact"),
        vec![b"keep me".to_vec()]
    );
    let r = rt
        .block_on(app.vault.sweep(std::time::Duration::ZERO))
        .expect("sweep");
    assert_eq!((r.removed_blobs, r.kept_blobs), (0, 1));
}
