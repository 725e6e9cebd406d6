//! Outgoing mail: what Sealpost sends ([`Mail`]), the outbox it is queued
//! in (in the caller's transaction, so mail and state change commit
//! together), the worker that sends it with leases, retries and back-off,
//! and the transport (SMTP via lettre, or the local dev mailbox).
//!
//! Addresses, links and codes are secrets: they live only sealed in the
//! outbox row until it is sent or has failed, and never reach a log line.

pub mod dev_mailbox;
pub mod outbox;
pub mod render;
pub mod transport;
pub mod worker;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::vault::{MessageId, VaultError};

pub use outbox::Outbox;
pub use worker::spawn;

/// What to send. Rendered by the worker at send time (with the
/// organisation's current name and support line).
///
/// `Debug` hides links and codes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mail {
    /// To the customer: a secure message is waiting behind `url`.
    PickupLink { url: String, expires_at: i64 },
    /// To the customer: a document request is waiting behind `url`.
    RequestLink { url: String, expires_at: i64 },
    /// To the customer: a one-time verification code.
    VerificationCode { code: String, expires_at: i64 },
    /// To the sending agent: a PII-free alert about one of their messages.
    SenderAlert { alert: Alert, message_id: MessageId },
    /// To the agent who owns an incoming item: something a customer sent
    /// is waiting (the item's id and a portal link only).
    IncomingAlert { incoming_id: MessageId },
    /// To the agent who asked: the documents of a request arrived (the
    /// submission's id and a portal link only).
    SubmissionAlert { incoming_id: MessageId },
    /// To a new staff member: the link that sets up their account.
    StaffInvite { url: String },
    /// To a staff member: many failed sign-ins on their account (no
    /// address, IP or count: PII-free like the sender alerts).
    SignInAlert,
}

impl Mail {
    /// The stable name stored in the outbox `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Mail::PickupLink { .. } => "pickup_link",
            Mail::VerificationCode { .. } => "verification_code",
            Mail::SenderAlert { .. } => "sender_alert",
            Mail::IncomingAlert { .. } => "incoming_alert",
            Mail::RequestLink { .. } => "request_link",
            Mail::SubmissionAlert { .. } => "submission_alert",
            Mail::StaffInvite { .. } => "staff_invite",
            Mail::SignInAlert => "sign_in_alert",
        }
    }
}

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mail::PickupLink { expires_at, .. } => f
                .debug_struct("PickupLink")
                .field("url", &"***")
                .field("expires_at", expires_at)
                .finish(),
            Mail::RequestLink { expires_at, .. } => f
                .debug_struct("RequestLink")
                .field("url", &"***")
                .field("expires_at", expires_at)
                .finish(),
            Mail::VerificationCode { expires_at, .. } => f
                .debug_struct("VerificationCode")
                .field("code", &"***")
                .field("expires_at", expires_at)
                .finish(),
            Mail::SenderAlert { alert, message_id } => f
                .debug_struct("SenderAlert")
                .field("alert", alert)
                .field("message_id", message_id)
                .finish(),
            Mail::IncomingAlert { incoming_id } => f
                .debug_struct("IncomingAlert")
                .field("incoming_id", incoming_id)
                .finish(),
            Mail::SubmissionAlert { incoming_id } => f
                .debug_struct("SubmissionAlert")
                .field("incoming_id", incoming_id)
                .finish(),
            Mail::StaffInvite { .. } => f.debug_struct("StaffInvite").field("url", &"***").finish(),
            Mail::SignInAlert => f.write_str("SignInAlert"),
        }
    }
}

/// Why a sender is alerted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alert {
    /// The customer verified and opened the message for the first time.
    FirstPickup,
    /// Too many failed verifications: the message is locked.
    Locked,
}

/// Why queueing or sending mail failed. No variant carries an address,
/// link or code.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The recipient is not a valid email address.
    #[error("the recipient address is not valid")]
    InvalidAddress,
    /// The configured `mail_from` is not a valid mailbox (checked at boot, so
    /// this means the config was built by hand).
    #[error("mail_from is not a valid address")]
    InvalidFrom,
    /// The configured `smtp_url` is not usable.
    #[error("smtp_url is not a usable smtp:// or smtps:// URL")]
    InvalidSmtpUrl,
    /// Rendering a template or building the email failed.
    #[error("cannot build the email: {0}")]
    Build(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Vault(#[from] VaultError),
    /// The message was shredded: nothing about it may be queued any more.
    #[error("the message was shredded")]
    Shredded,
    #[error("{0}")]
    Delivery(#[from] crate::deliveries::DeliveryError),
    #[error("{0}")]
    Settings(#[from] crate::settings::SettingsError),
    #[error("{0}")]
    Audit(#[from] crate::audit::AuditError),
}
