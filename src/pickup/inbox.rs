//! The secure inbox (`/send`), when an administrator opened it: any
//! customer proves an email address with an emailed code, then writes a
//! note and uploads files, sealed on arrival into the shared staff inbox
//! (unclaimed until an agent takes it). Rate limits per client address,
//! per email address and a daily cap for everyone together keep it from
//! being free anonymous storage; GET never sends a code or stores a thing.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use super::receive::{
    FileFields, Form, ReceivingSlot, Refusal, failure_reason, read_upload, refused,
};
use super::{Brand, mask_address};
use crate::app::App;
use crate::audit::{Action, Actor, Event};
use crate::client_net::rate_key;
use crate::filetype::FileKind;
use crate::incoming::{Kind, NewItem};
use crate::mail::Mail;
use crate::settings::Settings;
use crate::staff::StaffEmail;
use crate::store::{inbox_codes, rate_limits};
use crate::vault::{MessageMeta, Purpose};
use crate::web::PageError;
use crate::web::client_ip::ClientIp;
use crate::web::csrf::{self, CsrfForm};

/// Codes emailed to one address per hour.
pub const CODES_PER_ADDRESS_HOUR: i64 = 3;
/// Codes requested from one client address per hour.
pub const CODES_PER_IP_HOUR: i64 = 10;
/// Code attempts from one client address per hour.
pub const VERIFY_PER_IP_HOUR: i64 = 30;
/// Wrong guesses that end a code.
const CODE_MAX_WRONG: i64 = 5;
const CODE_TTL_SECS: i64 = 10 * 60;
/// Uploads one verified address may send per day.
pub const UPLOADS_PER_ADDRESS_DAY: i64 = 5;
/// A verified session ends after this long without activity.
const IDLE_SECS: i64 = 30 * 60;
/// A note with the files, in characters.
const MAX_NOTE_CHARS: usize = 5_000;

const PENDING_KEY: &str = "inbox_pending";
const VERIFIED_KEY: &str = "inbox_verified";

/// The address being proved or proved, sealed (sessions are stored in the
/// database; the address is customer data).
#[derive(Serialize, Deserialize)]
struct Held {
    sealed: String,
    at: i64,
}

impl Held {
    fn seal(app: &App, address: &str, at: i64) -> Result<Held, PageError> {
        let sealed = app
            .vault
            .seal_secret(Purpose::InboxAddress, address.as_bytes())?;
        Ok(Held {
            sealed: hex::encode(sealed),
            at,
        })
    }

