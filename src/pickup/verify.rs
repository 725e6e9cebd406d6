//! The landing page and the verification forms. The rules live in
//! [`super::flow`]; these handlers parse the request, call the flow and
//! render its outcome.

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tower_sessions::Session;

use super::flow::{self, Answers, CodeRequest, Step, Verdict};
use super::{Brand, mask_address, notice};
use crate::app::App;
use crate::deliveries::Delivery;
use crate::settings::Method;
use crate::web::PageError;
use crate::web::client_ip::ClientIp;

/// The User-Agent header alone (not a copy of every header).
pub struct UserAgent(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for UserAgent {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(UserAgent(
            parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ))
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pickup/landing.html")]
struct LandingPage {
    brand: Brand,
    token: String,
    email_code: bool,
    access_code: bool,
    known_fact: bool,
    masked: String,
    code_sent: bool,
    error: Option<&'static str>,
    /// A document request: the customer uploads after verifying.
    request: bool,
}

#[derive(Deserialize, Default)]
pub struct LandingQuery {
    sent: Option<u8>,
}

/// GET/HEAD: shows the verification step. Never sends a code or consumes
/// the link (see [`flow::visit`]).
pub async fn landing(
    State(app): State<App>,
    Path(token): Path<String>,
    ClientIp(ip): ClientIp,
    UserAgent(ua): UserAgent,
    Query(q): Query<LandingQuery>,
) -> Result<Response, PageError> {
    match flow::visit(&app, &token, ip, ua.as_deref()).await? {
        Step::Notice(n, at) => Ok(notice(&app, n, at).await),
        Step::Verify(d) => render(&app, &d, token, q.sent == Some(1), None, StatusCode::OK).await,
    }
}

async fn render(
    app: &App,
    d: &Delivery,
    token: String,
    code_sent: bool,
    error: Option<&'static str>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let email_code = d.methods.contains(&Method::EmailCode);
    let masked = if email_code {
        // The sealed address comes with the delivery row: no extra query.
        mask_address(app.deliveries.open_recipient(d)?.expose_secret())
    } else {
        String::new()
    };
    let page = LandingPage {
        brand: Brand::load(app).await,
        token,
        email_code,
        access_code: d.methods.contains(&Method::AccessCode),
        known_fact: d.methods.contains(&Method::KnownFact),
        masked,
        code_sent,
        error,
        request: d.is_request,
    };
    Ok((status, page).into_response())
}

/// POST: mails a fresh 6-digit code to the recipient address.
pub async fn send_code(
    State(app): State<App>,
    Path(token): Path<String>,
    ClientIp(ip): ClientIp,
) -> Result<Response, PageError> {
    match flow::request_code(&app, &token, ip).await? {
        CodeRequest::Notice(n, at) => Ok(notice(&app, n, at).await),
        CodeRequest::TooMany(d) => {
            render(
                &app,
                &d,
                token,
                false,
                Some("Too many codes were requested. Use the last code you received, or try again later."),
                StatusCode::TOO_MANY_REQUESTS,
            )
            .await
        }
        CodeRequest::Sent => Ok(Redirect::to(&format!("/p/{token}?sent=1")).into_response()),
    }
}

#[derive(Deserialize)]
pub struct VerifyForm {
    code: Option<SecretString>,
    access_code: Option<SecretString>,
    known_fact: Option<SecretString>,
}

/// POST: checks every answer the message requires. Success consumes the
/// link and binds this browser's (new) session to the message.
pub async fn verify(
    State(app): State<App>,
    Path(token): Path<String>,
    ClientIp(ip): ClientIp,
    session: Session,
    Form(form): Form<VerifyForm>,
) -> Result<Response, PageError> {
    let answers = Answers {
        code: form.code,
        access_code: form.access_code,
        known_fact: form.known_fact,
    };
    match flow::verify(&app, &token, ip, &answers).await? {
        Verdict::Notice(n, at) => Ok(notice(&app, n, at).await),
        Verdict::Verified {
            message_id,
            generation,
        } => {
            super::view::bind_session(&app, &session, message_id, generation).await?;
            Ok(Redirect::to(&format!("/pickup/{message_id}")).into_response())
        }
        Verdict::Wrong(d) => {
            render(
                &app,
                &d,
                token,
                false,
                Some("That did not match. Check what you entered and try again. After too many attempts the message locks."),
                StatusCode::UNAUTHORIZED,
            )
            .await
        }
    }
}
