//! First-run setup link and staff invitations: one-time links to set a
//! password.

use axum::Router;

use crate::app::App;

pub fn routes() -> Router<App> {
    Router::new()
}
