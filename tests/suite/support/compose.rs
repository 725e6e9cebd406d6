//! The compose form, filled in and posted as a signed-in agent would, and a
//! fresh pickup link for a composed message.

use reqwest::multipart::{Form, Part};
use sealpost::app::App;
use sealpost::audit::Actor;
use sealpost::vault::MessageId;
use secrecy::ExposeSecret;

use crate::support::http::{Browser, Resp, composed_id, input_value};

/// The body [`compose`] sends: markup and an ampersand the pages must escape.
pub const BODY: &str = "Dear customer,\nyour <b>statement</b> is attached.\n& more";
/// The file name [`compose`] attaches: non-ASCII and quotes, for downloads.
pub const FILE: &str = "Kontoauszug März \"2026\".pdf";

/// One attachment: name, content, and the content type the browser states
/// (none: reqwest's default).
#[derive(Clone, Debug)]
pub struct Attachment {
    pub name: String,
    pub data: Vec<u8>,
    pub mime: Option<String>,
}

/// The fields of the compose form. Built with [`Compose::to`] and the
/// setters; fields are sent in the page's order, `phone` and `title` only
/// when set.
#[derive(Clone, Debug)]
pub struct Compose {
    pub recipient: String,
    pub phone: Option<String>,
    pub title: Option<String>,
    pub body: String,
    pub expiry_hours: String,
    pub methods: Vec<String>,
    pub access_code: String,
    pub known_fact: String,
    pub retention: String,
    pub attachments: Vec<Attachment>,
    pub allow_reply: bool,
    /// The conversation an answer continues.
    pub conversation: Option<MessageId>,
}

impl Compose {
    /// A message to `recipient`: a short body, 48 hours, kept after pickup,
    /// no method, no attachment yet.
    pub fn to(recipient: &str) -> Compose {
        Compose {
            recipient: recipient.to_owned(),
            phone: None,
            title: None,
            body: "Your statement is attached.".to_owned(),
            expiry_hours: "48".to_owned(),
            methods: Vec::new(),
            access_code: String::new(),
            known_fact: String::new(),
            retention: "keep".to_owned(),
            attachments: Vec::new(),
            allow_reply: false,
            conversation: None,
        }
    }

    pub fn phone(mut self, phone: &str) -> Compose {
        self.phone = Some(phone.to_owned());
        self
    }

    pub fn title(mut self, title: &str) -> Compose {
        self.title = Some(title.to_owned());
        self
    }

    pub fn body(mut self, body: &str) -> Compose {
        self.body = body.to_owned();
        self
    }

    pub fn expiry_hours(mut self, hours: &str) -> Compose {
        self.expiry_hours = hours.to_owned();
        self
    }

    /// The verification methods, in the order given.
    pub fn methods(mut self, methods: &[&str]) -> Compose {
        self.methods = methods.iter().map(|m| (*m).to_owned()).collect();
        self
    }

    pub fn access_code(mut self, code: &str) -> Compose {
        self.access_code = code.to_owned();
        self
    }

    pub fn known_fact(mut self, fact: &str) -> Compose {
        self.known_fact = fact.to_owned();
        self
    }

    /// `keep` or `shred` (after pickup).
    pub fn retention(mut self, retention: &str) -> Compose {
        self.retention = retention.to_owned();
        self
    }

    /// Lets the customer answer securely.
    pub fn allow_reply(mut self) -> Compose {
        self.allow_reply = true;
        self
    }

    /// An answer in the conversation of message `id`.
    pub fn in_conversation(mut self, id: MessageId) -> Compose {
        self.conversation = Some(id);
        self
    }

    pub fn attach(mut self, name: &str, data: &[u8]) -> Compose {
        self.attachments.push(Attachment {
            name: name.to_owned(),
            data: data.to_vec(),
            mime: None,
        });
        self
    }

    pub fn attach_typed(mut self, name: &str, data: &[u8], mime: &str) -> Compose {
        self.attachments.push(Attachment {
            name: name.to_owned(),
            data: data.to_vec(),
            mime: Some(mime.to_owned()),
        });
        self
    }

    /// The multipart form, with `csrf` first as the page has it.
    pub fn form(&self, csrf: &str) -> Form {
        let mut form = Form::new().text("csrf", csrf.to_owned());
        if let Some(c) = self.conversation {
            form = form.text("conversation", c.to_string());
        }
        form = form.text("recipient", self.recipient.clone());
        if let Some(phone) = &self.phone {
            form = form.text("phone", phone.clone());
        }
        if let Some(title) = &self.title {
            form = form.text("title", title.clone());
        }
        form = form
            .text("body", self.body.clone())
            .text("expiry_hours", self.expiry_hours.clone());
        for m in &self.methods {
            form = form.text("method", m.clone());
        }
        form = form
            .text("access_code", self.access_code.clone())
            .text("known_fact", self.known_fact.clone())
            .text("retention", self.retention.clone());
        if self.allow_reply {
            form = form.text("allow_reply", "on");
        }
        for a in &self.attachments {
            let mut part = Part::bytes(a.data.clone()).file_name(a.name.clone());
            if let Some(mime) = &a.mime {
                part = part.mime_str(mime).expect("content type");
            }
            form = form.part("attachments", part);
        }
        form
    }

    /// Posts the form; the compose must succeed (303 to the message).
    pub async fn send_with_response(&self, staff: &mut Browser) -> (MessageId, Resp) {
        let token = staff.csrf("/compose").await;
        let r = staff.post_multipart("/compose", self.form(&token)).await;
        assert_eq!(r.status, 303, "{}", r.body);
        let id = composed_id(&r).expect("message id");
        (id, r)
    }

    /// Posts the form; the compose must succeed. Returns the message id.
    pub async fn send(&self, staff: &mut Browser) -> MessageId {
        self.send_with_response(staff).await.0
    }

    /// Like [`Compose::send`], but a failure (transport error, a status
    /// other than 303) is returned, not panicked on: during an outage a
    /// request may fail, and the client is then told so.
    pub async fn try_send(&self, staff: &mut Browser) -> Result<MessageId, String> {
        let page = staff.try_get("/compose").await?;
        if page.status != 200 {
            return Err(format!("compose page: {}", page.status));
        }
        let token = input_value(&page.body, "csrf").ok_or("no csrf token")?;
        let r = staff
            .try_post_multipart("/compose", self.form(&token))
            .await?;
        if r.status != 303 {
            return Err(format!("compose: {} {}", r.status, r.body));
        }
        composed_id(&r).ok_or_else(|| "compose: no message id".to_owned())
    }
}

/// Composes the pickup tests' message to customer@example.org ([`BODY`],
/// one PDF named [`FILE`]); returns its id.
pub async fn compose(
    staff: &mut Browser,
    methods: &[&str],
    access_code: &str,
    fact: &str,
    retention: &str,
    attachment: &[u8],
) -> MessageId {
    Compose::to("customer@example.org")
        .body(BODY)
        .methods(methods)
        .access_code(access_code)
        .known_fact(fact)
        .retention(retention)
        .attach_typed(FILE, attachment, "application/pdf")
        .send(staff)
        .await
}

/// A new link for `id` (what "send a new link" does), as a path (`/p/…`).
pub async fn fresh_link(app: &App, id: MessageId) -> String {
    let mut tx = app.db.begin().await.expect("begin");
    let url = app
        .deliveries
        .resend(&mut tx, Actor::Cli, id, None, &app.config.public_url)
        .await
        .expect("resend");
    tx.commit().await.expect("commit");
    let url = url.expose_secret();
    url[url.find("/p/").expect("a pickup link")..].to_owned()
}
