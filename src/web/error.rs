//! The one error type pages return, and every conversion into it. Users
//! see a short, plain explanation; an internal failure keeps its source
//! error, whose whole chain is logged once (with a reference the page
//! shows, so a report can be matched to the log line) and never shown.

use askama::Template;
use askama_web::WebTemplate;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::audit::AuditError;
use crate::deliveries::DeliveryError;
use crate::incoming::IncomingError;
use crate::mail::MailError;
use crate::requests::RequestError;
use crate::settings::SettingsError;
use crate::staff::StaffError;
use crate::staff::password::HashError;
use crate::vault::VaultError;

/// What a shed request is told to wait, in seconds.
pub const BUSY_RETRY_AFTER_SECS: &str = "1";

/// What the page header needs about the signed-in staff member.
#[derive(Clone, Debug)]
pub struct Nav {
    pub email: String,
    pub admin: bool,
    pub csrf: String,
}

/// Every way a page can fail.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("the form was stale or came from another site")]
    Csrf,
    /// No valid API token: 401.
    #[error("not authenticated")]
    Unauthorized,
    /// Authenticated, but not allowed to do this (an API token without
    /// the scope): 403.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooLarge(String),
    /// A body in a format the endpoint does not take: 415.
    #[error("{0}")]
    UnsupportedMedia(String),
    /// The thing was done already (a request submitted once): 409.
    #[error("{0}")]
    Conflict(String),
    /// Load shed before any expensive work: 503 with `Retry-After`.
    #[error("busy")]
    Busy,
    /// A rate limit: 429 with the explanation.
    #[error("{0}")]
    TooMany(String),
    /// A failure the user cannot fix; the source is for the log only.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

impl PageError {
    /// An internal failure caused by `e` (kept as the source).
    pub fn internal(e: impl Into<anyhow::Error>) -> PageError {
        PageError::Internal(e.into())
    }

    /// An internal failure with no error value behind it (a broken
    /// invariant, e.g. a row that should exist and does not).
    pub fn bug(what: &'static str) -> PageError {
        PageError::Internal(anyhow::anyhow!(what))
    }
}

pub type PageResult<T = Response> = Result<T, PageError>;

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Option<Nav>,
    title: &'static str,
    message: String,
}

/// What an error says, whichever way it is rendered (an HTML page, or
/// `application/problem+json` on the API): the status and wording are
/// decided here once.
struct Described {
    status: StatusCode,
    /// The stable name of the problem type (`/api/v1/docs#problem-{slug}`).
    slug: &'static str,
    title: &'static str,
    message: String,
    retry_after: bool,
}

impl PageError {
    fn describe(self) -> Described {
        let (status, slug, title, message) = match self {
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                "There is nothing here, or you do not have access to it.".to_owned(),
            ),
            PageError::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                "invalid-input",
                "Please check your input",
                m,
            ),
            PageError::Csrf => (
                StatusCode::FORBIDDEN,
                "stale-form",
                "Request refused",
                "This form has expired or was sent from another site. Go back, reload the page and try again.".to_owned(),
            ),
            PageError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication needed",
                "Send a valid API token as `Authorization: Bearer sp_live_…`. Revoked and expired tokens, and tokens of disabled accounts, do not work.".to_owned(),
            ),
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", "Not allowed", m),
            PageError::TooLarge(m) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Too large",
                m,
            ),
            PageError::UnsupportedMedia(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported format",
                m,
            ),
            PageError::Conflict(m) => (StatusCode::CONFLICT, "conflict", "Not possible now", m),
            PageError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "Busy right now",
                "The service is busy. Please wait a few seconds and try again.".to_owned(),
            ),
            PageError::TooMany(m) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                m,
            ),
            PageError::Internal(error) => {
                let reference = error_reference();
                // `{:#}` is the whole chain, outermost first. Sources are
                // ids and error kinds by construction, never customer data.
                tracing::error!(reference = %reference, error = format!("{error:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Something went wrong",
                    format!("The request could not be completed. Nothing was sent. Please try again; if it keeps happening, tell your administrator (reference {reference})."),
                )
            }
        };
        Described {
            status,
            slug,
            title,
            message,
            retry_after: status == StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The error as RFC 9457 `application/problem+json`, for the API.
    pub fn into_problem(self) -> Response {
        let d = self.describe();
        let body = Problem {
            problem_type: format!("{PROBLEM_TYPES}{}", d.slug),
            title: d.title,
            status: d.status.as_u16(),
            detail: d.message,
        };
        let mut response = (
            d.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            axum::Json(body),
        )
            .into_response();
        if d.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(BUSY_RETRY_AFTER_SECS),
            );
        }
        if d.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"sealpost\""),
            );
        }
        response
    }
}

