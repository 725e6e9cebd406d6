//! `/api/v1/incoming`: what customers sent in (secure replies, document
//! request submissions, secure-inbox uploads), for a helpdesk to file with
//! its ticket: list, open (decrypted for whoever may see it, audited),
//! download files (audited) and claim.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Caller, Concerns};
use super::{ApiError, ApiQuery, page_request};
use crate::app::App;
use crate::audit::{Action, Event};
use crate::flows::incoming::{authorised, claim as claim_item};
use crate::incoming::{Item, ListQuery};
use crate::staff::tokens::Scope;
use crate::text::format_time_rfc3339;
use crate::vault::{PartKind, VaultError};
use crate::web::download::{Attachment, read_text};
use crate::web::{PageError, Problem};

/// An item as lists show it: ids, kind, state and times.
#[derive(Serialize, ToSchema)]
pub struct IncomingSummary {
    #[schema(format = Uuid)]
    pub id: String,
    /// `reply`, `request` (a document request's submission) or `inbox`
    /// (sent through the secure inbox).
    pub kind: &'static str,
    /// `unread`, `read`, `done` or `shredded`.
    pub state: &'static str,
    /// `you`, `unclaimed` (anyone may claim it) or `colleague`.
    pub owner: &'static str,
    /// RFC 3339, UTC.
    pub received_at: String,
    /// The message a reply answers, or the request it fulfils.
    #[schema(format = Uuid)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    #[schema(format = Uuid)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
}

