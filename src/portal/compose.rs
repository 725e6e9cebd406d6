//! Compose and send: the form's text fields and any number of attachments
//! stream from the multipart body straight into the vault (constant memory,
//! nothing readable on disk); the message, its delivery record and its
//! audit event commit in one transaction once every part is stored.

use std::io::{self, Read};

use askama::Template;
use askama_web::WebTemplate;
use axum::body::Bytes;
use axum::extract::multipart::Field;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use secrecy::SecretString;
use tokio::sync::mpsc;

use super::auth::CurrentStaff;
use crate::app::App;
use crate::audit::{Action, Event};
use crate::deliveries::NewDelivery;
use crate::mail::Mail;
use crate::settings::{MAX_EXPIRY_HOURS, MIN_EXPIRY_HOURS, Method, Settings};
use crate::staff::StaffEmail;
use crate::vault::{Draft, MessageMeta, PartKind, PartMeta, VaultError};
use crate::web::csrf;
use crate::web::{Nav, PageError, PageResult};
use secrecy::ExposeSecret;

/// Room for the text fields and multipart framing on top of the size limit.
const FORM_OVERHEAD: u64 = MAX_FORM_BYTES as u64 + 1024 * 1024;
const MAX_BODY_CHARS: usize = 200_000;
const MAX_SHORT_FIELD: usize = 1024;
/// Parts other than attachments a form may have (the page sends about 12):
/// each is parsed and kept, so a flood of small fields must end early.
const MAX_FIELDS: usize = 64;
/// Bytes of every non-file field together, the body included.
const MAX_FORM_BYTES: usize = 1024 * 1024;
/// Session key of an access code generated at compose time, shown to the
/// sender once on the message page.
pub const GENERATED_CODE_KEY: &str = "generated_access_code";

#[derive(Clone, Debug, Default)]
struct Fields {
    recipient: String,
    phone: String,
    title: String,
    body: String,
    expiry_hours: String,
    methods: Vec<String>,
    access_code: String,
    known_fact: String,
    retention: String,
}

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

