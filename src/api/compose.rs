//! `POST /api/v1/messages` and `POST /api/v1/requests`: send a message
//! (JSON, or multipart with its attachments streamed into the vault) or a
//! document request, through the same flow and transaction as the
//! portal's compose page. Each takes an `Idempotency-Key`.
//!
//! The OpenAPI schema states every rule a request must meet (patterns,
//! lengths, ranges), and the handlers check exactly those, so a request
//! the schema allows is never refused as malformed: what depends on the
//! organisation's settings (a method it does not offer, a file kind it does
//! not accept) is a 409, not a 400.

use axum::body::Bytes;
use axum::extract::{Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::ApiError;
use super::auth::{Caller, Concerns};
use crate::app::App;
use crate::filetype::FileKind;
use crate::flows::compose::{
    Asking, Completion, Fields, MAX_BODY_CHARS, MAX_INSTRUCTIONS_CHARS, Sent, begin, commit,
    prepare, send_request,
};
use crate::idempotency::{Begun, Claim};
use crate::requests::{MAX_ITEM_CHARS, MAX_ITEMS};
use crate::settings::{MAX_EXPIRY_HOURS, MIN_EXPIRY_HOURS, Method, Settings};
use crate::staff::tokens::Scope;
use crate::text::format_time_rfc3339;
use crate::vault::{PartKind, PartMeta};
use crate::web::upload::{
    Budget, UploadName, clean_file_name, first_chunk, interrupted, open_multipart, seal_field,
    seal_text, upload_name,
};
use crate::web::{PageError, Problem};

/// The header a client sets to make a creating call safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Characters the patterns below call white space: `\s` of ECMA-262 (and
/// of the JSON Schema validators), which is Rust's `char::is_whitespace`
/// and U+FEFF. Spelled out so every regex engine reads the same set.
fn is_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

// The schema's patterns (string literals in the attributes below) are
// checked by these functions, rule for rule.

fn valid_address(s: &str) -> bool {
    let atext = |c: char| c.is_ascii_alphanumeric() || "_+-".contains(c);
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let segments: Vec<&str> = local.split('.').collect();
    let local_ok = segments.len() <= 3
        && segments.iter().enumerate().all(|(i, seg)| {
            let max = if i == 0 { 24 } else { 19 };
            (1..=max).contains(&seg.len()) && seg.chars().all(atext)
        });
    let labels: Vec<&str> = domain.split('.').collect();
    let tld_ok = labels
        .last()
        .is_some_and(|t| (2..=63).contains(&t.len()) && t.chars().all(|c| c.is_ascii_alphabetic()));
    s.len() <= 254
        && local_ok
        && labels.len() >= 2
        && tld_ok
        && labels[..labels.len() - 1].iter().all(|l| label(l))
}

fn valid_phone(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_digit() || " +().-".contains(c))
}

fn valid_secret(s: &str, min: usize, also_barred: fn(char) -> bool) -> bool {
    let n = s.chars().count();
    (min..=64).contains(&n) && !s.chars().any(|c| is_space(c) || c == '-' || also_barred(c))
}

fn valid_access_code(s: &str) -> bool {
    valid_secret(s, 6, |c| matches!(c, '\u{2010}'..='\u{2015}' | '\u{2212}'))
}

fn valid_fact(s: &str) -> bool {
    valid_secret(s, 4, |c| c == '\u{0130}')
}

fn valid_item(s: &str) -> bool {
    s.chars().count() <= MAX_ITEM_CHARS
        && !s.contains(['\n', '\r'])
        && s.chars().any(|c| !is_space(c))
}

/// A field that may be left out but, when present, is not `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A JSON number that is a whole number in `range` (JSON Schema counts
/// `24.0` as an integer too).
fn whole(n: &serde_json::Number, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    let whole = match n.as_i64() {
        Some(v) => v,
        None => {
            let v = n.as_f64()?;
            let (lo, hi) = (*range.start() as f64, *range.end() as f64);
            // In range and integral, so the conversion is exact.
            if v.fract() != 0.0 || !(lo..=hi).contains(&v) {
                return None;
            }
            v as i64
        }
    };
    range.contains(&whole).then_some(whole)
}

