//! The vault driven directly (no HTTP): seal and commit a message, read it
//! back.

use std::io::Read;

use age::x25519;
use sealpost::app::App;
use sealpost::vault::{MessageId, MessageMeta, PartKind, PartMeta};

/// Seals and commits a message with a body and the given attachments.
pub async fn send(
    app: &App,
    meta: &MessageMeta,
    body: &[u8],
    attachments: &[(&str, &[u8])],
) -> MessageId {
    let mut draft = app.vault.begin_message();
    draft
        .seal_part(PartKind::Body, &PartMeta::default(), body)
        .expect("seal body");
    for (name, data) in attachments {
        let meta = PartMeta {
            item: None,
            file_name: Some((*name).to_owned()),
            content_type: Some("application/octet-stream".to_owned()),
        };
        draft
            .seal_part(PartKind::Attachment, &meta, *data)
            .expect("seal attachment");
    }
    let sealed = app.vault.seal(draft, meta).expect("seal");
    let mut tx = app.db.begin().await.expect("begin");
    let id = app.vault.commit(&mut tx, sealed).await.expect("commit");
    tx.commit().await.expect("commit tx");
    id
}

/// Decrypts every part of a message, in order.
pub async fn read_all(
    app: &App,
    id: MessageId,
) -> Result<Vec<Vec<u8>>, sealpost::vault::VaultError> {
    let key = app.vault.unlock(id).await?;
    let mut out = Vec::new();
    for part in app.vault.parts(id).await? {
        let mut plain = Vec::new();
        app.vault.open_part(&key, &part)?.copy_to(&mut plain)?;
        out.push(plain);
    }
    Ok(out)
}

/// True if `identity` can decrypt `ciphertext` (the age crate, no vault involved).
pub fn opens_with(identity: &x25519::Identity, ciphertext: &[u8]) -> bool {
    let Ok(d) = age::Decryptor::new_buffered(ciphertext) else {
        return false;
    };
    match d.decrypt(std::iter::once(identity as &dyn age::Identity)) {
        Ok(mut r) => {
            let mut v = Vec::new();
            r.read_to_end(&mut v).is_ok()
        }
        Err(_) => false,
    }
}
