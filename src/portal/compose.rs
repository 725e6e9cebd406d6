//! Compose and send: the form's text fields and any number of attachments
//! stream from the multipart body straight into the vault (constant memory,
//! nothing readable on disk); the message, its delivery record and its
//! audit event commit in one transaction once every part is stored.

pub mod request;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::multipart::Field;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use secrecy::{ExposeSecret, SecretString};

use super::auth::CurrentStaff;
use crate::app::App;
use crate::audit::{Action, Event};
use crate::flows::compose::{Checked, Fields, MAX_BODY_CHARS, Sent, begin, commit};
use crate::settings::{MAX_EXPIRY_HOURS, MIN_EXPIRY_HOURS, Settings};
use crate::vault::{Draft, MessageId, PartKind, PartMeta, Purpose};
use crate::web::csrf;
use crate::web::upload::{
    Budget, UploadName, clean_file_name, first_chunk, interrupted, open_multipart, seal_field,
    upload_name,
};
use crate::web::{Nav, PageError, PageResult};

const MAX_SHORT_FIELD: usize = 1024;
/// Session key of an access code generated at compose time, shown to the
/// sender once on the message page.
pub const GENERATED_CODE_KEY: &str = "generated_access_code";

#[derive(Template, WebTemplate)]
#[template(path = "portal/compose.html")]
struct ComposePage {
    nav: Option<Nav>,
    csrf: String,
    f: Fields,
    methods: Vec<(&'static str, &'static str, bool)>,
    limit_mib: u64,
    max_attachments: u32,
    min_hours: u32,
    max_hours: u32,
    errors: Vec<String>,
}

/// The verification methods staff may choose, as checkboxes: (value,
/// label, ticked in `f`).
fn method_choices(settings: &Settings, f: &Fields) -> Vec<(&'static str, &'static str, bool)> {
    settings
        .methods
        .iter()
        .map(|m| {
            (
                m.as_str(),
                m.label(),
                f.methods.iter().any(|s| s == m.as_str()),
            )
        })
        .collect()
}

fn render(
    staff: &CurrentStaff,
    settings: &Settings,
    f: Fields,
    errors: Vec<String>,
) -> ComposePage {
    let methods = method_choices(settings, &f);
    ComposePage {
        nav: staff.nav(),
        csrf: staff.csrf.clone(),
        f,
        methods,
        limit_mib: settings.size_limit_mib,
        max_attachments: settings.max_attachments,
        min_hours: MIN_EXPIRY_HOURS,
        max_hours: MAX_EXPIRY_HOURS,
        errors,
    }
}

#[derive(serde::Deserialize, Default)]
pub struct PageParams {
    conversation: Option<String>,
}

pub async fn page(
    State(app): State<App>,
    staff: CurrentStaff,
    axum::extract::Query(params): axum::extract::Query<PageParams>,
) -> PageResult {
    let settings = app.settings.load().await?;
    // An answer: to the conversation's customer, who may answer again.
    let (conversation, recipient) = match params.conversation.filter(|c| !c.is_empty()) {
        Some(c) => {
            let id = c.parse::<MessageId>().map_err(|_| PageError::NotFound)?;
            match crate::flows::compose::conversation_recipient(&app, &staff.acting(), id).await? {
                Ok(address) => (id.to_string(), address),
                Err(e) => return Err(PageError::BadRequest(e)),
            }
        }
        None => (String::new(), String::new()),
    };
    let f = Fields {
        recipient,
        conversation,
        allow_reply: settings.reply_default,
        ..Fields::defaults(&settings)
    };
    Ok(render(&staff, &settings, f, Vec::new()).into_response())
}

enum Outcome {
    Sent(MessageId, Option<SecretString>),
    Invalid(Box<Fields>, Vec<String>),
}

