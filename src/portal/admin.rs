//! Admin pages: organisation settings, staff, audit export.

use axum::Router;

use crate::app::App;

pub fn routes() -> Router<App> {
    Router::new()
}
