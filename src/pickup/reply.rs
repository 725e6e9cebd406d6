//! The customer's secure answer, in a verified session only: text and
//! files stream from the multipart body into a sealed message of its own
//! (each file judged by its content, and scanned when a scanner is
//! configured), which joins the message's conversation. The incoming item,
//! the count against the message's allowance, the sender's PII-free alert
//! and the audit event commit in one transaction; a refused file leaves
//! nothing behind.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, PoisonError};

use axum::extract::multipart::Field;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::ExposeSecret;
use tower_sessions::Session;

use super::view::{self, open_message};
use crate::app::App;
use crate::audit::{Action, Actor, Event};
use crate::deliveries::{Delivery, MAX_REPLIES};
use crate::filetype::FileKind;
use crate::incoming::{Kind, NewItem};
use crate::mail::Mail;
use crate::settings::Settings;
use crate::vault::{Draft, MessageId, MessageMeta, PartKind, PartMeta};
use crate::web::PageError;
use crate::web::client_ip::ClientIp;
use crate::web::csrf;
use crate::web::upload::{
    Budget, Checks, UploadName, begin_with_text, clean_file_name, first_chunk, interrupted,
    open_multipart, seal_checked, upload_name,
};

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
    pub accept_attr: &'static str,
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
            accepted: accepted_labels(),
            accept_attr: ".pdf,.jpg,.jpeg,.png,.heic,.heif,.docx,.odt,.xlsx,.ods,.pptx,.odp,.txt,\
                          application/pdf,image/jpeg,image/png,image/heic,text/plain",
        }))
    }
}

