//! Sent items: the list (own messages for agents, all for admins), one
//! message's page with its timeline, and the sender's actions on it.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::Pager;
use super::auth::CurrentStaff;
use crate::app::App;
use crate::audit::{Action, Event};
use crate::deliveries::{Cursor, Delivery, ListQuery, PageStart, Status};
use crate::text::{format_time, human_size};
use crate::vault::{MessageId, PartKind};
use crate::web::csrf::CsrfForm;
use crate::web::{Nav, PageError, PageResult};

const PAGE_SIZE: i64 = 25;

struct Row {
    id: String,
    recipient: String,
    title: String,
    status: &'static str,
    status_label: &'static str,
    created: String,
    expires: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/sent.html")]
struct SentPage {
    nav: Option<Nav>,
    rows: Vec<Row>,
    statuses: Vec<(&'static str, &'static str)>,
    status: String,
    q: String,
    everyone: bool,
    pager: Pager,
    locked: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListParams {
    status: String,
    q: String,
    /// A page cursor ([`Cursor::encode`]): the page of rows older, or
    /// newer, than it.
    older: String,
    newer: String,
}

pub async fn list(
    State(app): State<App>,
    staff: CurrentStaff,
    Query(p): Query<ListParams>,
) -> PageResult {
    let status = if p.status.is_empty() {
        None
    } else {
        Some(
            p.status
                .parse::<Status>()
                .map_err(|_| PageError::BadRequest("Unknown status filter.".into()))?,
        )
    };
    let q = p.q.trim().to_owned();
    let query = ListQuery {
        sender: (!staff.is_admin()).then(|| staff.id()),
        status,
        recipient_index: (!q.is_empty()).then(|| app.vault.recipient_index(&q)),
        from: page_start(&p)?,
        limit: PAGE_SIZE,
    };
    let page = app.deliveries.list(&query).await?;
    // In-app alert: locked messages need the sender's attention.
    let locked = app.deliveries.count_locked(query.sender).await?;
    let link = |cursor: Option<(&str, &str)>| {
        let mut params = vec![("status", p.status.as_str()), ("q", q.as_str())];
        params.extend(cursor);
        serde_urlencoded::to_string(params)
            .map(|qs| format!("/sent?{qs}"))
            .unwrap_or_else(|_| "/sent".to_owned())
    };
    let pager = Pager::new(&page, ("older", "newer"), Cursor::encode, link, true);
    let rows = rows(&app, page.items).await;
    Ok(SentPage {
        nav: staff.nav(),
        rows,
        statuses: Status::ALL
            .iter()
            .map(|s| (s.as_str(), s.label()))
            .collect(),
        status: p.status.clone(),
        q: q.clone(),
        everyone: staff.is_admin(),
        pager,
        locked,
    }
    .into_response())
}

/// Where the asked-for page starts (none: the newest page).
fn page_start(p: &ListParams) -> Result<Option<PageStart>, PageError> {
    super::page_start(&p.older, &p.newer, Cursor::parse)
}

/// The list's rows, with what the sealed metadata says of each.
async fn rows(app: &App, items: Vec<Delivery>) -> Vec<Row> {
    let now = app.clock.now();
    let mut rows = Vec::with_capacity(items.len());
    for d in items {
        let (recipient, title) = summary(app, &d).await;
        let status = d.status(now);
        rows.push(Row {
            id: d.message_id.to_string(),
            recipient,
            title,
            status: status.as_str(),
            status_label: status.label(),
            created: format_time(d.created_at),
            expires: format_time(d.expires_at),
        });
    }
    rows
}

/// Recipient and internal title for staff eyes, from the sealed metadata.
/// A shredded message has none left.
async fn summary(app: &App, d: &Delivery) -> (String, String) {
    match app.vault.unlock(d.message_id).await.and_then(|k| k.meta()) {
        Ok(meta) => (
            meta.recipient_address.unwrap_or_default(),
            meta.title.unwrap_or_default(),
        ),
        Err(crate::vault::VaultError::Shredded) => ("(shredded)".to_owned(), String::new()),
        Err(e) => {
            tracing::warn!(message = %d.message_id, error = %e, "cannot open a message's metadata");
            ("(unavailable)".to_owned(), String::new())
        }
    }
}

/// Loads a delivery the staff member may see; anything else is a 404 that
/// is audited, so probing other people's messages leaves a trace.
async fn authorised(
    app: &App,
    staff: &CurrentStaff,
    id: &str,
    what: &str,
) -> Result<Delivery, PageError> {
    crate::flows::sent::authorised(app, &staff.acting(), id, what).await
}

struct TimelineEntry {
    at: String,
    what: String,
}

/// One item of the message's conversation, on its page.
struct ConversationRow {
    href: String,
    what: String,
    at: String,
    current: bool,
}

/// The conversation a message belongs to, oldest first: the sent
/// messages and what the customer sent back (ids, times and states only).
async fn conversation(app: &App, d: &Delivery) -> Result<Vec<ConversationRow>, PageError> {
    let now = app.clock.now();
    let mut rows: Vec<(i64, ConversationRow)> = Vec::new();
    for m in app.deliveries.conversation(d.conversation_id).await? {
        rows.push((
            m.created_at,
            ConversationRow {
                href: format!("/messages/{}", m.message_id),
                what: format!("Sent: {}", m.status(now).label()),
                at: format_time(m.created_at),
                current: m.message_id == d.message_id,
            },
        ));
    }
    for item in app.incoming.conversation(d.conversation_id).await? {
        let state = item.state();
        rows.push((
            item.received_at,
            ConversationRow {
                href: format!("/inbox/{}", item.id),
                what: format!("{} received ({state})", item.kind.label()),
                at: format_time(item.received_at),
                current: false,
            },
        ));
    }
    rows.sort_by_key(|(at, _)| *at);
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

struct Attachment {
    name: String,
    size: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/message.html")]
struct MessagePage {
    nav: Option<Nav>,
    csrf: String,
    id: String,
    recipient: String,
    phone: String,
    title: String,
    status: &'static str,
    status_label: &'static str,
    created: String,
    expires: String,
    methods: Vec<&'static str>,
    shred_after_pickup: bool,
    attachments: Vec<Attachment>,
    shredded: bool,
    live: bool,
    locked: bool,
    timeline: Vec<TimelineEntry>,
    sent_notice: bool,
    generated_code: Option<String>,
    sender_is_me: bool,
    max_hours: u32,
    allow_reply: bool,
    conversation_id: String,
    conversation: Vec<ConversationRow>,
    request: Option<RequestView>,
    /// A request whose documents arrived: no new link.
    submitted: bool,
}

/// A document request on its page: item by item, what arrived.
struct RequestView {
    accepted: String,
    max: String,
    items: Vec<RequestItem>,
    /// The submission's inbox page, once the customer sent the files.
    submission: Option<String>,
    submitted: Option<String>,
    /// The submission was shredded (handled and past its retention).
    submission_shredded: bool,
}

struct RequestItem {
    label: String,
    /// (position in the submission, file name, size)
    files: Vec<(u32, String, String)>,
}

/// The request `d` is, if it is one: its checklist from its sealed
/// message (or, once that is shredded, from the submission's copy) and
/// the submission's files under their items.
async fn request_view(app: &App, d: &Delivery) -> Result<Option<RequestView>, PageError> {
    if !d.is_request {
        return Ok(None);
    }
    let Some(request) = app.requests.get(d.message_id).await? else {
        return Ok(None);
    };
    let mut labels = match app.vault.unlock(d.message_id).await {
        Ok(key) => key.meta()?.items,
        Err(crate::vault::VaultError::Shredded | crate::vault::VaultError::NotFound) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut files: Vec<(Option<u32>, u32, String, String)> = Vec::new();
    let mut submission_shredded = false;
    if let Some(sub) = request.submission {
        match app.vault.unlock(sub).await {
            Ok(key) => {
                if labels.is_empty() {
                    labels = key.meta()?.items;
                }
                for part in app.vault.parts(sub).await? {
                    if part.kind == PartKind::Attachment {
                        let pm = key.part_meta(&part)?;
                        files.push((
                            pm.item,
                            part.position,
                            pm.file_name.unwrap_or_default(),
                            human_size(part.plain_size),
                        ));
                    }
                }
            }
            Err(crate::vault::VaultError::Shredded) => submission_shredded = true,
            Err(e) => return Err(e.into()),
        }
    }
    let count = usize::try_from(request.items).unwrap_or(0);
    let items = (0..count)
        .map(|i| RequestItem {
            label: labels
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("Item {}", i + 1)),
            files: files
                .iter()
                .filter(|f| f.0.is_some_and(|n| n as usize == i))
                .map(|f| (f.1, f.2.clone(), f.3.clone()))
                .collect(),
        })
        .collect();
    Ok(Some(RequestView {
        accepted: crate::filetype::FileKind::labels(&request.accepted),
        max: human_size(request.max_bytes),
        items,
        submission: request.submission.map(|s| s.to_string()),
        submitted: request.submitted_at.map(format_time),
        submission_shredded,
    }))
}

#[derive(Deserialize, Default)]
pub struct MessageParams {
    sent: Option<u8>,
}

pub async fn message(
    State(app): State<App>,
    staff: CurrentStaff,
    Path(id): Path<String>,
    Query(params): Query<MessageParams>,
) -> PageResult {
    let d = authorised(&app, &staff, &id, "view").await?;
    let now = app.clock.now();
    let sealed = open_sealed(&app, d.message_id).await?;
    let event = Event::new(staff.actor(), Action::MessageViewed)
        .message(d.message_id)
        .ip(staff.ip);
    app.audit.record_now(&event).await?;
    let timeline = timeline(&app, d.message_id).await?;
    let generated_code = take_generated_code(&app, &staff, &id).await?;
    let status = d.status(now);
    let request = request_view(&app, &d).await?;
    Ok(MessagePage {
        nav: staff.nav(),
        csrf: staff.csrf.clone(),
        id: d.message_id.to_string(),
        recipient: sealed.recipient,
        phone: sealed.phone,
        title: sealed.title,
        status: status.as_str(),
        status_label: status.label(),
        created: format_time(d.created_at),
        expires: format_time(d.expires_at),
        methods: d.methods.iter().map(|m| m.label()).collect(),
        shred_after_pickup: d.shred_after_pickup,
        attachments: sealed.attachments,
        shredded: sealed.shredded,
        live: d.is_live(now),
        locked: d.locked_at.is_some() && d.is_live(now),
        timeline,
        sent_notice: params.sent == Some(1),
        generated_code,
        sender_is_me: d.sender == staff.id(),
        max_hours: crate::settings::MAX_EXPIRY_HOURS,
        allow_reply: d.allow_reply,
        conversation_id: d.conversation_id.to_string(),
        conversation: conversation(&app, &d).await?,
        submitted: request.as_ref().is_some_and(|r| r.submitted.is_some()),
        request,
    }
    .into_response())
}

/// What the message page shows from the sealed metadata (nothing once
/// the message is shredded).
#[derive(Default)]
struct Sealed {
    recipient: String,
    phone: String,
    title: String,
    attachments: Vec<Attachment>,
    shredded: bool,
}

async fn open_sealed(app: &App, id: MessageId) -> Result<Sealed, PageError> {
    let key = match app.vault.unlock(id).await {
        Ok(key) => key,
        Err(crate::vault::VaultError::Shredded) => {
            return Ok(Sealed {
                shredded: true,
                ..Sealed::default()
            });
        }
        Err(e) => return Err(e.into()),
    };
    let meta = key.meta()?;
    let mut attachments = Vec::new();
    for part in app.vault.parts(id).await? {
        if part.kind == PartKind::Attachment {
            let pm = key.part_meta(&part)?;
            attachments.push(Attachment {
                name: pm.file_name.unwrap_or_default(),
                size: human_size(part.plain_size),
            });
        }
    }
    Ok(Sealed {
        recipient: meta.recipient_address.unwrap_or_default(),
        phone: meta.recipient_phone.unwrap_or_default(),
        title: meta.title.unwrap_or_default(),
        attachments,
        shredded: false,
    })
}

/// The message's audit events, for its timeline.
async fn timeline(app: &App, id: MessageId) -> Result<Vec<TimelineEntry>, PageError> {
    Ok(app
        .audit
        .events_for_message(id)
        .await?
        .into_iter()
        .map(|e| TimelineEntry {
            at: format_time(e.at),
            what: describe(&e.action, &e.actor),
        })
        .collect())
}

/// The access code generated when this message was sent, once: it is
/// taken out of the session as it is shown.
async fn take_generated_code(
    app: &App,
    staff: &CurrentStaff,
    id: &str,
) -> Result<Option<String>, PageError> {
    let stored = staff
        .session
        .remove::<(String, String)>(super::compose::GENERATED_CODE_KEY)
        .await?;
    match stored {
        Some((for_id, sealed)) if for_id == id => {
            let sealed = hex::decode(sealed).map_err(|_| PageError::bug("bad sealed code"))?;
            let code = app
                .vault
                .open_secret(crate::vault::Purpose::GeneratedAccessCode, &sealed)?;
            Ok(Some(String::from_utf8_lossy(&code).into_owned()))
        }
        _ => Ok(None),
    }
}

fn describe(action: &str, actor: &str) -> String {
    let who = if actor.starts_with("staff:") {
        "staff"
    } else {
        actor
    };
    let what = match action {
        "message.sent" => "Encrypted and queued",
        "message.viewed" => "Viewed in the portal",
        "message.revoked" => "Revoked and shredded",
        "message.expiry_extended" => "Expiry changed",
        "message.link_resent" => "New link issued",
        "message.unlocked" => "Unlocked",
        "message.access_denied" => "Access refused",
        "message.shredded" => "Shredded",
        "message.exported" => "Exported for escrow",
        "incoming.reply_received" => "Reply received",
        "incoming.upload_refused" => "A reply was refused (nothing kept)",
        other => other,
    };
    format!("{what} ({who})")
}

#[derive(Deserialize)]
pub struct ActionForm {}

pub async fn revoke(
    State(app): State<App>,
    staff: CurrentStaff,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<ActionForm>,
) -> PageResult {
    let d = authorised(&app, &staff, &id, "revoke").await?;
    app.deliveries
        .revoke(staff.actor(), d.message_id, Some(staff.ip))
        .await?;
    Ok(Redirect::to(&format!("/messages/{}", d.message_id)).into_response())
}

#[derive(Deserialize)]
pub struct ExtendForm {
    hours: String,
}

pub async fn extend(
    State(app): State<App>,
    staff: CurrentStaff,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<ExtendForm>,
) -> PageResult {
    let d = authorised(&app, &staff, &id, "extend").await?;
    let hours: i64 = form
        .hours
        .trim()
        .parse()
        .map_err(|_| PageError::BadRequest("Enter the number of hours from now.".into()))?;
    let expires_at = app.clock.now().saturating_add(hours.saturating_mul(3600));
    app.deliveries
        .extend(staff.actor(), d.message_id, expires_at, Some(staff.ip))
        .await?;
    Ok(Redirect::to(&format!("/messages/{}", d.message_id)).into_response())
}

pub async fn resend(
    State(app): State<App>,
    staff: CurrentStaff,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<ActionForm>,
) -> PageResult {
    let d = authorised(&app, &staff, &id, "resend").await?;
    crate::flows::sent::resend(&app, &staff.acting(), &d).await?;
    Ok(Redirect::to(&format!("/messages/{}", d.message_id)).into_response())
}

pub async fn unlock(
    State(app): State<App>,
    staff: CurrentStaff,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<ActionForm>,
) -> PageResult {
    let d = authorised(&app, &staff, &id, "unlock").await?;
    app.deliveries
        .unlock(staff.actor(), d.message_id, Some(staff.ip))
        .await?;
    Ok(Redirect::to(&format!("/messages/{}", d.message_id)).into_response())
}