/// One page of items, newest first.
#[derive(Serialize, ToSchema)]
pub struct IncomingPage {
    pub items: Vec<IncomingSummary>,
    /// Pass as `cursor` for the next (older) page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// An item opened: who sent it, their text and the files.
#[derive(Serialize, ToSchema)]
pub struct IncomingDetail {
    #[serde(flatten)]
    pub summary: IncomingSummary,
    /// The sender's verified address (absent once shredded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Their text (absent once shredded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub files: Vec<IncomingFile>,
}

#[derive(Serialize, ToSchema)]
pub struct IncomingFile {
    /// For `/api/v1/incoming/{id}/files/{position}`.
    pub position: u32,
    pub name: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The request's checklist item it was sent for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only items nobody has opened yet.
    unread: Option<bool>,
    /// `next_cursor` of the previous page, unchanged.
    #[param(
        pattern = r"^[0-9]{1,15}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    cursor: Option<String>,
    /// Items per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

fn summary(item: &Item, caller: &Caller) -> IncomingSummary {
    IncomingSummary {
        id: item.id.to_string(),
        kind: item.kind.as_str(),
        state: item.state(),
        owner: match item.owner {
            None => "unclaimed",
            Some(o) if o == caller.id() => "you",
            Some(_) => "colleague",
        },
        received_at: format_time_rfc3339(item.received_at),
        in_reply_to: item.in_reply_to.map(|m| m.to_string()),
        conversation_id: item.conversation_id.map(|m| m.to_string()),
    }
}

fn concerning(mut response: Response, item: &Item) -> Response {
    response.extensions_mut().insert(Concerns(item.id));
    response
}

/// List what came in, newest first: the caller's items and unclaimed ones
/// (everything with an admin token).
#[utoipa::path(
    get,
    path = "/api/v1/incoming",
    tag = "incoming",
    params(ListParams),
    security(("token" = ["inbox:read"])),
    responses(
        (status = 200, description = "One page", body = IncomingPage),
        (status = 400, description = "A bad cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `inbox:read`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<IncomingPage>, ApiError> {
    caller.require(Scope::InboxRead)?;
    let (limit, from) = page_request(p.limit, p.cursor.as_deref())?;
    let page = app
        .incoming
        .list(&ListQuery {
            visible_to: (!caller.sees_all()).then(|| caller.id()),
            unread: p.unread.unwrap_or(false),
            from,
            limit,
        })
        .await?;
    Ok(Json(IncomingPage {
        items: page.items.iter().map(|i| summary(i, &caller)).collect(),
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// Open an item: the sender's address, text and file list, decrypted.
/// Audited as opened.
#[utoipa::path(
    get,
    path = "/api/v1/incoming/{id}",
    tag = "incoming",
    params(("id" = String, Path, description = "The item id", format = Uuid)),
    security(("token" = ["inbox:read"])),
    responses(
        (status = 200, description = "The item", body = IncomingDetail),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `inbox:read`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item, or a colleague's", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::InboxRead)?;
    let who = caller.acting();
    let item = authorised(&app, &who, &id, "view_incoming").await?;
    let mut detail = IncomingDetail {
        summary: summary(&item, &caller),
        from: None,
        text: None,
        files: Vec::new(),
    };
    if item.shredded_at.is_none() {
        let key = match app.vault.unlock(item.id).await {
            Ok(key) => Some(std::sync::Arc::new(key)),
            Err(VaultError::Shredded) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(key) = key {
            app.incoming
                .opened(who.actor(), item.id, Some(who.ip))
                .await?;
            let meta = key.meta()?;
            detail.from = meta.recipient_address.clone();
            for part in app.vault.parts(item.id).await? {
                match part.kind {
                    PartKind::Body => {
                        detail.text = Some(read_text(&app.vault, &key, part).await?);
                    }
                    PartKind::Attachment => {
                        let pm = key.part_meta(&part)?;
                        detail.files.push(IncomingFile {
                            position: part.position,
                            name: pm
                                .file_name
                                .unwrap_or_else(|| format!("file-{}", part.position)),
                            size: part.plain_size,
                            content_type: pm.content_type,
                            item: pm.item.and_then(|i| meta.items.get(i as usize).cloned()),
                        });
                    }
                }
            }
            // Read again: opening moved an unread item to read.
            let item = app.incoming.get(item.id).await?;
            detail.summary = summary(&item, &caller);
        }
    }
    Ok(concerning(Json(detail).into_response(), &item))
}

/// A file's bytes, as they were sent.
pub struct FileBytes;

impl utoipa::PartialSchema for FileBytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .content_media_type("application/octet-stream")
            .into()
    }
}

impl ToSchema for FileBytes {}

/// Download one of an item's files, decrypted as it streams. Audited.
#[utoipa::path(
    get,
    path = "/api/v1/incoming/{id}/files/{position}",
    tag = "incoming",
    params(
        ("id" = String, Path, description = "The item id", format = Uuid),
        ("position" = u32, Path, description = "The file's `position`", minimum = 0),
    ),
    security(("token" = ["inbox:read"])),
    responses(
        (status = 200, description = "The file, with its type and name (`Content-Disposition`)", body = inline(FileBytes), content_type = "*/*"),
        (status = 400, description = "The position is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `inbox:read`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item or file, a colleague's item, or shredded", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn download(
    State(app): State<App>,
    caller: Caller,
    Path((id, position)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Scope::InboxRead)?;
    let position: u32 = position.parse().map_err(|_| {
        ApiError(PageError::BadRequest(
            "The file position must be a whole number (see `files` of the item).".to_owned(),
        ))
    })?;
    let who = caller.acting();
    let item = authorised(&app, &who, &id, "download_incoming").await?;
    if item.shredded_at.is_some() {
        return Err(ApiError(PageError::NotFound));
    }
    let response = Attachment::find(&app.vault, item.id, position)
        .await?
        .respond(&app.vault, Some(()), async || {
            let event = Event::new(who.actor(), Action::IncomingDownloaded)
                .message(item.id)
                .ip(who.ip)
                .detail(serde_json::json!({ "part": position }));
            app.audit.record_now(&event).await?;
            Ok(())
        })
        .await?;
    Ok(concerning(response, &item))
}

/// Claim an unclaimed item (a secure-inbox upload): it becomes the
/// caller's. Of staff claiming at once, one wins; the others get 409.
#[utoipa::path(
    post,
    path = "/api/v1/incoming/{id}/claim",
    tag = "incoming",
    params(("id" = String, Path, description = "The item id", format = Uuid)),
    security(("token" = ["inbox:read"])),
    responses(
        (status = 200, description = "Claimed (or already the caller's)", body = IncomingSummary),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `inbox:read`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A colleague claimed it first", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn claim(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::InboxRead)?;
    let item = claim_item(&app, &caller.acting(), &id).await?;
    Ok(concerning(
        Json(summary(&item, &caller)).into_response(),
        &item,
    ))
}