/// How the customer proves who they are before anything is decrypted:
/// one or more methods, each at most once. Empty (or left out): the
/// organisation's default method.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    /// A code emailed to the recipient when they open the link.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub email_code: Option<EmailCode>,
    /// A code the agent gives the customer another way (by phone).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub access_code: Option<AccessCode>,
    /// Something only the customer knows.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub known_fact: Option<KnownFact>,
}

/// No settings: the code goes to the message's address.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct EmailCode {}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AccessCode {
    /// The code, 6 to 64 characters without spaces or dashes. Left out, a
    /// code of 8 digits is generated and returned once, in the answer.
    #[serde(default, deserialize_with = "present")]
    #[schema(
        nullable = false,
        pattern = r"^[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\uFEFF\u2010-\u2015\u2212-]{6,64}$"
    )]
    pub code: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KnownFact {
    /// The answer, 4 to 64 characters without spaces or dashes, e.g. the
    /// last four digits of an account. Case does not matter.
    #[schema(
        pattern = r"^[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\uFEFF\u0130-]{4,64}$"
    )]
    pub answer: String,
}

/// A message to send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// The customer's email address (ASCII: letters, digits and `_+-` in up
    /// to three dot-separated parts before the `@`). It receives only the
    /// one-time link.
    #[schema(
        pattern = r"^[A-Za-z0-9_+-]{1,24}(\.[A-Za-z0-9_+-]{1,19}){0,2}@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$",
        max_length = 254,
        example = "customer@example.com"
    )]
    pub to: String,
    /// The text, shown once the customer verified. Required unless files
    /// are attached (multipart).
    #[serde(default, deserialize_with = "present")]
    #[schema(required = true, nullable = false, min_length = 1, max_length = 200000)]
    pub body: Option<String>,
    /// An internal title the customer never sees.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, max_length = 200)]
    pub title: Option<String>,
    /// A phone number to call the customer on (shown to staff only).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, pattern = r"^[0-9 +().-]{1,32}$")]
    pub phone: Option<String>,
    #[serde(default)]
    pub verify: Verification,
    /// Hours until the link stops working; the organisation's default when
    /// left out.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = i64, nullable = false, minimum = 1, maximum = 720)]
    pub expires_in_hours: Option<serde_json::Number>,
    /// Shred the message as soon as the customer has read it (otherwise it
    /// is kept until it expires).
    #[serde(default)]
    pub shred_after_pickup: bool,
    /// Let the customer answer securely; the organisation's default when
    /// left out.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub allow_reply: Option<bool>,
    /// Answer within a conversation: the id of one of its messages. The
    /// address must be the conversation's.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, format = Uuid)]
    pub conversation: Option<String>,
}

/// A document request to send: who, how they verify, what to upload.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    #[schema(
        pattern = r"^[A-Za-z0-9_+-]{1,24}(\.[A-Za-z0-9_+-]{1,19}){0,2}@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$",
        max_length = 254,
        example = "customer@example.com"
    )]
    pub to: String,
    /// Instructions, shown once the customer verified.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, max_length = 20000)]
    pub instructions: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, max_length = 200)]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, pattern = r"^[0-9 +().-]{1,32}$")]
    pub phone: Option<String>,
    #[serde(default)]
    pub verify: Verification,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = i64, nullable = false, minimum = 1, maximum = 720)]
    pub expires_in_hours: Option<serde_json::Number>,
    /// The documents asked for, one line each (e.g. "Photo ID").
    #[schema(min_items = 1, max_items = 10)]
    pub items: Vec<ItemName>,
    /// File kinds the upload accepts (the organisation must accept them);
    /// a kind named twice counts once.
    #[schema(min_items = 1)]
    pub accept: Vec<KindName>,
    /// The largest upload in MiB (at most the organisation's limit).
    #[schema(value_type = i64, minimum = 1, maximum = 10240)]
    pub max_mib: serde_json::Number,
}

/// One checklist line: not only spaces, at most 100 characters.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct ItemName(pub String);

