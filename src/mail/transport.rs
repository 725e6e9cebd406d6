//! Where rendered mail goes: an SMTP server (lettre, pooled connections) or,
//! when no `smtp_url` is configured, the local dev mailbox.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;

use super::MailError;
use crate::config::{SmtpTls, SmtpUrl};

/// Per SMTP command; a stuck server must not hold a lease for long.
const SMTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Pooled connections: enough to overlap round trips, few enough not to
/// trip a relay's per-client connection limit.
const POOL_SIZE: u32 = 8;

#[derive(Clone)]
pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// Mail is kept, sealed, in the `dev_mailbox` table.
    DevMailbox,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Smtp(_) => f.write_str("Transport::Smtp(..)"),
            Transport::DevMailbox => f.write_str("Transport::DevMailbox"),
        }
    }
}

/// How a send failed, as far as retrying is concerned. The text is an
/// error class or SMTP status code, safe to store and log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Worth retrying later: SMTP 4xx, connection, TLS or timeout trouble.
    Temporary(String),
    /// Will never work: SMTP 5xx, an unusable address or payload.
    Permanent(String),
}

impl Transport {
    pub fn from_config(smtp_url: Option<&SmtpUrl>) -> Result<Transport, MailError> {
        let Some(url) = smtp_url else {
            return Ok(Transport::DevMailbox);
        };
        let transport = builder_for(url)?
            .timeout(Some(SMTP_TIMEOUT))
            .pool_config(PoolConfig::new().max_size(POOL_SIZE))
            .build();
        Ok(Transport::Smtp(transport))
    }

    pub fn is_dev_mailbox(&self) -> bool {
        matches!(self, Transport::DevMailbox)
    }

    /// Sends over SMTP (the dev mailbox is written by the worker, in the
    /// transaction that marks the row sent).
    pub async fn send_smtp(&self, envelope: &Envelope, raw: &[u8]) -> Result<(), SendError> {
        match self {
            Transport::Smtp(smtp) => smtp
                .send_raw(envelope, raw)
                .await
                .map(|_| ())
                .map_err(|e| classify(&e)),
            Transport::DevMailbox => Ok(()),
        }
    }
}

/// lettre's builder for a parsed `smtp_url`, set up as lettre's `from_url`
/// sets it up from the URL's text.
fn builder_for(url: &SmtpUrl) -> Result<AsyncSmtpTransportBuilder, MailError> {
    let tls = || TlsParameters::new(url.host().to_owned()).map_err(|_| MailError::InvalidSmtpUrl);
    let builder =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(url.host()).port(url.port());
    let mut builder = match url.tls() {
        SmtpTls::None => builder,
        SmtpTls::Required => builder.tls(Tls::Required(tls()?)),
        SmtpTls::Opportunistic => builder.tls(Tls::Opportunistic(tls()?)),
        SmtpTls::Wrapper => builder.tls(Tls::Wrapper(tls()?)),
    };
    if let Some(name) = url.hello_name() {
        builder = builder.hello_name(ClientId::Domain(name.to_owned()));
    }
    if let Some(login) = url.credentials() {
        let password = login.password.expose_secret().to_owned();
        builder = builder.credentials(Credentials::new(login.user.clone(), password));
    }
    Ok(builder)
}

/// Sorts an SMTP error into retry or give up. Only the status code or the
/// kind of error is kept: server replies can quote the address.
fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    if let Some(code) = e.status() {
        let class = format!("smtp {code}");
        return if e.is_permanent() {
            SendError::Permanent(class)
        } else {
            SendError::Temporary(class)
        };
    }
    if e.is_timeout() {
        SendError::Temporary("timeout".to_owned())
    } else if e.is_tls() {
        SendError::Temporary("tls".to_owned())
    } else if e.is_client() {
        SendError::Permanent("client".to_owned())
    } else {
        // Includes a reply that could not be read: in practice a dropped
        // connection.
        SendError::Temporary("connection".to_owned())
    }
}
