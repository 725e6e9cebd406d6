//! A small HTTP client for portal tests: talks to the real router served on
//! a loopback port (with the client address, as `sealpost serve` does),
//! keeps cookies by hand so tests can replay old ones, and pulls CSRF
//! tokens and other values out of pages.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use sealpost::app::App;
use sealpost::clock::ManualClock;
use sealpost::staff::{Role, StaffEmail};
use secrecy::SecretString;

use crate::support::env::TestEnv;

pub const PASSWORD: &str = "correct horse battery staple";

/// Serves `app` on 127.0.0.1 and returns its base URL.
pub async fn serve(app: App) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = sealpost::server::router(app).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        axum::serve(listener, service).await.ok();
    });
    format!("http://{addr}")
}

/// An app on a manual clock, served; returns (app, clock, base URL).
pub async fn portal(env: &TestEnv, start: i64) -> (App, ManualClock, String) {
    let clock = ManualClock::new(start);
    let app = App::open_with_clock(env.config(), Arc::new(clock.clone()))
        .await
        .expect("open app");
    let base = serve(app.clone()).await;
    (app, clock, base)
}

pub async fn create_staff(app: &App, email: &str, role: Role) -> sealpost::staff::StaffId {
    app.accounts
        .create(
            sealpost::audit::Actor::Cli,
            &StaffEmail::parse(email).expect("email"),
            role,
            SecretString::from(PASSWORD),
        )
        .await
        .expect("create staff")
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn location(&self) -> Option<&str> {
        self.headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub struct Browser {
    pub base: String,
    http: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
    /// Extra headers sent with every request (e.g. Origin).
    pub extra: Vec<(String, String)>,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        sealpost::tls::install_crypto_provider();
        Browser {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: BTreeMap::new(),
            extra: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Resp {
        self.try_send(req).await.expect("request")
    }

    /// Like the other requests, but a transport error is returned, not a panic.
    async fn try_send(&mut self, req: reqwest::RequestBuilder) -> Result<Resp, String> {
        let mut req = req;
        if !self.cookies.is_empty() {
            req = req.header(reqwest::header::COOKIE, self.cookie_header());
        }
        for (k, v) in &self.extra {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        for value in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let text = value.to_str().expect("cookie text");
            let first = text.split(';').next().unwrap_or_default();
            let (name, val) = first.split_once('=').expect("cookie pair");
            let expired = text.to_ascii_lowercase().contains("max-age=0") || val.is_empty();
            if expired {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), val.to_owned());
            }
        }
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    pub async fn try_get(&mut self, path: &str) -> Result<Resp, String> {
        let req = self.http.get(format!("{}{path}", self.base));
        self.try_send(req).await
    }

    pub async fn try_post_multipart(
        &mut self,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> Result<Resp, String> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .multipart(form);
        self.try_send(req).await
    }

    /// GETs a file with this browser's cookies and returns its raw bytes
    /// (a `Resp` holds text); anything but 200 fails the test.
    pub async fn download(&self, path: &str) -> Vec<u8> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if !self.cookies.is_empty() {
            req = req.header(reqwest::header::COOKIE, self.cookie_header());
        }
        let resp = req.send().await.expect("download");
        assert_eq!(resp.status().as_u16(), 200, "download {path}");
        resp.bytes().await.expect("download body").to_vec()
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let req = self.http.post(format!("{}{path}", self.base)).form(fields);
        self.send(req).await
    }

    pub async fn post_multipart(&mut self, path: &str, form: reqwest::multipart::Form) -> Resp {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .multipart(form);
        self.send(req).await
    }

    /// GETs `page` and returns the CSRF token of its first form.
    pub async fn csrf(&mut self, page: &str) -> String {
        let r = self.get(page).await;
        assert_eq!(r.status, 200, "{page}: {}", r.body);
        input_value(&r.body, "csrf").unwrap_or_else(|| panic!("no csrf token on {page}"))
    }

    /// Posts a form taken from `page` with its CSRF token added.
    pub async fn submit(&mut self, page: &str, action: &str, fields: &[(&str, &str)]) -> Resp {
        let token = self.csrf(page).await;
        let mut all = vec![("csrf", token.as_str())];
        all.extend_from_slice(fields);
        self.post(action, &all).await
    }

    /// Password sign-in; returns the response to the password step.
    pub async fn sign_in(&mut self, email: &str, password: &str) -> Resp {
        self.submit(
            "/sign-in",
            "/sign-in",
            &[("email", email), ("password", password)],
        )
        .await
    }

    /// Signs in and expects to land on the portal (no second factor).
    pub async fn signed_in(base: &str, email: &str) -> Browser {
        let mut b = Browser::new(base);
        let r = b.sign_in(email, PASSWORD).await;
        assert_eq!(r.status, 303, "sign-in of {email}: {}", r.body);
        assert_eq!(r.location(), Some("/sent"));
        b
    }
}

/// The id of the message a successful compose redirected to.
pub fn composed_id(r: &Resp) -> Option<sealpost::vault::MessageId> {
    r.location()?
        .strip_prefix("/messages/")?
        .trim_end_matches("?sent=1")
        .parse()
        .ok()
}

/// The `value` of the first `<input … name="NAME" … value="…">`.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\"");
    let at = html.find(&needle)?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.find("value=\"")? + 7;
    let end = tag[v..].find('"')?;
    Some(tag[v..v + end].to_owned())
}