pub async fn send(
    State(app): State<App>,
    staff: CurrentStaff,
    request: axum::extract::Request,
) -> PageResult {
    let settings = app.settings.load().await?;
    let (mut multipart, declared_too_large) =
        open_multipart(request, &app, settings.size_limit_bytes()).await?;
    if declared_too_large {
        audit_failure(&app, &staff, "too_large").await;
        crate::web::linger(multipart);
        return Err(PageError::TooLarge(format!(
            "The message and its attachments are larger than the limit of {} MiB. Nothing was sent or kept.",
            settings.size_limit_mib
        )));
    }
    match receive(&app, &staff, &settings, &mut multipart).await {
        Ok(Outcome::Sent(id, generated)) => {
            if let Some(code) = generated {
                remember_generated_code(&app, &staff, id, &code).await?;
            }
            Ok(Redirect::to(&format!("/messages/{id}?sent=1")).into_response())
        }
        Ok(Outcome::Invalid(f, errors)) => {
            crate::web::linger(multipart);
            let page = render(&staff, &settings, *f, errors);
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => {
            // Read what is left so the browser sees our answer rather than a
            // reset connection.
            crate::web::linger(multipart);
            audit_failure(&app, &staff, failure_reason(&e)).await;
            Err(e)
        }
    }
}

/// Keeps an access code generated for message `id` to show the sender
/// once on the message page. Sessions are stored in the database: the code
/// is sealed there.
async fn remember_generated_code(
    app: &App,
    staff: &CurrentStaff,
    id: MessageId,
    code: &SecretString,
) -> Result<(), PageError> {
    let sealed = app.vault.seal_secret(
        Purpose::GeneratedAccessCode,
        code.expose_secret().as_bytes(),
    )?;
    staff
        .session
        .insert(GENERATED_CODE_KEY, (id.to_string(), hex::encode(sealed)))
        .await?;
    Ok(())
}

/// The audit log's class of a refused compose (never its text).
fn failure_reason(e: &PageError) -> &'static str {
    match e {
        PageError::TooLarge(_) => "too_large",
        PageError::Csrf => "csrf",
        PageError::BadRequest(_) => "bad_request",
        _ => "error",
    }
}

async fn audit_failure(app: &App, staff: &CurrentStaff, reason: &str) {
    let event = Event::new(staff.actor(), Action::ComposeFailed)
        .ip(staff.ip)
        .detail(serde_json::json!({ "reason": reason }));
    if let Err(e) = app.audit.record_now(&event).await {
        tracing::warn!(error = %e, "could not audit a failed compose");
    }
}

async fn receive(
    app: &App,
    staff: &CurrentStaff,
    settings: &Settings,
    multipart: &mut Multipart,
) -> Result<Outcome, PageError> {
    let mut form = FormReader::default();
    while let Some(field) = multipart.next_field().await.map_err(|_| interrupted())? {
        if let Err(errors) = form.read(app, staff, settings, field).await? {
            return Ok(Outcome::Invalid(Box::new(form.fields), errors));
        }
    }
    form.finish(app, staff, settings).await
}

/// Why the form is shown again: what to tell the sender.
type Refusal = Vec<String>;

fn refuse(error: impl Into<String>) -> Result<Result<(), Refusal>, PageError> {
    Ok(Err(vec![error.into()]))
}

/// The compose form as read so far, one multipart field at a time: the
/// text fields first, then the attachments, each sealed as it streams in.
#[derive(Default)]
struct FormReader {
    fields: Fields,
    budget: Budget,
    seen: Vec<&'static str>,
    csrf_ok: bool,
    /// Begun when the first attachment arrives (the text is checked then).
    draft: Option<(Draft, Checked)>,
    attachments: u32,
}

impl FormReader {
    async fn read(
        &mut self,
        app: &App,
        staff: &CurrentStaff,
        settings: &Settings,
        field: Field<'_>,
    ) -> Result<Result<(), Refusal>, PageError> {
        let name = field.name().unwrap_or_default().to_owned();
        // The token comes first in the form; nothing else is read before it.
        if !self.csrf_ok {
            if name != "csrf" {
                return Err(PageError::Csrf);
            }
            self.budget.count()?;
            let token = self.budget.text(field, MAX_SHORT_FIELD).await?;
            csrf::check(&staff.session, &token).await?;
            self.csrf_ok = true;
            return Ok(Ok(()));
        }
        let upload = upload_name(field.headers());
        if upload == UploadName::Unreadable {
            return refuse(
                "The name of an attached file could not be read. Rename the file and attach it again; nothing was sent.",
            );
        }
        if name == "attachments" {
            return self.attachment(app, staff, settings, upload, field).await;
        }
        if upload != UploadName::None {
            return refuse(
                "Files can be attached only in the Attachments field. Nothing was sent.",
            );
        }
        // The text was checked and the body sealed when the first file
        // arrived: a field after it would be lost, so it is refused.
        if self.draft.is_some() {
            return refuse(
                "The message text and its settings must come before the attachments in the form. Nothing was sent.",
            );
        }
        self.text(&name, field).await
    }

