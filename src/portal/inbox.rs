//! What customers sent in, as staff see it: one item's page (decrypted
//! for its owner, for anyone while unclaimed, and for administrators),
//! its files as decrypted downloads, and "mark done", which schedules its
//! shred. Opening and downloading are audited.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Pager;
use super::auth::CurrentStaff;
use crate::app::App;
use crate::audit::{Action, Event};
use crate::ids::Cursor;
use crate::incoming::{Item, ListQuery};
use crate::text::{format_time, human_size};
use crate::vault::{MessageId, PartKind, VaultError};
use crate::web::csrf::CsrfForm;
use crate::web::download::{Attachment, read_text};
use crate::web::{Nav, PageError, PageResult};

/// Rows per page of the inbox, and unread items listed above it at most.
const PAGE_SIZE: usize = 25;
const UNREAD_SHOWN: usize = 50;

struct ListRow {
    id: String,
    kind: &'static str,
    from: String,
    received: String,
    state: &'static str,
    owner: &'static str,
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/inbox.html")]
struct ListPage {
    nav: Option<Nav>,
    unread: Vec<ListRow>,
    more_unread: bool,
    rows: Vec<ListRow>,
    everyone: bool,
    pager: Pager,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListParams {
    older: String,
    newer: String,
}

/// `/inbox`: what customers sent in that this staff member may see
/// (their own and unclaimed items; everything for an administrator),
/// unread first, then everything newest first, page by page.
pub async fn list(
    State(app): State<App>,
    staff: CurrentStaff,
    Query(p): Query<ListParams>,
) -> PageResult {
    let visible_to = (!staff.is_admin()).then(|| staff.id());
    let from = super::page_start(&p.older, &p.newer, Cursor::parse)?;
    let unread = if from.is_none() {
        app.incoming
            .list(&ListQuery {
                visible_to,
                unread: true,
                from: None,
                limit: UNREAD_SHOWN,
            })
            .await?
    } else {
        Default::default()
    };
    let page = app
        .incoming
        .list(&ListQuery {
            visible_to,
            unread: false,
            from,
            limit: PAGE_SIZE,
        })
        .await?;
    let pager = Pager::new(
        &page,
        ("older", "newer"),
        Cursor::encode,
        super::cursor_link("/inbox"),
        true,
    );
    Ok(ListPage {
        nav: staff.nav(),
        more_unread: unread.next.is_some(),
        unread: list_rows(&app, &staff, unread.items).await,
        rows: list_rows(&app, &staff, page.items).await,
        everyone: staff.is_admin(),
        pager,
    }
    .into_response())
}

async fn list_rows(app: &App, staff: &CurrentStaff, items: Vec<Item>) -> Vec<ListRow> {
    let mut rows = Vec::with_capacity(items.len());
    for item in items {
        let from = match app.vault.unlock(item.id).await.and_then(|k| k.meta()) {
            Ok(meta) => meta.recipient_address.unwrap_or_default(),
            Err(VaultError::Shredded) => "(shredded)".to_owned(),
            Err(e) => {
                tracing::warn!(item = %item.id, error = %e, "cannot open an incoming item's metadata");
                "(unavailable)".to_owned()
            }
        };
        rows.push(ListRow {
            id: item.id.to_string(),
            kind: item.kind.label(),
            from,
            received: format_time(item.received_at),
            state: item.state(),
            owner: match item.owner {
                None => "Unclaimed",
                Some(o) if o == staff.id() => "You",
                Some(_) => "A colleague",
            },
        });
    }
    rows
}

async fn authorised(
    app: &App,
    staff: &CurrentStaff,
    id: &str,
    what: &str,
) -> Result<Item, PageError> {
    crate::flows::incoming::authorised(app, &staff.acting(), id, what).await
}

struct FileRow {
    position: u32,
    name: String,
    size: String,
    /// A request's checklist item the file was sent for (empty for a reply).
    item: String,
}

struct TimelineEntry {
    at: String,
    what: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/incoming.html")]
struct ItemPage {
    nav: Option<Nav>,
    csrf: String,
    id: String,
    kind: &'static str,
    /// A document request's submission (files under checklist items).
    request: bool,
    /// No agent has it yet (a secure-inbox upload): it can be claimed.
    unclaimed: bool,
    from: String,
    received: String,
    body: String,
    files: Vec<FileRow>,
    in_reply_to: Option<String>,
    conversation: Option<String>,
    done: Option<String>,
    shred: Option<String>,
    shredded: bool,
    timeline: Vec<TimelineEntry>,
}

pub async fn item(
    State(app): State<App>,
    staff: CurrentStaff,
    Path(id): Path<String>,
) -> PageResult {
    let item = authorised(&app, &staff, &id, "view_incoming").await?;
    app.incoming
        .opened(staff.actor(), item.id, Some(staff.ip))
        .await?;
    let mut page = ItemPage {
        nav: staff.nav(),
        csrf: staff.csrf.clone(),
        id: item.id.to_string(),
        kind: item.kind.label(),
        request: item.kind == crate::incoming::Kind::Request,
        unclaimed: item.owner.is_none(),
        from: String::new(),
        received: format_time(item.received_at),
        body: String::new(),
        files: Vec::new(),
        in_reply_to: item.in_reply_to.map(|m| m.to_string()),
        conversation: item.conversation_id.map(|m| m.to_string()),
        done: item.done_at.map(format_time),
        shred: item.shred_at.map(format_time),
        shredded: item.shredded_at.is_some(),
        timeline: Vec::new(),
    };
    if !page.shredded {
        open_into(&app, item.id, &mut page).await?;
    }
    page.timeline = app
        .audit
        .events_for_message(item.id)
        .await?
        .into_iter()
        .map(|e| TimelineEntry {
            at: format_time(e.at),
            what: describe(&e.action),
        })
        .collect();
    Ok(page.into_response())
}

/// Decrypts the item's sender address, text and file list into the page.
async fn open_into(app: &App, id: MessageId, page: &mut ItemPage) -> Result<(), PageError> {
    let key = match app.vault.unlock(id).await {
        Ok(key) => std::sync::Arc::new(key),
        Err(VaultError::Shredded) => {
            page.shredded = true;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let meta = key.meta()?;
    page.from = meta.recipient_address.unwrap_or_default();
    for part in app.vault.parts(id).await? {
        match part.kind {
            PartKind::Body => page.body = read_text(&app.vault, &key, part).await?,
            PartKind::Attachment => {
                let pm = key.part_meta(&part)?;
                let item = pm
                    .item
                    .and_then(|i| meta.items.get(i as usize).cloned())
                    .unwrap_or_default();
                page.files.push(FileRow {
                    position: part.position,
                    name: pm
                        .file_name
                        .unwrap_or_else(|| format!("file-{}", part.position)),
                    size: human_size(part.plain_size),
                    item,
                });
            }
        }
    }
    Ok(())
}

fn describe(action: &str) -> String {
    match action {
        "incoming.opened" => "Opened in the portal",
        "incoming.downloaded" => "File downloaded",
        "incoming.done" => "Marked done",
        "incoming.claimed" => "Claimed",
        "incoming.inbox_received" => "Received through the secure inbox",
        "incoming.shredded" => "Shredded",
        "message.access_denied" => "Access refused",
        other => other,
    }
    .to_owned()
}

/// A decrypted file of the item. HEAD answers the headers only and is
/// not recorded; GET streams the plaintext and is audited.
pub async fn download(
    State(app): State<App>,
    method: Method,
    staff: CurrentStaff,
    Path((id, position)): Path<(String, u32)>,
) -> PageResult<Response> {
    let item = authorised(&app, &staff, &id, "download_incoming").await?;
    // Staff downloads are not capped like a customer session's.
    let guard = (method != Method::HEAD).then_some(());
    Attachment::find(&app.vault, item.id, position)
        .await?
        .respond(&app.vault, guard, async || {
            let event = Event::new(staff.actor(), Action::IncomingDownloaded)
                .message(item.id)
                .ip(staff.ip)
                .detail(serde_json::json!({ "part": position }));
            app.audit.record_now(&event).await?;
            Ok(())
        })
        .await
}

#[derive(Deserialize)]
pub struct DoneForm {}

/// Marks the item handled: it is shredded after the organisation's
/// retention for incoming items.
pub async fn done(
    State(app): State<App>,
    staff: CurrentStaff,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<DoneForm>,
) -> PageResult {
    let item = authorised(&app, &staff, &id, "done_incoming").await?;
    if item.owner.is_none() {
        return Err(PageError::BadRequest(
            "Claim this item before marking it done.".to_owned(),
        ));
    }
    let settings = app.settings.load().await?;
    app.incoming
        .mark_done(
            staff.actor(),
            item.id,
            settings.incoming_retention_days,
            Some(staff.ip),
        )
        .await?;
    Ok(Redirect::to(&format!("/inbox/{}", item.id)).into_response())
}

#[derive(Deserialize)]
pub struct ClaimForm {}

/// Takes an unclaimed item: of agents claiming at the same moment (on any
/// instance), exactly one gets it; the others are told a colleague did.
pub async fn claim(
    State(app): State<App>,
    staff: CurrentStaff,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<ClaimForm>,
) -> PageResult {
    let item = crate::flows::incoming::claim(&app, &staff.acting(), &id).await?;
    Ok(Redirect::to(&format!("/inbox/{}", item.id)).into_response())
}
