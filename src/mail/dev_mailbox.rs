//! The dev mailbox: without an SMTP server, sent mail is kept (sealed) in
//! the database and shown at `/dev/mailbox`, so a newcomer can run
//! `sealpost serve`, send a message and click the link.
//!
//! The pages answer only when no SMTP server is configured, only to a
//! loopback client, and not through a proxy (a proxy on the same host would
//! otherwise make every visitor look local; see [`Loopback`]); anyone else
//! gets a 404.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
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

const PURPOSE: &str = "dev-mailbox";
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
    let sealed = vault.seal_secret(PURPOSE, &plain)?;
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

fn allowed(app: &App, Loopback(local): Loopback) -> bool {
    app.outbox.is_dev_mailbox() && local
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

async fn list(State(app): State<App>, local: Loopback) -> PageResult<Response> {
    if !allowed(&app, local) {
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
    Path(id): Path<i64>,
) -> PageResult<Response> {
    if !allowed(&app, local) {
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
    let plain = vault.open_secret(PURPOSE, sealed)?;
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