fn render(
    staff: &CurrentStaff,
    settings: &Settings,
    f: Fields,
    errors: Vec<String>,
) -> ComposePage {
    let methods = settings
        .methods
        .iter()
        .map(|m| {
            (
                m.as_str(),
                m.label(),
                f.methods.iter().any(|s| s == m.as_str()),
            )
        })
        .collect();
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

pub async fn page(State(app): State<App>, staff: CurrentStaff) -> PageResult {
    let settings = app.settings.load().await?;
    let f = Fields {
        expiry_hours: settings.default_expiry_hours.to_string(),
        methods: settings
            .methods
            .first()
            .map(|m| m.as_str().to_owned())
            .into_iter()
            .collect(),
        retention: "keep".to_owned(),
        ..Fields::default()
    };
    Ok(render(&staff, &settings, f, Vec::new()).into_response())
}

/// A checked compose form.
struct Checked {
    meta: MessageMeta,
    expires_at: i64,
    methods: Vec<Method>,
    access_code: Option<SecretString>,
    generated_code: bool,
    known_fact: Option<SecretString>,
    shred_after_pickup: bool,
}

fn check(f: &Fields, settings: &Settings, now: i64) -> Result<Checked, Vec<String>> {
    let mut errors = Vec::new();
    let recipient = f.recipient.trim();
    if StaffEmail::parse(recipient).is_err() {
        errors.push("Enter the customer's email address, like name@example.com.".to_owned());
    }
    let phone = f.phone.trim();
    if !phone.is_empty()
        && (phone.len() > 32
            || !phone
                .chars()
                .all(|c| c.is_ascii_digit() || " +-().".contains(c)))
    {
        errors.push("The phone number may contain only digits, spaces and + - ( ).".to_owned());
    }
    if f.title.chars().count() > 200 {
        errors.push("The internal title must be at most 200 characters.".to_owned());
    }
    let hours: Option<u32> = f.expiry_hours.trim().parse().ok();
    let hours = match hours {
        Some(h) if (MIN_EXPIRY_HOURS..=MAX_EXPIRY_HOURS).contains(&h) => h,
        _ => {
            errors.push("Choose an expiry between 1 hour and 30 days.".to_owned());
            0
        }
    };
    let mut methods = Vec::new();
    for m in &f.methods {
        match m.parse::<Method>() {
            Ok(m) if settings.allows(m) && !methods.contains(&m) => methods.push(m),
            _ => {
                let e = "Choose verification methods from the list.";
                if !errors.iter().any(|x| x == e) {
                    errors.push(e.to_owned());
                }
            }
        }
    }
    if methods.is_empty() {
        errors.push("Choose how the customer verifies before reading.".to_owned());
    }
    let access = normalise_access_code(&f.access_code);
    let (access_code, generated_code) = if methods.contains(&Method::AccessCode) {
        if access.is_empty() {
            (Some(generate_access_code()), true)
        } else if access.chars().count() < 6 || access.chars().count() > 64 {
            errors.push(
                "An access code must be 6 to 64 characters, not counting spaces and dashes (or leave it empty to generate one)."
                    .to_owned(),
            );
            (None, false)
        } else {
            (Some(SecretString::from(access)), false)
        }
    } else {
        (None, false)
    };
    let fact = normalise_fact(&f.known_fact);
    let known_fact = if methods.contains(&Method::KnownFact) {
        if fact.chars().count() < 4 || fact.chars().count() > 64 {
            errors.push("Enter the fact the customer must know (4 to 64 characters), e.g. the last 4 digits of their account.".to_owned());
        }
        Some(SecretString::from(fact))
    } else {
        None
    };
    let shred_after_pickup = match f.retention.as_str() {
        "shred" => true,
        "keep" => false,
        _ => {
            errors.push("Choose whether to keep the message until it expires.".to_owned());
            false
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Checked {
        meta: MessageMeta {
            recipient_address: Some(recipient.to_owned()),
            recipient_phone: (!phone.is_empty()).then(|| phone.to_owned()),
            title: (!f.title.trim().is_empty()).then(|| f.title.trim().to_owned()),
            reference: None,
        },
        expires_at: now + i64::from(hours) * 3600,
        methods,
        access_code,
        generated_code,
        known_fact,
        shred_after_pickup,
    })
}

/// Case, spaces and dashes do not matter when a customer types a fact.
pub fn normalise_fact(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Spaces and dashes do not matter when a customer types an access code
/// ("2145 9905", "21459905"). Eight digits come back grouped as
/// [`generate_access_code`] prints them, so generated codes hashed before
/// this normalisation existed still verify. Case does matter.
pub fn normalise_access_code(s: &str) -> String {
    let bare: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && !is_dash(*c))
        .collect();
    if bare.len() == 8 && bare.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}-{}", &bare[..4], &bare[4..])
    } else {
        bare
    }
}

/// The hyphen and the dashes a phone keyboard or word processor puts in
/// its place.
fn is_dash(c: char) -> bool {
    matches!(c, '-' | '\u{2010}'..='\u{2015}' | '\u{2212}')
}

/// Eight digits in two groups: easy to read out on the phone, and the
/// customer side limits guesses per message.
fn generate_access_code() -> SecretString {
    use rand::RngExt;
    let n: u32 = rand::rng().random_range(0..100_000_000);
    let s = format!("{n:08}");
    SecretString::from(format!("{}-{}", &s[..4], &s[4..]))
}

enum Outcome {
    Sent(crate::vault::MessageId, Option<SecretString>),
    Invalid(Box<Fields>, Vec<String>),
}

