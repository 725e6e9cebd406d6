//! `/api/v1`: JSON for helpdesks, scripts and `sealpost send`, with bearer
//! tokens (`staff::tokens`) instead of sessions. Every route is declared
//! with its OpenAPI description next to the handler, and the router and
//! the document served at `/api/v1/openapi.json` come from the same list,
//! so the two cannot drift apart. Errors are RFC 9457 problem documents
//! (`PageError::into_problem`).

pub mod auth;
mod compose;
mod docs;
mod incoming;
mod messages;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::ids::Cursor;
use crate::paging::PageStart;
use crate::staff::tokens::Scope;
use crate::web::{PageError, Problem};
use auth::Caller;

/// An API failure: a [`PageError`] rendered as `application/problem+json`.
#[derive(Debug)]
pub struct ApiError(pub PageError);

impl<E> From<E> for ApiError
where
    PageError: From<E>,
{
    fn from(e: E) -> Self {
        ApiError(PageError::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_problem()
    }
}

/// Query parameters whose rejection is a problem document, not axum's
/// plain-text one.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError(PageError::BadRequest(e.body_text())))
    }
}

/// A JSON body whose rejection (malformed, wrong type, not JSON) is a
/// problem document.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| ApiJson(v))
            .map_err(|e| ApiError(PageError::BadRequest(e.body_text())))
    }
}

/// The most items a list call returns at once, and what it returns when
/// the caller does not say.
const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 50;

/// A list call's `limit` (1 to 100, default 50) and `cursor` (a
/// `next_cursor` passed back unchanged), checked the same way everywhere.
fn page_request(
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<(usize, Option<PageStart<Cursor>>), ApiError> {
    let bad = |m: &str| ApiError(PageError::BadRequest(m.to_owned()));
    let limit = match limit {
        None => DEFAULT_PAGE,
        Some(l) => usize::try_from(l)
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| bad("`limit` must be 1 to 100."))?,
    };
    let from = cursor
        .map(|c| {
            Cursor::parse(c)
                .map(PageStart::After)
                .ok_or_else(|| bad("Unknown cursor: pass a `next_cursor` unchanged."))
        })
        .transpose()?;
    Ok((limit, from))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sealpost API",
        description = "Send customers encrypted messages and document requests, and follow what happens to them. Authenticate with an API token: `Authorization: Bearer sp_live_…`. Errors are RFC 9457 problem documents.",
    ),
    modifiers(&BearerToken),
    tags(
        (name = "account", description = "The token's owner"),
        (name = "messages", description = "Messages and document requests: send them, and follow their status and events (never their content)"),
        (name = "incoming", description = "What customers sent in: replies, requested documents and secure-inbox uploads"),
    )
)]
struct ApiDoc;

/// Declares the `token` bearer scheme the operations refer to.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token (`sp_live_…`)".to_owned()))
                    .build(),
            ),
        );
    }
}

/// The API's routes (authenticated) and its public description: the
/// OpenAPI document and the human-readable page made from it.
pub fn routes(app: &App) -> Router<App> {
    let (authenticated, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(me))
        .routes(routes!(messages::list, compose::create))
        .routes(routes!(compose::create_request))
        .routes(routes!(messages::get))
        .routes(routes!(messages::revoke))
        .routes(routes!(messages::extend))
        .routes(routes!(messages::resend))
        .routes(routes!(messages::unlock))
        .routes(routes!(incoming::list))
        .routes(routes!(incoming::get))
        .routes(routes!(incoming::download))
        .routes(routes!(incoming::claim))
        .split_for_parts();
    let mut doc = doc;
    compose::declare_part_types(&mut doc);
    let authenticated = authenticated.route_layer(axum::middleware::from_fn_with_state(
        app.clone(),
        auth::authenticate,
    ));
    let page = Arc::new(docs::render(&doc));
    let json: Arc<str> = match serde_json::to_string_pretty(&doc) {
        Ok(json) => json.into(),
        Err(e) => {
            tracing::error!(error = %e, "the OpenAPI document does not serialise");
            "{}".into()
        }
    };
    Router::new()
        .merge(authenticated)
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let json = json.clone();
                async move { ([("content-type", "application/json")], json.to_string()) }
            }),
        )
        .route(
            "/api/v1/docs",
            get(move || {
                let page = page.clone();
                async move { axum::response::Html(page.to_string()) }
            }),
        )
        .route(
            "/api/v1/{*rest}",
            axum::routing::any(|| async { ApiError(PageError::NotFound) }),
        )
}

/// The token's owner and the token itself.
#[derive(Serialize, ToSchema)]
pub struct Me {
    #[schema(format = Uuid)]
    pub id: String,
    pub email: String,
    /// `admin` or `agent`.
    pub role: &'static str,
    pub token: TokenSummary,
}

#[derive(Serialize, ToSchema)]
pub struct TokenSummary {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    /// What the token may do.
    pub scopes: Vec<&'static str>,
    /// RFC 3339, UTC; absent: until revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Who am I: the token's owner, role and scopes.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "account",
    security(("token" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn me(caller: Caller) -> Json<Me> {
    let account = &caller.auth.owner.account;
    let token = &caller.auth.token;
    Json(Me {
        id: account.id.to_string(),
        email: account.email.as_str().to_owned(),
        role: account.role.as_str(),
        token: TokenSummary {
            id: token.id.to_string(),
            name: token.name.clone(),
            scopes: Scope::ALL
                .into_iter()
                .filter(|&s| token.scopes.contains(s))
                .map(Scope::as_str)
                .collect(),
            expires_at: token.expires_at.map(crate::text::format_time_rfc3339),
        },
    })
}
