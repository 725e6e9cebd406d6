//! A document request, as the customer answers it in a verified session:
//! the instructions and checklist, then one upload with files for every
//! item (judged by content, scanned when configured, sealed as they
//! arrive). The submission, the request's one-time "submitted" mark, the
//! agent's PII-free alert and the audit event commit in one transaction;
//! after it the link takes no more uploads.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::ExposeSecret;
use tower_sessions::Session;

use super::receive::{
    FileFields, Form, Received, ReceivingSlot, Refusal, failure_reason, read_upload, record_answer,
    refused, sender_alert_to,
};
use super::view;
use super::{Notice, notice};
use crate::app::App;
use crate::audit::{Action, Actor, Event};
use crate::deliveries::{Delivery, Status};
use crate::filetype::FileKind;
use crate::incoming::Kind;
use crate::mail::Mail;
use crate::requests::DocRequest;
use crate::vault::MessageMeta;
use crate::web::PageError;
use crate::web::client_ip::ClientIp;

/// A note with the documents, in characters.
pub const MAX_NOTE_CHARS: usize = 5_000;

/// One checklist item on the customer's page.
pub struct ItemRow {
    pub index: u32,
    pub label: String,
}

/// The upload form under a request's instructions (or, once submitted,
/// only that it was).
pub struct RequestBox {
    pub items: Vec<ItemRow>,
    pub errors: Vec<String>,
    pub submitted: bool,
    pub limit_mib: u64,
    pub max_files: u32,
    pub accepted: String,
    pub accept_attr: String,
}

impl RequestBox {
    pub async fn new(
        app: &App,
        request: &DocRequest,
        labels: &[String],
        errors: Vec<String>,
    ) -> Result<RequestBox, PageError> {
        let (settings, _) = app.settings.cached().await?;
        let kinds = accepted(request, &settings.accepted_kinds);
        Ok(RequestBox {
            items: labels
                .iter()
                .zip(0u32..)
                .map(|(label, index)| ItemRow {
                    index,
                    label: label.clone(),
                })
                .collect(),
            errors,
            submitted: request.submitted_at.is_some(),
            limit_mib: request.max_bytes / (1024 * 1024),
            max_files: settings.max_attachments,
            accepted: FileKind::labels(&kinds),
            accept_attr: FileKind::accept_all(&kinds),
        })
    }
}

/// The request `d` is, with its checklist (sealed in its message), if it
/// is one. Only for a verified session.
pub async fn find(app: &App, d: &Delivery) -> Result<Option<(DocRequest, Vec<String>)>, PageError> {
    if !d.is_request {
        return Ok(None);
    }
    let Some(request) = app.requests.get(d.message_id).await? else {
        return Ok(None);
    };
    let key = app.vault.unlock(d.message_id).await?;
    Ok(Some((request, key.meta()?.items)))
}

