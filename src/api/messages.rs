//! `/api/v1/messages`: what a helpdesk reads back about the messages it
//! sent: ids, states, times and events, never content or the recipient.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Caller, Concerns};
use super::{ApiError, ApiJson, ApiQuery, page_request};
use crate::app::App;
use crate::deliveries::{Delivery, ListQuery, Status};
use crate::flows::sent::authorised;
use crate::ids::MessageId;
use crate::staff::tokens::Scope;
use crate::text::format_time_rfc3339;
use crate::web::{PageError, Problem};

/// A message or document request as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct MessageSummary {
    /// The message id (also in the portal's `/messages/{id}`).
    #[schema(format = Uuid)]
    pub id: String,
    /// `message` or `request` (a document request).
    #[schema(example = "message")]
    pub kind: &'static str,
    pub status: StatusName,
    /// The staff member who sent it.
    #[schema(format = Uuid)]
    pub sender: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// When the link stops working (RFC 3339, UTC).
    pub expires_at: String,
    /// How the customer verifies.
    pub verification: Vec<MethodName>,
}

/// A closed set of names as a JSON string with its values listed in the
/// schema, taken from the enum's own `ALL` and `as_str`, so the API's
/// names cannot drift from the stored ones.
macro_rules! named {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name(pub $inner);

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.0.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = String::deserialize(d)?;
                crate::text::by_name(&<$inner>::ALL, <$inner>::as_str, &name)
                    .map($name)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown value {name:?}")))
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .enum_values(Some(<$inner>::ALL.iter().map(|v| v.as_str())))
                    .into()
            }
        }

        impl ToSchema for $name {}
    };
}

named!(
    /// Where a message stands.
    StatusName(Status)
);
named!(
    /// A verification method.
    MethodName(crate::settings::Method)
);

/// One message with its history.
#[derive(Serialize, ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub summary: MessageSummary,
    /// Failed verifications so far (across codes and links).
    pub failed_verifications: i64,
    /// Whether the customer may answer securely.
    pub allow_reply: bool,
    /// Answers received so far.
    pub replies: i64,
    /// The conversation it belongs to (its first message's id).
    #[schema(format = Uuid)]
    pub conversation_id: String,
    /// Whether its content is gone for good (crypto-shredded).
    pub shredded: bool,
    /// What happened, oldest first.
    pub events: Vec<EventItem>,
    /// A document request's checklist and what arrived (requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestDetail>,
}

/// What a document request asks for and whether it was answered.
#[derive(Serialize, ToSchema)]
pub struct RequestDetail {
    /// How many documents it asks for (their names are sealed).
    pub items: u32,
    /// File kinds the upload accepts.
    pub accept: Vec<&'static str>,
    /// The largest upload, in bytes.
    pub max_bytes: u64,
    /// When the customer sent the documents (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<String>,
    /// The incoming item holding them (`/api/v1/incoming/{id}`).
    #[schema(format = Uuid)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submission: Option<String>,
}

/// One event of a message's audit trail.
#[derive(Serialize, ToSchema)]
pub struct EventItem {
    /// RFC 3339, UTC.
    pub at: String,
    /// The audit action, e.g. `message.sent`, `pickup.verified`.
    pub action: String,
    /// `staff:{id}`, `customer`, `system`, …
    pub actor: String,
}

