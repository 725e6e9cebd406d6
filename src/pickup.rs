//! The customer's side: the one-time link's landing page, verification,
//! and — only after verification — the decrypted message and downloads.
//!
//! Safe against mail scanners: GET and HEAD never send a code, consume the
//! link or reveal content; a form posted without the right answers does
//! nothing but count as a failure.

pub mod flow;
pub mod inbox;
pub mod receive;
pub mod reply;
pub mod request;
pub mod verify;
pub mod view;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::App;
use crate::settings::Settings;

/// Routes that need the session layer (verification binds a session).
pub fn routes() -> Router<App> {
    Router::new()
        .route("/p/{token}/code", post(verify::send_code))
        .route("/p/{token}/verify", post(verify::verify))
        .route("/pickup/{id}", get(view::message))
        .route("/pickup/sent", get(request::sent))
        .route("/send", get(inbox::page))
        .route("/send/code", post(inbox::send_code))
        .route("/send/verify", post(inbox::verify))
        .route(
            "/send/upload",
            // Bounded by the organisation's size limit inside.
            post(inbox::upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/pickup/{id}/submit",
            // Bounded by the request's size limit inside.
            post(request::submit).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/pickup/{id}/files/{position}", get(view::download))
        .route("/pickup/{id}/done", post(view::done))
        .route(
            "/pickup/{id}/reply",
            // Bounded by the size limit inside (the default 2 MiB is not it).
            post(reply::reply).layer(axum::extract::DefaultBodyLimit::disable()),
        )
}

/// The landing page: read-only apart from the first-visit note, it needs
/// no session, and it is what mail scanners and customers hit most, so it
/// is served without the session and CSRF layers.
pub fn landing_route() -> Router<App> {
    Router::new().route("/p/{token}", get(verify::landing))
}

/// What every customer page shows of the organisation.
pub struct Brand {
    pub organisation: String,
    pub support_line: String,
    pub has_logo: bool,
}

impl Brand {
    pub async fn load(app: &App) -> Brand {
        let (settings, has_logo) = app.settings.cached().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot load settings; using defaults on a customer page");
            (Settings::default(), false)
        });
        Brand {
            organisation: settings.organisation,
            support_line: settings.support_line,
            has_logo,
        }
    }
}

/// The neutral pages for links that cannot be used. They say what the
/// customer can do, never anything about the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    Unknown,
    Unavailable,
    Locked,
    AlreadyOpened,
    SessionEnded,
    TooMany,
    Done,
    /// A document request's files were sent.
    Submitted,
}

#[derive(Template, WebTemplate)]
#[template(path = "pickup/notice.html")]
struct NoticePage {
    brand: Brand,
    title: &'static str,
    text: String,
}

pub async fn notice(app: &App, notice: Notice, opened_at: Option<i64>) -> Response {
    let brand = Brand::load(app).await;
    let contact = if brand.support_line.is_empty() {
        format!("contact {}", brand.organisation)
    } else {
        format!("contact us: {}", brand.support_line)
    };
    let (status, title, text) = notice.wording(&contact, opened_at);
    (status, NoticePage { brand, title, text }).into_response()
}

impl Notice {
    /// What the page says: status, title and text (`contact` says how to
    /// reach the organisation).
    fn wording(self, contact: &str, opened_at: Option<i64>) -> (StatusCode, &'static str, String) {
        match self {
            Self::Unknown => (
                StatusCode::NOT_FOUND,
                "This link is not valid",
                // Also what a shredded message's link gets: the shred erases
                // the link's hash, so expired and withdrawn links end up here.
                format!(
                    "It may have expired or been withdrawn, or only part of it was opened: check that you opened the whole link from the email. If you still need the message, {contact}."
                ),
            ),
            Self::Unavailable => (
                StatusCode::GONE,
                "This message is no longer available",
                format!("It may have expired or been withdrawn. If you still need it, {contact}."),
            ),
            Self::Locked => (
                StatusCode::FORBIDDEN,
                "This message is locked",
                format!(
                    "There were too many unsuccessful attempts to open it. The sender has been told and can unlock it; {contact}."
                ),
            ),
            Self::AlreadyOpened => (
                StatusCode::GONE,
                "This link has already been used",
                format!(
                    "It was opened on {}. Each link works once. If this wasn't you, {contact} straight away.",
                    opened_at
                        .map(crate::text::format_time)
                        .unwrap_or_else(|| "an earlier visit".to_owned())
                ),
            ),
            Self::SessionEnded => (
                StatusCode::UNAUTHORIZED,
                "Your secure session has ended",
                format!(
                    "For your protection the message closes after a period of inactivity. If you need it again, {contact}."
                ),
            ),
            Self::TooMany => (
                StatusCode::TOO_MANY_REQUESTS,
                "Please wait a little",
                format!("There were too many requests. Try again later or {contact}."),
            ),
            Self::Done => (
                StatusCode::OK,
                "You are signed out of this message",
                "You can close this window.".to_owned(),
            ),
            Self::Submitted => (
                StatusCode::OK,
                "Your documents were sent securely",
                "They were encrypted as they arrived, and the sender has been told. This link takes no more uploads; you can close this window.".to_owned(),
            ),
        }
    }
}

/// A coarse class of the visitor's software for the sender's timeline:
/// enough to tell a scanner from a person, without storing the header.
pub fn agent_class(user_agent: Option<&str>) -> &'static str {
    let ua = user_agent.unwrap_or_default().to_ascii_lowercase();
    if ua.is_empty() {
        "unknown"
    } else if [
        "bot", "crawl", "spider", "scan", "preview", "curl", "wget", "python", "java/",
    ]
    .iter()
    .any(|k| ua.contains(k))
    {
        "automated"
    } else if ["mobile", "android", "iphone", "ipad"]
        .iter()
        .any(|k| ua.contains(k))
    {
        "mobile"
    } else {
        "desktop"
    }
}

/// `j•••@example.com`: enough for the customer to recognise the address.
pub fn mask_address(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => "•••".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_classes() {
        assert_eq!(mask_address("jane.doe@example.com"), "j•••@example.com");
        assert_eq!(
            agent_class(Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)")),
            "mobile"
        );
        assert_eq!(
            agent_class(Some("Microsoft Office Protection Scanner bot")),
            "automated"
        );
        assert_eq!(agent_class(None), "unknown");
    }
}