pub async fn send(
    State(app): State<App>,
    staff: CurrentStaff,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> PageResult {
    use axum::extract::FromRequest;
    let settings = app.settings.load().await?;
    let limit = settings.size_limit_bytes();
    // The whole request is bounded as well: the caps on fields and files
    // count their contents, not multipart framing, and a part's header is
    // buffered whole until its blank line.
    let cap = usize::try_from(limit + FORM_OVERHEAD).unwrap_or(usize::MAX);
    let request =
        request.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, cap)));
    let mut multipart = Multipart::from_request(request, &app)
        .await
        .map_err(|_| PageError::BadRequest("The form was not a valid upload.".to_owned()))?;
    let too_large = || {
        PageError::TooLarge(format!(
            "The message and its attachments are larger than the limit of {} MiB. Nothing was sent or kept.",
            settings.size_limit_mib
        ))
    };
    // Browsers send the length up front: refuse an obviously oversized
    // upload before reading it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit + FORM_OVERHEAD) {
        audit_failure(&app, &staff, "too_large").await;
        crate::web::linger(multipart);
        return Err(too_large());
    }
    match receive(&app, &staff, &settings, &mut multipart).await {
        Ok(Outcome::Sent(id, generated)) => {
            if let Some(code) = generated {
                use secrecy::ExposeSecret;
                // Sessions are stored in the database: seal the code there.
                let sealed = app.vault.seal_secret(
                    crate::vault::Purpose::GeneratedAccessCode,
                    code.expose_secret().as_bytes(),
                )?;
                staff
                    .session
                    .insert(GENERATED_CODE_KEY, (id.to_string(), hex::encode(sealed)))
                    .await?;
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
            let reason = match &e {
                PageError::TooLarge(_) => "too_large",
                PageError::Csrf => "csrf",
                PageError::BadRequest(_) => "bad_request",
                _ => "error",
            };
            audit_failure(&app, &staff, reason).await;
            Err(e)
        }
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
    let mut f = Fields::default();
    let mut budget = Budget::default();
    let mut seen: Vec<&'static str> = Vec::new();
    let mut csrf_ok = false;
    let mut draft: Option<(Draft, Checked)> = None;
    let mut attachments = 0u32;
    // Refusals that re-show the form as read so far.
    let invalid = |f: Fields, e: String| Ok(Outcome::Invalid(Box::new(f), vec![e]));
    while let Some(mut field) = multipart.next_field().await.map_err(|_| interrupted())? {
        let name = field.name().unwrap_or_default().to_owned();
        // The token comes first in the form; nothing else is read before it.
        if !csrf_ok {
            if name != "csrf" {
                return Err(PageError::Csrf);
            }
            budget.count()?;
            let token = budget.text(field, MAX_SHORT_FIELD).await?;
            csrf::check(&staff.session, &token).await?;
            csrf_ok = true;
            continue;
        }
        let upload = upload_name(field.headers());
        if upload == UploadName::Unreadable {
            return invalid(
                f,
                "The name of an attached file could not be read. Rename the file and attach it again; nothing was sent.".to_owned(),
            );
        }
        if name == "attachments" {
            let (d, checked) = match draft.take() {
                Some(d) => d,
                None => match begin(app, settings, &f).await? {
                    Ok(d) => d,
                    Err(errors) => return Ok(Outcome::Invalid(Box::new(f), errors)),
                },
            };
            let file_name = match upload {
                UploadName::Name(raw) => Some(clean_file_name(&raw)).filter(|n| !n.is_empty()),
                _ => None,
            };
            // The first bytes tell an empty part from a file (multer may
            // hand out an empty chunk first).
            let mut first = None;
            while let Some(chunk) = field.chunk().await.map_err(|_| interrupted())? {
                if !chunk.is_empty() {
                    first = Some(chunk);
                    break;
                }
            }
            // An empty file input still sends one nameless, empty part; it
            // costs a field, so a flood of them ends like any other.
            if first.is_none() && file_name.is_none() {
                budget.count()?;
                draft = Some((d, checked));
                continue;
            }
            if attachments >= settings.max_attachments {
                return invalid(
                    f,
                    format!(
                        "Attach at most {} files to one message. Nothing was sent.",
                        settings.max_attachments
                    ),
                );
            }
            attachments += 1;
            // Content without a usable name is kept under a plain one rather
            // than dropped.
            let file_name = file_name.unwrap_or_else(|| format!("attachment-{attachments}"));
            let meta = PartMeta {
                file_name: Some(file_name),
                content_type: field
                    .content_type()
                    .filter(|t| t.len() < 128)
                    .map(str::to_owned)
                    .or_else(|| Some("application/octet-stream".to_owned())),
            };
            let d = seal_field(d, PartKind::Attachment, meta, first, field).await?;
            draft = Some((d, checked));
            continue;
        }
        if upload != UploadName::None {
            return invalid(
                f,
                "Files can be attached only in the Attachments field. Nothing was sent.".to_owned(),
            );
        }
        // The text was checked and the body sealed when the first file
        // arrived: a field after it would be lost, so it is refused.
        if draft.is_some() {
            return invalid(
                f,
                "The message text and its settings must come before the attachments in the form. Nothing was sent.".to_owned(),
            );
        }
        budget.count()?;
        let cap = if name == "body" {
            MAX_BODY_CHARS * 4
        } else {
            MAX_SHORT_FIELD
        };
        let value = budget.text(field, cap).await?;
        if name == "method" {
            // Several methods may be chosen, each once.
            if f.methods.contains(&value) {
                return invalid(f, repeated("method"));
            }
            f.methods.push(value);
            continue;
        }
        let (key, slot) = match name.as_str() {
            "recipient" => ("recipient", &mut f.recipient),
            "phone" => ("phone", &mut f.phone),
            "title" => ("title", &mut f.title),
            "body" => ("body", &mut f.body),
            "expiry_hours" => ("expiry_hours", &mut f.expiry_hours),
            "access_code" => ("access_code", &mut f.access_code),
            "known_fact" => ("known_fact", &mut f.known_fact),
            "retention" => ("retention", &mut f.retention),
            // Unknown fields are ignored, but they counted above.
            _ => continue,
        };
        if seen.contains(&key) {
            return invalid(f, repeated(key));
        }
        seen.push(key);
        *slot = if key == "body" {
            value.replace("\r\n", "\n")
        } else {
            value
        };
    }
    if !csrf_ok {
        return Err(PageError::Csrf);
    }
    let (draft, checked) = match draft {
        Some(d) => d,
        None => match begin(app, settings, &f).await? {
            Ok(d) => d,
            Err(errors) => return Ok(Outcome::Invalid(Box::new(f), errors)),
        },
    };
    if f.body.trim().is_empty() && attachments == 0 {
        return Ok(Outcome::Invalid(
            Box::new(f),
            vec!["Write a message or attach at least one file.".to_owned()],
        ));
    }
    commit(app, staff, draft, checked, attachments).await
}

fn interrupted() -> PageError {
    PageError::BadRequest("The upload was interrupted. Please try again.".to_owned())
}

fn repeated(field: &str) -> String {
    format!(
        "The form sent the field \"{field}\" more than once. Nothing was sent; please reload the page and try again."
    )
}

/// What the non-file fields of one form have used so far: a count and
/// their bytes together, each capped, checked while streaming so nothing
/// over the limit is ever held. Over either cap the request is refused
/// with a short page that echoes nothing.
#[derive(Default)]
struct Budget {
    fields: usize,
    bytes: usize,
}

impl Budget {
    fn count(&mut self) -> Result<(), PageError> {
        self.fields += 1;
        if self.fields > MAX_FIELDS {
            return Err(PageError::TooLarge(format!(
                "The form has too many fields (at most {MAX_FIELDS}). Nothing was sent or kept."
            )));
        }
        Ok(())
    }

    /// Reads a text field of at most `cap` bytes.
    async fn text(&mut self, mut field: Field<'_>, cap: usize) -> Result<String, PageError> {
        let mut out = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(|_| interrupted())? {
            if out.len() + chunk.len() > cap {
                return Err(PageError::TooLarge(
                    "A form field is longer than allowed. Nothing was sent or kept.".to_owned(),
                ));
            }
            if self.bytes + out.len() + chunk.len() > MAX_FORM_BYTES {
                return Err(PageError::TooLarge(format!(
                    "The form's text is larger than {} MiB altogether. Nothing was sent or kept.",
                    MAX_FORM_BYTES / (1024 * 1024)
                )));
            }
            out.extend_from_slice(&chunk);
        }
        self.bytes += out.len();
        String::from_utf8(out)
            .map_err(|_| PageError::BadRequest("The form contained invalid text.".into()))
    }
}

/// Checks the text fields and starts the draft with the body as part 0.
async fn begin(
    app: &App,
    settings: &Settings,
    f: &Fields,
) -> Result<Result<(Draft, Checked), Vec<String>>, PageError> {
    if f.body.chars().count() > MAX_BODY_CHARS {
        return Ok(Err(vec![format!(
            "The message text is too long (at most {MAX_BODY_CHARS} characters); attach long documents as files."
        )]));
    }
    let checked = match check(f, settings, app.clock.now()) {
        Ok(c) => c,
        Err(errors) => return Ok(Err(errors)),
    };
    let mut draft = app.vault.begin_message();
    draft.set_size_limit(settings.size_limit_bytes());
    let body = zeroize::Zeroizing::new(f.body.clone().into_bytes());
    let meta = PartMeta {
        file_name: None,
        content_type: Some("text/plain; charset=utf-8".to_owned()),
    };
    // Sealing writes and fsyncs a blob: keep it off the async threads.
    let (draft, result) = tokio::task::spawn_blocking(move || {
        let result = draft.seal_part(PartKind::Body, &meta, &body[..]);
        (draft, result)
    })
    .await
    .map_err(|e| PageError::Internal(format!("sealing task failed: {e}")))?;
    result?;
    Ok(Ok((draft, checked)))
}

async fn commit(
    app: &App,
    staff: &CurrentStaff,
    draft: Draft,
    checked: Checked,
    attachments: u32,
) -> Result<Outcome, PageError> {
    let hash = |s: Option<SecretString>| async move {
        match s {
            Some(s) => app
                .hasher
                .hash_unchecked(s)
                .await
                .map(Some)
                .map_err(PageError::from),
            None => Ok(None),
        }
    };
    let generated = checked
        .generated_code
        .then(|| checked.access_code.clone())
        .flatten();
    let access_code_hash = hash(checked.access_code.clone()).await?;
    let known_fact_hash = hash(checked.known_fact.clone()).await?;
    let id = draft.id();
    let mut tx = app.db.begin().await?;
    app.vault.commit(&mut tx, draft, &checked.meta).await?;
    app.deliveries
        .insert(
            &mut tx,
            &NewDelivery {
                message_id: id,
                sender: staff.id(),
                expires_at: checked.expires_at,
                methods: checked.methods.clone(),
                access_code_hash,
                known_fact_hash,
                shred_after_pickup: checked.shred_after_pickup,
            },
        )
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?;
    let address = checked.meta.recipient_address.clone().unwrap_or_default();
    app.deliveries
        .set_recipient(&mut tx, id, &address)
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?;
    let url = app
        .deliveries
        .issue_link(&mut tx, id, &app.config.public_url)
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?;
    // The notification commits with the message: never one without the other.
    app.outbox
        .enqueue(
            &mut tx,
            &address,
            &Mail::PickupLink {
                url: url.expose_secret().to_owned(),
                expires_at: checked.expires_at,
            },
            Some(id),
        )
        .await?;
    let methods: Vec<&str> = checked.methods.iter().map(|m| m.as_str()).collect();
    let event = Event::new(staff.actor(), Action::MessageSent)
        .message(id)
        .ip(staff.ip)
        .detail(serde_json::json!({
            "attachments": attachments,
            "methods": methods,
            "expires_at": checked.expires_at,
            "shred_after_pickup": checked.shred_after_pickup,
        }));
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    app.metrics.message_sent();
    Ok(Outcome::Sent(id, generated))
}

/// Streams one multipart field (whose `first` chunk was already read) into
/// the draft on a blocking thread; chunks cross over a small bounded
/// channel, so memory stays constant. If the request is abandoned, the
/// draft is dropped with the task and its blobs deleted.
async fn seal_field(
    mut draft: Draft,
    kind: PartKind,
    meta: PartMeta,
    first: Option<Bytes>,
    mut field: Field<'_>,
) -> Result<Draft, PageError> {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let sealer = tokio::task::spawn_blocking(move || {
        let result = draft.seal_part(
            kind,
            &meta,
            ChannelReader {
                rx,
                buf: Bytes::new(),
            },
        );
        (draft, result)
    });
    // A send fails only when the sealer stopped (size limit): stop feeding it.
    let stopped = match first {
        Some(first) => tx.send(Ok(first)).await.is_err(),
        None => false,
    };
    if !stopped {
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                    break;
                }
            }
        }
    }
    drop(tx);
    let (draft, result) = sealer
        .await
        .map_err(|e| PageError::Internal(format!("sealing task failed: {e}")))?;
    match result {
        Ok(_) => Ok(draft),
        Err(VaultError::Input(_)) => Err(PageError::BadRequest(
            "The upload was interrupted. Nothing was sent; please try again.".to_owned(),
        )),
        Err(e) => Err(e.into()),
    }
}

struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    buf: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

/// A part's file name as its `Content-Disposition` gives it.
#[derive(Debug, PartialEq, Eq)]
enum UploadName {
    /// No `filename` parameter: a plain form field.
    None,
    Name(String),
    /// Only an RFC 5987 `filename*` that does not decode.
    Unreadable,
}

/// Reads the file name from the raw header rather than taking multer's:
/// multer ignores `filename*` (RFC 7578 allows it, RFC 6266 prefers it) and
/// drops a name that is not UTF-8, which would turn a named file into a
/// nameless part. Here `filename*` wins when it decodes; a plain `filename`
/// that is not UTF-8 is read as ISO-8859-1 (HTTP's historical header
/// charset), so the file keeps a readable name.
fn upload_name(headers: &HeaderMap) -> UploadName {
    let Some(value) = headers.get(header::CONTENT_DISPOSITION) else {
        return UploadName::None;
    };
    let params = disposition_params(value.as_bytes());
    let find = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_slice())
    };
    let extended = find("filename*").map(decode_ext_value);
    let plain = find("filename").map(decode_plain_name);
    match (extended, plain) {
        (Some(Some(name)), _) => UploadName::Name(name),
        (_, Some(name)) => UploadName::Name(name),
        (Some(None), None) => UploadName::Unreadable,
        (None, None) => UploadName::None,
    }
}

