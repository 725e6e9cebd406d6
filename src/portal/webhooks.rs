//! Admin pages for webhooks: `/admin/webhooks` lists endpoints and
//! registers new ones (the signing secret is shown on the answer to that
//! POST only, never again); `/admin/webhooks/{id}` is an endpoint's
//! delivery log with a redeliver button per delivery. Admins only (others
//! get 404, as on every admin page), CSRF on every POST, every change
//! audited.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::auth::{Admin, CurrentStaff};
use crate::app::App;
use crate::audit::webhooks::EVENT_TYPES;
use crate::text::format_time;
use crate::web::csrf::CsrfForm;
use crate::web::{Nav, PageError, PageResult};
use crate::webhooks::{Endpoint, NewEndpoint, WebhookError};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/admin/webhooks", get(list).post(create))
        .route("/admin/webhooks/{id}", get(log))
        .route("/admin/webhooks/{id}/disable", post(disable))
        .route("/admin/webhooks/{id}/delete", post(delete))
        .route(
            "/admin/webhooks/{id}/deliveries/{delivery}/redeliver",
            post(redeliver),
        )
}

#[derive(Deserialize)]
pub struct Empty {}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DoneQuery {
    done: String,
}

struct EndpointView {
    id: String,
    url: String,
    events: String,
    allow_private: bool,
    created: String,
    disabled: Option<String>,
}

impl From<Endpoint> for EndpointView {
    fn from(e: Endpoint) -> Self {
        EndpointView {
            events: e.events.join(", "),
            id: e.id,
            url: e.url,
            allow_private: e.allow_private,
            created: format_time(e.created_at),
            disabled: e.disabled_at.map(format_time),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/admin_webhooks.html")]
struct ListPage {
    nav: Option<Nav>,
    csrf: String,
    endpoints: Vec<EndpointView>,
    notice: Option<&'static str>,
    error: Option<String>,
    url: String,
    events: Vec<(&'static str, bool)>,
    allow_private: bool,
}

async fn render_list(
    app: &App,
    staff: &CurrentStaff,
    notice: Option<&'static str>,
    error: Option<String>,
    form: Option<&[(String, String)]>,
) -> Result<ListPage, PageError> {
    let endpoints = app
        .webhooks
        .endpoints()
        .await?
        .into_iter()
        .map(EndpointView::from)
        .collect();
    let sent = |name: &str, value: &str| {
        form.is_some_and(|f| f.iter().any(|(k, v)| k == name && v == value))
    };
    let url = form
        .and_then(|f| f.iter().find(|(k, _)| k == "url"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Ok(ListPage {
        nav: staff.nav(),
        csrf: staff.csrf.clone(),
        endpoints,
        notice,
        error,
        url,
        events: EVENT_TYPES
            .iter()
            .map(|t| (*t, form.is_none() || sent("event", t)))
            .collect(),
        allow_private: sent("allow_private", "on"),
    })
}

pub async fn list(
    State(app): State<App>,
    Admin(staff): Admin,
    Query(q): Query<DoneQuery>,
) -> PageResult {
    let notice = match q.done.as_str() {
        "disabled" => Some("The endpoint is disabled: nothing more is sent to it."),
        "deleted" => Some("The endpoint and its delivery log are deleted."),
        _ => None,
    };
    Ok(render_list(&app, &staff, notice, None, None)
        .await?
        .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/admin_webhook_created.html")]
struct CreatedPage {
    nav: Option<Nav>,
    endpoint: EndpointView,
    secret: String,
}

pub async fn create(
    State(app): State<App>,
    Admin(staff): Admin,
    CsrfForm(pairs): CsrfForm<Vec<(String, String)>>,
) -> PageResult {
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let events: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "event")
        .map(|(_, v)| v.clone())
        .collect();
    let new = NewEndpoint {
        url: field("url"),
        events: &events,
        allow_private: field("allow_private") == "on",
    };
    let created = match app
        .webhooks
        .create(staff.actor(), Some(staff.ip), &new)
        .await
    {
        Ok(c) => c,
        Err(WebhookError::Invalid(m)) => {
            let view = render_list(&app, &staff, None, Some(m), Some(&pairs)).await?;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, view).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    // Shown on this answer only: not stored readable, not cacheable.
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        CreatedPage {
            nav: staff.nav(),
            secret: created.secret.expose_secret().to_owned(),
            endpoint: created.endpoint.into(),
        },
    )
        .into_response())
}

struct DeliveryView {
    id: String,
    event_type: String,
    message_id: String,
    status: String,
    attempts: i64,
    last_status_code: String,
    last_error: String,
    created: String,
    next_attempt: String,
    delivered: String,
    pending: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/admin_webhook_log.html")]
struct LogPage {
    nav: Option<Nav>,
    csrf: String,
    endpoint: EndpointView,
    live: bool,
    deliveries: Vec<DeliveryView>,
    notice: Option<&'static str>,
}

pub async fn log(
    State(app): State<App>,
    Admin(staff): Admin,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> PageResult {
    let endpoint = app.webhooks.endpoint(&id).await?;
    let deliveries = app
        .webhooks
        .log(&id)
        .await?
        .into_iter()
        .map(|d| {
            let pending = d.status == crate::store::webhooks::PENDING;
            DeliveryView {
                id: d.id,
                event_type: d.event_type,
                message_id: d.message_id.unwrap_or_default(),
                attempts: d.attempts,
                last_status_code: d
                    .last_status_code
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                last_error: d.last_error.unwrap_or_default(),
                created: format_time(d.created_at),
                next_attempt: if pending {
                    format_time(d.next_attempt_at)
                } else {
                    String::new()
                },
                delivered: d.delivered_at.map(format_time).unwrap_or_default(),
                status: d.status,
                pending,
            }
        })
        .collect();
    let notice = match q.done.as_str() {
        "redelivered" => Some("The delivery is queued again, with the same id."),
        _ => None,
    };
    Ok(LogPage {
        nav: staff.nav(),
        csrf: staff.csrf.clone(),
        live: endpoint.disabled_at.is_none(),
        endpoint: endpoint.into(),
        deliveries,
        notice,
    }
    .into_response())
}

pub async fn disable(
    State(app): State<App>,
    Admin(staff): Admin,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> PageResult {
    app.webhooks
        .disable(staff.actor(), Some(staff.ip), &id)
        .await?;
    Ok(Redirect::to("/admin/webhooks?done=disabled").into_response())
}

pub async fn delete(
    State(app): State<App>,
    Admin(staff): Admin,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> PageResult {
    app.webhooks
        .delete(staff.actor(), Some(staff.ip), &id)
        .await?;
    Ok(Redirect::to("/admin/webhooks?done=deleted").into_response())
}

pub async fn redeliver(
    State(app): State<App>,
    Admin(staff): Admin,
    Path((id, delivery)): Path<(String, String)>,
    CsrfForm(_): CsrfForm<Empty>,
) -> PageResult {
    app.webhooks
        .redeliver(staff.actor(), Some(staff.ip), &id, &delivery)
        .await?;
    Ok(Redirect::to(&format!("/admin/webhooks/{id}?done=redelivered")).into_response())
}
