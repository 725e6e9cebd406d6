//! CSRF defence in two layers: a per-session token in every form (checked in
//! constant time), and a middleware that refuses state-changing requests a
//! browser marks as cross-site (`Sec-Fetch-Site`) or from a foreign `Origin`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use crate::app::App;
use crate::web::PageError;

const KEY: &str = "csrf";
/// Forms are small; uploads use multipart and their own limits.
const FORM_LIMIT: usize = 64 * 1024;

/// The session's CSRF token, created on first use.
pub async fn token(session: &Session) -> Result<String, PageError> {
    if let Some(t) = session.get::<String>(KEY).await? {
        return Ok(t);
    }
    renew(session).await
}

/// Replaces the token (at sign-in, so a token seen before cannot be reused).
pub async fn renew(session: &Session) -> Result<String, PageError> {
    let t = hex::encode(rand::rng().random::<[u8; 32]>());
    session.insert(KEY, &t).await?;
    Ok(t)
}

/// Checks a submitted token against the session's.
pub async fn check(session: &Session, given: &str) -> Result<(), PageError> {
    let expected = session.get::<String>(KEY).await?;
    match expected {
        Some(e) if bool::from(e.as_bytes().ct_eq(given.as_bytes())) => Ok(()),
        _ => Err(PageError::Csrf),
    }
}

#[derive(Deserialize)]
struct TokenField {
    #[serde(default)]
    csrf: String,
}

/// A URL-encoded form whose `csrf` field matched the session's token.
pub struct CsrfForm<T>(pub T);

impl<T: DeserializeOwned> FromRequest<App> for CsrfForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &App) -> Result<Self, Self::Rejection> {
        let session = req
            .extensions()
            .get::<Session>()
            .cloned()
            .ok_or_else(|| PageError::Internal("session layer missing".into()))?;
        let body = axum::body::to_bytes(req.into_body(), FORM_LIMIT)
            .await
            .map_err(|_| PageError::BadRequest("The form is too large.".into()))?;
        let _ = state;
        let field: TokenField = parse(&body)?;
        check(&session, &field.csrf).await?;
        Ok(CsrfForm(parse(&body)?))
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, PageError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|_| PageError::BadRequest("The form was incomplete or malformed.".into()))
}

/// Refuses unsafe-method requests that a browser says come from another
/// site. Browsers always send `Origin` on cross-origin POSTs; clients that
/// send neither header are not browsers and carry no ambient cookies worth
/// forging (the form token still applies to them).
pub async fn reject_cross_site(State(app): State<App>, req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && is_cross_site(&app, &req) {
        // The route template, never the path: links carry secrets.
        let route = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or("(unmatched)", |p| p.as_str());
        tracing::info!(route, "refused a cross-site request");
        return PageError::Csrf.into_response();
    }
    next.run(req).await
}

fn is_cross_site(app: &App, req: &Request) -> bool {
    let headers = req.headers();
    // Modern browsers say exactly where a request comes from; trust that
    // first. (Our no-referrer policy makes them send `Origin: null` on form
    // posts, so Origin alone cannot be required.)
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    match headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or_default())
    {
        // No Origin, or the opaque one: the form token decides.
        None | Some("null") => false,
        Some(origin) => {
            let public = app.config.public_url.trim_end_matches('/');
            let host_origin = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| (format!("http://{h}"), format!("https://{h}")));
            let same = origin == origin_of(public)
                || host_origin.is_some_and(|(a, b)| origin == a || origin == b);
            !same
        }
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            let end = rest.find('/').map_or(url.len(), |j| i + 3 + j);
            &url[..end]
        }
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(origin_of("https://x.example/a/b"), "https://x.example");
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }
}