impl utoipa::PartialSchema for ItemName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .max_length(Some(MAX_ITEM_CHARS))
            .pattern(Some(r"^[^\n\r]*[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\uFEFF][^\n\r]*$"))
            .into()
    }
}

impl ToSchema for ItemName {}

/// A file kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindName(pub FileKind);

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        FileKind::parse(&name)
            .map(KindName)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown file kind {name:?}")))
    }
}

impl utoipa::PartialSchema for KindName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .enum_values(Some(FileKind::ALL.iter().map(|k| k.as_str())))
            .into()
    }
}

impl ToSchema for KindName {}

/// What was sent.
#[derive(Serialize, ToSchema)]
pub struct Created {
    #[schema(format = Uuid)]
    pub id: String,
    /// `message` or `request`.
    pub kind: &'static str,
    /// When the link stops working (RFC 3339, UTC).
    pub expires_at: String,
    /// The generated access code, when one was asked for without a code:
    /// give it to the customer by phone. Shown only in this answer (and in
    /// a retry's, under the same `Idempotency-Key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_code: Option<String>,
}

/// The multipart form of a message with attachments: a `message` part
/// (JSON, as `NewMessage`; its `body` may be left out) and one `file` part
/// per attachment, each sealed into the vault as it streams in. Sending
/// `message` first lets a refusal come before the files are uploaded.
pub struct MessageWithFiles;

impl utoipa::PartialSchema for MessageWithFiles {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema};
        use utoipa::openapi::{RefOr, Type};
        let mut message = <NewMessage as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(o)) = &mut message {
            o.required.retain(|r| r != "body");
        }
        let file = ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream");
        ObjectBuilder::new()
            .property("message", message)
            .property(
                "file",
                ArrayBuilder::new()
                    .items(file)
                    .min_items(Some(1))
                    .description(Some(
                        "The attachments, one file part each (with a `filename`)",
                    )),
            )
            .required("message")
            .required("file")
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ))
            .into()
    }
}

impl ToSchema for MessageWithFiles {}

/// States in the document that the multipart form's `message` part is
/// JSON (the `encoding` of the request body, which the path macro cannot
/// spell).
pub fn declare_part_types(doc: &mut utoipa::openapi::OpenApi) {
    let content = doc
        .paths
        .paths
        .get_mut("/api/v1/messages")
        .and_then(|item| item.post.as_mut())
        .and_then(|op| op.request_body.as_mut())
        .and_then(|body| body.content.get_mut("multipart/form-data"));
    if let Some(content) = content {
        content.encoding.insert(
            "message".to_owned(),
            utoipa::openapi::encoding::EncodingBuilder::new()
                .content_type(Some("application/json"))
                .build(),
        );
    }
}

/// The organisation's refusal of something its settings do not allow.
fn not_offered(what: String) -> ApiError {
    ApiError(PageError::Conflict(what))
}

fn invalid(what: impl Into<String>) -> ApiError {
    ApiError(PageError::BadRequest(what.into()))
}

