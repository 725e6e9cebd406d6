//! The dev mailbox's storage: without an SMTP server, sent mail is kept
//! (sealed) in the database, so a newcomer can run `sealpost serve`, send a
//! message and click the link in the pages at `/dev/mailbox`
//! (`web::dev_mailbox`).

use serde::{Deserialize, Serialize};

use super::MailError;
use crate::store::{self, Db, Tx};
use crate::vault::{Purpose, Vault};

/// One kept email (sealed as a whole in the `content` column).
#[derive(Clone, Serialize, Deserialize)]
pub struct DevMail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub mail_message_id: String,
}

/// A kept email, opened.
pub struct Kept {
    pub id: i64,
    pub received_at: i64,
    pub mail: DevMail,
}

pub(super) async fn store(
    tx: &mut Tx,
    vault: &Vault,
    outbox_id: i64,
    now: i64,
    mail: &DevMail,
) -> Result<(), MailError> {
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(mail).map_err(|e| MailError::Build(e.to_string()))?,
    );
    let sealed = vault.seal_secret(Purpose::DevMailbox, &plain)?;
    store::dev_mailbox::insert(tx, outbox_id, now, &sealed).await?;
    Ok(())
}

/// The newest `limit` kept emails, newest first.
pub async fn newest(db: &Db, vault: &Vault, limit: i64) -> Result<Vec<Kept>, MailError> {
    let rows = store::dev_mailbox::newest(db, limit).await?;
    rows.into_iter().map(|r| open(vault, r)).collect()
}

pub async fn get(db: &Db, vault: &Vault, id: i64) -> Result<Option<Kept>, MailError> {
    let row = store::dev_mailbox::get(db, id).await?;
    row.map(|r| open(vault, r)).transpose()
}

fn open(vault: &Vault, row: store::dev_mailbox::DevMailRow) -> Result<Kept, MailError> {
    let plain = vault.open_secret(Purpose::DevMailbox, &row.content)?;
    let mail = serde_json::from_slice(&plain).map_err(|e| MailError::Build(e.to_string()))?;
    Ok(Kept {
        id: row.id,
        received_at: row.created_at,
        mail,
    })
}