    async fn text(
        &mut self,
        name: &str,
        field: Field<'_>,
    ) -> Result<Result<(), Refusal>, PageError> {
        self.budget.count()?;
        let cap = if name == "body" {
            MAX_BODY_CHARS * 4
        } else {
            MAX_SHORT_FIELD
        };
        let value = self.budget.text(field, cap).await?;
        let f = &mut self.fields;
        if name == "allow_reply" {
            f.allow_reply = true;
            return Ok(Ok(()));
        }
        if name == "method" {
            // Several methods may be chosen, each once.
            if f.methods.contains(&value) {
                return refuse(repeated("method"));
            }
            f.methods.push(value);
            return Ok(Ok(()));
        }
        let (key, slot) = match name {
            "recipient" => ("recipient", &mut f.recipient),
            "phone" => ("phone", &mut f.phone),
            "title" => ("title", &mut f.title),
            "body" => ("body", &mut f.body),
            "expiry_hours" => ("expiry_hours", &mut f.expiry_hours),
            "access_code" => ("access_code", &mut f.access_code),
            "known_fact" => ("known_fact", &mut f.known_fact),
            "retention" => ("retention", &mut f.retention),
            "conversation" => ("conversation", &mut f.conversation),
            // Unknown fields are ignored, but they counted above.
            _ => return Ok(Ok(())),
        };
        if self.seen.contains(&key) {
            return refuse(repeated(key));
        }
        self.seen.push(key);
        *slot = if key == "body" {
            value.replace("\r\n", "\n")
        } else {
            value
        };
        Ok(Ok(()))
    }

    async fn attachment(
        &mut self,
        app: &App,
        staff: &CurrentStaff,
        settings: &Settings,
        upload: UploadName,
        mut field: Field<'_>,
    ) -> Result<Result<(), Refusal>, PageError> {
        let (d, checked) = match self.draft.take() {
            Some(d) => d,
            None => match begin(app, &staff.acting(), settings, &self.fields).await? {
                Ok(d) => d,
                Err(errors) => return Ok(Err(errors)),
            },
        };
        let file_name = match upload {
            UploadName::Name(raw) => Some(clean_file_name(&raw)).filter(|n| !n.is_empty()),
            _ => None,
        };
        let first = first_chunk(&mut field).await?;
        // An empty file input still sends one nameless, empty part; it
        // costs a field, so a flood of them ends like any other.
        if first.is_none() && file_name.is_none() {
            self.budget.count()?;
            self.draft = Some((d, checked));
            return Ok(Ok(()));
        }
        if self.attachments >= settings.max_attachments {
            return refuse(format!(
                "Attach at most {} files to one message. Nothing was sent.",
                settings.max_attachments
            ));
        }
        self.attachments += 1;
        // Content without a usable name is kept under a plain one rather
        // than dropped.
        let file_name = file_name.unwrap_or_else(|| format!("attachment-{}", self.attachments));
        let meta = PartMeta {
            item: None,
            file_name: Some(file_name),
            content_type: field
                .content_type()
                .filter(|t| t.len() < 128)
                .map(str::to_owned)
                .or_else(|| Some("application/octet-stream".to_owned())),
        };
        let d = seal_field(d, PartKind::Attachment, meta, first, field).await?;
        self.draft = Some((d, checked));
        Ok(Ok(()))
    }

    /// The whole form was read: check what is still unchecked and commit.
    async fn finish(
        self,
        app: &App,
        staff: &CurrentStaff,
        settings: &Settings,
    ) -> Result<Outcome, PageError> {
        if !self.csrf_ok {
            return Err(PageError::Csrf);
        }
        let f = self.fields;
        let (draft, checked) = match self.draft {
            Some(d) => d,
            None => match begin(app, &staff.acting(), settings, &f).await? {
                Ok(d) => d,
                Err(errors) => return Ok(Outcome::Invalid(Box::new(f), errors)),
            },
        };
        if f.body.trim().is_empty() && self.attachments == 0 {
            return Ok(Outcome::Invalid(
                Box::new(f),
                vec!["Write a message or attach at least one file.".to_owned()],
            ));
        }
        let Sent { id, generated } = commit(
            app,
            &staff.acting(),
            draft,
            checked,
            self.attachments,
            None,
            None,
        )
        .await?;
        Ok(Outcome::Sent(id, generated))
    }
}

fn repeated(field: &str) -> String {
    format!(
        "The form sent the field \"{field}\" more than once. Nothing was sent; please reload the page and try again."
    )
}
