//! Canaries: customer data planted by a test and then searched for in
//! stored bytes, emails and logs, raw and in the encodings that could hide it.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

/// Every form a canary could take in stored bytes: raw, hex (both cases),
/// and base64 (standard and URL-safe) at each of the three alignments.
pub fn encodings(canary: &str) -> Vec<Vec<u8>> {
    let raw = canary.as_bytes();
    let mut forms = vec![
        raw.to_vec(),
        hex::encode(raw).into_bytes(),
        hex::encode_upper(raw).into_bytes(),
    ];
    for engine in [&STANDARD, &URL_SAFE] {
        for offset in 0..3 {
            let mut padded = vec![0u8; offset];
            padded.extend_from_slice(raw);
            let enc = engine.encode(&padded);
            // Drop the characters that depend on the neighbouring bytes.
            let skip = if offset == 0 {
                0
            } else {
                (offset * 8).div_ceil(6)
            };
            let core = &enc.as_bytes()[skip..enc.len().saturating_sub(4)];
            forms.push(core.to_vec());
        }
    }
    forms
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn assert_no_canaries(what: &str, data: &[u8], canaries: &[&str]) {
    for canary in canaries {
        for form in encodings(canary) {
            assert!(
                !contains(data, &form),
                "{what} contains canary {canary:?} as {:?}",
                String::from_utf8_lossy(&form)
            );
        }
    }
}

/// After a served binary stopped: none of `canaries` is in its log (which
/// shows `route` was served), in any of `mails`, in the database or in a
/// blob.
pub async fn assert_nothing_leaked(
    env: &crate::support::env::TestEnv,
    app: &sealpost::app::App,
    serve: &crate::support::serve::Serve,
    mails: &[String],
    canaries: &[&str],
    route: &str,
) {
    let log = [
        serve.stdout.lock().unwrap().join("\n"),
        serve.stderr.lock().unwrap().join("\n"),
    ]
    .join("\n");
    assert!(log.contains(route), "requests are logged: {log}");
    for c in canaries {
        assert!(!log.contains(c), "log contains {c:?}");
        for mail in mails {
            assert!(!mail.contains(c), "mail contains {c:?}: {mail}");
        }
    }
    assert_no_canaries("database", &env.database_bytes(app).await, canaries);
    for blob in crate::support::files::files_below(&env.blob_dir()) {
        assert_no_canaries("blob", &std::fs::read(&blob).unwrap(), canaries);
    }
}
