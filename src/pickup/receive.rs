//! What a customer's upload goes through, whether a reply or a document
//! request's submission: the CSRF token first, an optional text, then
//! files streamed into one sealed draft, each judged by its content (and
//! scanned when a scanner is configured). Any refusal drops the draft and
//! its blobs; the caller commits a complete one.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, PoisonError};

use axum::extract::Multipart;
use axum::extract::multipart::Field;
use tower_sessions::Session;

use crate::app::App;
use crate::audit::{Action, Actor, Event};
use crate::deliveries::Delivery;
use crate::filetype::FileKind;
use crate::incoming::{Kind, NewItem};
use crate::mail::Mail;
use crate::store::Tx;
use crate::vault::{Draft, MessageId, PartKind, PartMeta};
use crate::web::PageError;
use crate::web::csrf;
use crate::web::upload::{
    Budget, Checks, UploadName, begin_with_text, clean_file_name, first_chunk, interrupted,
    open_multipart, seal_checked, upload_name,
};

/// Which file fields a form has.
#[derive(Clone, Copy, Debug)]
pub enum FileFields {
    /// One field, `files` (a reply).
    Files,
    /// `item-0` … `item-{n-1}`: one per checklist item (a request).
    Items(u32),
}

impl FileFields {
    /// The item a field's files are for (`Some(None)`: no item), or
    /// `None` when the form has no such file field.
    fn item(self, name: &str) -> Option<Option<u32>> {
        match self {
            FileFields::Files => (name == "files").then_some(None),
            FileFields::Items(n) => name
                .strip_prefix("item-")
                .and_then(|i| i.parse::<u32>().ok())
                .filter(|i| *i < n)
                .map(Some),
        }
    }
}

/// What one upload form accepts.
pub struct Form {
    /// What the customer calls it in messages: "reply", "upload".
    pub noun: &'static str,
    pub max_chars: usize,
    pub files: FileFields,
    pub kinds: Vec<FileKind>,
    /// The largest upload, text and files together, in bytes.
    pub limit: u64,
    pub max_files: u32,
}

impl Form {
    pub fn too_large(&self) -> PageError {
        PageError::TooLarge(format!(
            "Your {} and its files are larger than the limit of {} MiB. Nothing was sent or kept.",
            self.noun,
            self.limit / (1024 * 1024)
        ))
    }
}

/// An upload read and sealed in full, not yet visible.
pub struct Received {
    pub draft: Draft,
    pub text: String,
    pub files: u32,
    /// Files per checklist item (empty for a reply).
    pub per_item: Vec<u32>,
}

/// Why an upload was not kept: the audit and metrics class, and what the
/// customer reads.
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            message: message.into(),
        }
    }
}

/// Audits and counts a refused upload, by reason only.
pub async fn refused(
    app: &App,
    id: Option<MessageId>,
    ip: std::net::IpAddr,
    reason: &'static str,
    kind: &'static str,
) {
    app.metrics.upload_refused(reason);
    let mut event = Event::new(Actor::Customer, Action::UploadRefused)
        .ip(ip)
        .detail(serde_json::json!({ "reason": reason, "kind": kind }));
    if let Some(id) = id {
        // The message answered (a secure-inbox upload answers none).
        event = event.message(id);
    }
    if let Err(e) = app.audit.record_now(&event).await {
        tracing::warn!(error = %e, "could not audit a refused upload");
    }
}

/// The class an upload that failed with `e` is audited as (none for a
/// forged form: nothing of it was read).
pub fn failure_reason(e: &PageError) -> Option<&'static str> {
    match e {
        PageError::TooLarge(_) => Some("too_large"),
        PageError::Csrf => None,
        _ => Some("error"),
    }
}

/// Uploads being received, in this process, by what they are for: one at
/// a time per message, or per verified secure-inbox address (a second tab
/// or a script cannot stream many at once). Each has one live session, so
/// this bounds each session; behind a load balancer, one per instance.
static RECEIVING: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

pub struct ReceivingSlot(String);

impl ReceivingSlot {
    pub fn take(id: MessageId) -> Option<ReceivingSlot> {
        Self::take_key(format!("message:{id}"))
    }

