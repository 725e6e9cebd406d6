//! No plaintext at rest: customer data planted as canaries must not appear
//! anywhere in the database or blob store, raw or as base64/hex.

use sealpost::vault::MessageMeta;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::support::canaries::{assert_no_canaries, encodings};
use crate::support::env::{TestEnv, runtime};
use crate::support::files::files_below;
use crate::support::vault::{read_all, send};

const BODY: &str = "CANARY-BODY-7f3a91 the account number is 12345678";
const FILE_NAME: &str = "CANARY-FILE-c2e8d4-tax-return.pdf";
const ADDRESS: &str = "canary-addr-5b1e77@example.com";
const PHONE: &str = "+44 7700 CANARY-PHONE-9d2c";
const TITLE: &str = "CANARY-TITLE-44aa10 mortgage papers";
const FILE_CONTENT: &str = "CANARY-ATTACHMENT-CONTENT-0e6f2b";

#[test]
fn nothing_readable_in_database_or_blobs() {
    // A runtime of its own, not #[tokio::test]: the vault's synchronous reads run between async steps, off any runtime thread.
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    let meta = MessageMeta {
        items: Vec::new(),
        recipient_address: Some(ADDRESS.to_owned()),
        recipient_phone: Some(PHONE.to_owned()),
        title: Some(TITLE.to_owned()),
        reference: Some("CANARY-REF-31c9".to_owned()),
    };
    let id = rt.block_on(send(
        &app,
        &meta,
        BODY.as_bytes(),
        &[(FILE_NAME, FILE_CONTENT.as_bytes())],
    ));

    // The scan only means something if the message is really there.
    let parts = rt.block_on(read_all(&app, id)).expect("opens");
    assert_eq!(parts[0], BODY.as_bytes());
    let key = rt.block_on(app.vault.unlock(id)).expect("unlock");
    assert_eq!(key.meta().expect("meta"), meta);
    let stored = rt.block_on(app.vault.parts(id)).expect("parts");
    assert_eq!(
        key.part_meta(&stored[1])
            .expect("part meta")
            .file_name
            .as_deref(),
        Some(FILE_NAME)
    );
    // Exact-match search works through the blind index, case-insensitively.
    let found = rt
        .block_on(
            app.vault
                .find_by_recipient(" Canary-Addr-5B1E77@EXAMPLE.com "),
        )
        .expect("search");
    assert_eq!(found, vec![id]);

    let canaries = [
        BODY,
        FILE_NAME,
        ADDRESS,
        PHONE,
        TITLE,
        FILE_CONTENT,
        "CANARY-REF-31c9",
    ];
    let db = rt.block_on(env.database_bytes(&app));
    assert!(db.len() > 1000, "database dump suspiciously small");
    assert_no_canaries("database", &db, &canaries);
    let blobs = files_below(&env.blob_dir());
    assert_eq!(blobs.len(), 2, "one blob per part");
    for path in blobs {
        let data = std::fs::read(&path).expect("read blob");
        assert!(
            data.starts_with(b"age-encryption.org/v1\n"),
            "blobs are age files"
        );
        assert_no_canaries(&path.display().to_string(), &data, &canaries);
    }
}

#[test]
fn canary_scanner_finds_each_encoding() {
    let canary = "CANARY-SELFTEST-1234";
    for (i, form) in encodings(canary).into_iter().enumerate() {
        let mut data = b"prefix-bytes:".to_vec();
        data.extend(&form);
        data.extend(b":suffix");
        let found = std::panic::catch_unwind(|| assert_no_canaries("x", &data, &[canary]));
        assert!(found.is_err(), "encoding #{i} not detected");
    }
    // And real base64 of a longer value containing the canary is caught.
    for prefix in ["", "a", "ab"] {
        let enc = STANDARD.encode(format!("{prefix}{canary}-tail"));
        let found = std::panic::catch_unwind(|| assert_no_canaries("x", enc.as_bytes(), &[canary]));
        assert!(found.is_err(), "base64 with prefix {prefix:?} not detected");
    }
}
