//! Staff sign-in (password, then TOTP when enrolled), sign-out, and the
//! extractor every staff page uses to check its session.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::app::App;
use crate::audit::{Action, Actor, Event};
use crate::staff::totp::Check;
use crate::staff::{AccountState, Role, StaffAccount, StaffError, StaffId};
use crate::web::client_ip::ClientIp;
use crate::web::csrf::{self, CsrfForm};
use crate::web::session::{ABSOLUTE_SECS, IDLE_SECS};
use crate::web::{Nav, PageError, PageResult};

const STAFF_KEY: &str = "staff";
const PENDING_KEY: &str = "pending_second_factor";
/// How long a password-verified sign-in waits for its TOTP code. How many
/// codes it may try is counted per account in the database (see
/// `staff::totp`), not here: a session counter loses updates under
/// parallel requests and starts over with every password sign-in.
const PENDING_SECS: i64 = 5 * 60;
/// Activity is written back at most this often (each write is a DB save).
const TOUCH_EVERY_SECS: i64 = 60;

#[derive(Serialize, Deserialize)]
struct StaffSession {
    id: String,
    epoch: i64,
    signed_in_at: i64,
    last_seen: i64,
}

#[derive(Serialize, Deserialize)]
struct PendingSecondFactor {
    id: String,
    epoch: i64,
    at: i64,
}

/// A signed-in staff member whose session passed every check.
pub struct CurrentStaff {
    pub account: StaffAccount,
    pub totp_enabled: bool,
    pub csrf: String,
    pub session: Session,
    pub ip: std::net::IpAddr,
}

impl CurrentStaff {
    pub fn id(&self) -> StaffId {
        self.account.id
    }

    pub fn is_admin(&self) -> bool {
        self.account.role == Role::Admin
    }

    pub fn actor(&self) -> Actor {
        Actor::Staff(self.account.id.to_string())
    }

    /// Who acts, as the shared flows see it.
    pub fn acting(&self) -> crate::flows::Acting {
        crate::flows::Acting {
            staff: self.id(),
            sees_all: self.is_admin(),
            ip: self.ip,
        }
    }

    pub fn nav(&self) -> Option<Nav> {
        Some(Nav {
            email: self.account.email.as_str().to_owned(),
            admin: self.is_admin(),
            csrf: self.csrf.clone(),
        })
    }
}

/// Like [`CurrentStaff`] but also admits staff who still have to enrol in
/// TOTP when it is mandatory (the enrolment page itself).
pub struct Enrolling(pub CurrentStaff);

/// An admin; anyone else gets 404 (admin pages do not announce themselves).
pub struct Admin(pub CurrentStaff);

impl FromRequestParts<App> for CurrentStaff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        authenticate(parts, app, true).await
    }
}

impl FromRequestParts<App> for Enrolling {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        authenticate(parts, app, false).await.map(Enrolling)
    }
}

impl FromRequestParts<App> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let staff = authenticate(parts, app, true).await?;
        if staff.is_admin() {
            Ok(Admin(staff))
        } else {
            Err(PageError::NotFound.into_response())
        }
    }
}

fn to_sign_in(reason: &str) -> Response {
    Redirect::to(&format!("/sign-in?reason={reason}")).into_response()
}

async fn authenticate(
    parts: &mut Parts,
    app: &App,
    enforce_totp: bool,
) -> Result<CurrentStaff, Response> {
    match checked_session(parts, app, enforce_totp).await {
        Ok(checked) => checked,
        Err(e) => Err(e.into_response()),
    }
}

/// The session's staff member, or where to send the browser instead
/// (`Ok(Err(redirect))`); `Err` when checking failed.
async fn checked_session(
    parts: &mut Parts,
    app: &App,
    enforce_totp: bool,
) -> Result<Result<CurrentStaff, Response>, PageError> {
    let session = Session::from_request_parts(parts, app)
        .await
        .map_err(|(_, m)| PageError::bug(m))?;
    let Some(mut s) = session.get::<StaffSession>(STAFF_KEY).await? else {
        return Ok(Err(to_sign_in("signed-out")));
    };
    let now = app.clock.now();
    if now - s.last_seen > IDLE_SECS || now - s.signed_in_at > ABSOLUTE_SECS {
        session.flush().await?;
        return Ok(Err(to_sign_in("expired")));
    }
    let state = match StaffId::parse(&s.id) {
        Some(id) => app.accounts.state(id).await?,
        None => None,
    };
    // Disabled, password or TOTP reset since this session began: it ends.
    let Some(AccountState {
        account,
        totp_enabled,
        ..
    }) = state.filter(|st| {
        !st.account.disabled && !st.account.is_service() && st.session_epoch == s.epoch
    })
    else {
        session.flush().await?;
        return Ok(Err(to_sign_in("ended")));
    };
    if enforce_totp && !totp_enabled {
        let settings = app.settings.load().await?;
        if settings.totp_required {
            return Ok(Err(Redirect::to("/account/totp").into_response()));
        }
    }
    if now - s.last_seen >= TOUCH_EVERY_SECS {
        s.last_seen = now;
        session.insert(STAFF_KEY, &s).await?;
    }
    let csrf = csrf::token(&session).await?;
    let ip = ClientIp::from_request_parts(parts, app)
        .await
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0);
    Ok(Ok(CurrentStaff {
        account,
        totp_enabled,
        csrf,
        session,
        ip,
    }))
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/sign_in.html")]
struct SignInPage {
    nav: Option<Nav>,
    csrf: String,
    email: String,
    error: Option<String>,
    notice: Option<&'static str>,
}