    /// A slot for something other than a message (`key` is no secret and
    /// no customer data: it names a keyed hash at most).
    pub fn take_key(key: String) -> Option<ReceivingSlot> {
        let mut open = RECEIVING.lock().unwrap_or_else(PoisonError::into_inner);
        // Built only when taken: a slot dropped here would free another's.
        open.insert(key.clone()).then(|| ReceivingSlot(key))
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

/// What reading an upload came to, with the multipart body (to drain
/// after a refusal, so the browser sees the answer).
pub type Upload = (Multipart, Result<Result<Received, Refusal>, PageError>);

/// Opens the request's multipart body within `form`'s limit and reads it
/// (refused at once when the declared length is over the limit).
pub async fn read_upload(
    app: &App,
    session: &Session,
    form: &Form,
    http: axum::extract::Request,
) -> Result<Upload, PageError> {
    let (mut multipart, declared_too_large) = open_multipart(http, app, form.limit).await?;
    let outcome = if declared_too_large {
        Err(form.too_large())
    } else {
        receive(app, session, form, &mut multipart).await
    };
    Ok((multipart, outcome))
}

/// Where the sender of `d` is alerted, if they can be (a disabled or
/// service account is not). Loaded before a transaction (B4).
pub async fn sender_alert_to(app: &App, d: &Delivery) -> Result<Option<String>, PageError> {
    let sender = app.accounts.state(d.sender).await?;
    Ok(sender.as_ref().and_then(|s| s.mail_to()).map(str::to_owned))
}

/// In the transaction that commits what the customer sent in answer to
/// `d`: the incoming item for `d`'s sender, in its conversation, and the
/// sender's PII-free `alert` (not tied to the message: its shred must not
/// cancel the alert).
pub async fn record_answer(
    app: &App,
    tx: &mut Tx,
    d: &Delivery,
    id: MessageId,
    kind: Kind,
    alert: Option<(String, Mail)>,
) -> Result<(), PageError> {
    app.incoming
        .insert(
            tx,
            &NewItem {
                id,
                kind,
                conversation_id: Some(d.conversation_id),
                in_reply_to: Some(d.message_id),
                owner: Some(d.sender),
            },
        )
        .await?;
    if let Some((to, mail)) = alert {
        app.outbox.enqueue(tx, &to, &mail, None).await?;
    }
    Ok(())
}

/// Reads the form: the token, then `body` (once, before any file), then
/// files in the form's file fields.
pub async fn receive(
    app: &App,
    session: &Session,
    form: &Form,
    multipart: &mut Multipart,
) -> Result<Result<Received, Refusal>, PageError> {
    let mut budget = Budget::default();
    let mut csrf_ok = false;
    let mut text: Option<String> = None;
    let mut draft: Option<Draft> = None;
    let mut files = 0u32;
    let mut per_item = match form.files {
        FileFields::Files => Vec::new(),
        FileFields::Items(n) => vec![0; n as usize],
    };
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
        let Some(item) = form.files.item(&name) else {
            // The text comes once and before the files (it is sealed when
            // the first file arrives); files only in the file fields.
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
            let body = budget.text(field, form.max_chars * 4).await?;
            if body.chars().count() > form.max_chars {
                return Ok(Err(Refusal::new(
                    "too_long",
                    format!(
                        "Your text is too long (at most {} characters); send long documents as files.",
                        form.max_chars
                    ),
                )));
            }
            text = Some(body.replace("\r\n", "\n"));
            continue;
        };
        if upload == UploadName::Unreadable {
            return Ok(Err(Refusal::new(
                "bad_name",
                "The name of a file could not be read. Rename the file and try again; nothing was sent.",
            )));
        }
        let current = match draft.take() {
            Some(draft) => draft,
            None => {
                begin_with_text(&app.vault, form.limit, text.as_deref().unwrap_or_default()).await?
            }
        };
        let meta = PartMeta {
            file_name: match upload {
                UploadName::Name(raw) => Some(clean_file_name(&raw)).filter(|n| !n.is_empty()),
                _ => None,
            },
            content_type: None,
            item,
        };
        match file(app, form, current, meta, field, files, &mut budget).await? {
            FileOutcome::Sealed(next) => {
                files += 1;
                if let Some(n) = item.and_then(|i| per_item.get_mut(i as usize)) {
                    *n += 1;
                }
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
    let draft = match draft {
        Some(draft) => draft,
        None => begin_with_text(&app.vault, form.limit, &text).await?,
    };
    Ok(Ok(Received {
        draft,
        text,
        files,
        per_item,
    }))
}

enum FileOutcome {
    Sealed(Draft),
    /// An empty file input (no name, no bytes): nothing to keep.
    Empty(Draft),
    Refused(Refusal),
}

/// One file: `meta` names it as sent (no name: an empty input, or one
/// named after its place).
async fn file(
    app: &App,
    form: &Form,
    draft: Draft,
    mut meta: PartMeta,
    mut field: Field<'_>,
    files: u32,
    budget: &mut Budget,
) -> Result<FileOutcome, PageError> {
    let first = first_chunk(&mut field).await?;
    if first.is_none() && meta.file_name.is_none() {
        budget.count()?;
        return Ok(FileOutcome::Empty(draft));
    }
    if files >= form.max_files {
        return Ok(FileOutcome::Refused(Refusal::new(
            "too_many_files",
            format!(
                "Send at most {} files in one {}. Nothing was sent.",
                form.max_files, form.noun
            ),
        )));
    }
    let file_name = meta
        .file_name
        .get_or_insert_with(|| format!("file-{}", files + 1))
        .clone();
    let checks = Checks {
        kinds: Some(form.kinds.clone()),
        scanner: app.scanner.clone(),
    };
    let sealed = seal_checked(draft, PartKind::Attachment, meta, first, field, checks).await;
    match sealed {
        Ok(Ok((draft, _))) => Ok(FileOutcome::Sealed(draft)),
        Ok(Err(refused)) => Ok(FileOutcome::Refused(Refusal::new(
            refused.reason(),
            refused.message(&file_name, &form.kinds),
        ))),
        Err(PageError::TooLarge(_)) => Err(form.too_large()),
        Err(e) => Err(e),
    }
}