fn accepted_labels() -> String {
    let labels: Vec<&str> = FileKind::ALL.iter().map(|k| k.label()).collect();
    labels.join(", ")
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

/// Messages with a reply being received, in this process: one at a time
/// per message (a second tab or a script cannot stream many at once). A
/// message has one live session, so this bounds each session; behind a
/// load balancer, one per instance.
static RECEIVING: LazyLock<Mutex<HashSet<MessageId>>> = LazyLock::new(Default::default);

struct ReceivingSlot(MessageId);

impl ReceivingSlot {
    fn take(id: MessageId) -> Option<ReceivingSlot> {
        let mut open = RECEIVING.lock().unwrap_or_else(PoisonError::into_inner);
        // Built only when taken: a slot dropped here would free another's.
        open.insert(id).then(|| ReceivingSlot(id))
    }
}

impl Drop for ReceivingSlot {
    fn drop(&mut self) {
        RECEIVING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
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
    let (mut multipart, declared_too_large) =
        open_multipart(request, &app, settings.size_limit_bytes()).await?;
    let outcome = if declared_too_large {
        Err(too_large(&settings))
    } else {
        receive(&app, &session, &settings, &mut multipart).await
    };
    match outcome {
        Ok(Ok(draft_and_count)) => {
            commit(&app, &d, ip, draft_and_count).await?;
            Ok(Redirect::to(&format!("/pickup/{}?replied=1", d.message_id)).into_response())
        }
        Ok(Err(refusal)) => {
            crate::web::linger(multipart);
            refused(&app, &d, ip, refusal.reason).await;
            let reply = ReplyBox::new(&app, &d, vec![refusal.message]).await?;
            let page = view::render(&app, &session, &d, reply, false).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => {
            crate::web::linger(multipart);
            let reason = match &e {
                PageError::TooLarge(_) => Some("too_large"),
                PageError::Csrf => None,
                _ => Some("error"),
            };
            if let Some(reason) = reason {
                refused(&app, &d, ip, reason).await;
            }
            Err(e)
        }
    }
}

fn too_large(settings: &Settings) -> PageError {
    PageError::TooLarge(format!(
        "Your reply and its files are larger than the limit of {} MiB. Nothing was sent or kept.",
        settings.size_limit_mib
    ))
}

/// Why the reply was not kept: the audit and metrics class, and what the
/// customer reads.
struct Refusal {
    reason: &'static str,
    message: String,
}

impl Refusal {
    fn new(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            message: message.into(),
        }
    }
}

async fn refused(app: &App, d: &Delivery, ip: std::net::IpAddr, reason: &'static str) {
    app.metrics.upload_refused(reason);
    let event = Event::new(Actor::Customer, Action::UploadRefused)
        .message(d.message_id)
        .ip(ip)
        .detail(serde_json::json!({ "reason": reason, "kind": "reply" }));
    if let Err(e) = app.audit.record_now(&event).await {
        tracing::warn!(error = %e, "could not audit a refused reply");
    }
}

/// A reply read and sealed in full, not yet visible: its draft and how
/// many files it has.
type Received = (Draft, u32);

async fn receive(
    app: &App,
    session: &Session,
    settings: &Settings,
    multipart: &mut Multipart,
) -> Result<Result<Received, Refusal>, PageError> {
    let mut budget = Budget::default();
    let mut csrf_ok = false;
    let mut text: Option<String> = None;
    let mut draft: Option<Draft> = None;
    let mut files = 0u32;
    while let Some(field) = multipart.next_field().await.map_err(|_| interrupted())? {
        let name = field.name().unwrap_or_default().to_owned();
        // The token comes first; nothing else is read before it.
        if !csrf_ok {
            if name != "csrf" {
                return Err(PageError::Csrf);
            }
            budget.count()?;
            let token = budget.text(field, 1024).await?;
            csrf::check(session, &token).await?;
            csrf_ok = true;
            continue;
        }
        let upload = upload_name(field.headers());
        if name != "files" {
            // The text comes once and before the files (it is sealed when
            // the first file arrives); files only in the file field.
            if upload != UploadName::None || (name == "body" && (text.is_some() || draft.is_some()))
            {
                return Ok(Err(Refusal::new(
                    "bad_form",
                    "The form arrived in an unexpected shape. Nothing was sent; please reload the page and try again.",
                )));
            }
            budget.count()?;
            if name != "body" {
                // Unknown fields are ignored, but they counted.
                continue;
            }
            let body = budget.text(field, MAX_REPLY_CHARS * 4).await?;
            if body.chars().count() > MAX_REPLY_CHARS {
                return Ok(Err(Refusal::new(
                    "too_long",
                    format!(
                        "Your reply is too long (at most {MAX_REPLY_CHARS} characters); send long documents as files."
                    ),
                )));
            }
            text = Some(body.replace("\r\n", "\n"));
            continue;
        }
        if upload == UploadName::Unreadable {
            return Ok(Err(Refusal::new(
                "bad_name",
                "The name of a file could not be read. Rename the file and try again; nothing was sent.",
            )));
        }
        let d_now = match draft.take() {
            Some(draft) => draft,
            None => begin(app, settings, text.as_deref().unwrap_or_default()).await?,
        };
        match file(app, settings, d_now, upload, field, files, &mut budget).await? {
            FileOutcome::Sealed(next) => {
                files += 1;
                draft = Some(next);
            }
            FileOutcome::Empty(next) => draft = Some(next),
            FileOutcome::Refused(r) => return Ok(Err(r)),
        }
    }
    if !csrf_ok {
        return Err(PageError::Csrf);
    }
    let text = text.unwrap_or_default();
    if text.trim().is_empty() && files == 0 {
        return Ok(Err(Refusal::new(
            "empty",
            "Write a reply or choose at least one file.",
        )));
    }
    let draft = match draft {
        Some(draft) => draft,
        None => begin(app, settings, &text).await?,
    };
    Ok(Ok((draft, files)))
}

/// Starts the reply's sealed message with its text as part 0.
async fn begin(app: &App, settings: &Settings, text: &str) -> Result<Draft, PageError> {
    begin_with_text(&app.vault, settings.size_limit_bytes(), text).await
}

enum FileOutcome {
    Sealed(Draft),
    /// An empty file input (no name, no bytes): nothing to keep.
    Empty(Draft),
    Refused(Refusal),
}

async fn file(
    app: &App,
    settings: &Settings,
    draft: Draft,
    upload: UploadName,
    mut field: Field<'_>,
    files: u32,
    budget: &mut Budget,
) -> Result<FileOutcome, PageError> {
    let file_name = match upload {
        UploadName::Name(raw) => Some(clean_file_name(&raw)).filter(|n| !n.is_empty()),
        _ => None,
    };
    let first = first_chunk(&mut field).await?;
    if first.is_none() && file_name.is_none() {
        budget.count()?;
        return Ok(FileOutcome::Empty(draft));
    }
    if files >= settings.max_attachments {
        return Ok(FileOutcome::Refused(Refusal::new(
            "too_many_files",
            format!(
                "Send at most {} files in one reply. Nothing was sent.",
                settings.max_attachments
            ),
        )));
    }
    let file_name = file_name.unwrap_or_else(|| format!("file-{}", files + 1));
    let meta = PartMeta {
        file_name: Some(file_name.clone()),
        content_type: None,
    };
    let checks = Checks {
        kinds: Some(FileKind::ALL.to_vec()),
        scanner: app.scanner.clone(),
    };
    let sealed = seal_checked(draft, PartKind::Attachment, meta, first, field, checks).await;
    match sealed {
        Ok(Ok((draft, _))) => Ok(FileOutcome::Sealed(draft)),
        Ok(Err(refused)) => Ok(FileOutcome::Refused(Refusal::new(
            refused.reason(),
            refused.message(&file_name, &FileKind::ALL),
        ))),
        Err(PageError::TooLarge(_)) => Err(too_large(settings)),
        Err(e) => Err(e),
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
    (draft, files): Received,
) -> Result<(), PageError> {
    let address = app.deliveries.open_recipient(d)?;
    // Loaded before the transaction (B4).
    let sender = app.accounts.state(d.sender).await?;
    let alert_to = sender
        .filter(|s| !s.account.disabled)
        .map(|s| s.account.email.as_str().to_owned());
    let reply_id = draft.id();
    let meta = MessageMeta {
        recipient_address: Some(address.expose_secret().to_owned()),
        recipient_phone: None,
        title: None,
        reference: None,
    };
    let mut tx = app.db.begin().await?;
    if !app.deliveries.take_reply(&mut tx, d.message_id).await? {
        return Err(PageError::BadRequest(
            "This message does not accept more replies. Nothing was sent.".to_owned(),
        ));
    }
    app.vault.commit(&mut tx, draft, &meta).await?;
    app.incoming
        .insert(
            &mut tx,
            &NewItem {
                id: reply_id,
                kind: Kind::Reply,
                conversation_id: Some(d.conversation_id),
                in_reply_to: Some(d.message_id),
                owner: Some(d.sender),
            },
        )
        .await?;
    if let Some(to) = alert_to {
        // Not tied to the message: its shred must not cancel this alert.
        app.outbox
            .enqueue(
                &mut tx,
                &to,
                &Mail::IncomingAlert {
                    incoming_id: reply_id,
                },
                None,
            )
            .await?;
    }
    let event = Event::new(Actor::Customer, Action::ReplyReceived)
        .message(d.message_id)
        .ip(ip)
        .detail(serde_json::json!({ "reply": reply_id.to_string(), "files": files }));
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    app.metrics.reply_received();
    Ok(())
}