/// The `; key=value` parameters of a header value (lower-case keys as
/// sent; quoted values unquoted, `\"` and `\\` unescaped).
fn disposition_params(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = raw.iter().position(|b| *b == b';').unwrap_or(raw.len());
    while i < raw.len() {
        // Skip the separator and spaces before the key.
        while i < raw.len() && (raw[i] == b';' || raw[i].is_ascii_whitespace()) {
            i += 1;
        }
        let key_start = i;
        while i < raw.len() && raw[i] != b'=' && raw[i] != b';' {
            i += 1;
        }
        let key = String::from_utf8_lossy(raw[key_start..i].trim_ascii()).into_owned();
        if i >= raw.len() || raw[i] == b';' {
            continue;
        }
        i += 1;
        while i < raw.len() && raw[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if raw.get(i) == Some(&b'"') {
            i += 1;
            while i < raw.len() && raw[i] != b'"' {
                // Only an escaped quote or backslash is an escape: browsers
                // send Windows paths with bare backslashes.
                if raw[i] == b'\\' && matches!(raw.get(i + 1), Some(b'"' | b'\\')) {
                    i += 1;
                }
                value.push(raw[i]);
                i += 1;
            }
            i += 1;
            while i < raw.len() && raw[i] != b';' {
                i += 1;
            }
        } else {
            let start = i;
            while i < raw.len() && raw[i] != b';' {
                i += 1;
            }
            value.extend_from_slice(raw[start..i].trim_ascii());
        }
        out.push((key, value));
    }
    out
}

/// A plain `filename`: browsers write `"`, CR and LF as `%22`, `%0D` and
/// `%0A` (HTML multipart encoding); other bytes are literal.
fn decode_plain_name(raw: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let escape = raw.get(i..i + 3).and_then(|e| match e {
            b"%22" => Some(b'"'),
            b"%0D" | b"%0d" => Some(b'\r'),
            b"%0A" | b"%0a" => Some(b'\n'),
            _ => None,
        });
        match escape {
            Some(b) => {
                bytes.push(b);
                i += 3;
            }
            None => {
                bytes.push(raw[i]);
                i += 1;
            }
        }
    }
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().into_iter().map(char::from).collect(),
    }
}

