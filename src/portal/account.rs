//! The signed-in user's own security: TOTP enrolment and recovery codes.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::auth::{CurrentStaff, Enrolling};
use crate::app::App;
use crate::web::csrf::CsrfForm;
use crate::web::{Nav, PageError, PageResult};

/// The sealed seed being enrolled lives in the (server-side) session
/// until a code confirms it.
const ENROL_KEY: &str = "totp_enrolment";

fn totp_err(e: crate::staff::totp::TotpError) -> PageError {
    PageError::Internal(e.to_string())
}

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
}

#[derive(Deserialize, Default)]
pub struct AccountQuery {
    #[serde(default)]
    saved: Option<u8>,
}

pub async fn page(
    State(app): State<App>,
    staff: CurrentStaff,
    axum::extract::Query(q): axum::extract::Query<AccountQuery>,
) -> PageResult {
    let alerts = app
        .accounts
        .pickup_alerts(staff.id())
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?;
    let codes_left = app
        .totp
        .recovery_codes_left(staff.id())
        .await
        .map_err(totp_err)?;
    Ok(AccountPage {
        nav: staff.nav(),
        email: staff.account.email.as_str().to_owned(),
        role: staff.account.role.as_str(),
        totp_enabled: staff.totp_enabled,
        codes_left,
        alerts,
        csrf: staff.csrf.clone(),
        saved: q.saved == Some(1),
    }
    .into_response())
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
    error: Option<&'static str>,
}

pub async fn enrol_page(State(app): State<App>, Enrolling(staff): Enrolling) -> PageResult {
    render_enrolment(&app, &staff, None, StatusCode::OK).await
}

async fn render_enrolment(
    app: &App,
    staff: &CurrentStaff,
    error: Option<&'static str>,
    status: StatusCode,
) -> PageResult {
    let settings = app.settings.load().await?;
    let organisation = settings.organisation.replace(':', " ");
    let enrolment = app
        .totp
        .begin(&organisation, staff.account.email.as_str())
        .map_err(totp_err)?;
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
    let sealed = hex::decode(sealed).map_err(|_| PageError::Internal("bad enrolment".into()))?;
    let codes = app
        .totp
        .confirm(staff.id(), &sealed, &form.code, Some(staff.ip))
        .await
        .map_err(totp_err)?;
    match codes {
        Some(codes) => Ok(RecoveryCodesPage {
            nav: staff.nav(),
            codes: codes.iter().map(|c| c.expose_secret().to_owned()).collect(),
        }
        .into_response()),
        None => render_enrolment(
            &app,
            &staff,
            Some(
                "That code did not match. Scan the new QR code below and enter the code it shows.",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await,
    }
}

#[derive(Deserialize)]
pub struct AlertsForm {
    #[serde(default)]
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
        .map_err(|e| PageError::Internal(e.to_string()))?;
    Ok(Redirect::to("/account?saved=1").into_response())
}