/// Where the problem types are described (the API's documentation page);
/// a problem's `type` is this and its name.
pub const PROBLEM_TYPES: &str = "/api/v1/docs#problem-";

/// Every problem type the API answers with: name, status, meaning (the
/// API page lists them; a test keeps this in step with `describe`).
pub const PROBLEM_KINDS: [(&str, u16, &str); 11] = [
    (
        "invalid-input",
        400,
        "The request is malformed or a value is out of range; `detail` says which.",
    ),
    (
        "unauthorized",
        401,
        "No token, or one that is unknown, revoked or expired, or whose owner is disabled.",
    ),
    (
        "forbidden",
        403,
        "The token is valid but lacks the scope this operation needs.",
    ),
    (
        "stale-form",
        403,
        "A portal form's CSRF token was missing or stale (portal pages only).",
    ),
    (
        "not-found",
        404,
        "No such item, or not one the caller may see.",
    ),
    (
        "conflict",
        409,
        "The item is not in a state that allows this (e.g. already done), the organisation's settings do not allow it, or an `Idempotency-Key` is in use or was used for another request.",
    ),
    (
        "too-large",
        413,
        "The body or upload is larger than the limit.",
    ),
    (
        "unsupported-media-type",
        415,
        "The body is not in a format the operation takes (`Content-Type`).",
    ),
    (
        "rate-limited",
        429,
        "Too many requests of this kind; wait and retry.",
    ),
    (
        "internal",
        500,
        "A failure on the server; `detail` carries a reference for the administrator.",
    ),
    (
        "busy",
        503,
        "The server shed load before doing any work; retry after `Retry-After` seconds.",
    ),
];

/// An RFC 9457 problem document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem; stable.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: &'static str,
    pub status: u16,
    /// What happened and what to do, in plain words.
    pub detail: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let d = self.describe();
        let page = ErrorPage {
            nav: None,
            title: d.title,
            message: d.message,
        };
        if d.retry_after {
            return (
                d.status,
                [(header::RETRY_AFTER, BUSY_RETRY_AFTER_SECS)],
                page,
            )
                .into_response();
        }
        (d.status, page).into_response()
    }
}

/// A short random reference tying an error page to its log line.
fn error_reference() -> String {
    use rand::RngExt;
    format!("{:08x}", rand::rng().random::<u32>())
}

macro_rules! internal_from {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for PageError {
            fn from(e: $t) -> Self {
                PageError::internal(e)
            }
        }
    )*};
}
internal_from!(
    sqlx::Error,
    tower_sessions::session::Error,
    AuditError,
    tokio::task::JoinError,
    serde_json::Error,
    std::io::Error,
);

impl From<anyhow::Error> for PageError {
    fn from(e: anyhow::Error) -> Self {
        PageError::Internal(e)
    }
}

impl From<MailError> for PageError {
    fn from(e: MailError) -> Self {
        match e {
            MailError::InvalidAddress => PageError::BadRequest(
                "That email address cannot receive mail. Check it and try again.".to_owned(),
            ),
            // The message was shredded while this request was on its way:
            // as gone as an unknown link.
            MailError::Shredded => PageError::NotFound,
            other => PageError::internal(other),
        }
    }
}

impl From<HashError> for PageError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => PageError::Busy,
            other => PageError::internal(other),
        }
    }
}

impl From<SettingsError> for PageError {
    fn from(e: SettingsError) -> Self {
        match e {
            SettingsError::Invalid(m) => PageError::BadRequest(m),
            other => PageError::internal(other),
        }
    }
}