/// The form fields of a message or request, after the schema's rules;
/// the organisation's own rules give 409.
fn fields(
    settings: &Settings,
    to: &str,
    title: Option<&str>,
    phone: Option<&str>,
    verify: &Verification,
    hours: Option<&serde_json::Number>,
) -> Result<Fields, ApiError> {
    if !valid_address(to) {
        return Err(invalid(
            "`to` must be an email address like name@example.com (ASCII).",
        ));
    }
    if title.is_some_and(|t| t.chars().count() > 200) {
        return Err(invalid("`title` must be at most 200 characters."));
    }
    if phone.is_some_and(|p| !valid_phone(p)) {
        return Err(invalid(
            "`phone` may contain only digits, spaces and + ( ) . - (at most 32).",
        ));
    }
    let mut methods = Vec::new();
    let mut access_code = String::new();
    let mut known_fact = String::new();
    if verify.email_code.is_some() {
        methods.push(Method::EmailCode);
    }
    if let Some(a) = &verify.access_code {
        if let Some(code) = &a.code {
            if !valid_access_code(code) {
                return Err(invalid(
                    "`verify.access_code.code` must be 6 to 64 characters without spaces or dashes.",
                ));
            }
            code.clone_into(&mut access_code);
        }
        methods.push(Method::AccessCode);
    }
    if let Some(k) = &verify.known_fact {
        if !valid_fact(&k.answer) {
            return Err(invalid(
                "`verify.known_fact.answer` must be 4 to 64 characters without spaces or dashes.",
            ));
        }
        k.answer.clone_into(&mut known_fact);
        methods.push(Method::KnownFact);
    }
    if methods.is_empty() {
        // Left out or empty: the organisation's default, as on the
        // compose page (a code by email unless an admin chose otherwise).
        match settings.methods.first().copied() {
            Some(Method::KnownFact) | None => {
                return Err(not_offered(
                    "Your organisation's default verification needs an answer: name the methods in `verify`."
                        .to_owned(),
                ));
            }
            Some(m) => methods.push(m),
        }
    }
    if let Some(m) = methods.iter().find(|&&m| !settings.allows(m)) {
        return Err(not_offered(format!(
            "Your organisation does not offer the verification method `{}`.",
            m.as_str()
        )));
    }
    let hours = match hours {
        Some(n) => whole(n, i64::from(MIN_EXPIRY_HOURS)..=i64::from(MAX_EXPIRY_HOURS))
            .ok_or_else(|| invalid("`expires_in_hours` must be a whole number from 1 to 720."))?,
        None => i64::from(settings.default_expiry_hours),
    };
    Ok(Fields {
        recipient: to.to_owned(),
        phone: phone.unwrap_or_default().to_owned(),
        title: title.unwrap_or_default().to_owned(),
        body: String::new(),
        expiry_hours: hours.to_string(),
        methods: methods.iter().map(|m| m.as_str().to_owned()).collect(),
        access_code,
        known_fact,
        retention: "keep".to_owned(),
        allow_reply: false,
        conversation: String::new(),
    })
}

fn message_fields(settings: &Settings, m: &NewMessage) -> Result<Fields, ApiError> {
    let mut f = fields(
        settings,
        &m.to,
        m.title.as_deref(),
        m.phone.as_deref(),
        &m.verify,
        m.expires_in_hours.as_ref(),
    )?;
    if let Some(body) = &m.body {
        if body.is_empty() {
            return Err(invalid(
                "`body` must not be empty; leave it out to send only files.",
            ));
        }
        if body.chars().count() > MAX_BODY_CHARS {
            return Err(invalid(format!(
                "`body` is too long (at most {MAX_BODY_CHARS} characters); attach long documents as files."
            )));
        }
        body.clone_into(&mut f.body);
    }
    if let Some(c) = &m.conversation {
        if c.parse::<crate::ids::MessageId>().is_err() {
            return Err(invalid("`conversation` must be a message id (a UUID)."));
        }
        c.clone_into(&mut f.conversation);
    }
    f.retention = if m.shred_after_pickup {
        "shred"
    } else {
        "keep"
    }
    .to_owned();
    f.allow_reply = m.allow_reply.unwrap_or(settings.reply_default);
    Ok(f)
}

/// The answer for a sent message or request.
fn created(sent: &Sent, kind: &'static str, expires_at: i64) -> (u16, Vec<u8>) {
    let body = Created {
        id: sent.id.to_string(),
        kind,
        expires_at: format_time_rfc3339(expires_at),
        access_code: sent
            .generated
            .as_ref()
            .map(|c| c.expose_secret().to_owned()),
    };
    (201, serde_json::to_vec(&body).unwrap_or_default())
}

/// A stored or fresh answer as an HTTP response.
fn respond(status: u16, body: Vec<u8>, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED);
    let mut response = (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body.clone(),
    )
        .into_response();
    if let Ok(created) = serde_json::from_slice::<serde_json::Value>(&body)
        && let Some(id) = created.get("id").and_then(|v| v.as_str())
    {
        if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/messages/{id}")) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        if let Ok(mid) = id.parse() {
            response.extensions_mut().insert(Concerns(mid));
        }
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// The caller's `Idempotency-Key`, if any.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(IDEMPOTENCY_KEY) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|k| {
                !k.is_empty()
                    && k.len() <= crate::idempotency::MAX_KEY_LEN
                    && k.bytes().all(|b| (b' '..=b'~').contains(&b))
                    && !k.starts_with(' ')
                    && !k.ends_with(' ')
            })
            .map(|k| Some(k.to_owned()))
            .ok_or_else(|| {
                invalid("The Idempotency-Key must be 1 to 255 visible ASCII characters.")
            }),
    }
}

