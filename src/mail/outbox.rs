//! The outbox: mail queued in the caller's transaction, so an email exists
//! exactly when the state change that caused it committed (and an SMTP
//! outage never rolls a message back).

use std::sync::Arc;

use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::transport::Transport;
use super::{Mail, MailError};
use crate::audit::AuditLog;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::deliveries::Deliveries;
use crate::metrics::Metrics;
use crate::settings::SettingsStore;
use crate::store::{Db, Tx, outbox};
use crate::vault::{MessageId, Vault};

/// Queues mail and (see `worker`) sends it. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub db: Db,
    pub vault: Vault,
    pub settings: SettingsStore,
    pub deliveries: Deliveries,
    pub audit: AuditLog,
    pub clock: SharedClock,
    pub metrics: Metrics,
    pub transport: Transport,
    pub from: Mailbox,
    pub public_url: String,
    /// Right-hand side of generated `Message-ID`s.
    pub host: String,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox { .. }")
    }
}

/// What is sealed into the outbox row.
#[derive(Serialize)]
pub(super) struct PayloadRef<'a> {
    pub to: &'a str,
    pub mail: &'a Mail,
}

#[derive(Deserialize)]
pub(super) struct Payload {
    pub to: String,
    pub mail: Mail,
}

impl Outbox {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        db: Db,
        vault: Vault,
        settings: SettingsStore,
        deliveries: Deliveries,
        audit: AuditLog,
        clock: SharedClock,
        metrics: Metrics,
    ) -> Result<Outbox, MailError> {
        let transport = Transport::from_config(config.smtp_url.as_ref())?;
        let from: Mailbox = config
            .mail_from
            .parse()
            .map_err(|_| MailError::InvalidFrom)?;
        Ok(Outbox {
            inner: Arc::new(Inner {
                db,
                vault,
                settings,
                deliveries,
                audit,
                clock,
                metrics,
                transport,
                from,
                public_url: config.public_url.clone(),
                host: message_id_host(&config.public_url),
            }),
        })
    }

    /// Whether mail goes to the local dev mailbox (no `smtp_url` set).
    pub fn is_dev_mailbox(&self) -> bool {
        self.inner.transport.is_dev_mailbox()
    }

    /// Queues `mail` to `to` inside the caller's transaction (so it commits
    /// with the state change). The address, link and code are stored only
    /// sealed. Returns the outbox row id.
    #[tracing::instrument(skip_all, fields(kind = mail.kind(), message_id = message.map(tracing::field::display)))]
    pub async fn enqueue(
        &self,
        tx: &mut Tx,
        to: &str,
        mail: &Mail,
        message: Option<MessageId>,
    ) -> Result<i64, MailError> {
        if let Some(id) = message {
            self.refuse_if_shredded(tx, id).await?;
        }
        self.insert(tx, to, mail, message).await
    }

    /// [`Outbox::enqueue`] for the pickup mail of a message created in the
    /// same transaction: no shred can have touched a message not yet
    /// committed, so the check (a statement under the write lock of every
    /// send) is left out.
    #[tracing::instrument(skip_all, fields(kind = mail.kind(), message_id = %message))]
    pub async fn enqueue_for_new(
        &self,
        tx: &mut Tx,
        to: &str,
        mail: &Mail,
        message: MessageId,
    ) -> Result<i64, MailError> {
        self.insert(tx, to, mail, Some(message)).await
    }

    async fn insert(
        &self,
        tx: &mut Tx,
        to: &str,
        mail: &Mail,
        message: Option<MessageId>,
    ) -> Result<i64, MailError> {
        let to = to.trim();
        // Refused now, where the caller can tell the user, not at send time.
        to.parse::<lettre::Address>()
            .map_err(|_| MailError::InvalidAddress)?;
        let plain = Zeroizing::new(
            serde_json::to_vec(&PayloadRef { to, mail })
                .map_err(|e| MailError::Build(e.to_string()))?,
        );
        let sealed = self
            .inner
            .vault
            .seal_secret(crate::vault::Purpose::OutboxPayload, &plain)?;
        let now = self.inner.clock.now();
        // Fixed now, so a retry (even after a crash mid-send) carries the
        // same Message-ID and receivers can tell it is one email.
        let mail_message_id = format!("<{}@{}>", Uuid::new_v4(), self.inner.host);
        let message_id = message.map(|m| m.to_string());
        let id = outbox::insert(
            tx,
            &outbox::NewMail {
                kind: mail.kind(),
                message_id: message_id.as_deref(),
                sealed_payload: &sealed,
                mail_message_id: &mail_message_id,
                now,
            },
        )
        .await?;
        tracing::debug!(outbox_id = id, "mail queued");
        Ok(id)
    }
}

impl Outbox {
    /// A shred erases the message's queued mail; mail queued by a request
    /// that checked the message before the shred committed must not slip in
    /// after it. On PostgreSQL the share lock makes this transaction and a
    /// shred take turns on the delivery row: either the shred waits for this
    /// one to commit (and then cancels what it queued), or this one sees the
    /// shred and fails, rolling back with the caller's other writes. SQLite
    /// transactions are serial already.
    async fn refuse_if_shredded(&self, tx: &mut Tx, id: MessageId) -> Result<(), MailError> {
        let backend = self.inner.db.backend();
        if outbox::message_shredded(tx, backend, &id.to_string()).await? {
            return Err(MailError::Shredded);
        }
        Ok(())
    }
}

/// The host part of `public_url` (no scheme, port or path), for `Message-ID`s.
fn message_id_host(public_url: &str) -> String {
    let rest = public_url
        .split_once("://")
        .map_or(public_url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if authority.starts_with('[') {
        // An IPv6 literal keeps its brackets (RFC 5322 no-fold-literal).
        authority
            .find(']')
            .map_or(authority, |end| &authority[..=end])
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    if host.is_empty() {
        "localhost".to_owned()
    } else {
        host.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_host_is_the_bare_host() {
        assert_eq!(message_id_host("http://127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(
            message_id_host("https://Messages.Example.com/portal"),
            "messages.example.com"
        );
        assert_eq!(message_id_host("http://[::1]:8080"), "[::1]");
        assert_eq!(message_id_host("https://"), "localhost");
    }
}
