//! The signed-in user's own security: TOTP enrolment and recovery codes.
//! Replacing a seed or the recovery codes first asks for the current
//! password or a current code (a session left open is not enough) and
//! ends the account's other sessions; this one stays signed in.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::auth::{CurrentStaff, Enrolling, keep_session, wait_text};
use crate::app::App;
use crate::audit::{Action, Event};
use crate::staff::StaffError;
use crate::staff::totp::{Check, NewCodes};
use crate::web::csrf::CsrfForm;
use crate::web::{Nav, PageError, PageResult};

/// The sealed seed being enrolled lives in the (server-side) session
/// until a code confirms it.
const ENROL_KEY: &str = "totp_enrolment";

#[derive(Template, WebTemplate)]
#[template(path = "portal/account.html")]
struct AccountPage {
    nav: Option<Nav>,
    email: String,
    role: &'static str,
    totp_enabled: bool,
    codes_left: i64,
    alerts: bool,
    csrf: String,
    saved: bool,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct AccountQuery {
    saved: Option<u8>,
}

pub async fn page(
    State(app): State<App>,
    staff: CurrentStaff,
    axum::extract::Query(q): axum::extract::Query<AccountQuery>,
) -> PageResult {
    render_account(&app, &staff, q.saved == Some(1), None, StatusCode::OK).await
}

async fn render_account(
    app: &App,
    staff: &CurrentStaff,
    saved: bool,
    error: Option<String>,
    status: StatusCode,
) -> PageResult {
    let alerts = app
        .accounts
        .pickup_alerts(staff.id())
        .await
        .map_err(PageError::internal)?;
    let codes_left = app.totp.recovery_codes_left(staff.id()).await?;
    let page = AccountPage {
        nav: staff.nav(),
        email: staff.account.email.as_str().to_owned(),
        role: staff.account.role.as_str(),
        totp_enabled: staff.totp_enabled,
        codes_left,
        alerts,
        csrf: staff.csrf.clone(),
        saved,
        error,
    };
    Ok((status, page).into_response())
}

/// Proof of presence for a security change: the current password or, for
/// an account using TOTP, a current code.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Reauth {
    current_password: Option<SecretString>,
    current_code: String,
}