#[derive(Deserialize)]
pub struct SignInQuery {
    reason: Option<String>,
}

pub async fn sign_in_page(session: Session, Query(q): Query<SignInQuery>) -> PageResult {
    let notice = match q.reason.as_deref() {
        Some("expired") => Some("Your session timed out. Please sign in again."),
        Some("ended") => Some("Your session has ended. Please sign in again."),
        Some("signed-out") => Some("Please sign in to continue."),
        Some("bye") => Some("You are signed out."),
        Some("password-set") => Some("Your password is set. You can sign in now."),
        _ => None,
    };
    Ok(SignInPage {
        nav: None,
        csrf: csrf::token(&session).await?,
        email: String::new(),
        error: None,
        notice,
    }
    .into_response())
}

#[derive(Deserialize)]
pub struct SignInForm {
    email: String,
    password: SecretString,
}

/// The device cookie's name ([`crate::staff::SignIn::device_token`]).
fn device_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-sealpost-device"
    } else {
        "sealpost-device"
    }
}

/// A device cookie lasts 90 days; each sign-in renews it.
const DEVICE_COOKIE_SECS: i64 = 90 * 24 * 3600;

fn device_cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// `response` with a fresh device cookie for `email` (HttpOnly, SameSite=Strict).
fn with_device_cookie(app: &App, email: &str, mut response: Response) -> Response {
    let https = app.config.is_https();
    let cookie = format!(
        "{}={}; Path=/; Max-Age={DEVICE_COOKIE_SECS}; HttpOnly; SameSite=Strict{}",
        device_cookie_name(https),
        app.sign_in.device_token(email),
        if https { "; Secure" } else { "" }
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&cookie) {
        response
            .headers_mut()
            .append(axum::http::header::SET_COOKIE, v);
    }
    response
}

pub async fn sign_in(
    State(app): State<App>,
    session: Session,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
    CsrfForm(form): CsrfForm<SignInForm>,
) -> PageResult {
    let device = device_cookie(&headers, device_cookie_name(app.config.is_https()));
    let (status, error) = match app
        .sign_in
        .authenticate_from(&form.email, form.password, ip, device.as_deref())
        .await
    {
        Ok(account) => {
            let next = start_session(&app, &session, account.id).await?;
            let to = Redirect::to(next).into_response();
            return Ok(with_device_cookie(&app, &form.email, to));
        }
        Err(StaffError::InvalidCredentials) => (
            StatusCode::UNAUTHORIZED,
            "The address or password is not right. Check both and try again.".to_owned(),
        ),
        Err(StaffError::Throttled { retry_after_secs }) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed attempts. Please wait {} and try again.",
                wait_text(retry_after_secs)
            ),
        ),
        Err(e) => return Err(e.into()),
    };
    let page = SignInPage {
        nav: None,
        csrf: csrf::token(&session).await?,
        email: form.email.trim().to_owned(),
        error: Some(error),
        notice: None,
    };
    Ok((status, page).into_response())
}

/// After the password: a fresh session for `id`, signed in or waiting for
/// the second factor. Returns where the browser goes next.
async fn start_session(
    app: &App,
    session: &Session,
    id: StaffId,
) -> Result<&'static str, PageError> {
    let state = app
        .accounts
        .state(id)
        .await?
        .ok_or(PageError::bug("account vanished"))?;
    // A fresh id before anything is attached to the session defeats
    // session fixation.
    session.cycle_id().await?;
    session.remove_value(STAFF_KEY).await?;
    if state.totp_enabled {
        let pending = PendingSecondFactor {
            id: id.to_string(),
            epoch: state.session_epoch,
            at: app.clock.now(),
        };
        session.insert(PENDING_KEY, &pending).await?;
        return Ok("/sign-in/code");
    }
    complete(app, session, id, state.session_epoch).await?;
    Ok("/sent")
}

