//! The dev mailbox: without an SMTP server, sent mail is kept (sealed) in
//! the database and shown at `/dev/mailbox`, so a newcomer can run
//! `sealpost serve`, send a message and click the link.
//!
//! The pages answer only when no SMTP server is configured, only to a
//! loopback client, and not through a proxy (a proxy on the same host would
//! otherwise make every visitor look local; see [`Loopback`]); anyone else
//! gets a 404. The request must also name this machine in `Host` (a
//! loopback name or address, or the configured public host): a page on any
//! site that rebinds its own name to 127.0.0.1 would otherwise be able to
//! read the links and codes from a browser on this host.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::MailError;
use crate::app::App;
use crate::db::Tx;
use crate::portal::format_time;
use crate::vault::Vault;
use crate::web::client_ip::Loopback;
use crate::web::{Nav, PageError, PageResult};

/// The list shows the newest mail only; it is a development aid.
const LIST_LIMIT: i64 = 100;

/// One kept email (sealed as a whole in the `content` column).
#[derive(Clone, Serialize, Deserialize)]
pub struct DevMail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub mail_message_id: String,
}

pub(super) async fn store(
    tx: &mut Tx,
    vault: &Vault,
    outbox_id: i64,
    now: i64,
    mail: &DevMail,
) -> Result<(), MailError> {
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(mail).map_err(|e| MailError::Build(e.to_string()))?,
    );
    let sealed = vault.seal_secret(crate::vault::Purpose::DevMailbox, &plain)?;
    sqlx::query("INSERT INTO dev_mailbox (outbox_id, created_at, content) VALUES ($1, $2, $3)")
        .bind(outbox_id)
        .bind(now)
        .bind(sealed)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub fn routes() -> Router<App> {
    Router::new()
        .route("/dev/mailbox", get(list))
        .route("/dev/mailbox/{id}", get(show))
}

fn allowed(app: &App, Loopback(local): Loopback, headers: &HeaderMap, uri: &Uri) -> bool {
    app.outbox.is_dev_mailbox() && local && host_allowed(headers, uri, &app.config.public_url)
}

/// Whether the request's `Host` (or, without one, the request target's
/// authority) is a loopback name or address, or the host of `public_url`.
/// Any port: the port is not what a rebinding attack changes.
fn host_allowed(headers: &HeaderMap, uri: &Uri, public_url: &str) -> bool {
    let authority = match headers.get(header::HOST) {
        Some(h) => h.to_str().ok(),
        None => uri.authority().map(|a| a.as_str()),
    };
    let Some(host) = authority.and_then(host_of) else {
        return false;
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(crate::web::client_ip::is_loopback);
    let public = public_url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
        .and_then(host_of)
        .is_some_and(|p| p.trim_end_matches('.').eq_ignore_ascii_case(&host));
    loopback || public
}

/// The host of `host[:port]` or `[v6]:port`; `None` if malformed.
fn host_of(authority: &str) -> Option<&str> {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            None if after.is_empty() => Some(host),
            Some(port) if digits(port) => Some(host),
            _ => None,
        };
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if digits(port) => host,
        Some(_) => return None,
        None => authority,
    };
    (!host.is_empty() && !host.contains(['@', '/', ':'])).then_some(host)
}