/// Runs `call` once per idempotency key: a retry gets the first answer.
/// Without a key it simply runs.
async fn once<F, Fut>(
    app: &App,
    caller: &Caller,
    key: Option<String>,
    request: &[u8],
    call: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Option<Claim>) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let Some(key) = key else {
        return call(None).await;
    };
    match app.idempotency.begin(caller.id(), &key, request).await? {
        Begun::Replay { status, body } => Ok(respond(status, body, true)),
        Begun::Run(claim) => {
            let _release = Release {
                app: app.clone(),
                claim: Some(claim.clone()),
            };
            call(Some(claim)).await
        }
    }
}

/// Releases a claim when its call is over, however it ended (an error, a
/// client gone mid-upload), so a retry runs at once. A claim whose answer
/// was stored is not released (`Idempotency::release` leaves it).
struct Release {
    app: App,
    claim: Option<Claim>,
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            let app = self.app.clone();
            tokio::spawn(async move {
                if let Err(e) = app.idempotency.release(claim).await {
                    tracing::warn!(error = %e, "could not release an idempotency key");
                }
            });
        }
    }
}

/// Send a message: JSON, or multipart with attachments.
///
/// The customer receives an email with only a one-time link; the content
/// is decrypted only after they verify. With an `Idempotency-Key`, a retry
/// within 24 hours gets the first answer and sends nothing again.
#[utoipa::path(
    post,
    path = "/api/v1/messages",
    tag = "messages",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the call safe to retry: the same key within 24 hours returns the first answer (spaces around it are not part of it, as in any HTTP header)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"),
    ),
    request_body(content(
        (NewMessage = "application/json"),
        (MessageWithFiles = "multipart/form-data"),
    )),
    security(("token" = ["messages:send"])),
    responses(
        (status = 201, description = "Sent: the link's email is queued", body = Created,
            headers(("Location" = String, description = "The message"))),
        (status = 400, description = "A value breaks the schema's rules, or the body is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `messages:send`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The conversation does not exist or is not the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The organisation's settings do not allow it (a method, the number of files), the conversation cannot be continued, or the Idempotency-Key is in use or was used for another request", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than the organisation's size limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither JSON nor multipart", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(app): State<App>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let (key, content_type) = creating(&caller, &request)?;
    let settings = app.settings.load().await?;
    if content_type.starts_with("multipart/form-data") {
        return create_multipart(&app, &caller, &settings, key, request).await;
    }
    if !is_json(&content_type) {
        return Err(ApiError(PageError::UnsupportedMedia(
            "Send the message as application/json, or as multipart/form-data with attachments."
                .to_owned(),
        )));
    }
    let bytes = read_json_body(request).await?;
    let message: NewMessage = parse_json(&bytes)?;
    let f = message_fields(&settings, &message)?;
    if f.body.is_empty() {
        return Err(invalid(
            "`body` is required (send files as multipart/form-data).",
        ));
    }
    let (app, caller, settings, f) = (&app, &caller, &settings, &f);
    once(app, caller, key, &bytes, |claim| async move {
        let (draft, checked) = match begin(app, &caller.acting(), settings, f).await? {
            Ok(ok) => ok,
            Err(errors) => return Err(refused(errors)),
        };
        let expires_at = checked.expires_at();
        let answer = move |s: &Sent| created(s, "message", expires_at);
        let done = claim.as_ref().map(|claim| Completion {
            claim,
            answer: &answer,
        });
        let sent = commit(app, &caller.acting(), draft, checked, 0, None, done).await?;
        let (status, body) = answer(&sent);
        Ok(respond(status, body, false))
    })
    .await
}

/// What every creating call checks first: the `messages:send` scope and
/// the `Idempotency-Key`; then its content type, lower-cased, for the
/// caller to choose a format by.
fn creating(caller: &Caller, request: &Request) -> Result<(Option<String>, String), ApiError> {
    caller.require(Scope::MessagesSend)?;
    let key = idempotency_key(request.headers())?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    Ok((key, content_type))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A JSON body's bytes, bounded (a message's text and settings).
async fn read_json_body(request: Request) -> Result<Bytes, ApiError> {
    const LIMIT: usize = MAX_BODY_CHARS * 4 + 64 * 1024;
    axum::body::to_bytes(request.into_body(), LIMIT)
        .await
        // Longer than any valid body (the text's `maxLength`): invalid
        // input, like any other value out of range.
        .map_err(|_| {
            invalid("The JSON body is too long; attach long documents as files (multipart).")
        })
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| invalid(format!("The JSON body is not valid: {e}")))
}