    fn open(&self, app: &App) -> Result<SecretString, PageError> {
        let bytes = hex::decode(&self.sealed).map_err(|_| PageError::bug("bad sealed address"))?;
        let plain = app.vault.open_secret(Purpose::InboxAddress, &bytes)?;
        String::from_utf8(plain.to_vec())
            .map(SecretString::from)
            .map_err(|_| PageError::bug("bad sealed address"))
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pickup/send.html")]
struct SendPage {
    brand: Brand,
    csrf: String,
    /// What the page asks for: "address", "code" or "upload".
    step: &'static str,
    masked: String,
    errors: Vec<String>,
    sent: bool,
    limit_mib: u64,
    max_files: u32,
    accepted: String,
    accept_attr: String,
}

impl SendPage {
    async fn new(
        app: &App,
        session: &Session,
        settings: &Settings,
        step: &'static str,
        masked: String,
        errors: Vec<String>,
    ) -> Result<SendPage, PageError> {
        Ok(SendPage {
            brand: Brand::load(app).await,
            csrf: csrf::token(session).await?,
            step,
            masked,
            errors,
            sent: false,
            limit_mib: settings.size_limit_mib,
            max_files: settings.max_attachments,
            accepted: FileKind::labels(&settings.accepted_kinds),
            accept_attr: FileKind::accept_all(&settings.accepted_kinds),
        })
    }
}

/// The settings, if the inbox is open; a closed inbox does not exist.
async fn open_inbox(app: &App) -> Result<Settings, PageError> {
    let (settings, _) = app.settings.cached().await?;
    if settings.secure_inbox {
        Ok(settings)
    } else {
        Err(PageError::NotFound)
    }
}

/// The verified address of this session, if it is fresh (and touched).
async fn verified(app: &App, session: &Session) -> Result<Option<SecretString>, PageError> {
    let Some(mut held) = session.get::<Held>(VERIFIED_KEY).await? else {
        return Ok(None);
    };
    let now = app.clock.now();
    if now - held.at > IDLE_SECS {
        session.remove_value(VERIFIED_KEY).await?;
        return Ok(None);
    }
    if now - held.at >= 60 {
        held.at = now;
        session.insert(VERIFIED_KEY, &held).await?;
    }
    Ok(Some(held.open(app)?))
}

#[derive(Deserialize, Default)]
pub struct SendParams {
    sent: Option<u8>,
}

/// `GET /send`: the step this visitor is at. Reads only.
pub async fn page(
    State(app): State<App>,
    session: Session,
    Query(params): Query<SendParams>,
) -> Result<Response, PageError> {
    let settings = open_inbox(&app).await?;
    let (step, masked) = if let Some(address) = verified(&app, &session).await? {
        ("upload", mask_address(address.expose_secret()))
    } else if let Some(held) = session.get::<Held>(PENDING_KEY).await? {
        ("code", mask_address(held.open(&app)?.expose_secret()))
    } else {
        ("address", String::new())
    };
    let mut page = SendPage::new(&app, &session, &settings, step, masked, Vec::new()).await?;
    page.sent = params.sent == Some(1) && step == "upload";
    Ok(page.into_response())
}

#[derive(Deserialize)]
pub struct AddressForm {
    email: String,
}

fn ip_key(app: &App, what: Purpose, ip: std::net::IpAddr) -> Vec<u8> {
    app.vault.keyed_hash(what, rate_key(ip).as_bytes())
}

fn code_hash(app: &App, index: &[u8], code: &str) -> Vec<u8> {
    let mut input = hex::encode(index).into_bytes();
    input.push(0);
    input.extend_from_slice(code.trim().as_bytes());
    app.vault.keyed_hash(Purpose::InboxCode, &input)
}

/// `POST /send/code`: emails a code to the address, within the limits per
/// address and per client address.
pub async fn send_code(
    State(app): State<App>,
    session: Session,
    ClientIp(ip): ClientIp,
    CsrfForm(form): CsrfForm<AddressForm>,
) -> Result<Response, PageError> {
    let settings = open_inbox(&app).await?;
    let address = form.email.trim().to_owned();
    if StaffEmail::parse(&address).is_err() || address.len() > 254 {
        let e = "Enter your email address, like name@example.com.".to_owned();
        let page =
            SendPage::new(&app, &session, &settings, "address", String::new(), vec![e]).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let index = app.vault.recipient_index(&address);
    let now = app.clock.now();
    let mut tx = app.db.begin().await?;
    let per_address = rate_limits::hit(
        &mut tx,
        &app.vault.keyed_hash(Purpose::InboxCodesPerAddress, &index),
        now,
        3600,
        CODES_PER_ADDRESS_HOUR,
    )
    .await?;
    let per_ip = rate_limits::hit(
        &mut tx,
        &ip_key(&app, Purpose::InboxCodesPerIp, ip),
        now,
        3600,
        CODES_PER_IP_HOUR,
    )
    .await?;
    if !(per_address && per_ip) {
        // The refused attempt still counts against the windows.
        tx.commit().await?;
        return Err(PageError::TooMany(
            "Too many codes were requested. Use the last code you received, or try again in an hour."
                .to_owned(),
        ));
    }
    let code = SecretString::from(format!("{:06}", rand::rng().random_range(0..1_000_000u32)));
    inbox_codes::insert(
        &mut tx,
        &inbox_codes::NewCode {
            id: &uuid::Uuid::new_v4().to_string(),
            address_index: &index,
            code_hash: &code_hash(&app, &index, code.expose_secret()),
            created_at: now,
            expires_at: now + CODE_TTL_SECS,
        },
    )
    .await?;
    app.outbox
        .enqueue(
            &mut tx,
            &address,
            &Mail::VerificationCode {
                code: code.expose_secret().to_owned(),
                expires_at: now + CODE_TTL_SECS,
            },
            None,
        )
        .await?;
    let event = Event::new(Actor::Anonymous, Action::InboxCodeSent).ip(ip);
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    app.metrics.code_sent();
    session.remove_value(VERIFIED_KEY).await?;
    session
        .insert(PENDING_KEY, Held::seal(&app, &address, now)?)
        .await?;
    Ok(Redirect::to("/send").into_response())
}

#[derive(Deserialize)]
pub struct CodeForm {
    code: String,
}

/// `POST /send/verify`: the code from the email proves the address.
pub async fn verify(
    State(app): State<App>,
    session: Session,
    ClientIp(ip): ClientIp,
    CsrfForm(form): CsrfForm<CodeForm>,
) -> Result<Response, PageError> {
    let settings = open_inbox(&app).await?;
    let Some(held) = session.get::<Held>(PENDING_KEY).await? else {
        return Ok(Redirect::to("/send").into_response());
    };
    let address = held.open(&app)?;
    let index = app.vault.recipient_index(address.expose_secret());
    let now = app.clock.now();
    {
        let mut tx = app.db.begin().await?;
        let allowed = rate_limits::hit(
            &mut tx,
            &ip_key(&app, Purpose::InboxVerifyPerIp, ip),
            now,
            3600,
            VERIFY_PER_IP_HOUR,
        )
        .await?;
        tx.commit().await?;
        if !allowed {
            return Err(PageError::TooMany(
                "Too many attempts. Try again in an hour.".to_owned(),
            ));
        }
    }
    let hash = code_hash(&app, &index, &form.code);
    let mut matched = None;
    for live in inbox_codes::live(&app.db, &index, now, CODE_MAX_WRONG).await? {
        if bool::from(live.code_hash.ct_eq(&hash)) {
            matched = Some(live.id);
        }
    }
    let mut tx = app.db.begin().await?;
    let ok = match &matched {
        Some(id) => inbox_codes::mark_used(&mut tx, id, now).await?,
        None => false,
    };
    if !ok {
        inbox_codes::count_wrong(&mut tx, &index, now).await?;
        tx.commit().await?;
        app.metrics.verification(false);
        let e =
            "That code is not right or has expired. Check the latest email, or ask for a new code."
                .to_owned();
        let masked = mask_address(address.expose_secret());
        let page = SendPage::new(&app, &session, &settings, "code", masked, vec![e]).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let event = Event::new(Actor::Customer, Action::InboxVerified).ip(ip);
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    app.metrics.verification(true);
    // A new session id once the address is proved.
    session.cycle_id().await?;
    session.remove_value(PENDING_KEY).await?;
    session
        .insert(
            VERIFIED_KEY,
            Held::seal(&app, address.expose_secret(), now)?,
        )
        .await?;
    csrf::renew(&session).await?;
    Ok(Redirect::to("/send").into_response())
}

/// `POST /send/upload`: only in a session that proved its address; the
/// limits are counted before a byte is read.
pub async fn upload(
    State(app): State<App>,
    session: Session,
    ClientIp(ip): ClientIp,
    http: axum::extract::Request,
) -> Result<Response, PageError> {
    let settings = open_inbox(&app).await?;
    let Some(address) = verified(&app, &session).await? else {
        return Err(PageError::BadRequest(
            "Confirm your email address first: open the secure inbox page again.".to_owned(),
        ));
    };
    let index = app.vault.recipient_index(address.expose_secret());
    let Some(_slot) = ReceivingSlot::take_key(format!("inbox:{}", hex::encode(&index))) else {
        return Err(PageError::TooMany(
            "Your files are already being sent. Wait for it to finish.".to_owned(),
        ));
    };
    let now = app.clock.now();
    let mut tx = app.db.begin().await?;
    let per_address = rate_limits::hit(
        &mut tx,
        &app.vault
            .keyed_hash(Purpose::InboxUploadsPerAddress, &index),
        now,
        24 * 3600,
        UPLOADS_PER_ADDRESS_DAY,
    )
    .await?;
    // Checked only for an address within its own limit: one address
    // cannot use up everyone's day.
    let daily = per_address
        && rate_limits::hit(
            &mut tx,
            &app.vault.keyed_hash(Purpose::InboxDaily, b"all"),
            now,
            24 * 3600,
            i64::from(settings.inbox_daily_cap),
        )
        .await?;
    tx.commit().await?;
    if !daily {
        refused(&app, None, ip, "rate_limited", "inbox").await;
        return Err(PageError::TooMany(
            "We cannot take more uploads today. Please try again tomorrow, or contact us another way."
                .to_owned(),
        ));
    }
    let form = Form {
        noun: "upload",
        max_chars: MAX_NOTE_CHARS,
        files: FileFields::Files,
        kinds: settings.accepted_kinds.clone(),
        limit: settings.size_limit_bytes(),
        max_files: settings.max_attachments,
    };
    let (multipart, outcome) = read_upload(&app, &session, &form, http).await?;
    let outcome = outcome.map(|r| {
        r.and_then(|got| {
            if got.files == 0 {
                Err(Refusal::new("empty", "Choose at least one file to send."))
            } else {
                Ok(got)
            }
        })
    });
    match outcome {
        Ok(Ok(got)) => {
            let id = got.draft.id();
            let meta = MessageMeta {
                recipient_address: Some(address.expose_secret().to_owned()),
                ..MessageMeta::default()
            };
            let sealed = app.vault.seal(got.draft, &meta)?;
            let mut tx = app.db.begin().await?;
            app.vault.commit(&mut tx, sealed).await?;
            app.incoming
                .insert(
                    &mut tx,
                    &NewItem {
                        id,
                        kind: Kind::Inbox,
                        conversation_id: None,
                        in_reply_to: None,
                        owner: None,
                    },
                )
                .await?;
            let event = Event::new(Actor::Customer, Action::InboxReceived)
                .message(id)
                .ip(ip)
                .detail(serde_json::json!({ "files": got.files }));
            app.audit.record(&mut tx, &event).await?;
            tx.commit().await?;
            app.metrics.inbox_received();
            Ok(Redirect::to("/send?sent=1").into_response())
        }
        Ok(Err(refusal)) => {
            crate::web::linger(multipart);
            refused(&app, None, ip, refusal.reason, "inbox").await;
            let masked = mask_address(address.expose_secret());
            let page = SendPage::new(
                &app,
                &session,
                &settings,
                "upload",
                masked,
                vec![refusal.message],
            )
            .await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => {
            crate::web::linger(multipart);
            if let Some(reason) = failure_reason(&e) {
                refused(&app, None, ip, reason, "inbox").await;
            }
            Err(e)
        }
    }
}