impl From<VaultError> for PageError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::NotFound | VaultError::Shredded => PageError::NotFound,
            VaultError::TooLarge { limit } => PageError::TooLarge(format!(
                "The message and its attachments are larger than the limit of {} MiB. Nothing was sent or kept.",
                limit / (1024 * 1024)
            )),
            other => PageError::internal(other),
        }
    }
}

impl From<DeliveryError> for PageError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::NotFound => PageError::NotFound,
            DeliveryError::Invalid(m) => PageError::BadRequest(m.to_owned()),
            DeliveryError::NotLive(m) => PageError::Conflict(m.to_owned()),
            DeliveryError::Vault(v) => v.into(),
            other => PageError::internal(other),
        }
    }
}

impl From<IncomingError> for PageError {
    fn from(e: IncomingError) -> Self {
        match e {
            IncomingError::NotFound => PageError::NotFound,
            IncomingError::Vault(v) => v.into(),
            other => PageError::internal(other),
        }
    }
}

impl From<RequestError> for PageError {
    fn from(e: RequestError) -> Self {
        PageError::internal(e)
    }
}

impl From<StaffError> for PageError {
    fn from(e: StaffError) -> Self {
        match e {
            StaffError::NotFound => PageError::NotFound,
            StaffError::Hash(e) => e.into(),
            StaffError::Mail(e) => e.into(),
            StaffError::InvalidEmail
            | StaffError::InvalidRole
            | StaffError::EmailTaken
            | StaffError::InvalidCredentials
            | StaffError::ServiceAccount
            | StaffError::InvalidServiceName
            | StaffError::WeakPassword(_) => PageError::BadRequest(e.to_string()),
            StaffError::Throttled { .. } => PageError::TooMany(e.to_string()),
            other => PageError::internal(other),
        }
    }
}

impl From<crate::idempotency::IdempotencyError> for PageError {
    fn from(e: crate::idempotency::IdempotencyError) -> Self {
        use crate::idempotency::IdempotencyError as E;
        match e {
            E::InvalidKey => PageError::BadRequest(e.to_string()),
            // A state of the key, not a malformed request: 409.
            E::InFlight | E::Reused => PageError::Conflict(format!("{e}.")),
            E::Vault(e) => e.into(),
            E::Db(e) => e.into(),
        }
    }
}

impl From<crate::staff::tokens::TokenError> for PageError {
    fn from(e: crate::staff::tokens::TokenError) -> Self {
        use crate::staff::tokens::TokenError;
        match e {
            TokenError::Unauthorized => PageError::Unauthorized,
            TokenError::NotFound => PageError::NotFound,
            TokenError::Invalid(m) => PageError::BadRequest(m.to_owned()),
            TokenError::Staff(e) => e.into(),
            other => PageError::internal(other),
        }
    }
}

impl From<crate::webhooks::WebhookError> for PageError {
    fn from(e: crate::webhooks::WebhookError) -> Self {
        use crate::webhooks::WebhookError as E;
        match e {
            E::NotFound => PageError::NotFound,
            E::Invalid(m) => PageError::BadRequest(m),
            E::Vault(v) => v.into(),
            other => PageError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_type_is_listed_with_its_status() {
        let all = [
            PageError::NotFound,
            PageError::BadRequest("x".into()),
            PageError::Csrf,
            PageError::Unauthorized,
            PageError::Forbidden("x".into()),
            PageError::TooLarge("x".into()),
            PageError::UnsupportedMedia("x".into()),
            PageError::Conflict("x".into()),
            PageError::Busy,
            PageError::TooMany("x".into()),
            PageError::bug("a listed failure"),
        ];
        assert_eq!(all.len(), PROBLEM_KINDS.len());
        for e in all {
            let d = e.describe();
            assert!(
                PROBLEM_KINDS
                    .iter()
                    .any(|(slug, status, _)| *slug == d.slug && *status == d.status.as_u16()),
                "{} ({}) is not in PROBLEM_KINDS",
                d.slug,
                d.status
            );
        }
    }
}