/// One page of messages, newest first.
#[derive(Serialize, ToSchema)]
pub struct MessagePage {
    pub items: Vec<MessageSummary>,
    /// Pass as `cursor` for the next (older) page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only messages in this state.
    status: Option<StatusName>,
    /// `next_cursor` of the previous page, unchanged.
    #[param(
        pattern = r"^[0-9]{1,15}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    cursor: Option<String>,
    /// Items per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

fn summary(d: &Delivery, now: i64) -> MessageSummary {
    MessageSummary {
        id: d.message_id.to_string(),
        kind: if d.is_request { "request" } else { "message" },
        status: StatusName(d.status(now)),
        sender: d.sender.to_string(),
        created_at: format_time_rfc3339(d.created_at),
        expires_at: format_time_rfc3339(d.expires_at),
        verification: d.methods.iter().map(|&m| MethodName(m)).collect(),
    }
}

/// List messages, newest first: the caller's own, or everyone's with an
/// admin token.
#[utoipa::path(
    get,
    path = "/api/v1/messages",
    tag = "messages",
    params(ListParams),
    security(("token" = ["messages:read"])),
    responses(
        (status = 200, description = "One page", body = MessagePage),
        (status = 400, description = "A bad filter, cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `messages:read`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<MessagePage>, ApiError> {
    caller.require(Scope::MessagesRead)?;
    let status = p.status.map(|s| s.0);
    let (limit, from) = page_request(p.limit, p.cursor.as_deref())?;
    let query = ListQuery {
        sender: (!caller.sees_all()).then(|| caller.id()),
        status,
        recipient_index: None,
        from,
        limit: i64::try_from(limit).unwrap_or(i64::MAX),
    };
    let page = app.deliveries.list(&query).await.map_err(PageError::from)?;
    let now = app.clock.now();
    Ok(Json(MessagePage {
        items: page.items.iter().map(|d| summary(d, now)).collect(),
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// One message's status and events (never its content).
#[utoipa::path(
    get,
    path = "/api/v1/messages/{id}",
    tag = "messages",
    params(("id" = String, Path, description = "The message id", format = Uuid)),
    security(("token" = ["messages:read"])),
    responses(
        (status = 200, description = "The message", body = MessageDetail),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `messages:read`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such message, or not the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::MessagesRead)?;
    let d = visible(&app, &caller, &id, "view").await?;
    let events = app
        .audit
        .events_for_message(d.message_id)
        .await
        .map_err(PageError::from)?
        .into_iter()
        .map(|e| EventItem {
            at: format_time_rfc3339(e.at),
            action: e.action,
            actor: e.actor,
        })
        .collect();
    let mut detail = MessageDetail {
        summary: summary(&d, app.clock.now()),
        failed_verifications: d.failures,
        allow_reply: d.allow_reply,
        replies: d.replies,
        conversation_id: d.conversation_id.to_string(),
        shredded: d.shredded_at.is_some(),
        events,
        request: None,
    };
    if d.is_request
        && let Some(r) = app.requests.get(d.message_id).await?
    {
        detail.request = Some(RequestDetail {
            items: r.items,
            accept: r.accepted.iter().map(|k| k.as_str()).collect(),
            max_bytes: r.max_bytes,
            submitted_at: r.submitted_at.map(format_time_rfc3339),
            submission: r.submission.map(|m| m.to_string()),
        });
    }
    let mut response = Json(detail).into_response();
    response.extensions_mut().insert(Concerns(d.message_id));
    Ok(response)
}

/// The message `id` if the caller may see or act on it: 404 otherwise
/// (whether it exists is not the caller's business), audited.
async fn visible(app: &App, caller: &Caller, id: &str, what: &str) -> Result<Delivery, ApiError> {
    Ok(authorised(app, &caller.acting(), id, what).await?)
}

/// The message as it stands after an action.
async fn after(app: &App, id: MessageId) -> Result<Response, ApiError> {
    let d = app.deliveries.get(id).await?;
    let mut response = Json(summary(&d, app.clock.now())).into_response();
    response.extensions_mut().insert(Concerns(id));
    Ok(response)
}

/// Revoke: the link dies and the message is shredded at once (its key,
/// metadata and ciphertext erased). Revoking a revoked message changes
/// nothing and answers the same.
#[utoipa::path(
    post,
    path = "/api/v1/messages/{id}/revoke",
    tag = "messages",
    params(("id" = String, Path, description = "The message id", format = Uuid)),
    security(("token" = ["messages:send"])),
    responses(
        (status = 200, description = "Revoked", body = MessageSummary),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `messages:send`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such message, or not the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::MessagesSend)?;
    let d = visible(&app, &caller, &id, "revoke").await?;
    app.deliveries
        .revoke(caller.actor(), d.message_id, Some(caller.ip))
        .await?;
    after(&app, d.message_id).await
}

/// A new expiry, counted from now.
#[derive(Deserialize, ToSchema)]
pub struct ExtendBody {
    /// Hours from now, 1 to 720 (30 days).
    // A JSON number: JSON Schema counts 24.0 as an integer too.
    #[schema(value_type = i64, minimum = 1, maximum = 720)]
    pub hours: serde_json::Number,
}

impl ExtendBody {
    /// The hours as a whole number, if they are one in range.
    fn hours(&self) -> Option<i64> {
        let whole = match self.hours.as_i64() {
            Some(h) => h,
            None => {
                let h = self.hours.as_f64()?;
                // In range and integral, so the conversion is exact.
                if h.fract() != 0.0 || !(1.0..=720.0).contains(&h) {
                    return None;
                }
                h as i64
            }
        };
        (1..=720).contains(&whole).then_some(whole)
    }
}

/// Extend: the link works until `hours` from now.
#[utoipa::path(
    post,
    path = "/api/v1/messages/{id}/extend",
    tag = "messages",
    params(("id" = String, Path, description = "The message id", format = Uuid)),
    request_body = ExtendBody,
    security(("token" = ["messages:send"])),
    responses(
        (status = 200, description = "Extended", body = MessageSummary),
        (status = 400, description = "Hours out of range, or a malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `messages:send`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such message, or not the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The message expired or was revoked", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn extend(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExtendBody>,
) -> Result<Response, ApiError> {
    caller.require(Scope::MessagesSend)?;
    let d = visible(&app, &caller, &id, "extend").await?;
    let hours = body.hours().ok_or_else(|| {
        ApiError(PageError::BadRequest(
            "`hours` must be a whole number from 1 to 720.".to_owned(),
        ))
    })?;
    let expires_at = app.clock.now() + hours * 3600;
    app.deliveries
        .extend(caller.actor(), d.message_id, expires_at, Some(caller.ip))
        .await?;
    after(&app, d.message_id).await
}

/// Resend: a new one-time link is emailed; the old one stops working.
#[utoipa::path(
    post,
    path = "/api/v1/messages/{id}/resend",
    tag = "messages",
    params(("id" = String, Path, description = "The message id", format = Uuid)),
    security(("token" = ["messages:send"])),
    responses(
        (status = 200, description = "A new link is queued", body = MessageSummary),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `messages:send`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such message, or not the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The message expired or was revoked, or is a document request whose documents arrived", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn resend(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::MessagesSend)?;
    let d = visible(&app, &caller, &id, "resend").await?;
    crate::flows::sent::resend(&app, &caller.acting(), &d).await?;
    after(&app, d.message_id).await
}

/// Unlock a message locked after too many failed verifications.
/// Unlocking one that is not locked changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/messages/{id}/unlock",
    tag = "messages",
    params(("id" = String, Path, description = "The message id", format = Uuid)),
    security(("token" = ["messages:send"])),
    responses(
        (status = 200, description = "Unlocked", body = MessageSummary),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `messages:send`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such message, or not the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn unlock(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::MessagesSend)?;
    let d = visible(&app, &caller, &id, "unlock").await?;
    app.deliveries
        .unlock(caller.actor(), d.message_id, Some(caller.ip))
        .await?;
    after(&app, d.message_id).await
}