/// Why a security change was refused before it started.
enum Refused {
    /// Nothing given, or wrong: 401 with this text.
    Wrong(&'static str),
    /// Throttled: 429 with this text.
    Wait(String),
}

impl Refused {
    fn status_and_text(self) -> (StatusCode, String) {
        match self {
            Refused::Wrong(t) => (StatusCode::UNAUTHORIZED, t.to_owned()),
            Refused::Wait(t) => (StatusCode::TOO_MANY_REQUESTS, t),
        }
    }
}

/// Checks `proof` under the same limits as signing in (password throttles,
/// the TOTP allowance), so an open session cannot be used to guess either.
async fn reauthenticate(
    app: &App,
    staff: &CurrentStaff,
    proof: Reauth,
) -> Result<Result<(), Refused>, PageError> {
    let code = proof.current_code.trim();
    if staff.totp_enabled && !code.is_empty() {
        return Ok(match app.totp.check_code(staff.id(), code).await? {
            Check::Passed => Ok(()),
            Check::Failed => {
                let event = Event::new(staff.actor(), Action::SignInFailed)
                    .ip(staff.ip)
                    .detail(serde_json::json!({ "factor": "totp", "reauth": true }));
                app.audit.record_now(&event).await?;
                Err(Refused::Wrong(
                    "That code from your current authenticator app is not right. Try the next code, or enter your password.",
                ))
            }
            Check::Throttled { retry_after_secs } => Err(Refused::Wait(format!(
                "Too many wrong codes. Please wait {} and try again.",
                wait_text(retry_after_secs)
            ))),
        });
    }
    let Some(password) = proof
        .current_password
        .filter(|p| !p.expose_secret().is_empty())
    else {
        return Ok(Err(Refused::Wrong(
            "Enter your current password (or a code from your current authenticator app) to confirm it is you.",
        )));
    };
    match app
        .sign_in
        .reauthenticate(&staff.account, password, staff.ip)
        .await
    {
        Ok(true) => Ok(Ok(())),
        Ok(false) => Ok(Err(Refused::Wrong("Your current password is not right."))),
        Err(StaffError::Throttled { retry_after_secs }) => Ok(Err(Refused::Wait(format!(
            "Too many failed attempts. Please wait {} and try again.",
            wait_text(retry_after_secs)
        )))),
        Err(e) => Err(e.into()),
    }
}

/// Shows new recovery codes after keeping this session valid at the
/// account's new epoch.
async fn show_codes(staff: &CurrentStaff, new: NewCodes) -> PageResult {
    keep_session(&staff.session, new.session_epoch).await?;
    Ok(RecoveryCodesPage {
        nav: staff.nav(),
        codes: new
            .codes
            .iter()
            .map(|c| c.expose_secret().to_owned())
            .collect(),
    }
    .into_response())
}

/// New recovery codes (the old ones stop working).
pub async fn regenerate_codes(
    State(app): State<App>,
    staff: CurrentStaff,
    CsrfForm(proof): CsrfForm<Reauth>,
) -> PageResult {
    if let Err(refused) = reauthenticate(&app, &staff, proof).await? {
        let (status, text) = refused.status_and_text();
        return render_account(&app, &staff, false, Some(text), status).await;
    }
    match app
        .totp
        .regenerate_recovery_codes(staff.id(), Some(staff.ip))
        .await?
    {
        Some(new) => show_codes(&staff, new).await,
        None => Ok(Redirect::to("/account").into_response()),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/enrol.html")]
struct EnrolPage {
    nav: Option<Nav>,
    csrf: String,
    required: bool,
    already: bool,
    qr: String,
    secret: String,
    error: Option<String>,
}

pub async fn enrol_page(State(app): State<App>, Enrolling(staff): Enrolling) -> PageResult {
    render_enrolment(&app, &staff, None, StatusCode::OK).await
}

async fn render_enrolment(
    app: &App,
    staff: &CurrentStaff,
    error: Option<String>,
    status: StatusCode,
) -> PageResult {
    let settings = app.settings.load().await?;
    let organisation = settings.organisation.replace(':', " ");
    let enrolment = app
        .totp
        .begin(&organisation, staff.account.email.as_str())?;
    staff
        .session
        .insert(ENROL_KEY, hex::encode(&enrolment.sealed_seed))
        .await?;
    let page = EnrolPage {
        nav: staff.nav(),
        csrf: staff.csrf.clone(),
        required: settings.totp_required && !staff.totp_enabled,
        already: staff.totp_enabled,
        qr: enrolment.qr_data_uri,
        secret: enrolment.secret_base32.expose_secret().to_owned(),
        error,
    };
    Ok((status, page).into_response())
}

#[derive(Deserialize)]
pub struct EnrolForm {
    code: String,
    /// Required when a seed is already enrolled (replacing it).
    current_password: Option<SecretString>,
    #[serde(default)]
    current_code: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/recovery_codes.html")]
struct RecoveryCodesPage {
    nav: Option<Nav>,
    codes: Vec<String>,
}

pub async fn enrol(
    State(app): State<App>,
    Enrolling(staff): Enrolling,
    CsrfForm(form): CsrfForm<EnrolForm>,
) -> PageResult {
    let Some(sealed) = staff.session.remove::<String>(ENROL_KEY).await? else {
        return Ok(Redirect::to("/account/totp").into_response());
    };
    let sealed = hex::decode(sealed).map_err(|_| PageError::bug("bad enrolment"))?;
    // Replacing a seed: whoever holds this session must show it is them.
    if staff.totp_enabled
        && let Err(refused) = reauthenticate(
            &app,
            &staff,
            Reauth {
                current_password: form.current_password,
                current_code: form.current_code,
            },
        )
        .await?
    {
        let (status, text) = refused.status_and_text();
        return render_enrolment(&app, &staff, Some(text), status).await;
    }
    let confirmed = app
        .totp
        .confirm(staff.id(), &sealed, &form.code, Some(staff.ip))
        .await?;
    match confirmed {
        Some(new) => show_codes(&staff, new).await,
        None => render_enrolment(
            &app,
            &staff,
            Some(
                "That code did not match. Scan the new QR code below and enter the code it shows."
                    .to_owned(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await,
    }
}

#[derive(Deserialize)]
pub struct AlertsForm {
    pickup_alerts: Option<String>,
}

/// Opt in or out of the "your message was opened" email.
pub async fn set_alerts(
    State(app): State<App>,
    staff: CurrentStaff,
    CsrfForm(form): CsrfForm<AlertsForm>,
) -> PageResult {
    app.accounts
        .set_pickup_alerts(staff.id(), form.pickup_alerts.is_some())
        .await
        .map_err(PageError::internal)?;
    Ok(Redirect::to("/account?saved=1").into_response())
}
