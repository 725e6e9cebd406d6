//! Cross-cutting HTTP concerns shared by every page: security headers,
//! sessions, CSRF, the stylesheet and the one error type pages return.

pub mod client_ip;
pub mod csrf;
pub mod session;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_http::set_header::SetResponseHeaderLayer;

/// The one stylesheet, compiled in so a deployment is a single binary.
pub const STYLESHEET: &str = include_str!("../templates/static/style.css");

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// How long, and how much, a refused upload is still read after the answer
/// went out: closing a socket with unread data resets the connection, and
/// many clients then report the reset instead of our page (nginx calls this
/// a lingering close). Bounded so a refused client cannot hold a task.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(30);
const LINGER_BYTES: u64 = 256 * 1024 * 1024;

/// Discards the rest of a refused multipart upload in the background, so
/// the refusal can be answered at once and still reach the client.
pub fn linger(mut multipart: axum::extract::Multipart) {
    tokio::spawn(async move {
        let discard = async {
            let mut read = 0u64;
            while let Ok(Some(mut field)) = multipart.next_field().await {
                while let Ok(Some(chunk)) = field.chunk().await {
                    read += chunk.len() as u64;
                    if read > LINGER_BYTES {
                        return;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, discard).await;
    });
}

/// What a shed request is told to wait, in seconds.
pub const BUSY_RETRY_AFTER_SECS: &str = "1";

/// What the page header needs about the signed-in staff member.
#[derive(Clone, Debug)]
pub struct Nav {
    pub email: String,
    pub admin: bool,
    pub csrf: String,
}

/// Every way a page can fail. Users see a short, plain explanation; the
/// detail of internal failures goes to the log only (ids and error kinds,
/// never customer data).
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
    /// Load shed before any expensive work: 503 with `Retry-After`.
    #[error("busy")]
    Busy,
    /// A rate limit: 429 with the explanation.
    #[error("{0}")]
    TooMany(String),
    #[error("{0}")]
    Internal(String),
}

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
            PageError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The request could not be completed. Nothing was sent. Please try again; if it keeps happening, tell your administrator.".to_owned(),
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

macro_rules! internal_from {
    ($($t:ty),*) => {$(
        impl From<$t> for PageError {
            fn from(e: $t) -> Self {
                PageError::Internal(e.to_string())
            }
        }
    )*};
}
internal_from!(
    sqlx::Error,
    tower_sessions::session::Error,
    crate::audit::AuditError
);

impl From<crate::mail::MailError> for PageError {
    fn from(e: crate::mail::MailError) -> Self {
        match e {
            crate::mail::MailError::InvalidAddress => PageError::BadRequest(
                "That email address cannot receive mail. Check it and try again.".to_owned(),
            ),
            // The message was shredded while this request was on its way:
            // as gone as an unknown link.
            crate::mail::MailError::Delivery(crate::deliveries::DeliveryError::Vault(
                crate::vault::VaultError::Shredded,
            )) => PageError::NotFound,
            other => PageError::Internal(other.to_string()),
        }
    }
}

impl From<crate::staff::password::HashError> for PageError {
    fn from(e: crate::staff::password::HashError) -> Self {
        match e {
            crate::staff::password::HashError::Busy => PageError::Busy,
            other => PageError::Internal(other.to_string()),
        }
    }
}

impl From<crate::settings::SettingsError> for PageError {
    fn from(e: crate::settings::SettingsError) -> Self {
        match e {
            crate::settings::SettingsError::Invalid(m) => PageError::BadRequest(m),
            other => PageError::Internal(other.to_string()),
        }
    }
}

impl From<crate::vault::VaultError> for PageError {
    fn from(e: crate::vault::VaultError) -> Self {
        use crate::vault::VaultError;
        match e {
            VaultError::NotFound | VaultError::Shredded => PageError::NotFound,
            VaultError::TooLarge { limit } => PageError::TooLarge(format!(
                "The message and its attachments are larger than the limit of {} MiB. Nothing was sent or kept.",
                limit / (1024 * 1024)
            )),
            other => PageError::Internal(other.to_string()),
        }
    }
}

pub type PageResult<T = Response> = Result<T, PageError>;

/// Logs each request at debug level and counts it in the metrics, both by
/// its route template (`/p/{token}`), never the concrete path or query:
/// those carry link secrets and search terms (recipient addresses).
/// Requests no route matched are `unmatched`. No allocation: the template
/// is the router's own shared string.
pub async fn log_request(
    axum::extract::State(metrics): axum::extract::State<crate::metrics::Metrics>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = crate::metrics::method_label(req.method());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    tracing::debug!(
        method,
        route = route
            .as_ref()
            .map_or(crate::metrics::UNMATCHED, |r| r.as_str()),
        status,
        micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    metrics.record_request(route, method, status, elapsed);
    response
}

/// No inline script, no plugins, no framing, no third-party anything.
/// Pages that need more say so explicitly (e.g. downloads set a sandbox).
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Adds the security headers to every response (unless a handler set its
/// own). HSTS only when the public address is https: on plain http it
/// would be ignored, and it must not pin a development host to https.
pub fn with_security_headers<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    https: bool,
) -> Router<S> {
    let mut headers: Vec<(HeaderName, &'static str)> = vec![
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        ),
        (HeaderName::from_static("x-robots-tag"), "noindex, nofollow"),
    ];
    if https {
        headers.push((
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        ));
    }
    headers.into_iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ))
    })
}