/// An RFC 5987 / 8187 `charset'language'percent-encoded` value in UTF-8 or
/// ISO-8859-1; `None` if it is anything else or malformed.
fn decode_ext_value(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut pieces = text.splitn(3, '\'');
    let charset = pieces.next()?;
    let _language = pieces.next()?;
    let encoded = pieces.next()?.as_bytes();
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        if encoded[i] == b'%' {
            let hex = std::str::from_utf8(encoded.get(i + 1..i + 3)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            bytes.push(encoded[i]);
            i += 1;
        }
    }
    if charset.eq_ignore_ascii_case("utf-8") {
        String::from_utf8(bytes).ok()
    } else if charset.eq_ignore_ascii_case("iso-8859-1") {
        Some(bytes.into_iter().map(char::from).collect())
    } else {
        None
    }
}

/// The last path component, without control, format (bidi overrides,
/// zero-width characters) or line/paragraph separator characters, at most
/// 255 chars: some browsers send a full client path, and an invisible
/// U+202E would make "invoice\u{202E}fdp.exe" look like "invoiceexe.pdf".
fn clean_file_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    base.chars()
        .filter(|c| !c.is_control() && !is_invisible_format(*c))
        .take(255)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Unicode general category Cf (format characters, Unicode 16), plus the
/// line and paragraph separators U+2028 and U+2029 (Zl, Zp).
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_paths_and_controls() {
        assert_eq!(
            clean_file_name("C:\\Users\\x\\tax 2025.pdf"),
            "tax 2025.pdf"
        );
        assert_eq!(clean_file_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_file_name("a\u{0}b\nc.txt"), "abc.txt");
    }

    #[test]
    fn file_names_lose_format_characters() {
        assert_eq!(clean_file_name("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        for c in [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{061C}',
            '\u{2028}',
            '\u{2029}',
            '\u{E0041}',
        ] {
            assert_eq!(clean_file_name(&format!("a{c}b.pdf")), "ab.pdf", "{c:?}");
        }
        // Visible characters around them stay, including non-Latin ones.
        assert_eq!(
            clean_file_name("Zeugnis Müller 你好.pdf"),
            "Zeugnis Müller 你好.pdf"
        );
        assert_eq!(
            clean_file_name("a\u{202F}b"),
            "a\u{202F}b",
            "NNBSP is a space"
        );
        assert_eq!(clean_file_name("\u{202E}\u{200B}"), "");
    }

    fn disposition(value: &[u8]) -> UploadName {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_DISPOSITION,
            axum::http::HeaderValue::from_bytes(value).unwrap(),
        );
        upload_name(&h)
    }

    fn named(s: &str) -> UploadName {
        UploadName::Name(s.to_owned())
    }

    #[test]
    fn upload_names_from_every_form_of_the_header() {
        assert_eq!(upload_name(&HeaderMap::new()), UploadName::None);
        assert_eq!(disposition(b"form-data; name=\"body\""), UploadName::None);
        assert_eq!(
            disposition(b"form-data; name=\"attachments\"; filename=\"tax 2025.pdf\""),
            named("tax 2025.pdf")
        );
        assert_eq!(
            disposition(b"form-data; name=\"attachments\"; filename=\"\""),
            named("")
        );
        // RFC 5987 alone, and preferred over the plain fallback either way round.
        assert_eq!(
            disposition(b"form-data; name=\"attachments\"; filename*=UTF-8''na%C3%AFve%20plan.pdf"),
            named("naïve plan.pdf")
        );
        assert_eq!(
            disposition(
                b"form-data; name=a; filename*=utf-8'de'M%C3%A4rz.pdf; filename=\"Marz.pdf\""
            ),
            named("März.pdf")
        );
        assert_eq!(
            disposition(
                b"form-data; name=a; filename=\"Marz.pdf\"; FILENAME*=UTF-8''M%C3%A4rz.pdf"
            ),
            named("März.pdf")
        );
        assert_eq!(
            disposition(b"form-data; name=a; filename*=iso-8859-1'en'M%E4rz.pdf"),
            named("März.pdf")
        );
        // A filename* that does not decode falls back, or is unreadable.
        assert_eq!(
            disposition(b"form-data; name=a; filename*=koi8-r''x.pdf; filename=\"x.pdf\""),
            named("x.pdf")
        );
        for bad in [
            &b"form-data; name=a; filename*=UTF-8''%ZZ.pdf"[..],
            b"form-data; name=a; filename*=UTF-8''%C3.pdf",
            b"form-data; name=a; filename*=no-quotes.pdf",
            b"form-data; name=a; filename*=UTF-8''%E",
        ] {
            assert_eq!(disposition(bad), UploadName::Unreadable, "{bad:?}");
        }
        // Not UTF-8: read as ISO-8859-1, never dropped.
        assert_eq!(
            disposition(b"form-data; name=a; filename=\"r\xe9sum\xe9.pdf\""),
            named("résumé.pdf")
        );
        // Browser and reqwest escapes; unquoted values; odd spacing.
        assert_eq!(
            disposition(b"form-data; name=a; filename=\"Zeugnis %22M\xc3\xbcller%22.pdf\""),
            named("Zeugnis \"Müller\".pdf")
        );
        assert_eq!(
            disposition(b"form-data; name=a; filename=\"a \\\"b\\\" c\\\\d.txt\""),
            named("a \"b\" c\\d.txt")
        );
        assert_eq!(
            disposition(b"form-data; name=a; filename=\"C:\\Users\\x\\tax.pdf\""),
            named("C:\\Users\\x\\tax.pdf")
        );
        assert_eq!(
            disposition(b"form-data;name=a;filename = plain.txt ;x=1"),
            named("plain.txt")
        );
        assert_eq!(
            disposition(b"form-data; name=a; filename=\"semi;colon.txt\"; name2=\"b\""),
            named("semi;colon.txt")
        );
        assert_eq!(
            disposition(b"form-data; name=a; filename=\"unterminated"),
            named("unterminated")
        );
        assert_eq!(disposition(b"form-data; ;;; filename"), UploadName::None);
    }

    #[test]
    fn facts_ignore_case_spaces_and_dashes() {
        assert_eq!(normalise_fact(" 12-34 AB "), "1234ab");
    }

    #[test]
    fn access_codes_ignore_spaces_and_dashes() {
        for typed in [
            "2145-9905",
            "21459905",
            " 2145 9905 ",
            "2145 - 9905",
            "2145\u{2013}9905",
        ] {
            assert_eq!(normalise_access_code(typed), "2145-9905", "{typed:?}");
        }
        assert_eq!(normalise_access_code("Open-Sesame 1"), "OpenSesame1");
        assert_eq!(normalise_access_code("open-sesame-1"), "opensesame1");
        assert_eq!(normalise_access_code("214599051"), "214599051");
        assert_eq!(normalise_access_code(" - "), "");
        // What the generator prints is already in normal form.
        use secrecy::ExposeSecret;
        let c = generate_access_code();
        assert_eq!(normalise_access_code(c.expose_secret()), c.expose_secret());
    }

    #[test]
    fn generated_codes_have_eight_digits() {
        use secrecy::ExposeSecret;
        let c = generate_access_code();
        assert_eq!(c.expose_secret().len(), 9);
        assert!(
            c.expose_secret()
                .chars()
                .filter(char::is_ascii_digit)
                .count()
                == 8
        );
    }
}
