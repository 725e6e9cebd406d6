//! The pages of the first-run setup link and staff invitations (the links
//! themselves: `staff::links`).

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tower_sessions::Session;

use crate::app::App;
use crate::staff::StaffEmail;
use crate::staff::links::LinkToken;
use crate::staff::password::{NewPassword, PasswordRejected};
use crate::web::client_ip::{ClientIp, Loopback};
use crate::web::csrf::{self, CsrfForm};
use crate::web::{Nav, PageError, PageResult};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/setup/{token}", get(setup_page).post(setup))
        .route("/invite/{token}", get(invite_page).post(accept_invite))
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/setup_invalid.html")]
struct InvalidLinkPage {
    nav: Option<Nav>,
}

/// The same page for unknown, used, expired and refused links, so a
/// visitor learns nothing about which it was.
fn invalid_link() -> Response {
    (StatusCode::NOT_FOUND, InvalidLinkPage { nav: None }).into_response()
}

fn password_error(e: PasswordRejected) -> String {
    let text = e.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => text,
    }
}

/// Checks the two password fields; the message says what to fix.
fn check_password(
    password: &SecretString,
    repeat: &SecretString,
    email: &str,
) -> Result<NewPassword, String> {
    if password.expose_secret() != repeat.expose_secret() {
        return Err("The two passwords do not match. Type the same password twice.".to_owned());
    }
    NewPassword::parse(password.clone(), email).map_err(password_error)
}

// --- first-run setup -----------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "portal/setup.html")]
struct SetupPage {
    nav: Option<Nav>,
    csrf: String,
    token: String,
    email: String,
    errors: Vec<String>,
}

/// The setup link's token, if this client may use it right now. The setup
/// page answers only on the machine Sealpost runs on (or through an SSH
/// tunnel to it), never through a proxy, so a leaked console line is not
/// enough on its own (see [`Loopback`]).
async fn setup_token(
    app: &App,
    Loopback(local): Loopback,
    token: &str,
) -> Result<Option<LinkToken>, PageError> {
    let Some(token) = LinkToken::parse(token) else {
        return Ok(None);
    };
    let usable = local && app.links.setup_usable(&token).await?;
    Ok(usable.then_some(token))
}

pub async fn setup_page(
    State(app): State<App>,
    session: Session,
    local: Loopback,
    Path(token): Path<String>,
) -> PageResult {
    let Some(token) = setup_token(&app, local, &token).await? else {
        return Ok(invalid_link());
    };
    Ok(SetupPage {
        nav: None,
        csrf: csrf::token(&session).await?,
        token: token.encode().expose_secret().to_owned(),
        email: String::new(),
        errors: Vec::new(),
    }
    .into_response())
}

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    email: String,
    password: SecretString,
    password_repeat: SecretString,
}

pub async fn setup(
    State(app): State<App>,
    session: Session,
    ClientIp(ip): ClientIp,
    local: Loopback,
    Path(token): Path<String>,
    CsrfForm(form): CsrfForm<SetupForm>,
) -> PageResult {
    let Some(token) = setup_token(&app, local, &token).await? else {
        return Ok(invalid_link());
    };
    // Mistakes in the form do not use up the link.
    let checked = match StaffEmail::parse(&form.email) {
        Err(_) => Err("Enter your email address, like name@example.com.".to_owned()),
        Ok(email) if email.is_service_address() => {
            Err("Enter your own email address; service.invalid is not one.".to_owned())
        }
        Ok(email) => check_password(&form.password, &form.password_repeat, email.as_str())
            .map(|p| (email, p)),
    };
    let (email, new_password) = match checked {
        Ok(ok) => ok,
        Err(error) => {
            let page = SetupPage {
                nav: None,
                csrf: csrf::token(&session).await?,
                token: token.encode().expose_secret().to_owned(),
                email: form.email.trim().to_owned(),
                errors: vec![error],
            };
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    if !app
        .links
        .complete_setup(&token, &email, new_password, ip)
        .await?
    {
        return Ok(invalid_link());
    }
    Ok(Redirect::to("/sign-in?reason=password-set").into_response())
}

// --- invitations -----------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "portal/setup_invite.html")]
struct InvitePage {
    nav: Option<Nav>,
    csrf: String,
    token: String,
    email: String,
    errors: Vec<String>,
}

pub async fn invite_page(
    State(app): State<App>,
    session: Session,
    Path(token): Path<String>,
) -> PageResult {
    let Some(token) = LinkToken::parse(&token) else {
        return Ok(invalid_link());
    };
    let Some((_, email)) = app.links.invited_account(&token).await? else {
        return Ok(invalid_link());
    };
    Ok(InvitePage {
        nav: None,
        csrf: csrf::token(&session).await?,
        token: token.encode().expose_secret().to_owned(),
        email: email.as_str().to_owned(),
        errors: Vec::new(),
    }
    .into_response())
}

#[derive(Deserialize)]
pub struct InviteForm {
    password: SecretString,
    password_repeat: SecretString,
}

pub async fn accept_invite(
    State(app): State<App>,
    session: Session,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
    CsrfForm(form): CsrfForm<InviteForm>,
) -> PageResult {
    let Some(token) = LinkToken::parse(&token) else {
        return Ok(invalid_link());
    };
    let Some((id, email)) = app.links.invited_account(&token).await? else {
        return Ok(invalid_link());
    };
    // Checked before the claim so a rejected password does not use up the link.
    if let Err(error) = check_password(&form.password, &form.password_repeat, email.as_str()) {
        let page = InvitePage {
            nav: None,
            csrf: csrf::token(&session).await?,
            token: token.encode().expose_secret().to_owned(),
            email: email.as_str().to_owned(),
            errors: vec![error],
        };
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    if !app
        .links
        .accept_invite(&token, id, &email, form.password, ip)
        .await?
    {
        return Ok(invalid_link());
    }
    Ok(Redirect::to("/sign-in?reason=password-set").into_response())
}
