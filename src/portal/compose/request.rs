//! Ask a customer for documents: the recipient, verification and expiry
//! as for a message, the instructions as its text, and a checklist with
//! the file kinds and size the upload accepts. It is sent like a message
//! (one transaction: sealed message, delivery, request row, one-time link,
//! the customer's PII-free email and the audit event).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};

use super::{method_choices, remember_generated_code};
use crate::app::App;
use crate::flows::compose::{Asking, Fields, Sent, send_request};
use crate::portal::auth::CurrentStaff;
use crate::requests::{MAX_ITEM_CHARS, MAX_ITEMS};
use crate::settings::{MAX_EXPIRY_HOURS, MIN_EXPIRY_HOURS, Settings};
use crate::web::csrf::CsrfForm;
use crate::web::{Nav, PageResult};

#[derive(Template, WebTemplate)]
#[template(path = "portal/request.html")]
struct RequestPage {
    nav: Option<Nav>,
    csrf: String,
    f: Fields,
    a: Asking,
    methods: Vec<(&'static str, &'static str, bool)>,
    kinds: Vec<(&'static str, &'static str, bool)>,
    limit_mib: u64,
    min_hours: u32,
    max_hours: u32,
    max_items: usize,
    max_item_chars: usize,
    errors: Vec<String>,
}

fn render(
    staff: &CurrentStaff,
    settings: &Settings,
    f: Fields,
    a: Asking,
    errors: Vec<String>,
) -> RequestPage {
    let methods = method_choices(settings, &f);
    let kinds = settings
        .accepted_kinds
        .iter()
        .map(|k| {
            (
                k.as_str(),
                k.label(),
                a.kinds.iter().any(|s| s == k.as_str()),
            )
        })
        .collect();
    RequestPage {
        nav: staff.nav(),
        csrf: staff.csrf.clone(),
        f,
        a,
        methods,
        kinds,
        limit_mib: settings.size_limit_mib,
        min_hours: MIN_EXPIRY_HOURS,
        max_hours: MAX_EXPIRY_HOURS,
        max_items: MAX_ITEMS,
        max_item_chars: MAX_ITEM_CHARS,
        errors,
    }
}

/// `GET /requests/new`
pub async fn page(State(app): State<App>, staff: CurrentStaff) -> PageResult {
    let settings = app.settings.load().await?;
    let f = Fields::defaults(&settings);
    let a = Asking {
        items: String::new(),
        kinds: settings
            .accepted_kinds
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect(),
        max_mib: settings.size_limit_mib.to_string(),
    };
    Ok(render(&staff, &settings, f, a, Vec::new()).into_response())
}

/// `POST /requests/new`
pub async fn send(
    State(app): State<App>,
    staff: CurrentStaff,
    CsrfForm(pairs): CsrfForm<Vec<(String, String)>>,
) -> PageResult {
    let settings = app.settings.load().await?;
    let one = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let all = |name: &str| -> Vec<String> {
        pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let f = Fields {
        recipient: one("recipient"),
        phone: one("phone"),
        title: one("title"),
        body: one("body").replace("\r\n", "\n"),
        expiry_hours: one("expiry_hours"),
        methods: all("method"),
        access_code: one("access_code"),
        known_fact: one("known_fact"),
        retention: "keep".to_owned(),
        allow_reply: false,
        conversation: String::new(),
    };
    let a = Asking {
        items: one("items").replace("\r\n", "\n"),
        kinds: all("kind"),
        max_mib: one("max_mib"),
    };
    let invalid = |f: Fields, a: Asking, errors: Vec<String>| {
        let page = render(&staff, &settings, f, a, errors);
        Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
    };
    let Sent { id, generated } =
        match send_request(&app, &staff.acting(), &settings, &f, &a, None).await? {
            Ok(sent) => sent,
            Err(errors) => return invalid(f, a, errors),
        };
    if let Some(code) = generated {
        remember_generated_code(&app, &staff, id, &code).await?;
    }
    Ok(Redirect::to(&format!("/messages/{id}?sent=1")).into_response())
}
