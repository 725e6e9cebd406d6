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
    #[error("{0}")]
    TooLarge(String),
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

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here, or you do not have access to it.".to_owned(),
            ),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Please check your input", m),
            PageError::Csrf => (
                StatusCode::FORBIDDEN,
                "Request refused",
                "This form has expired or was sent from another site. Go back, reload the page and try again.".to_owned(),
            ),
            PageError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "Too large", m),
            PageError::Conflict(m) => (StatusCode::CONFLICT, "Already done", m),
            PageError::Busy => {
                let page = ErrorPage {
                    nav: None,
                    title: "Busy right now",
                    message: "The service is busy. Please wait a few seconds and try again."
                        .to_owned(),
                };
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, BUSY_RETRY_AFTER_SECS)],
                    page,
                )
                    .into_response();
            }
            PageError::TooMany(m) => (StatusCode::TOO_MANY_REQUESTS, "Too many requests", m),
            PageError::Internal(error) => {
                let reference = error_reference();
                // `{:#}` is the whole chain, outermost first. Sources are
                // ids and error kinds by construction, never customer data.
                tracing::error!(reference = %reference, error = format!("{error:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    format!("The request could not be completed. Nothing was sent. Please try again; if it keeps happening, tell your administrator (reference {reference})."),
                )
            }
        };
        let page = ErrorPage {
            nav: None,
            title,
            message,
        };
        (status, page).into_response()
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
            | StaffError::WeakPassword(_) => PageError::BadRequest(e.to_string()),
            StaffError::Throttled { .. } => PageError::TooMany(e.to_string()),
            other => PageError::internal(other),
        }
    }
}
