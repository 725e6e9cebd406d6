//! The customer's secure answer, in a verified session only: text and
//! files stream from the multipart body into a sealed message of its own
//! (each file judged by its content, and scanned when a scanner is
//! configured), which joins the message's conversation. The incoming item,
//! the count against the message's allowance, the sender's PII-free alert
//! and the audit event commit in one transaction; a refused file leaves
//! nothing behind.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::ExposeSecret;
use tower_sessions::Session;

use super::receive::{
    FileFields, Form, Received, ReceivingSlot, Refusal, failure_reason, read_upload, record_answer,
    refused, sender_alert_to,
};
use super::view::{self, open_message};
use crate::app::App;
use crate::audit::{Action, Actor, Event};
use crate::deliveries::{Delivery, MAX_REPLIES};
use crate::filetype::FileKind;
use crate::incoming::Kind;
use crate::mail::Mail;
use crate::vault::{MessageId, MessageMeta};
use crate::web::PageError;
use crate::web::client_ip::ClientIp;

/// A reply's text, in characters: a note, not a document (those are files).
pub const MAX_REPLY_CHARS: usize = 20_000;
/// Items of a conversation the customer's page shows (the newest).
const CONVERSATION_SHOWN: usize = 20;

/// One earlier or later item of the conversation, as the customer sees it.
pub struct Entry {
    pub from_customer: bool,
    pub at: String,
    pub body: String,
    pub files: Vec<String>,
}

/// The reply form under the message, when the sender allowed replies and
/// the allowance is not used up.
pub struct ReplyBox {
    pub errors: Vec<String>,
    pub limit_mib: u64,
    pub max_files: u32,
    pub accepted: String,
    /// The file input's `accept` hint (the server checks content anyway).
    pub accept_attr: String,
}

impl ReplyBox {
    pub async fn new(
        app: &App,
        d: &Delivery,
        errors: Vec<String>,
    ) -> Result<Option<ReplyBox>, PageError> {
        if !d.allow_reply || d.replies >= MAX_REPLIES {
            return Ok(None);
        }
        // A customer page: the short-lived cache, like its branding.
        let (settings, _) = app.settings.cached().await?;
        Ok(Some(ReplyBox {
            errors,
            limit_mib: settings.size_limit_mib,
            max_files: settings.max_attachments,
            accepted: FileKind::labels(&settings.accepted_kinds),
            accept_attr: FileKind::accept_all(&settings.accepted_kinds),
        }))
    }
}

/// The rest of the message's conversation, oldest first: the sender's
/// other messages and the customer's replies that are not shredded. The
/// session verified for `d`, whose recipient every answer in the
/// conversation goes to (compose checks it).
pub async fn conversation(app: &App, d: &Delivery) -> Result<Vec<Entry>, PageError> {
    let mut items: Vec<(i64, MessageId, bool)> = Vec::new();
    for other in app.deliveries.conversation(d.conversation_id).await? {
        if other.message_id != d.message_id && other.shredded_at.is_none() {
            items.push((other.created_at, other.message_id, false));
        }
    }
    for item in app.incoming.conversation(d.conversation_id).await? {
        if item.shredded_at.is_none() {
            items.push((item.received_at, item.id, true));
        }
    }
    items.sort();
    let skip = items.len().saturating_sub(CONVERSATION_SHOWN);
    let mut out = Vec::new();
    for (at, id, from_customer) in items.into_iter().skip(skip) {
        if let Some(opened) = open_message(app, id).await? {
            out.push(Entry {
                from_customer,
                at: crate::text::format_time(at),
                body: opened.body,
                files: opened.files.into_iter().map(|f| f.name).collect(),
            });
        }
    }
    Ok(out)
}

/// `POST /pickup/{id}/reply`: only in a session verified for this
/// message and its current link.
pub async fn reply(
    State(app): State<App>,
    session: Session,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, PageError> {
    let d = match view::require(&app, &session, &id).await {
        Ok(d) => d,
        Err(r) => return Ok(r),
    };
    if !d.allow_reply || d.replies >= MAX_REPLIES {
        return Err(PageError::BadRequest(
            "This message does not accept (more) replies. If you need to send something, contact the sender."
                .to_owned(),
        ));
    }
    let Some(_slot) = ReceivingSlot::take(d.message_id) else {
        return Err(PageError::TooMany(
            "Your reply is already being sent. Wait for it to finish.".to_owned(),
        ));
    };
    let settings = app.settings.load().await?;
    let form = Form {
        noun: "reply",
        max_chars: MAX_REPLY_CHARS,
        files: FileFields::Files,
        kinds: settings.accepted_kinds.clone(),
        limit: settings.size_limit_bytes(),
        max_files: settings.max_attachments,
    };
    let (multipart, outcome) = read_upload(&app, &session, &form, request).await?;
    let outcome = outcome.map(|r| {
        r.and_then(|got| {
            if got.text.trim().is_empty() && got.files == 0 {
                Err(Refusal::new(
                    "empty",
                    "Write a reply or choose at least one file.",
                ))
            } else {
                Ok(got)
            }
        })
    });
    match outcome {
        Ok(Ok(got)) => {
            commit(&app, &d, ip, got).await?;
            Ok(Redirect::to(&format!("/pickup/{}?replied=1", d.message_id)).into_response())
        }
        Ok(Err(refusal)) => {
            crate::web::linger(multipart);
            refused(&app, Some(d.message_id), ip, refusal.reason, "reply").await;
            let reply = ReplyBox::new(&app, &d, vec![refusal.message]).await?;
            let page = view::render(&app, &session, &d, view::Answer::Reply(reply), false).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => {
            crate::web::linger(multipart);
            if let Some(reason) = failure_reason(&e) {
                refused(&app, Some(d.message_id), ip, reason, "reply").await;
            }
            Err(e)
        }
    }
}

/// Makes the reply visible: the sealed message (with the customer's
/// address in its sealed metadata), one more reply counted on the message
/// (refused once the allowance is used up, B3), the incoming item for the
/// sender, their alert and the audit event, all in one transaction.
async fn commit(
    app: &App,
    d: &Delivery,
    ip: std::net::IpAddr,
    Received { draft, files, .. }: Received,
) -> Result<(), PageError> {
    let address = app.deliveries.open_recipient(d)?;
    let alert_to = sender_alert_to(app, d).await?;
    let reply_id = draft.id();
    let meta = MessageMeta {
        recipient_address: Some(address.expose_secret().to_owned()),
        ..MessageMeta::default()
    };
    let sealed = app.vault.seal(draft, &meta)?;
    let mut tx = app.db.begin().await?;
    if !app.deliveries.take_reply(&mut tx, d.message_id).await? {
        return Err(PageError::BadRequest(
            "This message does not accept more replies. Nothing was sent.".to_owned(),
        ));
    }
    app.vault.commit(&mut tx, sealed).await?;
    let alert = alert_to.map(|to| {
        let mail = Mail::IncomingAlert {
            incoming_id: reply_id,
        };
        (to, mail)
    });
    record_answer(app, &mut tx, d, reply_id, Kind::Reply, alert).await?;
    let event = Event::new(Actor::Customer, Action::ReplyReceived)
        .message(d.message_id)
        .ip(ip)
        .detail(serde_json::json!({ "reply": reply_id.to_string(), "files": files }));
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    app.metrics.reply_received();
    Ok(())
}