/// Refusals of the shared compose rules, after the schema's: a
/// conversation that cannot be continued, mostly.
fn refused(errors: Vec<String>) -> ApiError {
    not_offered(errors.join(" "))
}

/// The multipart form: `message` first, then `file` parts.
async fn create_multipart(
    app: &App,
    caller: &Caller,
    settings: &Settings,
    key: Option<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut multipart, declared_too_large) =
        open_multipart(request, app, settings.size_limit_bytes()).await?;
    if declared_too_large {
        crate::web::linger(multipart);
        return Err(too_large(settings));
    }
    let result = receive(app, caller, settings, key, &mut multipart).await;
    if result.is_err() {
        crate::web::linger(multipart);
    }
    result
}

fn too_large(settings: &Settings) -> ApiError {
    ApiError(PageError::TooLarge(format!(
        "The message and its attachments are larger than the limit of {} MiB. Nothing was sent or kept.",
        settings.size_limit_mib
    )))
}

async fn receive(
    app: &App,
    caller: &Caller,
    settings: &Settings,
    key: Option<String>,
    multipart: &mut Multipart,
) -> Result<Response, ApiError> {
    let who = caller.acting();
    let mut budget = Budget::default();
    // Parts may come in any order: files are sealed as they stream in,
    // into a draft that becomes visible only when everything is checked.
    let mut draft = app.vault.begin_message();
    draft.set_size_limit(settings.size_limit_bytes());
    let mut fields: Option<Fields> = None;
    let mut release: Option<Release> = None;
    let mut attachments = 0u32;
    while let Some(mut field) = multipart.next_field().await.map_err(|_| interrupted())? {
        budget.count()?;
        match field.name() {
            Some("message") if fields.is_none() => {
                // Longer than any valid `message` (the text's `maxLength`):
                // invalid input, as for a JSON body that long.
                let text = budget
                    .text(field, MAX_BODY_CHARS * 4 + 64 * 1024)
                    .await
                    .map_err(|e| match e {
                        PageError::TooLarge(_) => invalid(
                            "The `message` part is too long; attach long documents as files.",
                        ),
                        e => ApiError(e),
                    })?;
                let message: NewMessage = parse_json(text.as_bytes())?;
                let f = message_fields(settings, &message)?;
                if let Some(key) = &key {
                    match app
                        .idempotency
                        .begin(caller.id(), key, text.as_bytes())
                        .await?
                    {
                        Begun::Replay { status, body } => return Ok(respond(status, body, true)),
                        Begun::Run(claim) => {
                            release = Some(Release {
                                app: app.clone(),
                                claim: Some(claim),
                            });
                        }
                    }
                }
                fields = Some(f);
            }
            Some("message") => return Err(invalid("Send one `message` part.")),
            Some("file") => {
                let name = match upload_name(field.headers()) {
                    UploadName::Name(raw) => Some(clean_file_name(&raw)).filter(|n| !n.is_empty()),
                    // A part without a file name is a plain form value (a
                    // number, a word), not a file someone attached.
                    UploadName::None => {
                        return Err(invalid(
                            "Each `file` part must be a file: give it a `filename` in its Content-Disposition.",
                        ));
                    }
                    UploadName::Unreadable => {
                        return Err(invalid("The name of a file part could not be read."));
                    }
                };
                if attachments >= settings.max_attachments {
                    return Err(not_offered(format!(
                        "Attach at most {} files to one message (your organisation's limit).",
                        settings.max_attachments
                    )));
                }
                attachments += 1;
                let meta = PartMeta {
                    item: None,
                    file_name: Some(name.unwrap_or_else(|| format!("attachment-{attachments}"))),
                    content_type: field
                        .content_type()
                        .filter(|t| t.len() < 128)
                        .map(str::to_owned)
                        .or_else(|| Some("application/octet-stream".to_owned())),
                };
                let first = first_chunk(&mut field).await?;
                draft = seal_field(draft, PartKind::Attachment, meta, first, field)
                    .await
                    .map_err(|e| match e {
                        PageError::TooLarge(_) => too_large(settings),
                        e => ApiError(e),
                    })?;
            }
            other => {
                return Err(invalid(format!(
                    "Unexpected part {:?}: send a `message` part and `file` parts.",
                    other.unwrap_or_default()
                )));
            }
        }
    }
    let Some(f) = fields else {
        return Err(invalid("The form has no `message` part (JSON)."));
    };
    if attachments == 0 {
        return Err(invalid(
            "Attach at least one `file` part (or send the message as JSON).",
        ));
    }
    let checked = match prepare(app, &who, settings, &f).await? {
        Ok(c) => c,
        Err(errors) => return Err(refused(errors)),
    };
    if !f.body.is_empty() {
        draft = seal_text(draft, &f.body).await?;
    }
    let expires_at = checked.expires_at();
    let answer = move |s: &Sent| created(s, "message", expires_at);
    let claim = release.as_ref().and_then(|r| r.claim.as_ref());
    let done = claim.map(|claim| Completion {
        claim,
        answer: &answer,
    });
    let sent = commit(app, &who, draft, checked, attachments, None, done).await?;
    let (status, body) = answer(&sent);
    Ok(respond(status, body, false))
}

