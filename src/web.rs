//! Cross-cutting HTTP concerns shared by every page: security headers,
//! sessions, CSRF, the stylesheet and the one error type pages return
//! (`error.rs`, with every conversion into it).

pub mod client_ip;
pub mod csrf;
pub mod dev_mailbox;
pub mod download;
mod error;
pub mod session;
pub mod upload;

pub use error::{
    BUSY_RETRY_AFTER_SECS, Nav, PROBLEM_KINDS, PROBLEM_TYPES, PageError, PageResult, Problem,
};

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
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

/// The one script: upload progress on forms marked `data-progress`
/// (compose, the customer's reply). Inline, allowed by its hash; without
/// it the plain form works the same.
pub const PROGRESS_SCRIPT: &str = include_str!("../templates/static/progress.js");

/// No script but [`PROGRESS_SCRIPT`] (by hash), no plugins, no framing, no
/// third-party anything; requests only to this origin (the script's
/// upload). Pages that need less say so (downloads set a sandbox).
static CSP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(PROGRESS_SCRIPT.as_bytes()));
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; connect-src 'self'; style-src 'self'; \
         img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
         object-src 'none'"
    )
});

/// Adds the security headers to every response (unless a handler set its
/// own). HSTS only when the public address is https: on plain http it
/// would be ignored, and it must not pin a development host to https.
pub fn with_security_headers<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    https: bool,
) -> Router<S> {
    let mut headers: Vec<(HeaderName, &'static str)> = vec![
        (header::CONTENT_SECURITY_POLICY, CSP.as_str()),
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