pub(super) fn wait_text(secs: i64) -> String {
    if secs < 90 {
        format!("{} seconds", secs.max(1))
    } else {
        format!("{} minutes", (secs + 59) / 60)
    }
}

/// Attaches the account to a freshly cycled session.
async fn complete(app: &App, session: &Session, id: StaffId, epoch: i64) -> Result<(), PageError> {
    session.cycle_id().await?;
    session.remove_value(PENDING_KEY).await?;
    let now = app.clock.now();
    session
        .insert(
            STAFF_KEY,
            &StaffSession {
                id: id.to_string(),
                epoch,
                signed_in_at: now,
                last_seen: now,
            },
        )
        .await?;
    csrf::renew(session).await?;
    Ok(())
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/second_factor.html")]
struct SecondFactorPage {
    nav: Option<Nav>,
    csrf: String,
    error: Option<String>,
}

async fn pending(app: &App, session: &Session) -> Result<Option<PendingSecondFactor>, PageError> {
    let p = session.get::<PendingSecondFactor>(PENDING_KEY).await?;
    Ok(p.filter(|p| app.clock.now() - p.at <= PENDING_SECS))
}

pub async fn second_factor_page(State(app): State<App>, session: Session) -> PageResult {
    if pending(&app, &session).await?.is_none() {
        return Ok(to_sign_in("signed-out"));
    }
    Ok(SecondFactorPage {
        nav: None,
        csrf: csrf::token(&session).await?,
        error: None,
    }
    .into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SecondFactorForm {
    code: String,
    recovery_code: String,
}

pub async fn second_factor(
    State(app): State<App>,
    session: Session,
    ClientIp(ip): ClientIp,
    CsrfForm(form): CsrfForm<SecondFactorForm>,
) -> PageResult {
    let Some(p) = pending(&app, &session).await? else {
        session.remove_value(PENDING_KEY).await?;
        return Ok(to_sign_in("expired"));
    };
    let id = StaffId::parse(&p.id).ok_or(PageError::bug("bad pending id"))?;
    let check = if !form.recovery_code.trim().is_empty() {
        app.totp
            .check_recovery_code(id, &form.recovery_code, Some(ip))
            .await
    } else {
        app.totp.check_code(id, &form.code).await
    }?;
    let (status, error) = match check {
        Check::Passed => {
            complete(&app, &session, id, p.epoch).await?;
            return Ok(Redirect::to("/sent").into_response());
        }
        Check::Failed => {
            let event = Event::new(Actor::Staff(p.id.clone()), Action::SignInFailed)
                .ip(ip)
                .detail(serde_json::json!({ "factor": "totp" }));
            app.audit.record_now(&event).await?;
            (
                StatusCode::UNAUTHORIZED,
                "That code is not right or was already used. Wait for the next code and try again."
                    .to_owned(),
            )
        }
        // Refused before any check: nothing to audit per request.
        Check::Throttled { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many wrong codes. Please wait {} and try again.",
                wait_text(retry_after_secs)
            ),
        ),
    };
    let page = SecondFactorPage {
        nav: None,
        csrf: csrf::token(&session).await?,
        error: Some(error),
    };
    Ok((status, page).into_response())
}

/// Keeps this session valid after its own security change (new TOTP seed,
/// new recovery codes) moved the account to `epoch`, which ends every other
/// session of the account.
pub(super) async fn keep_session(session: &Session, epoch: i64) -> Result<(), PageError> {
    if let Some(mut s) = session.get::<StaffSession>(STAFF_KEY).await? {
        s.epoch = epoch;
        session.insert(STAFF_KEY, &s).await?;
    }
    // A fresh id too: the old one was seen before the change.
    session.cycle_id().await?;
    Ok(())
}

#[derive(Deserialize)]
pub struct Empty {}

pub async fn sign_out(
    State(app): State<App>,
    session: Session,
    ClientIp(ip): ClientIp,
    CsrfForm(_): CsrfForm<Empty>,
) -> PageResult {
    if let Some(s) = session.get::<StaffSession>(STAFF_KEY).await? {
        let event = Event::new(Actor::Staff(s.id), Action::SignedOut).ip(ip);
        app.audit.record_now(&event).await?;
    }
    // Deletes the server-side record: the old cookie is worthless now.
    session.flush().await?;
    Ok(Redirect::to("/sign-in?reason=bye").into_response())
}
