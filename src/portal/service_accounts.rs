//! `/admin/service-accounts`: staff members that are integrations, not
//! people. An admin creates one (a name and a role), gives it API tokens
//! (each shown once), revokes them, and disables the account. A service
//! account never signs in, takes a password or gets an email (see
//! `staff::accounts`). Admins only, like every admin page; each action is
//! audited by the service it calls.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use serde::Deserialize;

use super::auth::{Admin, CurrentStaff};
use super::tokens::{
    DoneQuery, Empty, ServiceView, TokenFields, TokensPage, created, notice, parse_token_form,
    refusal, token_rows, with_status,
};
use crate::app::App;
use crate::staff::accounts::MAX_SERVICE_NAME_CHARS;
use crate::staff::tokens::TokenId;
use crate::staff::{AccountState, Role, ServiceName, StaffError, StaffId};
use crate::web::csrf::CsrfForm;
use crate::web::{Nav, PageError, PageResult};

const LIST: &str = "/admin/service-accounts";

pub fn routes() -> Router<App> {
    Router::new()
        .route(LIST, get(list).post(create))
        .route("/admin/service-accounts/{id}", get(account))
        .route("/admin/service-accounts/{id}/tokens", post(create_token))
        .route(
            "/admin/service-accounts/{id}/tokens/{token}/revoke",
            post(revoke_token),
        )
        .route("/admin/service-accounts/{id}/disable", post(disable))
}

struct ServiceRow {
    id: String,
    name: String,
    role: &'static str,
    disabled: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/admin_services.html")]
struct ListPage {
    nav: Option<Nav>,
    csrf: String,
    rows: Vec<ServiceRow>,
    error: Option<String>,
    name: String,
    role: String,
    max_name: usize,
}

async fn render_list(
    app: &App,
    staff: &CurrentStaff,
    error: Option<String>,
    name: String,
    role: String,
) -> Result<ListPage, PageError> {
    let rows = app
        .accounts
        .services()
        .await?
        .into_iter()
        .map(|s| ServiceRow {
            id: s.account.id.to_string(),
            name: ServiceName::of(&s.account.email)
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default(),
            role: s.account.role.as_str(),
            disabled: s.account.disabled,
        })
        .collect();
    Ok(ListPage {
        nav: staff.nav(),
        csrf: staff.csrf.clone(),
        rows,
        error,
        name,
        role,
        max_name: MAX_SERVICE_NAME_CHARS,
    })
}

pub async fn list(State(app): State<App>, Admin(staff): Admin) -> PageResult {
    let view = render_list(&app, &staff, None, String::new(), "agent".into()).await?;
    Ok(view.into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CreateForm {
    name: String,
    role: String,
}

pub async fn create(
    State(app): State<App>,
    Admin(staff): Admin,
    CsrfForm(form): CsrfForm<CreateForm>,
) -> PageResult {
    let error = match (ServiceName::parse(&form.name), form.role.parse::<Role>()) {
        (Err(e), _) => e.to_string(),
        (_, Err(_)) => "Choose a role: agent or administrator.".to_owned(),
        (Ok(name), Ok(role)) => {
            match app
                .accounts
                .create_service(staff.actor(), Some(staff.ip), &name, role)
                .await
            {
                Ok(id) => {
                    return Ok(Redirect::to(&format!("{LIST}/{id}?done=created")).into_response());
                }
                Err(StaffError::EmailTaken) => {
                    "A service account with that name already exists.".to_owned()
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let mut chars = error.chars();
    let error = chars.next().map(|c| {
        format!(
            "{}{}.",
            c.to_uppercase(),
            chars.as_str().trim_end_matches('.')
        )
    });
    let view = render_list(
        &app,
        &staff,
        error,
        form.name.trim().to_owned(),
        form.role.clone(),
    )
    .await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, view).into_response())
}

/// The service account `id`; any other id (a person's too) is not found.
async fn service(app: &App, id: &str) -> Result<AccountState, PageError> {
    let id = StaffId::parse(id).ok_or(PageError::NotFound)?;
    app.accounts
        .state(id)
        .await?
        .filter(|s| s.account.is_service())
        .ok_or(PageError::NotFound)
}

fn base(s: &AccountState) -> String {
    format!("{LIST}/{}/tokens", s.account.id)
}

async fn account_page(
    app: &App,
    staff: &CurrentStaff,
    s: &AccountState,
    form: TokenFields,
    notice: Option<&'static str>,
    errors: Vec<String>,
) -> Result<TokensPage, PageError> {
    let name = ServiceName::of(&s.account.email)
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default();
    Ok(TokensPage {
        nav: staff.nav(),
        csrf: staff.csrf.clone(),
        heading: format!("Service account {name}"),
        base: base(s),
        back: (LIST.to_owned(), "Service accounts"),
        rows: token_rows(app, s.account.id).await?,
        form,
        can_create: !s.account.disabled,
        service: Some(ServiceView {
            id: s.account.id.to_string(),
            role: s.account.role.as_str(),
            disabled: s.account.disabled,
        }),
        notice,
        errors,
    })
}

pub async fn account(
    State(app): State<App>,
    Admin(staff): Admin,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> PageResult {
    let s = service(&app, &id).await?;
    let form = TokenFields::empty(s.account.role.is_admin());
    let view = account_page(&app, &staff, &s, form, notice(q.done()), Vec::new()).await?;
    Ok(view.into_response())
}

pub async fn create_token(
    State(app): State<App>,
    Admin(staff): Admin,
    Path(id): Path<String>,
    CsrfForm(pairs): CsrfForm<Vec<(String, String)>>,
) -> PageResult {
    let s = service(&app, &id).await?;
    let (form, parsed) = parse_token_form(&pairs, s.account.role.is_admin());
    let errors = match parsed {
        _ if s.account.disabled => {
            vec!["This service account is disabled; it cannot get new tokens.".to_owned()]
        }
        Ok(choice) => {
            let new = choice.into_new(s.account.id, app.clock.now());
            match app
                .tokens
                .create_from(staff.actor(), Some(staff.ip), new)
                .await
            {
                Ok((token, value)) => {
                    return created(&app, &staff, token, value, format!("{LIST}/{id}")).await;
                }
                Err(e) => vec![refusal(e)?],
            }
        }
        Err(errors) => errors,
    };
    let view = account_page(&app, &staff, &s, form, None, errors).await?;
    Ok(with_status(StatusCode::UNPROCESSABLE_ENTITY, view))
}

pub async fn revoke_token(
    State(app): State<App>,
    Admin(staff): Admin,
    Path((id, token)): Path<(String, String)>,
    CsrfForm(_): CsrfForm<Empty>,
) -> PageResult {
    let s = service(&app, &id).await?;
    let token = TokenId::parse(&token).ok_or(PageError::NotFound)?;
    let revoked = app
        .tokens
        .revoke_from(staff.actor(), Some(staff.ip), token, Some(s.account.id))
        .await?;
    let done = if revoked { "revoked" } else { "already" };
    Ok(Redirect::to(&format!("{LIST}/{id}?done={done}")).into_response())
}

pub async fn disable(
    State(app): State<App>,
    Admin(staff): Admin,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> PageResult {
    let s = service(&app, &id).await?;
    app.accounts
        .disable_service(staff.actor(), Some(staff.ip), s.account.id)
        .await?;
    Ok(Redirect::to(&format!("{LIST}/{id}?done=disabled")).into_response())
}