/// Text of the element with `id="ID"` (up to the next `<`).
pub fn element_text(html: &str, id: &str) -> Option<String> {
    let needle = format!("id=\"{id}\"");
    let at = html.find(&needle)?;
    let start = at + html[at..].find('>')? + 1;
    let end = start + html[start..].find('<')?;
    Some(html[start..end].trim().to_owned())
}

/// Message ids linked from a page (`/messages/<uuid>`), in order.
// Used by the sent-list tests (portal_messages.rs on main); unused on this branch.
pub fn message_links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("href=\"/messages/") {
        let s = &rest[i + 16..];
        let end = s.find('"').unwrap_or(0);
        let id = &s[..end];
        if !id.contains('/') && !out.iter().any(|o| o == id) {
            out.push(id.to_owned());
        }
        rest = &s[end..];
    }
    out
}

/// Delivers what the outbox holds (no SMTP configured: into the dev
/// mailbox) and returns the text of every email to `to`, oldest first, as a
/// loopback visitor reads them at /dev/mailbox.
pub async fn dev_mail(app: &App, b: &mut Browser, to: &str) -> Vec<String> {
    app.outbox.run_once().await.expect("outbox run");
    let list = b.get("/dev/mailbox").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let mut found = Vec::new();
    for row in list.body.split("<tr>").skip(2) {
        if !row.contains(&format!("<td>{to}</td>")) {
            continue;
        }
        let Some(i) = row.find("href=\"/dev/mailbox/") else {
            continue;
        };
        let rest = &row[i + 6..];
        let path = &rest[..rest.find('"').unwrap()];
        let page = b.get(path).await;
        let start = page.body.find("<pre class=\"mail\">").expect("mail text") + 18;
        let end = start + page.body[start..].find("</pre>").unwrap();
        found.push(page.body[start..end].to_owned());
    }
    found.reverse();
    found
}

/// The first `http…` link in a mail's text whose path starts with `prefix`.
pub fn link_in(mail: &str, prefix: &str) -> Option<String> {
    mail.split("href=\"").skip(1).find_map(|s| {
        let url = &s[..s.find('"')?];
        let path = &url[url.find("://")? + 3..];
        let path = &path[path.find('/')?..];
        path.starts_with(prefix).then(|| path.to_owned())
    })
}

/// The `href` of the page link with this `rel`, unescaped.
pub fn page_link(body: &str, rel: &str) -> Option<String> {
    let at = body.find(&format!("rel=\"{rel}\""))?;
    let start = body[..at].rfind("href=\"")? + 6;
    let end = start + body[start..].find('"')?;
    Some(body[start..end].replace("&#38;", "&").replace("&amp;", "&"))
}