struct Entry {
    id: i64,
    received: String,
    to: String,
    subject: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/dev_mailbox.html")]
struct ListPage {
    nav: Option<Nav>,
    entries: Vec<Entry>,
}

/// A run of the email text; links are made clickable.
struct Segment {
    text: String,
    link: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/dev_mail.html")]
struct MailPage {
    nav: Option<Nav>,
    received: String,
    to: String,
    subject: String,
    mail_message_id: String,
    segments: Vec<Segment>,
}

async fn list(
    State(app): State<App>,
    local: Loopback,
    headers: HeaderMap,
    uri: Uri,
) -> PageResult<Response> {
    if !allowed(&app, local, &headers, &uri) {
        return Err(PageError::NotFound);
    }
    let rows =
        sqlx::query("SELECT id, created_at, content FROM dev_mailbox ORDER BY id DESC LIMIT $1")
            .bind(LIST_LIMIT)
            .fetch_all(app.db.pool())
            .await?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let mail = open(&app.vault, &row.try_get::<Vec<u8>, _>(2)?)?;
        entries.push(Entry {
            id: row.try_get(0)?,
            received: format_time(row.try_get(1)?),
            to: mail.to,
            subject: mail.subject,
        });
    }
    Ok(ListPage { nav: None, entries }.into_response())
}

async fn show(
    State(app): State<App>,
    local: Loopback,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<i64>,
) -> PageResult<Response> {
    if !allowed(&app, local, &headers, &uri) {
        return Err(PageError::NotFound);
    }
    let row = sqlx::query("SELECT created_at, content FROM dev_mailbox WHERE id = $1")
        .bind(id)
        .fetch_optional(app.db.pool())
        .await?
        .ok_or(PageError::NotFound)?;
    let mail = open(&app.vault, &row.try_get::<Vec<u8>, _>(1)?)?;
    Ok(MailPage {
        nav: None,
        received: format_time(row.try_get(0)?),
        to: mail.to,
        subject: mail.subject,
        mail_message_id: mail.mail_message_id,
        segments: segments(&mail.text),
    }
    .into_response())
}

fn open(vault: &Vault, sealed: &[u8]) -> Result<DevMail, PageError> {
    let plain = vault.open_secret(crate::vault::Purpose::DevMailbox, sealed)?;
    serde_json::from_slice(&plain).map_err(|e| PageError::Internal(e.to_string()))
}

/// Splits `text` into plain runs and `http(s)://` links (a link ends at
/// whitespace). The template escapes both.
fn segments(text: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let start = [rest.find("https://"), rest.find("http://")]
            .into_iter()
            .flatten()
            .min();
        let Some(start) = start else { break };
        let end = rest[start..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |e| start + e);
        if start > 0 {
            out.push(Segment {
                text: rest[..start].to_owned(),
                link: false,
            });
        }
        out.push(Segment {
            text: rest[start..end].to_owned(),
            link: true,
        });
        rest = &rest[end..];
    }
    if !rest.is_empty() {
        out.push(Segment {
            text: rest.to_owned(),
            link: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_and_public_hosts() {
        let check = |host: Option<&str>, public: &str| {
            let mut headers = HeaderMap::new();
            if let Some(h) = host {
                headers.insert(header::HOST, h.parse().unwrap());
            }
            host_allowed(&headers, &Uri::from_static("/dev/mailbox"), public)
        };
        let dev = "http://127.0.0.1:8080";
        for ok in [
            "localhost",
            "LOCALHOST:3000",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.9.8.7:1",
            "[::1]",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(check(Some(ok), dev), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1",
            "[::2]:80",
            "::1",
            "localhost:http",
            "user@localhost",
            "",
        ] {
            assert!(!check(Some(bad), dev), "{bad}");
        }
        assert!(!check(None, dev), "no Host at all");
        let public = "https://Messages.Example.com/base";
        assert!(check(Some("messages.example.com"), public));
        assert!(check(Some("messages.example.com:8443"), public));
        assert!(check(Some("localhost"), public));
        assert!(!check(Some("example.com"), public));
        assert!(check(Some("[2001:db8::1]:443"), "https://[2001:db8::1]"));
        // The request target's authority counts when there is no Host.
        assert!(host_allowed(
            &HeaderMap::new(),
            &Uri::from_static("http://localhost:1/dev/mailbox"),
            dev
        ));
    }

    #[test]
    fn links_are_split_out() {
        let s = segments("Open:\nhttps://x.test/p/abc\nuntil 5. http://y");
        let got: Vec<(&str, bool)> = s.iter().map(|s| (s.text.as_str(), s.link)).collect();
        assert_eq!(
            got,
            [
                ("Open:\n", false),
                ("https://x.test/p/abc", true),
                ("\nuntil 5. ", false),
                ("http://y", true),
            ]
        );
        assert!(segments("").is_empty());
    }
}
