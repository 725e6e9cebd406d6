//! The staff portal: server-rendered pages for signing in, composing,
//! tracking sent messages and administering the installation.

pub mod account;
pub mod admin;
pub mod auth;
pub mod compose;
pub mod sent;
pub mod setup;

use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};

use crate::app::App;

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
        .route("/sent", get(sent::list))
        .route("/messages/{id}", get(sent::message))
        .route("/messages/{id}/revoke", post(sent::revoke))
        .route("/messages/{id}/extend", post(sent::extend))
        .route("/messages/{id}/resend", post(sent::resend))
        .route("/messages/{id}/unlock", post(sent::unlock))
        .merge(admin::routes())
        .merge(setup::routes())
}
