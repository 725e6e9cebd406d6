//! After verification: the message, its attachments as streamed, decrypted
//! downloads, and "I'm done". Every request checks the session is bound to
//! this message, to its current link and still fresh.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use super::flow::PICKUP_IDLE_SECS;
use super::reply::{Entry, ReplyBox};
use super::request::RequestBox;
use super::{Brand, Notice, notice};
use crate::app::App;
use crate::audit::{Action, Actor, Event};
use crate::deliveries::{Delivery, Status};
use crate::vault::{MessageId, PartKind, VaultError};
use crate::web::PageError;
use crate::web::client_ip::ClientIp;
use crate::web::csrf::{self, CsrfForm};
use crate::web::download::{Attachment, read_text};

const PICKUP_KEY: &str = "pickup";
/// However active, a "shred after pickup" message goes this long after
/// verification.
const SHRED_CAP_SECS: i64 = 4 * 3600;
const TOUCH_EVERY_SECS: i64 = 60;
/// Downloads one pickup session may have open at once.
pub const DOWNLOADS_PER_SESSION: usize = 4;

#[derive(Serialize, Deserialize)]
struct Binding {
    message_id: String,
    verified_at: i64,
    last_seen: i64,
    /// The delivery's `link_generation` when verified: "send a new link"
    /// moves it on and so ends this session too. `None` for a binding
    /// written before it was recorded, which is treated as moved on.
    generation: Option<i64>,
}

/// Called once verification succeeded: a new session id, bound to `id` as
/// reached through the link of `generation`.
pub async fn bind_session(
    app: &App,
    session: &Session,
    id: MessageId,
    generation: i64,
) -> Result<(), PageError> {
    session.cycle_id().await?;
    let now = app.clock.now();
    session
        .insert(
            PICKUP_KEY,
            &Binding {
                message_id: id.to_string(),
                verified_at: now,
                last_seen: now,
                generation: Some(generation),
            },
        )
        .await?;
    csrf::renew(session).await?;
    Ok(())
}

pub(super) async fn require(app: &App, session: &Session, id: &str) -> Result<Delivery, Response> {
    let fail = |e: PageError| e.into_response();
    let binding = session
        .get::<Binding>(PICKUP_KEY)
        .await
        .map_err(|e| fail(e.into()))?;
    let now = app.clock.now();
    let Some(mut b) = binding.filter(|b| b.message_id == id) else {
        return Err(notice(app, Notice::SessionEnded, None).await);
    };
    if now - b.last_seen > PICKUP_IDLE_SECS {
        session
            .remove_value(PICKUP_KEY)
            .await
            .map_err(|e| fail(e.into()))?;
        return Err(notice(app, Notice::SessionEnded, None).await);
    }
    let mid: MessageId = id.parse().map_err(|_| fail(PageError::NotFound))?;
    let d = app.deliveries.get(mid).await.map_err(|e| fail(e.into()))?;
    if !d.is_live(now) || d.shred_at.is_some_and(|t| t <= now) {
        return Err(notice(app, Notice::Unavailable, None).await);
    }
    if b.generation != Some(d.link_generation) {
        // A new link was sent since this session verified: the old link
        // is dead, and so is what was opened through it.
        session
            .remove_value(PICKUP_KEY)
            .await
            .map_err(|e| fail(e.into()))?;
        return Err(notice(app, Notice::SessionEnded, None).await);
    }
    if now - b.last_seen >= TOUCH_EVERY_SECS {
        b.last_seen = now;
        session
            .insert(PICKUP_KEY, &b)
            .await
            .map_err(|e| fail(e.into()))?;
        if d.shred_at.is_some() {
            // Activity keeps a shred-after-pickup message open, up to a cap.
            let until = (now + PICKUP_IDLE_SECS).min(b.verified_at + SHRED_CAP_SECS);
            crate::store::deliveries::postpone_shred(&app.db, &mid.to_string(), until)
                .await
                .map_err(|e| fail(e.into()))?;
        }
    }
    Ok(d)
}