/// Ask a customer for documents.
///
/// They receive a link, verify, and upload the files into the staff inbox;
/// nothing they send is readable before it is sealed.
#[utoipa::path(
    post,
    path = "/api/v1/requests",
    tag = "messages",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the call safe to retry: the same key within 24 hours returns the first answer (spaces around it are not part of it, as in any HTTP header)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"),
    ),
    request_body = NewRequest,
    security(("token" = ["messages:send"])),
    responses(
        (status = 201, description = "Sent: the link's email is queued", body = Created,
            headers(("Location" = String, description = "The request, as a message"))),
        (status = 400, description = "A value breaks the schema's rules, or the body is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks `messages:send`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The organisation's settings do not allow it (a method, a file kind, the size), or the Idempotency-Key is in use or was used for another request", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_request(
    State(app): State<App>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let (key, content_type) = creating(&caller, &request)?;
    if !is_json(&content_type) {
        return Err(ApiError(PageError::UnsupportedMedia(
            "Send the request as application/json.".to_owned(),
        )));
    }
    let settings = app.settings.load().await?;
    let bytes = read_json_body(request).await?;
    let r: NewRequest = parse_json(&bytes)?;
    let mut f = fields(
        &settings,
        &r.to,
        r.title.as_deref(),
        r.phone.as_deref(),
        &r.verify,
        r.expires_in_hours.as_ref(),
    )?;
    let instructions = r.instructions.as_deref().unwrap_or_default();
    if instructions.chars().count() > MAX_INSTRUCTIONS_CHARS {
        return Err(invalid(format!(
            "`instructions` is too long (at most {MAX_INSTRUCTIONS_CHARS} characters)."
        )));
    }
    instructions.clone_into(&mut f.body);
    if r.items.is_empty() || r.items.len() > MAX_ITEMS {
        return Err(invalid(format!(
            "`items` must name 1 to {MAX_ITEMS} documents."
        )));
    }
    if !r.items.iter().all(|i| valid_item(&i.0)) {
        return Err(invalid(format!(
            "Each of `items` must be one line of at most {MAX_ITEM_CHARS} characters, not only spaces."
        )));
    }
    if r.accept.is_empty() {
        return Err(invalid("`accept` must name at least one file kind."));
    }
    let mut kinds: Vec<FileKind> = Vec::new();
    for k in &r.accept {
        if !kinds.contains(&k.0) {
            kinds.push(k.0);
        }
    }
    if let Some(k) = kinds.iter().find(|k| !settings.accepted_kinds.contains(k)) {
        return Err(not_offered(format!(
            "Your organisation does not accept {} files.",
            k.label()
        )));
    }
    let max_mib = whole(
        &r.max_mib,
        1..=i64::try_from(crate::settings::MAX_SIZE_LIMIT_MIB).unwrap_or(i64::MAX),
    )
    .ok_or_else(|| invalid("`max_mib` must be a whole number from 1 to 10240."))?;
    if u64::try_from(max_mib).unwrap_or(u64::MAX) > settings.size_limit_mib {
        return Err(not_offered(format!(
            "`max_mib` is above your organisation's limit of {} MiB.",
            settings.size_limit_mib
        )));
    }
    let a = Asking {
        items: r
            .items
            .iter()
            .map(|i| i.0.trim())
            .collect::<Vec<_>>()
            .join("\n"),
        kinds: kinds.iter().map(|k| k.as_str().to_owned()).collect(),
        max_mib: max_mib.to_string(),
    };
    let expires_at = app.clock.now()
        + f.expiry_hours
            .parse::<i64>()
            .unwrap_or(i64::from(MIN_EXPIRY_HOURS))
            * 3600;
    let (app, caller, settings, f, a) = (&app, &caller, &settings, &f, &a);
    once(app, caller, key, &bytes, |claim| async move {
        let answer = move |s: &Sent| created(s, "request", expires_at);
        let done = claim.as_ref().map(|claim| Completion {
            claim,
            answer: &answer,
        });
        let sent = match send_request(app, &caller.acting(), settings, f, a, done).await? {
            Ok(sent) => sent,
            Err(errors) => return Err(refused(errors)),
        };
        let (status, body) = answer(&sent);
        Ok(respond(status, body, false))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checks_agree_with_their_patterns_on_examples() {
        for ok in ["a@b.co", "first.last+tag@mail.example.org", "x@a-b.cd"] {
            assert!(valid_address(ok), "{ok}");
        }
        for bad in [
            "a@b",
            "@b.co",
            "a@.b.co",
            "a@b..co",
            "a b@c.de",
            "a@b.co\n",
            "ü@b.co",
            ".a@b.co",
            "a..b@c.de",
            "a@-b.co",
            "a@b.c0",
            "a@b.c",
        ] {
            assert!(!valid_address(bad), "{bad:?}");
        }
        assert!(valid_phone("+49 (30) 123-45.6"));
        assert!(!valid_phone("") && !valid_phone("12a"));
        assert!(valid_access_code("Abc123") && valid_access_code("12345678"));
        for bad in [
            "12345",
            "1234-5678",
            "12 345678",
            "123456\u{2013}",
            "abcdef\u{feff}",
        ] {
            assert!(!valid_access_code(bad), "{bad:?}");
        }
        assert!(valid_fact("1234") && valid_fact("Müller"));
        assert!(!valid_fact("12 34") && !valid_fact("İİİİ") && !valid_fact("123"));
        assert!(valid_item("Photo ID") && valid_item(" x "));
        assert!(!valid_item("   ") && !valid_item("a\nb") && !valid_item("\u{feff}"));
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        let n = |s: &str| serde_json::from_str::<serde_json::Number>(s).expect("number");
        assert_eq!(whole(&n("24"), 1..=720), Some(24));
        assert_eq!(whole(&n("24.0"), 1..=720), Some(24));
        assert_eq!(whole(&n("24.5"), 1..=720), None);
        assert_eq!(whole(&n("0"), 1..=720), None);
        assert_eq!(whole(&n("1e300"), 1..=720), None);
    }

    #[test]
    fn null_is_not_leaving_a_field_out() {
        let m: Result<NewMessage, _> =
            serde_json::from_str(r#"{"to":"a@b.co","body":null,"verify":{"email_code":{}}}"#);
        assert!(m.is_err());
        let v: Result<Verification, _> = serde_json::from_str(r#"{"email_code":null}"#);
        assert!(v.is_err());
    }
}
