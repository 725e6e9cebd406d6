//! Seal → open round trips at the sizes that matter to age's 64 KiB STREAM
//! chunks, random sizes up to several MB, and damage that must be detected.

use proptest::prelude::*;
use sealpost::vault::{MessageMeta, VaultError};

use crate::support::env::{TestEnv, runtime};
use crate::support::files::{blob_path, bytes, read_file};
use crate::support::vault::{read_all, send};

const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const NONCE: usize = 16;

#[test]
fn boundary_sizes_round_trip_and_damage_is_detected() {
    // A runtime of its own, not #[tokio::test]: proptest and the vault's synchronous reads run from this thread.
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7] {
        let body = bytes(size, size as u64);
        let id = rt.block_on(send(&app, &MessageMeta::default(), &body, &[]));
        let parts = rt.block_on(read_all(&app, id)).expect("open");
        assert_eq!(parts, vec![body.clone()], "round trip of {size} bytes");

        let part = rt.block_on(app.vault.parts(id)).expect("parts").remove(0);
        let key = rt.block_on(app.vault.unlock(id)).expect("unlock");
        let sealed = read_file(&blob_path(&env, part.blob.as_str()));
        let chunks = size.div_ceil(CHUNK).max(1);
        let header = sealed.len() - (NONCE + size + TAG * chunks);
        let payload = header + NONCE;
        let boundaries: Vec<usize> = (0..=chunks).map(|k| payload + k * (CHUNK + TAG)).collect();

        let open = |ciphertext: &[u8]| -> Result<Vec<u8>, VaultError> {
            let mut out = Vec::new();
            key.open(ciphertext)?.copy_to(&mut out)?;
            Ok(out)
        };
        assert_eq!(open(&sealed).expect("untouched opens"), body);

        // A flipped byte anywhere: header, nonce, first and last byte of each chunk.
        let mut flips = vec![5, header / 2, header - 2, header, payload];
        for k in 0..chunks {
            let start = payload + k * (CHUNK + TAG);
            let end = (start + CHUNK + TAG).min(sealed.len());
            flips.extend([start, start + (end - start) / 2, end - 1]);
        }
        for at in flips {
            let mut bad = sealed.clone();
            bad[at] ^= 0x01;
            let err = open(&bad).expect_err(&format!("flip at {at} of {size}-byte message"));
            assert!(
                matches!(err, VaultError::Corrupt | VaultError::NoMatchingKey),
                "flip at {at}: unexpected {err:?}"
            );
        }

        // Truncation at every chunk boundary and between them.
        let mut cuts = vec![0, header / 2, header, payload];
        for &b in &boundaries {
            cuts.extend([b.saturating_sub(1), b, b + 1, b + 100]);
        }
        cuts.retain(|&c| c < sealed.len());
        for cut in cuts {
            let err = open(&sealed[..cut]).expect_err(&format!("cut at {cut} of {size}"));
            assert!(
                matches!(err, VaultError::Corrupt),
                "cut at {cut}: unexpected {err:?}"
            );
        }
    }
}

#[test]
fn random_messages_round_trip() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    let config = ProptestConfig {
        cases: 12,
        ..ProptestConfig::default()
    };
    proptest!(config, |(sizes in prop::collection::vec(0usize..3_000_000, 1..4), seed in any::<u64>())| {
        let body = bytes(sizes[0], seed);
        let files: Vec<(String, Vec<u8>)> = sizes[1..]
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("file-{i}.bin"), bytes(n, seed.wrapping_add(i as u64 + 1))))
            .collect();
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
        let id = rt.block_on(send(&app, &MessageMeta::default(), &body, &refs));
        let parts = rt.block_on(read_all(&app, id)).expect("open");
        prop_assert_eq!(parts.len(), sizes.len());
        prop_assert!(parts[0] == body);
        for (got, (_, want)) in parts[1..].iter().zip(&files) {
            prop_assert!(got == want);
        }
    });
}

#[test]
fn size_limit_is_enforced_while_streaming_and_leaves_nothing() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    let mut draft = app.vault.begin_message();
    draft.set_size_limit(100_000);
    draft
        .seal_part(
            sealpost::vault::PartKind::Body,
            &Default::default(),
            &bytes(60_000, 1)[..],
        )
        .expect("within limit");
    let err = draft
        .seal_part(
            sealpost::vault::PartKind::Attachment,
            &Default::default(),
            &bytes(60_000, 2)[..],
        )
        .expect_err("over limit");
    assert!(matches!(err, VaultError::TooLarge { limit: 100_000 }));
    drop(draft);
    let left = crate::support::files::files_below(&env.blob_dir());
    assert!(left.is_empty(), "abandoned draft left files: {left:?}");
}