/// `POST /pickup/{id}/submit`: only in a session verified for this
/// request and its current link, and only once.
pub async fn submit(
    State(app): State<App>,
    session: Session,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    http: axum::extract::Request,
) -> Result<Response, PageError> {
    let d = match view::require(&app, &session, &id).await {
        Ok(d) => d,
        Err(r) => return Ok(r),
    };
    let Some((request, labels)) = find(&app, &d).await? else {
        return Err(PageError::NotFound);
    };
    if request.submitted_at.is_some() {
        return Err(already_sent());
    }
    let Some(_slot) = ReceivingSlot::take(d.message_id) else {
        return Err(PageError::TooMany(
            "Your documents are already being sent. Wait for it to finish.".to_owned(),
        ));
    };
    let settings = app.settings.load().await?;
    let form = Form {
        noun: "upload",
        max_chars: MAX_NOTE_CHARS,
        files: FileFields::Items(request.items),
        kinds: accepted(&request, &settings.accepted_kinds),
        limit: request.max_bytes,
        max_files: settings.max_attachments,
    };
    let (multipart, outcome) = read_upload(&app, &session, &form, http).await?;
    let outcome = outcome.map(|r| r.and_then(|got| complete(got, &labels)));
    match outcome {
        Ok(Ok(got)) => {
            commit(&app, &d, ip, got, labels).await?;
            // The session is over: nothing more goes up through this link.
            session.flush().await?;
            Ok(Redirect::to("/pickup/sent").into_response())
        }
        Ok(Err(refusal)) => {
            crate::web::linger(multipart);
            refused(&app, Some(d.message_id), ip, refusal.reason, "request").await;
            let boxed = RequestBox::new(&app, &request, &labels, vec![refusal.message]).await?;
            let page =
                view::render(&app, &session, &d, view::Answer::Request(boxed), false).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => {
            crate::web::linger(multipart);
            if let Some(reason) = failure_reason(&e) {
                refused(&app, Some(d.message_id), ip, reason, "request").await;
            }
            Err(e)
        }
    }
}

/// What the request accepts that the organisation still accepts (an
/// administrator may have narrowed the list since it was sent).
fn accepted(request: &DocRequest, organisation: &[FileKind]) -> Vec<FileKind> {
    request
        .accepted
        .iter()
        .copied()
        .filter(|k| organisation.contains(k))
        .collect()
}

fn already_sent() -> PageError {
    PageError::Conflict(
        "These documents were sent already; this link takes no more uploads. If you need to send something else, contact the sender."
            .to_owned(),
    )
}

/// Every item needs at least one file.
fn complete(got: Received, labels: &[String]) -> Result<Received, Refusal> {
    let missing: Vec<&str> = got
        .per_item
        .iter()
        .zip(labels)
        .filter(|(n, _)| **n == 0)
        .map(|(_, label)| label.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(got);
    }
    Err(Refusal::new(
        "missing_item",
        format!(
            "Add at least one file for: {}. Nothing was sent.",
            missing.join(", ")
        ),
    ))
}

/// Makes the submission visible: its sealed message (with the customer's
/// address and the checklist in its sealed metadata), the request's
/// one-time "submitted" mark (compare-and-set: a second tab or instance
/// loses), the incoming item for the agent who asked, their alert and the
/// audit event, all in one transaction.
async fn commit(
    app: &App,
    d: &Delivery,
    ip: std::net::IpAddr,
    Received {
        draft,
        files,
        per_item,
        ..
    }: Received,
    labels: Vec<String>,
) -> Result<(), PageError> {
    let address = app.deliveries.open_recipient(d)?;
    let alert_to = sender_alert_to(app, d).await?;
    let submission = draft.id();
    let meta = MessageMeta {
        recipient_address: Some(address.expose_secret().to_owned()),
        items: labels,
        ..MessageMeta::default()
    };
    let sealed = app.vault.seal(draft, &meta)?;
    let mut tx = app.db.begin().await?;
    if !app
        .requests
        .submit(&mut tx, d.message_id, submission)
        .await?
    {
        return Err(already_sent());
    }
    app.vault.commit(&mut tx, sealed).await?;
    let alert = alert_to.map(|to| {
        let mail = Mail::SubmissionAlert {
            incoming_id: submission,
        };
        (to, mail)
    });
    record_answer(app, &mut tx, d, submission, Kind::Request, alert).await?;
    app.deliveries
        .advance(&mut tx, d.message_id, Status::Submitted)
        .await?;
    let event = Event::new(Actor::Customer, Action::RequestSubmitted)
        .message(d.message_id)
        .ip(ip)
        .detail(serde_json::json!({
            "submission": submission.to_string(),
            "files": files,
            "per_item": per_item,
        }));
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    app.metrics.request_submitted();
    Ok(())
}

/// `GET /pickup/sent`: where a submission lands (it says nothing about
/// which request).
pub async fn sent(State(app): State<App>) -> Response {
    notice(&app, Notice::Submitted, None).await
}
