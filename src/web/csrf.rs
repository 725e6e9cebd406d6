//! CSRF defence in two layers: a token in every form (checked in constant
//! time), and a middleware that refuses state-changing requests a browser
//! marks as cross-site (`Sec-Fetch-Site`) or from a foreign `Origin`.
//!
//! The token is the session's once the session holds something (a signed-in
//! staff member, a verified pickup). Anonymous visitors get no stored
//! session: a scanner or flood fetching `/sign-in` must not add a row per
//! request. Their forms carry a session-less token instead, a keyed hash of
//! a random nonce kept in a cookie of its own (a signed double-submit
//! cookie, `SameSite=Strict`, `__Host-` on https).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use crate::config::Config;
use crate::vault::{Purpose, Vault};
use crate::web::PageError;

const KEY: &str = "csrf";
/// Forms are small; uploads use multipart and their own limits.
const FORM_LIMIT: usize = 64 * 1024;

tokio::task_local! {
    /// The anonymous form token of the request being handled, set by
    /// [`anonymous_tokens`] around the page handlers.
    static ANONYMOUS: AnonymousToken;
}

struct AnonymousToken {
    token: String,
    /// Whether a page handed the token out (so its cookie must be set).
    used: Arc<AtomicBool>,
}

/// The token for this request's forms: the session's if it has one, else
/// the anonymous one (nothing is stored). Only outside the
/// [`anonymous_tokens`] layer does it fall back to storing one.
pub async fn token(session: &Session) -> Result<String, PageError> {
    if let Some(t) = session.get::<String>(KEY).await? {
        return Ok(t);
    }
    let anonymous = ANONYMOUS.try_with(|a| {
        a.used.store(true, Ordering::Relaxed);
        a.token.clone()
    });
    match anonymous {
        Ok(t) => Ok(t),
        Err(_) => renew(session).await,
    }
}

/// Replaces the token (at sign-in, so a token seen before cannot be reused).
pub async fn renew(session: &Session) -> Result<String, PageError> {
    let t = hex::encode(rand::rng().random::<[u8; 32]>());
    session.insert(KEY, &t).await?;
    Ok(t)
}

/// Checks a submitted token against the session's or, when the session has
/// none, against the anonymous one (which only matches if the request
/// brought the nonce cookie the form was made for).
pub async fn check(session: &Session, given: &str) -> Result<(), PageError> {
    let expected = match session.get::<String>(KEY).await? {
        Some(t) => Some(t),
        None => ANONYMOUS.try_with(|a| a.token.clone()).ok(),
    };
    match expected {
        Some(e) if bool::from(e.as_bytes().ct_eq(given.as_bytes())) => Ok(()),
        _ => Err(PageError::Csrf),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenField {
    csrf: String,
}

/// A URL-encoded form whose `csrf` field matched the session's token.
pub struct CsrfForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for CsrfForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let session = req
            .extensions()
            .get::<Session>()
            .cloned()
            .ok_or_else(|| PageError::bug("session layer missing"))?;
        let body = axum::body::to_bytes(req.into_body(), FORM_LIMIT)
            .await
            .map_err(|_| PageError::BadRequest("The form is too large.".into()))?;
        let field: TokenField = parse(&body)?;
        check(&session, &field.csrf).await?;
        Ok(CsrfForm(parse(&body)?))
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, PageError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|_| PageError::BadRequest("The form was incomplete or malformed.".into()))
}

/// The cookie that holds the anonymous token's nonce.
pub fn nonce_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-sealpost-csrf"
    } else {
        "sealpost-csrf"
    }
}

/// Makes the anonymous form token available to the page handlers: derived
/// from the request's nonce cookie, or from a fresh nonce whose cookie is
/// set on the response if a page used it.
pub async fn anonymous_tokens(
    State(config): State<Arc<Config>>,
    State(vault): State<Vault>,
    req: Request,
    next: Next,
) -> Response {
    let https = config.is_https();
    let name = nonce_cookie_name(https);
    let (nonce, fresh) = match nonce_from(req.headers(), name) {
        Some(n) => (n, false),
        None => (hex::encode(rand::rng().random::<[u8; 32]>()), true),
    };
    let used = Arc::new(AtomicBool::new(false));
    let scope = AnonymousToken {
        token: hex::encode(vault.keyed_hash(Purpose::CsrfAnonymous, nonce.as_bytes())),
        used: Arc::clone(&used),
    };
    let mut response = ANONYMOUS.scope(scope, next.run(req)).await;
    if fresh && used.load(Ordering::Relaxed) {
        // A browser-session cookie; HttpOnly: only the server compares it.
        let secure = if https { "; Secure" } else { "" };
        let cookie = format!("{name}={nonce}; Path=/; HttpOnly; SameSite=Strict{secure}");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// The nonce cookie's value, if present and shaped like one we set.
fn nonce_from(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// Refuses unsafe-method requests that a browser says come from another
/// site. Browsers always send `Origin` on cross-origin POSTs; clients that
/// send neither header are not browsers and carry no ambient cookies worth
/// forging (the form token still applies to them).
pub async fn reject_cross_site(
    State(config): State<Arc<Config>>,
    req: Request,
    next: Next,
) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && is_cross_site(&config.public_url, &req) {
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

fn is_cross_site(public_url: &str, req: &Request) -> bool {
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
            let public = public_url.trim_end_matches('/');
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
    fn nonce_cookies_are_found_and_checked() {
        let nonce = "ab".repeat(32);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("sealpost=x; sealpost-csrf={nonce}")).unwrap(),
        );
        assert_eq!(nonce_from(&headers, "sealpost-csrf"), Some(nonce));
        assert_eq!(nonce_from(&headers, "__Host-sealpost-csrf"), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("sealpost-csrf=short"),
        );
        assert_eq!(nonce_from(&headers, "sealpost-csrf"), None);
    }

    #[test]
    fn origins() {
        assert_eq!(origin_of("https://x.example/a/b"), "https://x.example");
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }
}