pub(super) struct FileRow {
    pub position: u32,
    pub name: String,
    pub size: String,
}

/// A sealed message opened for the customer: its text and its files.
pub(super) struct Opened {
    pub body: String,
    pub files: Vec<FileRow>,
}

/// Decrypts a message's text and file list; `None` once it is shredded.
/// Only for a verified session (every caller went through [`require`]).
pub(super) async fn open_message(app: &App, id: MessageId) -> Result<Option<Opened>, PageError> {
    let key = match app.vault.unlock(id).await {
        Ok(key) => Arc::new(key),
        Err(VaultError::Shredded | VaultError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut body = String::new();
    let mut files = Vec::new();
    for part in app.vault.parts(id).await? {
        match part.kind {
            PartKind::Body => body = read_text(&app.vault, &key, part).await?,
            PartKind::Attachment => {
                let meta = key.part_meta(&part)?;
                files.push(FileRow {
                    position: part.position,
                    name: meta
                        .file_name
                        .unwrap_or_else(|| format!("file-{}", part.position)),
                    size: crate::text::human_size(part.plain_size),
                });
            }
        }
    }
    Ok(Some(Opened { body, files }))
}

#[derive(Template, WebTemplate)]
#[template(path = "pickup/message.html")]
pub(super) struct MessagePage {
    brand: Brand,
    id: String,
    csrf: String,
    body: String,
    files: Vec<FileRow>,
    expires: String,
    shred_after_pickup: bool,
    conversation: Vec<Entry>,
    reply: Option<ReplyBox>,
    request: Option<RequestBox>,
    /// Whether a form on the page uploads (and so has the progress script).
    show_progress: bool,
    replied: bool,
}

/// What the customer can send back from the page: a reply (when the
/// sender allowed one), or a document request's files.
pub(super) enum Answer {
    Reply(Option<ReplyBox>),
    Request(RequestBox),
}

impl Answer {
    /// The form for `d`: its request's, or the reply form.
    pub(super) async fn for_delivery(app: &App, d: &Delivery) -> Result<Answer, PageError> {
        Ok(match super::request::find(app, d).await? {
            Some((request, labels)) => {
                Answer::Request(RequestBox::new(app, &request, &labels, Vec::new()).await?)
            }
            None => Answer::Reply(ReplyBox::new(app, d, Vec::new()).await?),
        })
    }
}

#[derive(Deserialize, Default)]
pub struct MessageParams {
    replied: Option<u8>,
}

pub async fn message(
    State(app): State<App>,
    session: Session,
    Path(id): Path<String>,
    Query(params): Query<MessageParams>,
) -> Result<Response, PageError> {
    let d = match require(&app, &session, &id).await {
        Ok(d) => d,
        Err(r) => return Ok(r),
    };
    let answer = Answer::for_delivery(&app, &d).await?;
    let page = render(&app, &session, &d, answer, params.replied == Some(1)).await?;
    Ok(page.into_response())
}

/// The message page of a verified session: the message, the rest of its
/// conversation, and the form to answer with.
pub(super) async fn render(
    app: &App,
    session: &Session,
    d: &Delivery,
    answer: Answer,
    replied: bool,
) -> Result<MessagePage, PageError> {
    let (reply, request) = match answer {
        Answer::Reply(reply) => (reply, None),
        Answer::Request(request) => (None, Some(request)),
    };
    let Some(opened) = open_message(app, d.message_id).await? else {
        return Err(PageError::NotFound);
    };
    Ok(MessagePage {
        brand: Brand::load(app).await,
        id: d.message_id.to_string(),
        csrf: csrf::token(session).await?,
        body: opened.body,
        files: opened.files,
        expires: crate::text::format_time(d.expires_at),
        shred_after_pickup: d.shred_after_pickup,
        conversation: super::reply::conversation(app, d).await?,
        show_progress: reply.is_some() || request.as_ref().is_some_and(|r| !r.submitted),
        reply,
        request,
        replied,
    })
}

/// A decrypted attachment. HEAD answers the headers only: it changes no
/// status, records no download and decrypts no content (link checkers and
/// download managers send it first). GET streams the plaintext one 64 KiB
/// chunk per body poll, each decrypted in a short blocking task: a client
/// that stops reading holds no thread, only the paused reader; the server's
/// idle timeout then drops the connection, and with it the body and its
/// download slot.
pub async fn download(
    State(app): State<App>,
    method: Method,
    session: Session,
    ClientIp(ip): ClientIp,
    Path((id, position)): Path<(String, u32)>,
) -> Result<Response, PageError> {
    let d = match require(&app, &session, &id).await {
        Ok(d) => d,
        Err(r) => return Ok(r),
    };
    let slot = download_slot(d.message_id, method == Method::HEAD)?;
    Attachment::find(&app.vault, d.message_id, position)
        .await?
        .respond(&app.vault, slot, async || {
            record_download(&app, d.message_id, position, ip).await
        })
        .await
}

/// A download that is starting: the status moves on, the audit log notes
/// which part (HEAD requests are not downloads and never get here).
async fn record_download(
    app: &App,
    id: MessageId,
    position: u32,
    ip: std::net::IpAddr,
) -> Result<(), PageError> {
    let mut tx = app.db.begin().await?;
    app.deliveries
        .advance(&mut tx, id, Status::Downloaded)
        .await?;
    let event = Event::new(Actor::Customer, Action::Downloaded)
        .message(id)
        .ip(ip)
        .detail(serde_json::json!({ "part": position }));
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(())
}

/// Before any work: a session cannot pile up open downloads (HEAD takes no slot).
fn download_slot(id: MessageId, head: bool) -> Result<Option<DownloadSlot>, PageError> {
    if head {
        return Ok(None);
    }
    DownloadSlot::take(id).map(Some).ok_or_else(|| {
        PageError::TooMany(format!(
            "You already have {DOWNLOADS_PER_SESSION} downloads running. \
             Wait for one to finish, then try again."
        ))
    })
}

/// Open downloads per message, in this process. A message has at most one
/// live pickup session (its link is consumed by one verification, and a new
/// link ends sessions of the old one), so this caps downloads per session.
/// The cap is per instance: behind a load balancer a session may hold this
/// many on each instance, which still bounds it.
static OPEN_DOWNLOADS: LazyLock<Mutex<HashMap<MessageId, usize>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn open_downloads() -> MutexGuard<'static, HashMap<MessageId, usize>> {
    // The map stays consistent whatever panicked while holding it.
    OPEN_DOWNLOADS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// One of a session's download slots, given back when dropped (with the
/// response body: download finished, failed or the client went away).
struct DownloadSlot(MessageId);

impl DownloadSlot {
    fn take(id: MessageId) -> Option<DownloadSlot> {
        let mut open = open_downloads();
        let n = open.entry(id).or_insert(0);
        if *n >= DOWNLOADS_PER_SESSION {
            return None;
        }
        *n += 1;
        Some(DownloadSlot(id))
    }
}

impl Drop for DownloadSlot {
    fn drop(&mut self) {
        let mut open = open_downloads();
        if let Some(n) = open.get_mut(&self.0) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.0);
            }
        }
    }
}

#[derive(Deserialize)]
pub struct DoneForm {}

/// "I'm done": ends the session and, for shred-after-pickup messages,
/// shreds now instead of waiting for the grace period.
pub async fn done(
    State(app): State<App>,
    session: Session,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<DoneForm>,
) -> Result<Response, PageError> {
    let d = match require(&app, &session, &id).await {
        Ok(d) => d,
        Err(r) => return Ok(r),
    };
    session.flush().await?;
    let mut tx = app.db.begin().await?;
    if d.shred_after_pickup {
        let key = d.message_id.to_string();
        crate::store::deliveries::set_shred_at(&mut tx, &key, app.clock.now()).await?;
    }
    let event = Event::new(Actor::Customer, Action::PickupDone)
        .message(d.message_id)
        .ip(ip);
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    if d.shred_after_pickup {
        app.deliveries.shred_due().await?;
    }
    Ok(notice(&app, Notice::Done, None).await)
}
