//! The staff portal: server-rendered pages for signing in, composing,
//! tracking sent messages and administering the installation.

pub mod account;
pub mod admin;
pub mod auth;
pub mod compose;
pub mod inbox;
pub mod sent;
pub mod service_accounts;
pub mod setup;
pub mod tokens;
pub mod webhooks;

use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};

use crate::app::App;
use crate::paging::{LAST, Page, PageStart};
use crate::web::PageError;

pub use auth::CurrentStaff;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/sent") }))
        .route("/sign-in", get(auth::sign_in_page).post(auth::sign_in))
        .route(
            "/sign-in/code",
            get(auth::second_factor_page).post(auth::second_factor),
        )
        .route("/sign-out", post(auth::sign_out))
        .route("/account", get(account::page))
        .route("/account/alerts", post(account::set_alerts))
        .route("/account/recovery-codes", post(account::regenerate_codes))
        .route("/account/tokens", get(tokens::page).post(tokens::create))
        .route("/account/tokens/{id}/revoke", post(tokens::revoke))
        .route(
            "/account/totp",
            get(account::enrol_page).post(account::enrol),
        )
        .route(
            "/compose",
            // Uploads are bounded by the per-message size limit while they
            // stream, not by the default 2 MB body cap.
            get(compose::page)
                .post(compose::send)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/requests/new",
            get(compose::request::page).post(compose::request::send),
        )
        .route("/sent", get(sent::list))
        .route("/inbox", get(inbox::list))
        .route("/inbox/{id}", get(inbox::item))
        .route("/inbox/{id}/files/{position}", get(inbox::download))
        .route("/inbox/{id}/done", post(inbox::done))
        .route("/inbox/{id}/claim", post(inbox::claim))
        .route("/messages/{id}", get(sent::message))
        .route("/messages/{id}/revoke", post(sent::revoke))
        .route("/messages/{id}/extend", post(sent::extend))
        .route("/messages/{id}/resend", post(sent::resend))
        .route("/messages/{id}/unlock", post(sent::unlock))
        .merge(admin::routes())
        .merge(service_accounts::routes())
        .merge(webhooks::routes())
        .merge(setup::routes())
}

/// Where a list page starts, from its link's two cursor parameters (at
/// most one set; none: the first page; "before" [`LAST`]: the last page).
/// A cursor that does not parse is a bad link, not an empty page.
fn page_start<C>(
    after: &str,
    before: &str,
    parse: impl Fn(&str) -> Option<C>,
) -> Result<Option<PageStart<C>>, PageError> {
    let parse = |s: &str| {
        parse(s).ok_or_else(|| PageError::BadRequest("This page link is not valid.".into()))
    };
    Ok(match (after, before) {
        ("", "") => None,
        ("", LAST) => Some(PageStart::Last),
        (after, "") => Some(PageStart::After(parse(after)?)),
        ("", before) => Some(PageStart::Before(parse(before)?)),
        _ => return Err(PageError::BadRequest("This page link is not valid.".into())),
    })
}

/// A list page's links to the first, previous, next and last pages (each
/// only where there is such a page), for `portal/pager.html`.
pub struct Pager {
    first: Option<String>,
    prev: Option<String>,
    next: Option<String>,
    last: Option<String>,
    /// Newest first (sent items, audit): "Newest … Oldest"; otherwise
    /// "First … Last".
    dated: bool,
}

/// Page links of a list at `path` with no other parameters.
fn cursor_link(path: &'static str) -> impl Fn(Option<(&str, &str)>) -> String {
    move |cursor| match cursor {
        Some((way, at)) => format!("{path}?{way}={at}"),
        None => path.to_owned(),
    }
}

impl Pager {
    /// `params`: the link parameters for a page after and before a cursor;
    /// `link`: the list's URL with one of them set (none: the first page).
    fn new<T, C>(
        page: &Page<T, C>,
        params: (&str, &str),
        encode: impl Fn(&C) -> String,
        link: impl Fn(Option<(&str, &str)>) -> String,
        dated: bool,
    ) -> Pager {
        let (after, before) = params;
        Pager {
            first: page.prev.as_ref().map(|_| link(None)),
            prev: page.prev.as_ref().map(|c| link(Some((before, &encode(c))))),
            next: page.next.as_ref().map(|c| link(Some((after, &encode(c))))),
            last: page.next.as_ref().map(|_| link(Some((before, LAST)))),
            dated,
        }
    }
}
